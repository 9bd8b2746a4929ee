"""Structures: the checks every frame passes (finite positions, a sound cell, no
overlapping atoms) and the composition matrix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import ase
import ase.io
import numpy as np
import numpy.typing as npt
from ase.data import atomic_numbers, chemical_symbols

from ._helpers import _cell_degenerate, _frame


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


def check_species(frames: Sequence[ase.Atoms], known: Sequence[int]) -> None:
    """ValueError naming the first frame with a species not in ``known`` (atomic
    numbers: what a model was trained on) and saying what to do."""
    known_set = {int(z) for z in known}
    for k, atoms in enumerate(frames):
        unknown = sorted(set(np.unique(atoms.numbers).tolist()) - known_set)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            raise ValueError(
                f"frame {k}: species {names} were not in the training data "
                f"({', '.join(chemical_symbols[z] for z in known)}); this model "
                "cannot predict them. Refit with data that contains them.")

