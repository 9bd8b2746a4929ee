"""Tests of the SOAP power spectrum, :class:`gapkit.descriptors.SOAP`.

Symmetry, analytic gradients, smoothness at the cutoff, special environments (isolated
atom, distinct environments), the feature layout and its dot-product identity, and the
checks on bad input. The comparison with featomic, dscribe and QUIP at production
settings is in ``test_soap_reference.py``.

The physics does not need a large basis, so every test here uses the small settings
``HYPERS`` (n_max = 4, l_max = 3, cutoff 3.5 Å): the radial integrals depend only on
(n_max, l_max, atom_sigma, cutoff), so all tests share one tabulated radial basis and the
file stays fast.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from ase import Atoms

from gapkit.descriptors import SOAP
from gapkit.descriptors.base import parse_gradients
from gapkit.testing import (
    GRADIENT_RTOL,
    INVARIANCE_ATOL,
    assert_invariant,
    check_gradients,
    dense_position_gradients,
)

# --------------------------------------------------------------------------------------
# settings and tolerances (float64; STYLE.md: one table, no scattered magic numbers)
# --------------------------------------------------------------------------------------
HYPERS = {"cutoff": 3.5, "cutoff_width": 0.5, "n_max": 4, "l_max": 3, "atom_sigma": 0.5}

#: Same arithmetic on the same numbers, up to the order of summation.
ATOL_EXACT = 1e-12
#: Algebraic identities (STYLE.md, float64 row).
RTOL_IDENTITY = 1e-9
#: Symmetry operations (gapkit.testing default, 1e-10).
ATOL_INVARIANCE = INVARIANCE_ATOL
#: Analytic vs central-difference gradients (gapkit.testing default, 1e-6 with h = 1e-5 Å).
RTOL_GRADIENT = GRADIENT_RTOL
#: Different environments must give descriptors further apart than this (2-norm).
MIN_DISTINCT = 1e-3
#: Successive differences on a grid of step s/2 must be at most this fraction of those on
#: the grid of step s: 0.5 for a continuous (Lipschitz) function, no shrinking at a jump.
LINEAR_SHRINK = 0.6
#: The same for a difference that is quadratic in the step (0.25 expected).
QUADRATIC_SHRINK = 0.3

LABEL_NAMES = ("species_a", "species_b", "l", "n_a", "n_b")


def make_soap(**overrides) -> SOAP:
    """SOAP with the small test settings, ``overrides`` taking precedence."""
    return SOAP(**{**HYPERS, **overrides})


def _max_abs(x) -> float:
    return float(np.max(np.abs(x), initial=0.0))


# --------------------------------------------------------------------------------------
# helpers to read the feature layout
# --------------------------------------------------------------------------------------
def _channel_index(labels: np.ndarray):
    """Map each feature to the (row, column) of its channel pair ``(a, n), (b, n')``."""
    species = np.unique(labels[:, :2])
    n_max = int(labels[:, 3:].max()) + 1
    sp = {int(z): k for k, z in enumerate(species)}
    alpha = np.array([sp[int(z)] for z in labels[:, 0]]) * n_max + labels[:, 3]
    beta = np.array([sp[int(z)] for z in labels[:, 1]]) * n_max + labels[:, 4]
    return alpha, beta, len(species) * n_max


def power_spectrum_matrices(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The full (redundant) power spectrum of each row, from the unique-pair layout.

    Returns ``P`` of shape (n_rows, l_max + 1, k, k), ``k = n_species * n_max``, with
    ``P[:, l, (a,n), (b,n')] = (1/sqrt(2l+1)) sum_m c^a_{nlm} c^b_{n'lm}``: the stored
    value divided by the layout's sqrt(2) on off-diagonal channel pairs, put in both
    triangles.
    """
    alpha, beta, k = _channel_index(labels)
    ls = labels[:, 2]
    scale = np.where(alpha == beta, 1.0, math.sqrt(2.0))
    out = np.zeros((values.shape[0], int(ls.max()) + 1, k, k))
    out[:, ls, alpha, beta] = values / scale
    out[:, ls, beta, alpha] = values / scale
    return out


# --------------------------------------------------------------------------------------
# small structures
# --------------------------------------------------------------------------------------
def _water(angle_degrees: float) -> Atoms:
    """H2O with 0.96 Å bonds and the given H-O-H angle, O first."""
    t = math.radians(angle_degrees) / 2
    return Atoms("OHH", positions=[[0.0, 0.0, 0.0],
                                   [0.96 * math.sin(t), 0.96 * math.cos(t), 0.0],
                                   [-0.96 * math.sin(t), 0.96 * math.cos(t), 0.0]])


_MOVING_DIRECTION = np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2])


def _with_moving_neighbour(kind: str, r: float) -> Atoms:
    """A C centre at the origin and a N neighbour at distance ``r`` along a fixed
    direction (last atom). ``"trimer"`` adds an O at 1.37 Å on the other side, so that
    the O-N distance is always larger than ``r``."""
    moving = r * _MOVING_DIRECTION
    if kind == "dimer":
        return Atoms("CN", positions=[[0.0, 0.0, 0.0], moving])
    return Atoms("CON", positions=[[0.0, 0.0, 0.0], [-1.3, 0.4, 0.1], moving])


# ======================================================================================
# symmetry
# ======================================================================================
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("structure",
                         ["si64_rattled", "ethanol_rmd17", "triclinic_two_species"])
def test_invariance(request, structure, normalize):
    """Per-atom values are unchanged by rotation, inversion, translation, permutation and
    (periodic structures) lattice shifts and supercells."""
    atoms = request.getfixturevalue(structure)
    assert_invariant(make_soap(normalize=normalize), atoms, atol=ATOL_INVARIANCE)


# ======================================================================================
# gradients
# ======================================================================================
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("structure",
                         ["si8_rattled", "acetamide", "triclinic_two_species"])
def test_gradients_match_central_differences(request, structure, normalize):
    """Analytic position and strain gradients equal central differences (h = 1e-5)."""
    atoms = request.getfixturevalue(structure)
    errors = check_gradients(make_soap(normalize=normalize), atoms, rtol=RTOL_GRADIENT)
    assert set(errors) == {"positions", "strain"}


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("structure", ["acetamide", "triclinic_two_species"])
def test_gradient_sum_rules(request, structure, normalize):
    """Exact identities of the gradients of a rotation- and translation-invariant
    descriptor: sum over atoms of d q_i / d r_j is zero, the strain gradient is symmetric,
    for a molecule it is sum_j (d q / d r_j) r_j, and a unit vector's gradient is
    orthogonal to it. Also: the sparse layout has one entry per (centre, atom), and every
    centre has the entry of its own atom."""
    atoms = request.getfixturevalue(structure)
    result = make_soap(normalize=normalize).compute([atoms], gradients=True)
    pairs = np.stack([result.gradient_centre, result.gradient_atom], axis=1)
    assert np.unique(pairs, axis=0).shape[0] == pairs.shape[0], "repeated (centre, atom)"
    own = {(int(c), int(a)) for c, a in pairs}
    assert all((c, int(i)) in own for c, i in enumerate(result.centre_atom))

    dense = dense_position_gradients(result)  # (centre, atom, 3, feature)
    strain = result.strain_gradients
    scale = max(_max_abs(dense), _max_abs(strain))
    assert _max_abs(dense.sum(axis=1)) <= RTOL_IDENTITY * scale
    assert _max_abs(strain - strain.transpose(0, 2, 1, 3)) <= RTOL_IDENTITY * scale
    if not atoms.pbc.any():
        from_positions = np.einsum("cjaf,jb->cabf", dense, atoms.positions)
        assert _max_abs(strain - from_positions) <= RTOL_IDENTITY * scale
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(result.values, axis=1), 1.0,
                                   rtol=0, atol=RTOL_IDENTITY)
        projection = np.einsum("cjaf,cf->cja", dense, result.values)
        assert _max_abs(projection) <= RTOL_IDENTITY * scale


def test_batches_and_gradient_requests_do_not_change_results(
        si8_rattled, acetamide, triclinic_two_species):
    """One call over several structures equals one call per structure, for any batch
    size, and asking for fewer gradient kinds returns the same numbers."""
    frames = [si8_rattled, acetamide, triclinic_two_species]
    species = [1, 6, 7, 8, 14]
    together = make_soap(species=species).compute(frames, gradients=True)
    batched = make_soap(species=species, batch_atoms=3).compute(frames, gradients=True)
    singles = [make_soap(species=species).compute([f], gradients=True) for f in frames]

    for result in (together, batched):
        np.testing.assert_array_equal(result.n_atoms, [len(f) for f in frames])
        np.testing.assert_array_equal(result.centre_structure,
                                      np.repeat(np.arange(3), [len(f) for f in frames]))
        np.testing.assert_array_equal(result.centre_species,
                                      np.concatenate([f.numbers for f in frames]))
        assert result.feature_label_names == LABEL_NAMES
        for k, single in enumerate(singles):
            rows = result.centre_structure == k
            np.testing.assert_array_equal(result.centre_atom[rows], np.arange(len(frames[k])))
            np.testing.assert_allclose(result.values[rows], single.values,
                                       rtol=0, atol=ATOL_EXACT)
            np.testing.assert_allclose(result.strain_gradients[rows], single.strain_gradients,
                                       rtol=0, atol=ATOL_EXACT)
            np.testing.assert_allclose(dense_position_gradients(result, k),
                                       dense_position_gradients(single),
                                       rtol=0, atol=ATOL_EXACT)

    positions_only = make_soap(species=species).compute(frames, gradients=["positions"])
    assert positions_only.strain_gradients is None
    np.testing.assert_allclose(positions_only.gradients, together.gradients,
                               rtol=0, atol=ATOL_EXACT)
    strain_only = make_soap(species=species).compute(frames, gradients=["strain"])
    np.testing.assert_allclose(strain_only.strain_gradients, together.strain_gradients,
                               rtol=0, atol=ATOL_EXACT)
    plain = make_soap(species=species).compute(frames)
    assert plain.gradients is None and plain.strain_gradients is None
    np.testing.assert_allclose(plain.values, together.values, rtol=0, atol=ATOL_EXACT)


def test_chunks_and_populated_arrays_do_not_change_results(monkeypatch, acetamide,
                                                     triclinic_two_species):
    """Several species, with the dense gradients cut into the smallest chunks (16 pairs,
    so many centres straddle none and padding differs per chunk) and every array on
    mappings populated at once, equal one chunk in ordinary memory; the arrays stay writable."""
    import gapkit.descriptors.base as base_module
    import gapkit.descriptors.soap as soap_module

    frames = [acetamide, triclinic_two_species]
    species = [1, 6, 7, 8, 14]
    monkeypatch.setattr(soap_module, "CHUNK_BYTES", 1 << 40)
    reference = make_soap(species=species).compute(frames, gradients=True)
    monkeypatch.setattr(soap_module, "CHUNK_BYTES", 1)
    monkeypatch.setattr(base_module, "POPULATE_BYTES", 0)
    chunked = make_soap(species=species, batch_atoms=5).compute(frames, gradients=True)
    for name in ("values", "gradients", "strain_gradients"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(reference, name),
                                   rtol=0, atol=ATOL_EXACT)
    np.testing.assert_array_equal(chunked.gradient_centre, reference.gradient_centre)
    np.testing.assert_array_equal(chunked.gradient_atom, reference.gradient_atom)
    assert chunked.gradients.flags.writeable and chunked.values.flags.writeable


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_gradients_with_a_species_no_chunk_neighbours_match_central_differences(normalize):
    """A centre's slots are padded per neighbour species; a species with no neighbour in
    the chunk (Si here) has none, and the gradients,
    dense and compact, still equal central differences."""
    atoms = Atoms("CNOH", positions=[[0.0, 0.0, 0.0], [1.2, 0.3, -0.1], [-0.4, 1.1, 0.2],
                                     [0.3, -0.2, 1.0]])
    soap = make_soap(species=[1, 6, 7, 8, 14], normalize=normalize)
    errors = check_gradients(soap, atoms, rtol=RTOL_GRADIENT)
    assert "positions" in errors
    res, compact = soap.compute_compact([atoms])
    dense = soap.compute([atoms], gradients=True)
    n = len(atoms)
    import torch

    rebuilt = torch.zeros((n * n, 3, dense.n_features), dtype=torch.float64)
    rebuilt.index_add_(0, compact.centre * n + compact.atom,
                       compact.dense(torch.as_tensor(res.values)))
    rebuilt.index_add_(0, torch.arange(n) * (n + 1), compact.own)
    keys = torch.as_tensor(dense.gradient_centre * n + dense.gradient_atom_global)
    np.testing.assert_allclose(rebuilt[keys].numpy(), dense.gradients, rtol=0,
                               atol=1e-14 * np.abs(dense.gradients).max())


def test_values_do_not_depend_on_the_slot_layout(monkeypatch, acetamide, ethanol_rmd17):
    """Values of a small chunk pad every species' slots to one count (one GEMM per l),
    of a large one per species: the two layouts give the same values."""
    import gapkit.descriptors.soap as soap_module

    frames = [acetamide, ethanol_rmd17]
    soap = make_soap(species=[1, 6, 7, 8])
    monkeypatch.setattr(soap_module, "UNIFORM_SLOTS", 1 << 40)
    uniform = soap.compute(frames).values
    monkeypatch.setattr(soap_module, "UNIFORM_SLOTS", 0)
    per_species = soap.compute(frames).values
    np.testing.assert_allclose(uniform, per_species, rtol=0, atol=ATOL_EXACT)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="empty_array maps and reuses memory on Linux only (np.empty elsewhere)")
def test_a_freed_large_array_is_reused_and_never_while_a_view_lives():
    """The mapping of a freed large array serves the next one of about its size, but not
    while any view of it lives (numpy's, reshaped, transposed, torch's); on a miss a
    kept one is reshaped to the size asked for (grown or cut), and release_pool empties
    the pool."""
    import gc

    import torch

    from gapkit.descriptors import base

    for make_view in (lambda a: a.reshape(-1)[8:], lambda a: a.T[1:],
                      lambda a: torch.from_numpy(a)[1:].view(-1)):
        base.release_pool()
        a = base.empty_array((4096, 8), at_least=1)
        address = a.ctypes.data
        view = make_view(a)
        del a
        gc.collect()
        b = base.empty_array((4096, 8), at_least=1)
        assert b.ctypes.data != address
        b.fill(1.0)
        view[:] = 2.0
        assert bool((b == 1.0).all()) and bool((view == 2.0).all())
        del view
        gc.collect()
        c = base.empty_array((4000, 8), at_least=1)  # a little smaller: the same mapping
        assert c.ctypes.data == address and c.flags.writeable
        del b, c
    gc.collect()
    base.release_pool()
    a = base.empty_array((4096, 8), at_least=1)
    address = a.ctypes.data
    del a
    gc.collect()
    c = base.empty_array((4000, 8), at_least=1)
    assert c.ctypes.data == address
    c.fill(7.0)
    del c
    gc.collect()
    small = base.empty_array((100, 8), at_least=1)  # too small for it: cut to size
    assert base.release_pool() == 0  # taken, not left beside it
    assert bool((small == 7.0).all())  # its pages, not new (zero) ones
    small.fill(3.0)
    del small
    gc.collect()
    assert base.release_pool() == 100 * 8 * 8  # only the cut mapping came back
    a = base.empty_array((100, 8), at_least=1)
    a.fill(4.0)
    del a
    gc.collect()
    # larger than any kept one: the largest smaller one is grown, every byte usable
    grown = base.empty_array((70000, 8), at_least=1)
    assert base.release_pool() == 0
    assert bool((grown[:100] == 4.0).all()) and not grown[100:].any()  # old pages, new ones
    grown.fill(5.0)
    assert bool((grown == 5.0).all())
    del grown
    gc.collect()
    assert base.release_pool() == 70000 * 8 * 8
    assert base.release_pool() == 0
    # within POOL_BYTES, the newest kept; one larger than all of it is cut to that size
    old_limit, base.POOL_BYTES = base.POOL_BYTES, 4096 * 8 * 8
    try:
        kept = [base.empty_array(shape, at_least=1) for shape in ((2048, 8), (2048, 8))]
        del kept
        gc.collect()
        assert base.release_pool() == 4096 * 8 * 8  # the two small ones
        big = base.empty_array((8192, 8), at_least=1)
        big.fill(9.0)
        del big
        gc.collect()
        again = base.empty_array((4096, 8), at_least=1)
        assert bool((again == 9.0).all())  # the big one's first pages
        del again
        gc.collect()
        assert base.release_pool() == 4096 * 8 * 8
        first, second, third = (base.empty_array((2048, 8), at_least=1) for _ in range(3))
        del first, second, third  # a third: the oldest handed back
        gc.collect()
        assert base.release_pool() == 4096 * 8 * 8
    finally:
        base.POOL_BYTES = old_limit


def test_descriptor_arrays_on_reused_mappings_are_right(monkeypatch, acetamide,
                                                        triclinic_two_species):
    """Descriptor results on mappings reused from freed results (every array through the
    pool) equal those in fresh memory, and a result still held is never written by a later
    call."""
    import gc

    import torch

    import gapkit.descriptors.base as base_module

    frames = [acetamide, triclinic_two_species]
    soap = make_soap(species=[1, 6, 7, 8, 14])
    reference = soap.compute(frames, gradients=True)
    _, ref_compact = soap.compute_compact(frames, strain=True)
    want = {"x": ref_compact.x.clone(), "own": ref_compact.own.clone()}
    monkeypatch.setattr(base_module, "POPULATE_BYTES", 0)
    base_module.release_pool()
    for _ in range(3):
        held = soap.compute(frames, gradients=True)
        gc.collect()
        np.testing.assert_array_equal(held.gradients, reference.gradients)
        _, compact = soap.compute_compact(frames, strain=True)
        for name, value in want.items():
            assert torch.equal(getattr(compact, name), value), name
        np.testing.assert_array_equal(held.gradients, reference.gradients)
        del compact, held
        gc.collect()
    assert base_module.release_pool() > 0


def test_batches_write_into_one_array_as_they_would_alone(si8_rattled, acetamide,
                                                          triclinic_two_species):
    """With gradients, several batches are planned first and each writes into its rows of
    one output array (no concatenation): bit for bit what each batch computes in arrays of
    its own, concatenated, also where periodic images are summed into an entry (a cell
    smaller than the cutoff: its rows are zeroed, then added to) and next to batches
    whose padding goes to the spare row."""
    from gapkit.descriptors.base import concatenate, frame_batches

    frames = [acetamide, triclinic_two_species, si8_rattled, acetamide, triclinic_two_species]
    species = [1, 6, 7, 8, 14]
    soap = make_soap(species=species, batch_atoms=9)
    batches = list(frame_batches(frames, soap.batch_atoms))
    assert len(batches) >= 4
    for gradients in (True, ["positions"], ["strain"]):
        planned = soap.compute(frames, gradients=gradients)
        alone = concatenate(
            [soap._compute_batch(frames[a:b], a, tuple(species), *parse_gradients(gradients))
             for a, b in batches], [a for a, _ in batches])
        for name in ("values", "gradients", "strain_gradients", "gradient_centre",
                     "gradient_atom", "centre_structure", "centre_atom"):
            got, want = getattr(planned, name), getattr(alone, name)
            assert (got is None) == (want is None), name
            if want is not None:
                np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("settings", [{}, {"normalize": False}, {"central_weight": 0.0},
                                      {"batch_atoms": 9}])
def test_compact_gradients_are_the_dense_ones(acetamide, triclinic_two_species, settings):
    """``compute_compact`` (each neighbour's species blocks and the normalisation's
    rank-one term) gives the dense gradients back, entry by entry: the periodic images of
    one atom are summed into one entry per (centre, atom) as in the dense result (the
    triclinic cell has several within the cutoff), the centre's own entry is dense;
    values and strain gradients as ``compute`` gives them."""
    import torch

    frames = [acetamide, triclinic_two_species, acetamide]
    soap = make_soap(species=[1, 6, 7, 8, 14], **settings)
    dense = soap.compute(frames, gradients=True)
    res, compact = soap.compute_compact(frames, strain=True)
    # (chunks of compact calls are sized by X's width: the values' sums may round apart)
    np.testing.assert_allclose(res.values, dense.values, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.strain_gradients, dense.strain_gradients, rtol=0,
                               atol=1e-14)
    assert res.gradients is None
    n = dense.n_centres
    rebuilt = torch.zeros((n * n, 3, dense.n_features), dtype=torch.float64)
    rebuilt.index_add_(0, compact.centre * n + compact.atom,
                       compact.dense(torch.as_tensor(res.values)))
    rebuilt.index_add_(0, torch.arange(n) * (n + 1), compact.own)
    keys = torch.as_tensor(dense.gradient_centre * n + dense.gradient_atom_global)
    scale = np.abs(dense.gradients).max()
    np.testing.assert_allclose(rebuilt[keys].numpy(), dense.gradients, rtol=0,
                               atol=1e-14 * scale)
    rebuilt[keys] = 0.0
    assert float(rebuilt.abs().max()) == 0.0  # nothing outside the dense entries
    # a pair of species s leaves the blocks of other species alone
    width = compact.x.shape[2]
    assert compact.x.shape[0] == compact.t.shape[0] == compact.centre.shape[0]
    # one entry per (centre, atom), as the dense ones (which merge a centre's own entry
    # with the pairs to its own images)
    key = compact.centre * n + compact.atom
    assert torch.unique(key).shape[0] == key.shape[0]
    assert torch.unique(torch.cat([key, torch.arange(n) * (n + 1)])).shape[0] == len(keys)
    from ase.neighborlist import neighbor_list

    assert len(neighbor_list("i", triclinic_two_species, soap.cutoff)) > len(
        set(zip(*neighbor_list("ij", triclinic_two_species, soap.cutoff))))
    assert torch.all(compact.x[..., width - 1] == 0)
    if settings.get("normalize", True) is False:
        assert float(compact.t.abs().max()) == 0.0


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_periodic_images_summed_as_density_gradients_give_the_same_entries(
        monkeypatch, acetamide, triclinic_two_species, normalize):
    """A chunk with few entries per pair (periodic images of one atom) sums its pairs'
    density gradients per entry and multiplies by the coefficients once; with the
    molecule's centres in the same chunk (8 entries each against the cell's 2: padded
    slots) the entries equal those summed from each pair's X."""
    import torch

    import gapkit.descriptors.soap as soap_module

    frames = [acetamide, triclinic_two_species, acetamide]
    soap = make_soap(species=[1, 6, 7, 8, 14], normalize=normalize)
    monkeypatch.setattr(soap_module, "IMAGE_SHARE", 0.0)  # X per pair, then summed
    _, per_pair = soap.compute_compact(frames, strain=True)
    monkeypatch.setattr(soap_module, "IMAGE_SHARE", 1.0)  # density gradients summed
    _, summed = soap.compute_compact(frames, strain=True)
    for name in ("x", "t", "own"):
        a, b = getattr(summed, name), getattr(per_pair, name)
        assert torch.allclose(a, b, rtol=0, atol=1e-14 * float(b.abs().max())), name
    assert torch.equal(summed.centre, per_pair.centre)
    assert torch.equal(summed.atom, per_pair.atom)


def test_compact_gradients_need_several_species(si8_rattled, acetamide):
    with pytest.raises(ValueError, match="needs several species"):
        make_soap(species=[14]).compute_compact([si8_rattled])
    with pytest.raises(ValueError, match="species_mixing"):
        make_soap(species=[1, 6, 7, 8], species_mixing=2).compute_compact([acetamide])


@pytest.mark.slow
def test_an_environment_of_600_neighbours_is_complete(monkeypatch):
    """A centre with 600 neighbours (two species) inside the cutoff: nothing is truncated
    (its l = 0 block is the outer product of the densities summed here over every
    neighbour with the radial spline; uncompressed and mixed), and the smallest chunks
    (one centre of hundreds of pairs each) give the gradients of one chunk per 8 MB."""
    import torch

    import gapkit.descriptors.soap as soap_module

    rng = np.random.default_rng(5)
    direction = rng.standard_normal((600, 3))
    radius = 3.0 * rng.uniform(0.2, 1.0, 600) ** (1 / 3)  # all within 3 A < cutoff 3.5 A
    positions = np.vstack([[0.0, 0.0, 0.0],
                           direction / np.linalg.norm(direction, axis=1)[:, None]
                           * radius[:, None]])
    atoms = Atoms(["Cu"] + ["Cu", "Ag"] * 300, positions=positions)
    kinds = (atoms.numbers[1:] == 47).astype(int)
    dist = torch.as_tensor(np.linalg.norm(positions[1:], axis=1))
    y00 = 1.0 / math.sqrt(4.0 * math.pi)
    for mixing in (None, 1):
        soap = make_soap(normalize=False, species_mixing=mixing)
        result = soap.compute([atoms])
        # c^a_{n00} = sum_j f_c I_n0(r_j) Y_00 (+ the centre's own Gaussian)
        radial, _ = soap._radial()(dist)
        fc, _ = soap.cutoff_fn(dist)
        terms = (fc[:, None] * radial[:, :, 0]).numpy() * y00
        own = soap._radial().at_zero()[:, 0].numpy() * y00
        weights = np.eye(2) if mixing is None else soap.mixing_matrix([29, 47])
        c = sum(np.outer(weights[s], terms[kinds == s].sum(0)) for s in (0, 1))
        c = (c + np.outer(weights[0], own)).ravel()
        l0 = result.feature_labels[:, 2] == 0
        block = power_spectrum_matrices(result.values[:1, l0], result.feature_labels[l0])
        np.testing.assert_allclose(block[0, 0], np.outer(c, c), rtol=0,
                                   atol=RTOL_IDENTITY * float(c @ c))
    small = SOAP(cutoff=3.5, n_max=2, l_max=1)
    reference = small.compute([atoms], gradients=["positions"])
    assert np.sum(reference.gradient_centre == 0) == 601  # its 600 neighbours + itself
    monkeypatch.setattr(soap_module, "CHUNK_BYTES", 1)
    chunked = small.compute([atoms], gradients=["positions"])
    for name in ("values", "gradients"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(reference, name),
                                   rtol=0, atol=ATOL_EXACT * _max_abs(getattr(reference, name)))


# ======================================================================================
# smoothness at the cutoff
# ======================================================================================
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("kind", ["dimer", "trimer"])
def test_smooth_when_a_neighbour_crosses_the_cutoff(kind, normalize):
    """Move the last atom radially from cutoff - 0.1 Å to cutoff + 0.1 Å in steps of
    1e-3 Å. Values and gradients are continuous (their successive differences shrink
    with the step), the values approach the outside limit quadratically and the
    gradients linearly (the cosine cutoff is C1), and at r >= cutoff the atom has no
    effect: every other atom has the descriptor of the structure without it, and it has
    the isolated-atom descriptor, with zero cross gradients."""
    rc = HYPERS["cutoff"]
    step = 1e-3
    offsets = np.arange(-100, 101)
    at_cutoff = 100  # offsets[at_cutoff] == 0
    distances = rc + offsets * step
    soap = make_soap(species=[6, 7, 8], normalize=normalize)
    frames = [_with_moving_neighbour(kind, r) for r in distances]
    n = len(frames[0])
    result = soap.compute(frames, gradients=["positions"])
    values = result.values.reshape(len(frames), n, -1)
    grads = np.stack([dense_position_gradients(result, k) for k in range(len(frames))])
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))

    # outside (r >= cutoff): no effect at all
    rest = soap.compute([frames[0][:-1]], gradients=["positions"])
    alone = soap.compute([frames[0][-1:]], gradients=["positions"])
    rest_grads = dense_position_gradients(rest)
    for k in np.nonzero(offsets >= 0)[0]:
        r = distances[k]
        np.testing.assert_allclose(values[k, :-1], rest.values, rtol=0, atol=ATOL_EXACT,
                                   err_msg=f"r = {r:.4f} Å >= cutoff")
        np.testing.assert_allclose(values[k, -1], alone.values[0], rtol=0, atol=ATOL_EXACT,
                                   err_msg=f"r = {r:.4f} Å >= cutoff")
        np.testing.assert_allclose(grads[k, :-1, :-1], rest_grads, rtol=0, atol=ATOL_EXACT,
                                   err_msg=f"r = {r:.4f} Å >= cutoff")
        assert _max_abs(grads[k, :-1, -1]) == 0.0 and _max_abs(grads[k, -1, :-1]) == 0.0, \
            f"cross gradients are not zero at r = {r:.4f} Å >= cutoff"

    # continuity: successive differences shrink linearly with the step
    def largest_step(y, stride):
        return _max_abs(np.diff(y[::stride], axis=0))

    for name, y in (("values", values), ("gradients", grads)):
        jumps = [largest_step(y, s) for s in (4, 2, 1)]
        assert jumps[0] > 0, f"{name} do not change at all inside the cutoff"
        assert jumps[1] <= LINEAR_SHRINK * jumps[0] and jumps[2] <= LINEAR_SHRINK * jumps[1], \
            f"{name}: largest change between grid points {jumps} does not shrink with " \
            f"the step 4e-3, 2e-3, 1e-3 Å (discontinuity?)"

    # approach to the outside limit: quadratic for values, linear for gradients
    for name, y, shrink in (("values", values, QUADRATIC_SHRINK),
                            ("gradients", grads, LINEAR_SHRINK)):
        gaps = [_max_abs(y[at_cutoff - s] - y[at_cutoff]) for s in (4, 2, 1)]
        assert gaps[0] > 0
        assert gaps[1] <= shrink * gaps[0] and gaps[2] <= shrink * gaps[1], \
            f"{name}: differences to the value at the cutoff {gaps} for r = cutoff - " \
            f"(4, 2, 1) mÅ do not shrink by {shrink} per halving"


