"""The sparse GP solve of GAP: projected process (DTC), by incremental QR.

With ``U^T U = K_MM + jitter`` (Cholesky) and noise ``Sigma`` (diagonal),

.. math::

    A = \\begin{bmatrix} \\Sigma^{-1/2} K_{NM} \\\\ U \\end{bmatrix} = Q R, \\qquad
    \\alpha = R^{-1} Q^T \\begin{bmatrix} \\Sigma^{-1/2} y \\\\ 0 \\end{bmatrix}

(Quiñonero-Candela & Rasmussen 2005, DTC; Bartók & Csányi 2015, eq. 30). ``R`` is
built over row blocks, ``[R, b; 0, r; A_k, y_k] -> qr``, so memory is O(M^2 + block)
whatever the number of observations N, and ``R^T R = K_MM + K_MN Sigma^{-1} K_NM`` is
kept for posterior variances. The carried residual ``r`` gives the exact quadratic
form of the log marginal likelihood without any N x N matrix:

.. math::

    \\log p(y) = -\\tfrac12 r^2 - \\sum_i \\log R_{ii} + \\sum_i \\log U_{ii}
        - \\sum_n \\log \\sigma_n - \\tfrac N2 \\log 2\\pi ,

since ``y^T (Q_NN + Sigma)^{-1} y = |Sigma^{-1/2} y|^2 - |b|^2 = r^2`` (Woodbury) and
``|Q_NN + Sigma| = |R^T R| |Sigma| / |K_MM + jitter|`` (determinant lemma).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .parallel import SendsTensors

__all__ = ["DTCSolution", "IncrementalQR", "StoredRows", "cholesky_upper", "condition_number",
           "dense_cpu", "dense_work", "extend_dtc", "fold_dtc", "qr_block_rows", "solve_dtc",
           "stack_r", "stored_rows"]

#: up to this size condition numbers are exact (singular values); beyond, estimated
EXACT_CONDITION_SIZE = 2000

_DENSE_CPU = [0.0]
_DENSE_DEPTH = threading.local()


def dense_cpu() -> float:
    """CPU-s this process has spent so far in the dense algebra over the sparse points
    (functions marked :func:`dense_work`: Gram products, Cholesky and QR factors, solves
    with M x M factors), the part of a fit whose cost grows as ``n M^2`` and ``M^3``
    (:func:`gapkit.auto.estimate_cost` scales it apart from the rest)."""
    return _DENSE_CPU[0]


def dense_work(fn):
    """Count the CPU time of ``fn`` in :func:`dense_cpu` (a call inside another counted
    one is not counted twice)."""
    @functools.wraps(fn)
    def counted(*args, **kwargs):
        depth = getattr(_DENSE_DEPTH, "depth", 0)
        if depth:
            return fn(*args, **kwargs)
        _DENSE_DEPTH.depth = 1
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _DENSE_CPU[0] += time.process_time() - start
            _DENSE_DEPTH.depth = 0
    return counted


@dense_work
def cholesky_upper(kmm: torch.Tensor, jitter: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of ``K_MM + jitter * mean(diag K_MM) * I``.

    Returns ``(U, absolute_jitter)``. Raises a ValueError naming the jitter setting
    and the smallest eigenvalue when the matrix is not positive definite.
    """
    scale = float(torch.diagonal(kmm).mean()) if kmm.shape[0] else 1.0
    absolute = jitter * scale
    eye = torch.eye(kmm.shape[0], dtype=kmm.dtype)
    lower, info = torch.linalg.cholesky_ex(kmm + absolute * eye)
    if int(info) != 0:
        smallest = float(torch.linalg.eigvalsh(kmm)[0])
        raise ValueError(
            f"K_MM (sparse-point covariance, {kmm.shape[0]} points) is not positive definite "
            f"with jitter {jitter:g} x mean diagonal ({absolute:.3g} eV^2): its smallest "
            f"eigenvalue is {smallest:.3g} eV^2. Raise GAP(jitter=...) (e.g. to "
            f"{max(10 * jitter, 1e-8):g}) or use fewer / more distinct sparse points.")
    return lower.T.contiguous(), absolute


