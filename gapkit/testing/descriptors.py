"""Checks of descriptors: invariances, per-atom values, and analytic position and
strain gradients against central differences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ._helpers import (
    _AXES,
    _bare_copy,
    _compute,
    _fmt_matrix,
    _match_rows,
    _sort_rows,
    _structure_rows,
)
from .tolerances import FINITE_DIFFERENCE_STEP, GRADIENT_RTOL, INVARIANCE_ATOL

if TYPE_CHECKING:
    from gapkit.descriptors.base import DescriptorResult


#: Names of the transforms :func:`assert_invariant` knows, in the order they are run.
TRANSFORMS: tuple[str, ...] = (
    "rotation", "inversion", "translation", "permutation", "lattice_shift", "supercell")
_PERIODIC_ONLY = frozenset({"lattice_shift", "supercell"})


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
