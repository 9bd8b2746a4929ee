"""Physics baselines that a GAP is fitted on top of.

A *baseline* is a fixed, physically motivated energy model whose energy, forces and virial
are subtracted from the reference labels before the GP is fitted, and added back at
prediction time. The GP then only learns the (short-ranged, smooth) remainder. Typical
choices:

* :class:`CoreRepulsion` — a screened nuclear (ZBL) or ``A/r^12`` repulsion that keeps atoms
  apart at distances never seen in the training data;
* :class:`Ewald` — fixed point charges in a periodic cell (the long-range electrostatics a
  local model cannot represent); :class:`Coulomb` is the same for open (non-periodic)
  systems;
* :class:`LennardJones` — a simple pair potential, which can also be *fitted* to reference
  data (:meth:`LennardJones.two_point_fit`, :meth:`LennardJones.fit`).

Units: energies eV, lengths Å, forces eV/Å, charges in units of the elementary charge e,
virials eV. The virial is :math:`W_{ab} = -\\partial E / \\partial \\epsilon_{ab}` for the
homogeneous deformation ``r -> (1 + eps) r`` of positions (and cell), i.e. for pair terms
:math:`W = -\\sum_{\\rm pairs} \\mathbf r_{ij} \\otimes \\partial E/\\partial \\mathbf r_{ij}`;
it is positive under compression and equals ``-stress * volume`` with ASE's stress sign.
For open systems the same sum is returned (it matches finite differences of the deformation
of the positions alone).

Everything is vectorised over the neighbour list (:func:`gapkit.neighbors.build_neighbor_list`,
a full list with periodic images, each unordered pair seen twice and weighted 1/2) or over
the k-vectors of the reciprocal sum; float64 throughout.
"""

from __future__ import annotations

import abc
import inspect
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers, chemical_symbols, covalent_radii
from scipy.special import erfc

from .data import as_frames, get_all_labels, validate_structure, virial_to_stress
from .neighbors import MIN_DISTANCE, build_neighbor_list

__all__ = [
    "subtract",
    "BASELINES",
    "COULOMB_CONSTANT",
    "Baseline",
    "BaselineCalculator",
    "BaselineResult",
    "CoreRepulsion",
    "Coulomb",
    "Ewald",
    "LennardJones",
    "LennardJonesFit",
    "as_baseline_list",
    "evaluate",
    "from_dict",
    "zbl_screening",
]

#: e²/(4πε0) in eV·Å (CODATA 2018: 14.3996454784...).
COULOMB_CONSTANT = 14.399645

# Universal ZBL screening function (Ziegler, Biersack & Littmark, "The Stopping and Range of
# Ions in Solids", Pergamon 1985): Phi(x) = sum_k c_k exp(-d_k x), x = r / a.
_ZBL_C = np.array([0.18175, 0.50986, 0.28022, 0.02817])
_ZBL_D = np.array([3.19980, 0.94229, 0.40290, 0.20162])
#: ZBL universal screening length prefactor, Å (0.8854 Bohr radii).
_ZBL_A0 = 0.46850

# --------------------------------------------------------------------------------------------
# Results and the base class
# --------------------------------------------------------------------------------------------


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


class Baseline(abc.ABC):
    """A fixed energy model (eV) evaluated on ``ase.Atoms``.

    Subclasses implement :meth:`compute` and :meth:`get_params`; :func:`from_dict` finds
    every concrete subclass by class name, so it can rebuild them from :meth:`to_dict`.

    Attributes
    ----------
    cutoff : float
        Interaction range, Å (for information); ``np.inf`` for long-range electrostatics.
    """

    cutoff: float = np.inf

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
    """Rebuild a baseline from :meth:`Baseline.to_dict` output.

    Raises
    ------
    ValueError
        If ``d["type"]`` is not a known baseline class.
    """
    try:
        name, params = d["type"], d.get("params", {})
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a baseline dict (need 'type' and 'params'): {d!r}") from err
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown baseline type {name!r}; known: {sorted(registry)}")
    return registry[name](**params)


def _registry() -> dict[str, type[Baseline]]:
    """Concrete Baseline subclasses (defined anywhere) by class name."""
    out: dict[str, type[Baseline]] = {}
    stack = list(Baseline.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not inspect.isabstract(cls):
            out[cls.__name__] = cls
    return out


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


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


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


def zbl_screening(x: np.ndarray | float):
    """Universal ZBL screening function Φ(x) and dΦ/dx, x = r/a (dimensionless).

    Φ(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x}
    + 0.02817 e^{-0.20162 x} (Ziegler, Biersack & Littmark 1985).
    """
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.multiply.outer(x, _ZBL_D))
    return e @ _ZBL_C, -(e @ (_ZBL_C * _ZBL_D))


# --------------------------------------------------------------------------------------------
# Core repulsion
# --------------------------------------------------------------------------------------------


