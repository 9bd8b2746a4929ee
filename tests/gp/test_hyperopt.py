"""Marginal-likelihood hyper-parameters: statistics, gradients, optimisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, TwoBody, TwoBodyKernel
from gapkit.data import load_bundled
from gapkit.gp.hyperopt import collect_statistics, lml_from_statistics


def _terms(delta_2b=0.5, delta_soap=0.7, lengthscale=0.5):
    return [Term(TwoBody(cutoff=4.0, cutoff_width=1.0),
                 TwoBodyKernel(cutoff=4.0, cutoff_width=1.0, lengthscale=lengthscale,
                               delta=delta_2b), n_sparse=12, sparse_method="uniform"),
            Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3),
                 SOAPKernel(zeta=2, delta=delta_soap), n_sparse=30)]


NOISE = NoiseModel(energy=0.01, forces=0.1, virial=0.05)


@pytest.fixture(scope="module")
def frames():
    return load_bundled("Si_train.xyz")[::40]


@pytest.fixture(scope="module")
def model(frames):
    return GAP(_terms(), noise=NOISE, progress=False, batch_atoms=64).fit(frames)


@pytest.fixture(scope="module")
def stats(model, frames):
    data = model.training_data(frames)
    return collect_statistics(model.terms_, model.sparse_sets_, data.frames, data.observations,
                              set(data.gradients), batch_atoms=model.batch_atoms,
                              jitter=model.jitter)


def test_statistics_reproduce_the_fitted_likelihood(model, stats):
    ld = torch.log(torch.tensor([0.5, 0.7], dtype=torch.float64))
    value = float(lml_from_statistics(stats, ld, torch.zeros(3, dtype=torch.float64)))
    # 1e-9: the likelihood carries ~1e-8 relative rounding (cond(R) ~ 1e9, see below);
    # the two paths differ by 3e-10 with numpy 2.4 / torch 2.13 wheels
    assert value == pytest.approx(model.log_marginal_likelihood_, rel=1e-9)


def test_statistics_equal_a_refit_at_other_hyperparameters(model, frames):
    scale = [1.7, 0.6, 1.3]
    value = model.log_marginal_likelihood(frames, delta=[0.9, 1.4], noise_scale=scale)
    noise = NoiseModel(energy=0.01 * scale[0], forces=0.1 * scale[1], virial=0.05 * scale[2])
    refit = GAP(_terms(delta_2b=0.9, delta_soap=1.4), noise=noise, progress=False,
                batch_atoms=64).fit(frames)
    assert value == pytest.approx(refit.log_marginal_likelihood_, rel=1e-9)


def test_gradient_matches_finite_differences(stats):
    x = torch.tensor([np.log(0.8), np.log(1.1), 0.2, -0.3, 0.1], dtype=torch.float64,
                     requires_grad=True)
    value = lml_from_statistics(stats, x[:2], x[2:])
    (grad,) = torch.autograd.grad(value, x)
    # The likelihood carries ~1e-8 relative rounding noise (cond(R) ~ 1e9), which
    # swamps central differences below h ~ 1e-3; Richardson-extrapolated central
    # differences at h = 1e-3 have an O(h^4) truncation error instead.
    def central(h):
        out = np.empty(5)
        with torch.no_grad():
            for i in range(5):
                xp, xm = x.detach().clone(), x.detach().clone()
                xp[i] += h
                xm[i] -= h
                out[i] = (float(lml_from_statistics(stats, xp[:2], xp[2:]))
                          - float(lml_from_statistics(stats, xm[:2], xm[2:]))) / (2 * h)
        return out

    fd = (4 * central(1e-3) - central(2e-3)) / 3
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_optimiser_raises_the_likelihood(frames):
    model = GAP(_terms(), noise=NOISE, progress=False, batch_atoms=64).fit(frames)
    before = model.log_marginal_likelihood_
    report = model.optimize_hyperparameters(frames)
    assert report["log_marginal_likelihood_before"] == pytest.approx(before, rel=1e-9)
    assert report["log_marginal_likelihood_after"] > before + 1.0
    # the refit at the optimum reproduces the optimised value, and it is a maximum:
    assert report["log_marginal_likelihood_refit"] == pytest.approx(
        report["log_marginal_likelihood_after"], rel=1e-8)
    delta = report["delta"]
    nudged = model.log_marginal_likelihood(frames, delta=[delta[0] * 1.05, delta[1]],
                                           noise_scale=[1.0, 1.0, 1.0])
    assert nudged < model.log_marginal_likelihood_
    # the user's sigma stays; the learnt multiplier is the fitted noise model's scale
    assert model.noise.forces == 0.1
    assert model.noise_.sigma("forces") == pytest.approx(0.1 * report["noise_scale"][1])


def test_refit_reproduces_the_optimum_with_per_frame_sigma(frames):
    """The learnt noise scale multiplies per-frame sigmas too (force_sigma in atoms.info):
    before 0.2 it was written to the defaults only, and the refit's likelihood (270.3)
    fell short of the optimised one (293.3) on data like this."""
    data = [a.copy() for a in frames]
    for a, b in zip(data, frames):
        a.calc = b.calc
    for a in data[::2]:
        a.info["force_sigma"] = 0.2
    model = GAP(_terms(), noise=NOISE, progress=False, batch_atoms=64).fit(data)
    report = model.optimize_hyperparameters(data)
    assert abs(report["noise_scale"][1] - 1.0) > 0.05  # the scale did move
    assert report["log_marginal_likelihood_refit"] == pytest.approx(
        report["log_marginal_likelihood_after"], rel=1e-8)
    # per-frame and default force sigmas keep their ratio after the fit
    obs = model.training_data(data).observations
    forces = obs.kind == 1
    ratio = {float(round(s, 12)) for s in obs.sigma[forces]}
    assert len(ratio) == 2
    lo, hi = sorted(ratio)
    assert hi / lo == pytest.approx(0.2 / 0.1)


def test_lengthscale_search_raises_the_likelihood(frames):
    model = GAP(_terms(lengthscale=0.2), noise=NOISE, progress=False, batch_atoms=64)
    model.fit(frames)
    report = model.optimize_hyperparameters(frames, lengthscale=True, noise=False)
    assert report["lengthscale"] != pytest.approx(0.2)
    assert report["log_marginal_likelihood_after"] > report["log_marginal_likelihood_before"]


def test_the_users_kernels_and_noise_are_not_modified(frames):
    """Learnt values live in the fitted attributes (``terms_``, ``noise_``), as
    scikit-learn's ``kernel_``; the objects passed in keep their values, and a new fit
    starts from them again."""
    terms = _terms(lengthscale=0.2)
    deltas = [float(t.kernel.delta.detach()) for t in terms]
    model = GAP(terms, noise=NOISE, progress=False, batch_atoms=64).fit(frames)
    first = model.log_marginal_likelihood_
    report = model.optimize_hyperparameters(frames, lengthscale=True)
    assert [float(t.kernel.delta.detach()) for t in model.terms_] == pytest.approx(
        report["delta"])
    assert report["delta"] != pytest.approx(deltas)
    assert [float(t.kernel.delta.detach()) for t in terms] == deltas
    assert float(terms[0].kernel.lengthscale.detach().reshape(())) == 0.2
    assert model.terms is not None and model.terms[0] is terms[0]
    assert model.noise is NOISE and model.noise_ != NOISE
    assert all(t.kernel is not u.kernel for t, u in zip(model.terms_, terms))
    model.fit(frames)  # from the user's settings again
    assert model.noise_ is NOISE
    assert model.log_marginal_likelihood_ == pytest.approx(first, rel=1e-10)


def test_lengthscale_needs_a_two_body_term(frames):
    model = GAP([_terms()[1]], noise=NOISE, progress=False).fit(frames)
    with pytest.raises(ValueError, match="TwoBody"):
        model.optimize_hyperparameters(frames, lengthscale=True)


def test_learned_noise_per_config_type_recovers_injected_noise(tmp_path):
    """Forces of two config types carry known Gaussian noise (0.2 and 0.5 eV/Å) on top of
    EMT; the multipliers learnt per kind and config_type recover both within 10%, and the
    refit reproduces the optimised likelihood. A config_type of 3 frames (below
    min_frames) shares its kind's multiplier instead of getting its own."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from gapkit.testing import label

    rng = np.random.default_rng(7)
    frames = []
    for k in range(123):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        eps = rng.normal(scale=0.01, size=(3, 3))
        atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms = label(atoms, EMT(), virial=False)
        noisy = k % 2 == 1
        atoms.info["config_type"] = "rare" if k >= 120 else "noisy" if noisy else "clean"
        atoms.arrays["forces"] = atoms.arrays["forces"] + rng.normal(
            scale=0.5 if noisy else 0.2, size=atoms.arrays["forces"].shape)
        # EMT energies are exact: some energy noise keeps the learnt sigma_E (and cond(R))
        # finite
        atoms.info["energy"] += rng.normal(scale=0.005 * 2.0)  # 5 meV/atom x sqrt(4)
        frames.append(atoms)
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3)
    model = GAP([Term(soap, SOAPKernel(zeta=4), n_sparse=60)],
                noise=NoiseModel(energy=0.01, forces=0.1), use=("energy", "forces"),
                progress=False).fit(frames)
    report = model.optimize_hyperparameters(frames, noise_groups="config_type")
    assert model.noise_.sigma("forces", "clean") == pytest.approx(0.2, rel=0.1)
    assert model.noise_.sigma("forces", "noisy") == pytest.approx(0.5, rel=0.1)
    assert model.noise_.forces == 0.1  # the user's value stays; the multipliers are learnt
    assert report["log_marginal_likelihood_refit"] == pytest.approx(
        report["log_marginal_likelihood_after"], rel=1e-8)
    assert {(g["kind"], g["config_type"]) for g in report["noise_groups"]} == {
        ("energy", "clean"), ("energy", "noisy"), ("forces", "clean"), ("forces", "noisy"),
        ("energy", None), ("forces", None)}
    assert "rare" not in model.noise_.config_type_scale
    # the new noise survives a save/load round trip (model format 3)
    path = model.save(tmp_path / "noise.gapkit")
    loaded = GAP.load(path)
    assert loaded.noise_ == model.noise_


