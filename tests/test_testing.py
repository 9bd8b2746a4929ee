"""Tests of the public test helpers in ``gapkit.testing``.

They run on toys defined here, so that they do not depend on gapkit's own descriptors,
kernels and models: two descriptors with exact analytic gradients (a per-atom radial
descriptor, one centre per atom, and a two-body descriptor, one centre per ordered
neighbour pair), a polynomial kernel with its derivatives written out, and ASE's EMT
behind the three kinds of model ``check_forces`` takes. Each helper must pass the
correct toy and fail each deliberately broken one, naming what broke.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.neighborlist import neighbor_list

from gapkit.descriptors.base import DescriptorResult
from gapkit.kernels import DescriptorKernel
from gapkit.testing import (
    FINITE_DIFFERENCE_STEP,
    GRADIENT_RTOL,
    INVARIANCE_ATOL,
    KERNEL_CHECKS,
    TOLERANCES,
    TRANSFORMS,
    assert_invariant,
    check_forces,
    check_gradients,
    check_kernel,
    dense_position_gradients,
    numerical_gradients,
    per_atom_values,
    random_rotation,
    tolerances_for,
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


# --------------------------------------------------------------------------------------
# the tolerance table
# --------------------------------------------------------------------------------------
def test_tolerances_are_keyed_by_dtype_and_read_only():
    f64 = TOLERANCES[torch.float64]
    assert TOLERANCES[np.dtype("float64")] is f64 and TOLERANCES[np.float64] is f64
    assert TOLERANCES[torch.float32] is TOLERANCES[np.float32]
    assert tolerances_for(torch.zeros(2, dtype=torch.float64)) is f64
    assert tolerances_for(np.zeros(2, dtype=np.float32)) is TOLERANCES[torch.float32]
    assert tolerances_for("float64") is f64
    # the module constants are the float64 entries
    assert INVARIANCE_ATOL == f64["invariance"]
    assert GRADIENT_RTOL == f64["finite_difference"]
    assert FINITE_DIFFERENCE_STEP == f64["descriptor_step"]
    # float32 is looser everywhere, and both tables name the same things
    f32 = TOLERANCES[torch.float32]
    assert set(f32) == set(f64)
    assert all(f32[name] > f64[name] for name in f64)
    with pytest.raises(TypeError):
        f64["algebra"] = 1.0  # type: ignore[index]
    with pytest.raises(KeyError, match="float64 and float32"):
        tolerances_for(torch.int64)


# --------------------------------------------------------------------------------------
# check_kernel on a toy kernel, correct and broken
# --------------------------------------------------------------------------------------
class PolyToy(DescriptorKernel):
    r"""Toy kernel :math:`k = \delta^2 (c + q \cdot q')^2`, derivatives written out:
    :math:`\partial k / \partial q_1 = 2 \delta^2 (c + s) q_2` and
    :math:`\partial^2 k / \partial q_1 \partial q_2 = 2 \delta^2 [q_2 q_1^T + (c + s) I]`."""

    def __init__(self, offset: float = 1.0, delta: float = 1.0, **kwargs):
        super().__init__(delta, **kwargs)
        self.offset = float(offset)

    def get_params(self) -> dict:
        return {"offset": self.offset, **super().get_params()}

    def unit_value(self, q1, q2):
        return (self.offset + q1 @ q2.T) ** 2

    def unit_grad_contract(self, q1, q2, g, centre):
        w = 2 * (self.offset + q1[centre] @ q2.T)  # (E, n2)
        return w[:, None, :] * torch.matmul(g, q2.T)

    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        s = (q1 @ q2.T)[c1][:, c2]  # (E, F)
        a = torch.matmul(g1, q2[c2].T)  # (E, r1, F): g1 . q2_f
        b = torch.matmul(g2, q1[c1].T)  # (F, r2, E): g2 . q1_e
        gg = torch.einsum("erd,fsd->erfs", g1, g2)
        return (2 * (self.offset + s))[:, None, :, None] * gg \
            + 2 * a[:, :, :, None] * b.permute(2, 0, 1)[:, None, :, :]

    def unit_weighted_gradient(self, q1, q2, w):
        return (2 * (self.offset + q1 @ q2.T) * w) @ q2


class WrongGradient(PolyToy):
    def unit_grad_contract(self, q1, q2, g, centre):
        return 1.001 * super().unit_grad_contract(q1, q2, g, centre)


class WrongHessian(PolyToy):
    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        return 1.001 * super().unit_hessian_contract(q1, q2, g1, c1, g2, c2)


class OneSidedHessian(PolyToy):
    """Forgets the q2 q1^T term: wrong, and no longer symmetric under swapping sides."""

    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        s = (q1 @ q2.T)[c1][:, c2]
        a = torch.matmul(g1, q2[c2].T)
        return (2 * (self.offset + s))[:, None, :, None] \
            * torch.einsum("erd,fsd->erfs", g1, g2) + a[:, :, :, None] * 0.1


class WrongWeightedGradient(PolyToy):
    def unit_weighted_gradient(self, q1, q2, w):
        return (2 * (self.offset + q1 @ q2.T) * w.flip(1)) @ q2


class NonlinearInDirections(PolyToy):
    def unit_grad_contract(self, q1, q2, g, centre):
        out = super().unit_grad_contract(q1, q2, g, centre)
        return out + 1e-3 * out**2


class Asymmetric(PolyToy):
    """Adds 0.01 (q1_0 - q2_0), derivatives included: consistent, but not symmetric."""

    def unit_value(self, q1, q2):
        return super().unit_value(q1, q2) + 0.01 * (q1[:, :1] - q2[:, :1].T)

    def unit_grad_contract(self, q1, q2, g, centre):
        return super().unit_grad_contract(q1, q2, g, centre) + 0.01 * g[:, :, :1]

    def unit_weighted_gradient(self, q1, q2, w):
        out = super().unit_weighted_gradient(q1, q2, w)
        out[:, 0] += 0.01 * w.sum(1)
        return out


class NotPositive(PolyToy):
    """A symmetric kernel with negative eigenvalues, f(s) = 2 s - s^2 of s = c + q.q',
    derivatives included: f'(s) q2, and f'(s) I + f''(s) q2 q1^T."""

    def unit_value(self, q1, q2):
        s = self.offset + q1 @ q2.T
        return 2 * s - s**2

    def unit_diag(self, q):
        return torch.diagonal(self.unit_value(q, q))

    def unit_grad_contract(self, q1, q2, g, centre):
        w = 2 - 2 * (self.offset + q1[centre] @ q2.T)
        return w[:, None, :] * torch.matmul(g, q2.T)

    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        s = self.offset + (q1 @ q2.T)[c1][:, c2]
        a = torch.matmul(g1, q2[c2].T)
        b = torch.matmul(g2, q1[c1].T)
        gg = torch.einsum("erd,fsd->erfs", g1, g2)
        return (2 - 2 * s)[:, None, :, None] * gg \
            - 2 * a[:, :, :, None] * b.permute(2, 0, 1)[:, None, :, :]

    def unit_weighted_gradient(self, q1, q2, w):
        return ((2 - 2 * (self.offset + q1 @ q2.T)) * w) @ q2


class WrongDiag(PolyToy):
    def unit_diag(self, q):
        return 1.01 * super().unit_diag(q)


class WrongForward(PolyToy):
    def forward(self, x1, x2, diag=False, last_dim_is_batch=False, **params):
        return self.unit_value(x1, x2) if not diag else self.unit_diag(x1)


class Unscaled(PolyToy):
    """value ignores delta (everything else is scaled)."""

    def value(self, q1, q2):
        return self.unit_value(q1, q2)


class FrozenDelta(PolyToy):
    """Remembers delta^2 at construction: setting delta changes nothing."""

    def __init__(self, offset: float = 1.0, delta: float = 1.0, **kwargs):
        super().__init__(offset, delta, **kwargs)
        self._frozen = float(delta) ** 2

    @property
    def variance(self):
        return torch.tensor(self._frozen, dtype=torch.float64)


class DetachedDelta(PolyToy):
    @property
    def variance(self):
        return self.delta.detach().squeeze() ** 2


class WrongFastForceVariance(PolyToy):
    def force_prior_variance(self, q, g, centre, atom, types, n_atoms):
        # forgets the type mask of the generic version
        return super().force_prior_variance(q, g, centre, atom, torch.zeros_like(types),
                                            n_atoms)


class ForgetfulParams(PolyToy):
    def get_params(self) -> dict:
        return DescriptorKernel.get_params(self)  # forgets offset


class ArrayParams(PolyToy):
    def get_params(self) -> dict:
        return {"offset": np.float32(self.offset), "delta": np.array(1.3)}


class LosesStateInCopies(PolyToy):
    def __getstate__(self):
        state = super().__getstate__()
        state["offset"] = 0.0
        return state


class Float32Values(PolyToy):
    def unit_value(self, q1, q2):
        return super().unit_value(q1, q2).float()


def unit_vectors(rng, n):
    q = rng.normal(size=(n, 5))
    return torch.as_tensor(q / np.linalg.norm(q, axis=1, keepdims=True))


#: broken kernel -> the checks it fails (a broken derivative also breaks the checks that
#: build on it: grad_contract is the reference of hessian_contract and weighted_gradient)
BROKEN = {
    WrongGradient: {"grad_contract", "hessian_contract", "weighted_gradient"},
    WrongHessian: {"hessian_contract"},
    OneSidedHessian: {"hessian_contract", "hessian_swap"},
    WrongWeightedGradient: {"weighted_gradient"},
    NonlinearInDirections: {"grad_contract", "grad_contract_linearity", "hessian_contract",
                            "weighted_gradient"},
    Asymmetric: {"symmetry"},
    NotPositive: {"positive_semidefinite", "force_prior_variance"},  # negative variances
    WrongDiag: {"diag"},
    WrongForward: {"forward", "delta_setter"},
    Unscaled: {"delta_scaling", "delta_setter", "delta_parameter", "diag", "forward",
               "grad_contract", "weighted_gradient"},
    FrozenDelta: {"delta_setter", "delta_parameter"},
    DetachedDelta: {"delta_parameter"},
    WrongFastForceVariance: {"force_prior_variance"},
    ForgetfulParams: {"get_params"},
    ArrayParams: {"get_params"},
    LosesStateInCopies: {"copy"},
    Float32Values: {"dtype", "grad_contract", "weighted_gradient"},
}


def test_check_kernel_passes_a_correct_kernel():
    for seed in (0, 1, 2):
        check_kernel(lambda: PolyToy(offset=0.7, delta=1.3), unit_vectors, seed=seed)


def test_every_check_can_fail():
    assert set().union(*BROKEN.values()) == set(KERNEL_CHECKS)


@pytest.mark.parametrize("kind", BROKEN, ids=[k.__name__ for k in BROKEN])
def test_check_kernel_names_the_broken_checks(kind):
    with pytest.raises(AssertionError) as info:
        check_kernel(lambda: kind(offset=0.7, delta=1.3), unit_vectors)
    message = str(info.value)
    assert set(re.findall(r"check '(\w+)'", message)) == BROKEN[kind], message
    assert message.startswith(f"{kind.__name__} (from make_kernel()) fails")
    if not BROKEN[kind] & {"positive_semidefinite", "get_params", "copy", "delta_parameter",
                           "dtype"}:
        assert "worst entry" in message and "rtol" in message, message
    # the checks it fails may be skipped (say why at the call site)
    check_kernel(lambda: kind(offset=0.7, delta=1.3), unit_vectors, skip=BROKEN[kind])


def test_check_kernel_message_names_entry_and_tolerance():
    with pytest.raises(AssertionError) as info:
        check_kernel(lambda: WrongHessian(offset=0.7, delta=1.3), unit_vectors)
    message = str(info.value)
    assert "check 'hessian_contract': hessian_contract vs central differences of " \
           "grad_contract in its second argument (step 1e-06)" in message
    assert "worst entry (" in message and "atol 1.0e-09 + rtol 1.0e-06" in message
    with pytest.raises(AssertionError, match=r"smallest eigenvalue .* < -psd 1.0e-10"):
        check_kernel(lambda: NotPositive(offset=0.7, delta=1.3), unit_vectors)
    with pytest.raises(AssertionError, match=r"get_params\(\) is not JSON-serialisable"):
        check_kernel(lambda: ArrayParams(offset=0.7, delta=1.3), unit_vectors)
    with pytest.raises(AssertionError, match=r"value of ForgetfulParams\(\*\*get_params\(\)\) "
                                             r"vs the original"):
        check_kernel(lambda: ForgetfulParams(offset=0.7, delta=1.3), unit_vectors)


class NotDifferentiable(PolyToy):
    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        raise ValueError("not differentiable here")


def test_an_exception_in_a_check_is_reported_as_its_failure():
    with pytest.raises(AssertionError) as info:
        check_kernel(lambda: NotDifferentiable(offset=0.7, delta=1.3), unit_vectors)
    message = str(info.value)
    assert "check 'hessian_contract': raised ValueError: not differentiable here" in message
    assert isinstance(info.value.__cause__, ValueError)
    # every check that calls hessian_contract fails; the others still run and pass
    assert set(re.findall(r"check '(\w+)'", message)) == {
        "dtype", "delta_scaling", "delta_setter", "hessian_contract", "force_prior_variance",
        "get_params", "copy"}


def test_check_kernel_tolerance_override_and_bad_arguments():
    # a 0.1 % error passes a 1 % tolerance
    check_kernel(lambda: WrongHessian(offset=0.7, delta=1.3), unit_vectors,
                 tolerances={"finite_difference": 1e-2})
    with pytest.raises(KeyError, match="unknown tolerance"):
        check_kernel(PolyToy, unit_vectors, tolerances={"fd": 1e-2})
    with pytest.raises(ValueError, match="unknown check"):
        check_kernel(PolyToy, unit_vectors, skip=("hessian",))
    with pytest.raises(TypeError, match="shape"):
        check_kernel(PolyToy, lambda rng, n: torch.zeros(n))
    with pytest.raises(TypeError, match="gradients"):
        check_kernel(PolyToy, unit_vectors,
                     gradients=lambda rng, e, r: torch.zeros(e, r, 2, dtype=torch.float64))


# --------------------------------------------------------------------------------------
# check_forces on toy models, correct and broken
# --------------------------------------------------------------------------------------
@pytest.fixture
def copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell(atoms.cell @ np.array([[1.0, 0.02, 0.0], [0.0, 0.98, 0.01],
                                          [0.0, 0.0, 1.01]]), scale_atoms=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def _emt(atoms):
    """(energy, forces, virial) of EMT, ASE's virial -stress * volume (eV)."""
    frame = atoms.copy()
    frame.calc = EMT()
    virial = (-frame.get_stress(voigt=False) * frame.get_volume()
              if frame.pbc.all() else None)
    return frame.get_potential_energy(), frame.get_forces(), virial