class CoreRepulsion(Baseline):
    """Short-range pairwise repulsion with a smooth C² cutoff.

    E = Σ_{i<j} φ(r_ij) S(r_ij), with S the quintic switch
    S = 1 − 10x³ + 15x⁴ − 6x⁵, x = (r − r_on)/w clipped to [0, 1], r_on = cutoff − w:
    energy, force and force derivative all go continuously to zero at the cutoff.

    Parameters
    ----------
    kind : {"zbl", "r12"}, default "zbl"
        ``"zbl"``: the universal Ziegler–Biersack–Littmark screened nuclear repulsion
        φ(r) = k_e Z_i Z_j / r · Φ(r/a), a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),
        k_e = e²/(4πε0) = 14.399645 eV·Å, Φ the four-exponential universal screening function
        (J. F. Ziegler, J. P. Biersack, U. Littmark, *The Stopping and Range of Ions in
        Solids*, Pergamon 1985). ``"r12"``: φ(r) = A / r^12.
    cutoff : float or "covalent", default "covalent"
        Outer cutoff, Å. ``"covalent"`` chooses it per species pair as
        ``covalent_factor * (r_cov_i + r_cov_j)`` (ASE's Cordero 2008 covalent radii), i.e.
        well inside the shortest bond the pair forms: with the default factor 0.75 this is
        1.67 Å for Si–Si (bond 2.35 Å), 1.14 Å for C–C (C≡C 1.20 Å), 0.80 Å for C–H
        (1.09 Å), so the baseline is *exactly zero* at physical bond lengths and only acts
        at the close approaches a GAP never sees in its training data. (A plain ZBL is not
        small at bond lengths: ~3 eV per C–C bond at 1.54 Å.)
    cutoff_width : float, optional
        Width w of the switch, Å. Default: a quarter of each pair's cutoff (0.5 Å for a
        2 Å cutoff). Clipped to the cutoff.
    A : float or dict, optional
        For ``kind="r12"`` (required): prefactor in eV·Å¹², one number or a dict keyed by
        species pair (``"Si-C"``, ``("Si", "C")`` or ``(14, 6)``).
    species : sequence of str or int, optional
        The species this baseline is meant for; :meth:`check` rejects frames with others.
        Also fixes the ``cutoff`` attribute (largest pair cutoff) for ``"covalent"``.
    covalent_factor : float, default 0.75
        Factor of the covalent-radius rule (only with ``cutoff="covalent"``).

    Attributes
    ----------
    cutoff : float
        Largest pair cutoff, Å (over ``species``, or over all elements when not given).
    """

    def __init__(self, kind: str = "zbl", cutoff: float | str = "covalent",
                 cutoff_width: float | None = None, A: float | Mapping | None = None,
                 species: Sequence[str | int] | None = None, covalent_factor: float = 0.75):
        if kind not in ("zbl", "r12"):
            raise ValueError(f"kind must be 'zbl' or 'r12', got {kind!r}")
        self.kind = kind
        if isinstance(cutoff, str):
            if cutoff != "covalent":
                raise ValueError(f"cutoff must be a distance in Å or 'covalent', got {cutoff!r}")
            self._cutoff_rule: float | str = "covalent"
        else:
            if not (math.isfinite(float(cutoff)) and float(cutoff) > 0):
                raise ValueError(f"cutoff must be a positive distance in Å, got {cutoff!r}")
            self._cutoff_rule = float(cutoff)
        if cutoff_width is not None and not float(cutoff_width) > 0:
            raise ValueError(f"cutoff_width must be > 0 Å, got {cutoff_width!r}")
        self.cutoff_width = None if cutoff_width is None else float(cutoff_width)
        if not float(covalent_factor) > 0:
            raise ValueError(f"covalent_factor must be > 0, got {covalent_factor!r}")
        self.covalent_factor = float(covalent_factor)
        self.species = None if species is None else [_symbol(s) for s in species]

        self.A: float | dict[str, float] | None
        if kind == "r12":
            if A is None:
                raise ValueError("kind='r12' needs A (eV·Å^12): a number or a dict keyed by "
                                 "species pair such as {'Si-Si': 1e3}")
            if isinstance(A, Mapping):
                self.A = {_pair_key(k): float(v) for k, v in A.items()}
            else:
                self.A = float(A)
        elif A is not None:
            raise ValueError("A is only used with kind='r12' (ZBL takes Z from the atoms)")
        else:
            self.A = None

        if self._cutoff_rule == "covalent":
            zs = ([atomic_numbers[s] for s in self.species] if self.species
                  else range(1, len(covalent_radii)))
            self.cutoff = 2.0 * self.covalent_factor * max(covalent_radii[z] for z in zs)
        else:
            self.cutoff = float(self._cutoff_rule)

    def get_params(self) -> dict:
        return {"kind": self.kind, "cutoff": self._cutoff_rule,
                "cutoff_width": self.cutoff_width,
                "A": dict(self.A) if isinstance(self.A, dict) else self.A,
                "species": None if self.species is None else list(self.species),
                "covalent_factor": self.covalent_factor}

    def check(self, atoms: Atoms, frame_index: int | None = None) -> None:
        validate_structure(atoms, frame_index=frame_index)
        present = sorted({chemical_symbols[z] for z in np.unique(atoms.numbers)},
                         key=lambda s: atomic_numbers[s])
        if self.species is not None:
            extra = [s for s in present if s not in self.species]
            if extra:
                raise ValueError(
                    f"{_where(frame_index)}species {extra} are not in this CoreRepulsion's "
                    f"species={self.species}; add them to species (or drop the frame)")
        if isinstance(self.A, dict):
            need = {_pair_key((a, b)) for k, a in enumerate(present) for b in present[k:]}
            missing = sorted(need - set(self.A))
            if missing:
                raise ValueError(
                    f"{_where(frame_index)}no r12 prefactor A for species pair(s) {missing}; "
                    "add them to the A dict (eV·Å^12)")

    def _tables(self, uniq: np.ndarray):
        """Per species-pair tables (n_s, n_s): cutoff, switch start, and the pair law."""
        if self._cutoff_rule == "covalent":
            rc = self.covalent_factor * (covalent_radii[uniq][:, None] + covalent_radii[uniq])
        else:
            rc = np.full((uniq.size, uniq.size), float(self._cutoff_rule))
        width = 0.25 * rc if self.cutoff_width is None else np.minimum(self.cutoff_width, rc)
        if self.kind == "zbl":
            zz = uniq[:, None].astype(np.float64) * uniq
            zp = uniq.astype(np.float64) ** 0.23
            a = _ZBL_A0 / (zp[:, None] + zp)
            law = (COULOMB_CONSTANT * zz, a)
        elif isinstance(self.A, dict):
            sym = [chemical_symbols[z] for z in uniq]
            law = (np.array([[self.A[_pair_key((p, q))] for q in sym] for p in sym]),)
        else:
            law = (np.full((uniq.size, uniq.size), self.A),)
        return rc, rc - width, law

    def _phi(self, r: np.ndarray, law: tuple[np.ndarray, ...]):
        if self.kind == "zbl":
            pref, a = law
            x = r / a
            s, ds = zbl_screening(x)
            phi = pref * s / r
            dphi = pref * (ds / (a * r) - s / r**2)
        else:
            (A,) = law
            phi = A / r**12
            dphi = -12.0 * phi / r
        return phi, dphi

    def pair_energy(self, r: np.ndarray | float, species_i: str | int,
                    species_j: str | int) -> np.ndarray:
        """Pair energy φ(r)·S(r), eV, of one species pair at distances ``r`` (Å)."""
        uniq = np.unique([atomic_numbers[_symbol(species_i)], atomic_numbers[_symbol(species_j)]])
        rc, r_on, law = self._tables(uniq)
        a, b = (np.searchsorted(uniq, atomic_numbers[_symbol(s)]) for s in (species_i, species_j))
        r = np.asarray(r, dtype=np.float64)
        phi, _ = self._phi(r, tuple(t[a, b] for t in law))
        s, _ = _switch(r, r_on[a, b], rc[a, b])
        return np.where(r < rc[a, b], phi * s, 0.0)

    def compute(self, atoms: Atoms, *, forces: bool = True,
                virial: bool = True) -> BaselineResult:
        self.check(atoms)
        numbers = np.asarray(atoms.numbers)
        uniq, idx = np.unique(numbers, return_inverse=True)
        rc, r_on, law = self._tables(uniq)
        nl = build_neighbor_list([atoms], float(rc.max()))
        i, j = nl.centers, nl.neighbors
        si, sj = idx[i], idx[j]
        r = nl.distances
        keep = r < rc[si, sj]
        i, j, si, sj, r, vec = i[keep], j[keep], si[keep], sj[keep], r[keep], nl.vectors[keep]
        phi, dphi = self._phi(r, tuple(t[si, sj] for t in law))
        s, ds = _switch(r, r_on[si, sj], rc[si, sj])
        return _pair_sums(len(atoms), i, j, vec, r, phi * s, dphi * s + phi * ds,
                          forces=forces, virial=virial)


