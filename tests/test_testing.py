"""Tests of the public test helpers in ``gapkit.testing``.

They run on two toy descriptors defined here, with exact analytic gradients, so that they
do not depend on gapkit's SOAP implementation: a per-atom radial descriptor (one centre
per atom) and a two-body descriptor (one centre per ordered neighbour pair).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from gapkit.descriptors.base import DescriptorResult
from gapkit.testing import (
    GRADIENT_RTOL,
    TRANSFORMS,
    assert_invariant,
    check_gradients,
    dense_position_gradients,
    numerical_gradients,
    per_atom_values,
    random_rotation,
)


# --------------------------------------------------------------------------------------
# toy descriptors
# --------------------------------------------------------------------------------------
class RadialToy:
    r"""Gaussian radial histogram with a smooth cosine cutoff.

    Per atom (``per_pair=False``):

    .. math:: q_{ik} = \sum_j w(Z_j)\, e^{-(r_{ij} - \mu_k)^2 / 2s^2} f_c(r_{ij})

    Per ordered pair (``per_pair=True``), one centre per neighbour pair ``(i, j)``, owned by
    ``i``: :math:`q_{(ij)k} = w(Z_j)\, e^{-(r_{ij} - \mu_k)^2 / 2s^2} f_c(r_{ij})`.

    With ``f(D)`` the pair term of the vector ``D = r_j + S h - r_i`` and
    ``g = df/dD = f'(r) D / r``: ``d q / d r_j += g``, ``d q / d r_i -= g`` and
    ``d q / d eps_ab += g_a D_b``.
    """

    def __init__(self, *, cutoff: float = 4.0, n_features: int = 5, width: float = 0.5,
                 per_pair: bool = False):
        self.cutoff = cutoff
        self.mu = np.linspace(1.0, cutoff, n_features)
        self.width = width
        self.per_pair = per_pair

    def _pairs(self, atoms: Atoms):
        i, j, D, S = neighbor_list("ijDS", atoms, self.cutoff)
        # neighbor_list's order depends on its internal binning; make it canonical so that
        # the pair centres keep their rows under small displacements.
        order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
        return i[order], j[order], D[order]

    def _pair_terms(self, atoms: Atoms, D: np.ndarray, j: np.ndarray):
        r = np.linalg.norm(D, axis=1)
        weight = 1.0 + 0.1 * atoms.numbers[j]
        x = r[:, None] - self.mu
        gauss = np.exp(-x**2 / (2 * self.width**2))
        fc = 0.5 * (1 + np.cos(np.pi * r / self.cutoff))
        dfc = -0.5 * np.pi / self.cutoff * np.sin(np.pi * r / self.cutoff)
        f = weight[:, None] * gauss * fc[:, None]
        df_dr = weight[:, None] * gauss * (-x / self.width**2 * fc[:, None] + dfc[:, None])
        grad = df_dr[:, None, :] * (D / r[:, None])[:, :, None]  # (n_pairs, 3, n_features)
        return f, grad

    def compute(self, frames, *, gradients=False):
        if gradients is True:
            gradients = ["positions", "strain"]
        gradients = list(gradients or [])
        n_features = self.mu.size
        parts = []
        centre_offset = 0
        for s, atoms in enumerate(frames):
            n = len(atoms)
            i, j, D = self._pairs(atoms)
            f, grad = self._pair_terms(atoms, D, j)
            if self.per_pair:
                centre_atom = i
                pair_centre = np.arange(i.size)
                values = f
            else:
                centre_atom = np.arange(n)
                pair_centre = i
                values = np.zeros((n, n_features))
                np.add.at(values, i, f)
            n_centres = centre_atom.size
            part = {"values": values, "centre_atom": centre_atom,
                    "centre_structure": np.full(n_centres, s),
                    "centre_species": atoms.numbers[centre_atom]}
            # sparse position gradients, one entry per (centre, atom), own atom included
            rows = np.arange(n_centres)
            keys = np.concatenate([pair_centre * n + j, pair_centre * n + centre_atom[pair_centre],
                                   rows * n + centre_atom])
            entries = np.concatenate([grad, -grad, np.zeros((n_centres, 3, n_features))])
            unique, inverse = np.unique(keys, return_inverse=True)
            sparse = np.zeros((unique.size, 3, n_features))
            np.add.at(sparse, inverse.ravel(), entries)
            part["gradients"] = sparse
            part["gradient_centre"] = unique // n + centre_offset
            part["gradient_atom"] = unique % n
            strain = np.zeros((n_centres, 3, 3, n_features))
            np.add.at(strain, pair_centre, grad[:, :, None, :] * D[:, None, :, None])
            part["strain_gradients"] = strain
            parts.append(part)
            centre_offset += n_centres

        def cat(name):
            return np.concatenate([p[name] for p in parts])

        species = cat("centre_species")
        return DescriptorResult(
            values=cat("values").reshape(-1, n_features),
            centre_structure=cat("centre_structure"), centre_atom=cat("centre_atom"),
            centre_species=species, centre_types=species,
            n_atoms=np.array([len(a) for a in frames]),
            feature_labels=np.arange(n_features)[:, None], feature_label_names=("k",),
            gradients=cat("gradients") if "positions" in gradients else None,
            gradient_centre=cat("gradient_centre") if "positions" in gradients else None,
            gradient_atom=cat("gradient_atom") if "positions" in gradients else None,
            strain_gradients=cat("strain_gradients") if "strain" in gradients else None,
        )


class Modified:
    """Wrap a descriptor and break it on purpose."""

    def __init__(self, inner, *, add=None, gradient_scale=1.0, strain_scale=1.0):
        self.inner = inner
        self.add = add
        self.gradient_scale = gradient_scale
        self.strain_scale = strain_scale

    def compute(self, frames, *, gradients=False):
        result = self.inner.compute(frames, gradients=gradients)
        changes = {}
        if self.add is not None:
            extra = np.concatenate([self.add(atoms) for atoms in frames])
            atom = result.atom_offsets[result.centre_structure] + result.centre_atom
            changes["values"] = result.values + extra[atom][:, None]
        if result.gradients is not None:
            changes["gradients"] = result.gradients * self.gradient_scale
        if result.strain_gradients is not None:
            changes["strain_gradients"] = result.strain_gradients * self.strain_scale
        return dataclasses.replace(result, **changes)


def chirality(atoms: Atoms, cutoff: float = 4.0) -> np.ndarray:
    """A rotation-invariant pseudo-scalar per atom: (A x B) . C, A = sum_j r_ij D_ij, ..."""
    i, D = neighbor_list("iD", atoms, cutoff)
    r = np.linalg.norm(D, axis=1)
    out = np.zeros(len(atoms))
    for k in range(len(atoms)):
        V, w = D[i == k], r[i == k]
        A, B, C = w @ V, (w**2) @ V, (w**3) @ V
        out[k] = 1e-3 * np.dot(np.cross(A, B), C)
    return out


# --------------------------------------------------------------------------------------
# structures
# --------------------------------------------------------------------------------------
@pytest.fixture
def silicon():
    atoms = bulk("Si", cubic=True)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms


@pytest.fixture
def triclinic():
    cell = np.array([[3.2, 0.0, 0.0], [1.1, 3.0, 0.0], [0.6, -0.9, 3.4]])
    rng = np.random.default_rng(3)
    return Atoms("SiCSi", scaled_positions=rng.random((3, 3)), cell=cell, pbc=True)


STRUCTURES = ["silicon", "ethanol", "triclinic"]
TOYS = {"radial": RadialToy(), "pair": RadialToy(per_pair=True)}


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def test_random_rotation():
    rng = np.random.default_rng(0)
    for inversion in (False, True):
        R = random_rotation(rng, inversion=inversion)
        assert R.shape == (3, 3)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(-1.0 if inversion else 1.0)
    np.testing.assert_array_equal(random_rotation(5), random_rotation(5))
    # uniform on SO(3): the mean of many rotations is zero
    mean = np.mean([random_rotation(rng) for _ in range(2000)], axis=0)
    assert np.abs(mean).max() < 0.06


def test_per_atom_values_groups_and_sorts():
    values = np.array([[3.0, 0.0], [1.0, 2.0], [1.0, 1.0], [9.0, 9.0], [5.0, 5.0]])
    result = DescriptorResult(
        values=values, centre_structure=np.array([0, 0, 0, 1, 0]),
        centre_atom=np.array([1, 1, 1, 0, 2]), centre_species=np.ones(5, int),
        centre_types=np.ones(5, int), n_atoms=np.array([3, 1]),
        feature_labels=np.arange(2)[:, None], feature_label_names=("k",))
    groups = per_atom_values(result)
    assert len(groups) == 3
    assert groups[0].shape == (0, 2)
    np.testing.assert_array_equal(groups[1], [[1.0, 1.0], [1.0, 2.0], [3.0, 0.0]])
    np.testing.assert_array_equal(groups[2], [[5.0, 5.0]])
    np.testing.assert_array_equal(per_atom_values(result, structure=1)[0], [[9.0, 9.0]])


def test_dense_position_gradients_two_structures(silicon, ethanol):
    toy = TOYS["pair"]
    result = toy.compute([silicon, ethanol], gradients=True)
    alone = toy.compute([ethanol], gradients=True)
    dense = dense_position_gradients(result, structure=1)
    assert dense.shape == (alone.n_centres, len(ethanol), 3, alone.n_features)
    np.testing.assert_allclose(dense, dense_position_gradients(alone), atol=1e-14)
    # translation invariance: the gradients of each centre sum to zero over the atoms
    np.testing.assert_allclose(dense.sum(axis=1), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="gradients=True"):
        dense_position_gradients(toy.compute([ethanol]))


# --------------------------------------------------------------------------------------
# the helpers pass on correct descriptors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("toy", TOYS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_correct_descriptor_passes(toy, structure, request):
    atoms = request.getfixturevalue(structure)
    assert_invariant(TOYS[toy], atoms)
    errors = check_gradients(TOYS[toy], atoms)
    assert set(errors) == {"positions", "strain"}
    assert 0.0 <= max(errors.values()) < GRADIENT_RTOL


def test_slab_runs_periodic_transforms_on_periodic_axes(silicon):
    slab = silicon.copy()
    slab.pbc = (True, True, False)
    assert_invariant(TOYS["radial"], slab)
    check_gradients(TOYS["radial"], slab, strain=False)


def test_numerical_gradients_shapes(ethanol):
    dpos, dstrain = numerical_gradients(TOYS["radial"], ethanol)
    assert dpos.shape == (len(ethanol), len(ethanol), 3, 5)
    assert dstrain.shape == (len(ethanol), 3, 3, 5)
    assert numerical_gradients(TOYS["radial"], ethanol, strain=False)[1] is None


# --------------------------------------------------------------------------------------
# the helpers fail on broken descriptors
# --------------------------------------------------------------------------------------
def test_adding_x_breaks_invariance(silicon, ethanol):
    adds_x = Modified(TOYS["radial"], add=lambda atoms: atoms.positions[:, 0])
    with pytest.raises(AssertionError, match="'translation'") as info:
        assert_invariant(adds_x, ethanol, transforms=["translation"])
    assert "t = [" in str(info.value) and "max abs deviation" in str(info.value)
    with pytest.raises(AssertionError, match="'rotation'") as info:
        assert_invariant(adds_x, silicon)
    message = str(info.value)
    assert "R = (det +1)" in message and "cell @ R.T" in message
    for name in ("inversion", "lattice_shift"):
        assert f"'{name}'" in message
    assert "'permutation'" not in message


def test_atom_index_breaks_permutation_and_supercell(silicon):
    indexed = Modified(TOYS["pair"], add=lambda atoms: 1e-3 * np.arange(len(atoms)))
    with pytest.raises(AssertionError) as info:
        assert_invariant(indexed, silicon)
    message = str(info.value)
    assert "'permutation'" in message and "perm = [" in message
    assert "'supercell'" in message and "atoms.repeat((2, 2, 2))" in message
    assert "2 of 6 transform(s) failed" in message


def test_size_dependence_breaks_supercell_only(triclinic):
    extensive = Modified(TOYS["radial"], add=lambda atoms: np.full(len(atoms), len(atoms)))
    with pytest.raises(AssertionError, match="'supercell'") as info:
        assert_invariant(extensive, triclinic)
    assert "1 of 6 transform(s) failed" in str(info.value)


def test_pseudo_scalar_breaks_inversion_only(ethanol):
    chiral = Modified(TOYS["radial"], add=chirality)
    with pytest.raises(AssertionError, match="'inversion'") as info:
        assert_invariant(chiral, ethanol)
    assert "1 of 4 transform(s) failed" in str(info.value)
    assert "R = (det -1)" in str(info.value)


def test_transform_selection(ethanol, silicon):
    with pytest.raises(ValueError, match="periodic"):
        assert_invariant(TOYS["radial"], ethanol, transforms=["lattice_shift"])
    with pytest.raises(ValueError, match="unknown transform"):
        assert_invariant(TOYS["radial"], ethanol, transforms=["shear"])
    assert_invariant(TOYS["radial"], silicon, transforms="rotation")
    assert_invariant(TOYS["radial"], silicon, transforms=TRANSFORMS, seed=7)


def test_wrong_position_gradient_fails(silicon):
    wrong = Modified(TOYS["radial"], gradient_scale=1.01)
    with pytest.raises(AssertionError, match="position gradients") as info:
        check_gradients(wrong, silicon)
    message = str(info.value)
    assert "analytic" in message and "numerical" in message and "feature" in message
    assert "strain gradients" not in message


@pytest.mark.parametrize("structure", ["ethanol", "triclinic"])
def test_wrong_strain_gradient_fails(structure, request):
    atoms = request.getfixturevalue(structure)
    wrong = Modified(TOYS["pair"], strain_scale=1.01)
    with pytest.raises(AssertionError, match="strain gradients") as info:
        check_gradients(wrong, atoms)
    assert "position gradients" not in str(info.value)
    errors = check_gradients(wrong, atoms, strain=False)
    assert set(errors) == {"positions"}


def test_changing_neighbour_list_is_reported():
    h = 1e-4
    cutoff = TOYS["pair"].cutoff
    dimer = Atoms("Si2", positions=[[0, 0, 0], [cutoff - 0.5 * h, 0, 0]])
    with pytest.raises(ValueError, match="centres changed"):
        numerical_gradients(TOYS["pair"], dimer, h=h)
