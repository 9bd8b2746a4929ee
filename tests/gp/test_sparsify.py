"""Tests of gapkit.gp.sparsify (sparse-point selection)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from gapkit.gp.sparsify import (
    SPARSE_METHODS,
    leverage_scores,
    select_sparse_points,
    sparse_points,
    split_budget,
    uniform_grid,
)

ROW_METHODS = ("cur", "fps", "random")


def _cloud(n=200, d=6, seed=1):
    return np.random.default_rng(seed).normal(size=(n, d))


def _direct_leverage(X, k):
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    r = int(np.sum(s > s[0] * max(X.shape) * np.finfo(float).eps))
    k = min(k, r)
    return (U[:, :k] ** 2).sum(axis=1)


def _check_indices(idx, n, m):
    assert idx.dtype == np.int64
    assert idx.shape == (m,)
    assert np.all(np.diff(idx) > 0)  # sorted and unique
    assert idx.min() >= 0 and idx.max() < n


# --------------------------------------------------------------------------- basics

@pytest.mark.parametrize("method", ROW_METHODS)
def test_row_methods_return_sorted_unique_valid_indices(method):
    X = _cloud()
    idx = select_sparse_points(X, 17, method=method, random_state=3)
    _check_indices(idx, X.shape[0], 17)


@pytest.mark.parametrize("method", ROW_METHODS)
@pytest.mark.parametrize("opts", [{}, {"cur_mode": "sample"}, {"fps_start": "random"}])
def test_deterministic_given_seed(method, opts):
    kw = {k: v for k, v in opts.items() if k.startswith(method)}
    X = _cloud()
    a = select_sparse_points(X, 20, method=method, random_state=7, **kw)
    b = select_sparse_points(X, 20, method=method, random_state=7, **kw)
    np.testing.assert_array_equal(a, b)
    g1 = select_sparse_points(X, 20, method=method, random_state=np.random.default_rng(7),
                              **kw)
    np.testing.assert_array_equal(a, g1)


def test_random_depends_on_seed():
    X = _cloud()
    picks = {tuple(select_sparse_points(X, 10, method="random", random_state=s))
             for s in range(5)}
    assert len(picks) == 5


def test_cur_sample_depends_on_seed_deterministic_does_not():
    X = _cloud(n=300, d=20)
    s = {tuple(select_sparse_points(X, 10, cur_mode="sample", random_state=r))
         for r in range(4)}
    assert len(s) > 1
    d = {tuple(select_sparse_points(X, 10, random_state=r)) for r in range(4)}
    assert len(d) == 1


def test_sparse_points_returns_rows_and_types():
    X = _cloud()
    types = np.repeat([14, 8], [150, 50])
    pts, tps, idx = sparse_points(X, 12, method="fps", types=types)
    np.testing.assert_array_equal(pts, X[idx])
    np.testing.assert_array_equal(tps, types[idx])
    pts, tps, idx = sparse_points(X, 5)
    np.testing.assert_array_equal(tps, np.zeros(5, np.int64))
    np.testing.assert_array_equal(pts, X[idx])


# --------------------------------------------------------------------------- CUR

@pytest.mark.parametrize("shape,k", [((30, 5), 3), ((30, 5), 8), ((12, 20), 4)])
def test_cur_deterministic_picks_highest_leverage(shape, k):
    X = np.random.default_rng(0).standard_t(df=2, size=shape)  # heavy tails: spread out
    lev = _direct_leverage(X, k)
    np.testing.assert_allclose(leverage_scores(X, k, solver="svd"), lev, atol=1e-12)
    np.testing.assert_allclose(leverage_scores(X, k, solver="gram"), lev, atol=1e-8)
    assert leverage_scores(X, k).sum() == pytest.approx(min(k, min(shape)))
    idx = select_sparse_points(X, k, method="cur")
    expected = np.sort(np.argsort(-lev, kind="stable")[:k])
    np.testing.assert_array_equal(idx, expected)


def test_cur_gram_and_svd_agree_on_tall_matrix():
    X = _cloud(n=2000, d=8)
    np.testing.assert_allclose(leverage_scores(X, 5, solver="gram"),
                               leverage_scores(X, 5, solver="svd"), atol=1e-10)
    np.testing.assert_array_equal(
        select_sparse_points(X, 5, cur_solver="gram"),
        select_sparse_points(X, 5, cur_solver="svd"))


def test_cur_picks_outliers_off_a_subspace():
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(3, 12))
    X = rng.normal(size=(300, 3)) @ basis  # rank-3 bulk
    outliers = np.array([17, 101, 250, 299])
    X[outliers] += 3.0 * rng.normal(size=(4, 12))  # each sticks out of the subspace
    idx = select_sparse_points(X, 7, method="cur")
    assert set(outliers) <= set(idx)


def test_cur_ties_broken_by_index():
    # symmetric cross: every row has leverage 1/2 (up to round-off) for k = 2
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]) @ np.array(
        [[0.6, 0.8], [-0.8, 0.6]])
    np.testing.assert_allclose(_direct_leverage(X, 2), 0.5)
    np.testing.assert_array_equal(select_sparse_points(X, 2, method="cur"), [0, 1])
    np.testing.assert_array_equal(select_sparse_points(X[::-1], 3, method="cur"), [0, 1, 2])


def test_cur_sample_never_picks_zero_leverage_while_others_remain():
    X = np.zeros((50, 3))
    X[:5] = np.random.default_rng(0).normal(size=(5, 3))
    # rows 5.. are all zero -> one distinct zero row (index 5) with zero leverage
    idx = select_sparse_points(X, 5, cur_mode="sample", random_state=0)
    np.testing.assert_array_equal(idx, np.arange(5))
    idx = select_sparse_points(X, 6, cur_mode="sample", random_state=0)
    np.testing.assert_array_equal(idx, np.arange(6))


# --------------------------------------------------------------------------- FPS

def test_fps_spreads_points_more_than_random():
    X = np.random.default_rng(4).uniform(size=(500, 3))
    m = 25
    fps = select_sparse_points(X, m, method="fps")
    d_fps = pdist(X[fps]).min()
    for seed in range(5):
        rnd = select_sparse_points(X, m, method="random", random_state=seed)
        assert d_fps >= pdist(X[rnd]).min()


def test_fps_matches_bruteforce_greedy():
    X = _cloud(n=60, d=4, seed=9)
    idx = select_sparse_points(X, 8, method="fps")
    # reference greedy with direct distances, same start
    first = int(np.argmax(((X - X.mean(0)) ** 2).sum(1)))
    chosen = [first]
    for _ in range(7):
        d = np.min(((X[:, None, :] - X[chosen][None]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    np.testing.assert_array_equal(idx, np.sort(chosen))


# --------------------------------------------------------------------------- types

class _NowClient:
    """A client that runs each task when submitted (the result stands for its future)."""

    @staticmethod
    def submit(fn, *args, **_):
        return fn(*args)

    @staticmethod
    def gather(x):
        return x


@pytest.mark.parametrize("start", ["farthest", "random"])
@pytest.mark.parametrize("cloud", ["continuous", "lattice"])
def test_fps_from_partitions_is_fps_of_all_rows(start, cloud):
    """The FPS the Dask workers run (each partition sends its farthest rows and a bound;
    the caller chooses among them while one beats every bound) chooses the rows, in the
    order, that one process chooses: on a continuous cloud and on an integer lattice,
    whose distances tie (ties go to the row first in order; a tie at a bound asks the
    partitions for more rows), over uneven partitions, one of them empty."""
    from types import SimpleNamespace

    from gapkit.gp.sparse_sets import _fps
    from gapkit.gp.sparsify import _select_fps

    rng = np.random.default_rng(4)
    if cloud == "lattice":
        X = np.stack(np.meshgrid(*[np.arange(9.0)] * 3), -1).reshape(-1, 3)
        X = X[rng.permutation(len(X))[:500]]
    else:
        X = _cloud(n=500, d=6, seed=11)
    cuts = [0, 170, 170, 420, 500]
    parts = [SimpleNamespace(values=X[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    local = [np.arange(b - a) for a, b in zip(cuts[:-1], cuts[1:])]
    for m in (1, 2, 40, 300, 499):
        want = _select_fps(X, m, np.random.default_rng(7), fps_start=start)
        got = _fps(_NowClient(), parts, local, m, np.random.default_rng(7), start)
        np.testing.assert_array_equal(got, want)

@pytest.mark.parametrize("n_sparse", [3, 10, 37, 100])
def test_split_budget_sums_exactly_with_at_least_one(n_sparse):
    types = np.repeat([1, 6, 8], [1000, 30, 2])
    b = split_budget(types, n_sparse)
    assert list(b) == [1, 6, 8]
    assert sum(b.values()) == n_sparse
    assert min(b.values()) >= 1


def test_split_budget_proportional():
    types = np.repeat([3, 5], [300, 100])
    assert split_budget(types, 8) == {3: 6, 5: 2}
    assert split_budget(types, 10) == {3: 8, 5: 2}  # 7.5/2.5: tie -> smaller type code


@pytest.mark.parametrize("n_sparse", [3, 10, 37, 100, 1032])
def test_equal_split_sums_exactly_and_fills_the_small_types(n_sparse):
    types = np.repeat([1, 6, 8], [1000, 30, 2])
    b = split_budget(types, n_sparse, "equal")
    assert sum(b.values()) == n_sparse and min(b.values()) >= 1
    assert all(b[t] <= c for t, c in ((1, 1000), (6, 30), (8, 2)))
    if n_sparse >= 6:  # O gets both its rows, C all of its or as many as H, H the rest
        assert b[8] == 2 and (b[6] == 30 or abs(b[6] - b[1]) <= 1)


def test_equal_split_is_gap_fits_per_species_count():
    types = np.repeat([1, 6, 8], [600, 200, 100])  # ethanol: 6 H, 2 C, 1 O per molecule
    assert split_budget(types, 300, "equal") == {1: 100, 6: 100, 8: 100}
    assert split_budget(types, 300) == {1: 200, 6: 67, 8: 33}
    assert split_budget(types, 400, "equal") == {1: 150, 6: 150, 8: 100}  # O: all its rows
    # more points than rows: as proportional (then clamped, with a warning, at selection)
    assert split_budget(types, 1800, "equal") == split_budget(types, 1800)
    with pytest.raises(ValueError, match="split must be one of"):
        split_budget(types, 300, "per_species")


@pytest.mark.parametrize("method", ROW_METHODS)
def test_per_type_selection(method):
    X = _cloud(n=300)
    types = np.repeat([14, 8, 1], [200, 90, 10])
    idx = select_sparse_points(X, 20, method=method, types=types)
    _check_indices(idx, 300, 20)
    counts = {t: int(np.sum(types[idx] == t)) for t in (1, 8, 14)}
    assert counts == split_budget(types, 20)
    assert all(c >= 1 for c in counts.values())


def test_dict_budget_and_zero_count():
    X = _cloud(n=100)
    types = np.repeat([1, 2], [50, 50])
    idx = select_sparse_points(X, {1: 4, 2: 0}, method="fps", types=types)
    assert idx.size == 4 and np.all(types[idx] == 1)
    with pytest.raises(ValueError, match="no count for type"):
        select_sparse_points(X, {1: 4}, types=types)
    with pytest.raises(ValueError, match="no rows"):
        select_sparse_points(X, {1: 4, 2: 1, 3: 1}, types=types)
    with pytest.raises(ValueError, match="types is None"):
        select_sparse_points(X, {1: 4})


def test_fewer_points_than_types_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        split_budget(np.array([1, 2, 3]), 2)


# --------------------------------------------------------------------------- duplicates

@pytest.mark.parametrize("method", ROW_METHODS)
def test_duplicates_never_selected_twice(method):
    base = _cloud(n=10, d=5)
    X = np.vstack([base] * 20)  # the same 10 environments in 20 frames
    X = X + 1e-15 * np.random.default_rng(0).normal(size=X.shape)  # round-off noise
    idx = select_sparse_points(X, 10, method=method, random_state=1)
    _check_indices(idx, 200, 10)
    np.testing.assert_array_equal(np.sort(idx % 10), np.arange(10))
    assert np.all(idx < 10)  # first occurrence kept


def test_exact_duplicate_mode():
    X = np.array([[1.0, 0.0], [1.0 + 1e-12, 0.0], [0.0, 1.0], [-0.0, 1.0]])
    assert select_sparse_points(X, 3, method="random", duplicate_tol=0.0).size == 3
    with pytest.warns(UserWarning):
        assert select_sparse_points(X, 3, method="random").size == 2


def test_clamp_warns_with_type_and_counts():
    X = _cloud(n=20)
    X[10:] = X[10]  # type 2 has 1 distinct row
    types = np.repeat([1, 2], [10, 10])
    with pytest.warns(UserWarning, match=r"type 2: 3 sparse points requested but only 1"):
        idx = select_sparse_points(X, {1: 3, 2: 3}, types=types)
    assert idx.size == 4 and np.sum(types[idx] == 2) == 1
    with pytest.warns(UserWarning, match=r"all rows: 50 sparse points requested but only 11"):
        idx = select_sparse_points(X, 50, method="fps")
    assert idx.size == 11


def test_no_warning_when_budget_fits():
    X = _cloud(n=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_sparse_points(X, 20).size == 20


# --------------------------------------------------------------------------- uniform

def test_uniform_grid_spans_range():
    r = np.random.default_rng(0).uniform(1.5, 5.0, size=(400, 1))
    g = uniform_grid(r, 11)
    assert g.shape == (11, 1)
    assert g[0, 0] == r.min() and g[-1, 0] == r.max()
    np.testing.assert_allclose(np.diff(g[:, 0]), (r.max() - r.min()) / 10)
    np.testing.assert_allclose(uniform_grid(r[:, 0], 1), [[0.5 * (r.min() + r.max())]])
    with pytest.warns(UserWarning, match="all values"):
        assert uniform_grid(np.full((5, 1), 2.0), 4).shape == (1, 1)


def test_uniform_via_sparse_points_per_type():
    r = np.concatenate([np.linspace(1, 3, 50), np.linspace(2, 6, 150)])[:, None]
    types = np.repeat([0, 1], [50, 150])
    pts, tps, idx = sparse_points(r, 8, method="uniform", types=types)
    assert pts.shape == (8, 1) and np.all(idx == -1)
    np.testing.assert_array_equal(tps, [0, 0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(pts[:2, 0], [1, 3])
    np.testing.assert_allclose(pts[2:, 0], np.linspace(2, 6, 6))


def test_uniform_is_not_row_based():
    with pytest.raises(ValueError, match="uniform_grid"):
        select_sparse_points(np.zeros((5, 1)), 2, method="uniform")
    with pytest.raises(ValueError, match="1-D"):
        uniform_grid(np.zeros((5, 2)), 2)
    with pytest.raises(ValueError, match="1-D"):
        sparse_points(np.zeros((5, 2)), 2, method="uniform")


# --------------------------------------------------------------------------- errors

def test_errors():
    X = _cloud(n=10)
    with pytest.raises(ValueError, match=">= 1"):
        select_sparse_points(X, 0)
    with pytest.raises(ValueError, match=">= 1"):
        uniform_grid(X[:, :1], 0)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    for method in SPARSE_METHODS[:3]:
        with pytest.raises(ValueError, match="NaN"):
            select_sparse_points(Xn, 2, method=method)
    with pytest.raises(ValueError, match="NaN"):
        sparse_points(Xn[:, 2:3], 2, method="uniform")
    with pytest.raises(ValueError, match="'cur', 'fps', 'random', 'uniform'"):
        select_sparse_points(X, 2, method="kmeans")
    with pytest.raises(TypeError, match="fps_start"):
        select_sparse_points(X, 2, method="cur", fps_start="random")
    with pytest.raises(ValueError, match="cur_mode"):
        select_sparse_points(X, 2, cur_mode="best")
    with pytest.raises(ValueError, match="shape"):
        select_sparse_points(X, 2, types=np.zeros(3, int))
    with pytest.raises(ValueError, match="2-D"):
        select_sparse_points(X[0], 2)


# --------------------------------------------------------------------------- realistic

def test_cur_on_soap_of_bundled_si():
    from gapkit import SOAP
    from gapkit.data import load_bundled

    frames = load_bundled("Si_train.xyz")[:5]
    res = SOAP(n_max=4, l_max=3).compute(frames)
    X = res.values
    m = 20
    idx = select_sparse_points(X, m, method="cur", types=res.centre_types)
    _check_indices(idx, X.shape[0], m)
    assert np.unique(np.round(X[idx], 10), axis=0).shape[0] == m  # distinct environments
    pts, tps, idx2 = sparse_points(X, m, method="fps", types=res.centre_types)
    assert np.unique(pts, axis=0).shape[0] == m and np.all(tps == 14)


@pytest.mark.parametrize("tol", [1e-8, 0.0])
def test_non_contiguous_input(tol):
    X = _cloud(n=80, d=8)
    ref = select_sparse_points(X[:, ::2].copy(), 9, duplicate_tol=tol)
    np.testing.assert_array_equal(select_sparse_points(X[:, ::2], 9, duplicate_tol=tol), ref)
    np.testing.assert_array_equal(
        select_sparse_points(np.asfortranarray(X[:, ::2]), 9, duplicate_tol=tol), ref)
