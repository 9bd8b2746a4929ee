"""Reusable checks for gapkit descriptors, kernels and models.

Like e3nn's ``assert_equivariant`` and gpytorch's shipped test cases, these helpers are
public so that anyone who writes a new descriptor, kernel or model can run the same
battery on it::

    from gapkit.testing import assert_invariant, check_forces, check_gradients, check_kernel

    assert_invariant(descriptor, atoms)          # rotation, inversion, translation, ...
    errors = check_gradients(descriptor, atoms)  # analytic vs central differences
    check_kernel(lambda: MyKernel(delta=1.3), sample)   # the descriptor-kernel battery
    errors = check_forces(model, atoms)          # forces (and virial) = -dE/dx

Every check raises :class:`AssertionError` with a message that names what failed, the
worst entry and the tolerance; the tolerances come from one table, :data:`TOLERANCES`,
keyed by dtype.

A *descriptor* here is any object with a method

``compute(frames: list[ase.Atoms], *, gradients: bool | list[str] = False)``

that returns a :class:`gapkit.descriptors.base.DescriptorResult`, where
``gradients=True`` means ``["positions", "strain"]``. Only the result's attributes are
used (``values``, ``centre_structure``, ``centre_atom``, ``n_atoms``, ``gradients``,
``gradient_centre``, ``gradient_atom``, ``strain_gradients``). A *kernel* is a
:class:`gapkit.kernels.DescriptorKernel`; a *model* is an ASE calculator, an object
with ``predict(frames)`` (:class:`gapkit.GAP`, :class:`gapkit.gp.ExactGP`) or a
function of the atoms (see :func:`check_forces`). Units: lengths Å, energies eV,
forces eV/Å, virials eV (ASE's ``-stress * volume``).

The strain convention is the one of ``DescriptorResult``: the homogeneous deformation
:math:`\\mathbf r \\to (\\mathbf 1 + \\epsilon)\\, \\mathbf r` of every position and cell
vector, i.e. ``positions @ (I + eps).T`` and ``cell @ (I + eps).T``, with the nine
components :math:`\\epsilon_{ab}` treated as independent (not symmetrised).
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ase import Atoms

if TYPE_CHECKING:
    from gapkit.descriptors.base import DescriptorResult
    from gapkit.kernels.base import DescriptorKernel

__all__ = [
    "FINITE_DIFFERENCE_STEP",
    "GRADIENT_RTOL",
    "INVARIANCE_ATOL",
    "KERNEL_CHECKS",
    "TOLERANCES",
    "TRANSFORMS",
    "assert_invariant",
    "check_forces",
    "check_gradients",
    "check_kernel",
    "dense_position_gradients",
    "label",
    "numerical_gradients",
    "per_atom_values",
    "random_rotation",
    "tolerances_for",
]

#: Names of the transforms :func:`assert_invariant` knows, in the order they are run.
TRANSFORMS: tuple[str, ...] = (
    "rotation", "inversion", "translation", "permutation", "lattice_shift", "supercell")
_PERIODIC_ONLY = frozenset({"lattice_shift", "supercell"})


# --------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------
_FLOAT64: Mapping[str, float] = MappingProxyType({
    # relative: identities a few floating-point operations deep (a kernel's symmetry,
    # its diagonal, delta scaling, the GPyTorch call, a copy), |a - b| <= rtol |b|
    "algebra": 1e-12,
    # absolute floor of "algebra" for entries that are sums cancelling to ~0
    "algebra_atol": 1e-14,
    # relative: identities through a linear solve, a Cholesky factor or long sums of
    # cancelling terms (a fitted model's local energies, rotated predictions)
    "solve": 1e-9,
    # smallest accepted eigenvalue of a Gram matrix, relative to the largest |eigenvalue|
    "psd": 1e-10,
    # absolute: descriptor values under symmetry operations (assert_invariant)
    "invariance": 1e-10,
    # relative: analytic derivatives against central differences, relative to the
    # largest component (descriptors, forces) or per entry (kernels)
    "finite_difference": 1e-6,
    # absolute floor of the per-entry kernel finite-difference checks (check_kernel)
    "finite_difference_atol": 1e-9,
    # central-difference steps: descriptor gradients (Å, and dimensionless strain)
    "descriptor_step": 1e-5,
    # ... kernel derivatives (descriptor units, along the descriptor-gradient directions)
    "kernel_step": 1e-6,
    # ... energies of a model (Å, and dimensionless strain): check_forces
    "force_step": 1e-4,
})
_FLOAT32: Mapping[str, float] = MappingProxyType({
    "algebra": 1e-5,
    "algebra_atol": 1e-6,
    "solve": 1e-3,
    "psd": 1e-5,
    "invariance": 1e-5,
    "finite_difference": 5e-3,
    "finite_difference_atol": 1e-4,
    "descriptor_step": 1e-3,
    "kernel_step": 1e-3,
    "force_step": 1e-2,
})

#: Named tolerances and finite-difference steps, keyed by dtype (``torch.float64``,
#: ``numpy.dtype("float64")``, ``numpy.float64`` and the float32 equivalents; use
#: :func:`tolerances_for` to look up an array's or a tensor's). Entries (float64 / float32):
#:
#: ``"algebra"`` (1e-12 / 1e-5)
#:     rtol of identities a few floating-point operations deep;
#: ``"algebra_atol"`` (1e-14 / 1e-6)
#:     its absolute floor, for entries that cancel to about zero;
#: ``"solve"`` (1e-9 / 1e-3)
#:     rtol of identities through linear solves and long cancelling sums (fitted models);
#: ``"psd"`` (1e-10 / 1e-5)
#:     smallest accepted Gram-matrix eigenvalue, relative to the largest;
#: ``"invariance"`` (1e-10 / 1e-5)
#:     atol of descriptor values under symmetry operations;
#: ``"finite_difference"`` (1e-6 / 5e-3)
#:     rtol of analytic derivatives against central differences;
#: ``"finite_difference_atol"`` (1e-9 / 1e-4)
#:     absolute floor of the per-entry kernel derivative checks;
#: ``"descriptor_step"``, ``"kernel_step"``, ``"force_step"`` (1e-5, 1e-6, 1e-4 / 1e-3, 1e-3, 1e-2)
#:     central-difference steps of descriptor gradients (Å), kernel derivatives
#:     (descriptor units) and model energies (Å; strain is dimensionless).
#:
#: The inner mappings are read-only. Tests read their tolerances from here rather than
#: defining their own, and a test that needs a looser value says why next to it.
TOLERANCES: Mapping[Any, Mapping[str, float]] = MappingProxyType({
    torch.float64: _FLOAT64, np.dtype("float64"): _FLOAT64, np.float64: _FLOAT64,
    torch.float32: _FLOAT32, np.dtype("float32"): _FLOAT32, np.float32: _FLOAT32,
})

#: Default absolute tolerance of :func:`assert_invariant` (float64 descriptor values);
#: ``TOLERANCES[torch.float64]["invariance"]``.
INVARIANCE_ATOL = _FLOAT64["invariance"]
#: Default relative tolerance of :func:`check_gradients` (float64, central differences);
#: ``TOLERANCES[torch.float64]["finite_difference"]``.
GRADIENT_RTOL = _FLOAT64["finite_difference"]
#: Default central-difference step of :func:`check_gradients`, Å (and dimensionless for
#: strain); ``TOLERANCES[torch.float64]["descriptor_step"]``.
FINITE_DIFFERENCE_STEP = _FLOAT64["descriptor_step"]


def tolerances_for(dtype: Any) -> Mapping[str, float]:
    """The :data:`TOLERANCES` entry of a dtype, an array or a tensor.

    Parameters
    ----------
    dtype : torch.dtype, numpy dtype or type, str, numpy.ndarray or torch.Tensor
        ``torch.float64``, ``np.float32``, ``"float64"``, or an array/tensor whose
        dtype is used.

    Returns
    -------
    Mapping of str to float
        The named tolerances (read-only), see :data:`TOLERANCES`.

    Raises
    ------
    KeyError
        For a dtype other than float32 and float64 (the message lists the known ones).
    """
    if isinstance(dtype, (torch.Tensor, np.ndarray)):
        dtype = dtype.dtype
    if not isinstance(dtype, torch.dtype):
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            pass
    try:
        return TOLERANCES[dtype]
    except (KeyError, TypeError):
        raise KeyError(f"no tolerances for dtype {dtype!r}; TOLERANCES knows float64 and "
                       f"float32 (torch or numpy)") from None


_AXES = "xyz"


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def _bare_copy(atoms: Atoms) -> Atoms:
    """A copy without calculator and constraints, so that positions can be set freely."""
    frame = atoms.copy()
    frame.calc = None
    frame.constraints = []
    return frame


def _structure_rows(result: DescriptorResult, structure: int) -> np.ndarray:
    """Rows of ``result`` that belong to ``structure``, in row order."""
    n_structures = int(np.asarray(result.n_atoms).shape[0])
    if not 0 <= structure < n_structures:
        raise IndexError(f"structure {structure} out of range for a result with "
                         f"{n_structures} structure(s)")
    return np.nonzero(np.asarray(result.centre_structure) == structure)[0]


def _compute(descriptor: Any, atoms: Atoms,
             gradients: bool | list[str] = False) -> DescriptorResult:
    """Run ``descriptor.compute`` on one frame and check the basic shape of the result."""
    result = descriptor.compute([atoms], gradients=gradients)
    values = np.asarray(result.values)
    if values.ndim != 2:
        raise AssertionError(f"descriptor values must be 2-D (n_centres, n_features), "
                             f"got shape {values.shape}")
    n_atoms = np.asarray(result.n_atoms)
    if n_atoms.shape != (1,) or int(n_atoms[0]) != len(atoms):
        raise AssertionError(f"result.n_atoms is {n_atoms.tolist()} for a single frame of "
                             f"{len(atoms)} atoms; expected [{len(atoms)}]")
    centre_atom = np.asarray(result.centre_atom)
    if centre_atom.shape != (values.shape[0],) or np.any(np.asarray(result.centre_structure)):
        raise AssertionError("centre_atom/centre_structure do not match values for a single "
                             "frame (expected one entry per row, all in structure 0)")
    if centre_atom.size and (centre_atom.min() < 0 or centre_atom.max() >= len(atoms)):
        raise AssertionError(f"centre_atom out of range [0, {len(atoms)}): "
                             f"{centre_atom.min()}..{centre_atom.max()}")
    return result


def _fmt_matrix(matrix: np.ndarray, indent: str = "      ") -> str:
    text = np.array2string(np.asarray(matrix), precision=6, suppress_small=True,
                           max_line_width=100)
    return indent + text.replace("\n", "\n" + indent)


def _sort_rows(rows: np.ndarray) -> np.ndarray:
    """Rows sorted lexicographically (first column most significant)."""
    if rows.shape[0] <= 1 or rows.shape[1] == 0:
        return rows
    return rows[np.lexsort(rows.T[::-1])]


def _match_rows(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Order of ``other``'s rows that pairs them with ``reference``'s rows.

    Both are already sorted lexicographically, so the identity is tried first. Sorting is
    fragile when two rows almost tie in their leading features, so a greedy assignment on
    the max-abs distance is tried too, and the better of the two bijections is returned
    (both are valid pairings, so this never hides a real difference).
    """
    n = reference.shape[0]
    identity = np.arange(n)
    if n <= 1:
        return identity
    distance = np.abs(reference[:, None, :] - other[None, :, :]).max(axis=-1)
    greedy = np.empty(n, dtype=np.int64)
    remaining = distance.copy()
    for _ in range(n):
        r, c = np.unravel_index(np.argmin(remaining), remaining.shape)
        greedy[r] = c
        remaining[r, :] = np.inf
        remaining[:, c] = np.inf
    if distance[identity, greedy].max() < distance[identity, identity].max():
        return greedy
    return identity


