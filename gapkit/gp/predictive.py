"""The predictive variance of a new label, calibrated on held-out folds ("prior-scaled
noise").

The latent variance ``v`` of the DTC posterior (:mod:`gapkit.gp.posterior`) says how well
the training data pin the GP function down. The error of a prediction against a new
reference label also holds what the model cannot represent and the noise of the label; on
the Zuo data that part grows with how much the prior lets the quantity vary, ``p``, its
exact prior variance. Per kind (energy, forces, virial) the predictive variance is

    ``sigma^2 = a v + b p^q``

fitted on the out-of-fold residuals ``r``, latent variances ``v`` and prior variances
``p`` of the K-fold cross-validation of :mod:`gapkit.gp.cv`: for ``f`` in :data:`F_GRID` and
``q`` in :data:`Q_GRID`, ``w = f v / med(v) + (1 - f) (p / med(p))^q`` and the scale ``k^2``
that puts the median of ``|r| / sqrt(k^2 w)`` at the normal's 0.6745; the ``(f, q)`` with the
smallest miscalibration area wins, and ``a = k^2 f / med(v)``, ``b = k^2 (1 - f) /
med(p)^q``. The regularisation noise of the fit (``GAP.noise_``) and this predictive noise
are separate numbers.

A quantity whose prior variance is zero (a force or virial component fixed by the
structure's symmetry: its design row is exactly zero too) is predicted exactly, so its
sigma is 0, and it is left out of the fit and of the calibration metrics. For virials
``v`` is the projected form and ``p`` the Nyström prior ``|U^-T k*|^2`` (the exact virial
prior is not computed).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["F_GRID", "MIN_ROWS", "Q_GRID", "TAIL_SHARE", "TAIL_Z", "ZERO_PRIOR_RTOL",
           "apply_predictive", "check_spec", "fit_predictive", "fixed_by_symmetry",
           "miscalibration_area_abs", "predictive_variance"]

#: the weights of the latent variance tried
F_GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97)
#: the powers of the prior variance tried
Q_GRID = (0.0, 0.25, 0.5, 1.0)
#: a prior variance below this fraction of the largest in the training data is zero (fixed
#: by symmetry; round-off leaves ~1e-16 of the scale)
ZERO_PRIOR_RTOL = 1e-12
#: fewer out-of-fold rows of a kind than this: that kind is not calibrated
MIN_ROWS = 20
#: the tail that is reported: the share of out-of-fold |z| above TAIL_Z ...
TAIL_Z = 5.0
#: ... warned about above this share (a Gaussian has 6e-7)
TAIL_SHARE = 0.005

_LEVELS = np.linspace(0.01, 0.99, 99)
_MEDIAN_ABS_Z = 0.6744897501960817  # the median of |z| for a standard normal


def _half_widths() -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(0.5 + 0.5 * _LEVELS)


def miscalibration_area_abs(abs_z: np.ndarray) -> float:
    """Mean ``|observed - expected|`` coverage of the central Gaussian intervals over the
    levels 0.01 ... 0.99, from ``|z|`` (the area of :func:`gapkit.uq.miscalibration_area`)."""
    zs = np.sort(np.asarray(abs_z, dtype=float))
    observed = np.searchsorted(zs, _half_widths(), side="right") / zs.size
    return float(np.mean(np.abs(observed - _LEVELS)))


def fixed_by_symmetry(prior, reference: float) -> np.ndarray:
    """The values whose prior variance is zero up to round-off (below
    :data:`ZERO_PRIOR_RTOL` of ``reference``, the largest prior variance of the kind in
    the training data)."""
    return np.asarray(prior, dtype=float) <= ZERO_PRIOR_RTOL * reference


def fit_predictive(residual, latent, prior) -> dict | None:
    """The form ``a v + b p^q`` fitted on out-of-fold ``residual``, ``latent`` variances and
    ``prior`` variances of one kind (flat arrays; see the module docstring).

    Returns None with fewer than :data:`MIN_ROWS` rows that are not fixed by symmetry, else
    a dict: ``a``, ``b``, ``q``, ``p_ref`` (what :func:`predictive_variance` needs), ``f``,
    ``area`` (out-of-fold miscalibration area of the chosen form), ``tail_share``
    (out-of-fold share of ``|z| >`` :data:`TAIL_Z`), ``n`` (rows used), ``n_fixed`` (rows
    fixed by symmetry, left out), ``fixed_max_abs_residual`` (their largest ``|r|``),
    ``table`` (the area of every ``(f, q)``).
    """
    r = np.abs(np.asarray(residual, dtype=float))
    v = np.maximum(np.asarray(latent, dtype=float), 0.0)
    p = np.maximum(np.asarray(prior, dtype=float), 0.0)
    positive = p[p > 0]
    if positive.size == 0:
        return None
    fixed = fixed_by_symmetry(p, float(positive.max()))
    r_fixed = r[fixed]
    r, v, p = r[~fixed], v[~fixed], p[~fixed]
    if r.size < MIN_ROWS or not np.any(r > 0):
        return None
    med_v, med_p = float(np.median(v)), float(np.median(p))
    table, best = [], None
    for f in F_GRID:
        if f > 0 and med_v <= 0:  # no latent variance to weight
            continue
        for q in Q_GRID:
            w = (f * v / med_v if f > 0 else 0.0) + (1 - f) * (p / med_p) ** q
            ok = w > 0
            if not ok.all():  # a zero weight claims an exact prediction: not this form
                continue
            k2 = (float(np.median(r / np.sqrt(w))) / _MEDIAN_ABS_Z) ** 2
            if k2 <= 0:
                continue
            absz = r / np.sqrt(k2 * w)
            area = miscalibration_area_abs(absz)
            table.append({"f": f, "q": q, "area": area})
            if best is None or area < best[0]:
                best = (area, f, q, k2, float(np.mean(absz > TAIL_Z)))
    if best is None:
        return None
    area, f, q, k2, tail = best
    return {"a": k2 * f / med_v if f > 0 else 0.0, "b": k2 * (1 - f) / med_p ** q, "q": q,
            "p_ref": float(positive.max()), "f": f, "area": area, "tail_share": tail,
            "n": int(r.size), "n_fixed": int(fixed.sum()),
            "fixed_max_abs_residual": float(r_fixed.max()) if r_fixed.size else 0.0,
            "table": table}


def predictive_variance(spec: dict, latent, prior) -> np.ndarray:
    """``a v + b p^q`` of a :func:`fit_predictive` ``spec`` (same shape as ``latent``),
    exactly 0 where the prior variance is zero (fixed by symmetry)."""
    v = np.maximum(np.asarray(latent, dtype=float), 0.0)
    p = np.maximum(np.asarray(prior, dtype=float), 0.0)
    out = spec["a"] * v + spec["b"] * p ** spec["q"]
    out[fixed_by_symmetry(p, spec["p_ref"])] = 0.0
    return out


def check_spec(spec) -> dict:
    """A stored ``spec`` (from a model file) checked: the numbers :func:`predictive_variance`
    reads, finite and non-negative, ``a + b > 0``; ValueError otherwise."""
    if not isinstance(spec, dict):
        raise ValueError(f"a predictive-variance form must be a table, got {spec!r}")
    for key in ("a", "b", "q", "p_ref"):
        value = spec.get(key)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value < 0):
            raise ValueError(f"predictive-variance form: {key} must be a finite number "
                             f">= 0, got {value!r}")
    if spec["a"] + spec["b"] <= 0 or spec["p_ref"] <= 0:
        raise ValueError("predictive-variance form: a + b and p_ref must be positive")
    return spec


def apply_predictive(forms_by_kind: dict | None, arrays: dict, variance_form: dict) -> dict:
    """Replace, in the arrays of :func:`gapkit.gp.posterior.predict_frames`, each kind's
    latent variance by its calibrated predictive variance where the model has a form for
    that kind and the prediction has the prior it needs (forces: the exact force
    variance); the latent variances move to ``*_latent_variance`` (which are set in any
    case) and ``variance_form`` says ``"calibrated+noise"`` for each kind replaced. The
    prior arrays are removed. Returns ``arrays``."""
    for kind in ("energy", "forces", "virial"):
        latent = arrays.get(f"{kind}_variance")
        prior = arrays.pop(f"{kind}_prior", None)
        arrays[f"{kind}_latent_variance"] = latent
        spec = (forms_by_kind or {}).get(kind)
        if spec is None or latent is None or prior is None:
            continue
        arrays[f"{kind}_variance"] = predictive_variance(spec, latent, prior)
        variance_form[kind] = "calibrated+noise"
    return arrays
