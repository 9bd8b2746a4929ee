"""Hyper-parameters of a GAP by maximising the DTC log marginal likelihood.

One pass over the data collects, per observation kind ``g`` (energy, forces,
virial), the triangular factor of the *unit* design matrix (every kernel at
``delta = 1``) weighted by the configured noise ``b_n``: the streaming QR of
:mod:`gapkit.gp.sparse` gives ``R_g``, ``b_g`` and ``r_g`` with
``R_g^T R_g = K_g^T W_g K_g``, ``R_g^T b_g = K_g^T W_g y_g``,
``|b_g|^2 + r_g^2 = y_g^T W_g y_g`` and ``W_g = diag(b_n^-2)``.

With per-term ``delta_d`` (column scales ``D = diag(delta^2)``) and a noise
multiplier ``s_g`` per kind (``sigma_n = s_g b_n``: config_type and per-frame
ratios are kept), the DTC factor is the QR of the stacked M x M blocks
``[U_delta; R_E D/s_E; R_F D/s_F; R_V D/s_V]`` (with the ``b_g/s_g`` column), so
the log marginal likelihood is a function of M x M matrices only, with the
numerical stability of the QR fit (the normal equations ``K^T W K`` would square
the condition number). Each evaluation costs O(M^3); it is differentiated by
torch autograd and maximised with L-BFGS over ``log delta`` and ``log s``.
The two-body length scale changes the design matrix itself; it is optimised by
a bounded scalar search whose every evaluation is one pass over the data.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .design import design_blocks, type_mask
from .observations import KINDS
from .sparse import IncrementalQR, informative_rows, stack_r

__all__ = ["Statistics", "collect_statistics", "lengthscale_kernels", "lml_from_statistics",
           "noise_groups", "optimize", "search_lengthscale", "split_factors"]

KIND_NAMES = KINDS  # the name before 0.2


@dataclass
class Statistics:
    kmm_unit: torch.Tensor  # (M, M) block-diagonal, delta = 1
    column_term: torch.Tensor  # (M,) term index of each column
    R: torch.Tensor  # (G, M, M) per-group triangular factors (groups: kinds by default)
    b: torch.Tensor  # (G, M)
    yy: torch.Tensor  # (G,) y^T W y per group
    n: torch.Tensor  # (G,) observation counts
    sum_log_base: torch.Tensor  # (G,) sum of log b_n
    jitter: float
    # the rows with a zero design row (informative_rows), per group: count, sum of log b_n
    # and y^T W y; they are in the likelihood's value, not in what the noise learning
    # maximises
    zero_n: torch.Tensor | None = None
    zero_sum_log_base: torch.Tensor | None = None
    zero_yy: torch.Tensor | None = None


def collect_statistics(terms, sparse_sets, frames, obs, gradients, *, batch_atoms: int,
                       jitter: float, groups=None, n_groups: int | None = None) -> Statistics:
    """One pass over ``frames``: per-group QR factors of the unit-kernel design matrix.

    A *group* is a set of observation rows that share one noise multiplier: by default
    the observation kind (energy, forces, virial); with ``groups`` any partition, e.g.
    kind x config_type.

    Parameters
    ----------
    terms, sparse_sets
        The fitted terms and their sparse points (``GAP.terms_``, ``GAP.sparse_sets_``).
    frames, obs, gradients
        The training frames, their observations and the descriptor gradients those
        need (``GAP.training_data``).
    batch_atoms : int
        Atoms per streamed block.
    jitter : float
        The relative jitter of K_MM (``GAP.jitter``).
    groups : ndarray of int, shape (n_rows,), optional
        Group of each observation row of ``obs`` (default: ``obs.kind``).
    n_groups : int, optional
        Number of groups (default ``groups.max() + 1``, or 3 for kinds).
    """
    from . import parallel

    dtype = sparse_sets[0].points.dtype
    m = sum(s.n for s in sparse_sets)
    if groups is None:
        groups, n_groups = obs.kind, len(KINDS)
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != (obs.n_rows,):
        raise ValueError(f"groups must have one entry per observation ({obs.n_rows}), got "
                         f"shape {groups.shape}")
    n_groups = int(groups.max()) + 1 if n_groups is None else int(n_groups)
    passes = parallel.active()
    if passes is None:
        part = _statistics_pass(frames, obs, 0, terms, sparse_sets, gradients, groups,
                                n_groups, batch_atoms)
    else:  # per worker its rows' factors per group, stacked pairwise (TSQR), sums added
        part = passes.reduce(_add_statistics, passes.map(
            _statistics_pass, frames, obs, terms, sparse_sets, gradients,
            parallel.PerRow(groups), n_groups, batch_atoms))
    augs, yy, n_rows, sum_log, zero_n, zero_log, zero_yy = part
    blocks, cols = [], []
    for i, (term, z) in enumerate(zip(terms, sparse_sets)):
        with torch.no_grad():
            blocks.append(term.kernel.unit_value(z.points, z.points)
                          * type_mask(z.types, z.types, dtype))
        cols.append(torch.full((z.n,), i))
    return Statistics(
        torch.block_diag(*blocks), torch.cat(cols), torch.stack([a[:m, :m] for a in augs]),
        torch.stack([a[:m, m] for a in augs]), torch.as_tensor(yy, dtype=dtype),
        torch.as_tensor(n_rows, dtype=dtype), torch.as_tensor(sum_log, dtype=dtype), jitter,
        torch.as_tensor(zero_n), torch.as_tensor(zero_log), torch.as_tensor(zero_yy))


def _statistics_pass(frames, obs, offset: int, terms, sparse_sets, gradients, groups,
                     n_groups: int, batch_atoms: int) -> tuple:
    """Per group of rows (``groups``: one per row of ``obs``) the QR state ``[R, b; 0, r]``
    of the unit-kernel rows of ``frames``, the rows' sum of (y / sigma)^2, their count and
    sum of log sigma, and the same sums for exactly zero rows: a partition's share of
    :func:`collect_statistics` (:func:`_add_statistics` combines two)."""
    m = sum(s.n for s in sparse_sets)
    dtype = sparse_sets[0].points.dtype
    qrs = [IncrementalQR(torch.zeros((m, m), dtype=dtype)) for _ in range(n_groups)]
    yy = np.zeros(n_groups)
    zero_n, zero_log, zero_yy = np.zeros(n_groups), np.zeros(n_groups), np.zeros(n_groups)
    for _, sel, sub, rows in design_blocks(terms, sparse_sets, frames, obs, gradients,
                                           batch_atoms=batch_atoms, unit=True):
        keep = informative_rows(rows, [s.n for s in sparse_sets])
        if not bool(keep.all()):  # zero rows: only their constant goes to the likelihood
            zero = ~keep.numpy()
            zs, zy = sub.sigma[zero], sub.y[zero]
            np.add.at(zero_n, groups[sel[zero]], 1.0)
            np.add.at(zero_log, groups[sel[zero]], np.log(zs))
            np.add.at(zero_yy, groups[sel[zero]], (zy / zs) ** 2)
            rows, sel = rows[keep], sel[keep.numpy()]
        sigma = torch.as_tensor(obs.sigma[sel])
        y = torch.as_tensor(obs.y[sel])
        block_groups = groups[sel]
        for g in np.unique(block_groups).tolist():
            k = torch.as_tensor(np.nonzero(block_groups == g)[0])
            if k.numel():
                qrs[g].add(rows[k], y[k], sigma[k])
                yy[g] += float(((y[k] / sigma[k]) ** 2).sum())
    return ([q.augmented() for q in qrs], yy, np.array([float(q.n_rows) for q in qrs]),
            np.array([q.sum_log_sigma for q in qrs]), zero_n, zero_log, zero_yy)


def _add_statistics(a: tuple, b: tuple) -> tuple:
    """The statistics of the rows of ``a`` and then ``b``: per group the R of the stacked
    states (TSQR), the sums added."""
    return ([stack_r(x, y) for x, y in zip(a[0], b[0])],
            *(x + y for x, y in zip(a[1:], b[1:])))


def lml_from_statistics(stats: Statistics, log_delta: torch.Tensor,
                        log_scale: torch.Tensor, *, zero_rows: bool = True) -> torch.Tensor:
    """DTC log marginal likelihood for ``delta = exp(log_delta)`` (per term) and noise
    multipliers ``exp(log_scale)`` (one per group: energy, forces, virial by default).
    ``zero_rows=False`` leaves out the observations whose design row is zero (what the
    optimiser maximises: each would pull its group's sigma to zero)."""
    dv = torch.exp(log_delta)[stats.column_term]  # delta per column
    d2 = dv * dv
    kmm = dv[:, None] * stats.kmm_unit * dv[None, :]
    jit = stats.jitter * torch.diagonal(kmm).mean()
    m = kmm.shape[0]
    eye = torch.eye(m, dtype=kmm.dtype)
    u = torch.linalg.cholesky(kmm + jit * eye).T
    inv_s = torch.exp(-log_scale)
    present = stats.n > 0
    top = torch.cat([u, torch.zeros((m, 1), dtype=kmm.dtype)], dim=1)
    parts = [top]
    for g in range(stats.n.shape[0]):
        if bool(present[g]):
            parts.append(torch.cat([stats.R[g] * d2[None, :], stats.b[g][:, None]], dim=1)
                         * inv_s[g])
    # mode="reduced": autograd through QR needs Q
    r = torch.linalg.qr(torch.cat(parts, dim=0), mode="reduced").R
    quad = (inv_s**2 * stats.yy).sum() - (r[:m, m] ** 2).sum()
    value = (-0.5 * quad - torch.log(torch.abs(torch.diagonal(r)[:m])).sum()
             + torch.log(torch.diagonal(u)).sum()
             - (stats.n * log_scale).sum() - stats.sum_log_base.sum()
             - 0.5 * stats.n.sum() * math.log(2.0 * math.pi))
    zn, zlog, zyy = stats.zero_n, stats.zero_sum_log_base, stats.zero_yy
    if zero_rows and zn is not None and zlog is not None and zyy is not None:
        # the N(0, sigma^2) densities of the zero rows
        value = value - (0.5 * (inv_s**2 * zyy).sum() + (zn * log_scale).sum() + zlog.sum()
                         + 0.5 * zn.sum() * math.log(2.0 * math.pi))
    return value


def optimize(stats: Statistics, log_delta0, log_scale0, *, fit_delta=True, fit_noise=True,
             max_iter: int = 100):
    """Maximise :func:`lml_from_statistics`; returns (log_delta, log_scale, lml)."""
    present = stats.n > 0
    ld = torch.tensor(log_delta0, dtype=torch.float64, requires_grad=fit_delta)
    ls = torch.tensor(log_scale0, dtype=torch.float64)
    ls_free = ls.clone().requires_grad_(fit_noise)
    params = [p for p, f in ((ld, fit_delta), (ls_free, fit_noise)) if f]

    floor = math.log(NOISE_FLOOR)

    def scales():
        # kinds without observations keep their value; no multiplier below the floor (a
        # group the model fits exactly would otherwise run off to sigma = 0)
        return torch.where(present, torch.clamp(ls_free, min=floor), ls)

    if params:
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-7, tolerance_change=1e-10)

        def closure():
            opt.zero_grad()
            loss = -lml_from_statistics(stats, ld, scales(), zero_rows=False)
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        low = present & (ls_free <= floor)
        if fit_noise and bool(low.any()):
            warnings.warn(f"the marginal likelihood drives {int(low.sum())} noise multiplier(s) "
                          f"below {NOISE_FLOOR:g} of the base sigma; they are floored at "
                          f"{NOISE_FLOOR:g}: a group whose labels the model fits (almost) "
                          "exactly has no measurable noise", UserWarning, stacklevel=3)
        value = float(lml_from_statistics(stats, ld, scales()))
    return ld.detach().numpy(), scales().detach().numpy(), value


