"""Choice of the sparse (inducing) points of a sparse GP.

A sparse GP needs M representative environments z_m per kernel type (see DESIGN §3).
They are picked from the descriptor rows of the training set, in the style of
``gap_fit``'s ``sparse_method``:

``"cur"``
    Leverage-score CUR row selection (``sparse_method=cur_points``).
``"fps"``
    Farthest-point sampling in Euclidean descriptor space.
``"random"``
    Uniform random rows.
``"uniform"``
    For 1-D descriptors (two-body distances, Å): new points on an even grid between
    the smallest and largest value (``sparse_method=uniform``). These are not rows of
    the data, so only :func:`sparse_points` and :func:`uniform_grid` offer it.

:func:`sparse_points` is the main entry point and returns the points themselves;
:func:`select_sparse_points` returns row indices for the row-based methods.

Common behaviour
----------------
* **Per type.** With ``types`` (the kernel type of each row, e.g. the central species
  for SOAP or the species-pair code for two-body) points are chosen separately for
  each type. An integer budget is split over the types in proportion to their row
  counts (or equally, ``split="equal"``: what a fitted term does), at least one point
  each, by largest-remainder rounding so that the total is exactly ``n_sparse``
  (:func:`split_budget`); a ``{type: count}`` dict sets the counts explicitly.
* **Duplicates.** Identical rows (the same environment in many frames, symmetry-
  equivalent atoms of a crystal) are collapsed before selection, keeping the first
  occurrence, so no two selected rows are duplicates. Rows count as identical when
  every entry agrees after rounding to a grid of ``duplicate_tol * max|X|``; this
  catches equivalent environments that differ only by floating-point round-off
  (which would otherwise make K_MM singular). ``duplicate_tol=0`` asks for exact
  equality.
* **Clamp.** Asking for more points of a type than it has distinct rows selects all
  its distinct rows and emits a :class:`UserWarning` naming the type and both counts.
  The shortfall is *not* moved to other types (the total is then below ``n_sparse``).
* **Determinism.** The same input and ``random_state`` give the same output. Types are
  processed in ascending order from one random generator.

The descriptor metric matters: the selection works on the rows as given. For a
normalised dot-product (SOAP) kernel, pass row-normalised descriptors if selection
should ignore the descriptor's magnitude, as ``gap_fit`` does with its normalised SOAP.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .design import SparseSet

__all__ = [
    "SPARSE_METHODS",
    "SPLITS",
    "auto_sparse_count",
    "leverage_scores",
    "select_sparse_points",
    "sparse_points",
    "split_budget",
    "uniform_grid",
]

#: Methods known to :func:`sparse_points` (``"uniform"`` is not row-based).
SPARSE_METHODS = ("cur", "fps", "random", "uniform")
_ROW_METHODS = ("cur", "fps", "random")
_METHOD_KWARGS = {
    "cur": {"cur_mode", "cur_solver"},
    "fps": {"fps_start"},
    "random": set(),
    "uniform": set(),
}
_EPS = np.finfo(np.float64).eps
_BLOCK_ROWS = 1 << 16


# ----------------------------------------------------------------------------- checks

def _check_X(X, *, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_rows, n_features); got shape "
                         f"{X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows: there is nothing to select sparse points "
                         "from")
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        kind = "NaN" if np.isnan(X).any() else "infinite"
        raise ValueError(f"{name} contains {kind} values (rows {rows[:10].tolist()}"
                         f"{' ...' if rows.size > 10 else ''}); fix the descriptors before "
                         "choosing sparse points")
    return X


def _check_count(n, what: str, *, allow_zero: bool = False) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what} must be an integer; got {n!r}")
    n = int(n)
    lo = 0 if allow_zero else 1
    if n < lo:
        raise ValueError(f"{what} must be >= {lo}; got {n}")
    return n


def _check_method(method: str, kw: Mapping, *, row_only: bool) -> None:
    if method not in SPARSE_METHODS:
        raise ValueError(f"unknown sparse-point method {method!r}; choose one of "
                         f"{', '.join(repr(m) for m in SPARSE_METHODS)}")
    if row_only and method == "uniform":
        raise ValueError("method='uniform' makes new grid points, not a choice of rows: use "
                         "gapkit.gp.sparsify.uniform_grid(X, n_sparse), or "
                         "sparse_points(X, n_sparse, method='uniform'), which returns the "
                         "points with index -1")
    extra = set(kw) - _METHOD_KWARGS[method]
    if extra:
        allowed = sorted(_METHOD_KWARGS[method])
        raise TypeError(f"unexpected option(s) {sorted(extra)} for method={method!r}; it "
                        f"accepts {allowed if allowed else 'no extra options'}")


def _check_types(types, n: int) -> np.ndarray:
    types = np.asarray(types)
    if types.shape != (n,):
        raise ValueError(f"types must have shape ({n},), one kernel type per row of X; got "
                         f"{types.shape}")
    if not np.issubdtype(types.dtype, np.integer):
        raise ValueError(f"types must be integers (kernel type codes); got dtype "
                         f"{types.dtype}")
    return types.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- helpers

def _distinct_rows(X: np.ndarray, duplicate_tol: float) -> np.ndarray:
    """Indices (ascending) of the first occurrence of each distinct row of X."""
    if duplicate_tol < 0 or not np.isfinite(duplicate_tol):
        raise ValueError(f"duplicate_tol must be a finite number >= 0; got {duplicate_tol}")
    if X.shape[0] == 1:
        return np.zeros(1, dtype=np.int64)
    key = _grid_keys(X, float(np.abs(X).max()), duplicate_tol)
    void = key.view(np.dtype((np.void, key.dtype.itemsize * key.shape[1]))).ravel()
    _, first = np.unique(void, return_index=True)
    return np.sort(first).astype(np.int64)


def _grid_keys(X: np.ndarray, scale: float, tol: float) -> np.ndarray:
    """X rounded to the grid ``tol * scale`` (X itself when either is 0), C order, -0.0 as
    +0.0: rows equal here, as bytes, are duplicates."""
    if tol > 0 and scale > 0:
        key = np.multiply(X, 1.0 / (tol * scale), order="C")
        np.rint(key, out=key)
    else:
        key = np.array(X, order="C")
    key += 0.0  # -0.0 -> +0.0, so that they compare equal as bytes
    return key


def _gram_basis(lam: np.ndarray, V: np.ndarray, n: int, k: int | None) -> np.ndarray | None:
    """The leading ``min(k, rank)`` eigenvectors (columns) of a Gram matrix of ``n`` rows
    from its ``eigh`` (ascending), or None when it is zero; rank counts eigenvalues above
    ``max(n, D) * eps`` of the largest."""
    lam, V = lam[::-1], V[:, ::-1]
    if lam[0] <= 0.0:
        return None
    rank = int(np.count_nonzero(lam > max(n, V.shape[0]) * _EPS * lam[0]))
    return np.ascontiguousarray(V[:, :rank if k is None else min(k, rank)])


def _rng(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def leverage_scores(X, k: int | None = None, *, solver: str = "auto") -> np.ndarray:
    """Rank-k statistical leverage score of each row of X.

    With the thin SVD X = U S V^T and k_eff = min(k, numerical rank), the leverage of row
    i is ``sum_{j < k_eff} U[i, j]**2``; the scores lie in [0, 1] and sum to k_eff.

    Parameters
    ----------
    X : array_like of shape (n, D)
        Descriptor rows (float64).
    k : int, optional
        Number of leading singular directions; default: the numerical rank.
    solver : {"auto", "svd", "gram"}
        ``"svd"``: thin SVD of X (LAPACK reduces a tall X by QR first, so this is
        already O(n D^2)); singular values below ``max(n, D) * eps * s_max`` count as
        zero. ``"gram"``: eigen-decomposition of X^T X (D x D), then U_k = X V_k / s_k
        in row blocks, so memory stays O(D^2 + block) for very tall X; it cannot
        resolve directions with s < sqrt(max(n, D) * eps) * s_max, which count as zero.
        ``"auto"``: ``"gram"`` when n >= 10 D, else ``"svd"``.

    Returns
    -------
    ndarray of shape (n,)
        Leverage scores (dimensionless).
    """
    X = _check_X(X)
    n, D = X.shape
    if solver not in ("auto", "svd", "gram"):
        raise ValueError(f"unknown solver {solver!r}; choose 'auto', 'svd' or 'gram'")
    if k is not None:
        k = _check_count(k, "k")
    if solver == "auto":
        solver = "gram" if n >= 10 * D else "svd"
    rtol = max(n, D) * _EPS
    if solver == "svd":
        U, s, _ = np.linalg.svd(X, full_matrices=False)
        if s.size == 0 or s[0] == 0.0:
            return np.zeros(n)
        rank = int(np.count_nonzero(s > rtol * s[0]))
        k_eff = rank if k is None else min(k, rank)
        return np.einsum("ij,ij->i", U[:, :k_eff], U[:, :k_eff])
    V = _gram_basis(*np.linalg.eigh(X.T @ X), n, k)
    if V is None:
        return np.zeros(n)
    k_eff = V.shape[1]
    # normalise each column of X V by its actual norm: robust to errors in small lam
    norms2 = np.zeros(k_eff)
    for b in range(0, n, _BLOCK_ROWS):
        XV = X[b:b + _BLOCK_ROWS] @ V
        norms2 += np.einsum("ij,ij->j", XV, XV)
    W = V / np.sqrt(norms2)
    lev = np.empty(n)
    for b in range(0, n, _BLOCK_ROWS):
        XW = X[b:b + _BLOCK_ROWS] @ W
        lev[b:b + _BLOCK_ROWS] = np.einsum("ij,ij->i", XW, XW)
    return lev


def _select_cur(X, m, rng, *, cur_mode="deterministic", cur_solver="auto"):
    if cur_mode not in ("deterministic", "sample"):
        raise ValueError(f"unknown cur_mode {cur_mode!r}; choose 'deterministic' or 'sample'")
    return _cur_rows(leverage_scores(X, m, solver=cur_solver), m, rng, cur_mode)


def _cur_rows(lev: np.ndarray, m: int, rng, cur_mode: str) -> np.ndarray:
    """The ``m`` rows CUR takes given the rows' leverage scores ``lev``."""
    n = lev.size
    if cur_mode == "deterministic":
        # round away floating-point noise so that equal leverages tie exactly and the
        # tie is broken by row index, independently of BLAS summation order
        top = lev.max()
        key = np.round(lev / top, 10) if top > 0 else lev
        order = np.lexsort((np.arange(n), -key))
        return order[:m]
    # Weighted sampling without replacement (Efraimidis & Spirakis): the m smallest
    # E_i / w_i with E_i ~ Exp(1) are distributed as m successive draws with p ~ w.
    # Rows of zero leverage come last, in random order.
    e = rng.exponential(size=n)
    with np.errstate(divide="ignore"):
        key = np.where(lev > 0, e / np.where(lev > 0, lev, 1.0), np.inf)
    order = np.lexsort((e, key))
    return order[:m]


