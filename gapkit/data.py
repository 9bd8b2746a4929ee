"""Reading and checking reference data: structures and their energy, force and virial labels.

Everything here works in ASE's units: energies in eV, lengths in Å, forces in eV/Å, stress in
eV/Å³, and virials in eV. The virial follows the GAP/QUIP convention

.. math:: W = -\\sigma V,

where :math:`\\sigma` is the stress in ASE's sign (positive under tension) and :math:`V` the
cell volume, so the virial is positive under compression.

Extended-XYZ keys follow ``gap_fit``: ``energy``, ``forces``, ``virial`` and ``config_type``
by default, all renameable, and the per-configuration noise overrides ``energy_sigma``,
``force_sigma`` and ``virial_sigma``. ASE ≥ 3.23 moves the standard properties (``energy``,
``forces``, ``stress``, ...) out of ``atoms.info``/``atoms.arrays`` into a
``SinglePointCalculator``; :func:`get_labels` looks in both places.

This module depends on numpy and ASE only, so that every other layer can use it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase
import ase.io
import numpy as np
import numpy.typing as npt
from ase.calculators.calculator import all_properties
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, chemical_symbols

__all__ = [
    "Labels",
    "as_frames",
    "voigt_symmetrised",
    "bundled_path",
    "composition",
    "get_all_labels",
    "get_labels",
    "load_bundled",
    "read_extxyz",
    "stress_to_virial",
    "validate_structure",
    "virial_to_stress",
    "voigt_to_matrix",
    "matrix_to_voigt",
    "VOIGT",
]

#: ASE's Voigt order of the six components of a symmetric 3x3 tensor: xx, yy, zz, yz, xz, xy.
#: The one table every Voigt <-> matrix conversion in gapkit reads.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))

#: The label kinds, in observation-row order: the one spelling every module reads
#: (``gapkit.gp.KINDS`` is this tuple; also the names ``require`` accepts).
LABEL_NAMES = ("energy", "forces", "virial")

#: ``atoms.info`` keys read as per-configuration noise overrides (as in ``gap_fit``).
#: ``forces_sigma`` is accepted as a synonym of gap_fit's ``force_sigma``.
SIGMA_KEYS = {
    "energy_sigma": ("energy_sigma",),
    "forces_sigma": ("force_sigma", "forces_sigma"),
    "virial_sigma": ("virial_sigma",),
}

# A set of periodic cell vectors is called degenerate when the volume (area, length) they span
# is below this fraction of the product of their lengths, i.e. when they are nearly parallel.
_DEGENERACY_TOL = 1e-10
# Cell vectors shorter than this (Å) count as zero.
_ZERO_LENGTH = 1e-8

_DATA_DIR = Path(__file__).resolve().parent.parent / "data"


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Labels:
    """Reference labels of one configuration.

    Parameters
    ----------
    energy : float or None
        Total energy, eV. ``None`` when the configuration has no energy label.
    forces : ndarray of shape (n_atoms, 3) or None
        Forces, eV/Å.
    virial : ndarray of shape (3, 3) or None
        Virial, eV, GAP sign convention ``virial = -stress * volume`` (positive under
        compression).
    config_type : str
        Configuration type (``gap_fit``'s ``config_type``), ``"default"`` when absent.
    energy_sigma : float or None
        Per-configuration noise override for the energy, eV (``energy_sigma`` in extxyz).
    forces_sigma : float or None
        Per-configuration noise override for the forces, eV/Å (``force_sigma`` or
        ``forces_sigma``).
    virial_sigma : float or None
        Per-configuration noise override for the virial, eV (``virial_sigma``).

    Notes
    -----
    The arrays are stored as read-only float64 copies. Instances compare by identity
    (``eq=False``), since element-wise array comparison has no single truth value.
    """

    energy: float | None = None
    forces: npt.NDArray[np.float64] | None = None
    virial: npt.NDArray[np.float64] | None = None
    config_type: str = "default"
    energy_sigma: float | None = None
    forces_sigma: float | None = None
    virial_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.energy is not None:
            energy = float(self.energy)
            if not math.isfinite(energy):
                raise ValueError(f"energy must be finite, got {energy}")
            object.__setattr__(self, "energy", energy)
        if self.forces is not None:
            forces = np.array(self.forces, dtype=np.float64)
            if forces.ndim != 2 or forces.shape[1] != 3:
                raise ValueError(f"forces must have shape (n_atoms, 3), got {forces.shape}")
            if not np.all(np.isfinite(forces)):
                raise ValueError("forces contain NaN or inf")
            forces.setflags(write=False)
            object.__setattr__(self, "forces", forces)
        if self.virial is not None:
            virial = np.array(self.virial, dtype=np.float64)
            if virial.shape != (3, 3):
                raise ValueError(f"virial must have shape (3, 3), got {virial.shape}")
            if not np.all(np.isfinite(virial)):
                raise ValueError("virial contains NaN or inf")
            virial.setflags(write=False)
            object.__setattr__(self, "virial", virial)
        object.__setattr__(self, "config_type", str(self.config_type))
        for name in ("energy_sigma", "forces_sigma", "virial_sigma"):
            value = getattr(self, name)
            if value is not None:
                value = float(value)
                if not (math.isfinite(value) and value > 0.0):
                    raise ValueError(f"{name} must be a finite positive number, got {value}")
                object.__setattr__(self, name, value)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _frame(frame_index: int | None) -> str:
    return "" if frame_index is None else f"frame {frame_index}: "


def _where_to_look(atoms: ase.Atoms) -> str:
    """Describe which keys a configuration does carry (for error messages)."""
    info = sorted(atoms.info)
    arrays = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
    text = f"atoms.info keys {info}, per-atom arrays {arrays}"
    calc = atoms.calc
    if calc is None:
        text += ", no calculator results"
    elif isinstance(calc, SinglePointCalculator):
        text += f", calculator results {sorted(calc.results)}"
    else:
        text += (
            f", a {type(calc).__name__} calculator (its results are predictions and are not "
            "read as labels)"
        )
    return text


def _lookup(atoms: ase.Atoms, key: str, *, per_atom: bool) -> tuple[Any, str] | None:
    """Find ``key`` in ``atoms.arrays`` (per-atom) or ``atoms.info`` (per-frame), then in the
    results of a ``SinglePointCalculator`` when ``key`` is a standard ASE property name.

    Returns ``(value, where)`` or ``None`` when the key is nowhere.
    """
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store[key], ("atoms.arrays" if per_atom else "atoms.info")
    # Only a SinglePointCalculator holds stored reference values; any other calculator's
    # results are its own predictions and must never be taken for labels.
    calc = atoms.calc
    if key in all_properties and isinstance(calc, SinglePointCalculator) and key in calc.results:
        return calc.results[key], "atoms.calc.results"
    return None


def _as_float_array(value: Any, *, what: str, frame_index: int | None) -> np.ndarray:
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{_frame(frame_index)}{what} is not numeric (got {value!r}); "
            "fix the value in the file or point the key argument at the right field"
        ) from err


def _check_finite(array: np.ndarray, *, what: str, frame_index: int | None) -> None:
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(np.atleast_1d(array)))
        first = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{_frame(frame_index)}{what} contains NaN or inf ({len(bad)} entries, first at "
            f"index {first}); fix or drop this configuration before fitting"
        )


def _to_3x3(array: np.ndarray, *, what: str, frame_index: int | None) -> np.ndarray:
    """Interpret 9 numbers (row-major), a 3x3 matrix or ASE Voigt-6 numbers as a 3x3 tensor."""
    if array.shape == (3, 3):
        return array
    if array.shape == (9,):
        return array.reshape(3, 3)
    if array.shape == (6,):
        return voigt_to_matrix(array)
    raise ValueError(
        f"{_frame(frame_index)}{what} has shape {array.shape}; expected a 3x3 matrix, 9 numbers "
        "(row-major) or 6 numbers in ASE Voigt order (xx, yy, zz, yz, xz, xy)"
    )


def _cell_degenerate(cell: np.ndarray, axes: Sequence[int]) -> str | None:
    """Return a description of what is wrong with the cell vectors ``axes``, or None."""
    vectors = cell[list(axes)]
    if len(vectors) == 0:
        return None
    lengths = np.linalg.norm(vectors, axis=1)
    for axis, length in zip(axes, lengths):
        if length < _ZERO_LENGTH:
            return f"cell vector {axis} is zero"
    gram = vectors @ vectors.T
    # det(Gram) / prod(|a_i|^2) is the squared sine-like measure of how far from parallel the
    # vectors are: 1 for orthogonal vectors, 0 for linearly dependent ones.
    measure = np.linalg.det(gram) / np.prod(lengths**2)
    if measure < _DEGENERACY_TOL:
        return f"cell vectors {list(axes)} are (nearly) linearly dependent"
    return None


def _volume(atoms: ase.Atoms, *, what: str, frame_index: int | None) -> float:
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    problem = _cell_degenerate(cell, [0, 1, 2])
    if problem is not None or not np.all(np.isfinite(cell)):
        raise ValueError(
            f"{_frame(frame_index)}{what} needs the cell volume, but the cell is singular "
            f"({problem or 'it contains NaN or inf'}); give the configuration its full 3x3 cell "
            "or drop the stress"
        )
    return float(abs(np.linalg.det(cell)))


def voigt_to_matrix(voigt: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Symmetric 3x3 tensors from their six components in ASE Voigt order.

    Parameters
    ----------
    voigt : array_like of shape (..., 6)
        xx, yy, zz, yz, xz, xy (see :data:`VOIGT`).

    Returns
    -------
    ndarray of shape (..., 3, 3)
    """
    w = np.asarray(voigt, dtype=np.float64)
    if w.shape[-1:] != (6,):
        raise ValueError(f"expected six Voigt components in the last axis, got shape {w.shape}")
    out = np.empty(w.shape[:-1] + (3, 3))
    for i, (a, b) in enumerate(VOIGT):
        out[..., a, b] = w[..., i]
        out[..., b, a] = w[..., i]
    return out


def matrix_to_voigt(matrix: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The six ASE-Voigt components of 3x3 tensors, symmetrised: ``(M + M^T) / 2``.

    Parameters
    ----------
    matrix : array_like of shape (..., 3, 3)

    Returns
    -------
    ndarray of shape (..., 6)
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"expected 3x3 tensors in the last two axes, got shape {m.shape}")
    sym = 0.5 * (m + np.swapaxes(m, -1, -2))
    return np.stack([sym[..., a, b] for a, b in VOIGT], axis=-1)


def stress_to_virial(stress: npt.ArrayLike, volume: float) -> npt.NDArray[np.float64]:
    """Convert a stress to a virial: ``virial = -stress * volume``.

    Parameters
    ----------
    stress : array_like of shape (6,), (9,) or (3, 3)
        Stress, eV/Å³, ASE sign (positive under tension). Six numbers are read in ASE Voigt
        order (xx, yy, zz, yz, xz, xy).
    volume : float
        Cell volume, Å³.

    Returns
    -------
    ndarray of shape (3, 3)
        Virial, eV, GAP convention (positive under compression).
    """
    array = np.array(stress, dtype=np.float64)
    return -_to_3x3(array, what="stress", frame_index=None) * float(volume)


def virial_to_stress(virial: npt.ArrayLike, volume: float) -> npt.NDArray[np.float64]:
    """Convert a virial to an ASE stress in Voigt form: ``stress = -virial / volume``.

    Parameters
    ----------
    virial : array_like of shape (3, 3), (9,) or (6,)
        Virial, eV, GAP convention (positive under compression).
    volume : float
        Cell volume, Å³; must be positive.

    Returns
    -------
    ndarray of shape (6,)
        Stress, eV/Å³, ASE sign and Voigt order (xx, yy, zz, yz, xz, xy). The virial is
        symmetrised first.
    """
    if not volume > 0.0:
        raise ValueError(f"volume must be positive to convert a virial to a stress, got {volume}")
    w = _to_3x3(np.array(virial, dtype=np.float64), what="virial", frame_index=None)
    return -matrix_to_voigt(w) / float(volume)


# --------------------------------------------------------------------------------------------
# Structures
# --------------------------------------------------------------------------------------------


def validate_structure(atoms: ase.Atoms, frame_index: int | None = None) -> None:
    """Check that a configuration can be described: finite positions, usable periodic cell.

    Parameters
    ----------
    atoms : ase.Atoms
        The configuration (positions in Å).
    frame_index : int, optional
        Index of the configuration in its data set; named in error messages.

    Raises
    ------
    ValueError
        If there are no atoms, if a position or cell entry is NaN or inf, or if a periodic axis
        has a zero cell vector or the periodic cell vectors are (nearly) linearly dependent
        (a singular cell on the periodic axes).
    """
    where = _frame(frame_index)
    if len(atoms) == 0:
        raise ValueError(f"{where}the configuration has no atoms; drop it from the data set")
    positions = np.asarray(atoms.positions)
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.argwhere(~np.isfinite(positions))[:, 0])
        raise ValueError(
            f"{where}positions of atoms {bad[:10].tolist()} are NaN or inf; fix or drop this "
            "configuration"
        )
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not np.all(np.isfinite(cell)):
        raise ValueError(f"{where}the cell contains NaN or inf; fix the Lattice of this frame")
    periodic = [axis for axis in range(3) if atoms.pbc[axis]]
    problem = _cell_degenerate(cell, periodic)
    if problem is not None:
        raise ValueError(
            f"{where}pbc={atoms.pbc.tolist()} but {problem}, so the periodic cell is singular; "
            "set a proper cell (Lattice=...) or switch periodicity off on that axis "
            "(atoms.pbc)"
        )


