"""Small helpers shared by the descriptor, kernel and force checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

if TYPE_CHECKING:
    from gapkit.descriptors.base import DescriptorResult


_AXES = "xyz"


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