def _select_fps(X, m, rng, *, fps_start="farthest"):
    n = X.shape[0]
    if fps_start == "farthest":
        dev = X - X.mean(axis=0)
        first = int(np.argmax(np.einsum("ij,ij->i", dev, dev)))
    elif fps_start == "random":
        first = int(rng.integers(n))
    else:
        raise ValueError(f"unknown fps_start {fps_start!r}; choose 'farthest' or 'random'")
    sq = np.einsum("ij,ij->i", X, X)
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = first
    dmin = np.full(n, np.inf)
    j = first
    for t in range(1, m):  # inherently sequential greedy steps, each vectorised over rows
        d = sq + sq[j] - 2.0 * (X @ X[j])
        np.minimum(dmin, np.maximum(d, 0.0), out=dmin)
        dmin[j] = -np.inf  # chosen rows stay at -inf through np.minimum
        j = int(np.argmax(dmin))
        chosen[t] = j
    return chosen


def _select_random(X, m, rng):
    return rng.choice(X.shape[0], size=m, replace=False)


_SELECTORS: dict[str, Any] = {"cur": _select_cur, "fps": _select_fps, "random": _select_random}


#: how an integer ``n_sparse`` is shared over kernel types (:func:`split_budget`)
SPLITS = ("proportional", "equal")


