"""Batched neighbour lists for periodic and open structures.

This is the only module that knows about periodic images. Pairs of many
structures are concatenated into flat arrays (the layout every descriptor uses):
for pair ``p``, atom ``centers[p]`` sees atom ``neighbors[p]`` (both global atom
indices into the concatenated structures) at the vector

.. math::

    \\mathbf r_{ij} = \\mathbf r_j + \\mathbf S_{ij} \\cdot \\mathbf h - \\mathbf r_i ,

where ``h`` is the cell (rows are lattice vectors, Å) and ``S`` the integer cell
shift. Cells smaller than the cutoff are handled: one atom may then appear as a
neighbour several times (several images), including images of the centre itself.

The search itself is delegated to `vesin <https://github.com/Luthaf/vesin>`_ (a
small, well-tested C++ library that agrees pair for pair with
``ase.neighborlist.neighbor_list`` and much faster: benchmarks/README.md);
ASE's implementation is used when vesin is not importable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_DISTANCE", "NeighborList", "build_neighbor_list"]

#: Two atoms closer than this (Å) are treated as overlapping: a clear error, never numbers.
MIN_DISTANCE = 1e-2


@dataclass(frozen=True)
class NeighborList:
    """Flat neighbour list of a batch of structures (full list: both i->j and j->i).

    Attributes
    ----------
    centers, neighbors : ndarray of shape (n_pairs,)
        Global atom indices (into the concatenated structures) of the centre and of
        the neighbour; periodic images are folded onto their parent atom.
    shifts : ndarray of shape (n_pairs, 3)
        Integer cell shifts ``S`` of the neighbour image.
    vectors : ndarray of shape (n_pairs, 3)
        Pair vectors r_ij, Å.
    distances : ndarray of shape (n_pairs,)
        |r_ij|, Å.
    pair_structure : ndarray of shape (n_pairs,)
        Index of the structure each pair belongs to.
    positions : ndarray of shape (n_atoms_total, 3)
        Concatenated positions, Å.
    numbers : ndarray of shape (n_atoms_total,)
        Atomic numbers.
    atom_structure : ndarray of shape (n_atoms_total,)
        Structure index of each atom.
    atom_offsets : ndarray of shape (n_structures + 1,)
        Start of each structure's atoms in the concatenated arrays.
    cells : ndarray of shape (n_structures, 3, 3)
        Cells (rows are lattice vectors), Å.
    """

    centers: np.ndarray
    neighbors: np.ndarray
    shifts: np.ndarray
    vectors: np.ndarray
    distances: np.ndarray
    pair_structure: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    atom_structure: np.ndarray
    atom_offsets: np.ndarray
    cells: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.centers.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])


def _pairs_one(positions, cell, pbc, cutoff, backend):
    if backend == "vesin":
        import vesin

        box = cell if np.any(pbc) else np.zeros((3, 3))
        nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
        i, j, shifts = nl.compute(positions, box, [bool(p) for p in pbc], "ijS")
    else:
        from ase import Atoms
        from ase.neighborlist import neighbor_list

        atoms = Atoms(positions=positions, cell=cell, pbc=pbc)
        i, j, shifts = neighbor_list("ijS", atoms, cutoff)
    return (np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64),
            np.asarray(shifts, dtype=np.int64).reshape(-1, 3))


def _default_backend() -> str:
    try:
        import vesin  # noqa: F401

        return "vesin"
    except ImportError:  # pragma: no cover - depends on the environment
        return "ase"


def build_neighbor_list(
    frames: Sequence,
    cutoff: float,
    *,
    frame_offset: int = 0,
    backend: str | None = None,
) -> NeighborList:
    """Build the full neighbour list of several structures at once.

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Structures; each may be periodic along any subset of its axes, with any
        cell shape (a cell smaller than ``cutoff`` gives several images of an atom).
    cutoff : float
        Radial cutoff, Å. Pairs with ``r_ij < cutoff`` are listed.
    frame_offset : int
        Added to frame indices in error messages (when ``frames`` is a slice of a
        larger dataset).
    backend : {"vesin", "ase"}, optional
        Neighbour search used; vesin when installed.

    Raises
    ------
    ValueError
        Non-finite positions, a singular cell along a periodic axis, or two atoms
        closer than :data:`MIN_DISTANCE` (overlapping atoms). The message names the
        frame and the fix.
    """
    from .data import validate_structure

    if not cutoff > 0:
        raise ValueError(f"cutoff must be > 0 Å, got {cutoff!r}")
    backend = backend or _default_backend()
    if backend not in ("vesin", "ase"):
        raise ValueError(f"unknown neighbour-list backend {backend!r}; use 'vesin' or 'ase'")

    centers, neighbors, shifts, pair_structure = [], [], [], []
    positions, numbers, atom_structure, cells = [], [], [], []
    offsets = [0]
    for k, atoms in enumerate(frames):
        validate_structure(atoms, frame_index=k + frame_offset)
        pos = np.asarray(atoms.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        i, j, s = _pairs_one(pos, cell, pbc, float(cutoff), backend)
        off = offsets[-1]
        centers.append(i + off)
        neighbors.append(j + off)
        shifts.append(s)
        pair_structure.append(np.full(i.shape[0], k, dtype=np.int64))
        positions.append(pos)
        numbers.append(np.asarray(atoms.numbers, dtype=np.int64))
        atom_structure.append(np.full(len(atoms), k, dtype=np.int64))
        cells.append(cell)
        offsets.append(off + len(atoms))

    def cat(xs, shape=(0,), dtype=np.int64):
        return np.concatenate(xs) if xs else np.zeros(shape, dtype=dtype)

    centers = cat(centers)
    neighbors = cat(neighbors)
    shifts = cat(shifts, (0, 3))
    pair_structure = cat(pair_structure)
    positions = cat(positions, (0, 3), np.float64)
    cells = np.stack(cells) if cells else np.zeros((0, 3, 3))
    vectors = (positions[neighbors] - positions[centers]
               + np.einsum("pa,pab->pb", shifts.astype(np.float64), cells[pair_structure]))
    distances = np.sqrt(np.einsum("pa,pa->p", vectors, vectors))
    if distances.size and distances.min() < MIN_DISTANCE:
        p = int(np.argmin(distances))
        k = int(pair_structure[p])
        a, b = int(centers[p] - offsets[k]), int(neighbors[p] - offsets[k])
        what = (f"atom {a} overlaps with its own periodic image (the cell is degenerate)"
                if a == b else f"atoms {a} and {b} are {distances[p]:.2e} Å apart")
        raise ValueError(
            f"frame {k + frame_offset}: {what}; overlapping atoms have no defined "
            "descriptor. Remove the duplicate atom or fix the positions/cell.")
    return NeighborList(
        centers=centers, neighbors=neighbors, shifts=shifts, vectors=vectors,
        distances=distances, pair_structure=pair_structure, positions=positions,
        numbers=cat(numbers), atom_structure=cat(atom_structure),
        atom_offsets=np.asarray(offsets, dtype=np.int64), cells=cells)