# ======================================================================================
# isolated atoms and distinct environments
# ======================================================================================
def _isolated_carbon():
    """A lone C atom: without periodicity, and in a periodic box larger than the cutoff."""
    return [Atoms("C"), Atoms("C", positions=[[1.0, 2.0, 3.0]], cell=8.0 * np.eye(3),
                              pbc=True)]


def test_isolated_atom_with_central_weight_is_a_unit_l0_vector():
    """Only the centre's own Gaussian: a unit vector whose only non-zero entries are the
    l = 0 (own species, own species) channels, forming the rank-one matrix c c^T; its
    gradients are zero. Unnormalised, the values scale as central_weight^2."""
    soap = make_soap(species=[1, 6, 8], normalize=True, central_weight=1.0)
    result = soap.compute(_isolated_carbon(), gradients=True)
    labels = result.feature_labels
    own_l0 = (labels[:, 0] == 6) & (labels[:, 1] == 6) & (labels[:, 2] == 0)
    assert np.all(np.isfinite(result.values))
    np.testing.assert_allclose(np.linalg.norm(result.values, axis=1), 1.0, rtol=0,
                               atol=RTOL_IDENTITY)
    assert _max_abs(result.values[:, ~own_l0]) == 0.0
    np.testing.assert_allclose(result.values[1], result.values[0], rtol=0, atol=ATOL_EXACT)
    block = power_spectrum_matrices(result.values, labels)[0, 0]
    eigenvalues = np.linalg.eigvalsh(block)
    assert eigenvalues[-1] > 0 and np.all(np.abs(eigenvalues[:-1]) <= RTOL_IDENTITY)
    assert _max_abs(result.gradients) == 0.0 and _max_abs(result.strain_gradients) == 0.0

    raw = [make_soap(species=[1, 6, 8], normalize=False, central_weight=w)
           .compute(_isolated_carbon()).values for w in (1.0, 2.0)]
    np.testing.assert_allclose(raw[1], 4.0 * raw[0], rtol=RTOL_IDENTITY, atol=0)


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
def test_isolated_atom_without_central_weight_is_zero(normalize):
    """central_weight = 0 and no neighbours: the zero vector and zero gradients, no NaN."""
    soap = make_soap(species=[1, 6, 8], normalize=normalize, central_weight=0.0)
    result = soap.compute(_isolated_carbon(), gradients=True)
    for name in ("values", "gradients", "strain_gradients"):
        array = getattr(result, name)
        assert np.all(np.isfinite(array)), f"{name} has NaN or inf"
        assert _max_abs(array) == 0.0, f"{name} is not zero"


