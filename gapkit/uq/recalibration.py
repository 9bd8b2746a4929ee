"""Variance recalibration: a scale or an isotonic map fitted on a validation set,
stored on the model and applied to its predictions."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..data import Labels, get_all_labels
from ._quantities import _FIELD, _ByQuantity, _check_arrays, _quantity
from .calibration import quantity_errors


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
    bins: list[slice] = []
    a = 0
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


def apply_recalibration(pred, model=None, recalibration: dict | None = None, *,
                        frames=None):
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
    frames : list of ase.Atoms, optional
        The predicted frames: the noise added is then each frame's own sigma (its
        config_type and per-frame values), the one the map was fitted with. Without them
        it is the model's default sigma, with a warning when its noise has config_type
        values.
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
    labels = [Labels()] * len(n_at)
    if incl and frames is not None:
        labels = get_all_labels(frames, **model.keys)
    elif incl and (_fitted_noise(model).config_type or _fitted_noise(model).config_type_scale):
        import warnings

        warnings.warn("the model's noise differs by config_type but no frames= were given: "
                      "the default sigma is added to every prediction; pass frames= to add "
                      "each frame's own", UserWarning, stacklevel=2)
    if incl:  # (energy, force) sigma of each frame, as the map was fitted with
        sig = np.array([_fitted_noise(model).sigmas(lab, int(n))[:2]
                        for lab, n in zip(labels, n_at)]).reshape(-1, 2)
    spec = specs["energy_per_atom"]
    if spec and pred.energy_variance is not None:
        v = np.asarray(pred.energy_variance) / n_at**2
        if incl:
            v = v + sig[:, 0] ** 2 / n_at**2
        new["energy_variance"] = _apply_one(spec, v) * n_at**2
        forms["energy"] = f"recalibrated-{spec['method']}" + ("+noise" if incl else "")
    if "forces" in rec and pred.forces_variance is not None:
        v = np.asarray(pred.forces_variance, dtype=float)
        if incl:
            v = v + np.repeat(sig[:, 1], n_at.astype(int))[:, None] ** 2
        new["forces_variance"] = _apply_one(rec["forces"], v)
        forms["forces"] = f"recalibrated-{rec['forces']['method']}" + ("+noise" if incl else "")
    return replace(pred, variance_form=forms, **new)


def _fitted_noise(model):
    """The noise a model was fitted with: ``noise_`` of a GAP, ``noise`` of an ExactGP."""
    return getattr(model, "noise_", model.noise)
