"""Generating reference data: perturbed structures labelled by one ASE calculator.

A GAP is only as good as its training set, and the training set must come from **one level
of theory**: every energy, force and virial computed with the same method and settings
(functional, pseudopotentials, cutoff, k-point density, ...), so that the model maps one
potential energy surface rather than a patchwork. This module builds such data sets with any
ASE calculator as the *labeller*:

* :func:`rattle` -- random displacements whose size follows equipartition at a temperature
  (harmonic, independent-oscillator approximation) or a given amplitude;
* :func:`langevin_md` -- decorrelated snapshots of short Langevin MD at several temperatures,
  optionally driven by a cheaper calculator and relabelled by the labeller;
* :func:`strain` -- hydrostatic and shear strained copies;
* :func:`vacancies` -- copies with random atoms removed;
* :func:`label` -- run the labeller on every frame and store energy, forces and virial under
  gap_fit's keys;
* :func:`generate_dataset` with a :class:`Recipe` -- all of the above, labelled by the one
  labeller, optionally written to extxyz;
* :func:`check_consistent` -- verify that every frame carries the same labeller record.

Units are ASE's: energies eV, lengths Å, forces eV/Å, stress eV/Å³, virial eV
(``virial = -stress * volume``, positive under compression), temperatures K, MD time steps fs,
friction 1/fs, force constants eV/Å².

Provenance
----------
Every generated frame carries, in ``atoms.info``:

``config_type`` (str)
    ``"rattle_300K"``, ``"rattle_0.05A"``, ``"md_600K"``, ``"strain"``, ``"vacancy"`` or
    ``"reference"``, preceded by the user's ``prefix``.
``gapkit_generate`` (str)
    The function that made the frame and the gapkit version, e.g.
    ``"rattle (gapkit 0.1.0)"``.
``seed`` (int)
    The integer seed of the call that drew the frame (present on every frame drawn at
    random; deterministic :func:`strain` frames and the unperturbed ``"reference"`` frame
    have none). Frames from :func:`generate_dataset` also carry its root seed as
    ``dataset_seed``. A ``numpy.random.Generator`` or
    ``None`` passed as seed is turned into such an integer first (drawn from the generator,
    or from OS entropy), so re-running the call with the recorded seed gives the same frames.
``source_index`` (int)
    Position of the frame in the output of the call that made it.
``parent`` (str)
    The input structure's ``config_type``, or its chemical formula when it has none.
``temperature`` (float, K)
    Where a temperature applies (rattles at a temperature, MD).
``strain`` (9 floats)
    Where a strain was applied: the small-strain tensor ``eps`` flattened row-major (a
    symmetric 3x3 matrix, tensor -- not engineering -- shear components). The deformed cell is
    ``cell0 @ (I + eps).T`` (each lattice vector ``a`` becomes ``(I + eps) @ a``).

and, once labelled, ``labeller`` (the calculator's class name), ``labeller_settings`` (a JSON
string of its parameters) and ``energy_property``.

The package: :mod:`~gapkit.generate.perturb` (rattles, force constants, strains,
vacancies), :mod:`~gapkit.generate.md` (Langevin snapshots) and
:mod:`~gapkit.generate.recipe` (:class:`Recipe`, :func:`generate_dataset`); labelling lives
in :mod:`gapkit.labelling` (shared with active learning and the test helpers) and is
re-exported here.
"""

from __future__ import annotations

from ..labelling import LABELLER_KEYS as LABELLER_KEYS
from ..labelling import LabellingError, check_consistent, label, labeller_record
from .md import langevin_md
from .perturb import estimate_force_constants, rattle, strain, vacancies
from .recipe import Recipe, generate_dataset

__all__ = [
    "LabellingError",
    "Recipe",
    "check_consistent",
    "estimate_force_constants",
    "generate_dataset",
    "label",
    "labeller_record",
    "langevin_md",
    "rattle",
    "strain",
    "vacancies",
]
