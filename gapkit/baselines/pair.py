"""Lennard-Jones pair potentials, fixed or fitted to reference data."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..data import get_all_labels
from ..neighbors import build_neighbor_list
from .base import Baseline, BaselineResult, _pair_sums


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