@dataclasses.dataclass
class ToyPrediction:
    energy: np.ndarray
    forces: np.ndarray | None
    virial: np.ndarray | None


class ToyModel:
    """GAP-like ``predict`` around EMT, recording the keywords it was given."""

    def __init__(self, *, force_scale=1.0, virial_sign=1.0, as_dict=False):
        self.force_scale, self.virial_sign, self.as_dict = force_scale, virial_sign, as_dict
        self.calls: list[dict] = []

    def predict(self, frames, *, forces=True, virial=None, return_variance=True):
        self.calls.append({"n": len(frames), "forces": forces, "virial": virial,
                           "return_variance": return_variance})
        out = [_emt(a) for a in frames]
        result = ToyPrediction(
            energy=np.array([e for e, _, _ in out]),
            forces=np.concatenate([f for _, f, _ in out]) * self.force_scale if forces else None,
            virial=(self.virial_sign * np.array([w for _, _, w in out])) if virial else None)
        return dataclasses.asdict(result) if self.as_dict else result


class OnlyFrames:
    """``predict(frames)`` without keywords (like ExactGP): returns everything."""

    def predict(self, frames):
        return ToyModel().predict(frames, virial=True)


class ScaledForcesEMT(EMT):
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = self.results["forces"] * 1.001


