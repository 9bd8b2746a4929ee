"""Calibration metrics of errors against predicted variances: z-scores, Gaussian
NLL, coverage and miscalibration area, Spearman, the reliability curve and ENCE, sharpness."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._quantities import DEFAULT_LEVELS, _check_arrays


def z_scores(errors, variance) -> np.ndarray:
    """Standardised errors ``z = error / sigma`` (dimensionless).

    Parameters
    ----------
    errors : array-like
        Prediction minus reference (any unit U).
    variance : array-like, same shape
        Predicted variances (U^2), all > 0.
    """
    e, v = _check_arrays(errors, variance)
    return e / np.sqrt(v)


def gaussian_nll(errors, variance) -> float:
    """Mean Gaussian negative log-likelihood ``0.5 (log 2 pi sigma^2 + e^2/sigma^2)``
    (nats per value; depends on the unit U of the errors through ``log sigma``)."""
    e, v = _check_arrays(errors, variance)
    return float(np.mean(0.5 * (np.log(2 * np.pi * v) + e * e / v)))


def coverage_curve(errors, variance, levels=None) -> tuple[np.ndarray, np.ndarray]:
    """Observed fraction of errors inside the central Gaussian intervals.

    Returns ``(expected, observed)``: for each nominal level p in ``levels`` (default
    0.01..0.99), the fraction of ``|z| <= Phi^-1((1 + p) / 2)``. Calibrated: observed = p.
    """
    from scipy.stats import norm

    z = np.abs(z_scores(errors, variance))
    p = np.asarray(DEFAULT_LEVELS if levels is None else levels, dtype=float)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("coverage levels must lie strictly between 0 and 1")
    half_width = norm.ppf(0.5 + 0.5 * p)
    zs = np.sort(z)
    observed = np.searchsorted(zs, half_width, side="right") / zs.size
    return p, observed


def miscalibration_area(errors, variance, levels=None) -> float:
    """Mean |observed - expected| coverage over the levels of :func:`coverage_curve`
    (the area between the coverage curve and the diagonal; 0 when calibrated, at most
    0.5)."""
    p, obs = coverage_curve(errors, variance, levels)
    return float(np.mean(np.abs(obs - p)))


def spearman(errors, variance) -> float:
    """Spearman rank correlation of predicted sigma and |error| (dimensionless)."""
    from scipy.stats import spearmanr

    e, v = _check_arrays(errors, variance)
    if e.size < 3 or np.ptp(v) == 0:
        return float("nan")
    return float(spearmanr(np.sqrt(v), np.abs(e)).statistic)


def reliability_curve(errors, variance, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Binned RMSE against RMV (root mean predicted variance), equal-count bins in sigma.

    Returns ``(rmv, rmse, counts)`` per bin (units U of the errors). Calibrated: rmse = rmv.
    """
    e, v = _check_arrays(errors, variance)
    order = np.argsort(v, kind="stable")
    bins = [b for b in np.array_split(order, min(int(n_bins), e.size)) if b.size]
    rmv = np.array([math.sqrt(v[b].mean()) for b in bins])
    rmse = np.array([math.sqrt((e[b] ** 2).mean()) for b in bins])
    return rmv, rmse, np.array([b.size for b in bins])


def ence(errors, variance, n_bins: int = 10) -> float:
    """Expected normalised calibration error: mean over bins of |RMV - RMSE| / RMV
    (dimensionless; 0 when calibrated)."""
    rmv, rmse, _ = reliability_curve(errors, variance, n_bins)
    return float(np.mean(np.abs(rmv - rmse) / rmv))


def sharpness(variance) -> float:
    """Root mean predicted variance (unit U of the quantity): smaller is sharper."""
    v = np.asarray(variance, dtype=float).ravel()
    _check_arrays(np.zeros_like(v), v)
    return float(np.sqrt(v.mean()))


