"""Uncertainty diagnostics: calibration, recalibration, committees and data hygiene.

A predicted variance is only worth something if it is checked against errors. This
module turns a :class:`gapkit.Prediction` with variances and the reference labels into

* calibration metrics (:func:`calibration_metrics`, :func:`calibration_report`): z-scores,
  Gaussian negative log-likelihood, coverage of central intervals and the miscalibration
  area, Spearman rank correlation of sigma and |error|, the binned RMSE-vs-RMV
  reliability curve and its ENCE, and the sharpness (RMS predicted sigma);
* aleatoric vs epistemic variance: the fitted observation noise of the model (its
  :class:`~gapkit.gp.NoiseModel`, per frame / config_type) against the GP posterior
  variance of the latent quantity, reported separately and added for predictive
  intervals (``include_noise=True``). For forces, judge the exact (DTC) variance,
  ``model.predict(frames)`` (``forces_variance="exact"``, the default): the projected form
  is far too small on real data;
* recalibration (:func:`fit_recalibration`, :func:`apply_recalibration`): a variance scale
  per quantity (closed-form maximum of the Gaussian likelihood on a validation set) or an
  isotonic (monotone, pool-adjacent-violators) map from predicted to observed variance,
  stored on the model as ``model.recalibration_`` (saved and loaded with it);
* committees (:func:`fit_committee`, :func:`committee_predict`): an ensemble of GAP models on
  sub-sampled data or different sparse-point seeds, whose spread can be judged with the
  same metrics as the GP variance;
* data hygiene (:func:`leave_one_out`): closed-form leave-one-out residuals and leverages
  of the fitted sparse GP from its R factor (no refits), per observation and per frame,
  with a ranking of suspicious training frames.

Quantities and units: ``"energy_per_atom"`` is the energy per atom (eV/atom, variances
eV^2/atom^2), ``"forces"`` the Cartesian force components (eV/Å, variances eV^2/Å^2).
(``"energy"``, the name before 0.2, is read as ``"energy_per_atom"`` with a warning: in
:class:`gapkit.Prediction` ``energy`` is the total.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import VOIGT as _VOIGT
from .data import Labels, get_all_labels, read_extxyz
from .gp.observations import ENERGY, FORCES, KINDS
from .model import Prediction, clone

__all__ = [
    "CalibrationResult", "ConsistencyReport", "LOOResult", "QUANTITIES", "apply_recalibration",
    "label_consistency",
    "calibration_metrics", "calibration_report", "committee_predict", "coverage_curve",
    "ence", "fit_committee", "fit_recalibration", "gaussian_nll", "isotonic_fit",
    "leave_one_out", "miscalibration_area", "quantity_errors", "reliability_curve",
    "sharpness", "spearman", "z_scores",
]

#: quantities understood by :func:`calibration_report`, with their units
QUANTITIES = {"energy_per_atom": "eV/atom", "forces": "eV/Å"}
# the Prediction field each quantity's variance comes from (its ``variance_form`` key)
_FIELD = {"energy_per_atom": "energy", "forces": "forces"}


def _quantity(name: str) -> str:
    """``name`` checked; the pre-0.2 ``"energy"`` (per atom) warns and maps to
    ``"energy_per_atom"``."""
    if name == "energy":
        import warnings

        warnings.warn('the uq quantity "energy" (per atom) is now "energy_per_atom"; the old '
                      "name goes in gapkit 0.3", DeprecationWarning, stacklevel=3)
        return "energy_per_atom"
    if name not in QUANTITIES:
        raise ValueError(f"unknown quantity {name!r}; use one of {list(QUANTITIES)}")
    return name


class _ByQuantity(dict):
    """A dict keyed by quantity that still answers the pre-0.2 key ``"energy"``."""

    def __missing__(self, key):
        if key == "energy" and "energy_per_atom" in self:
            return self[_quantity(key)]
        raise KeyError(key)

    def __contains__(self, key):
        return dict.__contains__(self, key) or (key == "energy"
                                                and dict.__contains__(self, "energy_per_atom"))
#: default central-interval levels of the coverage curve
DEFAULT_LEVELS = np.linspace(0.01, 0.99, 99)


# ------------------------------------------------------------------ input checks
def _check_arrays(errors, variance, *, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Flatten and validate errors and variances (same shape, variances finite and > 0)."""
    if variance is None:
        raise ValueError(f"{what or 'the prediction'} has no variances; predict with "
                         "return_variance=True (and forces_variance='projected' or 'exact' "
                         "for forces)")
    e = np.asarray(errors, dtype=float)
    v = np.asarray(variance, dtype=float)
    if e.shape != v.shape:
        raise ValueError(f"{what + ': ' if what else ''}errors have shape {e.shape} but "
                         f"variances have shape {v.shape}")
    e, v = e.ravel(), v.ravel()
    if e.size == 0:
        raise ValueError(f"{what + ': ' if what else ''}no values to assess")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{what + ': ' if what else ''}errors contain NaN or inf")
    bad = ~(np.isfinite(v) & (v > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{what + ': ' if what else ''}{int(bad.sum())} of {v.size} variances are zero, "
            f"negative or not finite (e.g. index {i}: {v[i]!r}); z-scores and likelihoods "
            "would be infinite. Add the observation noise (include_noise=True) or drop them")
    return e, v


# ------------------------------------------------------------------ metrics
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


# ------------------------------------------------------------ predictions vs labels
def _noise_included(pred, quantity: str) -> bool:
    return "+noise" in str(pred.variance_form.get(_FIELD[quantity], ""))


def quantity_errors(pred, frames, quantity: str, *, model=None, include_noise: bool = True,
                    keys: dict | None = None):
    """Errors, latent (epistemic) and noise (aleatoric) variances of one quantity.

    Parameters
    ----------
    pred : gapkit.Prediction
        With variances.
    frames : list of ase.Atoms
        The predicted frames, with reference labels.
    quantity : {"energy_per_atom", "forces"}
        Energy per atom (eV/atom) or force components (eV/Å).
    model : gapkit.GAP, optional
        Supplies the noise model (needed when ``include_noise``) and the extxyz keys.
    include_noise : bool
        Return the noise variance of each value (else zeros).

    Returns
    -------
    errors, epistemic_variance, aleatoric_variance : ndarray (flat)
        The epistemic variance is the prediction's (GP posterior, or whatever the
        prediction holds: committee spread, recalibrated predictive variance). If the
        prediction's variance already includes the noise (``variance_form`` ending in
        ``+noise``, as after :func:`apply_recalibration`), the aleatoric part is zero.
    """

    quantity = _quantity(quantity)
    frames = list(frames)
    if len(frames) != len(pred.energy):
        raise ValueError(f"the prediction has {len(pred.energy)} frames but {len(frames)} "
                         "frames with labels were given")
    if keys is None:
        keys = dict(model.keys) if model is not None else {}
    labels = get_all_labels(frames, **keys)
    n_at = np.asarray(pred.n_atoms, dtype=float)
    noise = None
    if include_noise and not _noise_included(pred, quantity):
        if model is None:
            raise ValueError("include_noise=True needs model=... (for its noise model); "
                             "pass include_noise=False to assess the latent variance alone")
        noise = model.noise
    if quantity == "energy_per_atom":
        missing = [k for k, lab in enumerate(labels) if lab.energy is None]
        if missing:
            raise ValueError(f"frames {missing[:5]} have no energy label")
        ref = np.array([lab.energy for lab in labels])
        if pred.energy_variance is None:
            _check_arrays(pred.energy, None, what="energy")
        err = (pred.energy - ref) / n_at
        var = np.asarray(pred.energy_variance, dtype=float) / n_at**2
        alea = np.zeros_like(err)
        if noise is not None:
            alea = np.array([noise.sigmas(lab, int(n))[0] ** 2 for lab, n in zip(labels, n_at)])
            alea = alea / n_at**2
        return err, var, alea
    if pred.forces is None:
        raise ValueError("the prediction has no forces; predict with forces=True")
    missing = [k for k, lab in enumerate(labels) if lab.forces is None]
    if missing:
        raise ValueError(f"frames {missing[:5]} have no force labels")
    ref = np.concatenate([lab.forces for lab in labels])
    if ref.shape != pred.forces.shape:
        raise ValueError(f"predicted forces have shape {pred.forces.shape} but the reference "
                         f"forces have shape {ref.shape}")
    if pred.forces_variance is None:
        _check_arrays(pred.forces, None, what="forces")
    err = (pred.forces - ref).ravel()
    var = np.asarray(pred.forces_variance, dtype=float).ravel()
    alea = np.zeros_like(err)
    if noise is not None:
        alea = np.concatenate([np.full(3 * len(a), noise.sigmas(lab, len(a))[1] ** 2)
                               for a, lab in zip(frames, labels)])
    return err, var, alea


def calibration_report(pred, frames, *,
                       quantities: Sequence[str] = ("energy_per_atom", "forces"),
                       include_noise: bool = True, model=None, n_bins: int = 10,
                       levels=None) -> dict[str, CalibrationResult]:
    """Calibration of a prediction's uncertainty against the labels of ``frames``.

    Parameters
    ----------
    pred : gapkit.Prediction
        From ``model.predict(frames, forces_variance="exact")`` with variances (or
        :func:`committee_predict`, or :func:`apply_recalibration`). This function makes
        no predictions itself: for forces, pass the *exact* (DTC) force variances (the
        default of ``predict``). ``forces_variance="projected"`` omits the part of the
        prior variance the sparse set cannot represent and is typically far too small
        (figures in benchmarks/README.md, ``benchmarks/uq.py``). The form assessed is
        recorded in ``variance_source`` (``"dtc+noise"`` vs ``"projected+noise"``).
    frames : list of ase.Atoms
        The same frames, with reference energies (eV) and forces (eV/Å).
    quantities : sequence of {"energy_per_atom", "forces"}
        Energy per atom (eV/atom) and/or force components (eV/Å).
    include_noise : bool
        Assess the predictive variance ``posterior + noise`` (the interval a new
        reference calculation should fall in; needs ``model``); else the latent
        posterior variance alone.
    model : gapkit.GAP, optional
        The fitted model (noise model, extxyz keys).

    Returns
    -------
    dict ``{quantity: CalibrationResult}``, with the epistemic (posterior) and aleatoric
    (noise) RMS sigma reported separately.
    """
    out = _ByQuantity()
    for q in quantities:
        q = _quantity(q)
        err, epi, alea = quantity_errors(pred, frames, q, model=model,
                                         include_noise=include_noise)
        form = pred.variance_form.get(_FIELD[q])
        if _noise_included(pred, q):
            source, epi_r, alea_r = str(form), None, None
        else:
            source = str(form or "posterior") + ("+noise" if include_noise else "")
            epi_r, alea_r = epi, (alea if include_noise else None)
        out[q] = calibration_metrics(err, epi + alea, quantity=q, unit=QUANTITIES[q],
                                     n_bins=n_bins, levels=levels, epistemic_variance=epi_r,
                                     aleatoric_variance=alea_r, variance_source=source)
    return out


# ------------------------------------------------------------------ recalibration
def isotonic_fit(x, y, weights=None) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing least-squares fit to ``y`` at sorted
    ``x`` (returns fitted values in the order of ``np.argsort(x)``)."""
    order = np.argsort(np.asarray(x, dtype=float), kind="stable")
    y = np.asarray(y, dtype=float)[order]
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)[order]
    vals, wts, sizes = [], [], []
    for yi, wi in zip(y, w):
        vals.append(yi)
        wts.append(wi)
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, s2 = vals.pop(), wts.pop(), sizes.pop()
            ww = wts[-1] + w2
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / ww
            wts[-1] = ww
            sizes[-1] += s2
    return np.repeat(vals, sizes)


def _isotonic_bins(v_sorted: np.ndarray, n_bins: int, min_count: int) -> list[slice]:
    """Contiguous bins of sorted variances: about equal counts, at least ``min_count``
    values each (the last one absorbs a remainder), never splitting tied values."""
    n = v_sorted.size
    min_count = max(int(min_count), 1)
    n_bins = max(1, min(int(n_bins), n // min_count))
    bins, a = [], 0
    while a < n:
        left = max(n_bins - len(bins), 1)  # bins still to make share what is left
        b = min(a + max(min_count, int(round((n - a) / left))), n)
        if b < n:  # extend over ties so that equal variances share a bin
            b = int(np.searchsorted(v_sorted, v_sorted[b - 1], side="right"))
        if n - b < min_count:  # too few left for a bin of their own
            b = n
        bins.append(slice(a, b))
        a = b
    return bins


def _fit_one(errors, variance, method: str, n_knots: int, *, min_count: int = 20,
             floor: float | None = 0.1) -> dict:
    e, v = _check_arrays(errors, variance)
    scale = float(np.mean(e * e / v))
    if method == "scale":
        # maximiser of sum log N(e | 0, s v):  s = mean(e^2 / v)
        return {"method": "scale", "scale": scale}
    if method == "isotonic":
        # monotone map v -> E[e^2 | v]: pool-adjacent-violators on binned means (bins of
        # >= min_count values, ties kept together), weighted by the bin counts
        order = np.argsort(v, kind="stable")
        vs, e2 = v[order], (e * e)[order]
        bins = _isotonic_bins(vs, n_knots, min_count)
        counts = np.array([b.stop - b.start for b in bins], dtype=float)
        x = np.array([vs[b].mean() for b in bins])
        y = isotonic_fit(np.arange(x.size), [e2[b].mean() for b in bins], counts)
        n_floored = 0
        if floor:
            # Protection against exact zeros (force components that vanish by symmetry)
            # and heavy tails: the map never goes below floor * s * v, a fraction of the
            # scale-recalibrated variance. The max of two non-decreasing maps is
            # non-decreasing, and log-log interpolation between knots keeps the floor
            # (log(s v) is linear in log v).
            low = y < floor * scale * x
            n_floored = int(low.sum())
            y = np.where(low, floor * scale * x, y)
        y = np.maximum.accumulate(np.maximum(y, 1e-12 * vs.mean()))
        return {"method": "isotonic", "log_variance": np.log(x).tolist(),
                "log_calibrated": np.log(y).tolist(), "counts": counts.astype(int).tolist(),
                "scale": scale, "floor": float(floor or 0.0), "n_floored": n_floored,
                "min_count": int(min_count),
                "extrapolation": "proportional"}
    raise ValueError(f"unknown recalibration method {method!r}; use 'scale' or 'isotonic'")


def _apply_one(spec: dict, variance: np.ndarray) -> np.ndarray:
    v = np.asarray(variance, dtype=float)
    if spec["method"] == "scale":
        return v * spec["scale"]
    x = np.asarray(spec["log_variance"])
    y = np.asarray(spec["log_calibrated"])
    lv = np.log(np.maximum(v, np.finfo(float).tiny))
    if x.size == 1:
        out = np.full_like(v, math.exp(y[0]))
    else:  # piecewise linear in log-log between the bin knots
        out = np.exp(np.interp(lv, x, y))
    if spec.get("extrapolation") == "proportional":
        # above the top knot: keep its ratio calibrated/raw (a variance larger than any
        # seen in validation stays larger); below the bottom knot: the bottom value
        # (conservative)
        hi = lv > x[-1]
        out[hi] = np.exp(y[-1] + lv[hi] - x[-1])
    return out


def fit_recalibration(model, pred, frames, *, method: str = "scale",
                      quantities: Sequence[str] = ("energy_per_atom", "forces"),
                      include_noise: bool = True, n_knots: int = 20,
                      min_count: int = 20, floor: float | None = 0.1,
                      store: bool = True) -> dict:
    """Fit a variance recalibration per quantity on a validation set.

    Parameters
    ----------
    model : gapkit.GAP
        The fitted model; with ``store`` the result is kept as ``model.recalibration_``
        (and written by ``model.save``).
    pred : gapkit.Prediction
        ``model.predict(frames)`` with variances, on frames *not* used for fitting.
        For forces predict with ``forces_variance="exact"`` (the default): the projected
        form leaves out what the sparse set cannot represent and is typically far too
        small (benchmarks/README.md), which a recalibration can only partly repair. The
        form is recorded in the spec, and :func:`apply_recalibration` warns when it is
        applied to predictions of another form.
    frames : list of ase.Atoms
        Validation frames with reference labels.
    method : {"scale", "isotonic"}
        ``"scale"``: predictive variance times ``s = mean(e^2 / var)``, the closed-form
        maximiser of the Gaussian likelihood. ``"isotonic"``: a monotone map from
        predicted variance to mean squared error, fitted by pool-adjacent-violators on
        ``n_knots`` equal-count bins of sorted variance (at least ``min_count`` values per
        bin, tied variances never split), interpolated in log-log between the bin
        centres; below the lowest bin the lowest value, above the highest bin the
        highest bin's ratio calibrated/raw.
    include_noise : bool
        Recalibrate the predictive variance ``posterior + noise`` (default) or the
        posterior alone.
    n_knots, min_count : int
        Isotonic: the number of bins and the least number of values in one.
    floor : float or None
        Isotonic: the map never goes below ``floor * s * v``, that fraction of the
        scale-recalibrated variance (default 0.1: sigma at most ~3.2x below the scale
        recalibration's); 0 or None disables it. Without it, a validation set whose
        smallest variances have (near-)zero errors — force components that vanish by
        symmetry — maps small variances to ~0 variance, and one held-out outlier there
        gives |z| in the 100s and a catastrophic likelihood.

    Returns
    -------
    dict ``{quantity: spec, "include_noise": bool}``, JSON-serialisable. Energy specs act on
    per-atom variances (eV^2/atom^2), force specs on component variances (eV^2/Å^2).
    """
    out = _ByQuantity(include_noise=bool(include_noise))
    for q in quantities:
        q = _quantity(q)
        err, epi, alea = quantity_errors(pred, frames, q, model=model,
                                         include_noise=include_noise)
        out[q] = _fit_one(err, epi + alea, method, n_knots, min_count=min_count,
                          floor=floor)
        out[q]["variance_form"] = str(pred.variance_form.get(_FIELD[q], ""))
    if store:
        model.recalibration_ = out
    return out


def apply_recalibration(pred, model=None, recalibration: dict | None = None):
    """A copy of ``pred`` whose energy and force variances are recalibrated.

    The returned variances are *predictive* (noise included when the recalibration was
    fitted with ``include_noise``), marked in ``variance_form`` (``"...+noise"``), so that
    :func:`calibration_report` does not add the noise again. Energies: eV^2, forces
    eV^2/Å^2, as in the input.

    Parameters
    ----------
    pred : gapkit.Prediction
    model : gapkit.GAP, optional
        Supplies ``model.recalibration_`` (and the noise model) when
        ``recalibration`` is not given.
    recalibration : dict, optional
        From :func:`fit_recalibration`.
    """

    rec = recalibration if recalibration is not None else getattr(model, "recalibration_",
                                                                  None)
    if not rec:
        raise ValueError("no recalibration: fit one with gapkit.uq.fit_recalibration on a "
                         "validation set first")
    incl = bool(rec.get("include_noise", True))
    if incl and model is None:
        raise ValueError("this recalibration includes the observation noise: pass model=...")
    n_at = np.asarray(pred.n_atoms, dtype=float)
    forms = dict(pred.variance_form)
    # model files written before 0.2 key the per-atom energy spec "energy"
    specs = {"energy_per_atom": rec.get("energy_per_atom", rec.get("energy")),
             "forces": rec.get("forces")}
    for q, spec in specs.items():
        fitted_on = spec.get("variance_form") if isinstance(spec, dict) else None
        field = _FIELD[q]
        if fitted_on and forms.get(field) and forms[field] != fitted_on:
            import warnings

            warnings.warn(f"the {q} recalibration was fitted on {fitted_on!r} variances but "
                          f"is applied to {forms[field]!r} ones (for forces, predict with the "
                          "same forces_variance= as on the validation set)", stacklevel=2)
    new = {}
    blank = Labels()
    spec = specs["energy_per_atom"]
    if spec and pred.energy_variance is not None:
        v = np.asarray(pred.energy_variance) / n_at**2
        if incl:
            v = v + np.array([model.noise.sigmas(blank, int(n))[0] ** 2 for n in n_at]) / n_at**2
        new["energy_variance"] = _apply_one(spec, v) * n_at**2
        forms["energy"] = f"recalibrated-{spec['method']}" + ("+noise" if incl else "")
    if "forces" in rec and pred.forces_variance is not None:
        v = np.asarray(pred.forces_variance, dtype=float)
        if incl:
            v = v + model.noise.sigma("forces") ** 2
        new["forces_variance"] = _apply_one(rec["forces"], v)
        forms["forces"] = f"recalibrated-{rec['forces']['method']}" + ("+noise" if incl else "")
    return replace(pred, variance_form=forms, **new)


# ------------------------------------------------------------------ committees
def fit_committee(model, frames, *, n_models: int = 5, method: str = "subsample",
                  fraction: float = 0.8, seed: int = 0) -> list:
    """Fit an ensemble of GAP models, copies of ``model``'s settings.

    Parameters
    ----------
    model : gapkit.GAP
        Template (fitted or not; it is not modified).
    frames : list of ase.Atoms
        Training data.
    method : {"subsample", "sparse_seed"}
        ``"subsample"``: each member sees a random ``fraction`` of the frames (without
        replacement; distinct subsets while possible) and its own sparse-point seed;
        ``"sparse_seed"``: all frames, different sparse-point seeds (with
        ``sparse_method="random"`` terms, else the members of a deterministic CUR/FPS
        selection are identical).
    """
    if n_models < 2:
        raise ValueError("a committee needs at least 2 models")
    if method not in ("subsample", "sparse_seed"):
        raise ValueError(f"unknown committee method {method!r}; use 'subsample' or "
                         "'sparse_seed'")
    frames = list(frames)
    rng = np.random.default_rng(seed)
    members, seen = [], set()
    n = min(len(frames), max(2, int(round(fraction * len(frames)))))
    n_subsets = math.comb(len(frames), n)
    for k in range(n_models):
        member = clone(model)
        member.random_state = int(seed * 1000 + k)
        if method == "subsample":
            for _ in range(100):  # distinct subsets while there are enough of them
                idx = np.sort(rng.choice(len(frames), size=n, replace=False))
                if tuple(idx) not in seen or len(seen) >= n_subsets:
                    break
            seen.add(tuple(idx))
            data = [frames[i] for i in idx]
        else:
            data = frames
        members.append(member.fit(data))
    return members


def committee_predict(members, frames, *, forces: bool = True, virial: bool | None = False):
    """Committee mean and spread as a :class:`gapkit.Prediction`.

    Energies (eV), forces (eV/Å) and local energies are the members' mean; the
    variances are the sample variances across members (ddof=1, eV^2 and eV^2/Å^2): the
    committee's epistemic uncertainty, to compare with the GP posterior variance.
    """
    preds = [m.predict(frames, forces=forces, virial=virial, return_variance=False)
             for m in members]

    def stack(name):
        vals = [getattr(p, name) for p in preds]
        if vals[0] is None:
            return None, None
        a = np.stack(vals)
        return a.mean(0), a.var(0, ddof=1)

    e, ev = stack("energy")
    f, fv = stack("forces")
    v, vv = stack("virial")
    loc, lv = stack("local_energy")
    forms = {k: "committee" for k, x in (("energy", ev), ("forces", fv), ("virial", vv),
                                         ("local_energy", lv)) if x is not None}
    return Prediction(energy=e, forces=f, virial=v, local_energy=loc,
                      atom_offsets=preds[0].atom_offsets, energy_variance=ev,
                      forces_variance=fv, virial_variance=vv, local_energy_variance=lv,
                      variance_form=forms)


# ------------------------------------------------------------------ data hygiene
@dataclass(frozen=True)
class LOOResult:
    """Closed-form leave-one-out diagnostics of a fitted sparse GAP.

    Per observation (arrays of length N, in the model's observation order: per frame
    the energy, the force components, the Voigt virials):

    Attributes
    ----------
    frame, kind, atom, component : ndarray of int
        As :class:`gapkit.gp.observations.Observations` (kind 0 energy, 1 force, 2 virial).
    y : ndarray
        Label (energy minus the e0 baseline, eV; forces eV/Å; virial eV).
    sigma : ndarray
        Noise standard deviation (same unit).
    residual : ndarray
        ``y - mu`` with the model fitted on all data.
    leverage : ndarray
        Hat-matrix diagonal ``h_n = |R^-T b_n|^2`` (0..1), ``b_n`` the whitened row.
    loo_residual : ndarray
        Single-observation LOO residual ``(y_n - mu_n) / (1 - h_n)``.
    frame_loo_residual : ndarray
        LOO residual of each observation when its whole frame is left out:
        ``sigma_f (I - H_ff)^-1 Sigma_f^-1/2 r_f``.
    frame_loo_z : ndarray
        That residual over its marginal predictive standard deviation (noise included,
        ``sqrt([(I - H_ff)^-1]_nn)`` in whitened units).

    Per frame (arrays of length n_frames):

    frame_leverage : ndarray
        ``trace H_ff``: how much the frame's labels determine its own fit.
    frame_chi2 : ndarray
        ``r~_f^T (I - H_ff)^-1 r~_f``: the Mahalanobis norm of the frame's LOO
        residual under the model's predictive covariance (chi-squared with ``n_f``
        degrees of freedom when the model is right).
    frame_dof : ndarray of int
        ``n_f``, observations per frame.
    frame_chi2_z : ndarray
        ``frame_chi2`` as a standard-normal equivalent of its upper tail (absolute:
        inflated for every frame when the noise model is too small).
    frame_misfit : ndarray of shape (n_frames, 3)
        Mean ``frame_loo_z^2`` per observation kind (energy, forces, virial; nan where
        absent).
    frame_score : ndarray
        How surprising the frame's worst observation kind is: for each kind, the sum of
        its ``frame_loo_z^2`` over a noise scale set by the median frame (robust to a
        globally misjudged noise level), read as a chi-squared with one degree of
        freedom per observation and turned into a standard-normal equivalent of its
        upper tail; the largest over kinds. A few units for typical frames (force
        components of one frame are correlated, so the tail is a little heavier than
        chi-squared); a bad label stands far above the rest. One energy and 3N force
        components are judged on the same scale.
    energy_loo_per_atom : ndarray
        Frame-LOO energy residual per atom (eV/atom; nan without an energy label).
    energy_loo_z : ndarray
        That residual over its predictive standard deviation.
    forces_loo_rmse : ndarray
        RMS frame-LOO force residual (eV/Å; nan without forces).
    ranking : ndarray of int
        Frame indices, most suspicious first (by ``frame_score``).
    """

    frame: np.ndarray
    kind: np.ndarray
    atom: np.ndarray
    component: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    residual: np.ndarray
    leverage: np.ndarray
    loo_residual: np.ndarray
    frame_loo_residual: np.ndarray
    frame_loo_z: np.ndarray
    frame_leverage: np.ndarray
    frame_chi2: np.ndarray
    frame_dof: np.ndarray
    frame_chi2_z: np.ndarray
    frame_misfit: np.ndarray
    frame_score: np.ndarray
    energy_loo_per_atom: np.ndarray
    energy_loo_z: np.ndarray
    forces_loo_rmse: np.ndarray
    ranking: np.ndarray

    def suspicious(self, n: int = 10) -> list[dict]:
        """The ``n`` most suspicious frames, as dicts for printing."""
        return [{"frame": int(k), "score": float(self.frame_score[k]),
                 "chi2": float(self.frame_chi2[k]), "dof": int(self.frame_dof[k]),
                 "misfit_energy": float(self.frame_misfit[k, 0]),
                 "misfit_forces": float(self.frame_misfit[k, 1]),
                 "energy_loo_eV_per_atom": float(self.energy_loo_per_atom[k]),
                 "energy_loo_z": float(self.energy_loo_z[k]),
                 "forces_loo_rmse_eV_per_A": float(self.forces_loo_rmse[k]),
                 "leverage": float(self.frame_leverage[k])} for k in self.ranking[:n]]


def leave_one_out(model, frames) -> LOOResult:
    """Leave-one-out residuals and leverages of a fitted GAP, without refitting.

    With the whitened design ``B = Sigma^-1/2 K_NM`` and ``A = R^T R = K_MM + B^T B``
    (the fitted QR factor), the fit is the linear smoother ``mu~ = H y~`` with
    ``H = B A^-1 B^T``. Leaving out observation n (the sparse points, e0 and
    hyper-parameters fixed) gives ``y_n - mu_{-n} = (y_n - mu_n) / (1 - h_n)``, with
    ``h_n = |R^-T b_n|^2``; leaving out a whole frame f gives
    ``r~_{-f} = (I - H_ff)^-1 r~_f`` with ``H_ff = C_f^T C_f``, ``C_f = R^-T B_f^T``.
    Exact for the DTC model (equal to refitting without the frame); one pass over
    ``frames`` rebuilds the design rows block by block, memory O(M x block).

    Parameters
    ----------
    model : gapkit.GAP
        Fitted on exactly ``frames`` (same labels and noise model).
    frames : list of ase.Atoms or path
        The training frames.
    """
    import torch

    model.check_fitted()
    data = model.training_data(frames)
    frames, obs = data.frames, data.observations
    n_rows = obs.n_rows
    res = np.empty(n_rows)
    lev = np.empty(n_rows)
    floo = np.empty(n_rows)
    fz = np.empty(n_rows)
    n_frames = len(frames)
    f_lev = np.zeros(n_frames)
    f_chi2 = np.zeros(n_frames)
    f_dof = np.zeros(n_frames, dtype=int)
    e_z = np.full(n_frames, np.nan)
    rt = model.R_.T
    for start, sel, block, rows in model.design_blocks(data):
        with torch.no_grad():
            mu = (rows @ model.alpha_).numpy()
            sig = torch.as_tensor(block.sigma, dtype=rows.dtype)
            # C = R^-T B^T with B = Sigma^-1/2 K_NM: h_n = |C[:, n]|^2, H_ff = C_f^T C_f
            c = torch.linalg.solve_triangular(rt, (rows / sig[:, None]).T, upper=False)
        c = c.numpy()
        r = block.y - mu
        res[sel] = r
        h = (c * c).sum(0)
        lev[sel] = h
        rw = r / block.sigma
        for f in np.unique(block.frame):
            loc = np.nonzero(block.frame == f)[0]
            cf = c[:, loc]
            hff = cf.T @ cf
            ih = np.eye(loc.size) - hff
            inv = np.linalg.inv(ih)
            x = inv @ rw[loc]
            floo[sel[loc]] = x * block.sigma[loc]
            fz[sel[loc]] = x / np.sqrt(np.diagonal(inv))
            g = start + int(f)
            ie = np.nonzero(block.kind[loc] == ENERGY)[0]
            if ie.size:
                e_z[g] = x[ie[0]] / math.sqrt(inv[ie[0], ie[0]])
            f_lev[g] = float(np.trace(hff))
            f_chi2[g] = float(rw[loc] @ x)
            f_dof[g] = loc.size
    loo = res / (1.0 - lev)
    chi2_z = _chi2_to_z(f_chi2, f_dof)
    misfit = np.full((n_frames, 3), np.nan)
    for k in range(len(KINDS)):
        m = obs.kind == k
        if m.any():
            sq = np.bincount(obs.frame[m], weights=fz[m] ** 2, minlength=n_frames)
            cnt = np.bincount(obs.frame[m], minlength=n_frames)
            with np.errstate(invalid="ignore", divide="ignore"):
                misfit[:, k] = np.where(cnt > 0, sq / cnt, np.nan)
    from scipy.stats import chi2 as chi2_dist

    # per kind: the frame's sum of z^2 relative to the typical frame's, as the
    # standard-normal equivalent of its chi-squared tail with as many degrees of freedom
    # as the frame has observations of that kind, so that one energy and 3N force
    # components are judged on the same scale (a mean over 3N components is far less
    # noisy than one squared energy z)
    score = np.full(n_frames, -np.inf)
    for k in range(len(KINDS)):
        col = misfit[:, k]
        ok = ~np.isnan(col)
        if not ok.any():  # this kind is absent (e.g. no virials for molecules)
            continue
        cnt = np.bincount(obs.frame[obs.kind == k], minlength=n_frames)[ok]
        # the noise scale s^2 from the median frame: mean z^2 of a frame with n
        # observations has median chi2.median(n) / n when the model is right
        s2 = float(np.median(col[ok] / (chi2_dist.median(cnt) / cnt)))
        if s2 > 0:
            score[ok] = np.maximum(score[ok], _chi2_to_z(cnt * col[ok] / s2, cnt))
    score = np.where(score == -np.inf, 0.0, score)  # frames with no observations
    n_at = np.array([len(a) for a in frames], dtype=float)
    e_loo = np.full(n_frames, np.nan)
    f_rmse = np.full(n_frames, np.nan)
    emask = obs.kind == ENERGY
    for n in np.nonzero(emask)[0]:
        f = obs.frame[n]
        e_loo[f] = floo[n] / n_at[f]
    fmask = obs.kind == FORCES
    if fmask.any():
        sq = np.bincount(obs.frame[fmask], weights=floo[fmask] ** 2, minlength=n_frames)
        cnt = np.bincount(obs.frame[fmask], minlength=n_frames)
        with np.errstate(invalid="ignore", divide="ignore"):
            f_rmse = np.where(cnt > 0, np.sqrt(sq / np.maximum(cnt, 1)), np.nan)
    ranking = np.argsort(-score, kind="stable")
    return LOOResult(frame=obs.frame, kind=obs.kind, atom=obs.atom, component=obs.component,
                     y=obs.y, sigma=obs.sigma, residual=res, leverage=lev, loo_residual=loo,
                     frame_loo_residual=floo, frame_loo_z=fz, frame_leverage=f_lev,
                     frame_chi2=f_chi2, frame_dof=f_dof, frame_chi2_z=chi2_z,
                     frame_misfit=misfit, frame_score=score, energy_loo_per_atom=e_loo,
                     energy_loo_z=e_z, forces_loo_rmse=f_rmse, ranking=ranking)


def _chi2_to_z(chi2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Standard-normal equivalent of the chi-squared upper tail, stable far in the tail."""
    from scipy.special import ndtri_exp
    from scipy.stats import chi2 as chi2_dist

    out = np.full(chi2.shape, -np.inf)
    ok = dof > 0
    with np.errstate(divide="ignore"):
        logsf = chi2_dist.logsf(chi2[ok], dof[ok])
    # beyond double precision (logsf = -inf): the leading term of the upper incomplete
    # gamma function, sf ~ (x/2)^(k/2-1) exp(-x/2) / Gamma(k/2) for x >> k
    far = ~np.isfinite(logsf)
    if far.any():
        from scipy.special import gammaln

        k = dof[ok][far].astype(float)
        x = chi2[ok][far]
        logsf[far] = (k / 2 - 1) * np.log(x / 2) - x / 2 - gammaln(k / 2)
    out[ok] = -ndtri_exp(logsf)
    return out



# ------------------------------------------------------------ label consistency
@dataclass
class ConsistencyReport:
    """Labels of one kind compared with what a model fitted without them predicts.

    Attributes
    ----------
    kind : {"virial", "forces"}
        The kind checked (eV for virials, eV/Å for forces).
    table : list of dict
        One row per config_type and component (Voigt ``xx yy zz yz xz xy`` for virials,
        ``x y z`` for forces): ``config_type``, ``component``, ``n`` (values), ``r``
        (Pearson correlation of stored and predicted values), ``best_match`` (the
        stored component that correlates best with this predicted one), ``r_best``,
        ``slope`` (least-squares stored/predicted), ``flag`` (None or the reason:
        ``"swapped with ..."``, ``"sign flipped"``, ``"scaled by ..."``,
        ``"uncorrelated"``).
    frames : list of dict
        The frames whose labels of this kind deviate most from the prediction
        (``frame``, ``config_type``, ``z``: RMS of ``(stored - predicted) / scale`` over
        the frame's components, with ``scale`` the RMS deviation of the frame's
        config_type), those with ``z > 3``.
    """

    kind: str
    table: list
    frames: list

    @property
    def flagged(self) -> list:
        """The rows with a flag."""
        return [row for row in self.table if row["flag"]]

    @property
    def ok(self) -> bool:
        """No component flagged."""
        return not self.flagged

    def summary(self) -> str:
        """One line per flagged (config_type, component), or that all agree."""
        if self.ok:
            return f"{self.kind}: every config_type and component agrees with the model"
        return "\n".join(f"{self.kind} {row['config_type']} {row['component']}: {row['flag']} "
                         f"(r {row['r']:.2f}, best match {row['best_match']} r "
                         f"{row['r_best']:.2f}, {row['n']} values)" for row in self.flagged)


_COMPONENTS = {"virial": ("xx", "yy", "zz", "yz", "xz", "xy"), "forces": ("x", "y", "z")}


def label_consistency(model, frames, *, kind: str = "virial", min_values: int = 20,
                      r_min: float = 0.5, warn: bool = True) -> ConsistencyReport:
    """Check one label kind against a model fitted on the other kinds, before fitting it.

    A clone of ``model`` (its settings: descriptors, noise, e0, baselines) is fitted on
    ``frames`` *without* the labels of ``kind`` and predicts them. Per config_type and
    component, the stored labels should then correlate with the predictions, with a
    least-squares slope near 1. A component whose stored values match *another*
    predicted component better (a Voigt order mix-up), a negative slope (a sign
    convention), a slope far from 1 (units) or no correlation is flagged, and the frames
    whose labels deviate most are listed. Virials are the usual suspect: the Zuo et al.
    2020 Si data first shipped with yz and xz swapped on every AIMD and vacancy frame,
    which this finds (r 0.97 with the other component).

    Parameters
    ----------
    model : gapkit.GAP
        Its settings are used (it is not modified or fitted).
    frames : list of ase.Atoms or path
        Labelled frames; those without a label of ``kind`` are skipped in the table.
    kind : {"virial", "forces"}
        Virials (checked against a fit on energies and forces) or forces (against a fit
        on energies and virials).
    min_values : int
        Config types with fewer values of a component are reported but not flagged.
    r_min : float
        A correlation below this is flagged as "uncorrelated".
    warn : bool
        Emit a UserWarning naming the flagged config types and components.

    Returns
    -------
    ConsistencyReport
    """
    import warnings

    if kind not in _COMPONENTS:
        raise ValueError(f"kind must be 'virial' or 'forces', got {kind!r}")
    if isinstance(frames, (str, Path)):
        frames = read_extxyz(frames, **model.keys)
    frames = list(frames)
    others = tuple(k for k in model.use if k != kind)
    if not others:
        raise ValueError(f"model.use={model.use!r} leaves nothing to fit besides {kind}")
    fitted = clone(model).set_params(use=others, progress=False)
    fitted.fit(frames)
    labels = get_all_labels(frames, **model.keys)
    pred = fitted.predict(frames, forces=kind == "forces", virial=kind == "virial",
                          return_variance=False)
    names = _COMPONENTS[kind]
    stored, predicted, ctypes, frame_of = [], [], [], []
    for k, (atoms, lab) in enumerate(zip(frames, labels)):
        if kind == "virial":
            if lab.virial is None or pred.virial is None:
                continue
            w = np.asarray(lab.virial)
            stored.append([w[a, b] for a, b in _VOIGT])
            predicted.append([pred.virial[k][a, b] for a, b in _VOIGT])
            ctypes.append(lab.config_type)
            frame_of.append(k)
        else:
            if lab.forces is None:
                continue
            f = pred.frame_forces(k)
            for j in range(len(atoms)):
                stored.append(np.asarray(lab.forces)[j])
                predicted.append(f[j])
                ctypes.append(lab.config_type)
                frame_of.append(k)
    stored, predicted = np.asarray(stored, float), np.asarray(predicted, float)
    ctypes, frame_of = np.asarray(ctypes, dtype=object), np.asarray(frame_of)
    table, frame_rows = [], []
    for ct in sorted({str(c) for c in ctypes}):
        sel = np.array([str(c) == ct for c in ctypes])
        s, p = stored[sel], predicted[sel]
        for c, name in enumerate(names):
            r_all = [_pearson(s[:, other], p[:, c]) for other in range(len(names))]
            best = int(np.nanargmax(np.abs(r_all))) if np.any(np.isfinite(r_all)) else c
            r = r_all[c]
            denom = float(p[:, c] @ p[:, c])
            slope = float(s[:, c] @ p[:, c]) / denom if denom > 0 else float("nan")
            flag = None
            if sel.sum() >= min_values and np.isfinite(r):
                if best != c and abs(r_all[best]) > max(abs(r), r_min) + 0.2:
                    flag = f"swapped with {names[best]}"
                elif r < -r_min:
                    flag = "sign flipped"
                elif r < r_min:
                    flag = "uncorrelated"
                elif not 0.5 < slope < 2.0:
                    flag = f"scaled by {slope:.3g}"
            table.append({"config_type": ct, "component": name, "n": int(sel.sum()),
                          "r": float(r), "best_match": names[best],
                          "r_best": float(r_all[best]), "slope": slope, "flag": flag})
        dev = s - p
        scale = float(np.sqrt(np.mean(dev**2))) or 1.0
        for k in np.unique(frame_of[sel]):
            rows = sel & (frame_of == k)
            z = float(np.sqrt(np.mean((stored[rows] - predicted[rows]) ** 2))) / scale
            if z > 3.0:
                frame_rows.append({"frame": int(k), "config_type": ct, "z": z})
    frame_rows.sort(key=lambda row: -row["z"])
    report = ConsistencyReport(kind, table, frame_rows)
    if warn and not report.ok:
        warnings.warn(f"{kind} labels disagree with a model fitted on "
                      f"{'+'.join(others)}:\n{report.summary()}\nCheck the component order, "
                      f"sign and units of these labels, or fit without them "
                      f"(GAP(use={others!r}))", UserWarning, stacklevel=2)
    return report


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / den if den > 0 else float("nan")