def test_different_bond_angles_give_different_descriptors():
    soap = make_soap(species=[1, 8], normalize=True)
    a = soap.compute([_water(100.0)]).values
    b = soap.compute([_water(110.0)]).values
    distance = np.linalg.norm(a - b, axis=1)
    assert np.all(distance > MIN_DISTINCT), f"|q(100°) - q(110°)| per atom = {distance}"


def test_swapping_a_neighbours_species_changes_the_descriptor():
    """Same geometry, the neighbour at 1.3 Å a C or an O: every atom's descriptor changes."""
    soap = make_soap(species=[1, 6, 7, 8], normalize=True)
    positions = [[0.0, 0.0, 0.0], [1.3, 0.0, 0.0], [-0.4, 1.0, 0.0]]
    a = soap.compute([Atoms("NCH", positions=positions)]).values
    b = soap.compute([Atoms("NOH", positions=positions)]).values
    distance = np.linalg.norm(a - b, axis=1)
    assert np.all(distance > MIN_DISTINCT), f"|q(C) - q(O)| per atom = {distance}"


def test_close_but_not_overlapping_atoms_are_finite():
    """Atoms 0.05 Å apart are unusual but allowed: finite values and gradients."""
    atoms = Atoms("CCO", positions=[[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 1.2, 0.0]])
    result = make_soap(normalize=True).compute([atoms], gradients=True)
    for name in ("values", "gradients", "strain_gradients"):
        assert np.all(np.isfinite(getattr(result, name))), f"{name} has NaN or inf"