# --------------------------------------------------------------------------------------------
# Lennard-Jones
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LennardJonesFit:
    """Result of :meth:`LennardJones.fit`; unpacks as ``potential, offset = fit``.

    Attributes
    ----------
    potential : LennardJones
        The fitted potential.
    offset : float or dict or None
        Energy offset, eV, with E_ref ≈ E_model + offset (a float; a dict species -> eV per
        atom with ``offset="per_species"``; ``None`` when no frame had an energy). This is
        −b in the loss Σ w_E (E_model − E_ref − b)².
    energy_rmse : float or None
        RMSE of the fitted energies (offset included), eV.
    force_rmse : float or None
        RMSE of the fitted force components, eV/Å.
    n_energies, n_force_components : int
        Number of energy and force observations used.
    """

    potential: LennardJones
    offset: float | dict[str, float] | None
    energy_rmse: float | None
    force_rmse: float | None
    n_energies: int
    n_force_components: int

    def __iter__(self):
        return iter((self.potential, self.offset))


class LennardJones(Baseline):
    """Lennard-Jones pair potential U(r) = A/r¹² − B/r⁶ between all atoms.

    Parameters
    ----------
    A : float
        Repulsion prefactor, eV·Å¹² (= 4εσ¹²).
    B : float
        Dispersion prefactor, eV·Å⁶ (= 4εσ⁶).
    cutoff : float, optional
        Cutoff, Å. Default 3σ with σ = (A/B)^{1/6} (needs A, B > 0), as ASE's
        ``LennardJones``.
    shift : bool, default True
        Shift the pair energy by −U(cutoff) so that it is continuous at the cutoff. The force
        still jumps there by −U'(cutoff) (≈ 0.5% of the well's largest force at 3σ).
    """

    def __init__(self, A: float, B: float, cutoff: float | None = None, shift: bool = True):
        self.A, self.B = float(A), float(B)
        if not (math.isfinite(self.A) and math.isfinite(self.B)):
            raise ValueError(f"A and B must be finite, got A={A!r}, B={B!r}")
        self._cutoff_param = None if cutoff is None else float(cutoff)
        if cutoff is None:
            if not (self.A > 0 and self.B > 0):
                raise ValueError(f"the default cutoff 3σ needs A > 0 and B > 0 (got A={A}, "
                                 f"B={B}); pass cutoff=... in Å")
            self.cutoff = 3.0 * self.sigma
        else:
            if not float(cutoff) > 0:
                raise ValueError(f"cutoff must be > 0 Å, got {cutoff!r}")
            self.cutoff = float(cutoff)
        self.shift = bool(shift)

    @classmethod
    def from_epsilon_sigma(cls, epsilon: float, sigma: float, cutoff: float | None = None,
                           shift: bool = True) -> LennardJones:
        """From the well depth ε (eV) and the zero-crossing distance σ (Å):
        A = 4εσ¹², B = 4εσ⁶."""
        return cls(4.0 * epsilon * sigma**12, 4.0 * epsilon * sigma**6, cutoff=cutoff,
                   shift=shift)

    @property
    def sigma(self) -> float:
        """Zero crossing σ = (A/B)^{1/6}, Å."""
        return (self.A / self.B) ** (1.0 / 6.0)

    @property
    def epsilon(self) -> float:
        """Well depth ε = B²/(4A), eV."""
        return self.B**2 / (4.0 * self.A)

    @property
    def r_min(self) -> float:
        """Position of the minimum 2^{1/6} σ = (2A/B)^{1/6}, Å."""
        return (2.0 * self.A / self.B) ** (1.0 / 6.0)

    def get_params(self) -> dict:
        return {"A": self.A, "B": self.B, "cutoff": self._cutoff_param, "shift": self.shift}

    def pair_energy(self, r: np.ndarray | float) -> np.ndarray:
        """Bare pair energy A/r¹² − B/r⁶, eV (no cutoff, no shift), at ``r`` in Å."""
        r = np.asarray(r, dtype=np.float64)
        return self.A / r**12 - self.B / r**6

    def pair_force(self, r: np.ndarray | float) -> np.ndarray:
        """Bare pair force −dU/dr = 12A/r¹³ − 6B/r⁷, eV/Å (positive = repulsive)."""
        r = np.asarray(r, dtype=np.float64)
        return 12.0 * self.A / r**13 - 6.0 * self.B / r**7

    @staticmethod
    def _basis(atoms: Atoms, cutoff: float, shift: bool, *, forces: bool, virial: bool):
        """The r^-12 and r^-6 pair sums (unit prefactors) as two BaselineResults."""
        nl = build_neighbor_list([atoms], cutoff)
        i, j, vec, r = nl.centers, nl.neighbors, nl.vectors, nl.distances
        out = []
        for p in (12, 6):
            phi = r**-p - (cutoff**-p if shift else 0.0)
            out.append(_pair_sums(len(atoms), i, j, vec, r, phi, -p * r ** (-p - 1),
                                  forces=forces, virial=virial))
        return out

    def compute(self, atoms: Atoms, *, forces: bool = True,
                virial: bool = True) -> BaselineResult:
        self.check(atoms)
        nl = build_neighbor_list([atoms], self.cutoff)
        r = nl.distances
        phi = self.pair_energy(r)
        if self.shift:
            phi = phi - float(self.pair_energy(self.cutoff))
        return _pair_sums(len(atoms), nl.centers, nl.neighbors, nl.vectors, r, phi,
                          -self.pair_force(r), forces=forces, virial=virial)

    @classmethod
    def two_point_fit(cls, r0: float, energy: float, force: float, *,
                      cutoff: float | None = None, shift: bool = True) -> LennardJones:
        """A and B from the energy and force of a dimer at one distance (exact, closed form).

        Solves U(r0) = U0 and F(r0) = −dU/dr|r0 = F0 for U = A/r¹² − B/r⁶:

        A = r0¹² (F0 r0 − 6 U0) / 6,   B = r0⁶ (F0 r0 − 12 U0) / 6.

        Parameters
        ----------
        r0 : float
            Separation, Å.
        energy : float
            Dimer energy U0 at r0, eV (relative to separated atoms: U → 0 at infinity).
        force : float
            F0 = −dU/dr at r0, eV/Å: the force along the separation coordinate, *positive
            when repulsive* (pushing the atoms apart, r0 inside the minimum) and negative
            when attractive. In Cartesian terms it is the force on the second atom projected
            on the unit vector from the first to the second.
        cutoff, shift
            Passed on to the constructor (the fit itself uses the bare, untruncated form).

        Raises
        ------
        ValueError
            If the solution has A ≤ 0 (F0 r0 ≤ 6 U0: no repulsive core, the atoms would
            collapse) or B ≤ 0 (F0 r0 ≤ 12 U0: no attraction). Two numbers always determine
            two parameters, but only data consistent with a 12-6 shape give positive ones.
        """
        r0, u0, f0 = float(r0), float(energy), float(force)
        if not r0 > 0:
            raise ValueError(f"r0 must be a positive distance in Å, got {r0}")
        A = r0**12 * (f0 * r0 - 6.0 * u0) / 6.0
        B = r0**6 * (f0 * r0 - 12.0 * u0) / 6.0
        if not (A > 0 and B > 0):
            raise ValueError(
                f"two-point fit at r0={r0} Å, U0={u0} eV, F0={f0} eV/Å gives A={A:.6g} "
                f"eV·Å^12, B={B:.6g} eV·Å^6; a Lennard-Jones potential needs A > 0 (requires "
                f"F0·r0 > 6·U0) and B > 0 (requires F0·r0 > 12·U0). Check the sign of the "
                "force (F0 = -dU/dr, positive = repulsive), that U0 is measured from the "
                "separated atoms, and that r0 is a distance where the 12-6 form can apply")
        return cls(A, B, cutoff=cutoff, shift=shift)

    @classmethod
    def fit(cls, frames: Sequence[Atoms], *, cutoff: float, energy_weight: float = 1.0,
            force_weight: float = 1.0, shift: bool = True, offset: str = "constant",
            energy_key: str = "energy", forces_key: str = "forces") -> LennardJonesFit:
        """Force matching with an energy offset: exact linear least squares in (A, B, b).

        Minimises L = Σ_frames [ w_E (E_model − E_ref − b)² + w_F Σ_atoms |F_model − F_ref|² ].
        E and F are linear in A and B (E = A·Σ r⁻¹² − B·Σ r⁻⁶, likewise the forces), so L is a
        linear least-squares problem in (A, B, b), solved exactly (SVD, columns scaled); no
        iterative optimiser. Frames without an energy label contribute forces only, frames
        without forces contribute their energy only.

        Parameters
        ----------
        frames : sequence of ase.Atoms
            Labelled configurations (read with :func:`gapkit.data.get_labels`).
        cutoff : float
            Pair cutoff of the fitted potential, Å.
        energy_weight, force_weight : float
            w_E (1/eV²) and w_F (1/(eV/Å)²). Their ratio trades energy against force errors.
        shift : bool, default True
            Fit (and return) the shifted potential (pair energy zero at the cutoff).
        offset : {"constant", "per_species"}, default "constant"
            One offset for the data set (the loss above), or one per species (b = Σ_s n_s e_s,
            the usual per-atom reference energies; needs frames of varied composition or size).
        energy_key, forces_key : str
            Label keys, as in :mod:`gapkit.data`.

        Returns
        -------
        LennardJonesFit
            ``potential, offset = LennardJones.fit(...)``; ``offset`` = −b, i.e.
            E_ref ≈ E_model + offset.

        Raises
        ------
        ValueError
            No labels, nonpositive weights, or data that do not determine A, B and the offset.
        """
        if offset not in ("constant", "per_species"):
            raise ValueError(f"offset must be 'constant' or 'per_species', got {offset!r}")
        if not (energy_weight >= 0 and force_weight >= 0 and energy_weight + force_weight > 0):
            raise ValueError("energy_weight and force_weight must be >= 0, not both zero")
        frames = list(frames)
        if not frames:
            raise ValueError("no frames to fit")
        labels = get_all_labels(frames, energy_key=energy_key, forces_key=forces_key)
        use_e = [lab.energy is not None and energy_weight > 0 for lab in labels]
        use_f = [lab.forces is not None and force_weight > 0 for lab in labels]
        for k in range(len(labels)):
            if not (use_e[k] or use_f[k]):
                raise ValueError(
                    f"frame {k}: no energy ({energy_key!r}) or forces ({forces_key!r}) label "
                    "with a nonzero weight; label it or drop it")
        species = sorted({int(z) for a in frames for z in np.unique(a.numbers)})
        n_off = 0 if not any(use_e) else (1 if offset == "constant" else len(species))
        e_rows, e_rhs, f_rows, f_rhs = [], [], [], []
        for k, atoms in enumerate(frames):
            b12, b6 = cls._basis(atoms, cutoff, shift, forces=use_f[k], virial=False)
            if use_e[k]:
                off = np.ones(1) if offset == "constant" else np.array(
                    [np.count_nonzero(atoms.numbers == z) for z in species], dtype=np.float64)
                e_rows.append(np.concatenate([[b12.energy, -b6.energy], off]))
                e_rhs.append(labels[k].energy)
            if use_f[k]:
                f_rows.append(np.stack([b12.forces.ravel(), -b6.forces.ravel(),
                                        *([np.zeros(b12.forces.size)] * n_off)], axis=1))
                f_rhs.append(labels[k].forces.ravel())
        blocks, rhs = [], []
        if e_rows:
            blocks.append(math.sqrt(energy_weight) * np.array(e_rows))
            rhs.append(math.sqrt(energy_weight) * np.array(e_rhs))
        if f_rows:
            blocks.append(math.sqrt(force_weight) * np.concatenate(f_rows))
            rhs.append(math.sqrt(force_weight) * np.concatenate(f_rhs))
        design, y = np.concatenate(blocks), np.concatenate(rhs)
        scale = np.linalg.norm(design, axis=0)
        if np.any(scale == 0):
            raise ValueError(
                f"no pair within cutoff={cutoff} Å in any frame (or no energies to fix the "
                "offset); increase the cutoff or check the data")
        sol, _, rank, _ = np.linalg.lstsq(design / scale, y, rcond=None)
        if rank < design.shape[1]:
            raise ValueError(
                f"the data determine only {rank} of the {design.shape[1]} parameters (A, B and "
                f"{n_off} offset(s)); add configurations with different pair distances"
                + (" or compositions/sizes (or use offset='constant')"
                   if offset == "per_species" else ""))
        sol = sol / scale
        A, B = float(sol[0]), float(sol[1])
        if not (A > 0 and B > 0):
            warnings.warn(f"force-matched Lennard-Jones is unphysical (A={A:.4g} eV·Å^12, "
                          f"B={B:.4g} eV·Å^6); the 12-6 form does not suit these data",
                          RuntimeWarning, stacklevel=2)
        pot = cls(A, B, cutoff=cutoff, shift=shift)
        fitted_offset: float | dict[str, float] | None
        if n_off == 0:
            fitted_offset = None
        elif offset == "constant":
            fitted_offset = float(sol[2])
        else:
            fitted_offset = {chemical_symbols[z]: float(v) for z, v in zip(species, sol[2:])}
        resid = (design @ sol - y)
        n_e = len(e_rows)
        n_f = design.shape[0] - n_e
        e_rmse = (float(np.sqrt(np.mean(resid[:n_e] ** 2)) / math.sqrt(energy_weight))
                  if n_e else None)
        f_rmse = (float(np.sqrt(np.mean(resid[n_e:] ** 2)) / math.sqrt(force_weight))
                  if n_f else None)
        return LennardJonesFit(pot, fitted_offset, e_rmse, f_rmse, n_e, n_f)


