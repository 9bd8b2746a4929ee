"""Fixed point charges: the plain Coulomb sum (open systems) and Ewald summation
(periodic cells)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from scipy.special import erfc

from ..data import validate_structure
from ..neighbors import MIN_DISTANCE, build_neighbor_list
from .base import Baseline, BaselineResult, _pair_sums, _symbol, _where

#: e²/(4πε0) in eV·Å (CODATA 2018: 14.3996454784...).
COULOMB_CONSTANT = 14.399645


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