# -- a likelihood that cannot collapse ---------------------------------------------------
def _cu_cells(n, seed, *, rattle):
    """EMT Cu cells (4 atoms), strained; rattled by ``rattle`` Å (0: perfect crystals,
    whose forces vanish by symmetry)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from gapkit.testing import label

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        eps = rng.normal(scale=0.02, size=(3, 3))
        atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        if rattle:
            atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        out.append(label(atoms, EMT()))
    return out


def _cu_model(**kw):
    return GAP([Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                     n_sparse=12)], noise=NoiseModel(energy=0.002, forces=0.05, virial=0.02),
               progress=False, **kw)


def test_forces_fixed_by_symmetry_are_left_out_and_cannot_collapse_their_sigma():
    """Strained perfect crystals have exactly zero force rows and labels. Left in the
    likelihood, each such row pulls its config_type's sigma_F to 0 (3e-7 eV/Å on the Zuo
    Elastic frames); left out, that group has no force rows and keeps its multiplier."""
    elastic = _cu_cells(8, 0, rattle=0.0)
    md = _cu_cells(12, 1, rattle=0.1)
    for a in elastic:
        a.info["config_type"] = "elastic"
    for a in md:
        a.info["config_type"] = "md"
    frames = elastic + md
    model = _cu_model().fit(frames)
    assert model.fit_info_["n_zero_rows"] == 8 * 12  # every force component of 8 cells
    model.optimize_hyperparameters(frames, noise_groups="config_type", min_frames=3)
    assert model.noise_.sigma("forces", "elastic") >= 0.01 * 0.05
    assert model.noise_.sigma("forces", "md") > 0.005


def test_a_collapsing_noise_is_floored_with_a_warning():
    """Five observations that the model fits exactly (one sparse point, no residual)
    have a likelihood that grows without bound as their sigma goes to 0 (as 4 log 1/s);
    the learnt multiplier stops at 1% of the base value, with a warning, and the value
    returned is the likelihood there."""
    from gapkit.gp.hyperopt import NOISE_FLOOR, Statistics, optimize

    def t(x):
        return torch.as_tensor(x, dtype=torch.float64)

    stats = Statistics(kmm_unit=t([[1.0]]), column_term=torch.tensor([0]), R=t([[[30.0]]]),
                       b=t([[1e-3]]), yy=t([1e-6]), n=t([5.0]), sum_log_base=t([0.0]),
                       jitter=1e-8)
    with torch.no_grad():
        at = [float(lml_from_statistics(stats, t([0.0]), t([math.log(s)])))
              for s in (1.0, 0.1, 0.01)]
    assert at[0] < at[1] < at[2]  # unbounded: it would collapse
    with pytest.warns(UserWarning, match="floored at 0.01"):
        ld, ls, value = optimize(stats, [0.0], [0.0], fit_delta=False)
    assert math.exp(ls[0]) == pytest.approx(NOISE_FLOOR)
    with torch.no_grad():
        assert value == pytest.approx(float(lml_from_statistics(stats, t(ld), t(ls))))


def test_a_label_that_breaks_the_symmetry_is_named():
    frames = _cu_cells(6, 3, rattle=0.0) + _cu_cells(6, 4, rattle=0.1)
    frames[2].arrays["forces"][1, 2] = 0.3  # a perfect crystal's force is zero
    with pytest.warns(UserWarning, match=r"frame 2 forces atom 1 z = 0\.3"):
        model = _cu_model().fit(frames)
    assert model.fit_info_["n_zero_rows"] == 6 * 12