# --------------------------------------------------------------------------------------------
# Electrostatics
# --------------------------------------------------------------------------------------------


class _PointCharges(Baseline):
    """Shared handling of fixed point charges (in e)."""

    def __init__(self, charges: Mapping[str | int, float] | str):
        if isinstance(charges, str):
            if charges != "initial_charges":
                raise ValueError(
                    f"charges must be a dict species -> charge (e) or 'initial_charges', got "
                    f"{charges!r}")
            self.charges: dict[str, float] | str = "initial_charges"
        elif isinstance(charges, Mapping):
            self.charges = {}
            for key, value in charges.items():
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"charge of {key!r} must be finite, got {value}")
                self.charges[_symbol(key)] = value
        else:
            raise TypeError("charges must be a dict species -> charge (e) or 'initial_charges'")

    def charges_of(self, atoms: Atoms, frame_index: int | None = None) -> np.ndarray:
        """Per-atom charges of ``atoms``, e."""
        if self.charges == "initial_charges":
            if "initial_charges" not in atoms.arrays:
                raise ValueError(
                    f"{_where(frame_index)}charges='initial_charges' but the frame has no "
                    "initial charges; set them with atoms.set_initial_charges(...) (extxyz "
                    "column 'initial_charges') or give a dict species -> charge")
            q = np.asarray(atoms.get_initial_charges(), dtype=np.float64)
            if not np.all(np.isfinite(q)):
                raise ValueError(f"{_where(frame_index)}initial charges contain NaN or inf")
            return q
        uniq, idx = np.unique(atoms.numbers, return_inverse=True)
        missing = [chemical_symbols[z] for z in uniq if chemical_symbols[z] not in self.charges]
        if missing:
            raise ValueError(
                f"{_where(frame_index)}no charge given for species {missing} (charges are "
                f"given for {sorted(self.charges)}); add them to the charges dict (in e)")
        table = np.array([self.charges[chemical_symbols[z]] for z in uniq])
        return table[idx]

    def get_params(self) -> dict:
        c = self.charges
        return {"charges": dict(c) if isinstance(c, dict) else c}


