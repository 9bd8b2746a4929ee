"""Small helpers of the data layer: frame names in messages, looking a key up in info,
arrays or the calculator, checked float arrays, degenerate cells and volumes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ase
import ase.io
import numpy as np
from ase.calculators.calculator import all_properties
from ase.calculators.singlepoint import SinglePointCalculator

# A set of periodic cell vectors is called degenerate when the volume (area, length) they span
# is below this fraction of the product of their lengths, i.e. when they are nearly parallel.
_DEGENERACY_TOL = 1e-10


# Cell vectors shorter than this (Å) count as zero.
_ZERO_LENGTH = 1e-8


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