#: rows buffered before they are folded into R: at most this many bytes (and at least
#: 512 rows: LAPACK's blocked update slows below), at most max(2 M, 2048) rows (the
#: former rule: beyond that a fold costs no less per row). At M 5,000 the former 10,000
#: rows were 0.4 GB of buffer and 1.6 GB of stacked copies per fold on every worker.
QR_BLOCK_BYTES = 64 * 2**20


def qr_block_rows(m: int) -> int:
    """Rows :class:`IncrementalQR` buffers per fold for ``m`` sparse points."""
    return min(max(2 * m, 2048), max(512, QR_BLOCK_BYTES // (8 * (m + 1))))


_BLAS_THREADS = None


def _lapack_threads():
    """A context that runs scipy's LAPACK with torch's thread count (scipy's OpenBLAS
    would start one thread per core, which spin on a busy machine: see gapkit._threads)."""
    global _BLAS_THREADS
    from threadpoolctl import ThreadpoolController

    if _BLAS_THREADS is None:
        _BLAS_THREADS = ThreadpoolController()
    return _BLAS_THREADS.limit(limits=torch.get_num_threads(), user_api="blas")


@dense_work
def _fold(top, rows, *, triangular: bool = False) -> None:
    """Overwrite ``top`` (n x n, upper triangular, float64, Fortran order) with the R
    factor of ``[top; rows]`` (``rows``: b x n, Fortran order, overwritten; upper
    triangular itself with ``triangular``): LAPACK's triangular-pentagonal QR
    (``dtpqrt``), each reflector touching one row of ``top`` and all of ``rows`` — 2 b n^2 flops
    (2/3 n^3 for two triangles) where a QR of the stacked matrix does 2 (n + b) n^2 - 2/3
    n^3 and holds two copies of it. R's row signs are LAPACK's."""
    from scipy.linalg import lapack

    n = top.shape[1]
    if rows.shape[0] == 0 or n == 0:
        return
    level = min(rows.shape[0], n) if triangular else 0
    with _lapack_threads():
        a, _, _, info = lapack.dtpqrt(level, max(1, min(64, n)), top, rows,
                                      overwrite_a=1, overwrite_b=1)
    if info != 0:  # pragma: no cover - only for invalid arguments
        raise RuntimeError(f"LAPACK dtpqrt failed (info {info})")
    if a is not top:  # pragma: no cover - scipy copies only a non-Fortran array
        top[...] = a


def _row_signs(r: torch.Tensor) -> torch.Tensor:
    """(n, 1): the factors that make the diagonal of ``r`` non-negative (1 where zero)."""
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return signs[:, None]


def _signed(r: torch.Tensor) -> torch.Tensor:
    """``r`` with its rows' signs flipped so that the diagonal is non-negative."""
    return r * _row_signs(r)


def _finished(top, *, copy: bool = True) -> torch.Tensor:
    """An upper-triangular factor held by LAPACK (Fortran order, anything below the
    diagonal) as a tensor, zero below the diagonal, non-negative diagonal: a C-order copy,
    or without ``copy`` ``top`` itself made so (a tensor with Fortran strides; at M 5,000
    each copy is 0.2 GB on a Dask worker)."""
    if copy:
        r = torch.from_numpy(top).clone(memory_format=torch.contiguous_format)
        r.triu_()
        return r.mul_(_row_signs(r))
    for j in range(top.shape[1] - 1):  # column by column: no index or mask arrays
        top[j + 1:, j] = 0.0
    r = torch.from_numpy(top)
    return r.mul_(_row_signs(r))


def _own_fortran(t: torch.Tensor):
    """``t`` as a writable Fortran-order float64 array: ``t``'s own memory when it is one
    (a factor made by ``_finished(copy=False)``), else a copy."""
    arr = t.numpy(force=True)
    if arr.flags.f_contiguous and arr.flags.writeable:
        return arr
    return arr.copy(order="F")


def _on_lapack(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype == torch.float64


class IncrementalQR:
    """Streaming QR of ``[Sigma^{-1/2} K_NM, Sigma^{-1/2} y; U, 0]``.

    Parameters
    ----------
    u : tensor of shape (M, M)
        Upper Cholesky factor of ``K_MM + jitter``.
    block_rows : int
        Rows buffered before each fold into R (:func:`qr_block_rows` by default: at most
        64 MB). On the CPU in float64 each fold is LAPACK's triangular-pentagonal QR, 2
        block M^2 flops, in place (memory: R and one block); elsewhere a QR of the stacked
        ``[R; block]``.
    """

    def __init__(self, u: torch.Tensor, block_rows: int | None = None):
        m = u.shape[0]
        self.m = m
        self.block_rows = block_rows or qr_block_rows(m)
        self._lapack = _on_lapack(u)
        aug = _augmented(u)  # [R, b; 0, r]
        self._aug = aug.numpy(force=True).copy(order="F") if self._lapack else aug
        self._buffer: list[torch.Tensor] = []
        self._buffered = 0
        self.n_rows = 0
        self.sum_log_sigma = 0.0

    def add(self, rows: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> None:
        """Add observations: rows (n, M) of K_NM, labels y (n,), noise sigma (n,)."""
        if rows.shape[0] == 0:
            return
        scaled = torch.cat([rows, y[:, None]], dim=1) / sigma[:, None]
        self._buffer.append(scaled)
        self._buffered += rows.shape[0]
        self.n_rows += rows.shape[0]
        self.sum_log_sigma += float(torch.log(sigma).sum())
        if self._buffered >= self.block_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._lapack:
            block = np.empty((self._buffered, self.m + 1), order="F")
            at = 0
            for part in self._buffer:
                block[at:at + part.shape[0]] = part.numpy(force=True)
                at += part.shape[0]
            self._buffer, self._buffered = [], 0
            _fold(self._aug, block)
            return
        self._aug = _positive_r(torch.cat([self._aug] + self._buffer, dim=0))
        self._buffer, self._buffered = [], 0

    def finish(self):
        """``(R, b, r)``: R (M, M) upper triangular, b (M,), residual r."""
        m = self.m
        aug = self.augmented()
        return aug[:m, :m], aug[:m, m], aug[m, m]

    def augmented(self, *, copy: bool = True) -> torch.Tensor:
        """``[R, b; 0, r]`` ((M + 1) square, non-negative diagonal) of every row added.
        Without ``copy``, the factor's own memory, for a caller that adds no more rows
        (on the CPU in float64 a tensor with Fortran strides: one R fewer in memory)."""
        self._flush()
        if self._lapack:
            return _finished(self._aug, copy=copy)
        return self._aug


def stack_r(a: torch.Tensor, b: torch.Tensor, *, consume: bool = False) -> torch.Tensor:
    """The R factor (non-negative diagonal) of ``[a; b]``, two upper-triangular factors of
    the same size (TSQR's combine): on the CPU in float64 LAPACK's triangular QR, 2/3 n^3
    flops (a QR of the stacked 2n x n matrix: 10/3 n^3). With ``consume``, for factors
    nothing reads again (a reduction's intermediate values): ``a`` and ``b`` are
    overwritten when they are Fortran-order (as ``IncrementalQR.augmented(copy=False)``
    and this function make them) and the result is ``a``'s memory, so the combine holds
    no R beyond its two inputs (before: two more, 0.4 GB at M 5,000)."""
    if not (_on_lapack(a) and _on_lapack(b)):
        return _positive_r(torch.cat([a, b]))
    if not consume:
        top = a.numpy(force=True).copy(order="F")
        _fold(top, b.numpy(force=True).copy(order="F"), triangular=True)  # freed here
        return _finished(top)
    top = _own_fortran(a)
    _fold(top, _own_fortran(b), triangular=True)
    return _finished(top, copy=False)


@dense_work
def _positive_r(stacked: torch.Tensor) -> torch.Tensor:
    """The R factor of ``stacked`` with a non-negative diagonal (QR's sign ambiguity
    fixed, so that R factors of the same rows compare)."""
    return _signed(torch.linalg.qr(stacked, mode="r").R)


def dtc_log_marginal_likelihood(r_factor, u_factor, residual, sum_log_sigma, n_rows) -> float:
    """Log marginal likelihood of the DTC model from the QR state (see module docstring)."""
    return float(-0.5 * residual**2
                 - torch.log(torch.abs(torch.diagonal(r_factor))).sum()
                 + torch.log(torch.diagonal(u_factor)).sum()
                 - sum_log_sigma - 0.5 * n_rows * math.log(2.0 * math.pi))


@dataclass(frozen=True)
class DTCSolution:
    """The fitted factors of a DTC solve (:func:`solve_dtc`): weights ``alpha`` (M,),
    ``R`` (``R^T R = K_MM + K_MN Sigma^-1 K_NM``), ``U`` (``U^T U = K_MM`` + jitter), the
    absolute jitter, the log marginal likelihood (nats), the rows fitted and the
    condition numbers the triangular solves see: cond(R) and cond(K_MM + jitter)."""

    alpha: torch.Tensor
    R: torch.Tensor
    U: torch.Tensor
    jitter_absolute: float
    log_marginal_likelihood: float
    condition_number_R: float
    condition_number_kmm_jitter: float
    n_zero_rows: int = 0
    symmetry_violations: tuple = ()


def solve_dtc(terms, sparse_sets, frames, observations, *, jitter: float, batch_atoms: int,
              progress: bool = False, solve: bool = True) -> DTCSolution:
    """The projected-process (DTC) fit: the streaming QR of ``[Sigma^-1/2 K_NM; U]`` over
    blocks of design rows (:func:`gapkit.gp.design.design_blocks`), then
    ``alpha = R^-1 Q^T [Sigma^-1/2 y; 0]`` (DESIGN.md section 3: A = QR). Memory is
    O(M^2 + one block) whatever the number of observations. Without ``solve``, only ``U``
    (``alpha``, ``R`` None; likelihood and cond(R) NaN): for the noise cross-validation,
    whose closed form makes the fit from its own pass (:mod:`gapkit.gp.cv`)."""
    from .design import kmm

    u, jitter_absolute = cholesky_upper(kmm(terms, sparse_sets), jitter)
    if not solve:
        return DTCSolution(None, None, u, jitter_absolute, math.nan, math.nan,  # type: ignore[arg-type]
                           condition_number(u) ** 2)
    from . import parallel

    passes = parallel.active()
    if passes is None:
        part = _qr_pass(frames, observations, 0, terms, sparse_sets, u, batch_atoms, progress)
    else:  # R of each partition's rows on the workers, then R of [U; R_1; ...; R_W] (TSQR)
        part = passes.reduce(_stack_qr, passes.map(_qr_pass, frames, observations, terms,
                                                   sparse_sets, u.shape[0], batch_atoms,
                                                   False))
        part = _stack_qr(_QRPart(_augmented(u, fortran=True), 0, 0.0, 0, ()), part)
    m = u.shape[0]
    aug = part.aug.contiguous()  # C order, as the model's R always was (a solve's rounding
    part = dataclasses.replace(part, aug=aug)  # depends on the layout); the Fortran one freed
    r, b, resid = aug[:m, :m], aug[:m, m], aug[m, m]
    alpha = torch.linalg.solve_triangular(r, b[:, None], upper=True)[:, 0]
    return DTCSolution(alpha, r, u, jitter_absolute,
                       dtc_log_marginal_likelihood(r, u, resid, part.sum_log_sigma,
                                                   part.n_rows),
                       condition_number(r), condition_number(u) ** 2, part.n_zero,
                       part.violations)


@dataclass(frozen=True)
class FoldedDTC:
    """A DTC solution with more rows folded in (:func:`fold_dtc`): the new ``alpha`` and
    ``R``, the change of the log marginal likelihood, the rows added, the exactly zero
    rows among them and the symmetry violations they carry."""

    alpha: torch.Tensor
    R: torch.Tensor
    delta_log_marginal_likelihood: float
    n_rows: int
    n_zero_rows: int
    symmetry_violations: tuple


def fold_dtc(terms, sparse_sets, alpha: torch.Tensor, r_factor: torch.Tensor, frames,
             observations, *, batch_atoms: int, frame_offset: int = 0) -> FoldedDTC:
    """The DTC fit with the rows of ``observations`` of ``frames`` added, at the same
    sparse points, kernels and noise: the fit from scratch on the old and the new rows,
    at O(new rows x M^2) (the streaming QR of the new rows, stacked on ``[R, R alpha]``).

    ``R alpha`` is ``Q^T [Sigma^-1/2 y; 0]`` of the old rows, so the old labels are not
    needed. The old residual ``r`` is not either: the log marginal likelihood changes by
    ``-r'^2/2 + sum log R_ii - sum log R'_ii - sum log sigma_new - n_new/2 log 2 pi``,
    ``r'`` the residual the new rows leave (``r^2`` of the old rows adds to both).
    """
    m = r_factor.shape[0]
    new = _qr_pass(frames, observations, frame_offset, terms, sparse_sets, m, batch_atoms,
                   False)
    old = torch.zeros((m + 1, m + 1), dtype=r_factor.dtype)
    old[:m, :m] = r_factor
    old[:m, m] = r_factor @ alpha
    aug = _stack_qr(_QRPart(old, 0, 0.0, 0, ()), new).aug.contiguous()  # C order: as in solve_dtc
    r_new, b, resid = aug[:m, :m], aug[:m, m], aug[m, m]
    alpha_new = torch.linalg.solve_triangular(r_new, b[:, None], upper=True)[:, 0]
    logdet = float(torch.log(torch.abs(torch.diagonal(r_factor))).sum()
                   - torch.log(torch.abs(torch.diagonal(r_new))).sum())
    delta = (-0.5 * float(resid) ** 2 + logdet - new.sum_log_sigma
             - 0.5 * new.n_rows * math.log(2.0 * math.pi))
    return FoldedDTC(alpha_new, r_new, delta, new.n_rows, new.n_zero, new.violations)


@dataclass
class StoredRows:
    """The scaled design rows ``Sigma^-1/2 K_NM`` (N x M) and labels ``Sigma^-1/2 y`` (N,)
    of a fit, in memory (:func:`stored_rows`), with the sum of log sigma of those rows:
    what :func:`extend_dtc` needs to add columns without computing the old ones again.
    ``blocks``, when kept: per block of frames, the frames, their observations and each
    term's descriptor result (with gradients), so that new columns need no descriptor
    computed again (most of a design row's cost)."""

    rows: torch.Tensor
    y: torch.Tensor
    sum_log_sigma: float
    blocks: list | None = None

    @property
    def nbytes(self) -> int:
        size = int(self.rows.numel() + self.y.numel()) * self.rows.element_size()
        for _, _, results in self.blocks or []:
            for res in results:
                size += sum(a.nbytes for a in vars(res).values() if hasattr(a, "nbytes"))
        return size

    def append(self, other: "StoredRows") -> None:
        """The rows of ``other`` (more frames, the same columns) after these."""
        self.rows = torch.cat([self.rows, other.rows])
        self.y = torch.cat([self.y, other.y])
        self.sum_log_sigma += other.sum_log_sigma
        if self.blocks is not None:
            self.blocks = None if other.blocks is None else self.blocks + other.blocks

    def drop_descriptors(self) -> None:
        self.blocks = None


def stored_rows(terms, sparse_sets, frames, observations, *, batch_atoms: int,
                descriptors: bool = False) -> StoredRows:
    """:class:`StoredRows` of ``observations`` of ``frames`` (memory N x M), with the
    descriptor results of every block when ``descriptors``."""
    from ..descriptors.base import frame_batches
    from .design import design_blocks, gradients_for

    m = sum(s.n for s in sparse_sets)
    rows, ys, log_sigma = [torch.zeros((0, m), dtype=torch.float64)], [], 0.0
    blocks: list = []
    stops = dict(frame_batches(frames, batch_atoms))
    for start, _, block_obs, block, results in design_blocks(
            terms, sparse_sets, frames, observations, gradients_for(observations),
            batch_atoms=batch_atoms, with_results=True):
        sigma = torch.as_tensor(block_obs.sigma)
        rows.append(block / sigma[:, None])
        ys.append(torch.as_tensor(block_obs.y) / sigma)
        log_sigma += float(torch.log(sigma).sum())
        if descriptors:
            blocks.append((list(frames[start:stops[start]]), block_obs, results))
    y = torch.cat(ys) if ys else torch.zeros(0, dtype=torch.float64)
    return StoredRows(torch.cat(rows), y, log_sigma, blocks if descriptors else None)


@dataclass(frozen=True)
class ExtendedDTC:
    """A DTC solution with sparse points added (:func:`extend_dtc`): the new sparse sets,
    ``alpha``, ``R`` and ``U`` (columns in the order of the new sets: term after term, each
    term's old points and then its added ones), the log marginal likelihood and, when the
    old rows were given, the stored rows at the new columns."""

    sparse_sets: list
    alpha: torch.Tensor
    R: torch.Tensor
    U: torch.Tensor
    log_marginal_likelihood: float
    stored: StoredRows | None


def extend_dtc(terms, sparse_sets, added, jitter_absolute: float, frames, observations, *,
               batch_atoms: int, stored: StoredRows | None = None) -> ExtendedDTC:
    """The DTC fit with the sparse points ``added`` (one SparseSet per term, possibly
    empty) appended to each term's ``sparse_sets``: the fit on the same rows (``frames``,
    ``observations``: every row of the fit) at the new sparse points, with the same
    kernels, noise and absolute jitter, by the QR of ``[U'; Sigma^-1/2 K_NM']``.

    With ``stored`` (the old columns of every row, :func:`stored_rows`) only the new
    columns' kernels are computed (O(N m) kernel rows for m points added, against
    O(N (M + m)) for all), and the QR runs on the rows in memory. Without it, the rows of
    every column are computed again, streamed in blocks (memory O(M^2 + block)). Updating
    R from the old factor alone (``R_12 = R^-T A_1^T A_2`` and the Cholesky of the Schur
    complement) squares cond(R): at cond(R) 1e8, which near-duplicate environments give,
    it lost every digit of the weights, so it is not done.
    Raises ValueError when K_MM of the points is not positive definite at the jitter.
    """
    import numpy as np

    from .design import SparseSet, kmm

    combined, old_cols, new_cols, start = [], [], [], 0
    for s, a in zip(sparse_sets, added):
        indices = None if s.indices is None else np.concatenate(
            [s.indices, np.full(a.n, -1, dtype=np.int64)])
        combined.append(SparseSet(torch.cat([s.points, a.points.to(s.points.dtype)]),
                                  torch.cat([s.types, a.types.to(s.types.dtype)]), indices))
        old_cols.append(torch.arange(start, start + s.n))
        new_cols.append(torch.arange(start + s.n, start + s.n + a.n))
        start += s.n + a.n
    m = start
    k = kmm(terms, combined).to(torch.float64)
    lower, info = torch.linalg.cholesky_ex(k + jitter_absolute * torch.eye(m, dtype=k.dtype))
    if int(info) != 0:
        n_added = m - sum(s.n for s in sparse_sets)
        raise ValueError(f"K_MM of the {m} sparse points with the {n_added} added is not "
                         f"positive definite with the fit's jitter "
                         f"({jitter_absolute:.3g} eV^2): add fewer or more distinct points")
    u = lower.T.contiguous()
    if stored is None:
        part = _qr_pass(frames, observations, 0, terms, combined, u, batch_atoms, False)
        aug, log_sigma, n_rows, new_stored = (part.aug.contiguous(), part.sum_log_sigma,
                                              part.n_rows, None)  # C order: as in solve_dtc
    else:
        if stored.blocks is None:
            extra = stored_rows(terms, added, frames, observations,
                                batch_atoms=batch_atoms).rows
        else:  # the descriptors kept: only the kernels against the new points
            from .design import design_rows

            empty = torch.zeros((0, m - sum(s.n for s in sparse_sets)), dtype=torch.float64)
            extra = torch.cat([empty] + [
                design_rows(terms, added, block, obs, given=results)
                / torch.as_tensor(obs.sigma)[:, None] for block, obs, results in stored.blocks])
        rows = torch.empty((stored.rows.shape[0], m), dtype=torch.float64)
        rows[:, torch.cat(old_cols)] = stored.rows
        rows[:, torch.cat(new_cols)] = extra
        new_stored = StoredRows(rows, stored.y, stored.sum_log_sigma, stored.blocks)
        qr, ones = IncrementalQR(u), torch.ones(rows.shape[0], dtype=torch.float64)
        for lo in range(0, rows.shape[0], qr.block_rows):  # rows and labels scaled already
            qr.add(rows[lo:lo + qr.block_rows], stored.y[lo:lo + qr.block_rows],
                   ones[lo:lo + qr.block_rows])
        aug = qr.augmented()
        log_sigma, n_rows = stored.sum_log_sigma, rows.shape[0]
    r, b, resid = aug[:m, :m], aug[:m, m], aug[m, m]
    alpha = torch.linalg.solve_triangular(r, b[:, None], upper=True)[:, 0]
    return ExtendedDTC(combined, alpha, r, u,
                       dtc_log_marginal_likelihood(r, u, resid, log_sigma, n_rows), new_stored)


@dataclass(frozen=True)
class _QRPart(SendsTensors):
    """The streaming QR of some rows: ``aug = [R, b; 0, r]`` (M + 1 square), the rows
    added, their sum of log sigma, the zero rows and the symmetry violations among them."""

    aug: torch.Tensor
    n_rows: int
    sum_log_sigma: float
    n_zero: int
    violations: tuple


def _augmented(u: torch.Tensor, *, fortran: bool = False) -> torch.Tensor:
    m = u.shape[0]
    aug = torch.zeros((m + 1, m + 1), dtype=u.dtype, device=u.device)
    if fortran:  # Fortran order: what stack_r(consume=True) folds into in place
        aug = aug.T
    aug[:m, :m] = u
    return aug


def _qr_pass(frames, observations, offset: int, terms, sparse_sets, initial, batch_atoms,
             progress) -> _QRPart:
    """The streaming QR of ``[initial, 0; Sigma^-1/2 K_NM, Sigma^-1/2 y]`` over ``frames``
    (the first of which is frame ``offset`` of the fit: symmetry violations name frames by
    their index in the fit); ``initial`` an int M: zeros (a worker's rows alone, combined
    with U later: no M x M matrix sent)."""
    from .design import design_blocks, gradients_for
    from .parallel import trim_heap

    trim_heap()  # what the sparse selection's descriptors left in the heap (see trim_heap)
    if isinstance(initial, int):
        initial = torch.zeros((initial, initial), dtype=torch.float64)
    qr = IncrementalQR(initial)
    n_zero, violations = 0, []
    for start, _, block_obs, rows in design_blocks(
            terms, sparse_sets, frames, observations, gradients_for(observations),
            batch_atoms=batch_atoms, progress=progress, desc="GAP design matrix"):
        y, sigma = torch.as_tensor(block_obs.y), torch.as_tensor(block_obs.sigma)
        keep = informative_rows(rows, [s.n for s in sparse_sets])
        if not bool(keep.all()):  # zero rows change nothing in R or alpha; name bad labels
            zero = ~keep.numpy()
            n_zero += int(zero.sum())
            violations += symmetry_violations(block_obs, zero, start + offset)
        qr.add(rows, y, sigma)
    return _QRPart(qr.augmented(copy=False), qr.n_rows, qr.sum_log_sigma, n_zero,
                   tuple(violations))


def _stack_qr(a: _QRPart, b: _QRPart) -> _QRPart:
    """The QR state of the rows of ``a`` and then ``b``: the R of ``[R_a; R_b]``, made in
    ``a``'s and ``b``'s memory (``stack_r(consume=True)``): the reduction in
    :func:`solve_dtc` reads each part once (an input to a Dask task is mutated here only
    because no other task reads it). A part read a second time (a combine run again on
    the same objects: in-process Dask workers pass objects without copying) is an error,
    never a factor folded from overwritten memory."""
    for part in (a, b):
        if part.__dict__.get("_consumed"):
            raise RuntimeError(
                "a TSQR combine was given an R factor that an earlier combine already "
                "overwrote (a Dask task run twice on the same in-process objects); fit again, "
                "or use a cluster of worker processes (LocalCluster(processes=True))")
        part.__dict__["_consumed"] = True  # a frozen dataclass: set past its __setattr__
    return _QRPart(stack_r(a.aug, b.aug, consume=True), a.n_rows + b.n_rows,
                   a.sum_log_sigma + b.sum_log_sigma, a.n_zero + b.n_zero,
                   a.violations + b.violations)


@dense_work
def condition_number(r: torch.Tensor, *, iterations: int = 40) -> float:
    """The 2-norm condition number ``s_max / s_min`` of an upper-triangular factor ``r``:
    exact (its singular values) up to :data:`EXACT_CONDITION_SIZE`; beyond, estimated by
    ``iterations`` power steps on ``r^T r`` and on its inverse (two triangular solves per
    step), O(M^2) each instead of the SVD's O(M^3) (at M 8,000 about 40 CPU-s a factor,
    and a fit reported four). Power steps approach each extreme singular value from
    inside, so the estimate is a lower bound; it is for reports (``fit_info_``), where
    its order of magnitude is what is read."""
    m = r.shape[0]
    if m <= EXACT_CONDITION_SIZE:
        sv = torch.linalg.svdvals(r)
        return float(sv[0] / sv[-1])
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(m, 1, dtype=r.dtype, generator=gen)
    v = start / start.norm()
    top = 0.0
    for _ in range(iterations):  # s_max^2 = max |r v|^2
        w = r @ v
        top = float(w.norm())
        v = r.T @ w
        v = v / v.norm()
    v = start / start.norm()
    inv = 0.0
    for _ in range(iterations):  # 1 / s_min^2 = max |r^-T v|^2
        w = torch.linalg.solve_triangular(r.T, v, upper=False)
        inv = float(w.norm())
        v = torch.linalg.solve_triangular(r, w, upper=True)
        v = v / v.norm()
    return top * inv


#: a label larger than this (eV/Å for forces, eV for virials) on an observation whose
#: design row is exactly zero is reported as breaking the structure's symmetry
SYMMETRY_LABEL_TOL = 1e-3


#: a design row whose largest entry is below this fraction of the block's largest entry is
#: zero up to round-off (a force component fixed by symmetry: ~1e-16 against ~1)
ZERO_ROW_RTOL = 1e-12


def informative_rows(rows: torch.Tensor, columns) -> torch.Tensor:
    """The rows that are not zero (up to round-off: in every term's columns, ``columns``
    their counts, below :data:`ZERO_ROW_RTOL` of that term's largest entry in the block, so
    that a term's delta does not change the answer). A zero design row (a force or virial
    component that vanishes by the structure's symmetry, or an atom with no neighbour in
    the cutoff) leaves the weights alone whatever its label; in the likelihood it only pulls
    its group's noise sigma towards zero, so the noise learning leaves it out of what it
    maximises (:mod:`gapkit.gp.hyperopt`)."""
    keep = torch.zeros(rows.shape[0], dtype=torch.bool)
    for part in torch.split(rows, list(columns), dim=1):
        if part.numel():
            size = part.abs().amax(1)
            keep |= size > ZERO_ROW_RTOL * float(size.max())
    return keep


def symmetry_violations(block_obs, zero, start: int) -> list[tuple]:
    """``(frame, kind, atom, component, label)`` of the rows in ``zero`` (exactly zero
    design rows) whose label is larger than :data:`SYMMETRY_LABEL_TOL`: the model predicts
    exactly zero there, so such a label breaks the symmetry of its structure."""
    import numpy as np

    bad = np.nonzero(zero & (np.abs(block_obs.y) > SYMMETRY_LABEL_TOL))[0]
    return [(int(block_obs.frame[i]) + start, int(block_obs.kind[i]), int(block_obs.atom[i]),
             int(block_obs.component[i]), float(block_obs.y[i])) for i in bad]


def warn_symmetry(violations, stacklevel: int = 2) -> None:
    """One UserWarning naming the labels of :func:`symmetry_violations` (the frames, and the
    largest: frame, kind, atom and axis or Voigt component, value)."""
    import warnings

    from .observations import KINDS

    frames = sorted({v[0] for v in violations})
    worst = max(violations, key=lambda v: abs(v[4]))
    what = (f"forces atom {worst[2]} {'xyz'[worst[3]]}" if worst[1] == 1
            else f"{KINDS[worst[1]]} {('xx', 'yy', 'zz', 'yz', 'xz', 'xy')[worst[3]]}")
    warnings.warn(
        f"{len(violations)} labels in {len(frames)} frames (e.g. frames {frames[:5]}) are "
        f"non-zero where the structure's symmetry makes them zero (the model predicts exactly "
        f"0 there, whatever the weights); the largest: frame {worst[0]} {what} = "
        f"{worst[4]:.3g}. Check those frames' labels (a unit, "
        "sign or component mix-up?); the fit goes on",
        UserWarning, stacklevel=stacklevel + 1)