@dataclass(frozen=True)
class CalibrationResult:
    """Calibration of one quantity's predicted uncertainty against reference errors.

    Attributes
    ----------
    quantity, unit : str
        E.g. ``"forces"``, ``"eV/Å"`` (energy: per atom, ``"eV/atom"``).
    n : int
        Number of values assessed.
    mae, rmse : float
        Error statistics (unit).
    z_mean, z_std : float
        Mean and standard deviation of the z-scores (calibrated: 0 and 1).
    z_rms : float
        RMS z-score (calibrated: 1; above 1: sigma too small).
    nll : float
        Mean Gaussian negative log-likelihood (nats per value, in the given unit).
    miscalibration_area : float
        Mean |observed - expected| coverage of central intervals (0 ideal).
    coverage_expected, coverage_observed : ndarray
        The coverage curve.
    spearman : float
        Rank correlation of sigma and |error|.
    ence : float
        Expected normalised calibration error of the reliability curve.
    reliability_rmv, reliability_rmse : ndarray
        Binned root mean variance and RMSE (unit).
    sharpness : float
        RMS predicted sigma (unit).
    epistemic_rms, aleatoric_rms : float
        RMS sigma of the GP posterior (latent) part and of the observation noise
        (unit); ``nan`` when not separable (committee or recalibrated variances).
    variance_source : str
        What the assessed variance is, e.g. ``"posterior+noise"``.
    n_fixed, fixed_max_abs_error : int, float
        Values a calibrated prediction gives sigma = 0 (components fixed by symmetry),
        left out of every metric above, and their largest |error| (unit; a label that
        breaks the structure's symmetry shows here).
    """

    quantity: str
    unit: str
    n: int
    mae: float
    rmse: float
    z_mean: float
    z_std: float
    z_rms: float
    nll: float
    miscalibration_area: float
    coverage_expected: np.ndarray = field(repr=False)
    coverage_observed: np.ndarray = field(repr=False)
    spearman: float
    ence: float
    reliability_rmv: np.ndarray = field(repr=False)
    reliability_rmse: np.ndarray = field(repr=False)
    sharpness: float
    epistemic_rms: float = float("nan")
    aleatoric_rms: float = float("nan")
    variance_source: str = "given"
    n_fixed: int = 0
    fixed_max_abs_error: float = 0.0

    def summary(self) -> dict:
        """The scalar fields as a JSON-friendly dict."""
        return {k: (v if isinstance(v, str) else float(v)) for k, v in self.__dict__.items()
                if not isinstance(v, np.ndarray)}


def calibration_metrics(errors, variance, *, quantity: str = "value", unit: str = "",
                        n_bins: int = 10, levels=None, epistemic_variance=None,
                        aleatoric_variance=None,
                        variance_source: str = "given") -> CalibrationResult:
    """All calibration metrics of ``errors`` (prediction - reference) against the
    predicted ``variance`` (same shape, unit^2, > 0). See :class:`CalibrationResult`."""
    e, v = _check_arrays(errors, variance, what=quantity)
    z = e / np.sqrt(v)
    p, obs = coverage_curve(e, v, levels)
    rmv, rmse_b, _ = reliability_curve(e, v, n_bins)

    def rms(x):
        return float("nan") if x is None else float(np.sqrt(np.mean(np.asarray(x))))

    return CalibrationResult(
        quantity=quantity, unit=unit, n=int(e.size), mae=float(np.abs(e).mean()),
        rmse=float(np.sqrt((e * e).mean())), z_mean=float(z.mean()), z_std=float(z.std()),
        z_rms=float(np.sqrt((z * z).mean())), nll=gaussian_nll(e, v),
        miscalibration_area=float(np.mean(np.abs(obs - p))), coverage_expected=p,
        coverage_observed=obs, spearman=spearman(e, v),
        ence=float(np.mean(np.abs(rmv - rmse_b) / rmv)), reliability_rmv=rmv,
        reliability_rmse=rmse_b, sharpness=float(np.sqrt(v.mean())),
        epistemic_rms=rms(epistemic_variance), aleatoric_rms=rms(aleatoric_variance),
        variance_source=variance_source)
