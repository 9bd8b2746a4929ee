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

The package: :mod:`~gapkit.data.labels` (what a frame's labels are and where they are read
from), :mod:`~gapkit.data.structures` (checks of a frame, composition),
:mod:`~gapkit.data.voigt` (Voigt and virial conventions), :mod:`~gapkit.data.files`
(extended XYZ and every other ase.io format, bundled data, ``as_frames``),
:mod:`~gapkit.data.framefile` (an extxyz file read frame by frame when used).
"""

from __future__ import annotations

from .framefile import FrameFile
from .files import as_frames, bundled_path, load_bundled, read_extxyz, read_frames
from .labels import (LABEL_NAMES, SIGMA_KEYS, Labels, check_label_keys, get_all_labels,
                     get_labels)
from .structures import composition, validate_structure
from .voigt import (VOIGT, matrix_to_voigt, stress_to_virial, virial_to_stress,
                    voigt_symmetrised, voigt_to_matrix)

__all__ = [
    "FrameFile",
    "Labels",
    "as_frames",
    "check_label_keys",
    "voigt_symmetrised",
    "bundled_path",
    "composition",
    "get_all_labels",
    "get_labels",
    "load_bundled",
    "read_extxyz",
    "read_frames",
    "stress_to_virial",
    "validate_structure",
    "virial_to_stress",
    "voigt_to_matrix",
    "matrix_to_voigt",
    "VOIGT",
    "LABEL_NAMES",
    "SIGMA_KEYS",
]
