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
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import ase
import ase.io
import numpy as np
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, chemical_symbols

from ._version import __version__
from .data import LABEL_NAMES, stress_to_virial

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

#: Keys of ``atoms.info`` that :func:`check_consistent` compares between frames.
LABELLER_KEYS = ("labeller", "labeller_settings", "energy_property")

# Labels and labeller records that must not travel from a parent structure to a perturbed copy.
_LABEL_INFO_KEYS = ("energy", "free_energy", "virial", "stress", "forces") + LABELLER_KEYS
_LABEL_ARRAY_KEYS = ("forces", "momenta")
_PROPERTIES = LABEL_NAMES
_SHEAR_AXES = {"yz": (1, 2), "xz": (0, 2), "xy": (0, 1)}

SeedLike = int | np.integer | np.random.Generator | None


class LabellingError(ValueError, RuntimeError):
    """The labeller failed on a frame; the message names the frame index and config_type.

    Subclasses both ``ValueError`` and ``RuntimeError``; the labeller's own exception is the
    ``__cause__``.
    """


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _version() -> str:
    return __version__


def _stamp(function: str) -> str:
    return f"{function} (gapkit {_version()})"


def _resolve_seed(seed: SeedLike, name: str = "seed") -> int:
    """An integer seed that reproduces the draw: the int itself, one drawn from a Generator,
    or one drawn from OS entropy for ``None``."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**32))
    if seed is None:
        return int(np.random.default_rng().integers(2**32))
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(
            f"{name} must be an int >= 0, a numpy Generator or None, got {seed!r}; pass e.g. "
            f"{name}=0"
        )
    if seed < 0:
        raise ValueError(f"{name} must be >= 0, got {seed}; pass a non-negative integer")
    return int(seed)


def _derive_seed(root: int, tag: str) -> int:
    """A child seed of ``root`` for the step named ``tag`` (independent of the other steps)."""
    state = np.random.SeedSequence([root, zlib.crc32(tag.encode())]).generate_state(1)
    return int(state[0])


def _check_temperature(value: Any, name: str = "temperature") -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in K, got {value!r}") from None
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(
            f"{name} must be a finite temperature > 0 K, got {value!r}; give it in kelvin"
        )
    return t


def _check_count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _temperature_tag(t: float) -> str:
    return f"{t:g}K"


def _parent_name(atoms: ase.Atoms) -> str:
    ct = atoms.info.get("config_type")
    return str(ct) if ct is not None else atoms.get_chemical_formula()


def _fresh(atoms: ase.Atoms) -> ase.Atoms:
    """A copy without calculator, labels or labeller record (they belong to the parent)."""
    out = atoms.copy()
    out.calc = None
    for key in _LABEL_INFO_KEYS:
        out.info.pop(key, None)
    for key in _LABEL_ARRAY_KEYS:
        if key in out.arrays:
            del out.arrays[key]
    return out


def _check_atoms(atoms: Any, name: str = "atoms") -> None:
    if not isinstance(atoms, ase.Atoms):
        raise ValueError(f"{name} must be an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError(f"{name} has no atoms; give a structure with at least one atom")


def _strain_matrix(value: Any, name: str) -> np.ndarray:
    """Validate one small-strain tensor (3x3 or 9 numbers, row-major)."""
    try:
        eps = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {value!r}") from None
    if eps.shape == (9,):
        eps = eps.reshape(3, 3)
    if eps.shape != (3, 3):
        raise ValueError(
            f"{name} has shape {eps.shape}; give a 3x3 strain tensor (or its 9 entries "
            "row-major)"
        )
    if not np.all(np.isfinite(eps)):
        raise ValueError(f"{name} contains NaN or inf; give finite strains")
    if np.abs(eps - eps.T).max() > 1e-12:
        raise ValueError(
            f"{name} is not symmetric; a strain tensor is symmetric (the antisymmetric part is "
            "a rotation, which changes no energy) -- give (eps + eps.T) / 2"
        )
    if np.abs(eps).max() >= 1.0:
        raise ValueError(
            f"{name} has a component of {np.abs(eps).max():g} (>= 1, i.e. >= 100%); strains "
            "are fractions (0.02 = 2%), give values well below 1"
        )
    deformation = np.eye(3) + eps
    det = float(np.linalg.det(deformation))
    smallest = float(np.linalg.svd(deformation, compute_uv=False).min())
    if det <= 0.0 or smallest < 0.1:
        raise ValueError(
            f"{name} inverts or degenerates the cell (det(I + eps) = {det:.3g}, smallest "
            f"stretch {smallest:.3g}); use smaller strains"
        )
    return eps


def _apply_strain(atoms: ase.Atoms, eps: np.ndarray) -> None:
    """Deform cell and positions in place by ``I + eps`` (positions about the origin, so
    fractional coordinates are kept; also works for a zero cell)."""
    deformation = np.eye(3) + eps
    atoms.set_cell(np.asarray(atoms.cell.array) @ deformation.T, scale_atoms=False)
    atoms.positions = atoms.positions @ deformation.T


def _species_values(atoms: ase.Atoms, value: Any, name: str) -> dict[str, float]:
    """A positive number per species of ``atoms`` from a number or a {symbol or Z: number}
    mapping."""
    symbols = sorted(set(atoms.get_chemical_symbols()))
    if isinstance(value, Mapping):
        table = {}
        for key, v in value.items():
            if isinstance(key, (int, np.integer)) and 0 < int(key) < len(chemical_symbols):
                table[chemical_symbols[int(key)]] = v
            elif isinstance(key, str) and key in atomic_numbers:
                table[key] = v
            else:
                raise ValueError(f"{name}: unknown species {key!r}; use element symbols")
        missing = [s for s in symbols if s not in table]
        if missing:
            raise ValueError(
                f"{name} has no value for species {missing}; give one for each of {symbols}"
            )
        out = {s: table[s] for s in symbols}
    else:
        out = {s: value for s in symbols}
    for s, v in out.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} for {s} must be a number, got {v!r}") from None
        if not (math.isfinite(f) and f > 0.0):
            raise ValueError(f"{name} for {s} must be finite and > 0, got {v!r}")
        out[s] = f
    return out


def _per_atom(atoms: ase.Atoms, table: Mapping[str, float]) -> np.ndarray:
    """Broadcast a per-species table to the atoms (no Python loop over atoms)."""
    unique, inverse = np.unique(atoms.numbers, return_inverse=True)
    values = np.array([table[chemical_symbols[z]] for z in unique], dtype=np.float64)
    return values[inverse]


# --------------------------------------------------------------------------------------------
# Force constants and rattling
# --------------------------------------------------------------------------------------------


def estimate_force_constants(
    atoms: ase.Atoms,
    calculator: Any,
    *,
    delta: float = 0.01,
    max_atoms_per_species: int = 4,
) -> dict[str, float]:
    """Estimate a force constant per species from the labeller's Hessian diagonal.

    For up to ``max_atoms_per_species`` atoms of each species (evenly spread over that
    species' indices), each Cartesian component is displaced by ``±delta`` and the diagonal
    Hessian element ``k = -(F+ - F-) / (2 delta)`` of that atom and component is taken from
    the central difference of its own force. The species' force constant is the mean over
    its probed atoms and components. Cost: ``6 * (atoms probed)`` labeller calls.

    Parameters
    ----------
    atoms : ase.Atoms
        The reference structure, ideally at a minimum (relaxed). Not modified.
    calculator : ase.calculators.calculator.Calculator
        The labeller (or any calculator whose curvature you trust).
    delta : float, default 0.01
        Finite-difference displacement, Å.
    max_atoms_per_species : int, default 4
        How many atoms of each species to probe.

    Returns
    -------
    dict of str to float
        Force constant per chemical symbol, eV/Å².

    Raises
    ------
    ValueError
        If an estimate is not positive (the structure is not at a minimum along that
        direction: relax it first or pass a force constant yourself).
    """
    _check_atoms(atoms)
    if not (math.isfinite(delta) and delta > 0.0):
        raise ValueError(f"delta must be a finite displacement > 0 Å, got {delta!r}")
    max_atoms_per_species = _check_count(max_atoms_per_species, "max_atoms_per_species")
    work = _fresh(atoms)
    work.calc = calculator
    base = work.positions.copy()
    out: dict[str, float] = {}
    for z in np.unique(work.numbers):
        indices = np.nonzero(work.numbers == z)[0]
        pick = indices[np.unique(np.linspace(0, len(indices) - 1, max_atoms_per_species)
                                 .round().astype(int))]
        values = []
        for i in pick:
            for axis in range(3):
                forces = []
                for sign in (1.0, -1.0):
                    positions = base.copy()
                    positions[i, axis] += sign * delta
                    work.positions = positions
                    forces.append(float(work.get_forces()[i, axis]))
                values.append(-(forces[0] - forces[1]) / (2.0 * delta))
        k = float(np.mean(values))
        symbol = chemical_symbols[int(z)]
        if not (math.isfinite(k) and k > 0.0):
            raise ValueError(
                f"estimated force constant of {symbol} is {k:.4g} eV/Å² (not > 0): the "
                "structure is not at a minimum; relax it first or pass force_constant= in "
                "eV/Å²"
            )
        out[symbol] = k
    return out


def rattle(
    atoms: ase.Atoms,
    n: int,
    *,
    temperature: float | None = None,
    amplitude: float | None = None,
    force_constant: float | Mapping[str | int, float] | str = "estimate",
    calculator: Any = None,
    cell_strain: float = 0.0,
    seed: SeedLike = None,
    prefix: str = "",
    config_type: str | None = None,
) -> list[ase.Atoms]:
    """Randomly displaced copies of a structure, sized by equipartition or by an amplitude.

    With ``temperature``, every Cartesian displacement component of an atom of species ``s``
    is drawn from ``N(0, sigma_s^2)`` with ``sigma_s^2 = k_B T / k_s``: equipartition for an
    atom in a harmonic well of force constant ``k_s`` with its neighbours held fixed (the
    independent-oscillator, Einstein picture; the true harmonic crystal fluctuates somewhat
    more, as ``<u^2> = k_B T [H^-1]_ii >= k_B T / H_ii``). With ``amplitude``, every component
    is drawn from ``N(0, amplitude^2)`` for all species.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure to rattle (positions in Å); not modified. Its labels are not copied.
    n : int
        Number of copies.
    temperature : float, optional
        Temperature, K. Give this or ``amplitude``.
    amplitude : float, optional
        Standard deviation of each displacement component, Å.
    force_constant : float, dict or "estimate", default "estimate"
        Harmonic force constant ``k``, eV/Å², used with ``temperature``: one number, a
        ``{symbol: k}`` dict, or ``"estimate"`` (the default) to estimate it per species from
        ``calculator``'s Hessian diagonal (:func:`estimate_force_constants`). The estimate is
        the default because generic numbers are off by factors of several between soft and
        stiff materials, which would mis-size the displacements; it costs ``6 * 4`` labeller
        calls per species, once.
    calculator : ASE calculator, optional
        Needed for ``force_constant="estimate"``; normally the labeller.
    cell_strain : float, default 0.0
        Also rattle the cell: a random symmetric strain whose independent components
        (``eps_ij = eps_ji``, ``i <= j``) are drawn from ``N(0, cell_strain^2)`` deforms cell
        and positions before the displacements; it is recorded in ``info["strain"]``.
        Dimensionless (0.01 = 1%).
    seed : int, numpy.random.Generator or None
        Seed of the draw; recorded as an int in ``info["seed"]``.
    prefix : str, default ""
        Prepended to ``config_type``.
    config_type : str, optional
        Replaces the default ``"rattle_<T>K"`` (or ``"rattle_<amplitude>A"``).

    Returns
    -------
    list of ase.Atoms
        ``n`` unlabelled copies with provenance in ``info`` (see the module notes) and
        ``force_constant`` (JSON ``{symbol: eV/Å²}``) or ``rattle_amplitude`` (Å).

    Raises
    ------
    ValueError
        If ``temperature`` is not finite and > 0, both or neither of ``temperature`` and
        ``amplitude`` are given, ``force_constant`` is not positive or lacks a species,
        ``"estimate"`` is asked without a calculator, or a count is invalid.
    """
    _check_atoms(atoms)
    n = _check_count(n, "n")
    if (temperature is None) == (amplitude is None):
        raise ValueError(
            "rattle needs exactly one of temperature= (K) and amplitude= (Å); give one of them"
        )
    if not (isinstance(cell_strain, numbers.Real) and math.isfinite(cell_strain)
            and 0.0 <= cell_strain < 0.2):
        raise ValueError(
            f"cell_strain must be a standard deviation in [0, 0.2), got {cell_strain!r}; "
            "0.01 means 1% strain"
        )
    info: dict[str, Any] = {}
    if temperature is not None:
        temperature = _check_temperature(temperature)
        if isinstance(force_constant, str):
            if force_constant != "estimate":
                raise ValueError(
                    f"force_constant must be a number, a dict or 'estimate', got "
                    f"{force_constant!r}"
                )
            if calculator is None:
                raise ValueError(
                    "force_constant='estimate' needs calculator= (the labeller); pass it, or "
                    "give force_constant in eV/Å²"
                )
            table = estimate_force_constants(atoms, calculator)
        else:
            table = _species_values(atoms, force_constant, "force_constant")
        sigma = np.sqrt(units.kB * temperature / _per_atom(atoms, table))
        default_type = f"rattle_{_temperature_tag(temperature)}"
        info["temperature"] = temperature
        info["force_constant"] = json.dumps(table, sort_keys=True)
    else:
        try:
            amp = float(amplitude)
        except (TypeError, ValueError):
            raise ValueError(f"amplitude must be a number in Å, got {amplitude!r}") from None
        if not (math.isfinite(amp) and amp > 0.0):
            raise ValueError(f"amplitude must be a finite displacement > 0 Å, got {amplitude!r}")
        sigma = np.full(len(atoms), amp)
        default_type = f"rattle_{amp:g}A"
        info["rattle_amplitude"] = amp

    seed_int = _resolve_seed(seed)
    rng = np.random.default_rng(seed_int)
    stamp = _stamp("rattle")
    parent = _parent_name(atoms)
    upper = np.triu_indices(3)
    out = []
    for k in range(n):
        frame = _fresh(atoms)
        if cell_strain > 0.0:
            eps = np.zeros((3, 3))
            eps[upper] = rng.normal(0.0, cell_strain, size=6)
            eps = eps + np.triu(eps, 1).T
            _apply_strain(frame, eps)
            frame.info["strain"] = eps.ravel().tolist()
        frame.positions = frame.positions + rng.standard_normal((len(frame), 3)) * sigma[:, None]
        frame.info.update(info)
        frame.info.update(
            config_type=prefix + (config_type or default_type),
            gapkit_generate=stamp,
            seed=seed_int,
            source_index=k,
            parent=parent,
        )
        out.append(frame)
    return out


# --------------------------------------------------------------------------------------------
# Molecular dynamics
# --------------------------------------------------------------------------------------------


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
    if not (isinstance(timestep, numbers.Real) and math.isfinite(timestep) and timestep > 0):
        raise ValueError(f"timestep must be a finite time > 0 fs, got {timestep!r}")
    if not (isinstance(friction, numbers.Real) and math.isfinite(friction) and friction > 0):
        raise ValueError(f"friction must be a finite rate > 0 in 1/fs, got {friction!r}")
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


# --------------------------------------------------------------------------------------------
# Strains and vacancies
# --------------------------------------------------------------------------------------------


def strain(
    atoms: ase.Atoms,
    *,
    hydrostatic: Sequence[float] = (-0.02, -0.01, 0.01, 0.02),
    shear: Sequence[float] = (-0.02, 0.02),
    shear_components: Sequence[str] = ("yz", "xz", "xy"),
    strains: Iterable[Any] = (),
    prefix: str = "",
    config_type: str | None = None,
) -> list[ase.Atoms]:
    """Hydrostatically and shear strained copies, positions scaled with the cell.

    A strain ``eps`` (small-strain tensor, symmetric) deforms the cell to
    ``cell0 @ (I + eps).T`` and the positions to ``positions0 @ (I + eps).T`` (fractional
    coordinates are kept).

    Parameters
    ----------
    atoms : ase.Atoms
        Structure to strain; not modified. A non-periodic structure is strained too (its
        positions scale about the origin) but gets no virial when labelled; a warning says so.
    hydrostatic : sequence of float, default (-0.02, -0.01, 0.01, 0.02)
        Values ``e`` of ``eps = e * I`` (linear strain; the volume scales by ``(1 + e)^3``).
    shear : sequence of float, default (-0.02, 0.02)
        Values ``s`` of the tensor shear component ``eps_ij = eps_ji = s`` (the engineering
        shear strain is ``2 s``), applied to each of ``shear_components`` in turn.
    shear_components : sequence of {"yz", "xz", "xy"}, default all three
    strains : iterable of array_like, default ()
        Further strain tensors, each 3x3 (or 9 numbers, row-major), symmetric.
    prefix : str, default ""
        Prepended to ``config_type``.
    config_type : str, optional
        Replaces the default ``"strain"``.

    Returns
    -------
    list of ase.Atoms
        One unlabelled copy per strain, in the order hydrostatic, shear (by value, then
        component), custom. ``info["strain"]`` holds ``eps`` as 9 floats (row-major),
        ``info["strain_kind"]`` is ``"hydrostatic"``, ``"shear_<ij>"`` or ``"custom"``.

    Raises
    ------
    ValueError
        If a strain is not finite, not symmetric, has a component with ``|eps_ij| >= 1``, or
        inverts or degenerates the cell (``det(I + eps) <= 0`` or a stretch below 0.1); the
        message names the argument and its entry.
    """
    _check_atoms(atoms)
    plan: list[tuple[np.ndarray, str]] = []
    for i, e in enumerate(hydrostatic):
        plan.append((_strain_matrix(np.eye(3) * _as_float(e, f"hydrostatic[{i}]"),
                                    f"hydrostatic[{i}]"), "hydrostatic"))
    unknown = [c for c in shear_components if c not in _SHEAR_AXES]
    if unknown:
        raise ValueError(
            f"shear_components {unknown} unknown; choose from {list(_SHEAR_AXES)}"
        )
    for i, s in enumerate(shear):
        value = _as_float(s, f"shear[{i}]")
        for comp in shear_components:
            a, b = _SHEAR_AXES[comp]
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = value
            plan.append((_strain_matrix(eps, f"shear[{i}] ({comp})"), f"shear_{comp}"))
    for i, eps in enumerate(strains):
        plan.append((_strain_matrix(eps, f"strains[{i}]"), "custom"))
    if plan and not atoms.pbc.all():
        warnings.warn(
            f"strain: atoms is not fully periodic (pbc={atoms.pbc.tolist()}); the strained "
            "copies get scaled positions, but label() stores no virial for them",
            UserWarning,
            stacklevel=2,
        )
    stamp = _stamp("strain")
    parent = _parent_name(atoms)
    out = []
    for k, (eps, kind) in enumerate(plan):
        frame = _fresh(atoms)
        _apply_strain(frame, eps)
        frame.info.update(
            config_type=prefix + (config_type or "strain"),
            strain=eps.ravel().tolist(),
            strain_kind=kind,
            gapkit_generate=stamp,
            source_index=k,
            parent=parent,
        )
        out.append(frame)
    return out


def _as_float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def vacancies(
    atoms: ase.Atoms,
    n: int,
    *,
    n_vacancies: int = 1,
    species: str | None = None,
    seed: SeedLike = None,
    prefix: str = "",
    config_type: str | None = None,
) -> list[ase.Atoms]:
    """Copies with randomly chosen atoms removed (unrelaxed vacancies).

    Parameters
    ----------
    atoms : ase.Atoms
        Parent structure; not modified. Use a supercell large enough that the vacancy
        concentration is physical.
    n : int
        Number of copies.
    n_vacancies : int, default 1
        Atoms removed from each copy (drawn without replacement).
    species : str, optional
        Remove only atoms of this element.
    seed : int, numpy.random.Generator or None
        Seed of the draw; recorded in ``info["seed"]``.
    prefix : str, default ""
        Prepended to ``config_type``.
    config_type : str, optional
        Replaces the default ``"vacancy"``.

    Returns
    -------
    list of ase.Atoms
        ``n`` unlabelled copies; ``info["vacancy_indices"]`` lists the removed atoms' indices
        in the parent (sorted), ``info["parent_n_atoms"]`` the parent's atom count.

    Raises
    ------
    ValueError
        If ``n_vacancies`` is < 1 or not smaller than the number of (eligible) atoms, or
        ``species`` is absent from the structure.
    """
    _check_atoms(atoms)
    n = _check_count(n, "n")
    n_vacancies = _check_count(n_vacancies, "n_vacancies")
    if species is None:
        eligible = np.arange(len(atoms))
    else:
        if species not in atomic_numbers:
            raise ValueError(f"species {species!r} is not an element symbol")
        eligible = np.nonzero(atoms.numbers == atomic_numbers[species])[0]
        if eligible.size == 0:
            raise ValueError(f"species {species!r} does not occur in atoms; pick one that does")
    if n_vacancies >= len(eligible) or n_vacancies >= len(atoms):
        raise ValueError(
            f"n_vacancies={n_vacancies} must be smaller than the {len(eligible)} eligible atoms "
            "(a structure must keep at least one atom); use a larger supercell or fewer "
            "vacancies"
        )
    seed_int = _resolve_seed(seed)
    rng = np.random.default_rng(seed_int)
    stamp = _stamp("vacancies")
    parent = _parent_name(atoms)
    out = []
    for k in range(n):
        removed = np.sort(rng.choice(eligible, size=n_vacancies, replace=False))
        keep = np.ones(len(atoms), dtype=bool)
        keep[removed] = False
        frame = _fresh(atoms)[keep]
        frame.info.update(
            config_type=prefix + (config_type or "vacancy"),
            vacancy_indices=[int(i) for i in removed],
            parent_n_atoms=len(atoms),
            gapkit_generate=stamp,
            seed=seed_int,
            source_index=k,
            parent=parent,
        )
        out.append(frame)
    return out


# --------------------------------------------------------------------------------------------
# Labelling
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """JSON fallback for calculator parameters: arrays to lists, objects to their class name
    (never a repr with a memory address, which would differ between runs)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "todict"):
        try:
            return value.todict()
        except Exception:  # any failure: fall back to the name
            pass
    return f"<{type(value).__name__}>"