# ======================================================================================
# feature layout and the dot-product identity
# ======================================================================================
def test_feature_labels_describe_the_unique_pair_layout():
    soap = make_soap(species=[8, 1, 6])
    result = soap.compute([Atoms("OH", positions=[[0.0, 0.0, 0.0], [0.97, 0.0, 0.0]])])
    labels = result.feature_labels
    assert result.feature_label_names == LABEL_NAMES
    assert labels.shape == (soap.n_features(3), 5) == (result.n_features, 5)
    assert np.unique(labels, axis=0).shape[0] == labels.shape[0], "repeated labels"
    a, b, ls, na, nb = labels.T
    assert set(a.tolist()) | set(b.tolist()) == {1, 6, 8}, "species are atomic numbers"
    assert np.all(a <= b)
    assert np.all(na[a == b] <= nb[a == b])
    assert set(ls.tolist()) == set(range(HYPERS["l_max"] + 1))
    assert set(na.tolist()) | set(nb.tolist()) == set(range(HYPERS["n_max"]))
    # every unordered pair of channels (a, n), (b, n') appears exactly once per l
    alpha, beta, k = _channel_index(labels)
    assert labels.shape[0] == k * (k + 1) // 2 * (HYPERS["l_max"] + 1)
    assert np.unique(np.stack([ls, np.minimum(alpha, beta), np.maximum(alpha, beta)]),
                     axis=1).shape[1] == labels.shape[0]