#: the smallest noise multiplier the marginal likelihood may set (relative to the base)
NOISE_FLOOR = 0.01


def noise_groups(obs, min_frames: int):
    """Observation rows grouped by kind and config_type, for the noise multipliers.

    A (kind, config_type) with observations from fewer than ``min_frames`` frames joins
    its kind's shared group (its sigma cannot be learnt on its own). ``obs`` is an
    :class:`~gapkit.gp.observations.Observations` (its ``config_type`` column). Returns
    ``(groups, names)``: the group of every row, and ``(kind, config_type or None)`` per
    group (None: the shared group of the kind).
    """
    cts = np.asarray(obs.config_type, dtype=object)
    names: list = []
    index: dict = {}
    groups = np.empty(obs.n_rows, dtype=np.int64)
    for g, kind in enumerate(KINDS):
        rows = obs.kind == g
        for ct in sorted(set(cts[rows])):
            sel = rows & (cts == ct)
            key = (kind, ct) if len(np.unique(obs.frame[sel])) >= min_frames else (kind, None)
            if key not in index:
                index[key] = len(names)
                names.append(key)
            groups[sel] = index[key]
    return groups, names


def split_factors(names, factors):
    """The learnt multiplier of each group (:func:`noise_groups`'s ``names``) as a
    :class:`~gapkit.gp.observations.NoiseModel` stores them: ``(per_kind, per_config_type)``
    with ``per_kind`` (3,) for energy, forces, virial (1 for a kind without a shared group)
    and ``per_config_type`` ``{config_type: {kind: factor relative to its kind's}}``."""
    kind_factor = {kind: 1.0 for kind in KINDS}
    for (kind, ct), f in zip(names, factors):
        if ct is None:
            kind_factor[kind] = float(f)
    ct_factor: dict = {}
    for (kind, ct), f in zip(names, factors):
        if ct is not None:
            ct_factor.setdefault(ct, {})[kind] = float(f) / kind_factor[kind]
    return np.array([kind_factor[kind] for kind in KINDS]), ct_factor


