"""gapkit.gp.posterior: the block predictions, the one variance-clipping policy, and the one
Voigt symmetrisation the design rows, the posterior means and the exact GP share."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import make_si_model

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.data import VOIGT, load_bundled, voigt_symmetrised
from gapkit.gp.exact import ExactGP
from gapkit.gp.posterior import clip_variance, predict_block
from gapkit.testing import label


def test_voigt_symmetrised_matches_the_definition():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, 3, 3, 5))
    expected = np.stack([0.5 * (s[:, a, b] + s[:, b, a]) for a, b in VOIGT], axis=1)
    np.testing.assert_array_equal(voigt_symmetrised(s), expected)
    np.testing.assert_array_equal(voigt_symmetrised(torch.as_tensor(s)).numpy(), expected)
    sym = s + s.transpose(0, 2, 1, 3)  # a symmetric tensor keeps its entries
    assert voigt_symmetrised(sym)[:, 3].tolist() == sym[:, 1, 2].tolist()  # yz


def test_round_off_is_clipped_silently_and_real_negatives_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a perfect crystal's energy: round-off of terms ~ the prior (here 0.3 eV^2)
        out = clip_variance(np.array([-5.6e-17, 0.2]), np.array([0.3, 0.4]))
    assert out.tolist() == [0.0, 0.2]
    with pytest.warns(UserWarning, match="below 0"):
        out = clip_variance(np.array([-1e-3, 0.2]), np.array([0.3, 0.4]))
    assert out.tolist() == [0.0, 0.2]


@pytest.fixture(scope="module")
def crystals():
    """Perfect and rattled fcc Cu cells labelled by EMT: the perfect cell's forces vanish by
    symmetry and its variances are round-off around 0."""
    frames = []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.61 + 0.02 * k, cubic=True)
        if k:
            atoms.rattle(0.05, seed=k)
        frames.append(label(atoms, EMT()))
    return frames


PERFECT = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))


def _no_warning(predict):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("error", RuntimeWarning)
        pred = predict([PERFECT])
    assert np.all(pred.forces_variance >= 0) and np.all(pred.energy_variance >= 0)
    assert pred.forces_variance.max() < 1e-15  # the forces vanish by symmetry


def test_sparse_gp_on_a_perfect_crystal_does_not_warn(crystals):
    """Before 0.2 the force variances of a perfect supercell (priors and variances both
    round-off, down to -1.4e-17 eV^2/Å^2) warned and advised a refit."""
    model = GAP([Term(SOAP(n_max=3, l_max=2, cutoff=4.0), SOAPKernel(zeta=2), n_sparse=8)],
                noise=NoiseModel(energy=1e-3, forces=1e-2, virial=1e-2),
                progress=False).fit(crystals)
    _no_warning(model.predict)


def test_exact_gp_on_a_perfect_crystal_does_not_warn(crystals):
    """Before 0.2 the exact GP judged round-off against the largest posterior variance,
    itself tiny here, and advised more noise (-6.9e-18 against 5.3e-10)."""
    gp = ExactGP(SOAP(n_max=3, l_max=2, cutoff=4.0), SOAPKernel(zeta=2),
                 noise=NoiseModel(energy=1e-6, forces=1e-5, virial=1e-5)).fit(crystals)
    _no_warning(gp.predict)


def test_predict_block_is_the_model_without_e0(crystals):
    model = GAP([Term(SOAP(n_max=3, l_max=2, cutoff=4.0), SOAPKernel(zeta=2), n_sparse=8)],
                noise=NoiseModel(energy=0.001, forces=0.05, virial=0.05),
                progress=False).fit(crystals)
    pred = model.predict(crystals)
    block = predict_block(model.terms_, model.sparse_sets_, model.alpha_, model.R_, model.U_,
                          crystals, forces=True, virial=True, return_variance=True,
                          forces_variance="exact")
    e0 = sum(model.e0_[29] * len(a) for a in crystals[:1])
    np.testing.assert_allclose(block["energy"] + e0, pred.energy, rtol=0, atol=1e-9)
    np.testing.assert_allclose(block["forces"], pred.forces, rtol=0, atol=1e-12)
    np.testing.assert_allclose(block["virial"], pred.virial, rtol=0, atol=1e-12)
    for name in ("energy_variance", "forces_variance", "virial_variance",
                 "local_energy_variance"):
        np.testing.assert_allclose(block[name], getattr(pred, name), rtol=1e-12, atol=0)
    none = predict_block(model.terms_, model.sparse_sets_, model.alpha_, model.R_, model.U_,
                         crystals, forces=False, virial=False, return_variance=False,
                         forces_variance=None)
    assert none["forces"] is None and none["energy_variance"] is None
    np.testing.assert_array_equal(none["energy"], block["energy"])


def test_negative_variances_warn_only_beyond_round_off():
    """Clipped DTC variances warn (as ExactGP and scikit-learn do) when they are clearly
    negative, e.g. after a hyper-parameter change without a refit, and stay silent for
    round-off (force components that vanish by symmetry)."""
    import warnings

    frames = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:4]
    m = make_si_model(energy_key="energy", baselines=None).fit(frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        m.predict(frames[:2])  # the fitted factors: no warning
    m.terms_[0].kernel.delta = 3.0 * float(m.terms_[0].kernel.delta)
    with pytest.warns(UserWarning, match="variances below 0"):
        pred = m.predict(frames[:2])
    assert np.all(pred.energy_variance >= 0)


def test_prior_energy_variances_are_the_double_sums(monkeypatch):
    """Blocked over rows (forced to 7 entries' worth of columns here, so blocks split
    frames and atoms) and with the centres shuffled, the prior variances of total and
    per-atom energies are the plain double sums of the kernel over each frame's centres
    and over the centres one atom owns, for a two-body term (a centre per pair) and SOAP
    with two species (the type mask)."""
    from gapkit import TwoBody, TwoBodyKernel
    from gapkit.descriptors.base import DescriptorResult
    from gapkit.gp import posterior

    frames = [bulk("Cu", "fcc", a=3.61, cubic=True), bulk("NaCl", "rocksalt", a=5.6)]
    frames[0].rattle(0.05, seed=1)
    frames[1].rattle(0.05, seed=2)
    terms = [Term(TwoBody(cutoff=4.0), TwoBodyKernel(lengthscale=0.5, delta=0.3)),
             Term(SOAP(cutoff=4.0, n_max=3, l_max=2, species=[11, 17, 29]),
                  SOAPKernel(zeta=2, delta=0.7))]
    results = []
    rng = np.random.default_rng(0)
    for term in terms:
        res = term.descriptor.compute(frames)
        perm = rng.permutation(res.values.shape[0])
        results.append(DescriptorResult(
            values=res.values[perm], centre_structure=res.centre_structure[perm],
            centre_atom=res.centre_atom[perm], centre_species=res.centre_species[perm],
            centre_types=res.centre_types[perm], n_atoms=res.n_atoms,
            feature_labels=res.feature_labels, feature_label_names=res.feature_label_names))
    n_atoms = sum(len(a) for a in frames)
    monkeypatch.setattr(posterior, "PRIOR_BLOCK_ENTRIES", 7 * 40)
    e, loc = posterior.prior_energy_variances(terms, results, len(frames), n_atoms)
    want_e, want_loc = np.zeros(len(frames)), np.zeros(n_atoms)
    for res, term in zip(results, terms):
        q = torch.as_tensor(res.values)
        kk = (term.kernel.value(q, q).detach().numpy()
              * (res.centre_types[:, None] == res.centre_types[None, :]))
        frame = res.centre_structure
        owner = res.atom_offsets[frame] + res.centre_atom
        want_e += [kk[np.ix_(frame == k, frame == k)].sum() for k in range(len(frames))]
        want_loc += [kk[np.ix_(owner == i, owner == i)].sum() for i in range(n_atoms)]
    assert results[0].values.shape[0] > 7 * 40 // len(frames[0])  # several blocks a frame
    np.testing.assert_allclose(e.numpy(), want_e, rtol=1e-13)
    np.testing.assert_allclose(loc.numpy(), want_loc, rtol=1e-13, atol=1e-15)
