"""Perturbed copies of a structure: rattles (by temperature or amplitude, with
force-constant estimates), strains and vacancies."""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ase
import ase.io
import numpy as np
from ase import units
from ase.data import atomic_numbers, chemical_symbols

from .._checks import positive
from ..labelling import _fresh
from ._common import (
    _SHEAR_AXES,
    SeedLike,
    _apply_strain,
    _check_atoms,
    _check_count,
    _check_temperature,
    _parent_name,
    _per_atom,
    _resolve_seed,
    _species_values,
    _stamp,
    _strain_matrix,
    _temperature_tag,
)


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
    positive(delta, "delta", "Å", what="displacement")
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
