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

The package: :mod:`~gapkit.baselines.base` (the interface, the registry, evaluation),
:mod:`~gapkit.baselines.repulsion`, :mod:`~gapkit.baselines.pair`,
:mod:`~gapkit.baselines.electrostatics` and :mod:`~gapkit.baselines.calculator`
(``BaselineCalculator``, also in :mod:`gapkit.calculator`).
"""

from __future__ import annotations

from .base import (
                   BASELINES,
                   Baseline,
                   BaselineResult,
                   as_baseline_list,
                   evaluate,
                   from_dict,
                   subtract,
)
from .calculator import BaselineCalculator
from .electrostatics import COULOMB_CONSTANT, Coulomb, Ewald
from .pair import LennardJones, LennardJonesFit
from .repulsion import CoreRepulsion, zbl_screening

__all__ = [
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
    "subtract",
    "zbl_screening",
]
