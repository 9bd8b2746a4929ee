"""Tests of the two-body (pair distance) descriptor ``gapkit.descriptors.TwoBody``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.lj import LennardJones
from ase.neighborlist import neighbor_list

from gapkit.descriptors import TwoBody
from gapkit.descriptors.twobody import species_pairs
from gapkit.testing import assert_invariant, check_gradients


# --------------------------------------------------------------------------------------
# structures
# --------------------------------------------------------------------------------------
def rattled_si() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=3)
    return atoms


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=5)
    return atoms


def small_triclinic() -> Atoms:
    """Two atoms in a skewed cell whose widths (~2.2 Å) are well below the cutoff."""
    cell = np.array([[2.6, 0.0, 0.0], [0.8, 2.4, 0.0], [0.5, 0.7, 2.5]])
    return Atoms("SiC", scaled_positions=[[0.05, 0.1, 0.02], [0.45, 0.55, 0.6]],
                 cell=cell, pbc=True)


def canonical_ase_pairs(atoms: Atoms, cutoff: float):
    i, j, S, d = neighbor_list("ijSd", atoms, cutoff)
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    return i[order], j[order], S[order], d[order]


def no_pair_near_cutoff(atoms: Atoms, cutoff: float, margin: float = 1e-3) -> bool:
    d = neighbor_list("d", atoms, cutoff + margin)
    return not np.any(np.abs(d - cutoff) < margin)


# --------------------------------------------------------------------------------------
# values and centres
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, cutoff", [(rattled_si, 4.0), (ethanol, 3.0),
                                          (small_triclinic, 4.0)])
def test_distances_and_order_match_ase_neighbor_list(make, cutoff):
    atoms = make()
    res = TwoBody(cutoff=cutoff).compute(atoms)
    i, j, S, d = canonical_ase_pairs(atoms, cutoff)
    assert res.values.shape == (d.size, 1)
    np.testing.assert_allclose(res.values[:, 0], d, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.centre_atom, i)
    np.testing.assert_array_equal(res.centre_species, atoms.numbers[i])
    pairs = TwoBody(cutoff=cutoff).pairs(atoms)
    np.testing.assert_array_equal(pairs["i"], i)
    np.testing.assert_array_equal(pairs["j"], j)
    np.testing.assert_array_equal(pairs["shift"], S)
    assert res.feature_labels.tolist() == [[0]]
    assert res.feature_label_names == ("distance",)


def test_distances_equal_minimum_image_distances():
    atoms = rattled_si().repeat((2, 2, 2))  # 10.86 Å cell: cutoff 4 < half the width
    tb = TwoBody(cutoff=4.0)
    res, pairs = tb.compute(atoms), tb.pairs(atoms)
    expected = np.array([atoms.get_distance(a, b, mic=True)
                         for a, b in zip(pairs["i"], pairs["j"])])
    np.testing.assert_allclose(res.values[:, 0], expected, rtol=0, atol=1e-12)
    # every pair of atoms within the cutoff (minimum image) is a centre
    all_d = atoms.get_all_distances(mic=True)
    n_within = np.count_nonzero((all_d < 4.0) & ~np.eye(len(atoms), dtype=bool))
    assert res.n_centres == n_within


@pytest.mark.parametrize("make, cutoff", [(rattled_si, 4.0), (ethanol, 3.0),
                                          (small_triclinic, 4.0)])
def test_each_unordered_pair_appears_twice(make, cutoff):
    atoms = make()
    tb = TwoBody(cutoff=cutoff)
    res, p = tb.compute(atoms), tb.pairs(atoms)
    keys = {(a, b, *s): k for k, (a, b, s) in
            enumerate(zip(p["i"].tolist(), p["j"].tolist(), p["shift"].tolist()))}
    assert len(keys) == res.n_centres  # no duplicates
    for (a, b, *s), k in keys.items():
        partner = keys[(b, a, *(-np.asarray(s)).tolist())]
        assert not (a == b and not any(s)), "an atom listed as its own neighbour"
        assert partner != k  # a self-image (i, i, S) pairs with (i, i, -S)
        assert res.values[partner, 0] == pytest.approx(res.values[k, 0], abs=1e-12)
        assert res.centre_types[partner] == res.centre_types[k]
    # the per-atom split is symmetric: summing any pair function over centres owned
    # by each atom and over atoms counts every unordered pair exactly twice
    d = canonical_ase_pairs(atoms, cutoff)[3]
    assert np.isclose(res.values.sum(), d.sum())


def test_small_cell_has_several_images_and_self_images():
    atoms = small_triclinic()
    p = TwoBody(cutoff=4.0).pairs(atoms)
    self_images = p["i"] == p["j"]
    assert self_images.any() and np.all(np.any(p["shift"][self_images] != 0, axis=1))
    # atom 0 sees several images of atom 1
    assert np.count_nonzero((p["i"] == 0) & (p["j"] == 1)) > 3


# --------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, cutoff", [(rattled_si, 4.0), (ethanol, 3.0),
                                          (small_triclinic, 4.0)])
def test_check_gradients(make, cutoff):
    atoms = make()
    assert no_pair_near_cutoff(atoms, cutoff)
    errors = check_gradients(TwoBody(cutoff=cutoff, cutoff_width=0.5), atoms, rtol=1e-6)
    assert errors["positions"] < 1e-6 and errors["strain"] < 1e-6


def test_gradient_layout():
    atoms = small_triclinic()
    res = TwoBody(cutoff=4.0).compute(atoms, gradients=True)
    p = TwoBody(cutoff=4.0).pairs(atoms)
    vec = (atoms.positions[p["j"]] + p["shift"] @ atoms.cell[:] - atoms.positions[p["i"]])
    unit = vec / np.linalg.norm(vec, axis=1)[:, None]
    g = res.gradients[:, :, 0]
    for k in range(res.n_centres):
        rows = np.nonzero(res.gradient_centre == k)[0]
        atoms_k = res.gradient_atom[rows].tolist()
        if p["i"][k] == p["j"][k]:  # an image of the centre's own atom: no net force
            assert atoms_k == [p["i"][k]]
            np.testing.assert_allclose(g[rows[0]], 0.0, atol=1e-15)
        else:
            assert sorted(atoms_k) == sorted([p["i"][k], p["j"][k]])
            np.testing.assert_allclose(g[rows[atoms_k.index(p["j"][k])]], unit[k], atol=1e-14)
            np.testing.assert_allclose(g[rows[atoms_k.index(p["i"][k])]], -unit[k], atol=1e-14)
    np.testing.assert_allclose(res.strain_gradients[:, :, :, 0],
                               unit[:, :, None] * vec[:, None, :], atol=1e-13)


def test_gradient_subsets():
    atoms = ethanol()
    tb = TwoBody(cutoff=3.0)
    pos = tb.compute(atoms, gradients=["positions"])
    assert pos.gradients is not None and pos.strain_gradients is None
    strain = tb.compute(atoms, gradients=["strain"])
    assert strain.gradients is None and strain.strain_gradients is not None
    none = tb.compute(atoms)
    assert none.gradients is None and none.strain_gradients is None
    with pytest.raises(ValueError, match="unknown gradients"):
        tb.compute(atoms, gradients=["cell"])


def test_pair_energy_reproduces_lennard_jones_forces_and_stress():
    """E = sum over centres of phi(r)/2 is the LJ energy; its forces/virial follow."""
    sigma, eps, rc = 2.1, 0.05, 4.5
    atoms = rattled_si()
    assert no_pair_near_cutoff(atoms, rc)
    res = TwoBody(cutoff=rc, cutoff_width=0.0).compute(atoms, gradients=True)
    r = res.values[:, 0]

    def phi(x):
        return 4 * eps * ((sigma / x) ** 12 - (sigma / x) ** 6)

    dphi = 4 * eps * (-12 * sigma**12 / r**13 + 6 * sigma**6 / r**7)
    energy = 0.5 * np.sum(phi(r) - phi(rc))
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, res.gradient_atom,
              -0.5 * dphi[res.gradient_centre, None] * res.gradients[:, :, 0])
    virial = -0.5 * np.einsum("c,cab->ab", dphi, res.strain_gradients[:, :, :, 0])

    atoms.calc = LennardJones(sigma=sigma, epsilon=eps, rc=rc, smooth=False)
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-10)
    ase_virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    np.testing.assert_allclose(virial, ase_virial, atol=1e-10)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-12)


# --------------------------------------------------------------------------------------
# invariance
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, cutoff", [(rattled_si, 4.0), (ethanol, 3.0),
                                          (small_triclinic, 4.0)])
def test_invariance(make, cutoff):
    assert_invariant(TwoBody(cutoff=cutoff), make())


# --------------------------------------------------------------------------------------
# species pair types
# --------------------------------------------------------------------------------------
def test_species_pairs_list():
    assert species_pairs([8, 1, 6, 1]) == [(1, 1), (1, 6), (1, 8), (6, 6), (6, 8), (8, 8)]
    assert species_pairs([14]) == [(14, 14)]


def test_centre_types_distinguish_species_pairs():
    atoms = ethanol()
    tb = TwoBody(cutoff=3.0)
    res, p = tb.compute(atoms), tb.pairs(atoms)
    pairs = [tuple(x) for x in res.info["species_pairs"]]
    assert pairs == species_pairs([1, 6, 8])
    zi, zj = atoms.numbers[p["i"]], atoms.numbers[p["j"]]
    expected = [pairs.index((min(a, b), max(a, b))) for a, b in zip(zi, zj)]
    np.testing.assert_array_equal(res.centre_types, expected)
    ch, cc, hh = pairs.index((1, 6)), pairs.index((6, 6)), pairs.index((1, 1))
    assert len({ch, cc, hh}) == 3
    assert {ch, cc, hh} <= set(res.centre_types.tolist())
    # C-H owned by C and by H share a type; C-C bond length where expected
    assert set(res.centre_species[res.centre_types == ch].tolist()) == {1, 6}
    assert np.all((res.values[res.centre_types == cc] > 1.4)
                  & (res.values[res.centre_types == cc] < 1.65))


def test_fixed_species_fix_the_codes():
    tb = TwoBody(cutoff=3.0, species=[8, 6, 1])
    res = tb.compute(molecule("CH4"))
    assert res.info["species_pairs"] == [[1, 1], [1, 6], [1, 8], [6, 6], [6, 8], [8, 8]]
    assert set(res.centre_types.tolist()) == {0, 1}
    assert res.info["species"] == [1, 6, 8]
    inferred = TwoBody(cutoff=3.0).compute(molecule("CH4"))
    assert inferred.info["species"] == [1, 6]
    assert inferred.info["species_pairs"] == [[1, 1], [1, 6], [6, 6]]


# --------------------------------------------------------------------------------------
# input validation and edge cases
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"cutoff": 0.0}, "cutoff must be a finite number > 0"),
    ({"cutoff": -2.0}, "cutoff must be a finite number > 0"),
    ({"cutoff": float("inf")}, "cutoff must be a finite number > 0"),
    ({"cutoff": float("nan")}, "cutoff must be a finite number > 0"),
    ({"cutoff": 3.0, "cutoff_width": 3.5}, "cutoff_width must satisfy"),
    ({"cutoff": 3.0, "cutoff_width": -0.1}, "cutoff_width must satisfy"),
    ({"batch_atoms": 0}, "batch_atoms"),
    ({"species": []}, "species"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoBody(**kwargs)


def test_unknown_species_raises():
    tb = TwoBody(cutoff=3.0, species=[1, 6])
    with pytest.raises(ValueError, match=r"frame 1: species O \(Z=8\) not in the "
                                         r"descriptor's fixed species"):
        tb.compute([molecule("CH4"), ethanol()])


def test_no_frames_raises():
    with pytest.raises(ValueError, match="no frames"):
        TwoBody().compute([])


def test_isolated_atom_has_no_centres():
    tb = TwoBody(cutoff=3.0)
    res = tb.compute(Atoms("Ar", positions=[[0.0, 0.0, 0.0]]), gradients=True)
    assert res.values.shape == (0, 1)
    assert res.n_atoms.tolist() == [1]
    assert res.gradients.shape == (0, 3, 1) and res.strain_gradients.shape == (0, 3, 3, 1)
    # two atoms farther apart than the cutoff, in a batch with a real molecule
    far = Atoms("ArAr", positions=[[0, 0, 0], [0, 0, 3.5]])
    res = tb.compute([far, molecule("CH4"), Atoms("Ar")], gradients=True)
    assert res.n_atoms.tolist() == [2, 5, 1]
    assert set(res.centre_structure.tolist()) == {1}
    assert res.structure(0).n_centres == 0 and res.structure(2).n_centres == 0


def test_batches_give_the_same_result():
    frames = [ethanol(), rattled_si(), Atoms("Ar"), molecule("CH4"), small_triclinic()]
    big = TwoBody(cutoff=3.5).compute(frames, gradients=True)
    small = TwoBody(cutoff=3.5, batch_atoms=5).compute(frames, gradients=True)
    for name in ("values", "centre_structure", "centre_atom", "centre_species",
                 "centre_types", "n_atoms", "gradients", "gradient_centre",
                 "gradient_atom", "strain_gradients"):
        np.testing.assert_array_equal(getattr(big, name), getattr(small, name), err_msg=name)
    # per-structure results equal single-structure computations
    for k, atoms in enumerate(frames):
        alone = TwoBody(cutoff=3.5, species=big.info["species"]).compute(atoms, gradients=True)
        part = big.structure(k)
        np.testing.assert_array_equal(part.values, alone.values)
        np.testing.assert_array_equal(part.gradient_atom, alone.gradient_atom)
        np.testing.assert_array_equal(part.centre_types, alone.centre_types)


def test_params_round_trip_and_repr():
    tb = TwoBody(cutoff=4.5, cutoff_width=0.75, species=[6, 1])
    params = tb.get_params()
    assert params == {"cutoff": 4.5, "cutoff_width": 0.75, "species": [1, 6]}
    assert TwoBody(**params).get_params() == params
    assert repr(tb) == "TwoBody(cutoff=4.5, cutoff_width=0.75, species=[1, 6])"
    res = tb.compute(molecule("CH4"))
    assert res.info["cutoff"] == 4.5 and res.info["cutoff_width"] == 0.75
    assert res.info["descriptor"] == "TwoBody"


def test_float32():
    atoms = ethanol()
    res32 = TwoBody(cutoff=3.0, dtype=torch.float32).compute(atoms, gradients=True)
    res64 = TwoBody(cutoff=3.0).compute(atoms, gradients=True)
    np.testing.assert_allclose(res32.values, res64.values, rtol=1e-6)
    np.testing.assert_allclose(res32.gradients, res64.gradients, atol=1e-6)
