"""Design rows (:func:`gapkit.gp.design.functional_rows`) against central differences of
their own energy rows, with several kernel types whose sparse points are interleaved: a
force row is minus the position derivative of the energy row, a virial row minus its
strain derivative, and a column of one type is zero for every centre of another."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ase import Atoms

from gapkit.descriptors import SOAP
from gapkit.gp.design import SparseSet, functional_rows
from gapkit.gp.observations import VOIGT
from gapkit.kernels import SEKernel, SOAPKernel

STEP = 1e-5


def _frame() -> Atoms:
    """A periodic Si2C cell (three atoms, two species) with short edges: every atom sees
    several images of every atom."""
    cell = np.array([[3.1, 0.0, 0.0], [0.6, 2.9, 0.0], [0.3, -0.4, 3.0]])
    scaled = np.array([[0.02, 0.03, 0.01], [0.52, 0.46, 0.57], [0.25, 0.71, 0.33]])
    return Atoms("SiCSi", scaled_positions=scaled, cell=cell, pbc=True)


def _energy_rows(kernel, desc, atoms, sparse) -> np.ndarray:
    res = desc.compute([atoms], gradients=False)
    with torch.no_grad():
        return functional_rows(kernel, res, sparse, energy=True, forces=False,
                               virial=False)["energy"][0].numpy()


@pytest.mark.parametrize("kind", ["soap", "se"])
def test_force_and_virial_rows_are_minus_derivatives_of_the_energy_rows(kind):
    desc = SOAP(cutoff=3.5, cutoff_width=0.5, n_max=3, l_max=2, species=[6, 14])
    base = _frame()
    # sparse points: environments of rattled copies, the types interleaved (C, Si, C, ...)
    others = []
    for seed in range(3):
        a = base.copy()
        a.rattle(0.1, seed=seed)
        others.append(a)
    env = desc.compute(others)
    order = np.argsort(np.arange(len(env.centre_types)) % 2, kind="stable")
    points = np.asarray(env.values)[order]
    types = np.asarray(env.centre_types)[order]
    assert len(set(types[:3].tolist())) == 2  # interleaved, not sorted by type
    sparse = SparseSet(points, types)
    kernel = (SOAPKernel(zeta=2, delta=0.7) if kind == "soap"
              else SEKernel.with_scales_from(env, delta=0.7))

    atoms = base.copy()
    atoms.rattle(0.05, seed=11)
    res = desc.compute([atoms], gradients=["positions", "strain"])
    with torch.no_grad():
        rows = functional_rows(kernel, res, sparse, energy=True, forces=True, virial=True,
                               local=True)
    forces, virial = rows["forces"].numpy(), rows["virial"][0].numpy()
    assert np.abs(forces).max() > 1e-2

    # a column of one kernel type is zero for every centre of the other
    local = rows["local"].numpy()
    other = np.asarray(res.centre_types)[:, None] != types[None, :]
    assert np.all(local[other] == 0.0) and np.all(local[~other] != 0.0)

    for j in range(len(atoms)):
        for a in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[j, a] += STEP
            minus.positions[j, a] -= STEP
            fd = -(_energy_rows(kernel, desc, plus, sparse)
                   - _energy_rows(kernel, desc, minus, sparse)) / (2 * STEP)
            np.testing.assert_allclose(forces[j, a], fd, rtol=0, atol=1e-7)

    for v, (a, b) in enumerate(VOIGT):
        eps = np.zeros((3, 3))
        eps[a, b] += 0.5 * STEP
        eps[b, a] += 0.5 * STEP
        ends = []
        for sign in (1, -1):
            s = atoms.copy()
            s.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            ends.append(_energy_rows(kernel, desc, s, sparse))
        fd = -(ends[0] - ends[1]) / (2 * STEP)
        np.testing.assert_allclose(virial[v], fd, rtol=0, atol=1e-7)


def test_rows_are_the_same_with_the_points_sorted_by_type():
    """Interleaved or sorted, every column is the same function of the configuration."""
    desc = SOAP(cutoff=3.5, cutoff_width=0.5, n_max=3, l_max=2, species=[6, 14])
    atoms = _frame()
    atoms.rattle(0.05, seed=3)
    env = desc.compute([atoms])
    points, types = np.asarray(env.values), np.asarray(env.centre_types)
    perm = np.array([1, 0, 2])
    res = desc.compute([atoms], gradients=["positions", "strain"])
    kernel = SOAPKernel(zeta=4)
    with torch.no_grad():
        a = functional_rows(kernel, res, SparseSet(points, types), energy=True, forces=True,
                            virial=True)
        b = functional_rows(kernel, res, SparseSet(points[perm], types[perm]), energy=True,
                            forces=True, virial=True)
    for key in ("energy", "forces", "virial"):
        torch.testing.assert_close(a[key][..., perm], b[key], rtol=0, atol=1e-13)


@pytest.mark.parametrize("unit", [False, True])
def test_force_rows_from_compact_gradients_are_the_dense_ones(unit):
    """Force rows read from ``SOAP.compute_compact`` (each neighbour's species blocks, the
    normalisation apart, periodic images as separate pairs) are those of the dense
    gradients; energy and virial rows do not change."""
    desc = SOAP(cutoff=3.5, cutoff_width=0.5, n_max=3, l_max=2, species=[6, 14])
    frames = []
    for seed in range(3):
        a = _frame()
        a.rattle(0.05, seed=20 + seed)
        frames.append(a)
    env = desc.compute(frames)
    sparse = SparseSet(np.asarray(env.values)[::2], np.asarray(env.centre_types)[::2])
    kernel = SOAPKernel(zeta=4, delta=0.7)
    dense = desc.compute(frames, gradients=True)
    res, compact = desc.compute_compact(frames, strain=True)
    with torch.no_grad():
        want = functional_rows(kernel, dense, sparse, energy=True, forces=True, virial=True,
                               unit=unit)
        got = functional_rows(kernel, res, sparse, energy=True, forces=True, virial=True,
                              unit=unit, compact=compact)
    for key in ("energy", "forces", "virial"):
        scale = float(want[key].abs().max())
        assert scale > 0
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-13 * scale)


def _cuau_frames(n: int, first_seed: int = 0) -> list:
    """EMT-labelled 8-atom CuAu cells (3 Au), rattled: two species, periodic images."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from gapkit.testing import label

    frames = []
    for seed in range(first_seed, first_seed + n):
        a = bulk("Cu", "fcc", 3.65, cubic=True).repeat((2, 1, 1))
        a.numbers[np.random.default_rng(seed).choice(len(a), 3, replace=False)] = 79
        a.rattle(0.08, seed=seed)
        frames.append(label(a, EMT()))
    return frames


