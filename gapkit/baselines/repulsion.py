"""Screened nuclear (ZBL) and ``A/r^12`` core repulsion with a smooth C^2 cutoff."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols, covalent_radii

from ..data import validate_structure
from ..neighbors import build_neighbor_list
from .base import Baseline, BaselineResult, _pair_key, _pair_sums, _switch, _symbol, _where
from .electrostatics import COULOMB_CONSTANT

# Universal ZBL screening function (Ziegler, Biersack & Littmark, "The Stopping and Range of
# Ions in Solids", Pergamon 1985): Phi(x) = sum_k c_k exp(-d_k x), x = r / a.
_ZBL_C = np.array([0.18175, 0.50986, 0.28022, 0.02817])
_ZBL_D = np.array([3.19980, 0.94229, 0.40290, 0.20162])
#: ZBL universal screening length prefactor, Å (0.8854 Bohr radii).
_ZBL_A0 = 0.46850


def zbl_screening(x: np.ndarray | float):
    """Universal ZBL screening function Φ(x) and dΦ/dx, x = r/a (dimensionless).

    Φ(x) = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x} + 0.28022 e^{-0.40290 x}
    + 0.02817 e^{-0.20162 x} (Ziegler, Biersack & Littmark 1985).
    """
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.multiply.outer(x, _ZBL_D))
    return e @ _ZBL_C, -(e @ (_ZBL_C * _ZBL_D))


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

    def pair_tables(self, uniq: np.ndarray):
        """Per species-pair tables (n_s, n_s) of the sorted atomic numbers ``uniq``: the
        cutoff and switch start (Å), and the pair law: ``(k_e Z_i Z_j, a)`` (eV Å, Å) for
        ZBL, ``(A,)`` (eV Å^12) for r12. :mod:`gapkit.export` builds its tables from
        these."""
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
        rc, r_on, law = self.pair_tables(uniq)
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
        rc, r_on, law = self.pair_tables(uniq)
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
