"""Gaussian-process layer: observations, design matrices, posterior formulas, sparse (DTC)
and exact GPs."""

from .design import SparseSet, design_blocks, design_rows, functional_rows
from .exact import ExactGP
from .observations import (
           ENERGY,
           FORCES,
           KINDS,
           VIRIAL,
           NoiseModel,
           Observations,
           build_observations,
           fit_e0,
)
from .posterior import Prediction, dtc_variance, projected_variance
from .sparsify import select_sparse_points, sparse_points, uniform_grid

__all__ = ["ENERGY", "FORCES", "KINDS", "VIRIAL", "ExactGP", "NoiseModel", "Observations",
           "Prediction", "SparseSet", "build_observations", "design_blocks", "design_rows",
           "dtc_variance", "fit_e0", "functional_rows", "projected_variance",
           "select_sparse_points", "sparse_points", "uniform_grid"]
