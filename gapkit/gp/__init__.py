"""Gaussian-process layer: observations, design matrices, sparse (DTC) and exact GPs."""

from .exact import ExactGP
from .observations import NoiseModel, Observations, build_observations, fit_e0
from .sparsify import select_sparse_points, sparse_points, uniform_grid

__all__ = ["ExactGP", "NoiseModel", "Observations", "build_observations", "fit_e0",
           "select_sparse_points", "sparse_points", "uniform_grid"]
