"""The observation noise chosen by K-fold cross-validation over frames, in closed form.

Why not the marginal likelihood: forces are most of the rows, so the likelihood's energy and
virial sigmas absorb model error (measured on the Zuo data: 5-7x the held-out errors) and
grow while the test energy error grows. Cross-validation scores what users feel, the
held-out errors.

Two facts make it cheap. The posterior mean depends on the noise only through sigma/delta,
so delta stays as it is and the force sigma fixes the scale; and the held-out errors change
little when every sigma scales together, so only the energy and virial multipliers
(``s_E``, ``s_V``; ``s_F = 1``) are searched, on a grid (``force_factors`` adds an ``s_F``
axis: measured on the Zuo elements, it moved the choice on Ni only).

The algebra, in whitened coordinates (``U^T U = K_MM`` + jitter, ``B = K U^-1`` the design
rows of one fold and kind, ``W`` the base noise ``sigma^-2``): one pass over the data
accumulates ``G_fk = B^T W B`` and ``h_fk = B^T W y`` per fold ``f`` and kind ``k``; the fit
without fold ``f`` at multipliers ``s`` is

    ``(I + sum_k (G_k - G_fk) / s_k^2) beta = sum_k (h_k - h_fk) / s_k^2``,
    ``alpha = U^-1 beta``,

exactly the DTC solve of :mod:`gapkit.gp.sparse` on the other folds (same sparse points, e0
and kernels), an M x M Cholesky per fold and grid point, never ``K_MM + K^T W K`` itself.
A second pass predicts every held-out row at every grid point (one GEMM per block) and
accumulates the mean absolute errors: energy per atom, force components, virial per atom.
The refit at the chosen noise is the same closed form on all folds, so ``GAP().fit`` makes
no streaming fit before the search (:meth:`gapkit.GAP.fit`; the statistics pass counts the
zero design rows it would have counted).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import count
from .design import design_blocks
from .observations import ENERGY, FORCES, KINDS, VIRIAL
from .parallel import SendsTensors
from .posterior import prior_energy_variances, prior_force_variances
from .predictive import TAIL_SHARE, TAIL_Z, fit_predictive
from .sparse import dense_work, informative_rows, symmetry_violations

__all__ = ["ENERGY_FACTORS", "VIRIAL_FACTORS", "FoldGrams", "assign_folds",
           "calibrate_predictive", "calibration_frames", "fold_factors", "fold_grams",
           "full_solution", "grid_alphas", "held_out_errors", "held_out_variances", "search_noise"]

#: the energy-noise multipliers tried (relative to the base sigma_E), 2^-2 ... 2^6
ENERGY_FACTORS = tuple(2.0 ** k for k in range(-2, 7))
#: the virial-noise multipliers tried, 2^-2 ... 2^5
VIRIAL_FACTORS = tuple(2.0 ** k for k in range(-2, 6))
#: the force-noise multipliers tried (crossed with the energy x virial grid); (1.0,): the
#: force sigma fixes the scale and is not searched
FORCE_FACTORS: tuple = (1.0,)
#: an optimum still on an axis's edge is warned about only if its score beats the point one
#: step inside by more than this share: on a flatter score the range searched does not
#: matter, and the warning would tell users to act for nothing (a convention, not a
#: measured noise level of the score)
EDGE_GAIN = 0.01
#: fewer frames than this: no cross-validation (the base noise is kept, with a note)
MIN_FRAMES = 10
#: the predictive-variance pass reads all frames up to about this many force rows; beyond,
#: a seeded subset of frames (stratified by config_type, at least CALIBRATION_MIN_FRAMES):
#: a few parameters per kind need thousands of residuals, not all of them, and the exact
#: prior force variances cost about two design passes (Cu: 82,000 force rows)
CALIBRATION_FORCE_ROWS = 30_000
CALIBRATION_MIN_FRAMES = 100


def assign_folds(config_types, n_folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0 ... n_folds - 1) of every frame, stratified by config_type.

    Within each config_type (sorted by name) the frames are shuffled by a generator seeded
    with ``seed`` and dealt round-robin, each config_type continuing the deal where the
    last stopped, so every fold holds about the same share of every config_type and the
    same ``seed`` gives the same folds.
    """
    cts = np.asarray([str(c) for c in config_types], dtype=object)
    if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds!r}")
    if cts.size < n_folds:
        raise ValueError(f"{n_folds}-fold cross-validation needs at least {n_folds} frames, "
                         f"got {cts.size}")
    rng = np.random.default_rng(seed)
    folds = np.empty(cts.size, dtype=np.int64)
    start = 0
    for ct in sorted(set(cts.tolist())):
        idx = np.nonzero(cts == ct)[0]
        idx = idx[rng.permutation(idx.size)]
        folds[idx] = (start + np.arange(idx.size)) % n_folds
        start = (start + idx.size) % n_folds
    return folds


