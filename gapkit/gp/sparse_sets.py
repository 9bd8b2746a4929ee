"""The sparse points of a fit's terms (:func:`term_sparse_set`), in this process or on
Dask workers, where CUR runs without bringing the descriptors to one process. The same
passes run in this process over partitions of the frames (:class:`Streamed`) when every
environment's descriptor values would pass :func:`stream_bytes`: memory flat in N.

:func:`gapkit.gp.sparsify.select_sparse_points` with ``method="cur"`` needs, per kernel
type, the distinct rows of the descriptor matrix X and their rank-k leverage scores. Both
come from statistics that combine over the partitions of the rows:

* distinct rows: each worker hashes its rows rounded to the grid ``duplicate_tol * max|X|``
  (the maximum over all partitions; 128-bit hashes), and the first occurrence of each hash
  in the fit's order is kept — the rows ``_distinct_rows`` keeps in one process;
* leverage (the ``"gram"`` solver, which one process uses for tall X, n >= 10 D): the Gram
  matrix X^T X is the sum of the partitions' (D x D each, added pairwise on the workers);
  its eigenvectors V_k come back to every worker, the column norms of X V_k are added, and
  each worker computes the scores of its rows.

This process then holds O(n) numbers (hashes, types, scores: 8-16 bytes per environment),
never the n x D descriptors; the same seeded draw as one process picks the rows, and only
the chosen rows' values are fetched. A type with n < 10 D distinct rows (where one process
uses the SVD of X) is small by that bound (at most 10 D^2 values) and is gathered here and
chosen exactly as in one process.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from .._checks import env_bytes
from . import sparsify as sp
from .design import SparseSet

__all__ = ["handles", "points_on_workers", "term_sparse_set"]


def handles(method: str, options: dict) -> bool:
    """Whether :func:`points_on_workers` chooses these points (CUR with the default or the
    ``"gram"`` leverage solver, FPS, random); the others gather the descriptors."""
    if method == "cur":
        return options.get("cur_solver", "auto") in ("auto", "gram")
    return method in ("fps", "random")


# ------------------------------------------------------------------ on the workers

def _values(res) -> np.ndarray:
    return np.asarray(res.values, dtype=np.float64)


def _summary(res) -> tuple[dict, dict]:
    """Rows, features, kernel types, non-finite rows and max |X| per type of a partition."""
    X = _values(res)
    types = np.asarray(res.centre_types, dtype=np.int64)
    bad = ~np.isfinite(X).all(axis=1)
    absmax = {int(t): float(np.abs(X[types == t]).max(initial=0.0))
              for t in np.unique(types)} if not bad.any() else {}
    return {"n": X.shape[0], "D": X.shape[1], "types": types,
            "bad": np.flatnonzero(bad), "nan": bool(np.isnan(X).any())}, absmax


#: seed of the hash weights (any fixed value: every worker must use the same)
_HASH_SEED = 0x5EED_CAFE


def _digests(res, rows: np.ndarray, scale: float, tol: float) -> np.ndarray:
    """Two 64-bit hashes per row (16 bytes) of the row rounded as ``_distinct_rows``
    rounds it: its float64 words times two fixed random odd weight vectors, modulo 2^64
    (integer matrix products). Equal rows hash equal; two different rows collide with
    probability about 2^-128 (each word difference is nonzero modulo 2^64, and odd weights
    are units)."""
    key = sp._grid_keys(_values(res)[rows], scale, tol)
    weights = np.random.default_rng(_HASH_SEED).integers(
        0, 2**63, size=(key.shape[1], 2), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return np.ascontiguousarray(key.view(np.uint64) @ weights)


def _gram(res, rows: np.ndarray) -> np.ndarray:
    X = _values(res)[rows]
    return X.T @ X


def _norms2(res, rows: np.ndarray, V: np.ndarray) -> np.ndarray:
    norms2 = np.zeros(V.shape[1])
    X = _values(res)
    for b in range(0, rows.size, sp._BLOCK_ROWS):
        XV = X[rows[b:b + sp._BLOCK_ROWS]] @ V
        norms2 += np.einsum("ij,ij->j", XV, XV)
    return norms2


def _leverage(res, rows: np.ndarray, W: np.ndarray) -> np.ndarray:
    X = _values(res)
    lev = np.empty(rows.size)
    for b in range(0, rows.size, sp._BLOCK_ROWS):
        XW = X[rows[b:b + sp._BLOCK_ROWS]] @ W
        lev[b:b + sp._BLOCK_ROWS] = np.einsum("ij,ij->i", XW, XW)
    return lev


def _rows_of(res, rows: np.ndarray) -> np.ndarray:
    return _values(res)[rows]


def _add(a, b):
    return a + b


# ------------------------------------------------------------------ here

def points_on_workers(passes, futures, n_sparse, method: str = "cur", *, split: str,
                      random_state, duplicate_tol: float = 1e-8, cur_mode: str = "sample",
                      cur_solver: str = "auto", fps_start: str = "farthest"):
    """The sparse set :func:`gapkit.gp.sparsify.sparse_points` chooses by ``method``
    (``"cur"``, ``"fps"`` or ``"random"``) from the descriptor results ``futures`` (one per
    partition, in the fit's order, left on the workers), with ``n_sparse`` an int (shared
    over types by ``split``), a dict or ``"auto"``/``"all"``: the rows one process
    chooses. Returns ``(points, types, indices)``."""
    if cur_mode not in ("deterministic", "sample"):
        raise ValueError(f"unknown cur_mode {cur_mode!r}; choose 'deterministic' or 'sample'")
    if fps_start not in ("farthest", "random"):
        raise ValueError(f"unknown fps_start {fps_start!r}; choose 'farthest' or 'random'")
    client = passes.client

    def each(fn, *args):
        return [client.submit(fn, f, *(a[p] if isinstance(a, _PerPart) else a for a in args),
                              pure=False) for p, f in enumerate(futures)]

    summaries = passes.gather(each(_summary))
    stats = [s for s, _ in summaries]
    starts = np.cumsum([0] + [s["n"] for s in stats])
    bad = np.concatenate([s["bad"] + a for s, a in zip(stats, starts[:-1])])
    if bad.size:
        kind = "NaN" if any(s["nan"] for s in stats) else "infinite"
        raise ValueError(f"X contains {kind} values (rows {bad[:10].tolist()}"
                         f"{' ...' if bad.size > 10 else ''}); fix the descriptors before "
                         "choosing sparse points")
    types = np.concatenate([s["types"] for s in stats])
    D = stats[0]["D"]
    if n_sparse == "all":
        utypes, counts = np.unique(types, return_counts=True)
        n_sparse = {int(t): int(c) for t, c in zip(utypes, counts)}
    elif n_sparse == "auto":
        n_sparse = sp.auto_sparse_count(types.size)
    budget = sp.split_budget(types, n_sparse, split)
    rng = sp._rng(random_state)
    part_of = np.searchsorted(starts, np.arange(types.size), side="right") - 1
    chosen = []
    for t, m in budget.items():
        if m == 0:
            continue
        rows = np.flatnonzero(types == t)
        distinct = rows[_distinct(each, passes, rows, starts, part_of, summaries, t,
                                  duplicate_tol)]
        m = sp._clamp(m, distinct.size, f"type {t}")
        if m == distinct.size:
            chosen.append(distinct)
            continue
        local = _PerPart.split(distinct, starts, part_of)
        if method == "random":  # as one process: a draw over the distinct rows' count
            pick = sp._select_random(np.empty((distinct.size, 0)), m, rng)
            chosen.append(distinct[np.asarray(pick, dtype=np.int64)])
            continue
        if method == "fps":
            pick = _fps(client, futures, local, m, rng, fps_start)
            chosen.append(distinct[pick])
            continue
        solver = cur_solver
        if solver == "auto":
            solver = "gram" if distinct.size >= 10 * D else "svd"
        if solver == "svd":  # n < 10 D rows: small, chosen here as in one process
            X = np.concatenate(passes.gather(each(_rows_of, local)))
            pick = sp._select_cur(X, m, rng, cur_mode=cur_mode, cur_solver="svd")
        else:
            lev = _gram_leverage(each, passes, local, distinct.size, m)
            pick = sp._cur_rows(lev, m, rng, cur_mode)
        chosen.append(distinct[np.asarray(pick, dtype=np.int64)])
    if not chosen:
        return np.zeros((0, D)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = np.sort(np.concatenate(chosen)).astype(np.int64)
    points = np.concatenate(passes.gather(each(_rows_of, _PerPart.split(idx, starts,
                                                                        part_of))))
    return points, types[idx], idx


# ------------------------------------------------------------------ FPS on the workers
#
# Farthest-point sampling as one process runs it (sparsify._select_fps), exactly: each
# worker keeps the squared distance of its rows to the points chosen so far (dmin) and
# sends its k rows of largest dmin with the largest dmin among the rest (its bound). The
# caller then goes on choosing among those candidates, updating their dmin itself, for as
# long as the best candidate beats every worker's bound: dmin never grows, so no row left
# behind can beat it. When none does, the workers fold in the points chosen meanwhile and
# send new candidates (a round). Each distance is computed as one process computes it (the
# row's squared norm where it lives, one matrix-vector product per chosen point), so the
# choices are one process's, ties to the row first in the fit's order.

def _fps_state(res, rows: np.ndarray) -> dict:
    X = np.ascontiguousarray(_values(res)[rows])
    return {"X": X, "sq": np.einsum("ij,ij->i", X, X), "dmin": np.full(rows.size, np.inf)}


def _fps_sum(state: dict) -> np.ndarray:
    return state["X"].sum(axis=0)


def _fps_farthest(state: dict, mean: np.ndarray) -> tuple[int, float]:
    """The row farthest from ``mean`` (first on ties) and its squared distance."""
    if state["X"].shape[0] == 0:
        return -1, -np.inf
    dev = state["X"] - mean
    d = np.einsum("ij,ij->i", dev, dev)
    i = int(np.argmax(d))
    return i, float(d[i])


def _fps_rows(state: dict, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return state["X"][idx], state["sq"][idx]


def _fps_update(state: dict, mine: np.ndarray, points: np.ndarray, sq: np.ndarray) -> dict:
    """The state after the points chosen since the last round (rows ``points``, squared
    norms ``sq``; ``mine``: those of them that are rows here, which leave the race)."""
    X, dmin = state["X"], state["dmin"].copy()
    for p, s in zip(points, sq):
        np.minimum(dmin, np.maximum(state["sq"] + s - 2.0 * (X @ p), 0.0), out=dmin)
    dmin[mine] = -np.inf
    return {**state, "dmin": dmin}


def _fps_top(state: dict, k: int) -> tuple:
    """The ``k`` rows of largest dmin (in row order): positions, dmin, rows, squared
    norms; and the largest dmin among the others (-inf if none)."""
    dmin = state["dmin"]
    if k >= dmin.size:
        idx, bound = np.arange(dmin.size), -np.inf
    else:
        order = np.argpartition(-dmin, k)
        idx, bound = np.sort(order[:k]), float(dmin[order[k]])
    return idx, dmin[idx], state["X"][idx], state["sq"][idx], bound


def _fps(client, futures, local, m: int, rng, fps_start: str) -> np.ndarray:
    """Positions (in the order of the rows ``local`` of each partition, concatenated) of
    the ``m`` rows farthest-point sampling chooses, in the order it chooses them."""
    sizes = np.array([rows.size for rows in local])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])

    def submit(fn, *args):
        return client.submit(fn, *args, pure=False)

    states = [submit(_fps_state, f, rows) for f, rows in zip(futures, local)]
    if fps_start == "farthest":
        sums = client.gather([submit(_fps_sum, s) for s in states])
        mean = np.sum(sums, axis=0) / n
        far = client.gather([submit(_fps_farthest, s, mean) for s in states])
        best = max(range(len(far)), key=lambda p: (far[p][1], -p))
        first = int(offsets[best] + far[best][0])
    else:
        first = int(rng.integers(n))
    owner = int(np.searchsorted(offsets, first, side="right") - 1)
    row, sq = client.gather(submit(_fps_rows, states[owner], np.array([first - offsets[owner]])))
    chosen, new_rows, new_sq = [first], [row], [sq]
    k = max(64, -(-2 * m // max(1, len(states))))
    while len(chosen) < m:
        if new_rows:  # the workers fold in the points chosen since the last round
            pending = np.array(chosen[len(chosen) - len(new_rows):], dtype=np.int64)
            part = np.searchsorted(offsets, pending, side="right") - 1
            points, norms = np.concatenate(new_rows), np.concatenate(new_sq)
            states = [submit(_fps_update, s, pending[part == p] - offsets[p], points, norms)
                      for p, s in enumerate(states)]
        tops = client.gather([submit(_fps_top, s, k) for s in states])
        pos = np.concatenate([offsets[p] + t[0] for p, t in enumerate(tops)])
        val = np.concatenate([t[1] for t in tops])
        rows = np.concatenate([t[2] for t in tops])
        rsq = np.concatenate([t[3] for t in tops])
        bound = max(t[4] for t in tops)
        new_rows, new_sq = [], []
        keep = val > bound  # the others cannot be chosen before the next round
        pos, val, rows, rsq = pos[keep], val[keep], rows[keep], rsq[keep]
        while len(chosen) < m and pos.size:
            i = int(np.argmax(val))  # first on ties: the row first in the fit's order
            chosen.append(int(pos[i]))
            new_rows.append(rows[i:i + 1])
            new_sq.append(rsq[i:i + 1])
            np.minimum(val, np.maximum(rsq + rsq[i] - 2.0 * (rows @ rows[i]), 0.0), out=val)
            val[i] = -np.inf
            keep = val > bound
            pos, val, rows, rsq = pos[keep], val[keep], rows[keep], rsq[keep]
        if not new_rows:  # no candidate beat the bound (ties at it): more candidates
            k *= 4
    return np.asarray(chosen, dtype=np.int64)


class _PerPart(list):
    """An argument with one value per partition (the rows of the fit's order that fall in
    each, as indices within it)."""

    @classmethod
    def split(cls, rows: np.ndarray, starts: np.ndarray, part_of: np.ndarray) -> "_PerPart":
        return cls(rows[part_of[rows] == p] - starts[p] for p in range(starts.size - 1))


def _distinct(each, passes, rows, starts, part_of, summaries, t, tol) -> np.ndarray:
    """Positions in ``rows`` (one type's rows, in the fit's order) of the first occurrence
    of each distinct row, as ``_distinct_rows`` finds them on all the rows at once."""
    if tol < 0 or not np.isfinite(tol):
        raise ValueError(f"duplicate_tol must be a finite number >= 0; got {tol}")
    if rows.size == 1:
        return np.zeros(1, dtype=np.int64)
    scale = max(absmax.get(int(t), 0.0) for _, absmax in summaries)
    local = _PerPart.split(rows, starts, part_of)
    keys = np.concatenate(passes.gather(each(_digests, local, scale, tol)))
    void = keys.view(np.dtype((np.void, 16))).ravel()
    _, first = np.unique(void, return_index=True)
    return np.sort(first).astype(np.int64)


def _gram_leverage(each, passes, local, n: int, k: int) -> np.ndarray:
    """``leverage_scores(X, k, solver="gram")`` of the rows ``local`` of each partition,
    from the summed Gram matrix (in the fit's order of the rows)."""
    V = sp._gram_basis(*np.linalg.eigh(passes.reduce(_add, each(_gram, local))), n, k)
    if V is None:
        return np.zeros(n)
    norms2 = passes.reduce(_add, each(_norms2, local, V))
    W = V / np.sqrt(norms2)
    return np.concatenate(passes.gather(each(_leverage, local, W)))


# ------------------------------------------------------------------ streamed in this process
#
# The same passes in one process, over partitions of the frames whose descriptor values are
# computed again at each pass and dropped after it: memory stays flat in the number of
# environments (one partition's values and the D x D Gram at a time), for 2 + 4 passes per
# kernel type of values-only descriptors (CUR by the Gram path) instead of one.

#: the descriptor values of all environments (float64 bytes) above which one process
#: streams them while choosing sparse points (``$GAPKIT_SPARSE_STREAM_GB`` overrides)
STREAM_BYTES = 1 << 29
#: float64 bytes of descriptor values per streamed partition
PART_BYTES = 64 << 20


class _Part:
    """A partition's descriptor values (a stand-in for a Dask future on a worker):
    computed again each time a pass reads them."""

    def __init__(self, descriptor, frames):
        self.descriptor, self.frames = descriptor, frames

    def result(self):
        return self.descriptor.compute(self.frames)


class _Lazy:
    """``fn(*args)`` computed when first asked for and kept (a local Dask future)."""

    def __init__(self, fn, args):
        self.fn, self.args, self.done, self.value = fn, args, False, None

    def result(self):
        if not self.done:
            self.value = self.take()
            self.done, self.fn, self.args = True, None, ()
        return self.value

    def take(self):
        """The value, not kept (what a reduction adds in and lets go)."""
        if self.done:
            return self.value
        return self.fn(*(a.result() if isinstance(a, (_Part, _Lazy)) else a
                         for a in self.args))


class Streamed:
    """Runs :func:`points_on_workers` in this process: ``client`` and passes in one, each
    task computed when its result is gathered, a reduction adding its terms one at a
    time."""

    def __init__(self):
        self.client = self

    def submit(self, fn, *args, pure: bool = False):
        return _Lazy(fn, args)

    def gather(self, futures):
        if isinstance(futures, list):
            return [f.result() for f in futures]
        return futures.result()

    def reduce(self, combine, futures):
        out = None
        for f in futures:
            value = f.take()
            out = value if out is None else combine(out, value)
        return out


def stream_bytes() -> int:
    """:data:`STREAM_BYTES`, or ``$GAPKIT_SPARSE_STREAM_GB`` GB when set."""
    size = env_bytes("GAPKIT_SPARSE_STREAM_GB", "the descriptor values above which sparse "
                     "points are chosen from streamed descriptors")
    return STREAM_BYTES if size is None else size


def streamed_parts(descriptor, frames) -> list | None:
    """The partitions (:class:`_Part`) to choose sparse points from without holding every
    environment's descriptor values, when those would pass :func:`stream_bytes`; None when
    they fit."""
    from ..descriptors.base import frame_batches

    sizes = getattr(frames, "n_atoms", None)  # a FrameFile's, from its index
    sizes = np.asarray([len(a) for a in frames] if sizes is None else sizes)
    if len(frames) < 2 or sizes.sum() == 0:
        return None
    n_features = descriptor.compute(frames[:1]).values.shape[1]
    limit = stream_bytes()
    if sizes.sum() * n_features * 8 <= limit:
        return None
    per_part = max(1, PART_BYTES // (8 * max(n_features, 1)))
    return [_Part(descriptor, frames[a:b]) for a, b in frame_batches(frames, per_part)]


# ------------------------------------------------------------------ the fit's sparse sets

def term_sparse_set(term, frames, random_state) -> SparseSet:
    """The sparse points of a fitted term (a :class:`gapkit.Term` whose descriptor knows
    the species) from the descriptors of every environment of ``frames``, by the term's
    ``n_sparse`` (an int, a per-species dict, ``"all"`` or ``"auto"``:
    :func:`~gapkit.gp.sparsify.auto_sparse_count`), ``sparse_method`` and
    ``sparse_options`` (CUR samples by leverage, as gap_fit's ``cur_points``, unless
    ``cur_mode`` says otherwise; an integer total is shared over the species by
    ``split``, default ``"equal"``: :func:`~gapkit.gp.sparsify.split_budget`). float64 points."""
    import torch

    from . import parallel

    options = dict(term.sparse_options or {})
    split = options.pop("split", "equal")
    if split not in sp.SPLITS:
        raise ValueError(f"Term(sparse_options={{'split': {split!r}}}): the split of a total "
                         f"n_sparse over species must be one of {sp.SPLITS} (default 'equal')")
    if term.sparse_method == "cur":
        options.setdefault("cur_mode", "sample")
    n_sparse = term.n_sparse
    if isinstance(n_sparse, str) and n_sparse not in ("all", "auto"):
        raise ValueError(f"n_sparse must be an int, a dict, 'all' or 'auto', got {n_sparse!r}")
    passes = parallel.active()
    if passes is None and n_sparse != "all" and handles(term.sparse_method, options):
        parts = streamed_parts(term.descriptor, frames)
        if parts is not None:  # flat memory: the values computed again at each pass
            sp._check_method(term.sparse_method, options, row_only=True)
            points, types, idx = points_on_workers(
                Streamed(), parts, n_sparse, term.sparse_method, split=split,
                random_state=random_state, **options)
            return SparseSet(torch.as_tensor(points), torch.as_tensor(types), idx)
    if passes is None or len(frames) < 2:
        res = term.descriptor.compute(frames)
    else:  # each worker its partition's descriptors (values only), left there
        from ..descriptors.base import concatenate

        futures = passes.map(_descriptor_pass, frames, None, term.descriptor)
        if n_sparse != "all" and handles(term.sparse_method, options):
            sp._check_method(term.sparse_method, options, row_only=True)
            points, types, idx = points_on_workers(
                passes, futures, n_sparse, term.sparse_method, split=split,
                random_state=random_state, **options)
            return SparseSet(torch.as_tensor(points), torch.as_tensor(types), idx)
        res = concatenate(passes.gather(futures), [start for start, _ in passes.bounds])
    if n_sparse == "all":
        types_, counts = np.unique(res.centre_types, return_counts=True)
        n_sparse = {int(t): int(c) for t, c in zip(types_, counts)}
    elif n_sparse == "auto":
        n_sparse = sp.auto_sparse_count(len(res.centre_types))
    with warnings.catch_warnings():
        if term.n_sparse == "all":  # duplicates are dropped, silently here
            warnings.simplefilter("ignore", UserWarning)
        if not isinstance(n_sparse, Mapping):  # the total, shared over the species
            n_sparse = sp.split_budget(res.centre_types, n_sparse, split)
        chosen = sp.sparse_points(res.values, n_sparse, method=term.sparse_method,
                               types=res.centre_types, random_state=random_state, **options)
    return SparseSet(chosen.points.to(torch.float64), chosen.types, chosen.indices)


def _descriptor_pass(frames, _obs, _offset, descriptor):
    """The descriptor values of one partition of the frames, on a Dask worker."""
    return descriptor.compute(frames)