def test_dot_products_equal_those_of_the_full_spectrum(ethanol_rmd17):
    """The sqrt(2) on off-diagonal channel pairs makes p . p' the dot product of the full
    (redundant) spectra; each full l block is (1/sqrt(2l+1)) C_l C_l^T, positive
    semi-definite of rank <= 2l + 1 (a wrong factor on the off-diagonal breaks both)."""
    result = make_soap(normalize=False).compute([ethanol_rmd17])
    values, labels = result.values, result.feature_labels
    full = power_spectrum_matrices(values, labels)
    gram = values @ values.T
    gram_full = np.einsum("ilab,jlab->ij", full, full)
    np.testing.assert_allclose(gram, gram_full, rtol=RTOL_IDENTITY, atol=0)
    for l in range(HYPERS["l_max"] + 1):
        eigenvalues = np.linalg.eigvalsh(full[:, l])  # ascending, per atom
        top = eigenvalues[:, -1:]
        assert full.shape[-1] > 2 * l + 1
        assert np.all(eigenvalues >= -RTOL_IDENTITY * top), f"l = {l} block not PSD"
        assert np.all(np.abs(eigenvalues[:, :-(2 * l + 1)]) <= RTOL_IDENTITY * top), \
            f"l = {l} block has rank > 2l + 1 = {2 * l + 1}"


