"""ASE calculator for a fitted GAP, with predictive variances in ``results``."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

__all__ = ["GAPCalculator"]


class GAPCalculator(Calculator):
    """Energies, forces and stress from a fitted :class:`gapkit.GAP`.

    ``atoms.calc = GAPCalculator(model)`` then ``atoms.get_potential_energy()``
    (eV), ``atoms.get_forces()`` (eV/Å), ``atoms.get_stress()`` (eV/Å^3, ASE sign,
    periodic cells) and ``atoms.get_potential_energies()`` (per-atom, eV). With
    ``variance=True`` (default) ``calc.results`` also holds

    * ``energy_variance`` (eV^2): total energy, DTC form;
    * ``energies_variance`` (n_atoms,) eV^2: per-atom energies, DTC form;
    * ``forces_variance`` (n_atoms, 3) eV^2/Å^2, per component: ``force_variance=
      "exact"`` (default; DTC form with exact second derivatives, calibrated on the
      Si test set), ``"projected"`` (cheaper, much smaller) or None. Each force
      variance needs a full design-matrix row, about 3x the cost of the forces:
      for long MD without uncertainty use ``GAPCalculator(model, variance=False)``.

    Stress is ``-virial / volume`` with the virial ``W = -dE/d epsilon``. A model
    fitted with physics baselines (``GAP(..., baselines=...)``) includes them in every
    result; ``results["baseline_energy"]`` (eV) is their share of the energy.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, *, variance: bool = True, force_variance: str | None = "exact",
                 **kwargs):
        super().__init__(**kwargs)
        model._check_fitted()
        self.model = model
        self.variance = bool(variance)
        self.force_variance = force_variance

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        want_stress = "stress" in properties
        if want_stress and not periodic:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a cell periodic in all directions")
        pred = self.model.predict([atoms], forces=True, virial=periodic,
                                  variance=self.variance, force_variance=self.force_variance)
        self.results["energy"] = float(pred.energy[0])
        self.results["free_energy"] = float(pred.energy[0])
        self.results["energies"] = pred.local_energy.copy()
        self.results["forces"] = pred.forces.copy()
        if pred.baseline_energy is not None:
            self.results["baseline_energy"] = float(pred.baseline_energy[0])
        if periodic:
            w = pred.virial[0]
            stress = -w / atoms.get_volume()
            self.results["stress"] = np.array([stress[0, 0], stress[1, 1], stress[2, 2],
                                               stress[1, 2], stress[0, 2], stress[0, 1]])
        if self.variance:
            self.results["energy_variance"] = float(pred.energy_variance[0])
            self.results["energies_variance"] = pred.local_energy_variance.copy()
            if pred.forces_variance is not None:
                self.results["forces_variance"] = pred.forces_variance.copy()