# --------------------------------------------------------------------------------------
# public helpers
# --------------------------------------------------------------------------------------
def random_rotation(rng: np.random.Generator | int | None = None, *,
                    inversion: bool = False) -> np.ndarray:
    """Draw a uniformly distributed random rotation matrix.

    The QR decomposition of a 3×3 matrix of standard normal numbers, with the signs of
    ``Q``'s columns fixed so that ``R`` has a positive diagonal, is Haar-distributed on
    O(3); an improper draw is then turned proper by flipping one column, which keeps the
    distribution uniform on SO(3).

    Parameters
    ----------
    rng : numpy.random.Generator or int or None
        Random generator, or a seed for :func:`numpy.random.default_rng`.
    inversion : bool, default False
        Return ``-R`` (a rotation followed by inversion through the origin, det = -1).

    Returns
    -------
    ndarray of shape (3, 3)
        Orthogonal matrix; apply it to row vectors as ``x @ R.T``.
    """
    rng = np.random.default_rng(rng)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if inversion else q


def per_atom_values(result: DescriptorResult, structure: int = 0) -> list[np.ndarray]:
    """Group descriptor rows by the atom that owns them.

    Parameters
    ----------
    result : DescriptorResult
        Output of a descriptor's ``compute``.
    structure : int, default 0
        Index of the structure (into the frames given to ``compute``).

    Returns
    -------
    list of ndarray
        One entry per atom of the structure, an array of shape
        ``(n_centres_of_atom, n_features)`` holding the rows of ``values`` whose
        ``centre_atom`` is that atom, sorted lexicographically (first feature most
        significant). Sorting makes descriptors with several centres per atom (a
        two-body descriptor has one per neighbour pair) compare as multisets. An atom
        that owns no centre gets an array with zero rows.
    """
    rows = _structure_rows(result, structure)
    n_atoms = int(np.asarray(result.n_atoms)[structure])
    values = np.asarray(result.values)
    owner = np.asarray(result.centre_atom)[rows]
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(n_atoms + 1))
    grouped = rows[order]
    return [_sort_rows(values[grouped[bounds[k]:bounds[k + 1]]]) for k in range(n_atoms)]


def _transform(name: str, atoms: Atoms,
               rng: np.random.Generator) -> tuple[Atoms, np.ndarray, str]:
    """Apply transform ``name``; return (frame, original atom of each new atom, summary)."""
    frame = _bare_copy(atoms)
    n = len(atoms)
    identity = np.arange(n)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if name in ("rotation", "inversion"):
        rotation = random_rotation(rng, inversion=name == "inversion")
        frame.set_cell(atoms.cell[:] @ rotation.T, scale_atoms=False)
        frame.set_positions(atoms.positions @ rotation.T)
        kind = "rotation followed by inversion" if name == "inversion" else "proper rotation"
        summary = (f"positions -> positions @ R.T and cell -> cell @ R.T, {kind}\n"
                   f"    R = (det {np.linalg.det(rotation):+.0f})\n{_fmt_matrix(rotation)}")
        return frame, identity, summary
    if name == "translation":
        shift = rng.normal(scale=5.0, size=3)
        frame.set_positions(atoms.positions + shift)
        return frame, identity, (f"positions -> positions + t (no wrapping), "
                                 f"t = {np.array2string(shift, precision=6)} Å")
    if name == "permutation":
        perm = rng.permutation(n)
        frame = frame[perm]
        return frame, perm, (f"atoms reordered: new atom k is original atom perm[k],\n"
                             f"    perm = {np.array2string(perm, threshold=60, separator=', ')}")
    if name == "lattice_shift":
        moved = np.nonzero(rng.random(n) < 0.5)[0]
        if moved.size == 0:
            moved = rng.integers(0, n, size=1)
        integers = rng.integers(-2, 3, size=(moved.size, 3)) * pbc
        first_periodic = int(np.argmax(pbc))
        integers[~integers.any(axis=1), first_periodic] = 1
        positions = atoms.positions.copy()
        positions[moved] += integers @ atoms.cell[:]
        frame.set_positions(positions)
        listing = ", ".join(f"{a}: {v.tolist()}" for a, v in zip(moved[:20], integers[:20]))
        if moved.size > 20:
            listing += f", ... ({moved.size} atoms in all)"
        return frame, identity, (f"atoms moved by whole lattice vectors n @ cell, "
                                 f"{{atom: n}} = {{{listing}}}")
    if name == "supercell":
        repeat = tuple(int(r) for r in np.where(pbc, 2, 1))
        frame = frame.repeat(repeat)
        mapping = np.tile(identity, int(np.prod(repeat)))
        return frame, mapping, (f"atoms.repeat({repeat}): replica atom r * {n} + i is a "
                                f"copy of original atom i")
    raise AssertionError(f"unhandled transform {name!r}")  # pragma: no cover