def test_dot_products_do_not_depend_on_species_order(ethanol_rmd17):
    """values @ values.T is the same for species=[1, 6, 8], [8, 1, 6], inferred from a
    frame whose first-seen order is O, H, C, and with an extra absent species (N)."""
    atoms = ethanol_rmd17
    order = np.argsort([{8: 0, 1: 1, 6: 2}[z] for z in atoms.numbers], kind="stable")
    reordered = atoms[order]
    assert reordered.numbers[0] == 8
    reference = make_soap(species=[1, 6, 8]).compute([atoms]).values
    gram = reference @ reference.T
    variants = {
        "species=[8, 1, 6]": make_soap(species=[8, 1, 6]).compute([atoms]).values,
        "species=[1, 6, 7, 8]": make_soap(species=[1, 6, 7, 8]).compute([atoms]).values,
    }
    inferred = make_soap().compute([reordered]).values
    back = np.empty_like(inferred)
    back[order] = inferred
    variants["species inferred, O first"] = back
    for name, other in variants.items():
        np.testing.assert_allclose(other @ other.T, gram, rtol=RTOL_IDENTITY, atol=0,
                                   err_msg=name)


# ======================================================================================
# compressed element channels (species_mixing)
# ======================================================================================
#: a 4-species mixing into 2 channels (acetamide: H, C, N, O)
MIXING = {"H": [1.0, 0.2], "C": [0.3, -0.9], "N": [0.6, 0.5], "O": [-0.7, 0.4]}


