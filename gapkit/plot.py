"""Figures (the only module that imports matplotlib). Functions take arrays, return a Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .active import LearningCurve
    from .ntk import ModelComparison, WidthConvergence
    from .uq import CalibrationResult

    #: one calibration result, several (labelled by their variance source) or a dict
    CalibrationResults = Union[CalibrationResult, Sequence[CalibrationResult],
                               Mapping[str, CalibrationResult]]

__all__ = ["coverage", "error_vs_sigma", "in_notebook", "learning_curves", "parity",
           "reliability", "save", "script_backend", "z_histogram"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where figures show inline)."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def script_backend() -> str:
    """The backend for ``matplotlib.use``: the file-only Agg when run as a script or a
    test; the current one (inline) in a Jupyter kernel, so that a tutorial opened as a
    notebook shows its figures."""
    import matplotlib

    return matplotlib.get_backend() if in_notebook() else "Agg"


def save(fig: Figure, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """Write ``fig`` to ``path``; in a script it is then closed (memory), in a notebook it
    stays open so the cell shows it."""
    fig.savefig(path, **savefig_kwargs)
    if not in_notebook():
        import matplotlib.pyplot as plt

        plt.close(fig)


def _plt() -> ModuleType:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        try:
            import matplotlib.pyplot as plt  # noqa: F401
        except Exception:  # pragma: no cover - headless fallback
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity(reference: npt.ArrayLike, predicted: npt.ArrayLike, *,
           sigma: npt.ArrayLike | None = None, ax: Axes | None = None, label: str = "",
           unit: str = "eV", title: str | None = None, max_points: int = 20000,
           seed: int = 0) -> Figure:
    """Predicted vs reference values with the y = x line, MAE and RMSE in a corner.

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
    ax.scatter(ref[sel], pred[sel], s=4, alpha=0.6, zorder=2)
    # the error statistics in a readable unit: meV rather than 0.00315 eV
    scale, err_unit = (1e3, "m" + unit) if unit.startswith("eV") and mae < 0.1 else (1, unit)
    ax.text(0.04, 0.96, f"MAE {scale * mae:.3g} {err_unit}\nRMSE {scale * rmse:.3g} {err_unit}",
            transform=ax.transAxes, ha="left", va="top", fontsize=7, zorder=4,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5})
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
    fig.tight_layout()
    return fig


def error_vs_sigma(errors: npt.ArrayLike, sigma: npt.ArrayLike, *, n_bins: int = 12,
                   ax: Axes | None = None, label: str = "force component",
                   unit: str = "eV/Å", title: str | None = None) -> Figure:
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
    top = max(np.quantile(e, 0.995), rmse.max()) * 1.1
    ax.set_ylim(0, top)
    hidden = int(np.count_nonzero(e > top))
    if hidden:  # say so (in the legend), rather than hide the worst errors silently
        ax.plot([], [], " ", label=f"{hidden} point{'s' if hidden > 1 else ''} above the "
                f"axis (max {e.max():.3g} {unit})")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _results(results: CalibrationResults) -> list[tuple[str, CalibrationResult]]:
    """A list of (label, CalibrationResult) from one result, a list or a dict."""
    if isinstance(results, Mapping):
        return list(results.items())
    if isinstance(results, Sequence):
        return [(r.variance_source, r) for r in results]
    return [(results.variance_source, results)]