def test_a_fit_reads_compact_gradients_and_is_the_same_fit(monkeypatch):
    """The fit's design passes read compact gradients for a several-species SOAP (the
    noise cross-validation's calibration pass too, its prior force variances from them):
    the same noise choice, weights and predictive-variance calibration as with dense
    gradients."""
    from gapkit import GAP, Term
    from gapkit.gp import cv, design

    frames = _cuau_frames(12)
    calls = []
    real = SOAP.compute_compact

    def spy(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SOAP, "compute_compact", spy)
    priors = []  # whether the calibration pass's prior variances read compact gradients
    real_priors = cv._priors
    monkeypatch.setattr(cv, "_priors", lambda terms, results, sub, compacts=None: (
        priors.append(compacts is not None and compacts[0] is not None)
        or real_priors(terms, results, sub, compacts)))

    def fit():
        term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                    n_sparse=30)
        return GAP([term], progress=False, batch_atoms=40, random_state=1).fit(frames)

    monkeypatch.setenv("GAPKIT_DESIGN_CACHE_GB", "0")  # every pass computes its rows
    compact = fit()
    assert calls and priors and all(priors)
    monkeypatch.setattr(design, "COMPACT_GRADIENTS", False)
    calls.clear()
    priors.clear()
    dense = fit()
    assert not calls and priors and not any(priors)
    assert compact.fit_info_["noise_cv"]["factors"] == dense.fit_info_["noise_cv"]["factors"]
    torch.testing.assert_close(compact.alpha_, dense.alpha_, rtol=1e-9, atol=0)
    assert compact.predictive_.keys() == dense.predictive_.keys()
    assert compact.predictive_["forces"] is not None
    for kind, spec in dense.predictive_.items():
        if spec is not None:
            got = compact.predictive_[kind]
            assert (got["f"], got["q"]) == (spec["f"], spec["q"]), kind
            assert [got[k] for k in "ab"] == pytest.approx([spec[k] for k in "ab"],
                                                           rel=1e-9), kind