def split_budget(types, n_sparse: int | Mapping[int, int],
                 split: str = "proportional") -> dict[int, int]:
    """Number of sparse points of each kernel type.

    Parameters
    ----------
    types : array_like of int, shape (n,)
        Kernel type of each row.
    n_sparse : int or dict {type: count}
        Total budget, split by ``split`` with at least one point per type;
        largest-remainder (Hamilton) rounding makes the counts sum exactly to
        ``n_sparse`` (remainder ties go to the smaller type code). Types bumped to one
        point take it from the type most above its exact quota. A dict is checked (every
        type present, counts >= 0, no unknown types) and returned.
    split : {"proportional", "equal"}
        ``"proportional"``: in proportion to the row count of each type.
        ``"equal"``: the same count for every type (as gap_fit's ``n_sparse`` with
        ``add_species=T``), a type with fewer rows than its share getting all its rows
        and the rest shared equally over the others; with more points than rows in all,
        as ``"proportional"``. On rMD17 ethanol and aspirin (300 frames, M 1,000 and
        1,500) ``"equal"`` gave 12% and 9% lower energy and 8% and 2% lower force errors
        than ``"proportional"``, which leaves C and O a fraction of hydrogen's points.

    Returns
    -------
    dict {int: int}
        Count per type, types in ascending order. Not yet clamped to the number of
        distinct rows (see :func:`select_sparse_points`).

    Raises
    ------
    ValueError
        ``n_sparse`` < 1, fewer points than types, or a dict that misses a type present
        in ``types`` or names one that is absent.
    """
    types = np.asarray(types)
    if types.size == 0:
        raise ValueError("types is empty: there are no rows to share the budget over")
    unique, counts = np.unique(types, return_counts=True)
    utypes = [int(t) for t in unique]
    if isinstance(n_sparse, Mapping):
        given = {int(t): _check_count(c, f"n_sparse[{t}]", allow_zero=True)
                 for t, c in n_sparse.items()}
        missing = sorted(set(utypes) - set(given))
        unknown = sorted(set(given) - set(utypes))
        if missing:
            raise ValueError(f"n_sparse has no count for type(s) {missing} present in the "
                             "data; give 0 explicitly to leave a type without sparse points")
        if unknown:
            raise ValueError(f"n_sparse names type(s) {unknown} that have no rows in the data "
                             f"(types present: {utypes})")
        return {t: given[t] for t in utypes}
    n_sparse = _check_count(n_sparse, "n_sparse")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    T = len(utypes)
    if n_sparse < T:
        raise ValueError(f"n_sparse={n_sparse} is less than the number of kernel types ({T}: "
                         f"{utypes}), but every type needs at least one sparse point; raise "
                         "n_sparse or pass a dict {type: count}")
    quota = n_sparse * counts / counts.sum()
    if split == "equal" and n_sparse <= counts.sum():
        quota = _equal_quota(n_sparse, counts.astype(float))
    alloc = np.floor(quota).astype(np.int64)
    rest = n_sparse - int(alloc.sum())
    frac = quota - alloc
    alloc[np.lexsort((np.arange(T), -frac))[:rest]] += 1
    for z in np.flatnonzero(alloc == 0):  # at most T iterations
        donors = np.flatnonzero(alloc > 1)
        d = donors[np.argmax((alloc - quota)[donors])]
        alloc[d] -= 1
        alloc[z] = 1
    return dict(zip(utypes, (int(a) for a in alloc)))