def coverage(results: CalibrationResults, *, ax: Axes | None = None,
             title: str | None = None) -> Figure:
    """Coverage (calibration) curve: observed vs expected fraction of errors inside the
    central Gaussian intervals, with the diagonal of a calibrated model.

    Parameters
    ----------
    results : CalibrationResult, list or dict {label: CalibrationResult}
        From :func:`gapkit.uq.calibration_report`; the legend gives each curve's
        miscalibration area.
    """
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=150)
    else:
        fig = ax.figure
    for name, r in _results(results):
        ax.plot(r.coverage_expected, r.coverage_observed, lw=1.5,
                label=f"{name} ({r.quantity}): area {r.miscalibration_area:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("expected fraction in central interval")
    ax.set_ylabel("observed fraction")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def reliability(results: CalibrationResults, *, ax: Axes | None = None,
                title: str | None = None) -> Figure:
    """Reliability diagram: binned RMSE against RMV (root mean predicted variance), in
    the quantity's unit, with the ideal line RMSE = RMV; the legend gives the ENCE."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=150)
    else:
        fig = ax.figure
    hi, unit, quantity = 0.0, "", ""
    for name, r in _results(results):
        ax.plot(r.reliability_rmv, r.reliability_rmse, "o-", ms=3,
                label=f"{name}: ENCE {r.ence:.2f}")
        hi = max(hi, r.reliability_rmv.max(), r.reliability_rmse.max())
        unit, quantity = r.unit, r.quantity
    hi = 1.05 * hi if hi > 0 else 1.0
    ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="calibrated (RMSE = RMV)")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel(f"RMV, {quantity} ({unit})")
    ax.set_ylabel(f"RMSE, {quantity} ({unit})")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def z_histogram(z: npt.ArrayLike, *, ax: Axes | None = None, bins: int = 60, label: str = "",
                title: str | None = None, zmax: float = 6.0) -> Figure:
    """Histogram of z-scores (error / predicted sigma, dimensionless) against the
    standard normal density N(0, 1)."""
    plt = _plt()
    z = np.asarray(z, dtype=float).ravel()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 3.4), dpi=150)
    else:
        fig = ax.figure
    edges = np.linspace(-zmax, zmax, bins + 1)
    clipped = np.clip(z, -zmax, zmax)
    ax.hist(clipped, bins=edges.tolist(), density=True, alpha=0.6,
            label=f"{label} z: mean {z.mean():.2f}, sd {z.std():.2f}".strip())
    x = np.linspace(-zmax, zmax, 400)
    ax.plot(x, np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi), "k-", lw=1.0, label="N(0, 1)")
    ax.set_xlabel("z = error / σ (clipped at ±%g)" % zmax)
    ax.set_ylabel("probability density")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def learning_curves(curves: Mapping[str, Sequence[LearningCurve]], *, ax: Axes | None = None,
                    quantity: str = "force_mae", unit: str = "eV/Å", title: str | None = None,
                    log: bool = True) -> Figure:
    """Learning curves with seed bands: mean over seeds and min-max band, per strategy.

    Parameters
    ----------
    curves : dict {strategy: list of gapkit.active.LearningCurve}
        As returned by :func:`gapkit.active.compare_strategies` (same labelled counts
        for every seed of a strategy).
    quantity : {"force_mae", "energy_mae"}
    unit : str
        Unit of ``quantity`` (eV/Å for forces, eV/atom for energies).
    """
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=150)
    else:
        fig = ax.figure
    for name, runs in curves.items():
        n = min(len(r.n_labelled) for r in runs)
        if n == 0:
            continue
        x = runs[0].n_labelled[:n]
        y = np.array([getattr(r, quantity)[:n] for r in runs])
        line, = ax.plot(x, y.mean(0), "o-", ms=3, label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("labelled frames (count)")
    what = "force MAE" if quantity == "force_mae" else "energy MAE"
    ax.set_ylabel(f"test {what} ({unit})")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# NTK figures (gapkit.ntk)
# ---------------------------------------------------------------------------
__all__ += ["kernel_comparison", "ntk_width_convergence"]


def ntk_width_convergence(result: WidthConvergence, *, ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """Empirical → analytic NTK: relative Frobenius distance against hidden width, log-log.

    Parameters
    ----------
    result : gapkit.ntk.WidthConvergence
        As returned by :func:`gapkit.ntk.ntk_width_convergence` (``widths``,
        ``distance_mean``, ``distance_std`` over seeds, fitted ``slope``).

    Draws the mean distance with ±1 std error bars, the least-squares power law
    ``c · width^slope`` and the theoretical ``width^(-1/2)`` through the geometric mean
    of the points.
    """
    plt = _plt()
    w = np.asarray(result.widths, dtype=float)
    m = np.asarray(result.distance_mean, dtype=float)
    s = np.asarray(result.distance_std, dtype=float)
    if w.shape != m.shape or w.size < 2:
        raise ValueError("need at least two widths with one mean distance each")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.4, 3.6), dpi=150)
    else:
        fig = ax.figure
    ax.errorbar(w, m, yerr=s, fmt="o", ms=4, capsize=3, label="empirical NTK (mean ± std)")
    lw, lm = np.log(w), np.log(m)
    slope, intercept = np.polyfit(lw, lm, 1)
    grid = np.geomspace(w.min(), w.max(), 50)
    ax.plot(grid, np.exp(intercept) * grid**slope, "-", lw=1,
            label=f"fit: slope {slope:.2f}")
    ax.plot(grid, np.exp(lm.mean() + 0.5 * lw.mean()) * grid**-0.5, "k--", lw=1,
            label="theory: slope −1/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hidden width (units per layer)")
    ax.set_ylabel(r"$\|\Theta_{emp}-\Theta\|_F\,/\,\|\Theta\|_F$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def kernel_comparison(comparison: ModelComparison, *, title: str | None = None) -> Figure:
    """Test errors of GAP(SOAP), GAP(NTK) and finite networks side by side (two panels).

    Parameters
    ----------
    comparison : gapkit.ntk.ModelComparison
        As returned by :func:`gapkit.ntk.compare_models`: ``energy_rmse`` (eV/atom,
        drawn in meV/atom) and ``force_rmse`` (eV/Å) by model name; the centred kernel
        alignments go in the title.
    """
    plt = _plt()
    names = list(comparison.energy_rmse)
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.4), dpi=150)
    x = np.arange(len(names))
    colors = [f"C{0 if n.startswith('GAP(SOAP') else 1 if n.startswith('GAP(NTK') else 2}"
              for n in names]
    for ax, vals, label in (
            (axes[0], [1e3 * comparison.energy_rmse[n] for n in names],
             "test energy RMSE (meV/atom)"),
            (axes[1], [comparison.force_rmse.get(n, np.nan) for n in names],
             "test force RMSE (eV/Å)")):
        ax.bar(x, vals, color=colors)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(label)
    head = (f"centred alignment SOAP vs NTK: environments "
            f"{comparison.alignment_environments:.3f}, structures "
            f"{comparison.alignment_structures:.3f}")
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=8)
    fig.tight_layout()
    return fig