@dataclass
class FoldGrams(SendsTensors):
    """Per fold and kind, the whitened statistics of the rows: the Gram matrix
    ``G_fk = B^T W B``, right-hand side ``h = B^T W y`` (n_folds, 3, M), row count,
    ``y^T W y`` and the sum of ``log sigma`` (n_folds, 3 each), with the ``U`` factor that
    whitens (``B = K U^-1``).

    Memory: a kind with many rows keeps its Grams, ``gram`` (n_folds, len(dense), M, M)
    for the kinds ``dense``; a kind with at most M rows in all (energies of most data
    sets, often virials) keeps its whitened rows ``W^1/2 B`` instead, ``rows[k][f]``
    (n_fk, M): at most M x M numbers for the kind, not n_folds x M x M. Only the kinds
    present are stored: rMD17 aspirin at M = 8,000 holds one force Gram per fold (2.6 GB),
    not three (7.7 GB). :meth:`weighted` gives the sums the solves need either way."""

    gram: torch.Tensor
    rhs: torch.Tensor
    counts: np.ndarray
    u_factor: torch.Tensor
    yy: np.ndarray
    sum_log_sigma: np.ndarray
    dense: tuple = (0, 1, 2)
    rows: dict = dataclasses.field(default_factory=dict)
    #: exactly zero design rows, and those whose labels break symmetry
    #: (:func:`gapkit.gp.sparse.symmetry_violations`), as the streaming fit counts them
    n_zero_rows: int = 0
    symmetry_violations: tuple = ()

    @property
    def n_folds(self) -> int:
        return int(self.counts.shape[0])

    def weighted(self, s, without: int | None = None, *, rows: bool = True) -> torch.Tensor:
        """``sum_k G_k / s_k^2`` (M x M) over all folds, or over all folds but
        ``without``; without ``rows``, the dense kinds only. Summed fold by fold each time
        (a few M^2 additions): no total is kept beside the fold Grams (0.5 GB at M 8,000)."""
        s = np.asarray(s, dtype=float)
        m = self.u_factor.shape[0]
        out = torch.zeros((m, m), dtype=self.u_factor.dtype)
        for j, k in enumerate(self.dense):  # no M x M temporaries
            for f in range(self.n_folds):
                if f != without:
                    out.add_(self.gram[f, j], alpha=1.0 / s[k] ** 2)
        for k, per_fold in (self.rows.items() if rows else ()):
            b = torch.cat([r for f, r in enumerate(per_fold) if f != without])
            if b.shape[0]:
                out.addmm_(b.T, b, alpha=1.0 / s[k] ** 2)
        return out

    def other_rows(self, fold: int) -> tuple[torch.Tensor, np.ndarray]:
        """The row kinds' whitened rows of every fold but ``fold`` (n, M) and their kinds."""
        parts = [(r, k) for k, per_fold in self.rows.items()
                 for f, r in enumerate(per_fold) if f != fold]
        if not parts:
            return torch.zeros((0, self.u_factor.shape[0]), dtype=self.u_factor.dtype), \
                np.zeros(0, dtype=np.int64)
        return (torch.cat([r for r, _ in parts]),
                np.concatenate([np.full(r.shape[0], k) for r, k in parts]))


@dense_work
def _whiten(rows: torch.Tensor, u_factor: torch.Tensor) -> torch.Tensor:
    """``rows U^-1`` (n, M) by a triangular solve."""
    return torch.linalg.solve_triangular(u_factor, rows, upper=True, left=False)


#: column block of :func:`_add_gram_`: the upper block triangle costs (k + 1) / 2k of
#: the full product with k blocks (M 8,000: 0.56); blocks of 1,024 keep the GEMMs efficient
GRAM_BLOCK = 1024


@dense_work
def _add_gram_(gram: torch.Tensor, b: torch.Tensor, block: int | None = None) -> None:
    """``gram += b^T b`` on the block upper triangle only (the diagonal blocks whole):
    about half the FLOPs of ``addmm_`` (1.75x faster at M 8,000, one thread; torch has no
    SYRK). :func:`_mirror_gram_` fills the lower blocks once the sums are complete."""
    m, block = gram.shape[0], block or GRAM_BLOCK
    for i in range(0, m, block):
        gram[i:i + block, i:].addmm_(b[:, i:i + block].T, b[:, i:])


@dense_work
def _mirror_gram_(gram: torch.Tensor, block: int | None = None) -> None:
    """Copy the upper blocks that :func:`_add_gram_` filled onto the lower ones, and the
    upper triangle of each diagonal block onto its lower one: a GEMM's ``b^T b`` need not
    be symmetric to the last bit (on an AVX-512 EPYC its two triangles differed by
    rounding), and the Gram is used as exactly symmetric."""
    m, block = gram.shape[0], block or GRAM_BLOCK
    for i in range(0, m, block):
        if i:
            gram[i:i + block, :i].copy_(gram[:i, i:i + block].T)
        d = gram[i:i + block, i:i + block]
        d.copy_(torch.triu(d) + torch.triu(d, 1).T)