def _equal_quota(n: int, counts: np.ndarray) -> np.ndarray:
    """Equal shares of ``n`` capped at ``counts`` (water filling; ``n <= counts.sum()``)."""
    quota = np.zeros_like(counts)
    free = np.ones(counts.size, dtype=bool)
    left = float(n)
    while free.any():
        share = left / free.sum()
        full = free & (counts <= share)
        if not full.any():
            quota[free] = share
            break
        quota[full] = counts[full]
        left -= float(counts[full].sum())
        free &= ~full
    return quota


def _clamp(m: int, available: int, label: str) -> int:
    if m > available:
        warnings.warn(f"{label}: {m} sparse points requested but only {available} distinct "
                      f"rows are available; selecting all {available}", UserWarning,
                      stacklevel=3)
        return available
    return m


def _groups(n, types, n_sparse):
    """(label, row indices, count) per type, or one group without types."""
    if types is None:
        if isinstance(n_sparse, Mapping):
            raise ValueError("n_sparse is a dict {type: count} but types is None; pass the "
                             "kernel type of each row")
        return [("all rows", np.arange(n), _check_count(n_sparse, "n_sparse"))]
    types = _check_types(types, n)
    budget = split_budget(types, n_sparse)
    return [(f"type {t}", np.flatnonzero(types == t), c) for t, c in budget.items()]


