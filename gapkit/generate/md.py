"""Decorrelated snapshots of short Langevin molecular dynamics."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import ase
import ase.io
import numpy as np
from ase import units

from .._checks import positive
from ..labelling import _check_virial_possible, _fresh, label
from ._common import (
    SeedLike,
    _check_atoms,
    _check_count,
    _check_temperature,
    _parent_name,
    _resolve_seed,
    _stamp,
    _temperature_tag,
)


def _default_timestep(atoms: ase.Atoms) -> float:
    return 0.5 if np.any(atoms.numbers == 1) else 2.0


def langevin_md(
    atoms: ase.Atoms,
    calculator: Any,
    *,
    temperatures: Sequence[float],
    n_samples: int,
    timestep: float | None = None,
    friction: float = 0.02,
    equilibration: int | None = None,
    interval: int | None = None,
    driver: Any = None,
    seed: SeedLike = None,
    prefix: str = "",
    properties: Sequence[str] | None = None,
    energy_property: str = "energy",
    progress: bool = True,
) -> list[ase.Atoms]:
    """Decorrelated snapshots of Langevin MD at several temperatures, labelled by one labeller.

    For each temperature an independent trajectory starts from ``atoms`` with
    Maxwell-Boltzmann velocities (drawn with the seeded generator), runs ``equilibration`` steps of
    :class:`ase.md.langevin.Langevin` (all ``3N`` degrees of freedom thermostatted, no
    centre-of-mass constraint), then keeps one snapshot every ``interval`` steps until it has
    ``n_samples``. The snapshots are then labelled by ``calculator`` with :func:`label`, so
    every frame has the labeller's level of theory even when a cheaper ``driver`` ran the MD.

    Parameters
    ----------
    atoms : ase.Atoms
        Starting structure; not modified.
    calculator : ASE calculator
        The labeller; it also drives the MD unless ``driver`` is given.
    temperatures : sequence of float
        Thermostat temperatures, K.
    n_samples : int
        Snapshots kept per temperature.
    timestep : float, optional
        MD time step, fs. Default 0.5 fs if the structure contains hydrogen, else 2 fs.
    friction : float, default 0.02
        Langevin friction ``gamma``, 1/fs (0.02 fs⁻¹ = 20 ps⁻¹): strong enough to
        equilibrate and decorrelate in a few hundred fs, which is all sampling needs; the
        dynamics itself is not used.
    equilibration : int, optional
        Steps discarded before the first sample per temperature. Default ``5 * interval``.
    interval : int, optional
        Steps between samples. Default ``ceil(2 / (friction * timestep))``: the envelope of
        the velocity (and position) autocorrelation of an underdamped Langevin oscillator
        decays as ``exp(-gamma t / 2)``, so successive samples are correlated by about
        ``1/e`` at most (less where anharmonic dephasing helps). 50 steps = 100 fs with the
        defaults.
    driver : ASE calculator, optional
        A cheaper calculator that runs the MD; the samples are relabelled by
        ``calculator``. Recorded as ``info["md_driver"]`` (class name).
    seed : int, numpy.random.Generator or None
        Seed of velocities and thermostat noise; recorded in ``info["seed"]``. Temperature
        number ``i`` uses the generator ``default_rng([seed, i])``.
    prefix : str, default ""
        Prepended to ``config_type`` (``"md_<T>K"``).
    properties, energy_property, progress
        Passed to :func:`label`; ``progress`` also shows a bar over the MD samples.

    Returns
    -------
    list of ase.Atoms
        ``len(temperatures) * n_samples`` labelled frames, ordered by temperature, with their
        MD momenta (``atoms.arrays["momenta"]``, amu·Å/(ASE time)), ``temperature`` (the
        target, K), ``md_step``, ``md_timestep`` (fs) and ``md_friction`` (1/fs) in ``info``.

    Raises
    ------
    ValueError
        For a temperature that is not finite and > 0, or an invalid count, time step or
        friction. :class:`LabellingError` if the labeller fails on a snapshot.
    """
    from ase.md.langevin import Langevin
    from tqdm.auto import tqdm

    try:  # ASE >= 3.29; MaxwellBoltzmannDistribution is deprecated there
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # pragma: no cover - older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        def thermalize_momenta(atoms, temperature_K, *, rng=None):
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)

    _check_atoms(atoms)
    if isinstance(temperatures, (numbers.Real, str)):
        temperatures = [temperatures]
    temps = [_check_temperature(t, f"temperatures[{i}]") for i, t in enumerate(temperatures)]
    if not temps:
        raise ValueError("temperatures is empty; give at least one temperature in K")
    n_samples = _check_count(n_samples, "n_samples")
    _check_virial_possible(atoms, properties)
    timestep = _default_timestep(atoms) if timestep is None else timestep
    timestep = positive(timestep, "timestep", "fs", what="time")
    friction = positive(friction, "friction", "in 1/fs", what="rate")
    if interval is None:
        interval = max(1, math.ceil(2.0 / (friction * timestep)))
    interval = _check_count(interval, "interval")
    if equilibration is None:
        equilibration = 5 * interval
    equilibration = _check_count(equilibration, "equilibration", minimum=0)
    drive = calculator if driver is None else driver

    seed_int = _resolve_seed(seed)
    stamp = _stamp("langevin_md")
    parent = _parent_name(atoms)
    frames = []
    bar = tqdm(total=len(temps) * n_samples, desc="Langevin MD samples", disable=not progress,
               leave=False)
    try:
        for i, t in enumerate(temps):
            rng = np.random.default_rng([seed_int, i])
            md_atoms = _fresh(atoms)
            md_atoms.calc = drive
            thermalize_momenta(md_atoms, t, rng=rng)
            dyn = Langevin(md_atoms, timestep * units.fs, temperature_K=t,
                           friction=friction / units.fs, fixcm=False, rng=rng)
            if equilibration:
                dyn.run(equilibration)
            for s in range(n_samples):
                dyn.run(interval)
                snap = md_atoms.copy()
                snap.calc = None
                snap.info.update(
                    config_type=f"{prefix}md_{_temperature_tag(t)}",
                    temperature=t,
                    md_step=equilibration + (s + 1) * interval,
                    md_timestep=float(timestep),
                    md_friction=float(friction),
                    gapkit_generate=stamp,
                    seed=seed_int,
                    source_index=len(frames),
                    parent=parent,
                )
                if driver is not None:
                    snap.info["md_driver"] = type(driver).__name__
                frames.append(snap)
                bar.update()
    finally:
        bar.close()
    return label(frames, calculator, properties=properties, energy_property=energy_property,
                 progress=progress)