@pytest.mark.parametrize("central_weight", [1.0, 0.0])
def test_mixed_spectrum_is_the_full_spectrum_contracted_with_the_weights(
        acetamide, central_weight):
    """Independent of the mixed code path: mixing channels kappa = sum_a W[a, kappa] c^a
    makes the (raw) spectrum P~[kappa n, lambda n'] = sum_ab W[a, kappa] W[b, lambda]
    P[a n, b n'] of the uncompressed one, the centre's own Gaussian included."""
    full = make_soap(normalize=False, central_weight=central_weight).compute([acetamide])
    mixed = make_soap(normalize=False, central_weight=central_weight,
                      species_mixing=MIXING).compute([acetamide])
    assert mixed.feature_label_names == ("channel_a", "channel_b", "l", "n_a", "n_b")
    assert mixed.n_features == make_soap(species_mixing=2).n_features(4) < full.n_features
    w = np.array([MIXING[s] for s in ("H", "C", "N", "O")])  # species order 1, 6, 7, 8
    wk = np.kron(w, np.eye(HYPERS["n_max"]))
    expected = np.einsum("xlab,ac,bd->xlcd",
                         power_spectrum_matrices(full.values, full.feature_labels), wk, wk)
    got = power_spectrum_matrices(mixed.values, mixed.feature_labels)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RTOL_IDENTITY * _max_abs(expected))


def test_orthogonal_mixing_keeps_the_kernel(ethanol_rmd17):
    """An orthogonal W (3 species into 3 channels) is a rotation of the element channels:
    the normalised dot products are those of the uncompressed SOAP."""
    w = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))[0]
    q = make_soap().compute([ethanol_rmd17]).values
    qm = make_soap(species_mixing={1: w[0], 6: w[1], 8: w[2]}).compute([ethanol_rmd17]).values
    np.testing.assert_allclose(qm @ qm.T, q @ q.T, rtol=0, atol=RTOL_IDENTITY)


@pytest.mark.parametrize("mixing", [1, 3, "map"])
@pytest.mark.parametrize("structure", ["acetamide", "triclinic_two_species"])
def test_mixed_spectrum_gradients_and_invariance(request, structure, mixing):
    """Mixed channels keep the analytic position and strain gradients (central
    differences) and every invariance."""
    atoms = request.getfixturevalue(structure)
    if mixing == "map":
        mixing = {**MIXING, "Si": [0.1, 1.0]}
    soap = make_soap(species_mixing=mixing)
    errors = check_gradients(soap, atoms, rtol=RTOL_GRADIENT)
    assert set(errors) == {"positions", "strain"}
    assert_invariant(soap, atoms, atol=ATOL_INVARIANCE)


def test_fixed_embedding_does_not_depend_on_the_species_list(acetamide):
    """An integer species_mixing gives every element its own fixed weights: the features
    (not only their dot products) are the same whatever species the descriptor lists,
    and distinct elements get distinct weights."""
    reference = make_soap(species_mixing=2).compute([acetamide]).values
    for species in ([1, 6, 7, 8, 14], [8, 7, 6, 1, 29, 47]):
        other = make_soap(species_mixing=2, species=species).compute([acetamide]).values
        np.testing.assert_allclose(other, reference, rtol=0, atol=ATOL_EXACT)
    rows = make_soap(species_mixing=2).mixing_matrix(range(1, 90))
    assert np.min(np.linalg.norm(rows[:, None] - rows[None], axis=-1)
                  + 10 * np.eye(len(rows))) > 1e-6
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-12)


def test_mixing_settings_round_trip():
    """get_params gives back the same descriptor, also after JSON (string keys)."""
    import json

    for mixing in (None, 2, MIXING):
        soap = make_soap(species_mixing=mixing)
        params = json.loads(json.dumps(soap.get_params()))
        again = SOAP(**params)
        assert again.species_mixing == soap.species_mixing
        assert again.get_params() == soap.get_params()


