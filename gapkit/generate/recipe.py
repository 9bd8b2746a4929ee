"""A data-generation recipe and :func:`generate_dataset`: every step, labelled by one
labeller, optionally written to extxyz."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import ase
import ase.io
import numpy as np

from ..labelling import _check_virial_possible, _fresh, check_consistent, label
from ._common import (
    SeedLike,
    _check_atoms,
    _check_count,
    _check_temperature,
    _derive_seed,
    _parent_name,
    _resolve_seed,
    _stamp,
    _strain_matrix,
)
from .md import langevin_md
from .perturb import _as_float, estimate_force_constants, rattle, strain, vacancies


@dataclass(frozen=True)
class Recipe:
    """What :func:`generate_dataset` generates. Every step can be switched off (0 or ()).

    Parameters
    ----------
    include_reference : bool, default True
        One unperturbed copy of the input (``config_type`` ``"reference"``).
    rattle_temperatures : sequence of float, default (300.0, 600.0)
        Temperatures of the equipartition rattles, K (:func:`rattle`).
    rattle_copies : int, default 5
        Rattled copies per temperature.
    rattle_amplitudes : sequence of float, default ()
        Fixed-amplitude rattles instead of (or besides) temperatures, Å per component.
    force_constant : float, dict or "estimate", default "estimate"
        For the temperature rattles (see :func:`rattle`); estimated once from the labeller.
    rattle_cell_strain : float, default 0.0
        Cell rattle of the temperature/amplitude rattles (standard deviation of the strain).
    md_temperatures : sequence of float, default (300.0, 900.0)
        Langevin MD temperatures, K (:func:`langevin_md`).
    md_samples : int, default 5
        Snapshots per MD temperature.
    md_timestep, md_friction, md_equilibration, md_interval
        As ``timestep`` (fs), ``friction`` (1/fs), ``equilibration`` and ``interval`` (steps)
        of :func:`langevin_md` (None: its defaults).
    hydrostatic, shear : sequence of float
        As in :func:`strain` (defaults (-0.02, -0.01, 0.01, 0.02) and (-0.02, 0.02)).
    strain_temperature : float, optional
        Rattle each strained frame once at this temperature, K (None: perfect strained
        lattices).
    vacancy_copies : int, default 0
        Number of vacancy frames (:func:`vacancies`); off by default because a vacancy in a
        small cell is an unphysical concentration.
    n_vacancies : int, default 1
        Vacancies per vacancy frame.
    vacancy_temperature : float or None, default 300.0
        Rattle the vacancy frames at this temperature, K (None: leave them unrattled).
    prefix : str, default ""
        Prepended to every ``config_type``.
    """

    include_reference: bool = True
    rattle_temperatures: Sequence[float] = (300.0, 600.0)
    rattle_copies: int = 5
    rattle_amplitudes: Sequence[float] = ()
    force_constant: float | Mapping[str, float] | str = "estimate"
    rattle_cell_strain: float = 0.0
    md_temperatures: Sequence[float] = (300.0, 900.0)
    md_samples: int = 5
    md_timestep: float | None = None
    md_friction: float = 0.02
    md_equilibration: int | None = None
    md_interval: int | None = None
    hydrostatic: Sequence[float] = (-0.02, -0.01, 0.01, 0.02)
    shear: Sequence[float] = (-0.02, 0.02)
    strain_temperature: float | None = None
    vacancy_copies: int = 0
    n_vacancies: int = 1
    vacancy_temperature: float | None = 300.0
    prefix: str = ""

    def __post_init__(self) -> None:
        # fail before any expensive step
        for name in ("rattle_temperatures", "md_temperatures"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            for i, t in enumerate(values):
                _check_temperature(t, f"{name}[{i}]")
        for name in ("strain_temperature", "vacancy_temperature"):
            if getattr(self, name) is not None:
                _check_temperature(getattr(self, name), name)
        for name in ("rattle_amplitudes", "hydrostatic", "shear"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for i, a in enumerate(self.rattle_amplitudes):
            if not (isinstance(a, numbers.Real) and math.isfinite(a) and a > 0):
                raise ValueError(f"rattle_amplitudes[{i}] must be > 0 Å, got {a!r}")
        for i, e in enumerate(self.hydrostatic):
            _strain_matrix(np.eye(3) * _as_float(e, f"hydrostatic[{i}]"), f"hydrostatic[{i}]")
        for i, s in enumerate(self.shear):
            eps = np.zeros((3, 3))
            eps[0, 1] = eps[1, 0] = _as_float(s, f"shear[{i}]")
            _strain_matrix(eps, f"shear[{i}]")
        for name in ("rattle_copies", "md_samples", "vacancy_copies"):
            _check_count(getattr(self, name), name, minimum=0)
        _check_count(self.n_vacancies, "n_vacancies")


def _rattle_each(frames, temperature, force_constant, base_seed) -> list:
    """One thermal rattle of each frame, keeping its config_type; seeds derived from
    ``base_seed`` and the frame's position in the list."""
    return [rattle(f, 1, temperature=temperature, force_constant=force_constant,
                   seed=_derive_seed(base_seed, str(k)), config_type=f.info["config_type"])[0]
            for k, f in enumerate(frames)]


