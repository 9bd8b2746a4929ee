"""The baseline interface: results, the :class:`Baseline` base class and its one registry,
evaluation on frames and the label-minus-baseline rule; shared pair-sum helpers."""

from __future__ import annotations

import abc
import inspect
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from ..data import as_frames, validate_structure


@dataclass(eq=False)
class BaselineResult:
    """Energy, per-atom energies, forces and virial of a baseline on one configuration.

    Attributes
    ----------
    energy : float
        Total energy, eV.
    energies : ndarray of shape (n_atoms,)
        Per-atom split of the energy, eV (pair energies split half/half); sums to ``energy``.
    forces : ndarray of shape (n_atoms, 3) or None
        Forces ``-dE/dr``, eV/Å; ``None`` when not requested.
    virial : ndarray of shape (3, 3) or None
        Virial ``W = -dE/d(eps)``, eV (symmetric, positive under compression,
        ``-stress * volume``); ``None`` when not requested. For an open system this is the
        pair sum ``-sum r_ij (x) dE/dr_ij``.
    """

    energy: float
    energies: np.ndarray
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None

    def __add__(self, other: BaselineResult) -> BaselineResult:
        if not isinstance(other, BaselineResult):
            return NotImplemented

        def add(a, b):
            return None if a is None or b is None else a + b

        return BaselineResult(
            energy=self.energy + other.energy,
            energies=self.energies + other.energies,
            forces=add(self.forces, other.forces),
            virial=add(self.virial, other.virial),
        )

    @classmethod
    def zeros(cls, n_atoms: int, *, forces: bool = True, virial: bool = True) -> BaselineResult:
        """A zero result for ``n_atoms`` atoms (the neutral element of ``+``)."""
        return cls(0.0, np.zeros(n_atoms), np.zeros((n_atoms, 3)) if forces else None,
                   np.zeros((3, 3)) if virial else None)


#: Every baseline class by name: the built-ins and each user subclass of :class:`Baseline`,
#: which joins when it is defined (names starting with ``_`` stay private). What configs
#: (``{"type": name, ...}``), model files and :func:`from_dict` may name; the one answer to
#: "which baselines exist".
BASELINES: dict[str, type[Baseline]] = {}


class Baseline(abc.ABC):
    """A fixed energy model (eV) evaluated on ``ase.Atoms``.

    Subclasses implement :meth:`compute` and :meth:`get_params`; every subclass joins
    :data:`BASELINES` by class name when it is defined, so :func:`from_dict` (and configs,
    model files) can rebuild it from :meth:`to_dict`.

    Attributes
    ----------
    cutoff : float
        Interaction range, Å (for information); ``np.inf`` for long-range electrostatics.
    """

    cutoff: float = np.inf

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):
            return
        old = BASELINES.get(cls.__name__)
        if (old is not None and old.__module__.startswith("gapkit.")
                and not cls.__module__.startswith("gapkit.")):
            warnings.warn(f"the baseline class {cls.__module__}.{cls.__name__} takes the name "
                          f"of gapkit's own {cls.__name__}: configs and model files naming "
                          "it will now build yours", UserWarning, stacklevel=2)
        BASELINES[cls.__name__] = cls

    @abc.abstractmethod
    def compute(self, atoms: Atoms, *, forces: bool = True,
                virial: bool = True) -> BaselineResult:
        """Energy (eV), per-atom energies (eV), forces (eV/Å) and virial (eV) of ``atoms``."""

    def check(self, atoms: Atoms, frame_index: int | None = None) -> None:
        """Check that the baseline can be evaluated on ``atoms`` (cheap; no heavy work).

        Raises
        ------
        ValueError
            Naming the frame (when ``frame_index`` is given) and the fix.
        """
        validate_structure(atoms, frame_index=frame_index)

    @abc.abstractmethod
    def get_params(self) -> dict:
        """JSON-able constructor keyword arguments: ``type(b)(**b.get_params())`` rebuilds it."""

    def to_dict(self) -> dict:
        """``{"type": class name, "params": get_params()}`` (JSON-able)."""
        return {"type": type(self).__name__, "params": self.get_params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))


def from_dict(d: Mapping[str, Any]) -> Baseline:
    """Rebuild a baseline from :meth:`Baseline.to_dict` output (any class in
    :data:`BASELINES`, user subclasses included).

    Raises
    ------
    ValueError
        If ``d["type"]`` is not a known (concrete) baseline class.
    """
    try:
        name, params = d["type"], d.get("params", {})
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a baseline dict (need 'type' and 'params'): {d!r}") from err
    cls = BASELINES.get(name)
    if cls is None or inspect.isabstract(cls):
        known = sorted(n for n, c in BASELINES.items() if not inspect.isabstract(c))
        raise ValueError(f"unknown baseline type {name!r}; known: {known}")
    return cls(**params)


def as_baseline_list(baselines: Baseline | Iterable[Baseline]) -> list[Baseline]:
    """``baselines`` (one or several) as a checked list; TypeError naming the bad item."""
    out = [baselines] if isinstance(baselines, Baseline) else list(baselines)
    for b in out:
        if not isinstance(b, Baseline):
            raise TypeError(f"baselines must be gapkit.baselines.Baseline objects (e.g. "
                            f"CoreRepulsion(), Ewald(charges=...)), got {type(b).__name__}")
    return out