# ----------------------------------------------------------------------------- public

def select_sparse_points(X, n_sparse: int | Mapping[int, int], *, method: str = "cur",
                         types=None, random_state=0, duplicate_tol: float = 1e-8,
                         **kw) -> np.ndarray:
    """Choose sparse-point rows of a descriptor matrix.

    Parameters
    ----------
    X : array_like of shape (n, D)
        Descriptor rows (float64; units of the descriptor). NaN or inf is an error.
    n_sparse : int or dict {type: count}
        Number of rows to choose (>= 1), in total or per type (see :func:`split_budget`).
        More than the number of distinct rows (of a type) is clamped to that number with
        a :class:`UserWarning`.
    method : {"cur", "fps", "random"}
        ``"cur"``: leverage-score CUR (``gap_fit``'s ``cur_points``). The leverage of a
        row is its squared norm in U_k, the first k = min(n_sparse, rank) left singular
        vectors of X (:func:`leverage_scores`). Option ``cur_mode``:
        ``"deterministic"`` (default) takes the n_sparse rows of largest leverage, exact
        ties by lowest index; it is the default because the result depends on the data
        only, not on a seed, so fits are reproducible and comparable. ``"sample"`` draws
        rows without replacement with probability proportional to leverage (seeded by
        ``random_state``; closer to ``gap_fit``, which samples, and less prone to
        picking many similar high-leverage rows). Option ``cur_solver``
        ("auto"/"svd"/"gram", see :func:`leverage_scores`).
        ``"fps"``: farthest-point sampling in Euclidean descriptor space, O(n n_sparse),
        one matrix-vector product per step. Option ``fps_start``: ``"farthest"``
        (default; the row farthest from the mean of the rows, deterministic) or
        ``"random"`` (a seeded random row).
        ``"random"``: uniform without replacement over the distinct rows, seeded.
        ``"uniform"`` is not row-based: use :func:`uniform_grid` or
        :func:`sparse_points`.
    types : array_like of int, shape (n,), optional
        Kernel type of each row; points are then chosen per type.
    random_state : int, numpy.random.Generator or None
        Seed for the random choices ("sample" CUR, random FPS start, "random").
    duplicate_tol : float
        Rows equal after rounding to a grid of ``duplicate_tol * max|X|`` are duplicates;
        only the first occurrence can be chosen. 0 means exact equality.
    **kw
        Method options listed above; anything else is a TypeError.

    Returns
    -------
    ndarray of int64, shape (M,)
        Unique row indices into X, sorted ascending; M = n_sparse unless clamped.

    Raises
    ------
    ValueError
        Bad X (not 2-D, empty, NaN/inf), n_sparse < 1, unknown method or option value,
        method="uniform", a bad per-type budget.
    """
    _check_method(method, kw, row_only=True)
    X = _check_X(X)
    rng = _rng(random_state)
    out = []
    for label, rows, m in _groups(X.shape[0], types, n_sparse):
        if m == 0:
            continue
        distinct = rows[_distinct_rows(X[rows], duplicate_tol)]
        m = _clamp(m, distinct.size, label)
        if m == distinct.size:
            out.append(distinct)
            continue
        local = _SELECTORS[method](X[distinct], m, rng, **kw)
        out.append(distinct[np.asarray(local, dtype=np.int64)])
    if not out:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(out)).astype(np.int64)