class Coulomb(_PointCharges):
    """Bare Coulomb energy k_e Σ_{i<j} q_i q_j / r_ij of fixed point charges, open systems.

    All pairs, no cutoff (O(N²), vectorised). For periodic cells use :class:`Ewald`.

    Parameters
    ----------
    charges : dict or "initial_charges"
        Charge (e) per species (symbol or atomic number), or ``"initial_charges"`` to use
        ``atoms.get_initial_charges()``.
    """

    cutoff = np.inf

    def check(self, atoms: Atoms, frame_index: int | None = None) -> None:
        if np.any(atoms.pbc):
            raise ValueError(
                f"{_where(frame_index)}Coulomb is the open-system (non-periodic) sum but the "
                f"frame has pbc={atoms.pbc.tolist()}; use Ewald for periodic cells, or set "
                "atoms.pbc = False for an isolated molecule")
        validate_structure(atoms, frame_index=frame_index)
        self.charges_of(atoms, frame_index)

    def compute(self, atoms: Atoms, *, forces: bool = True,
                virial: bool = True) -> BaselineResult:
        self.check(atoms)
        q = self.charges_of(atoms)
        n = len(atoms)
        pos = np.asarray(atoms.positions, dtype=np.float64)
        i, j = np.triu_indices(n, k=1)
        vec = pos[j] - pos[i]
        r = np.sqrt(np.einsum("pa,pa->p", vec, vec))
        if r.size and r.min() < MIN_DISTANCE:
            p = int(np.argmin(r))
            raise ValueError(f"atoms {i[p]} and {j[p]} are {r[p]:.2e} Å apart (overlapping); "
                             "fix the positions")
        phi = COULOMB_CONSTANT * q[i] * q[j] / r
        # the half list counted once: duplicate it into a full list for the shared assembly
        ii, jj = np.concatenate([i, j]), np.concatenate([j, i])
        return _pair_sums(n, ii, jj, np.concatenate([vec, -vec]), np.concatenate([r, r]),
                          np.concatenate([phi, phi]), -np.concatenate([phi / r, phi / r]),
                          forces=forces, virial=virial)