def evaluate(baselines: Baseline | Iterable[Baseline], frames: Atoms | Sequence[Atoms], *,
             forces: bool = True, virial: bool = True) -> list[BaselineResult]:
    """Sum of one or several baselines on each configuration.

    Every frame is checked (:meth:`Baseline.check`) by every baseline before any is computed,
    so a bad frame fails fast with its index in the message.

    Parameters
    ----------
    baselines : Baseline or iterable of Baseline
    frames : ase.Atoms or sequence of ase.Atoms
    forces, virial : bool
        Whether to compute forces (eV/Å) and virials (eV).

    Returns
    -------
    list of BaselineResult
        One per frame (an empty list of baselines gives zeros).
    """
    baselines = as_baseline_list(baselines)
    frames = as_frames(frames)
    for k, atoms in enumerate(frames):
        for b in baselines:
            b.check(atoms, frame_index=k)
    out = []
    for atoms in frames:
        total = BaselineResult.zeros(len(atoms), forces=forces, virial=virial)
        for b in baselines:
            total = total + b.compute(atoms, forces=forces, virial=virial)
        out.append(total)
    return out


def subtract(baselines: Baseline | Iterable[Baseline], frames: Sequence[Atoms],
             labels: Sequence) -> list:
    """``labels`` (:class:`gapkit.data.Labels`, one per frame) minus the baselines'
    energies, forces and virials: what a GAP fitted on top of the baselines learns.
    Absent labels stay absent; no baselines returns ``labels`` as they are."""
    import dataclasses

    baselines = as_baseline_list(baselines)
    if not baselines:
        return list(labels)
    results = evaluate(baselines, frames,
                       forces=any(lab.forces is not None for lab in labels),
                       virial=any(lab.virial is not None for lab in labels))
    return [dataclasses.replace(
        lab, energy=None if lab.energy is None else lab.energy - res.energy,
        forces=None if lab.forces is None else lab.forces - res.forces,
        virial=None if lab.virial is None else lab.virial - res.virial)
        for lab, res in zip(labels, results)]


def _where(frame_index: int | None) -> str:
    return "" if frame_index is None else f"frame {frame_index}: "


def _symbol(key: str | int) -> str:
    """Chemical symbol of a symbol or atomic number."""
    if isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.isdigit()):
        z = int(key)
        if not 0 < z < len(chemical_symbols):
            raise ValueError(f"invalid atomic number {key!r}")
        return chemical_symbols[z]
    if key not in atomic_numbers:
        raise ValueError(f"unknown chemical symbol {key!r}")
    return str(key)


def _pair_key(key: str | Sequence[str | int]) -> str:
    """Canonical ``"A-B"`` key (sorted by atomic number) of a species pair."""
    parts = key.split("-") if isinstance(key, str) else list(key)
    if len(parts) != 2:
        raise ValueError(f"species pair {key!r} must name two species, e.g. 'Si-C' or (14, 6)")
    a, b = sorted((_symbol(p) for p in parts), key=lambda s: atomic_numbers[s])
    return f"{a}-{b}"


def _pair_sums(n_atoms: int, i: np.ndarray, j: np.ndarray, vectors: np.ndarray,
               distances: np.ndarray, phi: np.ndarray, dphi: np.ndarray, *,
               forces: bool, virial: bool) -> BaselineResult:
    """Assemble a pair potential over a *full* neighbour list (each pair twice, weight 1/2).

    ``phi`` is the pair energy (eV) and ``dphi`` its derivative d(phi)/dr (eV/Å) at each
    listed pair; the per-atom energy of atom i is half of its pair energies.
    """
    energies = np.bincount(i, weights=0.5 * phi, minlength=n_atoms)
    f = w = None
    if forces or virial:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(distances > 0, 0.5 * dphi / distances, 0.0)
        g = scale[:, None] * vectors  # dE/dr_ij (r_ij = r_j - r_i)
        if forces:
            f = np.stack([np.bincount(i, weights=g[:, a], minlength=n_atoms)
                          - np.bincount(j, weights=g[:, a], minlength=n_atoms)
                          for a in range(3)], axis=1)
        if virial:
            w = -(g.T @ vectors)
            w = 0.5 * (w + w.T)
    return BaselineResult(float(energies.sum()), energies, f, w)


def _switch(r: np.ndarray, r_on: np.ndarray, r_off: np.ndarray):
    """C² quintic switch S(r) (1 below ``r_on``, 0 above ``r_off``) and dS/dr (1/Å).

    S = 1 - 10 x³ + 15 x⁴ - 6 x⁵ with x = (r - r_on)/(r_off - r_on) clipped to [0, 1]:
    value, first and second derivative are continuous at both ends.
    """
    width = r_off - r_on
    x = np.clip((r - r_on) / width, 0.0, 1.0)
    s = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
    ds = -30.0 * x**2 * (1.0 - x) ** 2 / width
    return s, ds