def uniform_grid(X, n_sparse: int) -> np.ndarray:
    """Evenly spaced 1-D sparse points spanning the data (``sparse_method=uniform``).

    Parameters
    ----------
    X : array_like of shape (n, 1) or (n,)
        1-D descriptor values, e.g. two-body distances (Å).
    n_sparse : int
        Number of points (>= 1).

    Returns
    -------
    ndarray of shape (n_sparse, 1)
        ``linspace(min(X), max(X), n_sparse)``, both ends included; a single point is
        put at the midpoint. If all values are equal, one point is returned with a
        :class:`UserWarning` (repeated points would make K_MM singular).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    X = _check_X(X)
    if X.shape[1] != 1:
        raise ValueError(f"uniform_grid needs 1-D descriptors (shape (n, 1)); got "
                         f"{X.shape[1]} features. Use method 'cur', 'fps' or 'random'")
    return _uniform(X, _check_count(n_sparse, "n_sparse"), "all rows", stacklevel=2)


def _uniform(X, m, label, stacklevel):
    lo, hi = float(X.min()), float(X.max())
    if lo == hi:
        if m > 1:
            warnings.warn(f"{label}: {m} uniform sparse points requested but all values are "
                          f"{lo}; returning 1 point", UserWarning, stacklevel=stacklevel + 1)
        return np.array([[lo]])
    if m == 1:
        return np.array([[0.5 * (lo + hi)]])
    return np.linspace(lo, hi, m)[:, None]


def sparse_points(X, n_sparse: int | Mapping[int, int], *, method: str = "cur", types=None,
                  random_state=0, duplicate_tol: float = 1e-8,
                  **kw) -> SparseSet:
    """Choose the sparse points of a descriptor: the main entry point.

    Parameters
    ----------
    X, n_sparse, types, random_state, duplicate_tol, **kw
        As in :func:`select_sparse_points`.
    method : {"cur", "fps", "random", "uniform"}
        Row-based methods as in :func:`select_sparse_points`; ``"uniform"`` needs
        X of shape (n, 1) and makes a :func:`uniform_grid` per type (between that
        type's min and max).

    Returns
    -------
    SparseSet
        ``points`` (M, D): the sparse points (descriptor units), copies of rows of X for
        row-based methods; ``types`` (M,): kernel type of each point (all 0 when
        ``types`` is None); ``indices`` (M,): row of X each point is (ascending), or -1
        for the synthetic points of ``"uniform"`` (ordered by type, then value).
        It unpacks as ``points, types, indices = sparse_points(...)`` (numpy arrays).
    """
    _check_method(method, kw, row_only=False)
    X = _check_X(X)
    t_all = None if types is None else _check_types(types, X.shape[0])
    if method != "uniform":
        idx = select_sparse_points(X, n_sparse, method=method, types=t_all,
                                   random_state=random_state, duplicate_tol=duplicate_tol,
                                   **kw)
        t_out = np.zeros(idx.size, np.int64) if t_all is None else t_all[idx]
        return _sparse_set(X[idx], t_out, idx)
    if X.shape[1] != 1:
        raise ValueError(f"method='uniform' needs 1-D descriptors (shape (n, 1)); got "
                         f"{X.shape[1]} features. Use method 'cur', 'fps' or 'random'")
    pts, tps = [], []
    for label, rows, m in _groups(X.shape[0], t_all, n_sparse):
        if m == 0:
            continue
        g = _uniform(X[rows], m, label, stacklevel=2)
        pts.append(g)
        tps.append(np.full(g.shape[0], 0 if t_all is None else t_all[rows[0]], np.int64))
    if not pts:
        return _sparse_set(np.zeros((0, 1)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    points = np.concatenate(pts)
    return _sparse_set(points, np.concatenate(tps), np.full(points.shape[0], -1, np.int64))


def _sparse_set(points: np.ndarray, types: np.ndarray, indices: np.ndarray) -> SparseSet:
    """A :class:`SparseSet` of float64 points and int64 types (tensors) from arrays."""
    import torch

    return SparseSet(torch.as_tensor(np.array(points, dtype=np.float64)),
                     torch.as_tensor(np.asarray(types, dtype=np.int64)), indices)


#: ``n_sparse="auto"``: one sparse point per this many training environments, within
#: :data:`AUTO_SPARSE_RANGE` (the issue-24 prototype's rule of thumb)
AUTO_ENVIRONMENTS_PER_POINT = 13
AUTO_SPARSE_RANGE = (500, 2000)


def auto_sparse_count(n_environments: int) -> int:
    """``n_sparse="auto"``: ``n_environments / 13`` clipped to [500, 2000] (split over kernel
    types as any total is: :func:`term_sparse_set`)."""
    lo, hi = AUTO_SPARSE_RANGE
    return int(min(max(round(n_environments / AUTO_ENVIRONMENTS_PER_POINT), lo), hi))
