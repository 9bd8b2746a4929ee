"""Figures (the only module that imports matplotlib). Functions take arrays, return a Figure."""

from __future__ import annotations

import numpy as np

__all__ = ["parity", "error_vs_sigma"]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        try:
            import matplotlib.pyplot as plt  # noqa: F401
        except Exception:  # pragma: no cover - headless fallback
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity(reference, predicted, *, sigma=None, ax=None, label="", unit="eV",
           title=None, max_points: int = 20000, seed: int = 0):
    """Predicted vs reference values with the y = x line, MAE and RMSE in the legend.

    Parameters
    ----------
    reference, predicted : array-like of shape (n,)
    sigma : array-like of shape (n,), optional
        Predicted standard deviations, drawn as error bars (same unit).
    label : str
        Quantity name for the axes, e.g. "energy per atom".
    unit : str
        Unit shown on both axes and in the legend.
    max_points : int
        Plot at most this many points (a seeded random subset) to keep files small;
        the statistics use all points.
    """
    plt = _plt()
    ref = np.asarray(reference, dtype=float).ravel()
    pred = np.asarray(predicted, dtype=float).ravel()
    if ref.shape != pred.shape:
        raise ValueError(f"reference has shape {ref.shape} but predicted has {pred.shape}")
    err = pred - ref
    mae, rmse = np.abs(err).mean(), np.sqrt((err**2).mean())
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=150)
    else:
        fig = ax.figure
    sel = np.arange(ref.size)
    if ref.size > max_points:
        sel = np.sort(np.random.default_rng(seed).choice(ref.size, max_points, replace=False))
    if sigma is not None:
        s = np.asarray(sigma, dtype=float).ravel()
        ax.errorbar(ref[sel], pred[sel], yerr=s[sel], fmt="none", ecolor="0.6", elinewidth=0.5,
                    alpha=0.6, zorder=1)
    ax.scatter(ref[sel], pred[sel], s=4, alpha=0.6, zorder=2,
               label=f"MAE {mae:.3g} {unit}\nRMSE {rmse:.3g} {unit}")
    lo = min(ref.min(), pred.min())
    hi = max(ref.max(), pred.max())
    pad = 0.03 * (hi - lo if hi > lo else 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8, zorder=3)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference {label} ({unit})")
    ax.set_ylabel(f"predicted {label} ({unit})")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def error_vs_sigma(errors, sigma, *, n_bins: int = 12, ax=None, label="force component",
                   unit="eV/Å", title=None):
    """Observed error against predicted standard deviation.

    Scatter of |error| vs sigma, the binned RMSE of the errors against the root
    mean predicted variance (RMV) per equal-count sigma bin, and the ideal line
    RMSE = RMV of a calibrated model.
    """
    plt = _plt()
    e = np.abs(np.asarray(errors, dtype=float).ravel())
    s = np.asarray(sigma, dtype=float).ravel()
    if e.shape != s.shape:
        raise ValueError(f"errors have shape {e.shape} but sigma has {s.shape}")
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sigma must be finite and >= 0")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=150)
    else:
        fig = ax.figure
    order = np.argsort(s)
    bins = np.array_split(order, min(n_bins, max(1, s.size)))
    rmv = np.array([np.sqrt(np.mean(s[b] ** 2)) for b in bins if b.size])
    rmse = np.array([np.sqrt(np.mean(e[b] ** 2)) for b in bins if b.size])
    sub = order[:: max(1, s.size // 20000)]
    ax.scatter(s[sub], e[sub], s=3, alpha=0.25, color="0.5", label="|error|")
    ax.plot(rmv, rmse, "o-", color="C3", label="binned RMSE vs RMV")
    hi = max(s.max(), rmse.max(), 1e-12) * 1.05
    ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="calibrated (RMSE = RMV)")
    ax.set_xlabel(f"predicted σ, {label} ({unit})")
    ax.set_ylabel(f"|error|, {label} ({unit})")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, max(np.quantile(e, 0.995), rmse.max()) * 1.1)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
