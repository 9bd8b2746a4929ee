"""ASE calculator for a fitted GAP, with predictive variances in ``results``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from ._compat import UNSET, renamed
from .baselines.calculator import BaselineCalculator
from .data import virial_to_stress

# BaselineCalculator (gapkit.baselines) sits beside GAPCalculator here
__all__ = ["BaselineCalculator", "GAPCalculator"]


def _check_forces_variance(value: Any) -> None:
    if value not in ("exact", "projected", None):
        raise ValueError(f"forces_variance must be 'exact', 'projected' or None, got {value!r}")


class GAPCalculator(Calculator):
    """Energies, forces and stress from a fitted :class:`gapkit.GAP`.

    ``atoms.calc = GAPCalculator(model)`` then ``atoms.get_potential_energy()``
    (eV), ``atoms.get_forces()`` (eV/Å), ``atoms.get_stress()`` (eV/Å^3, ASE sign,
    periodic cells) and ``atoms.get_potential_energies()`` (per-atom, eV). With
    ``variance=True`` (default) ``calc.results`` also holds

    * ``energy_variance`` (eV^2): total energy;
    * ``energies_variance`` (n_atoms,) eV^2: per-atom energies, DTC form (latent);
    * ``forces_variance`` (n_atoms, 3) eV^2/Å^2, per component: ``forces_variance=
      "exact"`` (default; DTC form with exact second derivatives), ``"projected"``
      (cheaper, much smaller) or None. Each force variance needs a full design-matrix
      row, several times the cost of the forces: for long MD without uncertainty use
      ``GAPCalculator(model, variance=False)``;
    * ``energy_latent_variance``, ``forces_latent_variance``: the GP posterior
      variances alone.

    For a model with a predictive-variance calibration (the default fit, noise by
    cross-validation: :mod:`gapkit.gp.predictive`) ``energy_variance`` and
    ``forces_variance`` (exact form) are the calibrated variances of a new reference
    label, 0 for a component fixed by symmetry; otherwise they are the latent ones.

    The two options are ASE calculator parameters (``calc.parameters``, shown by
    ``calc.todict()``); ``calc.set(variance=False)`` changes one and discards the results.
    The variances are also properties: ``calc.get_property("forces_variance", atoms)``
    computes them when asked, even with ``variance=False``. ``atoms.get_properties([...])``
    and i-PI's ASE client see the properties ASE knows (the variances stay in
    ``calc.results``). An energy-only request (``get_potential_energy``) skips forces and
    stress; a request for forces or stress computes energy, forces and stress together.

    The variances computed are also copied into the atoms asked about, under the names
    ``gapkit predict`` writes: ``atoms.info["gap_energy_variance"]``,
    ``atoms.arrays["gap_forces_variance"]`` and ``atoms.arrays["gap_local_energy_variance"]``,
    so that ``ase.io.write`` (extxyz) keeps them beside the energy and forces (ASE's own
    writers keep only the properties ASE knows); a variance not computed by the latest
    calculation is removed from the atoms. ``store_variances=False`` leaves the atoms alone.

    One calculator may be shared by several threads: each property request holds a lock
    (requests run one at a time; give each thread its own calculator to run them in
    parallel).

    Stress is ``-virial / volume`` with the virial ``W = -dE/d epsilon``. A model
    fitted with physics baselines (``GAP(..., baselines=...)``) includes them in every
    result; ``results["baseline_energy"]`` (eV) is their share of the energy.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress",
                              "energy_variance", "energies_variance", "forces_variance"]
    default_parameters = {"variance": True, "forces_variance": "exact",
                          "store_variances": True}
    #: requests that need no forces or stress (an energy-only call skips them)
    ENERGY_ONLY = frozenset({"energy", "free_energy", "energies", "energy_variance",
                             "energies_variance"})
    VARIANCES = frozenset({"energy_variance", "energies_variance", "forces_variance"})

    def __init__(self, model: Any, *, variance: bool = True,
                 forces_variance: str | None = "exact", store_variances: bool = True,
                 force_variance: Any = UNSET, **kwargs: Any) -> None:
        forces_variance = renamed(force_variance, forces_variance, "force_variance",
                                  "forces_variance", "GAPCalculator")
        _check_forces_variance(forces_variance)
        self._lock = threading.RLock()  # before ASE's __init__, which calls set()
        super().__init__(variance=bool(variance), forces_variance=forces_variance,
                         store_variances=bool(store_variances), **kwargs)
        model.check_fitted()
        self.model = model

    # ASE keeps one atoms copy and one results dict per calculator: a calculator shared by
    # threads would hand one thread the other's results. Each property request (compute and
    # read back) holds the calculator's lock, so sharing is safe, one request at a time.
    def get_property(self, name: str, atoms: Any = None, allow_calculation: bool = True) -> Any:
        with self._lock:
            return super().get_property(name, atoms, allow_calculation)

    def __getstate__(self) -> dict:  # copies and pickles get a lock of their own
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def set(self, **kwargs: Any) -> dict:
        """Change ``variance`` or ``forces_variance`` (ASE's ``calc.set``); a change
        discards the results, so the next request computes with the new setting."""
        if "forces_variance" in kwargs:
            _check_forces_variance(kwargs["forces_variance"])
        for flag in ("variance", "store_variances"):
            if flag in kwargs:
                kwargs[flag] = bool(kwargs[flag])
        with self._lock:
            changed = super().set(**kwargs)
            if changed:
                self.reset()
        return changed

    def export_properties(self) -> Any:
        """ASE's :class:`ase.outputs.Properties` of the results it knows (``atoms.
        get_properties``, i-PI's ASE client); the variances and ``baseline_energy`` stay
        in ``calc.results``."""
        from ase.outputs import Properties, all_outputs

        return Properties({k: v for k, v in self.results.items() if k in all_outputs})

    @property
    def variance(self) -> bool:
        return bool(self.parameters["variance"])

    @property
    def forces_variance(self) -> str | None:
        return self.parameters["forces_variance"]

    def calculate(self, atoms: Any = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        user_atoms = atoms
        super().calculate(atoms, properties, system_changes)
        self._calculate(properties)
        if user_atoms is not None and self.parameters.get("store_variances", True):
            self._store_variances(user_atoms)

    #: where :meth:`calculate` copies the variances into the atoms (the names ``gapkit
    #: predict`` writes), so that ``ase.io.write`` keeps them: ``(result, info or arrays)``
    STORED = {"gap_energy_variance": ("energy_variance", "info"),
              "gap_local_energy_variance": ("energies_variance", "arrays"),
              "gap_forces_variance": ("forces_variance", "arrays")}

    def _store_variances(self, atoms: Any) -> None:
        """The variances of this calculation into ``atoms.info`` / ``atoms.arrays``
        (:data:`STORED`); a name whose variance was not computed this time is removed, so
        no value of earlier positions survives."""
        for name, (result, where) in self.STORED.items():
            value = self.results.get(result)
            store = atoms.info if where == "info" else atoms.arrays
            if value is None:
                store.pop(name, None)
            elif where == "info":
                store[name] = float(value)
            else:
                store[name] = np.array(value, dtype=float)

    def _calculate(self, properties: Sequence[str]) -> None:
        atoms: Any = self.atoms  # set by Calculator.calculate
        periodic = bool(np.all(atoms.pbc))
        want_stress = "stress" in properties
        if want_stress and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all directions")
        # an energy-only request skips forces and stress; any other computes them together
        # (MD asks for forces, then energy and stress of the same atoms: one prediction)
        forces = not set(properties) <= self.ENERGY_ONLY
        asked = self.VARIANCES & set(properties)  # computed when asked, even if variance=False
        forces_variance = self.forces_variance
        if "forces_variance" in asked and forces_variance is None:
            forces_variance = "exact"
        variance = self.variance or bool(asked)
        pred = self.model.predict([atoms], forces=forces, virial=periodic and forces,
                                  return_variance=variance,
                                  forces_variance=forces_variance if forces else None)
        self.results["energy"] = float(pred.energy[0])
        self.results["free_energy"] = float(pred.energy[0])
        self.results["energies"] = pred.local_energy.copy()
        if forces:
            self.results["forces"] = pred.forces.copy()
        if pred.baseline_energy is not None:
            self.results["baseline_energy"] = float(pred.baseline_energy[0])
        if periodic and forces:
            self.results["stress"] = virial_to_stress(pred.virial[0], atoms.get_volume())
        if variance:
            self.results["energy_variance"] = float(pred.energy_variance[0])
            self.results["energies_variance"] = pred.local_energy_variance.copy()
            self.results["energy_latent_variance"] = float(pred.energy_latent_variance[0])
            if pred.forces_variance is not None:
                self.results["forces_variance"] = pred.forces_variance.copy()
                self.results["forces_latent_variance"] = pred.forces_latent_variance.copy()