def labeller_record(calculator: Any) -> tuple[str, str]:
    """The labeller's class name and a JSON string of its settings.

    The settings are ``calculator.todict(skip_default=False)`` (all parameters, defaults
    included, so a change of a code's default shows), falling back to ``todict()`` and then to
    ``calculator.parameters``; keys sorted, numpy arrays as lists, other objects as
    ``"<ClassName>"``.
    """
    settings: Any = None
    todict = getattr(calculator, "todict", None)
    if callable(todict):
        try:
            settings = todict(skip_default=False)
        except TypeError:
            try:
                settings = todict()
            except Exception:
                settings = None
        except Exception:
            settings = None
    if settings is None:
        settings = dict(getattr(calculator, "parameters", None) or {})
    return type(calculator).__name__, json.dumps(_str_keys(settings), sort_keys=True,
                                                 default=_jsonable)


def _str_keys(value: Any) -> Any:
    """``value`` with every mapping key a string (JSON allows no others; e.g. a pair
    potential keyed by species pairs ``("Cu", "Ag")`` becomes ``"('Cu', 'Ag')"``)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_str_keys(v) for v in value]
    return value


def _normalise_properties(properties: Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """(properties, virial_explicit)."""
    if properties is None:
        return _PROPERTIES, False
    if isinstance(properties, str):
        properties = (properties,)
    names = []
    for p in properties:
        name = "virial" if p == "stress" else p
        if name not in _PROPERTIES:
            raise ValueError(
                f"properties: unknown property {p!r}; choose from "
                f"{list(_PROPERTIES) + ['stress']}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("properties is empty; give at least one of energy, forces, virial")
    return tuple(names), "virial" in names


def _check_virial_possible(atoms: ase.Atoms, properties: Sequence[str] | None) -> None:
    """Fail before any MD or generation when a virial is asked of a non-periodic structure."""
    _, virial_explicit = _normalise_properties(properties)
    if virial_explicit and not atoms.pbc.all():
        raise ValueError(
            f"properties asks for a virial but atoms is not fully periodic "
            f"(pbc={atoms.pbc.tolist()}); drop 'virial' from properties (or leave "
            "properties=None) or give the structure a periodic cell"
        )


def label(
    frames: ase.Atoms | Iterable[ase.Atoms],
    calculator: Any,
    *,
    properties: Sequence[str] | None = None,
    energy_property: str = "energy",
    progress: bool = True,
    store: str = "calculator",
) -> list[ase.Atoms]:
    """Label frames with one calculator: energy, forces and virial under gap_fit's keys.

    Each frame is copied, ``calculator`` is run on the copy, and the results are stored

    * energy (eV) and forces (eV/Å) -- and the stress (eV/Å³, ASE sign) of periodic frames --
      in a :class:`~ase.calculators.singlepoint.SinglePointCalculator` attached to the frame,
      so ``atoms.get_potential_energy()`` works and ``ase.io.write`` writes them as extxyz
      ``energy``, ``forces`` and ``stress``;
    * the virial ``-stress * volume`` (eV, 3x3, positive under compression) in
      ``atoms.info["virial"]``, for fully periodic frames only;
    * the labeller record: ``info["labeller"]`` (class name), ``info["labeller_settings"]``
      (JSON string, see :func:`labeller_record`) and ``info["energy_property"]``.

    :func:`gapkit.data.get_labels` reads these with its default keys, in memory and after an
    extxyz write/read round trip (where ASE moves energy/forces/stress into a
    ``SinglePointCalculator`` again).

    Parameters
    ----------
    frames : ase.Atoms or iterable of ase.Atoms
        Frames to label; not modified (their old labels are dropped from the copies).
    calculator : ASE calculator
        The labeller; the same object (same settings) for every frame.
    properties : sequence of {"energy", "forces", "virial"}, optional
        What to compute (``"stress"`` is a synonym of ``"virial"``). Default: all three, the
        virial only for fully periodic frames. Asking for ``"virial"`` explicitly on a frame
        that is not fully periodic is an error.
    energy_property : {"energy", "free_energy"}, default "energy"
        Which calculator energy becomes the ``energy`` label. ``"energy"`` is what
        ``get_potential_energy()`` returns; ``"free_energy"`` is the Mermin free energy of
        smeared DFT, the one the forces are the derivative of (the force-consistent choice).
    progress : bool, default True
        Show a tqdm progress bar.
    store : {"calculator", "info"}, default "calculator"
        Where energy and forces go: a ``SinglePointCalculator`` (above), or, with
        ``"info"``, ``atoms.info["energy"]`` and ``atoms.arrays["forces"]`` with no
        calculator attached (the layout of an extxyz file written by gap_fit users, and
        handy in tests that then edit a label). The virial is in ``info["virial"]``
        either way; ``"info"`` stores no stress.

    Returns
    -------
    list of ase.Atoms
        The labelled copies, in order (the input frames are never modified).

    Raises
    ------
    ValueError
        For an unknown property, or ``"virial"`` asked for a frame that is not fully periodic
        (the message names the frame).
    LabellingError
        If the calculator raises on a frame; the message names the frame index, its
        config_type and the calculator, and the original exception is the cause.
    """
    from tqdm.auto import tqdm

    if isinstance(frames, ase.Atoms):
        frames = [frames]
    frames = list(frames)
    names, virial_explicit = _normalise_properties(properties)
    if energy_property not in ("energy", "free_energy"):
        raise ValueError(
            f"energy_property must be 'energy' or 'free_energy', got {energy_property!r}"
        )
    for k, frame in enumerate(frames):
        if not isinstance(frame, ase.Atoms):
            raise ValueError(f"frame {k} is a {type(frame).__name__}, not an ase.Atoms")
        if virial_explicit and not frame.pbc.all():
            raise ValueError(
                f"frame {k} (config_type {frame.info.get('config_type', 'default')!r}) is not "
                f"fully periodic (pbc={frame.pbc.tolist()}), so it has no virial; drop 'virial' "
                "from properties (or leave properties=None) or give it a periodic cell"
            )
    if store not in ("calculator", "info"):
        raise ValueError(f"store must be 'calculator' or 'info', got {store!r}")
    name, settings = labeller_record(calculator)
    out = []
    for k, frame in enumerate(tqdm(frames, desc=f"labelling with {name}",
                                   disable=not progress, leave=False)):
        atoms = _fresh(frame)
        if "momenta" in frame.arrays:  # MD velocities are provenance, not labels: keep them
            atoms.set_momenta(frame.get_momenta(), apply_constraint=False)
        periodic = bool(atoms.pbc.all())
        results: dict[str, Any] = {}
        atoms.calc = calculator
        try:
            if "energy" in names:
                results["energy"] = float(calculator.get_property(energy_property, atoms))
            if "forces" in names:
                results["forces"] = np.array(calculator.get_property("forces", atoms),
                                             dtype=np.float64)
            if "virial" in names and periodic:
                results["stress"] = np.array(calculator.get_property("stress", atoms),
                                             dtype=np.float64)
        except Exception as err:  # re-raised with the frame named
            atoms.calc = None
            raise LabellingError(
                f"frame {k} (config_type {frame.info.get('config_type', 'default')!r}): the "
                f"labeller {name} failed: {type(err).__name__}: {err}; fix or drop this frame"
            ) from err
        atoms.calc = None
        if "stress" in results:
            atoms.info["virial"] = stress_to_virial(results["stress"], atoms.get_volume())
        if store == "info":
            if "energy" in results:
                atoms.info["energy"] = results["energy"]
            if "forces" in results:
                atoms.arrays["forces"] = results["forces"]
        else:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["labeller"] = name
        atoms.info["labeller_settings"] = settings
        atoms.info["energy_property"] = energy_property
        out.append(atoms)
    return out


def check_consistent(frames: Iterable[ase.Atoms]) -> dict[str, str]:
    """Check that every frame was labelled at one level of theory.

    Compares ``info["labeller"]``, ``info["labeller_settings"]`` and
    ``info["energy_property"]`` (as written by :func:`label`) of every frame with those of
    frame 0.

    Parameters
    ----------
    frames : iterable of ase.Atoms

    Returns
    -------
    dict
        The shared record (``labeller``, ``labeller_settings``, ``energy_property``).

    Raises
    ------
    ValueError
        If there are no frames, a frame has no labeller record, or a frame's record differs
        from frame 0's; the message names the first such frame and the differing key.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("check_consistent got no frames")
    reference: dict[str, str] | None = None
    for k, atoms in enumerate(frames):
        missing = [key for key in LABELLER_KEYS if key not in atoms.info]
        ct = atoms.info.get("config_type", "default")
        if missing:
            raise ValueError(
                f"frame {k} (config_type {ct!r}) has no labeller record {missing}; label every "
                "frame with gapkit.generate.label using one calculator"
            )
        record = {key: str(atoms.info[key]) for key in LABELLER_KEYS}
        if reference is None:
            reference = record
            continue
        for key in LABELLER_KEYS:
            if record[key] != reference[key]:
                raise ValueError(
                    f"frame {k} (config_type {ct!r}) has {key}={record[key]!r} but frame 0 has "
                    f"{reference[key]!r}: the data mixes levels of theory; relabel all frames "
                    "with one calculator (gapkit.generate.label)"
                )
    assert reference is not None
    return reference


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


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