@pytest.mark.parametrize("target_bytes", [8 << 20, 1])
def test_prior_force_variances_from_compact_gradients_are_the_dense_ones(monkeypatch,
                                                                         target_bytes):
    """The exact prior force variances from compact gradients (entries written out a chunk
    at a time, periodic images of one atom summed into one entry) are the dense ones, on
    small periodic cells (many images) beside a molecule and with two kernel types; also
    with one atom per chunk, each chunk padded to its own atom's entries."""
    from gapkit.descriptors.soap import CompactGradients

    slots = CompactGradients.atom_slots
    widths = set()

    def sized(self, *args, **kwargs):
        for item in slots(self, *args, target_bytes=target_bytes, **kwargs):
            widths.add(item[2].shape[1])
            yield item

    monkeypatch.setattr(CompactGradients, "atom_slots", sized)
    from gapkit.gp.posterior import prior_force_variances

    from ase.build import molecule
    from ase.neighborlist import neighbor_list

    lone = molecule("CH3CONH2")
    lone += Atoms("H", positions=[[12.0, 0.0, 0.0]])  # no neighbour: its own entry only
    lone.rattle(0.05, seed=4)
    frames = _cuau_frames(3) + [lone]
    desc = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)
    dense = desc.compute(frames, gradients=True)
    res, compact = desc.compute_compact(frames)
    n_atoms = sum(len(a) for a in frames)
    for zeta in (1, 2, 4):
        kernel = SOAPKernel(zeta=zeta, delta=0.7)
        want = prior_force_variances([SimpleNamespace(kernel=kernel)], [dense], n_atoms)
        assert float(want[:-1].min()) > 0 and float(want[-1].abs().max()) == 0
        # in x's layout (SOAPKernel), and written out entry by entry (any other kernel)
        generic = SimpleNamespace(force_prior_variance=kernel.force_prior_variance)
        for k in (kernel, generic):
            got = prior_force_variances([SimpleNamespace(kernel=k)], [res], n_atoms,
                                        [compact])
            torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-15)
        # the compact entries are those of the dense result, images summed
        entries = compact.entries(res.torch("values"), res.atom_offsets[res.centre_structure]
                                  + res.centre_atom)
        assert entries.shape[0] == dense.gradients.shape[0]
        # the images were summed when computed: an entry per (centre, atom), fewer than pairs
        key = compact.centre * n_atoms + compact.atom
        n_pairs = sum(len(neighbor_list("i", a, desc.cutoff)) for a in frames)
        assert torch.unique(key).shape[0] == key.shape[0] < n_pairs
    assert len(widths) > (1 if target_bytes == 1 else 0)  # chunks of their own padding


def test_predictions_read_compact_gradients(monkeypatch):
    """Energies, forces, virials and the energy, projected and exact force variances
    predicted with compact gradients are those with dense ones."""
    from gapkit import GAP, NoiseModel, Term
    from gapkit.gp import design

    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                n_sparse=30)
    model = GAP([term], noise=NoiseModel(), progress=False).fit(_cuau_frames(6))
    test = _cuau_frames(3, first_seed=50)
    calls = []
    real = SOAP.compute_compact
    monkeypatch.setattr(SOAP, "compute_compact",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    for options in ({"return_variance": False}, {"forces_variance": "projected"},
                    {"forces_variance": None}, {"forces_variance": "exact"}):
        calls.clear()
        got = model.predict(test, **options)
        assert calls, options
        monkeypatch.setattr(design, "COMPACT_GRADIENTS", False)
        want = model.predict(test, **options)
        monkeypatch.setattr(design, "COMPACT_GRADIENTS", True)
        for name in ("energy", "forces", "virial", "energy_variance", "forces_variance"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None), name
            if b is not None:
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max(),
                                           err_msg=f"{name} {options}")


# -- the design cache: later passes of one fit read the rows the first computed ---------


