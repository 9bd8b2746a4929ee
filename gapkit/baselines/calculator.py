"""An ASE calculator of one or several baselines (re-exported by :mod:`gapkit.calculator`,
beside ``GAPCalculator``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ..data import virial_to_stress
from .base import Baseline, as_baseline_list, evaluate


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
