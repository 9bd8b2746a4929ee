"""Gaussian-process layer: observations, design matrices, sparse (DTC) and exact GPs."""

from .observations import NoiseModel, Observations, build_observations, fit_e0

__all__ = ["NoiseModel", "Observations", "build_observations", "fit_e0"]