def test_fixed_embedding_is_written_out_once_species_are_fixed(acetamide):
    """With the species fixed (a fitted term), get_params gives the embedding's weights, so
    a saved model carries W: the same features, and a species outside them is an error."""
    soap = make_soap(species_mixing=2, species=[1, 6, 7, 8])
    params = soap.get_params()
    assert sorted(params["species_mixing"]) == [1, 6, 7, 8]
    again = SOAP(**params)
    np.testing.assert_array_equal(again.compute([acetamide]).values,
                                  soap.compute([acetamide]).values)
    with pytest.raises(ValueError, match=r"no weights for species \[14\]"):
        SOAP(**{**params, "species": None}).compute([Atoms("SiH", positions=[[0, 0, 0],
                                                                           [1.5, 0, 0]])])


def test_species_missing_from_the_mixing_raises_naming_it(acetamide):
    soap = make_soap(species_mixing={k: MIXING[k] for k in ("H", "C", "O")})
    with pytest.raises(ValueError, match=r"species_mixing has no weights for species \[7\]"):
        soap.compute([acetamide])


BAD_MIXING = [0, -1, 65, 2.5, True, {}, {"H": [1.0], "C": [1.0, 2.0]}, {"H": [math.nan]},
              {"Xx": [1.0]}, "two"]


@pytest.mark.parametrize("value", BAD_MIXING, ids=[repr(v) for v in BAD_MIXING])
def test_bad_mixing_raises_naming_the_parameter(value):
    with pytest.raises(ValueError, match="species_mixing"):
        make_soap(species_mixing=value)


# ======================================================================================
# bad input
# ======================================================================================
def _pair(symbols="SiC", distance=1.9, **kw) -> Atoms:
    return Atoms(symbols, positions=[[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], **kw)


def _bad_frame(kind: str) -> Atoms:
    if kind == "nan_position":
        atoms = _pair()
        atoms.positions[1, 1] = np.nan
        return atoms
    if kind == "inf_position":
        atoms = _pair()
        atoms.positions[0, 2] = np.inf
        return atoms
    if kind == "singular_cell":
        return _pair(cell=[[3.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 0.0, 3.0]], pbc=True)
    if kind == "zero_cell":
        return _pair(pbc=True)
    if kind == "overlapping_atoms":
        return Atoms("SiCC", positions=[[0.0, 0.0, 0.0], [1.9, 0.0, 0.0], [1.9, 0.0, 0.0]])
    if kind == "overlapping_periodic_image":
        return _pair("SiSi", distance=3.0, cell=3.0 * np.eye(3), pbc=True)
    raise AssertionError(kind)


#: What the error message must mention besides the frame: the problem and the fix.
BAD_FRAME_WORDS = {
    "nan_position": ("nan", "fix"),
    "inf_position": ("inf", "fix"),
    "singular_cell": ("singular", "cell"),
    "zero_cell": ("zero", "cell"),
    "overlapping_atoms": ("overlap", "remove"),
    "overlapping_periodic_image": ("overlap", "remove"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FRAME_WORDS))
def test_bad_frame_raises_naming_the_frame(kind):
    """A bad frame gives a ValueError naming its index (counted over all frames, not
    within a batch) and the fix; never NaN values."""
    frames = [_pair(), _pair(distance=2.1), _bad_frame(kind), _pair()]
    soap = make_soap(batch_atoms=2)  # the bad frame is in the third batch
    with pytest.raises(ValueError, match=r"\bframe 2\b") as info:
        soap.compute(frames, gradients=True)
    message = str(info.value).lower()
    for word in BAD_FRAME_WORDS[kind]:
        assert word in message, f"{word!r} not in the error message: {info.value}"


def test_unknown_species_raises_naming_the_frame_and_the_fix():
    frames = [_pair(), _pair(), Atoms("SiO", positions=[[0, 0, 0], [1.6, 0, 0]])]
    soap = make_soap(species=[6, 14])
    with pytest.raises(ValueError, match=r"\bframe 2\b") as info:
        soap.compute(frames)
    message = str(info.value)
    assert "O" in message and "8" in message and "species" in message


BAD_SETTINGS = [
    ("cutoff", 0.0), ("cutoff", -1.0), ("cutoff", math.nan), ("cutoff", math.inf),
    ("cutoff_width", -0.1), ("cutoff_width", 10.0),
    ("n_max", 0), ("n_max", -2), ("n_max", 2.5), ("n_max", 1000),
    ("l_max", -1), ("l_max", 1.5), ("l_max", 1000),
    ("atom_sigma", 0.0), ("atom_sigma", -0.5), ("atom_sigma", math.nan),
    ("atom_sigma", math.inf),
    ("central_weight", math.nan),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS,
                         ids=[f"{n}={v!r}" for n, v in BAD_SETTINGS])
def test_bad_settings_raise_naming_the_parameter(name, value):
    """Out-of-range or non-integer settings raise ValueError naming the parameter (at
    construction, or at the latest on the first compute)."""
    with pytest.raises(ValueError, match=name):
        make_soap(**{name: value}).compute([_pair()])


def test_unknown_gradient_kind_raises():
    with pytest.raises(ValueError, match="positions"):
        make_soap().compute([_pair()], gradients=["forces"])


@pytest.mark.parametrize("cls", ["SOAP", "TwoBody", "SymmetryFunctions"])
def test_species_as_symbols_or_numbers(cls, acetamide):
    """species=["H", "C", ...] is the same descriptor as the atomic numbers, in any order
    and mix; a name that is no element is a clear error."""
    import gapkit

    make = getattr(gapkit, cls)
    by_symbol = make(species=["O", "H", "N", "C"])
    by_number = make(species=[1, 6, 7, 8])
    mixed = make(species=[8, "H", "7", 6])
    assert by_symbol.species == by_number.species == mixed.species == (1, 6, 7, 8)
    a = by_symbol.compute([acetamide]).values
    b = by_number.compute([acetamide]).values
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="'Carbon' is neither a chemical symbol"):
        make(species=["H", "Carbon"])
    with pytest.raises(ValueError, match="species must be a list"):
        make(species="H")