def _resolve_transforms(transforms: Sequence[str] | str | None, atoms: Atoms) -> list[str]:
    periodic = bool(np.any(atoms.pbc))
    if transforms is None:
        return [t for t in TRANSFORMS if periodic or t not in _PERIODIC_ONLY]
    if isinstance(transforms, str):
        transforms = [transforms]
    requested = list(transforms)
    unknown = [t for t in requested if t not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transform(s) {unknown}; choose from {list(TRANSFORMS)}")
    if not periodic:
        bad = [t for t in requested if t in _PERIODIC_ONLY]
        if bad:
            raise ValueError(f"transform(s) {bad} need a periodic structure, but atoms.pbc "
                             f"is {atoms.pbc.tolist()}; leave transforms=None to run every "
                             f"transform that applies")
    return requested


def assert_invariant(
    descriptor: Any,
    atoms: Atoms,
    *,
    transforms: Sequence[str] | str | None = None,
    atol: float = INVARIANCE_ATOL,
    seed: int = 0,
) -> None:
    """Assert that per-atom descriptor values are invariant under symmetry operations.

    The descriptor is computed (without gradients) for ``atoms`` and for one transformed
    copy per transform; the rows owned by each atom of the copy (see
    :func:`per_atom_values`) must equal those of the corresponding original atom to
    ``atol`` in max-abs norm.

    Transforms
    ----------
    ``"rotation"``
        ``positions @ R.T`` and ``cell @ R.T`` for a uniform random rotation ``R``.
    ``"inversion"``
        The same with ``-R`` (det = -1; the cell becomes left-handed).
    ``"translation"``
        A random shift of all positions (a few Å), not wrapped back into the cell.
    ``"permutation"``
        A random reordering of the atoms (species travel with their atoms); new atom
        ``k`` is compared with original atom ``perm[k]``.
    ``"lattice_shift"`` (periodic only)
        Some random atoms moved by non-zero integer lattice vectors along the periodic
        axes: the same periodic system, another choice of images.
    ``"supercell"`` (periodic only)
        ``atoms.repeat`` with 2 along every periodic axis; every replica atom must equal
        its original.

    Parameters
    ----------
    descriptor : object
        Anything with ``compute(frames, *, gradients=False) -> DescriptorResult``.
    atoms : ase.Atoms
        The structure to test. Its calculator and constraints are ignored.
    transforms : sequence of str or str or None, default None
        Which transforms to run. ``None`` runs every transform that applies to
        ``atoms`` (the periodic-only ones are skipped for a non-periodic structure);
        naming a transform that does not apply raises ``ValueError``.
    atol : float, default 1e-10
        Absolute tolerance on every descriptor value.
    seed : int, default 0
        Seed of the random transforms. Each transform draws from its own generator
        ``default_rng([seed, i])`` (``i`` its position in :data:`TRANSFORMS`), so its
        parameters do not depend on which other transforms run.

    Raises
    ------
    AssertionError
        If any transform changes the values by more than ``atol``, or changes how many
        centres an atom owns. The message names every failing transform, prints its
        parameters (rotation matrix, shift, permutation, repetition), and the worst atom,
        centre, feature and deviation.
    ValueError
        For an unknown transform name, or a periodic-only transform requested for a
        non-periodic structure.
    """
    __tracebackhide__ = True
    names = _resolve_transforms(transforms, atoms)
    reference_result = _compute(descriptor, atoms)
    reference = per_atom_values(reference_result)
    n_features = np.asarray(reference_result.values).shape[1]
    symbols = atoms.get_chemical_symbols()

    failures = []
    for name in names:
        rng = np.random.default_rng([seed, TRANSFORMS.index(name)])
        frame, original_of, summary = _transform(name, atoms, rng)
        result = _compute(descriptor, frame)
        transformed = per_atom_values(result)
        header = f"under {name!r} (seed={seed}):\n    {summary}\n"
        if np.asarray(result.values).shape[1] != n_features:
            failures.append(header + f"    number of features changed: {n_features} -> "
                            f"{np.asarray(result.values).shape[1]}")
            continue

        worst: tuple[float, str] = (-1.0, "")  # (deviation, detail)
        for k, rows in enumerate(transformed):
            i = int(original_of[k])
            ref_rows = reference[i]
            atom_label = (f"atom {i} ({symbols[i]})" if k == i
                          else f"original atom {i} ({symbols[i]}) = transformed atom {k}")
            if rows.shape[0] != ref_rows.shape[0]:
                detail = (f"    {atom_label} owns {ref_rows.shape[0]} centre(s) originally "
                          f"but {rows.shape[0]} after the transform")
                worst = (np.inf, detail)
                break
            if rows.shape[0] == 0 or n_features == 0:
                continue
            order = _match_rows(ref_rows, rows)
            diff = np.abs(rows[order] - ref_rows)
            diff = np.where(np.isnan(diff), np.inf, diff)
            c, f = np.unravel_index(np.argmax(diff), diff.shape)
            deviation = float(diff[c, f])
            if deviation > worst[0]:
                centre = (f", sorted row {c} of its {rows.shape[0]} centres"
                          if rows.shape[0] > 1 else "")
                detail = (f"    worst: {atom_label}{centre}, feature {f}: original "
                          f"{float(ref_rows[c, f])!r}, transformed {float(rows[order][c, f])!r}\n"
                          f"    max abs deviation {deviation:.3e} > atol {atol:.1e}")
                worst = (deviation, detail)
        if worst[0] > atol:
            failures.append(header + worst[1])

    if failures:
        raise AssertionError(
            f"descriptor {type(descriptor).__name__} is not invariant "
            f"({len(failures)} of {len(names)} transform(s) failed):\n"
            + "\n".join(failures))


def dense_position_gradients(result: DescriptorResult, structure: int = 0) -> np.ndarray:
    """Assemble the sparse position gradients of one structure into a dense array.

    Parameters
    ----------
    result : DescriptorResult
        Output of ``compute(..., gradients=True)`` (or with ``"positions"``).
    structure : int, default 0
        Index of the structure (into the frames given to ``compute``).

    Returns
    -------
    ndarray of shape (n_centres_in_structure, n_atoms, 3, n_features)
        ``out[c, j, a] = d values[rows[c]] / d positions[j, a]`` where ``rows`` are the
        rows of ``values`` that belong to the structure, in row order. Pairs without a
        sparse entry are zero; repeated (centre, atom) entries are summed.

    Raises
    ------
    ValueError
        If the result has no position gradients or their indices are out of range.
    """
    if result.gradients is None or result.gradient_centre is None \
            or result.gradient_atom is None:
        raise ValueError("this result has no position gradients; compute it with "
                         "gradients=True (or gradients=['positions'])")
    rows = _structure_rows(result, structure)
    n_centres_total = np.asarray(result.values).shape[0]
    n_atoms = int(np.asarray(result.n_atoms)[structure])
    gradients = np.asarray(result.gradients)
    gradient_centre = np.asarray(result.gradient_centre)
    gradient_atom = np.asarray(result.gradient_atom)
    n_features = np.asarray(result.values).shape[1]
    if gradients.shape != (gradient_centre.shape[0], 3, n_features) \
            or gradient_atom.shape != gradient_centre.shape:
        raise ValueError(f"gradients of shape {gradients.shape} with "
                         f"{gradient_centre.shape[0]} gradient_centre and "
                         f"{gradient_atom.shape[0]} gradient_atom entries do not match "
                         f"(n_gradients, 3, {n_features})")
    if gradient_centre.size and (gradient_centre.min() < 0
                                 or gradient_centre.max() >= n_centres_total):
        raise ValueError("gradient_centre has entries outside [0, n_centres)")

    local = -np.ones(n_centres_total, dtype=np.int64)
    local[rows] = np.arange(rows.size)
    select = np.nonzero(local[gradient_centre] >= 0)[0]
    atom = gradient_atom[select]
    if atom.size and (atom.min() < 0 or atom.max() >= n_atoms):
        raise ValueError(f"gradient_atom has entries outside [0, {n_atoms}) for "
                         f"structure {structure}")
    dense = np.zeros((rows.size, n_atoms, 3, n_features), dtype=gradients.dtype)
    np.add.at(dense, (local[gradient_centre[select]], atom), gradients[select])
    return dense


def _strained(atoms: Atoms, deformation: np.ndarray) -> Atoms:
    """Apply ``r -> deformation @ r`` to positions, and to the cell when periodic."""
    frame = _bare_copy(atoms)
    if np.any(atoms.pbc):
        frame.set_cell(atoms.cell[:] @ deformation.T, scale_atoms=False)
    frame.set_positions(atoms.positions @ deformation.T)
    return frame


def numerical_gradients(
    descriptor: Any,
    atoms: Atoms,
    *,
    h: float = FINITE_DIFFERENCE_STEP,
    strain: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Central finite-difference gradients of a descriptor.

    .. math::

        \\frac{\\partial q_c}{\\partial x} \\approx
        \\frac{q_c(x + h) - q_c(x - h)}{2h}

    for every Cartesian position component and every strain component
    :math:`\\epsilon_{ab}` (the deformation ``positions @ (I + eps).T``, and
    ``cell @ (I + eps).T`` when any axis is periodic; for a non-periodic structure only
    the positions are deformed, which defines the same derivative). This costs
    ``6 * n_atoms + 18`` descriptor evaluations.

    Centres are matched between the displaced frames by their row order: the helper
    assumes the descriptor returns the same centres, in the same order, for every small
    displacement. That holds for per-atom descriptors such as SOAP; a pair descriptor
    whose neighbour list changes under the displacement (a pair within ``h`` of the
    cutoff) cannot be checked this way, and a ``ValueError`` is raised.

    Parameters
    ----------
    descriptor : object
        Anything with ``compute(frames, *, gradients=False) -> DescriptorResult``.
    atoms : ase.Atoms
        One structure. Its calculator and constraints are ignored.
    h : float, default :data:`FINITE_DIFFERENCE_STEP` (1e-5)
        Step, Å for positions and dimensionless for strain.
    strain : bool, default True
        Also compute the strain derivative.

    Returns
    -------
    dpos : ndarray of shape (n_centres, n_atoms, 3, n_features)
        ``d values[c] / d positions[j, a]``.
    dstrain : ndarray of shape (n_centres, 3, 3, n_features) or None
        ``d values[c] / d epsilon_ab``; ``None`` when ``strain=False``.

    Raises
    ------
    ValueError
        If a displaced frame gives a different set or order of centres.
    """
    reference = _compute(descriptor, atoms)
    centre_atom = np.asarray(reference.centre_atom)
    shape = np.asarray(reference.values).shape

    def values_of(frame: Atoms, what: str) -> np.ndarray:
        result = _compute(descriptor, frame)
        values = np.asarray(result.values, dtype=np.float64)
        if values.shape != shape or not np.array_equal(np.asarray(result.centre_atom),
                                                       centre_atom):
            raise ValueError(
                f"the centres changed when {what}: {shape[0]} centres owned by atoms "
                f"{centre_atom.tolist()} became {values.shape[0]} owned by "
                f"{np.asarray(result.centre_atom).tolist()}. Finite differences match "
                f"centres by row order, so the centre list must not change under a small "
                f"displacement (for a pair descriptor: no pair within h={h:g} Å of the "
                f"cutoff); use another structure or a smaller h")
        return values

    n_atoms = len(atoms)
    dpos = np.zeros((shape[0], n_atoms, 3, shape[1]))
    for j in range(n_atoms):
        for a in range(3):
            plus, minus = _bare_copy(atoms), _bare_copy(atoms)
            plus.positions[j, a] += h
            minus.positions[j, a] -= h
            what = f"atom {j} was displaced along {_AXES[a]} by ±{h:g} Å"
            dpos[:, j, a] = (values_of(plus, what) - values_of(minus, what)) / (2 * h)

    dstrain = None
    if strain:
        dstrain = np.zeros((shape[0], 3, 3, shape[1]))
        for a in range(3):
            for b in range(3):
                step = np.zeros((3, 3))
                step[a, b] = h
                what = f"strain component {_AXES[a]}{_AXES[b]} was changed by ±{h:g}"
                stretched = values_of(_strained(atoms, np.eye(3) + step), what)
                squeezed = values_of(_strained(atoms, np.eye(3) - step), what)
                dstrain[:, a, b] = (stretched - squeezed) / (2 * h)
    return dpos, dstrain


def _relative_error(analytic: np.ndarray, numerical: np.ndarray
                    ) -> tuple[float, tuple[int, ...], float]:
    """max |analytic - numerical| / max |numerical| (NaN counts as inf), the index of the
    worst entry (``()`` when empty) and the scale max |numerical|."""
    diff = np.abs(analytic - numerical)
    scale = max(float(np.max(np.abs(numerical), initial=0.0)), np.finfo(np.float64).tiny)
    if diff.size == 0:
        return 0.0, (), scale
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(diff), diff.shape))
    error = float(diff[worst]) / scale
    return (np.inf if np.isnan(error) else error), worst, scale


def check_gradients(
    descriptor: Any,
    atoms: Atoms,
    *,
    h: float = FINITE_DIFFERENCE_STEP,
    rtol: float = GRADIENT_RTOL,
    strain: bool = True,
) -> dict[str, float]:
    """Check analytic position (and strain) gradients against central differences.

    The analytic gradients come from ``compute([atoms], gradients=["positions",
    "strain"])`` (``["positions"]`` when ``strain=False``); the numerical ones from
    :func:`numerical_gradients`. For each kind the error is

    .. math::

        \\frac{\\max |g_\\text{analytic} - g_\\text{numerical}|}
              {\\max(\\max |g_\\text{numerical}|,\\ \\text{tiny})}

    with the maxima over all centres, atoms, directions and features. The values
    returned with gradients must also equal the values without, to the same relative
    tolerance.

    Parameters
    ----------
    descriptor : object
        Anything with ``compute(frames, *, gradients=...) -> DescriptorResult``.
    atoms : ase.Atoms
        One structure (periodic or not; strain is checked for both).
    h : float, default :data:`FINITE_DIFFERENCE_STEP` (1e-5)
        Finite-difference step, Å (dimensionless for strain).
    rtol : float, default :data:`GRADIENT_RTOL` (1e-6)
        Largest accepted relative error.
    strain : bool, default True
        Also check ``strain_gradients``.

    Returns
    -------
    dict
        The measured relative errors: ``{"positions": float, "strain": float}`` (no
        ``"strain"`` key when ``strain=False``).

    Raises
    ------
    AssertionError
        If an error exceeds ``rtol`` (the message names the worst centre, its atom, the
        displaced atom or strain component, the feature, and both values), or if the
        descriptor did not return the requested gradients.
    ValueError
        If the centres change under a displacement (see :func:`numerical_gradients`).
    """
    __tracebackhide__ = True
    requested = ["positions", "strain"] if strain else ["positions"]
    analytic = _compute(descriptor, atoms, gradients=requested)
    plain = _compute(descriptor, atoms)
    centre_atom = np.asarray(analytic.centre_atom)
    if not np.array_equal(centre_atom, np.asarray(plain.centre_atom)) \
            or np.asarray(analytic.values).shape != np.asarray(plain.values).shape:
        raise AssertionError("compute() returns different centres with and without "
                             "gradients")
    error, _, _ = _relative_error(np.asarray(analytic.values), np.asarray(plain.values))
    if error > rtol:
        raise AssertionError(f"values computed with gradients differ from values "
                             f"computed without: relative error {error:.3e} > rtol {rtol:.1e}")
    if analytic.gradients is None:
        raise AssertionError("compute(..., gradients=['positions', ...]) returned no "
                             "position gradients")
    if strain and analytic.strain_gradients is None:
        raise AssertionError("compute(..., gradients=['positions', 'strain']) returned no "
                             "strain_gradients; pass strain=False to skip the strain check")

    dpos, dstrain = numerical_gradients(descriptor, atoms, h=h, strain=strain)
    symbols = atoms.get_chemical_symbols()
    errors: dict[str, float] = {}
    failures = []

    def centre_name(c: int) -> str:
        i = int(centre_atom[c])
        return f"centre {c} (owned by atom {i}, {symbols[i]})"

    dense = dense_position_gradients(analytic)
    error, worst, scale = _relative_error(dense, dpos)
    errors["positions"] = error
    if error > rtol:
        c, j, a, f = (int(x) for x in worst)
        failures.append(
            f"position gradients: relative error {error:.3e} > rtol {rtol:.1e}\n"
            f"    worst: d values[{c}, {f}] / d positions[{j}, {_AXES[a]}] for "
            f"{centre_name(c)}, atom {j} ({symbols[j]}), direction {_AXES[a]}, "
            f"feature {f}\n"
            f"    analytic {float(dense[c, j, a, f])!r}, numerical {float(dpos[c, j, a, f])!r} "
            f"(scale max|numerical| = {scale:.3e}, h = {h:g} Å)")

    if strain:
        assert dstrain is not None  # numerical_gradients(strain=True) computes it
        analytic_strain = np.asarray(analytic.strain_gradients)
        if analytic_strain.shape != dstrain.shape:
            raise AssertionError(f"strain_gradients has shape {analytic_strain.shape}, "
                                 f"expected {dstrain.shape}")
        error, worst, scale = _relative_error(analytic_strain, dstrain)
        errors["strain"] = error
        if error > rtol:
            c, a, b, f = (int(x) for x in worst)
            failures.append(
                f"strain gradients: relative error {error:.3e} > rtol {rtol:.1e}\n"
                f"    worst: d values[{c}, {f}] / d epsilon_{_AXES[a]}{_AXES[b]} for "
                f"{centre_name(c)}, component {_AXES[a]}{_AXES[b]}, feature {f}\n"
                f"    analytic {float(analytic_strain[c, a, b, f])!r}, numerical "
                f"{float(dstrain[c, a, b, f])!r} (scale max|numerical| = {scale:.3e}, h = {h:g}; "
                f"convention r -> (1 + eps) r, eps not symmetrised)")

    if failures:
        raise AssertionError(
            f"analytic gradients of {type(descriptor).__name__} disagree with central "
            f"differences:\n" + "\n".join(failures))
    return errors


# --------------------------------------------------------------------------------------
# the kernel battery
# --------------------------------------------------------------------------------------
#: Names of the checks :func:`check_kernel` runs, in order (pass some as ``skip``).
KERNEL_CHECKS: tuple[str, ...] = (
    "dtype", "symmetry", "positive_semidefinite", "diag", "forward", "delta_scaling",
    "delta_setter", "delta_parameter", "grad_contract", "grad_contract_linearity",
    "hessian_contract", "hessian_swap", "weighted_gradient", "force_prior_variance",
    "get_params", "copy")

Sampler = Callable[[np.random.Generator, int], torch.Tensor]
GradientSampler = Callable[[np.random.Generator, int, int], torch.Tensor]


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _close_or_message(actual: Any, expected: Any, *, rtol: float, atol: float,
                      what: str) -> str | None:
    """None when ``|actual - expected| <= atol + rtol |expected|`` everywhere (same shape,
    NaN never matches), else a message naming the worst entry and the tolerance."""
    a, e = _as_numpy(actual), _as_numpy(expected)
    if a.shape != e.shape:
        return f"{what}: shape {a.shape}, expected {e.shape}"
    if a.size == 0:
        return None
    diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    bound = atol + rtol * np.abs(e.astype(np.float64))
    outside = diff > bound
    if not outside.any():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, diff / bound, np.where(diff > 0, np.inf, 0.0))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    index = tuple(int(i) for i in worst)
    return (f"{what}: {int(outside.sum())} of {a.size} entries outside the tolerance; "
            f"worst entry {index}: {a[worst].item()!r}, expected {e[worst].item()!r}, "
            f"|diff| = {diff[worst]:.3e} > atol {atol:.1e} + rtol {rtol:.1e} * |expected|")


def _standard_normal_gradients(rng: np.random.Generator, n_entries: int,
                               n_directions: int, n_features: int,
                               dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(rng.standard_normal((n_entries, n_directions, n_features)),
                           dtype=dtype)


class _KernelBattery:
    """State shared by the checks of one :func:`check_kernel` call."""

    def __init__(self, make_kernel: Callable[[], DescriptorKernel], sample: Sampler,
                 gradients: GradientSampler | None, seed: int,
                 tolerances: Mapping[str, float] | None):
        self.make_kernel = make_kernel
        self.rng = np.random.default_rng(seed)
        self.kernel = make_kernel()
        self.name = type(self.kernel).__name__
        self._sample = sample
        probe = sample(np.random.default_rng([seed, 1]), 2)
        if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or probe.shape[0] != 2:
            raise TypeError(f"sample(rng, n) must return a tensor of shape (n, n_features); "
                            f"sample(rng, 2) gave {type(probe).__name__} of shape "
                            f"{tuple(getattr(probe, 'shape', ()))}")
        self.dtype = probe.dtype
        self.n_features = int(probe.shape[1])
        self._gradients = gradients
        if gradients is not None:
            g = gradients(np.random.default_rng([seed, 2]), 3, 2)
            if not isinstance(g, torch.Tensor) or tuple(g.shape) != (3, 2, self.n_features):
                raise TypeError(f"gradients(rng, n_entries, n_directions) must return a tensor "
                                f"of shape (n_entries, n_directions, n_features); "
                                f"gradients(rng, 3, 2) gave {type(g).__name__} of shape "
                                f"{tuple(getattr(g, 'shape', ()))}, n_features = "
                                f"{self.n_features}")
        self.tol = dict(tolerances_for(self.dtype))
        if tolerances:
            unknown = set(tolerances) - set(self.tol)
            if unknown:
                raise KeyError(f"unknown tolerance name(s) {sorted(unknown)}; known: "
                               f"{sorted(self.tol)}")
            self.tol.update(tolerances)
        self.failures: list[str] = []

    # -- inputs ---------------------------------------------------------------------
    def sample(self, n: int) -> torch.Tensor:
        return self._sample(self.rng, n)

    def directions(self, n_entries: int, n_directions: int,
                   n_centres: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random descriptor-gradient entries ``g`` (E, r, D) and their centres (E,)."""
        if self._gradients is None:
            g = _standard_normal_gradients(self.rng, n_entries, n_directions,
                                           self.n_features, self.dtype)
        else:
            g = self._gradients(self.rng, n_entries, n_directions)
        expected = (n_entries, n_directions, self.n_features)
        if tuple(g.shape) != expected:
            raise TypeError(f"gradients(rng, {n_entries}, {n_directions}) must return shape "
                            f"{expected}, got {tuple(g.shape)}")
        centre = torch.as_tensor(self.rng.integers(0, n_centres, size=n_entries))
        return g, centre

    # -- comparisons ----------------------------------------------------------------
    def compare(self, check: str, actual: Any, expected: Any, *, rtol: str | float,
                atol: str | float = 0.0, what: str = "") -> None:
        r = self.tol[rtol] if isinstance(rtol, str) else rtol
        a = self.tol[atol] if isinstance(atol, str) else atol
        message = _close_or_message(actual, expected, rtol=r, atol=a, what=what or check)
        if message is not None:
            self.failures.append(f"check {check!r}: {message}")

    def fail(self, check: str, message: str) -> None:
        self.failures.append(f"check {check!r}: {message}")


def _check_dtype(b: _KernelBattery) -> None:
    k = b.kernel
    q1, q2 = b.sample(3), b.sample(2)
    g, c = b.directions(3, 2, 3)
    outputs = {"value": k.value(q1, q2), "diag_value": k.diag_value(q1),
               "grad_contract": k.grad_contract(q1, q2, g, c),
               "hessian_contract": k.hessian_contract(q1, q2, g, c, g[:2], c[:2] % 2),
               "weighted_gradient": k.weighted_gradient(q1, q2, torch.ones(3, 2,
                                                                             dtype=b.dtype))}
    for name, out in outputs.items():
        if out.dtype != b.dtype:
            b.fail("dtype", f"{name} returned {out.dtype} for {b.dtype} descriptors")
    if k.raw_delta.dtype != b.dtype:
        b.fail("dtype", f"raw_delta is {k.raw_delta.dtype}, the descriptors {b.dtype}")


def _check_symmetry_and_psd(b: _KernelBattery, skip: Collection[str]) -> None:
    x = b.sample(12)
    gram = b.kernel.value(x, x).detach()
    if "symmetry" not in skip:
        b.compare("symmetry", gram, gram.T, rtol="algebra", what="value(x, x) vs its transpose")
    if "positive_semidefinite" not in skip:
        eig = torch.linalg.eigvalsh(0.5 * (gram + gram.T))
        floor = -b.tol["psd"] * float(eig.abs().max())
        if float(eig.min()) < floor:
            b.fail("positive_semidefinite",
                   f"smallest eigenvalue of value(x, x) (12 samples) is {float(eig.min()):.3e} "
                   f"< -psd {b.tol['psd']:.1e} * max|eigenvalue| = {floor:.3e}")


def _check_diag(b: _KernelBattery) -> None:
    k = b.kernel
    x = b.sample(9)
    b.compare("diag", k.diag_value(x), torch.diagonal(k.value(x, x)), rtol="algebra",
              what="diag_value(x) vs the diagonal of value(x, x)")
    b.compare("diag", k.unit_diag(x), torch.diagonal(k.unit_value(x, x)), rtol="algebra",
              what="unit_diag(x) vs the diagonal of unit_value(x, x)")


def _check_forward(b: _KernelBattery) -> None:
    k = b.kernel
    x1, x2, x3 = b.sample(6), b.sample(4), b.sample(6)
    with torch.no_grad():
        pairs = [
            ("k(x1, x2)", k(x1, x2).to_dense(), k.value(x1, x2)),
            ("k(x1)", k(x1).to_dense(), k.value(x1, x1)),
            ("k(x1, diag=True)", k(x1, diag=True), k.diag_value(x1)),
            # diag_value, not the diagonal of value: the "diag" check ties the two
            ("k(x1, x1, diag=True)", k(x1, x1, diag=True), k.diag_value(x1)),
            ("k(x1, x3, diag=True)", k(x1, x3, diag=True), torch.diagonal(k.value(x1, x3))),
        ]
    for what, got, expected in pairs:
        b.compare("forward", got, expected, rtol="algebra", what=f"{what} vs value")


def _everything(k: DescriptorKernel, q1: torch.Tensor, q2: torch.Tensor, g1: torch.Tensor,
                c1: torch.Tensor, g2: torch.Tensor, c2: torch.Tensor,
                w: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {"value": k.value(q1, q2), "diag_value": k.diag_value(q1),
                "grad_contract": k.grad_contract(q1, q2, g1, c1),
                "hessian_contract": k.hessian_contract(q1, q2, g1, c1, g2, c2),
                "weighted_gradient": k.weighted_gradient(q1, q2, w),
                "forward": k(q1, q2).to_dense()}


def _battery_inputs(b: _KernelBattery) -> tuple[torch.Tensor, ...]:
    q1, q2 = b.sample(5), b.sample(4)
    g1, c1 = b.directions(3, 2, 5)
    g2, c2 = b.directions(3, 2, 4)
    w = torch.as_tensor(b.rng.standard_normal((5, 4)), dtype=b.dtype)
    return q1, q2, g1, c1, g2, c2, w


def _check_delta_scaling(b: _KernelBattery) -> None:
    k = b.kernel
    q1, q2, g1, c1, g2, c2, w = _battery_inputs(b)
    with torch.no_grad():
        variance = float(k.delta.detach().reshape(())) ** 2
        pairs = [
            ("value", "unit_value", k.value(q1, q2), k.unit_value(q1, q2)),
            ("diag_value", "unit_diag", k.diag_value(q1), k.unit_diag(q1)),
            ("grad_contract", "unit_grad_contract", k.grad_contract(q1, q2, g1, c1),
             k.unit_grad_contract(q1, q2, g1, c1)),
            ("hessian_contract", "unit_hessian_contract",
             k.hessian_contract(q1, q2, g1, c1, g2, c2),
             k.unit_hessian_contract(q1, q2, g1, c1, g2, c2)),
            ("weighted_gradient", "unit_weighted_gradient", k.weighted_gradient(q1, q2, w),
             k.unit_weighted_gradient(q1, q2, w)),
        ]
    for name, unit_name, scaled, unit in pairs:
        b.compare("delta_scaling", scaled, variance * unit, rtol="algebra",
                  what=f"{name} vs delta^2 * {unit_name}")


def _check_delta_setter(b: _KernelBattery) -> None:
    k = b.make_kernel()
    inputs = _battery_inputs(b)
    d0 = float(k.delta.detach().reshape(()))
    before = _everything(k, *inputs)
    k.delta = 2.0 * d0
    b.compare("delta_setter", k.delta.detach().reshape(()),
              torch.tensor(2.0 * d0, dtype=torch.float64),
              rtol="algebra", what="delta after setting it to twice its value")
    after = _everything(k, *inputs)
    for name, value in before.items():
        b.compare("delta_setter", after[name], 4.0 * value, rtol="algebra",
                  what=f"{name} after doubling delta vs 4 x before")


def _check_delta_parameter(b: _KernelBattery) -> None:
    k = b.make_kernel()
    raw = getattr(k, "raw_delta", None)
    if not isinstance(raw, torch.nn.Parameter) or "raw_delta" not in dict(k.named_parameters()):
        b.fail("delta_parameter", "raw_delta is not a registered torch.nn.Parameter")
        return
    delta = k.delta
    if not bool(torch.all(delta > 0)):
        b.fail("delta_parameter", f"delta = {delta.tolist()} is not positive")
    b.compare("delta_parameter", delta, k.raw_delta_constraint.transform(raw), rtol="algebra",
              what="delta vs raw_delta_constraint.transform(raw_delta)")
    x = b.sample(4)
    k.zero_grad()
    total = k.value(x, x).sum()
    if not total.requires_grad:
        b.fail("delta_parameter", "value(x, x) does not depend on raw_delta through autograd "
                                  "(no grad_fn): delta cannot be learned")
        return
    total.backward()
    grad = raw.grad
    if grad is None or not bool(torch.isfinite(grad).all()) or not bool((grad != 0).any()):
        b.fail("delta_parameter", f"value(x, x).sum().backward() gives raw_delta.grad = "
                                  f"{None if grad is None else grad.tolist()}; expected a "
                                  f"finite non-zero gradient")


def _check_grad_contract(b: _KernelBattery, skip: Collection[str]) -> None:
    k, h = b.kernel, b.tol["kernel_step"]
    q1, q2 = b.sample(5), b.sample(4)
    g, centre = b.directions(7, 2, 5)
    with torch.no_grad():
        analytic = k.grad_contract(q1, q2, g, centre)
        if "grad_contract" not in skip:
            fd = torch.empty((7, 2, 4), dtype=b.dtype)
            for e in range(7):
                for r in range(2):
                    plus, minus = q1.clone(), q1.clone()
                    plus[centre[e]] += h * g[e, r]
                    minus[centre[e]] -= h * g[e, r]
                    fd[e, r] = (k.value(plus, q2) - k.value(minus, q2))[centre[e]] / (2 * h)
            b.compare("grad_contract", analytic, fd, rtol="finite_difference",
                      atol="finite_difference_atol",
                      what=f"grad_contract vs central differences of value (step {h:g})")
        if "grad_contract_linearity" not in skip:
            g3, c3 = b.directions(4, 3, 5)
            combined = g3[:, :1] + 2.5 * g3[:, 1:2]
            lhs = k.grad_contract(q1, q2, combined, c3)
            rhs = (k.grad_contract(q1, q2, g3[:, :1], c3)
                   + 2.5 * k.grad_contract(q1, q2, g3[:, 1:2], c3))
            b.compare("grad_contract_linearity", lhs, rhs, rtol="algebra", atol="algebra_atol",
                      what="grad_contract(g1 + 2.5 g2) vs grad_contract(g1) + 2.5 "
                           "grad_contract(g2)")


def _check_hessian_contract(b: _KernelBattery, skip: Collection[str]) -> None:
    k, h = b.kernel, b.tol["kernel_step"]
    q1, q2 = b.sample(5), b.sample(4)
    g1, c1 = b.directions(6, 2, 5)
    g2, c2 = b.directions(5, 3, 4)
    with torch.no_grad():
        analytic = k.hessian_contract(q1, q2, g1, c1, g2, c2)
        if "hessian_contract" not in skip:
            fd = torch.empty((6, 2, 5, 3), dtype=b.dtype)
            for f in range(5):
                for s in range(3):
                    plus, minus = q2.clone(), q2.clone()
                    plus[c2[f]] += h * g2[f, s]
                    minus[c2[f]] -= h * g2[f, s]
                    diff = k.grad_contract(q1, plus, g1, c1) - k.grad_contract(q1, minus, g1, c1)
                    fd[:, :, f, s] = diff[:, :, c2[f]] / (2 * h)
            b.compare("hessian_contract", analytic, fd, rtol="finite_difference",
                      atol="finite_difference_atol",
                      what=f"hessian_contract vs central differences of grad_contract in its "
                           f"second argument (step {h:g})")
        if "hessian_swap" not in skip:
            swapped = k.hessian_contract(q2, q1, g2, c2, g1, c1).permute(2, 3, 0, 1)
            b.compare("hessian_swap", analytic, swapped, rtol="algebra", atol="algebra_atol",
                      what="hessian_contract(q1, q2, g1, c1, g2, c2) vs the swapped call, "
                           "transposed")


def _check_weighted_gradient(b: _KernelBattery) -> None:
    k, h = b.kernel, b.tol["kernel_step"]
    q1, q2 = b.sample(5), b.sample(4)
    w = torch.as_tensor(b.rng.standard_normal((5, 4)), dtype=b.dtype)
    with torch.no_grad():
        analytic = k.weighted_gradient(q1, q2, w)
        fd = torch.empty((5, b.n_features), dtype=b.dtype)
        for i in range(5):
            for d in range(b.n_features):
                plus, minus = q1.clone(), q1.clone()
                plus[i, d] += h
                minus[i, d] -= h
                fd[i, d] = ((k.value(plus, q2) - k.value(minus, q2))[i] * w[i]).sum() / (2 * h)
        b.compare("weighted_gradient", analytic, fd, rtol="finite_difference",
                  atol="finite_difference_atol",
                  what=f"weighted_gradient vs central differences of sum_m w[i, m] value(q1, "
                       f"q2)[i, m] (step {h:g})")
        eye = torch.eye(b.n_features, dtype=b.dtype).repeat(5, 1, 1)
        via_contract = (k.grad_contract(q1, q2, eye, torch.arange(5)) * w[:, None, :]).sum(-1)
        b.compare("weighted_gradient", analytic, via_contract, rtol="algebra",
                  atol="algebra_atol",
                  what="weighted_gradient vs grad_contract with unit directions, weighted")


def _synthetic_layout(b: _KernelBattery) -> tuple[Any, ...]:
    """Descriptor values and sparse position gradients of a made-up 5-atom structure:
    7 centres of 2 types; each centre has an entry for the atom that owns it and for two
    other atoms."""
    n_atoms, n_centres = 5, 7
    owner = b.rng.integers(0, n_atoms, size=n_centres)
    types = torch.as_tensor(b.rng.integers(0, 2, size=n_centres))
    centre_list, atom_list = [], []
    for c in range(n_centres):
        others = b.rng.choice(np.delete(np.arange(n_atoms), owner[c]), size=2, replace=False)
        for j in (owner[c], *others):
            centre_list.append(c)
            atom_list.append(int(j))
    q = b.sample(n_centres)
    g, _ = b.directions(len(centre_list), 3, n_centres)
    return (q, g, torch.as_tensor(centre_list), np.asarray(atom_list, dtype=np.int64), types,
            n_atoms)


def _check_force_prior_variance(b: _KernelBattery) -> None:
    from gapkit.kernels.base import DescriptorKernel

    k = b.kernel
    args = _synthetic_layout(b)
    with torch.no_grad():
        fast = k.force_prior_variance(*args)
        generic = DescriptorKernel.force_prior_variance(k, *args)
    b.compare("force_prior_variance", fast, generic, rtol="algebra", atol="algebra_atol",
              what=f"{b.name}.force_prior_variance vs DescriptorKernel.force_prior_variance "
                   f"(one hessian_contract per atom)")
    low = float(fast.min()) if fast.numel() else 0.0
    if low < -b.tol["algebra"] * float(fast.abs().max()):
        b.fail("force_prior_variance", f"a prior force variance is negative: {low:.3e}")


def _params_close(a: Any, e: Any, rtol: float, path: str = "get_params()") -> str | None:
    if isinstance(e, Mapping):
        if not isinstance(a, Mapping) or set(a) != set(e):
            return f"{path}: keys {sorted(a) if isinstance(a, Mapping) else a!r}, " \
                   f"expected {sorted(e)}"
        for key in e:
            message = _params_close(a[key], e[key], rtol, f"{path}[{key!r}]")
            if message:
                return message
        return None
    if isinstance(e, (list, tuple)) and not isinstance(a, str):
        return _close_or_message(np.asarray(a, dtype=float), np.asarray(e, dtype=float),
                                 rtol=rtol, atol=0.0, what=path)
    if isinstance(e, float) and isinstance(a, (int, float)) and not isinstance(a, bool):
        return _close_or_message(np.asarray(a), np.asarray(e), rtol=rtol, atol=0.0, what=path)
    return None if a == e else f"{path}: {a!r}, expected {e!r}"


def _check_get_params(b: _KernelBattery) -> None:
    k = b.kernel
    params = k.get_params()
    try:
        params = json.loads(json.dumps(params))
    except (TypeError, ValueError) as err:
        b.fail("get_params", f"get_params() is not JSON-serialisable: {err}")
        return
    clone = type(k)(**params)  # an exception is reported as a failure of "get_params"
    message = _params_close(clone.get_params(), params, b.tol["algebra"])
    if message:
        b.fail("get_params", f"{b.name}(**get_params()).get_params() differs: {message}")
    inputs = _battery_inputs(b)
    expected, got = _everything(k, *inputs), _everything(clone, *inputs)
    for name, value in expected.items():
        b.compare("get_params", got[name], value, rtol="algebra",
                  what=f"{name} of {b.name}(**get_params()) vs the original")


def _check_copy(b: _KernelBattery) -> None:
    k = b.make_kernel()
    inputs = _battery_inputs(b)
    expected = _everything(k, *inputs)
    d0 = float(k.delta.detach().reshape(()))
    for how, clone in (("pickle", pickle.loads(pickle.dumps(k))), ("deepcopy", copy.deepcopy(k))):
        got = _everything(clone, *inputs)
        for name, value in expected.items():
            if not torch.equal(got[name], value):
                b.compare("copy", got[name], value, rtol=0.0,
                          what=f"{name} of a {how} copy (must be bit-identical)")
        clone.delta = 3.0 * d0
        if float(k.delta.detach().reshape(())) != d0:
            b.fail("copy", f"setting delta on a {how} copy changed the original's delta")


def check_kernel(
    make_kernel: Callable[[], DescriptorKernel],
    sample: Sampler,
    *,
    gradients: GradientSampler | None = None,
    skip: Collection[str] = (),
    seed: int = 0,
    tolerances: Mapping[str, float] | None = None,
) -> None:
    """Run the battery of checks every descriptor kernel must pass.

    After gpytorch's ``BaseKernelTestCase`` and scikit-learn's parametrised kernel
    tests. The kernel is a :class:`gapkit.kernels.DescriptorKernel`: ``k = delta^2
    kappa(q, q')`` (eV^2) with ``delta`` (eV) a positive GPyTorch parameter and
    the unit kernel ``kappa`` and its derivatives given by the subclass. The checks
    (:data:`KERNEL_CHECKS`), on random descriptors drawn by ``sample``:

    ``"dtype"``
        every operation returns the descriptors' dtype, and so is ``raw_delta``;
    ``"symmetry"``, ``"positive_semidefinite"``
        ``value(x, x)`` of 12 samples is symmetric, and its smallest eigenvalue is not
        below ``-psd * max|eigenvalue|``;
    ``"diag"``
        ``diag_value`` (``unit_diag``) equals the diagonal of ``value`` (``unit_value``);
    ``"forward"``
        the GPyTorch call ``k(x1, x2)``, ``k(x1)`` and ``k(x1, x2, diag=True)`` agree with
        ``value``;
    ``"delta_scaling"``
        ``value``, ``diag_value``, ``grad_contract``, ``hessian_contract`` and
        ``weighted_gradient`` are ``delta^2`` times their ``unit_*`` versions;
    ``"delta_setter"``
        setting ``k.delta`` to twice its value multiplies all of them by 4;
    ``"delta_parameter"``
        ``raw_delta`` is a registered parameter, ``delta`` its constrained value (> 0),
        and gradients flow from ``value`` to it;
    ``"grad_contract"``
        against central differences of ``value`` along each gradient direction:
        :math:`\\sum_D \\partial k/\\partial q_{1D}\\, g_D \\approx
        [k(q_1 + h g, q_2) - k(q_1 - h g, q_2)] / 2h`;
    ``"grad_contract_linearity"``
        ``grad_contract`` is linear in the directions;
    ``"hessian_contract"``
        against central differences of ``grad_contract`` in its second argument;
    ``"hessian_swap"``
        swapping the two sides transposes ``hessian_contract``;
    ``"weighted_gradient"``
        against central differences of :math:`\\sum_m w_{im} k(q_{1i}, q_{2m})` in every
        feature, and against ``grad_contract`` with unit directions;
    ``"force_prior_variance"``
        the kernel's ``force_prior_variance`` (often a batched fast path) against the
        generic per-atom ``hessian_contract`` loop of ``DescriptorKernel``, on a made-up
        5-atom structure with 7 centres of 2 types; and it is not negative;
    ``"get_params"``
        ``get_params()`` is JSON-serialisable and ``type(k)(**k.get_params())`` gives the
        same parameters and the same values and derivatives;
    ``"copy"``
        pickle and deepcopy copies give bit-identical results and are independent.

    Parameters
    ----------
    make_kernel : callable () -> DescriptorKernel
        Returns a fresh kernel each call (some checks change ``delta``).
    sample : callable (numpy.random.Generator, int) -> torch.Tensor
        ``sample(rng, n)`` draws ``n`` descriptor vectors, shape ``(n, n_features)``, in
        the domain the kernel is meant for (unit vectors for the dot-product SOAP
        kernel, pair distances in Å for the two-body kernel). Two draws should not
        coincide: some kernels are not differentiable at coincident points. The dtype
        of the tensor selects the tolerances (:func:`tolerances_for`).
    gradients : callable (numpy.random.Generator, int, int) -> torch.Tensor, optional
        ``gradients(rng, n_entries, n_directions)`` draws descriptor-gradient entries
        ``g`` of shape ``(n_entries, n_directions, n_features)`` (descriptor units per Å).
        Default: standard normal numbers; give features of very different magnitudes
        directions of their own scale.
    skip : collection of str, default ()
        Names from :data:`KERNEL_CHECKS` not to run (say why at the call site).
    seed : int, default 0
        Seed of every random draw.
    tolerances : mapping of str to float, optional
        Overrides of entries of :data:`TOLERANCES` (the descriptors' dtype); unknown
        names raise ``KeyError``.

    Raises
    ------
    AssertionError
        If any check fails. The message lists every failing check by name, with the
        quantity compared, the worst entry (index, both values, their difference) and
        the tolerance. An exception the kernel raises during a check (a ``ValueError``
        where it is not differentiable, say) counts as a failure of that check, and the
        first one is chained to the AssertionError.
    ValueError
        For an unknown name in ``skip``.
    TypeError
        If ``sample`` or ``gradients`` return arrays of the wrong shape.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from gapkit import SOAPKernel
    >>> def unit_vectors(rng, n):
    ...     q = rng.normal(size=(n, 7))
    ...     return torch.as_tensor(q / np.linalg.norm(q, axis=1, keepdims=True))
    >>> check_kernel(lambda: SOAPKernel(zeta=4, delta=1.3), unit_vectors)
    """
    __tracebackhide__ = True
    unknown = set(skip) - set(KERNEL_CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)} in skip; choose from "
                         f"{list(KERNEL_CHECKS)}")
    b = _KernelBattery(make_kernel, sample, gradients, seed, tolerances)

    errors: list[Exception] = []

    def run(names: tuple[str, ...], check: Callable[[], None]) -> None:
        """Run ``check`` unless all its ``names`` are skipped; an exception it raises is
        reported as a failure of its first check (the first one chains the AssertionError)."""
        if set(names) <= set(skip):
            return
        try:
            check()
        except Exception as err:  # noqa: BLE001 - reported with the check's name
            errors.append(err)
            b.fail(names[0], f"raised {type(err).__name__}: {err}")

    run(("dtype",), lambda: _check_dtype(b))
    run(("symmetry", "positive_semidefinite"), lambda: _check_symmetry_and_psd(b, skip))
    run(("diag",), lambda: _check_diag(b))
    run(("forward",), lambda: _check_forward(b))
    run(("delta_scaling",), lambda: _check_delta_scaling(b))
    run(("delta_setter",), lambda: _check_delta_setter(b))
    run(("delta_parameter",), lambda: _check_delta_parameter(b))
    run(("grad_contract", "grad_contract_linearity"), lambda: _check_grad_contract(b, skip))
    run(("hessian_contract", "hessian_swap"), lambda: _check_hessian_contract(b, skip))
    run(("weighted_gradient",), lambda: _check_weighted_gradient(b))
    run(("force_prior_variance",), lambda: _check_force_prior_variance(b))
    run(("get_params",), lambda: _check_get_params(b))
    run(("copy",), lambda: _check_copy(b))
    if b.failures:
        raise AssertionError(
            f"{b.name} (from make_kernel()) fails {len(b.failures)} check(s) of "
            f"gapkit.testing.check_kernel (seed={seed}):\n  " + "\n  ".join(b.failures)
        ) from (errors[0] if errors else None)


# --------------------------------------------------------------------------------------
# forces and virials against finite differences of the energy
# --------------------------------------------------------------------------------------
#: frames per ``predict`` call when check_forces evaluates displaced copies
_PREDICT_BATCH = 64


def _field(result: Any, name: str) -> Any:
    if isinstance(result, Mapping):
        return result[name]
    return getattr(result, name)


class _Model:
    """Energies, forces and virials of one of the three kinds of model check_forces takes."""

    def __init__(self, model: Any):
        from ase.calculators.calculator import BaseCalculator

        self.model = model
        self.name = type(model).__name__
        if isinstance(model, BaseCalculator):
            self.kind = "calculator"
        elif callable(getattr(model, "predict", None)):
            self.kind = "predict"
            try:
                self._params = set(inspect.signature(model.predict).parameters)
            except (TypeError, ValueError):
                self._params = set()
        elif callable(model):
            self.kind = "function"
            self.name = getattr(model, "__name__", self.name)
        else:
            raise TypeError(f"check_forces needs an ASE calculator, an object with "
                            f"predict(frames) or a function atoms -> (energy, forces, "
                            f"virial), not {type(model).__name__}")

    def _predict(self, frames: list[Atoms], *, forces: bool, virial: bool) -> Any:
        """``predict`` with the keywords it has: no variances, only what is needed."""
        wanted: dict[str, Any] = {"forces": forces, "virial": virial}
        if "return_variance" in self._params:
            wanted["return_variance"] = False
        elif "variance" in self._params:
            wanted["variance"] = False
        return self.model.predict(frames, **{k: v for k, v in wanted.items()
                                             if k in self._params})

    def full(self, atoms: Atoms, virial: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy (eV), forces (n_atoms, 3) eV/Å and virial (3, 3) eV or None."""
        if self.kind == "calculator":
            frame = _bare_copy(atoms)
            frame.calc = self.model
            energy = frame.get_potential_energy()
            forces = frame.get_forces()
            w = (-frame.get_stress(voigt=False) * frame.get_volume()) if virial else None
            return float(energy), np.asarray(forces), w
        if self.kind == "predict":
            pred = self._predict([_bare_copy(atoms)], forces=True, virial=virial)
            w = _field(pred, "virial") if virial else None
            return (float(np.asarray(_field(pred, "energy")).reshape(-1)[0]),
                    np.asarray(_field(pred, "forces")),
                    None if w is None else np.asarray(w)[0])
        energy, forces, w = self.model(_bare_copy(atoms))
        return float(energy), np.asarray(forces), None if w is None else np.asarray(w)

    def energies(self, frames: list[Atoms]) -> np.ndarray:
        """Energies (eV) of many frames, batched where the model allows it."""
        if self.kind == "predict":
            out = [np.asarray(_field(self._predict(frames[i:i + _PREDICT_BATCH], forces=False,
                                                   virial=False), "energy"), dtype=float)
                   for i in range(0, len(frames), _PREDICT_BATCH)]
            return np.concatenate(out)
        if self.kind == "calculator":
            values = []
            for frame in frames:
                frame.calc = self.model
                values.append(frame.get_potential_energy())
                frame.calc = None
            return np.asarray(values, dtype=float)
        return np.asarray([float(self.model(frame)[0]) for frame in frames])


def _central_differences(model: _Model, atoms: Atoms, step: float,
                         virial: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """-dE/dr (n_atoms, 3) and -dE/d eps (3, 3) by central differences of step ``step``."""
    frames = []
    for j in range(len(atoms)):
        for a in range(3):
            for sign in (1.0, -1.0):
                frame = _bare_copy(atoms)
                frame.positions[j, a] += sign * step
                frames.append(frame)
    if virial:
        for a in range(3):
            for b in range(3):
                for sign in (1.0, -1.0):
                    eps = np.zeros((3, 3))
                    eps[a, b] = sign * step
                    frames.append(_strained(atoms, np.eye(3) + eps))
    energies = model.energies(frames)
    n = 6 * len(atoms)
    forces = -(energies[:n:2] - energies[1:n:2]).reshape(len(atoms), 3) / (2 * step)
    w = -(energies[n::2] - energies[n + 1::2]).reshape(3, 3) / (2 * step) if virial else None
    return forces, w


def check_forces(
    model_or_calc: Any,
    atoms: Atoms,
    *,
    step: float = _FLOAT64["force_step"],
    rtol: float = _FLOAT64["finite_difference"],
    atol: float = 0.0,
    virial: bool | None = None,
    extrapolate: bool = False,
) -> dict[str, float]:
    """Check forces (and the virial) against central differences of the energy.

    .. math::

        F_{ja} = -\\frac{\\partial E}{\\partial r_{ja}} \\approx
            -\\frac{E(r_{ja} + h) - E(r_{ja} - h)}{2h}, \\qquad
        W_{ab} = -\\frac{\\partial E}{\\partial \\epsilon_{ab}}

    for every atom and direction, and, for the virial, every component of the
    homogeneous deformation ``positions @ (I + eps).T`` (and ``cell @ (I + eps).T`` when
    any axis is periodic), the nine components independent (not symmetrised; an
    energy invariant under rotations has a symmetric virial, and the antisymmetric
    differences must vanish). The virial is ASE's: ``W = -stress * volume`` (eV). The
    check costs ``6 n_atoms (+ 18)`` energy evaluations, twice that with
    ``extrapolate``. The error of each quantity is

    .. math::

        \\max |X_\\text{analytic} - X_\\text{numerical}|\\, /\\,
            \\max |X_\\text{numerical}|

    (relative to the largest component, like ASE's ``gradient_test``), and it passes
    when ``max |diff| <= atol + rtol * max |X_numerical|``.

    Parameters
    ----------
    model_or_calc : ASE calculator, model with ``predict``, or callable
        * an ASE calculator: it is attached to copies of ``atoms``; forces from
          ``get_forces``, the virial from ``-get_stress(voigt=False) * volume``;
        * an object with ``predict(frames, ...)`` (:class:`gapkit.GAP`,
          :class:`gapkit.gp.ExactGP`) whose result has ``energy`` (n_frames,),
          ``forces`` (n_atoms, 3) and ``virial`` (n_frames, 3, 3) (attributes or keys);
          ``forces=``, ``virial=`` and ``return_variance=False`` are passed when its
          signature has them, and displaced copies are predicted in batches;
        * a function ``atoms -> (energy, forces, virial or None)`` (eV, eV/Å, eV).
    atoms : ase.Atoms
        The structure. Copies are displaced; its calculator and constraints are ignored.
    step : float, default ``TOLERANCES[float64]["force_step"]`` (1e-4)
        Central-difference step, Å (dimensionless for strain).
    rtol : float, default ``TOLERANCES[float64]["finite_difference"]`` (1e-6)
        Largest accepted error relative to the largest numerical component.
    atol : float, default 0
        Accepted absolute error on top (eV/Å for forces, eV for the virial): needed
        when the forces vanish by symmetry.
    virial : bool or None, default None
        Also check the virial. None: when ``atoms`` is periodic along all three axes.
        True on a non-periodic structure deforms the positions only (the model must
        then return a virial).
    extrapolate : bool, default False
        Richardson extrapolation ``(4 D(h) - D(2h)) / 3`` of the central differences,
        which removes their O(h^2) error. Strain derivatives of the energy have large
        third derivatives (a unit strain moves atoms by a whole cell), so plain
        differences may leave ~1e-6 of the virial at h = 1e-4.

    Returns
    -------
    dict
        The measured relative errors, ``{"forces": float}`` and ``"virial"`` when
        checked.

    Raises
    ------
    AssertionError
        If an error exceeds the tolerance (the message names the worst atom, its
        species and direction, or the worst virial component, with both values), or if
        the model returns forces or a virial of the wrong shape, or no virial when one is
        checked.
    TypeError
        If ``model_or_calc`` is none of the three kinds.
    """
    __tracebackhide__ = True
    model = _Model(model_or_calc)
    check_virial = bool(np.all(atoms.pbc)) if virial is None else bool(virial)
    energy, forces, w = model.full(atoms, check_virial)
    if forces.shape != (len(atoms), 3):
        raise AssertionError(f"{model.name} returned forces of shape {forces.shape} for "
                             f"{len(atoms)} atoms; expected ({len(atoms)}, 3)")
    if check_virial and (w is None or np.shape(w) != (3, 3)):
        raise AssertionError(f"{model.name} returned virial "
                             f"{None if w is None else np.shape(w)} where a (3, 3) virial "
                             f"(eV) was to be checked; pass virial=False to skip it")
    numerical_f, numerical_w = _central_differences(model, atoms, step, check_virial)
    if extrapolate:
        coarse_f, coarse_w = _central_differences(model, atoms, 2 * step, check_virial)
        numerical_f = (4 * numerical_f - coarse_f) / 3
        if numerical_w is not None and coarse_w is not None:
            numerical_w = (4 * numerical_w - coarse_w) / 3
    how = f"central differences, step {step:g}" + (", Richardson-extrapolated"
                                                    if extrapolate else "")
    symbols = atoms.get_chemical_symbols()
    errors: dict[str, float] = {}
    failures = []

    error, worst, scale = _relative_error(forces, numerical_f)
    errors["forces"] = error
    diff = float(np.abs(forces - numerical_f).max(initial=0.0))
    if not diff <= atol + rtol * scale:
        j, a = (int(x) for x in worst)
        failures.append(
            f"forces: max |F - F_numerical| = {diff:.3e} eV/Å > atol {atol:.1e} + rtol "
            f"{rtol:.1e} * max|F_numerical| ({scale:.3e} eV/Å); relative error {error:.3e}\n"
            f"    worst: atom {j} ({symbols[j]}), direction {_AXES[a]}: analytic "
            f"{float(forces[j, a])!r}, numerical {float(numerical_f[j, a])!r} ({how} Å)")
    if check_virial and w is not None and numerical_w is not None:
        w = np.asarray(w, dtype=float)
        error, worst, scale = _relative_error(w, numerical_w)
        errors["virial"] = error
        diff = float(np.abs(w - numerical_w).max())
        if not diff <= atol + rtol * scale:
            a, c = (int(x) for x in worst)
            failures.append(
                f"virial: max |W - W_numerical| = {diff:.3e} eV > atol {atol:.1e} + rtol "
                f"{rtol:.1e} * max|W_numerical| ({scale:.3e} eV); relative error "
                f"{error:.3e}\n    worst: component {_AXES[a]}{_AXES[c]}: analytic "
                f"{float(w[a, c])!r}, numerical {float(numerical_w[a, c])!r} ({how}; "
                f"W = -dE/d eps for r -> (1 + eps) r, eps not symmetrised; "
                f"W = -stress * volume)")
    if failures:
        raise AssertionError(
            f"{model.name}: forces/virial are not minus the derivatives of its energy "
            f"(E = {energy!r} eV, {len(atoms)} atoms):\n" + "\n".join(failures))
    return errors


def label(atoms: Atoms, calc: Any, *, virial: bool = True) -> Atoms:
    """A labelled copy of one frame: :func:`gapkit.generate.label` with ``store="info"``.

    ``calc``'s energy (eV) goes to ``info["energy"]``, its forces (eV/Å) to
    ``arrays["forces"]`` and, for periodic cells with ``virial``, the virial (eV,
    ``-stress * volume``) to ``info["virial"]`` (gap_fit's keys), with no calculator
    attached, so the frame reads like one loaded from a reference-data file and a test
    can edit a label. ``atoms`` itself is not modified (before 0.2 it was): use the
    returned frame.
    """
    from .labelling import label as generate_label

    properties = ["energy", "forces"] + (["virial"] if virial and atoms.pbc.all() else [])
    return generate_label([atoms], calc, properties=properties, progress=False,
                          store="info")[0]