def _small_gap(**kw):
    from gapkit import GAP, Term

    term = Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                n_sparse=30)
    return GAP([term], progress=False, batch_atoms=100, random_state=1, **kw)


def test_cached_fit_is_the_fit_without_cache(monkeypatch):
    """``GAP.fit`` (its noise cross-validation reads the fit's rows from the cache) gives
    the same noise, weights and calibration as with no cache, and the cache is hit."""
    from conftest import si_frames

    from gapkit.gp import design

    frames = si_frames(12)
    hits = []
    real = design.DesignCache.get

    def counting_get(self, *key):
        rows = real(self, *key)
        hits.append(rows is not None)
        return rows

    monkeypatch.setattr(design.DesignCache, "get", counting_get)
    cached = _small_gap().fit(frames)
    assert sum(hits) >= 2 * (len(hits) // 3)  # the CV's two passes: every block a hit
    monkeypatch.setenv("GAPKIT_DESIGN_CACHE_GB", "0")
    hits.clear()
    plain = _small_gap().fit(frames)
    assert not any(hits)
    assert cached.fit_info_["noise_cv"]["factors"] == plain.fit_info_["noise_cv"]["factors"]
    torch.testing.assert_close(cached.alpha_, plain.alpha_, rtol=1e-12, atol=0)
    assert cached.predictive_ == plain.predictive_


def test_cache_key_follows_kernel_parameters_and_memory_cap():
    from conftest import si_frames

    from gapkit.gp.design import design_blocks, design_cache

    frames = si_frames(6)
    model = _small_gap(noise=None).fit(frames)
    data = model.training_data(frames)

    def rows_now():
        return torch.cat([r for *_, r in design_blocks(
            model.terms_, model.sparse_sets_, data.frames, data.observations,
            set(data.gradients), batch_atoms=100)])

    with design_cache() as cache:
        first = rows_now()
        assert cache.nbytes == first.element_size() * first.nelement()
        assert rows_now() is not None and cache.hits > 0
        model.terms_[0].kernel.delta = 2.0  # rows scale with delta^2: not the cached ones
        torch.testing.assert_close(rows_now(), 4.0 * first, rtol=1e-12, atol=0)
    with design_cache(max_bytes=first.element_size() * first.nelement() // 2) as cache:
        rows_now()
        assert 0 < cache.nbytes <= cache.max_bytes


def test_the_cache_serves_other_blocks_of_the_same_frames(monkeypatch):
    """The predictive-variance pass reads a subset of the frames in other blocks (fold by
    fold): its rows come from the cache, frame by frame, equal to those computed, with the
    descriptor results it asks for; nothing is recomputed."""
    from conftest import si_frames

    from gapkit.gp import design
    from gapkit.gp.cv import _frame_subset

    frames = si_frames(6)
    model = _small_gap(noise=None).fit(frames)
    data = model.training_data(frames)
    obs = data.observations
    sub_frames, sub_obs, _, rows_of = _frame_subset(data.frames, obs, np.zeros(6),
                                                    np.array([1, 3, 4]))
    args = (model.terms_, model.sparse_sets_)
    with design.design_cache() as cache:
        full = torch.cat([r for *_, r in design.design_blocks(
            *args, data.frames, obs, set(data.gradients), batch_atoms=100)])
        calls = []
        real = design.design_rows
        monkeypatch.setattr(design, "design_rows", lambda *a, **kw: calls.append(1) or
                            real(*a, **kw))
        got = list(design.design_blocks(*args, sub_frames, sub_obs, set(data.gradients),
                                         batch_atoms=20, with_results=True))
    assert not calls and cache.hits == len(got) > 1
    assert all(len(res) == 1 and res[0].n_structures == np.unique(sub.frame).size
               for _, _, sub, _, res in got)
    torch.testing.assert_close(torch.cat([r for *_, r, _ in got]), full[rows_of],
                               rtol=0, atol=0)


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_cache_size_is_a_clear_error(monkeypatch, value):
    from gapkit.gp.design import default_cache_bytes

    monkeypatch.setenv("GAPKIT_DESIGN_CACHE_GB", value)
    with pytest.raises(ValueError, match="GAPKIT_DESIGN_CACHE_GB=.* is not a size"):
        default_cache_bytes()
