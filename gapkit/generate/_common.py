"""Shared helpers of data generation: seeds, provenance stamps, argument checks,
strains and per-species tables."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import ase
import ase.io
import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .._checks import count, is_integer
from .._version import __version__

_SHEAR_AXES = {"yz": (1, 2), "xz": (0, 2), "xy": (0, 1)}

SeedLike = int | np.integer | np.random.Generator | None


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
    if not is_integer(value):  # an int, not 3.0
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return count(value, name, minimum)


def _temperature_tag(t: float) -> str:
    return f"{t:g}K"


def _parent_name(atoms: ase.Atoms) -> str:
    ct = atoms.info.get("config_type")
    return str(ct) if ct is not None else atoms.get_chemical_formula()


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