class FlippedStressEMT(EMT):
    """Stress with the wrong sign: virial = +stress * volume."""

    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["stress"] = -self.results["stress"]


@pytest.mark.parametrize("model", ["calculator", "predict", "predict-dict", "only-frames",
                                   "function"])
def test_check_forces_passes_correct_models(model, copper):
    make = {"calculator": EMT, "predict": ToyModel,
            "predict-dict": lambda: ToyModel(as_dict=True), "only-frames": OnlyFrames,
            "function": lambda: _emt}[model]
    errors = check_forces(make(), copper)
    assert set(errors) == {"forces", "virial"}
    assert max(errors.values()) < GRADIENT_RTOL


def test_check_forces_batches_energies_and_asks_for_no_variance(copper):
    toy = ToyModel()
    check_forces(toy, copper)
    first, *rest = toy.calls
    assert first == {"n": 1, "forces": True, "virial": True, "return_variance": False}
    assert sum(c["n"] for c in rest) == 6 * len(copper) + 18
    assert all(not c["forces"] and not c["virial"] and not c["return_variance"] for c in rest)
    assert all(c["n"] <= 64 for c in rest)


def test_check_forces_agrees_with_ase_numerical_forces_and_stress(copper):
    """ASE's own central differences (same step; symmetric strains for the stress) pass
    as the "analytic" forces and virial of EMT's energy."""
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

    copper.calc = EMT()
    forces = calculate_numerical_forces(copper, eps=1e-4)
    stress = calculate_numerical_stress(copper, eps=1e-4)  # Voigt: xx yy zz yz xz xy
    virial = -stress[[0, 5, 4, 5, 1, 3, 4, 3, 2]].reshape(3, 3) * copper.get_volume()
    errors = check_forces(lambda atoms: (_emt(atoms)[0], forces, virial), copper, rtol=1e-5)
    assert errors["forces"] < 1e-9 and errors["virial"] < 1e-5