class Ewald(_PointCharges):
    """Ewald sum of fixed point charges in a periodic 3-D cell.

    E = E_real + E_recip + E_self (+ E_background), with the Gaussian split parameter α
    (Å⁻¹; the screening charge of each ion is a Gaussian ∝ exp(−α² r²)):

    * E_real = (k_e/2) Σ_i Σ'_{j,n} q_i q_j erfc(α r_ijn)/r_ijn, over pairs with r < r_cut;
    * E_recip = (k_e/2V) Σ_{k≠0, |k|≤k_cut} (4π/k²) exp(−k²/4α²) |Σ_j q_j e^{ik·r_j}|²;
    * E_self = −k_e (α/√π) Σ_i q_i²;
    * E_background = −k_e π Q² / (2 V α²) (only with ``neutralize=True``; Q = Σ q_i) — the
      energy of a uniform neutralising background, which makes E independent of α for a
      charged cell.

    Tin-foil (conducting) boundary conditions: no surface dipole term. Per-atom energies: the
    real-space pair energy half/half, q_i Σ_k (...) Re[e^{-ik·r_i} S(k)] for the reciprocal
    part, the self term of each ion, and −k_e π q_i Q /(2 V α²) for the background.

    Parameters
    ----------
    charges : dict or "initial_charges"
        Charge (e) per species (symbol or atomic number), or ``"initial_charges"``.
    accuracy : float, default 1e-8
        Target relative accuracy ε of the energy. With s = √(−ln(ε/10)): r_cut = s/α and
        k_cut = 2sα, so both truncation errors are ~ e^{−s²} = ε/10 (Kolafa & Perram, Mol.
        Simul. 9, 351 (1992); the factor 10 is a safety margin on the asymptotic estimate,
        whose prefactor depends on the structure). Measured worst case over NaCl, CsCl and
        random triclinic cells for ε = 1e-4 ... 1e-12: relative error ≤ 0.1 ε.
    alpha : float, optional
        Split parameter, Å⁻¹. Default: the cost-balancing choice
        α = √π (w N / V²)^{1/6} with w = 8 (real-space and reciprocal work then both scale as
        N^{3/2}; w, the cost of a real-space pair relative to an (atom, k) term here, was
        tuned on NaCl cells), or s/r_cut when ``r_cut`` is given.
    r_cut : float, optional
        Real-space cutoff, Å (default s/α).
    neutralize : bool, default False
        Allow a charged cell by adding the neutralising background term; otherwise a
        non-neutral cell is an error.

    Notes
    -----
    ``parameters(atoms)`` returns the (α, r_cut, k_cut) used for a frame. The ``cutoff``
    attribute is ``np.inf`` (long-ranged); the real-space cutoff depends on the cell. The
    real-space pairs are held in one full neighbour list (~ N · 4π r_cut³ N/(3V) pairs: 0.3 M
    pairs for 512 ions of NaCl at ε = 1e-8), the reciprocal sum is chunked over k-vectors
    (timings: benchmarks/README.md).
    """

    cutoff = np.inf
    #: Cost of one real-space pair (full list) relative to one (atom, k) reciprocal term,
    #: tuned on 512- and 1728-ion NaCl cells; enters the default α.
    _COST_RATIO = 8.0
    #: Extra -ln of the accuracy used for the cutoffs (a safety factor e^-margin on the
    #: asymptotic error estimate e^{-s^2}).
    _MARGIN = math.log(10.0)
    #: Number of (atom, k-vector) entries per reciprocal-space chunk.
    _CHUNK = 2**20
    #: |Q| (e) below which a cell counts as neutral.
    _NEUTRAL_TOL = 1e-8

    def __init__(self, charges: Mapping[str | int, float] | str, *, accuracy: float = 1e-8,
                 alpha: float | None = None, r_cut: float | None = None,
                 neutralize: bool = False):
        super().__init__(charges)
        if not 0 < float(accuracy) < 1:
            raise ValueError(f"accuracy must be in (0, 1), got {accuracy!r}")
        self.accuracy = float(accuracy)
        for name, v in (("alpha", alpha), ("r_cut", r_cut)):
            if v is not None and not (math.isfinite(float(v)) and float(v) > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        self.alpha = None if alpha is None else float(alpha)
        self.r_cut = None if r_cut is None else float(r_cut)
        self.neutralize = bool(neutralize)

    def get_params(self) -> dict:
        return {**super().get_params(), "accuracy": self.accuracy, "alpha": self.alpha,
                "r_cut": self.r_cut, "neutralize": self.neutralize}

    def parameters(self, atoms: Atoms) -> tuple[float, float, float]:
        """(α in Å⁻¹, r_cut in Å, k_cut in Å⁻¹) used for ``atoms``."""
        s = math.sqrt(-math.log(self.accuracy) + self._MARGIN)
        volume = abs(float(np.linalg.det(atoms.cell.array)))
        alpha = self.alpha
        if alpha is None:
            if self.r_cut is not None:
                alpha = s / self.r_cut
            else:
                alpha = math.sqrt(math.pi) * (self._COST_RATIO * len(atoms) / volume**2) ** (1 / 6)
        r_cut = self.r_cut if self.r_cut is not None else s / alpha
        return alpha, r_cut, 2.0 * s * alpha

    def check(self, atoms: Atoms, frame_index: int | None = None) -> None:
        if not np.all(atoms.pbc):
            if not np.any(atoms.pbc):
                fix = "use Coulomb (the open-system sum) for an isolated system"
            else:
                fix = ("Ewald sums need 3-D periodicity; for a slab or wire set pbc=True with "
                       "enough vacuum (no dipole correction is applied), or use Coulomb for an "
                       "isolated system")
            raise ValueError(f"{_where(frame_index)}Ewald needs a periodic 3-D cell but the "
                             f"frame has pbc={atoms.pbc.tolist()}; {fix}")
        validate_structure(atoms, frame_index=frame_index)
        q = self.charges_of(atoms, frame_index)
        total = float(q.sum())
        if not self.neutralize and abs(total) > self._NEUTRAL_TOL * max(1.0, len(q)):
            raise ValueError(
                f"{_where(frame_index)}the cell has net charge {total:+.6g} e; the Ewald energy "
                "of a charged periodic cell diverges. Fix the charges so that they sum to zero, "
                "or pass neutralize=True to add a uniform neutralising background")

    def _kvectors(self, cell: np.ndarray, k_cut: float) -> np.ndarray:
        """Half-space set of reciprocal vectors 0 < |k| ≤ k_cut (one of each ±k), Å⁻¹."""
        recip = 2.0 * np.pi * np.linalg.inv(cell).T  # rows b_i with a_i·b_j = 2π δ_ij
        mmax = np.floor(k_cut * np.linalg.norm(cell, axis=1) / (2.0 * np.pi)).astype(int)
        axes = [np.arange(-m, m + 1) for m in mmax]
        m = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        # half space: first nonzero integer component positive
        first = np.where(m[:, 0] != 0, m[:, 0], np.where(m[:, 1] != 0, m[:, 1], m[:, 2]))
        m = m[first > 0]
        k = m @ recip
        k2 = np.einsum("ka,ka->k", k, k)
        return k[k2 <= k_cut**2]

    def compute(self, atoms: Atoms, *, forces: bool = True,
                virial: bool = True) -> BaselineResult:
        self.check(atoms)
        q = self.charges_of(atoms)
        n = len(atoms)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        volume = abs(float(np.linalg.det(cell)))
        pos = np.asarray(atoms.positions, dtype=np.float64)
        alpha, r_cut, k_cut = self.parameters(atoms)
        ke = COULOMB_CONSTANT

        # real space: erfc-screened pairs (images of the atom itself included)
        nl = build_neighbor_list([atoms], r_cut)
        i, j, r = nl.centers, nl.neighbors, nl.distances
        qq = ke * q[i] * q[j]
        erfc_ar = erfc(alpha * r)
        phi = qq * erfc_ar / r
        dphi = -qq * (erfc_ar / r**2
                      + 2.0 * alpha / math.sqrt(math.pi) * np.exp(-(alpha * r) ** 2) / r)
        result = _pair_sums(n, i, j, nl.vectors, r, phi, dphi, forces=forces, virial=virial)
        energies = result.energies
        f = result.forces
        w = result.virial

        # reciprocal space over the half-space k set, chunked over k
        kvec = self._kvectors(cell, k_cut)
        chunk = max(1, self._CHUNK // max(n, 1))
        for start in range(0, kvec.shape[0], chunk):
            k = kvec[start:start + chunk]
            k2 = np.einsum("ka,ka->k", k, k)
            c = ke * 4.0 * np.pi / volume * np.exp(-k2 / (4.0 * alpha**2)) / k2
            phase = pos @ k.T  # (n, nk)
            cos, sin = np.cos(phase), np.sin(phase)
            s_re, s_im = q @ cos, q @ sin
            energies = energies + q * (cos @ (c * s_re) + sin @ (c * s_im))
            if forces:
                f = f + 2.0 * q[:, None] * ((sin * (c * s_re) - cos * (c * s_im)) @ k)
            if virial:
                e_k = c * (s_re**2 + s_im**2)
                w = w + np.eye(3) * e_k.sum() - (
                    (2.0 * e_k * (1.0 / k2 + 1.0 / (4.0 * alpha**2)))[:, None] * k).T @ k

        # self energy and neutralising background
        energies = energies - ke * alpha / math.sqrt(math.pi) * q**2
        if self.neutralize:
            total = q.sum()
            e_bg = -ke * math.pi * q * total / (2.0 * volume * alpha**2)
            energies = energies + e_bg
            if virial:
                w = w + np.eye(3) * e_bg.sum()
        if virial:
            w = 0.5 * (w + w.T)
        return BaselineResult(float(energies.sum()), energies, f, w)


#: The built-in baselines by class name (what ``{"type": name, ...}`` configs may name).
#: :func:`from_dict` also finds user-defined :class:`Baseline` subclasses.
BASELINES: dict[str, type[Baseline]] = {
    cls.__name__: cls for cls in (CoreRepulsion, LennardJones, Coulomb, Ewald)}


# --------------------------------------------------------------------------------------------
# ASE calculator
# --------------------------------------------------------------------------------------------


class BaselineCalculator(Calculator):
    """ASE calculator of one or several baselines (summed): label data or run MD on them.

    Properties: ``energy`` and ``free_energy`` (eV), ``energies`` (eV per atom), ``forces``
    (eV/Å) and, for fully periodic cells, ``stress`` (eV/Å³, ASE sign: −virial/volume).

    Parameters
    ----------
    baselines : Baseline or sequence of Baseline
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, baselines: Baseline | Sequence[Baseline], **kwargs: Any):
        super().__init__(**kwargs)
        self.baselines = as_baseline_list(baselines)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        (res,) = evaluate(self.baselines, [atoms], forces=True, virial=periodic)
        self.results = {"energy": res.energy, "free_energy": res.energy,
                        "energies": res.energies.copy(), "forces": res.forces.copy()}
        if periodic:
            self.results["stress"] = virial_to_stress(res.virial, atoms.get_volume())