def lengthscale_kernels(kernels) -> list:
    """The kernels whose one shared length scale :func:`search_lengthscale` tunes: the
    two-body kernels or, without them, the squared-exponential kernels (of symmetry
    functions, say)."""
    from ..kernels import SEKernel, TwoBodyKernel

    found = [k for k in kernels if isinstance(k, TwoBodyKernel)]
    return found or [k for k in kernels if isinstance(k, SEKernel)]


def search_lengthscale(kernels, evaluate, bounds=None):
    """A bounded scalar search, in its logarithm, of one length scale (Å) shared by
    ``kernels`` (:func:`lengthscale_kernels`).

    ``evaluate()`` optimises the other hyper-parameters at the kernels' current length
    scale (one pass over the data) and returns ``(start, log_delta, log_scale, value)``;
    the search maximises ``value``. ``bounds`` default to (0.05, 5) Å for two-body
    kernels and a factor 10 either side of the current value otherwise. The best length
    scale (or the starting one, if nothing beats it) is left set on the kernels.
    Returns ``(theta0, evaluate() at theta0, evaluate() at the best)``.
    """
    from scipy.optimize import minimize_scalar

    from ..kernels import TwoBodyKernel

    if not kernels:
        raise ValueError("lengthscale=True needs a term with a TwoBodyKernel or an SEKernel")
    theta0 = float(kernels[0].lengthscale.detach().reshape(()))
    if bounds is None:
        bounds = ((0.05, 5.0) if isinstance(kernels[0], TwoBodyKernel)
                  else (theta0 / 10, theta0 * 10))
    cache = {}

    def set_lengthscale(log_theta):
        for k in kernels:
            k.lengthscale = torch.tensor(math.exp(log_theta), dtype=torch.float64)

    def objective(log_theta):
        set_lengthscale(log_theta)
        cache[log_theta] = evaluate()
        return -cache[log_theta][3]

    first = objective(math.log(theta0))
    res = minimize_scalar(objective, bounds=tuple(np.log(bounds)), method="bounded",
                          options={"xatol": 1e-2, "maxiter": 20})
    best = res.x if -res.fun > -first else math.log(theta0)
    set_lengthscale(best)
    return theta0, cache[math.log(theta0)], cache[best]