@dense_work
def _cholesky_(a: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """The lower Cholesky factor of the symmetric positive definite ``a``, in place
    (blocked, right-looking; the upper triangle zeroed): no second M x M matrix
    (``torch.linalg.cholesky``, even with ``out=a``, holds one; 0.5 GB at M 8,000), at
    1.1x its CPU. Raises ``torch.linalg.LinAlgError`` where ``a`` is not positive
    definite."""
    m, block = a.shape[0], block or GRAM_BLOCK
    for k in range(0, m, block):
        e = min(k + block, m)
        lkk = torch.linalg.cholesky(a[k:e, k:e])
        a[k:e, k:e].copy_(lkk)
        if e < m:  # the panel below, then the lower blocks of the trailing matrix
            panel = torch.linalg.solve_triangular(lkk.T, a[e:, k:e], upper=True, left=False)
            a[e:, k:e].copy_(panel)
            for j in range(e, m, block):
                a[j:, j:j + block].addmm_(panel[j - e:], panel[j - e:j - e + block].T,
                                          alpha=-1.0)
        a[k:e, k:].tril_()
    return a


def fold_grams(terms, sparse_sets, u_factor, frames, obs, gradients, folds, *,
               batch_atoms: int, progress: bool = False,
               low_rank_rows: int | None = None) -> FoldGrams:
    """One pass over the design rows: :class:`FoldGrams` for the frames' ``folds``. A kind
    with at most ``low_rank_rows`` rows in all (default M) keeps its whitened rows instead
    of Grams; a kind without rows keeps neither."""
    folds = np.asarray(folds, dtype=np.int64)
    n_folds = int(folds.max()) + 1
    n_rows = np.bincount(obs.kind, minlength=len(KINDS))
    limit = u_factor.shape[0] if low_rank_rows is None else int(low_rank_rows)
    low = tuple(k for k in range(len(KINDS)) if 0 < n_rows[k] <= limit)
    dense = tuple(k for k in range(len(KINDS)) if n_rows[k] > limit)
    from . import parallel

    passes = parallel.active()
    if passes is None:
        return _grams_pass(frames, obs, 0, terms, sparse_sets, u_factor, gradients, folds,
                           n_folds, dense, low, batch_atoms, progress)
    return passes.reduce(_add_grams, passes.map(
        _grams_pass, frames, obs, terms, sparse_sets, u_factor, gradients, folds, n_folds,
        dense, low, batch_atoms, False))


def _grams_pass(frames, obs, offset: int, terms, sparse_sets, u_factor, gradients, folds,
                n_folds: int, dense: tuple, low: tuple, batch_atoms: int,
                progress: bool) -> FoldGrams:
    """:class:`FoldGrams` of the rows of ``frames``, the first of which is frame ``offset``
    of the fit (``folds``: those of all the fit's frames), kinds ``dense`` as Grams and
    ``low`` as rows."""
    m = u_factor.shape[0]
    dtype = u_factor.dtype
    gram = torch.zeros((n_folds, len(dense), m, m), dtype=dtype)
    parts: dict = {k: [[] for _ in range(n_folds)] for k in low}
    rhs = torch.zeros((n_folds, len(KINDS), m), dtype=dtype)
    counts = np.zeros((n_folds, len(KINDS)), dtype=np.int64)
    yy = np.zeros((n_folds, len(KINDS)))
    sum_log_sigma = np.zeros((n_folds, len(KINDS)))
    n_zero, violations = 0, []
    for start, _, sub, rows in design_blocks(terms, sparse_sets, frames, obs, gradients,
                                               batch_atoms=batch_atoms, progress=progress,
                                               desc="noise CV: statistics"):
        start += offset
        zero = ~informative_rows(rows, [z.n for z in sparse_sets]).numpy()
        if zero.any():
            n_zero += int(zero.sum())
            violations += symmetry_violations(sub, zero, start)
        w = 1.0 / torch.as_tensor(sub.sigma)
        b = _whiten(rows, u_factor) * w[:, None]
        yw = torch.as_tensor(sub.y) * w
        fold_of_row = folds[sub.frame + start]
        for f in np.unique(fold_of_row).tolist():
            for k in range(len(KINDS)):
                idx = np.nonzero((fold_of_row == f) & (sub.kind == k))[0]
                if idx.size == 0:
                    continue
                bi = b[torch.as_tensor(idx)]
                if k in parts:
                    parts[k][f].append(bi)
                else:
                    _add_gram_(gram[f, dense.index(k)], bi)
                rhs[f, k] += bi.T @ yw[torch.as_tensor(idx)]
                counts[f, k] += idx.size
                yy[f, k] += float((yw[torch.as_tensor(idx)] ** 2).sum())
                sum_log_sigma[f, k] += float(np.log(sub.sigma[idx]).sum())
    for g in gram.flatten(0, 1):
        _mirror_gram_(g)
    low_rows = {k: [torch.cat(p) if p else torch.zeros((0, m), dtype=dtype) for p in per_fold]
                for k, per_fold in parts.items()}
    return FoldGrams(gram, rhs, counts, u_factor, yy, sum_log_sigma, dense, low_rows, n_zero,
                     tuple(violations))


def _add_grams(a: FoldGrams, b: FoldGrams) -> FoldGrams:
    """The statistics of the rows of ``a`` and then ``b`` (in place in ``a``)."""
    a.gram += b.gram
    a.rhs += b.rhs
    rows = {k: [torch.cat([x, y]) for x, y in zip(a.rows[k], b.rows[k])] for k in a.rows}
    return dataclasses.replace(a, counts=a.counts + b.counts, yy=a.yy + b.yy,
                               sum_log_sigma=a.sum_log_sigma + b.sum_log_sigma, rows=rows,
                               n_zero_rows=a.n_zero_rows + b.n_zero_rows,
                               symmetry_violations=a.symmetry_violations
                               + b.symmetry_violations)


@dense_work
def full_solution(grams: FoldGrams, factors, jitter_absolute: float):
    """The DTC fit on all folds at noise multipliers ``factors``, from the statistics alone
    (no pass over the data): ``A = I + sum_k G_k / s_k^2 = L L^T``, ``alpha = U^-1 A^-1 h``,
    ``R = L^T U`` (so ``R^T R = U^T A U = K_MM + K^T Sigma^-1 K``), and the log marginal
    likelihood of :func:`gapkit.gp.sparse.dtc_log_marginal_likelihood` with
    ``r^2 = y^T Sigma^-1 y - |L^-1 h|^2``. A :class:`~gapkit.gp.sparse.DTCSolution`."""
    from .sparse import DTCSolution, condition_number, dtc_log_marginal_likelihood

    s = np.asarray(factors, dtype=float)
    u = grams.u_factor
    h = _weighted(grams.rhs.sum(0), s)
    chol, alpha, beta = _solve_whitened(grams.weighted(s), h, u)
    r_factor = chol.T @ u
    yy = float((grams.yy.sum(0) / s**2).sum())
    counts = grams.counts.sum(0)
    sum_log = float(grams.sum_log_sigma.sum() + (counts * np.log(s)).sum())
    resid = torch.as_tensor(max(yy - float(h @ beta), 0.0) ** 0.5)  # |L^-1 h|^2 = h.beta
    lml = dtc_log_marginal_likelihood(r_factor, u, resid, sum_log, int(counts.sum()))
    return DTCSolution(alpha, r_factor, u, jitter_absolute, lml, condition_number(r_factor),
                       condition_number(u) ** 2, grams.n_zero_rows, grams.symmetry_violations)


def _weighted(rhs: torch.Tensor, s) -> torch.Tensor:
    """``sum_k h_k / s_k^2`` over the kind axis of right-hand sides (..., 3, M)."""
    inv = torch.as_tensor(1.0 / np.asarray(s, dtype=float) ** 2, dtype=rhs.dtype)
    return torch.einsum("k,...ki->...i", inv, rhs)


def _with_identity(gram: torch.Tensor) -> torch.Tensor:
    """``I + gram``, in place (the callers' sums are made for their solve)."""
    gram.diagonal().add_(1.0)
    return gram


@dense_work
def _solve_whitened(gram: torch.Tensor, rhs: torch.Tensor, u_factor: torch.Tensor):
    """The DTC solve in whitened coordinates: ``A = I + gram = L L^T``,
    ``beta = A^-1 rhs``, ``alpha = U^-1 beta`` (``gram``, ``rhs``: the weighted sums at
    the noise multipliers; ``gram`` becomes ``A``). Returns ``(L, alpha, beta)``."""
    chol = _cholesky_(_with_identity(gram))
    beta = torch.cholesky_solve(rhs[:, None], chol)[:, 0]
    alpha = torch.linalg.solve_triangular(u_factor, beta[:, None], upper=True)[:, 0]
    return chol, alpha, beta


def _fold_solve(grams: FoldGrams, s, fold: int):
    """The fit without ``fold`` at multipliers ``s``: ``A_f = I + sum_k (G_k - G_fk) /
    s_k^2 = L_f L_f^T``. Memory: a few M x M matrices beside the statistics, one fold at
    a time. Returns ``(L_f, alpha_f)``."""
    rest_h = _weighted(grams.rhs.sum(0) - grams.rhs[fold], s)
    chol, alpha, _ = _solve_whitened(grams.weighted(s, without=fold), rest_h, grams.u_factor)
    return chol, alpha


def _fold_alphas(grams: FoldGrams, s) -> torch.Tensor:
    """The weights of the fit without each fold at multipliers ``s`` (n_folds, M)."""
    return torch.stack([_fold_solve(grams, s, f)[1] for f in range(grams.n_folds)])


@dense_work
def grid_alphas(grams: FoldGrams, grid: np.ndarray, *,
                woodbury: bool | None = None) -> torch.Tensor:
    """The weights ``alpha`` of the fit without each fold at each grid point, shape
    (n_points, n_folds, M); ``grid`` is (n_points, 3) noise multipliers (energy, forces,
    virial) relative to the base sigmas.

    Directly, an M x M Cholesky per fold and grid point; or (``woodbury``, default where
    it counts fewer FLOPs) one per fold and value of the dense kinds' multipliers (forces:
    1 unless ``force_factors``), the row kinds added by the Woodbury identity: with
    ``C = L L^T`` the dense part, ``V = L^-1 B^T`` (B: the other folds' rows of the row
    kinds) and ``D`` their ``s_k^2``, ``A^-1 r = L^-T (u - V (D + V^T V)^-1 V^T u)``,
    ``u = L^-1 r``, an n x n solve per grid point. rMD17 aspirin at M 8,000 (about 800
    energy rows per complement): 5 Cholesky factors instead of 45."""
    grid = np.asarray(grid, dtype=float)
    n_points, n_folds, m = len(grid), grams.n_folds, grams.u_factor.shape[0]
    n_rows = max((grams.other_rows(f)[0].shape[0] for f in range(n_folds)), default=0)
    groups: dict = {}
    for p, g in enumerate(grid):
        groups.setdefault(tuple(g[list(grams.dense)]), []).append(p)
    if woodbury is None:  # FLOPs per fold: the direct Choleskys against the Woodbury path
        woodbury = (len(groups) * (m**3 / 3 + n_rows * m**2 + n_rows**2 * m)
                    + n_points * n_rows**3 / 3 < n_points * m**3 / 3)
    if not woodbury or not grams.rows:
        return torch.stack([_fold_alphas(grams, s) for s in grid])
    out = torch.empty((n_points, n_folds, m), dtype=grams.u_factor.dtype)
    rhs_all = grams.rhs.sum(0)
    for f in range(n_folds):
        b, kind = grams.other_rows(f)
        for points in groups.values():
            chol = _cholesky_(_with_identity(
                grams.weighted(grid[points[0]], without=f, rows=False)))
            v = torch.linalg.solve_triangular(chol, b.T, upper=False)  # (M, n)
            vtv = v.T @ v
            for p in points:
                s = grid[p]
                u = torch.linalg.solve_triangular(
                    chol, _weighted(rhs_all - grams.rhs[f], s)[:, None], upper=False)
                small = vtv.clone()
                small.diagonal().add_(torch.as_tensor(s[kind] ** 2, dtype=vtv.dtype))
                gamma = torch.linalg.solve(small, v.T @ u)
                beta = torch.linalg.solve_triangular(chol.T, u - v @ gamma, upper=True)
                out[p, f] = torch.linalg.solve_triangular(grams.u_factor, beta,
                                                          upper=True)[:, 0]
    return out


def fold_factors(grams: FoldGrams, factors) -> tuple[torch.Tensor, torch.Tensor]:
    """At noise multipliers ``factors`` (energy, forces, virial): the Cholesky factors
    ``L_f`` of ``A_f = I + sum_k (G_k - G_fk) / s_k^2`` (n_folds, M, M) and the weights of
    the fit without each fold (n_folds, M). (n_folds x M x M numbers: the passes of this
    module factor one fold at a time instead.)"""
    s = np.asarray(factors, dtype=float)
    pairs = [_fold_solve(grams, s, f) for f in range(grams.n_folds)]
    return torch.stack([c for c, _ in pairs]), torch.stack([a for _, a in pairs])


def _priors(terms, results, sub, compacts=None) -> np.ndarray:
    """The exact prior variances of a block's observation rows ``sub`` from its descriptor
    ``results`` (and compact position gradients, ``compacts``) (energies: the kernel over
    all pairs of centres; force components: second kernel derivatives; virials: NaN,
    filled by the caller)."""
    offsets = np.asarray(results[0].atom_offsets, dtype=np.int64)
    n_frames, n_atoms = len(offsets) - 1, int(offsets[-1])
    prior = np.full(sub.kind.size, np.nan)
    idx = np.nonzero(sub.kind == ENERGY)[0]
    if idx.size:
        e, _ = prior_energy_variances(terms, results, n_frames, n_atoms)
        prior[idx] = e.numpy()[sub.frame[idx]]
    idx = np.nonzero(sub.kind == FORCES)[0]
    if idx.size:
        pf = prior_force_variances(terms, results, n_atoms, compacts).numpy()
        prior[idx] = pf[offsets[sub.frame[idx]] + sub.atom[idx], sub.component[idx]]
    return prior


def held_out_variances(terms, sparse_sets, frames, obs, gradients, folds, grams: FoldGrams,
                       factors, *, batch_atoms: int, progress: bool = False,
                       keep=None) -> dict:
    """For every row of the frames ``keep`` (sorted indices; default all), from the fit
    without its fold at noise multipliers ``factors``: the residual ``y - prediction``, the
    latent variance and the prior variance (the pass that :func:`calibrate_predictive` fits
    on). Energies and forces: the DTC latent variance ``p - |b|^2 + |L_f^-1 b|^2`` with the
    exact prior ``p``; virials: the projected form ``|L_f^-1 b|^2`` with the Nyström prior
    ``|b|^2`` (``b = U^-T k*``, the whitened row), as :meth:`gapkit.GAP.predict` computes
    them. Returns ``{kind: (residual, latent, prior)}`` (flat arrays over that kind's rows
    of those frames, in row order) for the kinds present."""
    from . import parallel

    folds = np.asarray(folds, dtype=np.int64)
    s = np.asarray(factors, dtype=float)
    keep = np.arange(len(frames)) if keep is None else np.asarray(keep, dtype=np.int64)
    n = obs.kind.size
    residual, latent, prior = np.zeros(n), np.zeros(n), np.zeros(n)
    passes = parallel.active()
    for f in range(grams.n_folds):  # one factor in memory at a time, each frame read once
        fold_keep = keep[folds[keep] == f]
        if fold_keep.size == 0:
            continue
        chol, alpha = _fold_solve(grams, s, f)
        args = (terms, sparse_sets, gradients, fold_keep, chol, alpha, grams.u_factor,
                batch_atoms)
        if passes is None:
            parts = [(np.arange(n), _variances_pass(frames, obs, 0, *args, progress, f))]
        else:
            futures = passes.map(_variances_pass, frames, obs, *args, False, f)
            parts = list(zip(passes.rows(obs), passes.gather(futures)))
        for rows_of, (where, res, lat, pri) in parts:
            residual[rows_of[where]], latent[rows_of[where]] = res, lat
            prior[rows_of[where]] = pri
    used = np.isin(obs.frame, keep)
    return {KINDS[k]: (residual[m], np.maximum(latent[m], 0.0), prior[m])
            for k in range(len(KINDS)) if np.any(m := used & (obs.kind == k))}


@dense_work
def _projected_norms(chol: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``|L^-1 b_i|^2`` of each row ``b_i`` of ``b``."""
    sol = torch.linalg.solve_triangular(chol, b.T, upper=False)
    return (sol * sol).sum(0).numpy()


def _variances_pass(frames, obs, offset: int, terms, sparse_sets, gradients, keep, chol,
                    alpha, u_factor, batch_atoms: int, progress: bool, fold: int):
    """:func:`held_out_variances` of the frames ``keep`` (indices in the fit) among
    ``frames`` (the first is frame ``offset`` of the fit), from the factor ``chol`` and
    weights ``alpha`` of the fit without their fold: ``(rows, residual, latent, prior)``,
    ``rows`` the indices in ``obs``."""
    local = keep[(keep >= offset) & (keep < offset + len(frames))] - offset
    out: list = [[], [], [], []]
    if local.size:
        sub_frames, sub_obs, _, rows_of = _frame_subset(frames, obs, np.zeros(len(frames)),
                                                        local)
        for _, sel, sub, rows, results, compacts in design_blocks(
                terms, sparse_sets, sub_frames, sub_obs, gradients, batch_atoms=batch_atoms,
                progress=progress, desc=f"noise CV: predictive variance, fold {fold + 1}",
                with_results=True, compact_results=True):
            p = _priors(terms, results, sub, compacts)
            b = _whiten(rows, u_factor)
            nystrom = (b * b).sum(1).numpy()
            lat = _projected_norms(chol, b)
            virial = sub.kind == VIRIAL
            p[virial] = nystrom[virial]
            lat[~virial] += p[~virial] - nystrom[~virial]
            for acc, value in zip(out, (rows_of[sel], sub.y - (rows @ alpha).numpy(), lat, p)):
                acc.append(value)
    return tuple(np.concatenate(a) if a else np.zeros(0, dtype=np.int64 if i == 0 else float)
                 for i, a in enumerate(out))


def calibration_frames(obs, n_frames: int, seed: int = 0, *,
                       max_force_rows: int = CALIBRATION_FORCE_ROWS,
                       min_frames: int = CALIBRATION_MIN_FRAMES) -> np.ndarray:
    """The frames (sorted indices) whose rows the predictive-variance pass reads: all of
    them while their force rows number at most ``max_force_rows``; beyond, within each
    config_type a seeded random share ``max_force_rows / force rows`` of its frames (at
    least one), topped up at random to ``min_frames``."""
    n_force = int(np.sum(obs.kind == FORCES))
    if n_force <= max_force_rows or n_frames <= min_frames:
        return np.arange(n_frames)
    share = max_force_rows / n_force
    cts = frame_config_types(obs, n_frames)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for ct in sorted(set(cts.tolist())):
        idx = np.nonzero(cts == ct)[0]
        keep.extend(rng.choice(idx, max(1, round(share * idx.size)), replace=False).tolist())
    if len(keep) < min_frames:
        rest = np.setdiff1d(np.arange(n_frames), keep)
        keep.extend(rng.choice(rest, min_frames - len(keep), replace=False).tolist())
    return np.sort(np.asarray(keep, dtype=np.int64))


def _frame_subset(frames, obs, folds, keep: np.ndarray):
    """``frames``, their observation rows and folds restricted to the frames ``keep``, and
    the indices of those rows in ``obs``."""
    if keep.size == len(frames):
        return frames, obs, folds, np.arange(obs.kind.size)
    new = np.full(len(frames), -1, dtype=np.int64)
    new[keep] = np.arange(keep.size)
    rows = np.nonzero(new[obs.frame] >= 0)[0]
    sub = dataclasses.replace(obs.select(rows), frame=new[obs.frame[rows]])
    return [frames[i] for i in keep.tolist()], sub, np.asarray(folds)[keep], rows


def calibrate_predictive(terms, sparse_sets, frames, obs, gradients, folds,
                         grams: FoldGrams, factors, *, batch_atoms: int,
                         progress: bool = False, seed: int = 0,
                         max_force_rows: int = CALIBRATION_FORCE_ROWS,
                         min_frames: int = CALIBRATION_MIN_FRAMES) -> dict:
    """The predictive-variance form of every kind (:func:`gapkit.gp.predictive.
    fit_predictive`, None for a kind with too few rows) on the out-of-fold quantities of
    :func:`held_out_variances`, over the frames of :func:`calibration_frames` (all of them
    up to ``max_force_rows`` force rows, at least ``min_frames``); warns when the
    out-of-fold share of ``|z| > 5`` passes 0.5 % (heavy tails: near-symmetric components
    whose labels carry noise). Each form records ``n_frames``, the frames it was fitted on."""
    keep = calibration_frames(obs, len(frames), seed, max_force_rows=max_force_rows,
                              min_frames=min_frames)
    held = held_out_variances(terms, sparse_sets, frames, obs, gradients, folds, grams,
                              factors, batch_atoms=batch_atoms, progress=progress, keep=keep)
    out = {kind: fit_predictive(*held[kind]) if kind in held else None for kind in KINDS}
    for spec in out.values():
        if spec is not None:
            spec["n_frames"] = int(keep.size)
    heavy = {kind: spec["tail_share"] for kind, spec in out.items()
             if spec is not None and spec["tail_share"] > TAIL_SHARE}
    if heavy:
        text = ", ".join(f"{kind} {100 * share:.2g} %" for kind, share in heavy.items())
        warnings.warn(f"predictive variance: out of fold, more values than a Gaussian allows "
                      f"lie beyond {TAIL_Z:g} sigma ({text}; a Gaussian has 6e-5 %): heavy "
                      "tails, often near-symmetric components whose labels carry noise. "
                      "The intervals hold for most values, not for these", UserWarning,
                      stacklevel=3)
    return out


def held_out_errors(terms, sparse_sets, frames, obs, gradients, folds, alphas, *,
                    batch_atoms: int, progress: bool = False) -> dict:
    """Mean absolute held-out errors at every grid point (the second pass): ``energy``
    (eV/atom), ``forces`` (eV/Å), ``virial`` (eV/atom), each an array (n_points,), or
    None for a kind without observations; ``alphas`` from :func:`grid_alphas`."""
    folds = np.asarray(folds, dtype=np.int64)
    from . import parallel

    passes = parallel.active()
    if passes is None:
        sums, counts = _errors_pass(frames, obs, 0, terms, sparse_sets, gradients, folds,
                                    alphas, batch_atoms, progress)
    else:
        sums, counts = passes.reduce(_add_pairs, passes.map(
            _errors_pass, frames, obs, terms, sparse_sets, gradients, folds, alphas,
            batch_atoms, False))
    return {kind: (sums[k] / counts[k] if counts[k] else None) for k, kind in enumerate(KINDS)}


def _errors_pass(frames, obs, offset: int, terms, sparse_sets, gradients, folds, alphas,
                 batch_atoms: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """The held-out absolute errors of the rows of ``frames`` (the first is frame
    ``offset`` of the fit), summed per kind and grid point (3, n_points), and the rows
    per kind."""
    n_atoms = np.array([len(a) for a in frames], dtype=float)
    n_points = alphas.shape[0]
    sums = np.zeros((len(KINDS), n_points))
    counts = np.zeros(len(KINDS), dtype=np.int64)
    for start, _, sub, rows in design_blocks(terms, sparse_sets, frames, obs, gradients,
                                               batch_atoms=batch_atoms, progress=progress,
                                               desc="noise CV: held-out errors"):
        frame = sub.frame + start
        fold_of_row = folds[frame + offset]
        y = np.asarray(sub.y)
        for f in np.unique(fold_of_row).tolist():
            idx = np.nonzero(fold_of_row == f)[0]
            pred = (rows[torch.as_tensor(idx)] @ alphas[:, f].T).numpy()  # (n, P)
            err = np.abs(pred - y[idx, None])
            per_atom = np.isin(sub.kind[idx], (ENERGY, VIRIAL))
            err[per_atom] /= n_atoms[frame[idx][per_atom], None]
            for k in range(len(KINDS)):
                mask = sub.kind[idx] == k
                if mask.any():
                    sums[k] += err[mask].sum(0)
                    counts[k] += int(mask.sum())
    return sums, counts


def _add_pairs(a: tuple, b: tuple) -> tuple:
    return tuple(x + y for x, y in zip(a, b))


def _grid(axes: dict, kinds_present) -> np.ndarray:
    """Every combination of the multipliers of ``axes`` (kind: factors); a kind without
    observations stays at 1."""
    factors = [axes[kind] if kinds_present[k] else (1.0,) for k, kind in enumerate(KINDS)]
    return np.array(list(itertools.product(*factors)), dtype=float)


def _axes(energy_factors, virial_factors, force_factors) -> dict:
    """The grid's multipliers per kind (``force_factors`` None: :data:`FORCE_FACTORS`),
    checked: positive finite numbers that hold 1, the base noise."""
    axes = {"energy": energy_factors, "virial": virial_factors,
            "forces": FORCE_FACTORS if force_factors is None else force_factors}
    for kind, factors in axes.items():
        arg = f"{'force' if kind == 'forces' else kind}_factors"
        try:
            values = [float(f) for f in factors]
        except (TypeError, ValueError):
            values = [math.nan]
        if not all(math.isfinite(f) and f > 0 for f in values):
            raise ValueError(f"{arg} are multipliers of the base {kind} sigma: positive finite "
                             f"numbers, got {factors!r}")
        if 1.0 not in values:
            raise ValueError(f"{arg} must hold 1 (the base noise), got {factors!r}")
        axes[kind] = tuple(values)
    return axes


def search_noise(terms, sparse_sets, u_factor, frames, obs, gradients, folds, *,
                 batch_atoms: int, energy_factors=ENERGY_FACTORS,
                 virial_factors=VIRIAL_FACTORS, force_factors=None, progress: bool = False,
                 grams: FoldGrams | None = None) -> dict:
    """The grid search: :func:`fold_grams`, :func:`grid_alphas`, :func:`held_out_errors`,
    and the multipliers with the smallest score ``E_MAE / E_MAE(1) + F_MAE / F_MAE(1)``
    (relative to the base noise; kinds present only; without forces, the virial MAE takes
    their place). The grid is energy x virial multipliers, and x ``force_factors`` (default
    :data:`FORCE_FACTORS`: none) where given. An optimum on the edge of an axis extends that
    axis once in that direction (two more factors of 2; an axis whose optimum reaches its
    edge only after another axis was extended is extended then) and warns if it is still on
    the edge and scores more than :data:`EDGE_GAIN` better than one step inside
    (``grams``: the :func:`fold_grams` of ``folds``, if already computed). Returns a report:
    ``factors`` (energy, forces, virial), ``table`` (one row per point tried), ``folds``,
    ``edge`` (the kinds whose optimum stayed on the edge), ``edge_gain`` (for each, that
    share).
    """
    counts = np.bincount(obs.kind, minlength=len(KINDS))
    present = counts > 0
    if grams is None:
        grams = fold_grams(terms, sparse_sets, u_factor, frames, obs, gradients, folds,
                           batch_atoms=batch_atoms, progress=progress)
    axes = _axes(energy_factors, virial_factors, force_factors)
    rows: list[dict] = []
    edge: list[str] = []
    extended: set[str] = set()  # each axis is extended once, when its optimum is on an edge
    while True:
        done = {tuple(r[kind] for kind in KINDS) for r in rows}
        new = np.array([g for g in _grid(axes, present) if tuple(g) not in done])
        if len(new):
            errors = held_out_errors(terms, sparse_sets, frames, obs, gradients, folds,
                                     grid_alphas(grams, new), batch_atoms=batch_atoms,
                                     progress=progress)
            for p, g in enumerate(new):
                rows.append({**{kind: float(g[k]) for k, kind in enumerate(KINDS)},
                             **{f"{kind}_mae": (None if errors[kind] is None
                                                else float(errors[kind][p])) for kind in KINDS}})
        base = next(r for r in rows if all(r[kind] == 1.0 for kind in KINDS))
        scored = [kind for kind in ("energy", "forces") if present[KINDS.index(kind)]]
        if not present[FORCES] and present[VIRIAL]:
            scored.append("virial")
        for r in rows:
            r["score"] = float(sum(r[f"{k}_mae"] / base[f"{k}_mae"] if base[f"{k}_mae"] > 0
                                   else 0.0 for k in scored))
        best = min(rows, key=lambda r: (r["score"], sum(abs(math.log(r[kind]))
                                                        for kind in KINDS)))
        edge = [kind for k, kind in enumerate(KINDS) if present[k] and len(axes[kind]) > 1
                and best[kind] in (min(axes[kind]), max(axes[kind]))]
        todo = [kind for kind in edge if kind not in extended]
        if not todo:
            break
        for kind in todo:
            extended.add(kind)
            f = axes[kind]
            axes[kind] = (f + (max(f) * 2, max(f) * 4) if best[kind] == max(f)
                          else (min(f) / 4, min(f) / 2) + f)
    gains = {kind: _edge_gain(rows, axes, best, kind) for kind in edge}
    steep = {kind: gain for kind, gain in gains.items() if gain is None or gain > EDGE_GAIN}
    if steep:
        said = ", ".join("?" if g is None else f"{100 * g:.1f} %" for g in steep.values())
        warnings.warn(f"noise cross-validation: the best {' and '.join(steep)} noise "
                      f"multiplier is on the edge of the grid even after extending it once "
                      f"(energy, forces, virial: {best['energy']:g}, {best['forces']:g}, "
                      f"{best['virial']:g}; its score is {said} better than one step inside); "
                      "the data may want a noise outside the range searched: give the noise "
                      "explicitly", UserWarning, stacklevel=3)
    return {"factors": [best["energy"], best["forces"], best["virial"]], "table": rows,
            "n_folds": int(np.max(folds)) + 1, "edge": edge, "edge_gain": gains,
            "scored": scored, "best": best}


def _edge_gain(rows: list[dict], axes: dict, best: dict, kind: str) -> float | None:
    """How much better (a share of the score) the best point, on the edge of ``kind``'s
    axis, scores than the point one step inside with the other multipliers alike."""
    f = sorted(axes[kind])
    inner = f[1] if best[kind] == f[0] else f[-2]
    for r in rows:
        if r[kind] == inner and all(r[k] == best[k] for k in KINDS if k != kind):
            return float((r["score"] - best["score"]) / max(best["score"], 1e-300))
    return None  # (never: the grid holds every point of the axes)


def frame_config_types(obs, n_frames: int) -> np.ndarray:
    """The config_type of each frame, from its observation rows ("default" for a frame
    without any)."""
    out = np.full(n_frames, "default", dtype=object)
    out[obs.frame[::-1]] = obs.config_type[::-1]  # the first row of each frame wins
    return out


def cross_validated_noise(terms, sparse_sets, u_factor, data, noise, *, n_folds: int = 5,
                          seed: int = 0, batch_atoms: int, progress: bool = False,
                          energy_factors=ENERGY_FACTORS, virial_factors=VIRIAL_FACTORS,
                          force_factors=None, predictive: bool = True,
                          jitter_absolute: float | None = None) -> dict:
    """:func:`search_noise` on a fitted model's training data (``data``: a
    :class:`~gapkit.gp.design.TrainingData` built with ``noise``, the base), with folds
    by frame stratified by config_type (:func:`assign_folds`, seeded). With fewer than
    :data:`MIN_FRAMES` frames nothing is searched and the base noise is kept (the report
    says why); with fewer frames of a kind than folds, fewer folds. The report adds the base
    and chosen sigmas (``sigma_before``, ``sigma_after``: energy eV/atom, forces eV/Å,
    virial eV/atom), ``note`` and, with ``predictive``, ``predictive``: the
    predictive-variance form of each kind fitted on the folds at the chosen noise
    (:func:`calibrate_predictive`; all None without cross-validation). With
    ``jitter_absolute`` (that of ``u_factor``), also ``solution``: the fit at the chosen noise
    (:func:`full_solution`, a DTCSolution, not JSON), None without cross-validation."""
    n_folds = count(n_folds, "n_folds", minimum=2)
    _axes(energy_factors, virial_factors, force_factors)  # refused before any pass
    frames, obs = data.frames, data.observations
    base = [noise.sigma(kind) for kind in KINDS]
    report: dict = {"method": "cv", "sigma_before": base, "note": "",
                    "predictive": {kind: None for kind in KINDS}}
    if len(frames) < MIN_FRAMES:
        report.update(factors=[1.0, 1.0, 1.0], sigma_after=base, table=[], n_folds=0,
                      note=f"{len(frames)} training frames (fewer than {MIN_FRAMES}): the "
                           "noise is not cross-validated; the base noise is kept")
        return report
    frames_with = [len(np.unique(obs.frame[obs.kind == k])) for k in range(len(KINDS))]
    fewest = min(n for n in frames_with if n > 0)
    k = min(int(n_folds), fewest)
    if k < 2:
        report.update(factors=[1.0, 1.0, 1.0], sigma_after=base, table=[], n_folds=0,
                      note="a label kind is in only one frame: the noise is not "
                           "cross-validated; the base noise is kept")
        return report
    if k < n_folds:
        report["note"] = (f"{k} folds instead of {n_folds}: a label kind is in only {fewest} "
                          "frames")
    folds = assign_folds(frame_config_types(obs, len(frames)), k, seed)
    grams = fold_grams(terms, sparse_sets, u_factor, frames, obs, data.gradients, folds,
                       batch_atoms=batch_atoms, progress=progress)
    found = search_noise(terms, sparse_sets, u_factor, frames, obs, data.gradients, folds,
                         batch_atoms=batch_atoms, energy_factors=energy_factors,
                         virial_factors=virial_factors, force_factors=force_factors,
                         progress=progress, grams=grams)
    report.update(found)
    if predictive:  # before the full solution: its R is one M x M matrix less at the peak
        report["predictive"] = calibrate_predictive(
            terms, sparse_sets, frames, obs, data.gradients, folds, grams, found["factors"],
            batch_atoms=batch_atoms, progress=progress, seed=seed)
    if jitter_absolute is not None:
        report["solution"] = full_solution(grams, found["factors"], jitter_absolute)
    report["sigma_after"] = [s * f for s, f in zip(base, found["factors"])]
    return report