def test_check_forces_fails_wrong_forces(copper):
    with pytest.raises(AssertionError, match="forces: max") as info:
        check_forces(ToyModel(force_scale=1.001), copper)
    message = str(info.value)
    assert "worst: atom" in message and "(Cu), direction" in message
    assert "analytic" in message and "numerical" in message and "rtol 1.0e-06" in message
    assert "virial:" not in message
    with pytest.raises(AssertionError, match="worst: atom"):
        check_forces(ScaledForcesEMT(), copper)


def test_check_forces_fails_the_wrong_virial_sign(copper):
    with pytest.raises(AssertionError, match="virial: max") as info:
        check_forces(FlippedStressEMT(), copper)
    assert "forces:" not in str(info.value) and "-stress * volume" in str(info.value)
    with pytest.raises(AssertionError, match="worst: component"):
        check_forces(ToyModel(virial_sign=-1.0), copper)
    # without the virial the same models pass
    check_forces(FlippedStressEMT(), copper, virial=False)


def test_check_forces_needs_the_virial_it_checks(copper):
    def no_virial(atoms):
        energy, forces, _ = _emt(atoms)
        return energy, forces, None

    with pytest.raises(AssertionError, match="virial=False"):
        check_forces(no_virial, copper)
    assert set(check_forces(no_virial, copper, virial=False)) == {"forces"}
    with pytest.raises(AssertionError, match="shape"):
        check_forces(lambda a: (0.0, np.zeros((2, 3)), None), copper, virial=False)
    with pytest.raises(TypeError, match="ASE calculator"):
        check_forces(42, copper)


def test_check_forces_of_a_molecule_virial_only_on_request(ethanol):
    """Not periodic: no virial by default; virial=True deforms the positions only."""
    def lj(atoms):
        frame = atoms.copy()
        frame.calc = LennardJones(sigma=1.2, epsilon=0.01, rc=4.0, smooth=True)
        energy, forces = frame.get_potential_energy(), frame.get_forces()
        # the pair virial sum_ij r_ij (x) f_ij = sum_i r_i (x) F_i (no images)
        return energy, forces, np.einsum("ia,ib->ab", frame.positions, forces)

    assert set(check_forces(lj, ethanol)) == {"forces"}
    assert set(check_forces(lj, ethanol, virial=True)) == {"forces", "virial"}


def test_check_forces_extrapolation_removes_the_step_error(copper):
    """With a coarse step the O(h^2) error fails the check (virial: 6e-5 of it, measured);
    Richardson extrapolation removes it (3e-8)."""
    with pytest.raises(AssertionError, match="virial: max"):
        check_forces(EMT(), copper, step=1e-3)
    check_forces(EMT(), copper, step=1e-3, extrapolate=True)