def generate_dataset(
    atoms: ase.Atoms,
    calculator: Any,
    *,
    recipe: Recipe | None = None,
    driver: Any = None,
    seed: SeedLike = None,
    path: str | Path | None = None,
    overwrite: bool = False,
    properties: Sequence[str] | None = None,
    energy_property: str = "energy",
    progress: bool = True,
    **overrides: Any,
) -> list[ase.Atoms]:
    """Generate and label a reference data set from one structure with ONE labeller.

    Runs the steps of ``recipe`` in the order reference, rattles (by temperature, then by
    amplitude), MD, strains, vacancies; labels every frame with ``calculator`` (the MD
    snapshots too when a ``driver`` ran the MD), checks the result with
    :func:`check_consistent` and optionally writes it to extxyz.

    Parameters
    ----------
    atoms : ase.Atoms
        Starting structure (ideally relaxed with the labeller).
    calculator : ASE calculator
        The labeller: the one level of theory of every frame.
    recipe : Recipe, optional
        What to generate; default ``Recipe()``.
    driver : ASE calculator, optional
        Cheaper calculator for the MD (see :func:`langevin_md`).
    seed : int, numpy.random.Generator or None
        Root seed. Each step draws from its own child seed (derived from the root and the
        step's name, so switching one step off does not change the others); every frame
        records its step's seed in ``info["seed"]`` and the root in ``info["dataset_seed"]``.
    path : str or Path, optional
        Write the frames to this extxyz file.
    overwrite : bool, default False
        Allow replacing an existing ``path``.
    properties, energy_property, progress
        As in :func:`label`.
    **overrides
        Recipe fields to change, e.g. ``md_temperatures=(600,)``.

    Returns
    -------
    list of ase.Atoms
        The labelled frames, with provenance (module notes) in ``info``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false (checked before any work).
    ValueError
        For invalid recipe values (see :class:`Recipe` and the step functions).
    TypeError
        For an override that is not a Recipe field.
    LabellingError
        If the labeller fails on a frame.
    """
    _check_atoms(atoms)
    recipe = Recipe() if recipe is None else recipe
    if overrides:
        valid = {f.name for f in fields(Recipe)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"unknown Recipe field(s) {unknown}; valid fields are {sorted(valid)}")
        recipe = replace(recipe, **overrides)
    if path is not None:
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{path} exists; pass overwrite=True to replace it or choose another path"
            )
    _check_virial_possible(atoms, properties)
    root = _resolve_seed(seed)
    p = recipe.prefix
    frames: list[ase.Atoms] = []

    if recipe.include_reference:
        ref = _fresh(atoms)
        ref.info.update(config_type=f"{p}reference", gapkit_generate=_stamp("generate_dataset"),
                        source_index=0, parent=_parent_name(atoms))
        frames.append(ref)

    needs_k = (recipe.rattle_copies and recipe.rattle_temperatures) or (
        recipe.strain_temperature is not None and (recipe.hydrostatic or recipe.shear)) or (
        recipe.vacancy_copies and recipe.vacancy_temperature is not None)
    force_constant = recipe.force_constant
    if needs_k and isinstance(force_constant, str) and force_constant == "estimate":
        force_constant = estimate_force_constants(atoms, calculator)

    if recipe.rattle_copies:
        for t in recipe.rattle_temperatures:
            frames += rattle(atoms, recipe.rattle_copies, temperature=t,
                             force_constant=force_constant,
                             cell_strain=recipe.rattle_cell_strain,
                             seed=_derive_seed(root, f"rattle_{t!r}K"), prefix=p)
        for a in recipe.rattle_amplitudes:
            frames += rattle(atoms, recipe.rattle_copies, amplitude=a,
                             cell_strain=recipe.rattle_cell_strain,
                             seed=_derive_seed(root, f"rattle_{a!r}A"), prefix=p)

    md_frames: list[ase.Atoms] = []
    if recipe.md_samples and recipe.md_temperatures:
        md_frames = langevin_md(
            atoms, calculator, temperatures=recipe.md_temperatures, n_samples=recipe.md_samples,
            timestep=recipe.md_timestep, friction=recipe.md_friction,
            equilibration=recipe.md_equilibration, interval=recipe.md_interval, driver=driver,
            seed=_derive_seed(root, "md"), prefix=p, properties=properties,
            energy_property=energy_property, progress=progress)

    other: list[ase.Atoms] = []
    if recipe.hydrostatic or recipe.shear:
        strained = strain(atoms, hydrostatic=recipe.hydrostatic, shear=recipe.shear, prefix=p)
        if recipe.strain_temperature is not None:
            strained = _rattle_each(strained, recipe.strain_temperature, force_constant,
                                    _derive_seed(root, "strain"))
        other += strained
    if recipe.vacancy_copies:
        vac = vacancies(atoms, recipe.vacancy_copies, n_vacancies=recipe.n_vacancies,
                        seed=_derive_seed(root, "vacancy"), prefix=p)
        if recipe.vacancy_temperature is not None:
            vac = _rattle_each(vac, recipe.vacancy_temperature, force_constant,
                               _derive_seed(root, "vacancy_rattle"))
        other += vac

    n_before = len(frames)
    labelled = label(frames + other, calculator, properties=properties,
                     energy_property=energy_property, progress=progress)
    frames = labelled[:n_before] + md_frames + labelled[n_before:]
    for frame in frames:
        frame.info["dataset_seed"] = root
    check_consistent(frames)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, frames, format="extxyz")
    return frames