# --------------------------------------------------------------------------------------------
# Labels from Atoms
# --------------------------------------------------------------------------------------------


def _read_sigmas(atoms: ase.Atoms, frame_index: int | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, keys in SIGMA_KEYS.items():
        found = {k: atoms.info[k] for k in keys if k in atoms.info}
        if not found:
            out[name] = None
            continue
        values = {}
        for key, raw in found.items():
            value = _as_float_array(raw, what=f"{key!r}", frame_index=frame_index)
            if value.shape != () or not (np.isfinite(value) and value > 0.0):
                raise ValueError(
                    f"{_frame(frame_index)}{key!r} must be one finite positive number, got "
                    f"{raw!r}; fix it in the file or remove it to use the default noise"
                )
            values[key] = float(value)
        if len(set(values.values())) > 1:
            raise ValueError(
                f"{_frame(frame_index)}conflicting noise overrides {values}; keep only one of "
                f"{list(keys)}"
            )
        out[name] = next(iter(values.values()))
    return out


def get_labels(
    atoms: ase.Atoms,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    virial_key: str = "virial",
    stress_key: str = "stress",
    config_type_key: str = "config_type",
    frame_index: int | None = None,
) -> Labels:
    """Extract and check the reference labels of one configuration.

    Each label is looked up in ``atoms.info`` (per-configuration) or ``atoms.arrays``
    (per-atom) first, then, when the key is a standard ASE property name (``energy``,
    ``forces``, ``stress``, ...), in the results of a ``SinglePointCalculator`` attached to
    ``atoms`` (where ASE ≥ 3.23 puts them when reading extxyz). Results of any other calculator
    are predictions and are never read as labels.

    Parameters
    ----------
    atoms : ase.Atoms
        The configuration.
    energy_key : str, default "energy"
        Key of the total energy, eV.
    forces_key : str, default "forces"
        Key of the per-atom forces, eV/Å, shape (n_atoms, 3).
    virial_key : str, default "virial"
        Key of the virial, eV (GAP convention ``-stress * volume``): a 3x3 matrix, 9 numbers
        (row-major) or 6 numbers in ASE Voigt order (xx, yy, zz, yz, xz, xy).
    stress_key : str, default "stress"
        Key of the stress, eV/Å³, ASE sign (positive under tension), Voigt-6 or 3x3. Used only
        when there is no virial; the virial is then ``-stress * volume``, which needs a
        non-singular cell.
    config_type_key : str, default "config_type"
        Key of the configuration type; ``"default"`` when absent. Non-string values (extxyz
        reads ``config_type=1`` as an integer) are converted with ``str``.
    frame_index : int, optional
        Index of the configuration in its data set; named in error messages.

    Returns
    -------
    Labels
        The labels; a missing label is ``None``. Per-configuration noise overrides are read from
        ``atoms.info`` keys ``energy_sigma`` (eV), ``force_sigma`` or ``forces_sigma`` (eV/Å)
        and ``virial_sigma`` (eV), as in ``gap_fit``.

    Raises
    ------
    ValueError
        If a label has the wrong shape, is not numeric, or contains NaN or inf; if a stress
        must be converted but the cell is singular; if a noise override is not a positive
        number. The message names the frame (when ``frame_index`` is given) and the key.
    """
    where = _frame(frame_index)

    energy = None
    found = _lookup(atoms, energy_key, per_atom=False)
    if found is not None:
        raw, place = found
        value = _as_float_array(
            raw, what=f"energy ({place}[{energy_key!r}])", frame_index=frame_index
        )
        if value.shape != ():
            raise ValueError(
                f"{where}energy ({place}[{energy_key!r}]) has shape {value.shape}; expected one "
                "number (the total energy in eV); check energy_key"
            )
        _check_finite(value, what=f"energy ({place}[{energy_key!r}])", frame_index=frame_index)
        energy = float(value)

    forces = None
    found = _lookup(atoms, forces_key, per_atom=True)
    if found is None and forces_key in atoms.info:
        found = atoms.info[forces_key], "atoms.info"
    if found is not None:
        raw, place = found
        what = f"forces ({place}[{forces_key!r}])"
        forces = _as_float_array(raw, what=what, frame_index=frame_index)
        if forces.shape != (len(atoms), 3):
            raise ValueError(
                f"{where}{what} has shape {forces.shape}; expected ({len(atoms)}, 3) for "
                f"{len(atoms)} atoms; check forces_key"
            )
        _check_finite(forces, what=what, frame_index=frame_index)

    virial = None
    found = _lookup(atoms, virial_key, per_atom=False)
    if found is not None:
        raw, place = found
        what = f"virial ({place}[{virial_key!r}])"
        array = _as_float_array(raw, what=what, frame_index=frame_index)
        virial = _to_3x3(array, what=what, frame_index=frame_index)
        _check_finite(virial, what=what, frame_index=frame_index)
    else:
        found = _lookup(atoms, stress_key, per_atom=False)
        if found is not None:
            raw, place = found
            what = f"stress ({place}[{stress_key!r}])"
            array = _as_float_array(raw, what=what, frame_index=frame_index)
            stress = _to_3x3(array, what=what, frame_index=frame_index)
            _check_finite(stress, what=what, frame_index=frame_index)
            virial = -stress * _volume(atoms, what=what, frame_index=frame_index)

    config_type = atoms.info.get(config_type_key)
    config_type = "default" if config_type is None else str(config_type)

    return Labels(
        energy=energy,
        forces=forces,
        virial=virial,
        config_type=config_type,
        **_read_sigmas(atoms, frame_index),
    )


def _normalise_require(require: str | Iterable[str]) -> tuple[str, ...]:
    names = (require,) if isinstance(require, str) else tuple(require)
    unknown = [n for n in names if n not in LABEL_NAMES]
    if unknown:
        raise ValueError(
            f"require={names!r}: unknown label(s) {unknown}; choose from {LABEL_NAMES}"
        )
    return names


def _labels_of_frames(
    frames: Iterable[ase.Atoms],
    frame_numbers: Iterable[int],
    require: tuple[str, ...],
    keys: dict[str, str],
) -> list[Labels]:
    out = []
    for atoms, k in zip(frames, frame_numbers):
        labels = get_labels(atoms, frame_index=k, **keys)
        for name in require:
            if getattr(labels, name) is not None:
                continue
            if name == "virial":
                looked = (
                    f"virial_key={keys.get('virial_key', 'virial')!r} or "
                    f"stress_key={keys.get('stress_key', 'stress')!r}"
                )
                fix = "pass virial_key=... or stress_key=... naming the right field"
            else:
                looked = f"{name}_key={keys.get(f'{name}_key', name)!r}"
                fix = f"pass {name}_key=... naming the right field"
            raise ValueError(
                f"frame {k}: required {name} label not found (looked for {looked}); this frame "
                f"has {_where_to_look(atoms)}. Fix: {fix}, add the {name} to this frame, or drop "
                f"{name!r} from require"
            )
        out.append(labels)
    return out


def get_all_labels(
    frames: Iterable[ase.Atoms],
    *,
    require: str | Iterable[str] = (),
    **keys: str,
) -> list[Labels]:
    """Extract and check the labels of every configuration.

    Parameters
    ----------
    frames : iterable of ase.Atoms
        The configurations; their position in ``frames`` is the frame index named in errors.
    require : iterable of {"energy", "forces", "virial"}, default ()
        Labels every configuration must have.
    **keys : str
        Key names passed on to :func:`get_labels`: ``energy_key``, ``forces_key``,
        ``virial_key``, ``stress_key``, ``config_type_key``.

    Returns
    -------
    list of Labels
        One per configuration, in order.

    Raises
    ------
    ValueError
        If a label is malformed (see :func:`get_labels`), or a required label is missing; the
        message names the frame, the key looked for, the keys that frame does have and the fix.
    """
    if "frame_index" in keys:
        raise TypeError("get_all_labels numbers the frames itself; do not pass frame_index")
    names = _normalise_require(require)
    frames = list(frames)
    return _labels_of_frames(frames, range(len(frames)), names, keys)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _frame_numbers(index: int | str | slice | None) -> tuple[Iterable[int], str]:
    """Map positions in the list read with ``index`` to frame numbers in the file, when that is
    possible without knowing the file's length; otherwise count from the first frame read and
    say so."""
    if index is None or index == ":":
        return range(10**18), ""
    if isinstance(index, int) and index >= 0:
        return [index], ""
    if isinstance(index, str):
        try:
            parts = [int(p) if p.strip() else None for p in index.split(":")]
        except ValueError:
            parts = []
        if 2 <= len(parts) <= 3:
            index = slice(*parts)
    if isinstance(index, slice):
        start, step = index.start or 0, index.step or 1
        if start >= 0 and step > 0:
            return range(start, 10**18, step), ""
    return range(10**18), f" (frame numbers count the frames selected by index={index!r})"


def read_extxyz(
    path: str | os.PathLike[str],
    index: int | str | slice = ":",
    *,
    require: str | Iterable[str] = (),
    **keys: str,
) -> list[ase.Atoms]:
    """Read an extended-XYZ file and check every configuration and its labels.

    Parameters
    ----------
    path : str or path-like
        The extxyz file (positions in Å, energies in eV, forces in eV/Å, virials in eV).
    index : int, str or slice, default ":"
        Which frames to read, as in ``ase.io.read`` (``":"`` for all, ``"10:20"``, ``-1``).
    require : iterable of {"energy", "forces", "virial"}, default ()
        Labels every configuration must have.
    **keys : str
        Key names passed on to :func:`get_labels`: ``energy_key``, ``forces_key``,
        ``virial_key``, ``stress_key``, ``config_type_key``.

    Returns
    -------
    list of ase.Atoms
        The configurations, always a list (also for an integer ``index``), with the
        calculator results ASE attached intact. Get their labels with :func:`get_all_labels`
        using the same keys.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is empty, cannot be parsed, or a configuration is invalid (see
        :func:`validate_structure`), has malformed labels (see :func:`get_labels`) or lacks a
        required label. The message starts with the path and names the frame.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; check the path (cwd is {Path.cwd()})")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the path of an extxyz file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty; expected extended-XYZ frames")
    names = _normalise_require(require)
    if "frame_index" in keys:
        raise TypeError("read_extxyz numbers the frames itself; do not pass frame_index")

    try:
        frames = ase.io.read(path, index=index, format="extxyz")
    except (ValueError, IndexError, KeyError, TypeError, OSError) as err:
        raise ValueError(
            f"{path}: could not be read as extended XYZ (index={index!r}): "
            f"{type(err).__name__}: {err}"
        ) from err
    if isinstance(frames, ase.Atoms):
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise ValueError(
            f"{path}: no frames read with index={index!r}; the file holds no extended-XYZ "
            "frames or the index selects none"
        )

    numbers, note = _frame_numbers(index)
    try:
        for atoms, k in zip(frames, numbers):
            validate_structure(atoms, frame_index=k)
        _labels_of_frames(frames, numbers, names, keys)
    except ValueError as err:
        raise ValueError(f"{path}: {err}{note}") from err
    return frames


# --------------------------------------------------------------------------------------------
# Bundled data
# --------------------------------------------------------------------------------------------


def bundled_path(name: str) -> Path:
    """Path of a data file bundled in the repository's ``data/`` folder.

    Parameters
    ----------
    name : str
        File name, e.g. ``"Si_train.xyz"``, ``"Si_test.xyz"`` or ``"ethanol_rmd17_200.xyz"``.

    Returns
    -------
    pathlib.Path
        Absolute path of the file.

    Raises
    ------
    FileNotFoundError
        If there is no such file; the message lists the bundled files. The ``data/`` folder
        sits beside the ``gapkit`` package in a source checkout (editable install); it is not
        part of a wheel.
    """
    if Path(name).name != name:
        raise ValueError(f"name must be a bare file name inside data/, got {name!r}")
    path = _DATA_DIR / name
    if not path.is_file():
        available = (
            sorted(p.name for p in _DATA_DIR.iterdir() if p.suffix == ".xyz")
            if _DATA_DIR.is_dir()
            else []
        )
        if available:
            hint = f"bundled files are {available}"
        else:
            hint = (
                f"the data folder {_DATA_DIR} is missing: bundled data come with a source "
                "checkout of gapkit (pip install -e .), not with an installed wheel"
            )
        raise FileNotFoundError(f"no bundled data file {name!r} in {_DATA_DIR}; {hint}")
    return path


def load_bundled(name: str, **kw: Any) -> list[ase.Atoms]:
    """Read a bundled extxyz file with :func:`read_extxyz`.

    Parameters
    ----------
    name : str
        File name in the repository's ``data/`` folder (see :func:`bundled_path`).
    **kw
        Passed on to :func:`read_extxyz` (``index``, ``require``, key names).

    Returns
    -------
    list of ase.Atoms
    """
    return read_extxyz(bundled_path(name), **kw)


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def composition(frames: Iterable[ase.Atoms], species: Sequence[str | int]) -> npt.NDArray[np.int64]:
    """Count the atoms of each species in each configuration.

    Parameters
    ----------
    frames : iterable of ase.Atoms
        The configurations.
    species : sequence of str or int
        Chemical symbols or atomic numbers; fixes the column order.

    Returns
    -------
    ndarray of shape (n_frames, n_species), int64
        ``counts[a, s]`` is the number of atoms of ``species[s]`` in configuration ``a`` (the
        design matrix of per-species energy offsets ``e0``).

    Raises
    ------
    ValueError
        If ``species`` has an unknown or repeated entry, or a configuration contains a species
        not in ``species`` (its energy could not be fitted by offsets over ``species``).
    """
    numbers = []
    for s in species:
        if isinstance(s, str):
            if s not in atomic_numbers:
                raise ValueError(f"unknown chemical symbol {s!r} in species")
            numbers.append(atomic_numbers[s])
        else:
            number = int(s)
            if not 0 < number < len(chemical_symbols):
                raise ValueError(f"invalid atomic number {s!r} in species")
            numbers.append(number)
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"species {list(species)} has repeated entries")
    column = {z: i for i, z in enumerate(numbers)}

    rows = []
    for k, atoms in enumerate(frames):
        z, counts = np.unique(atoms.numbers, return_counts=True)
        missing = [chemical_symbols[int(x)] for x in z if int(x) not in column]
        if missing:
            raise ValueError(
                f"frame {k}: contains species {missing} that are not in species="
                f"{[chemical_symbols[n] for n in numbers]}; add them to species"
            )
        row = np.zeros(len(numbers), dtype=np.int64)
        row[[column[int(x)] for x in z]] = counts
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(len(rows), len(numbers))


def as_frames(frames: Any, *, require: str | None = None, **read_kwargs: Any) -> list:
    """``frames`` as a list of ase.Atoms: an extended-XYZ path (read by
    :func:`read_extxyz` with ``read_kwargs``, e.g. the label keys), one Atoms, or any
    iterable of them. ``require``: the name of the caller, and an empty list raises
    ValueError ("no frames given to ...") instead of being returned."""
    if isinstance(frames, (str, Path)):
        out = read_extxyz(frames, **read_kwargs)
    elif isinstance(frames, ase.Atoms):
        out = [frames]
    else:
        out = list(frames)
    if require and not out:
        raise ValueError(f"no frames given to {require}")
    return out


def voigt_symmetrised(s: Any) -> Any:
    """The symmetric part ``(s_ab + s_ba) / 2`` of the 3 x 3 axes 1 and 2 of ``s`` (shape
    ``(n, 3, 3, ...)``, a numpy array or torch tensor) in ASE's Voigt order
    (:data:`VOIGT`: xx yy zz yz xz xy), shape ``(n, 6, ...)``: how a strain derivative
    becomes the six virial components."""
    a_idx = [a for a, _ in VOIGT]
    b_idx = [b for _, b in VOIGT]
    return 0.5 * (s[:, a_idx, b_idx] + s[:, b_idx, a_idx])

