"""The streaming QR solve of the sparse GP equals the dense textbook formulas.

On a system small enough to write everything down densely (4 Si cells of 8 atoms,
124 observations, 8 sparse points) we build K_NM from the descriptor-level functionals
(:func:`gapkit.gp.design.functional_rows`, gathered here, not by gapkit) and the labels
ourselves, and check against the fitted :class:`gapkit.GAP`:

* weights: alpha = (K_MM + K_MN Sigma^-1 K_NM)^-1 K_MN Sigma^-1 y (normal equations,
  solved with iterative refinement so that the reference is accurate to ~1e-13);
* the DTC log marginal likelihood from the N x N matrix Q_NN + Sigma;
* DTC variances of total and local energies, projected variances of forces and virials,
  and the exact (DTC) force variance with k** by finite differences of the kernel;
* independence of the row-block size, and that adding observations never increases a
  posterior variance.

The setting (zeta = 4, 8 sparse points, no jitter) keeps cond(K_MM) ~ 1e4 and the normal
matrix ~ 1e7, so the dense reference is accurate well beyond the 1e-8 tolerance.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.tersoff import Tersoff, TersoffParameters
from conftest import make_strained_cells

import gapkit.gp.sparse
from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.gp.design import functional_rows
from gapkit.gp.observations import VOIGT
from gapkit.gp.sparse import IncrementalQR, dtc_log_marginal_likelihood, stack_r

RTOL = 1e-8  # sparse solve vs dense reference
BLOCK_RTOL = 1e-10  # different row-block sizes
FD_PRIOR_STEP = 1e-3  # Å, Richardson-extrapolated second differences of the kernel
FD_RTOL = 1e-6  # finite-difference k**, relative to its largest value
NOISE = NoiseModel(energy=0.01, forces=0.1, virial=0.05)  # eV/atom, eV/Å, eV/atom


# --------------------------------------------------------------------------- data

def _tersoff_si() -> Tersoff:
    """Tersoff's Si(B) potential (LAMMPS ``Si.tersoff`` values)."""
    p = TersoffParameters(m=3.0, gamma=1.0, lambda3=1.3258, c=4.8381, d=2.0417, h=0.0,
                          n=22.956, beta=0.33675, lambda2=1.3258, B=95.373, R=3.0, D=0.2,
                          lambda1=3.2394, A=3224.6)
    return Tersoff({("Si", "Si", "Si"): p})


def _si_frames(n: int, seed: int, *, rattle: float = 0.15, strain: float = 0.03):
    return make_strained_cells(bulk("Si", "diamond", a=5.43, cubic=True), n, seed=seed,
                               strain=strain, rattle=rattle, calc=_tersoff_si)


def _term(n_sparse: int = 8) -> Term:
    return Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=4, l_max=3),
                SOAPKernel(zeta=4, delta=1.0), n_sparse=n_sparse)


def _fit(frames, **kw) -> GAP:
    kw.setdefault("noise", NOISE)
    kw.setdefault("jitter", 0.0)
    return GAP([_term()], progress=False, **kw).fit(frames)


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def _single_torch_thread():
    """Tiny matrices: torch's intra-op threads only add latency (and, on a busy 2-core
    machine, 10x slowdowns from OpenMP spin-waiting). Restored after the module."""
    with _one_thread():
        yield


@pytest.fixture(scope="module")
def train():
    return _si_frames(4, seed=0)


@pytest.fixture(scope="module")
def probe_frames():
    frames = _si_frames(2, seed=9, rattle=0.1, strain=0.02)
    far = bulk("Si", "diamond", a=5.43 * 1.1, cubic=True)
    far.rattle(0.1, seed=4)
    return frames + [far]


@pytest.fixture(scope="module")
def model(train):
    return _fit(train)


# ----------------------------------------------------------------- dense reference

def _refined_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a x = b in float64 with residuals in extended precision (iterative
    refinement): accurate to ~eps while cond(a) << 1/eps."""
    a_ext = a.astype(np.longdouble)
    b_ext = b.astype(np.longdouble)
    x = np.linalg.solve(a, b)
    for _ in range(4):
        r = (b_ext - a_ext @ x.astype(np.longdouble)).astype(np.float64)
        x = x + np.linalg.solve(a, r)
    return x


def _rows(model: GAP, frames, *, gradients=True):
    """Kernel functionals of ``frames`` against the model's sparse points (one term)."""
    term = model.terms_[0]
    res = term.descriptor.compute(frames, gradients=["positions", "strain"] if gradients
                                  else False)
    with torch.no_grad():
        rows = functional_rows(term.kernel, res, model.sparse_sets_[0], energy=True,
                               forces=gradients, virial=gradients, local=True)
    return res, {k: v.numpy() for k, v in rows.items()}


class Dense:
    """The dense DTC system of ``model`` on ``frames``: K_NM, y, Sigma, K_MM, A."""

    def __init__(self, model: GAP, frames):
        _, rows = _rows(model, frames)
        k, y, sigma = [], [], []
        atom = 0
        for f, atoms in enumerate(frames):
            n = len(atoms)
            e0 = sum(model.e0_[int(z)] for z in atoms.numbers)
            k.append(rows["energy"][f][None])
            y.append([atoms.info["energy"] - e0])
            sigma.append([NOISE.energy * math.sqrt(n)])
            k.append(rows["forces"][atom:atom + n].reshape(3 * n, -1))
            y.append(atoms.arrays["forces"].reshape(-1))
            sigma.append(np.full(3 * n, NOISE.forces))
            k.append(rows["virial"][f])
            y.append([atoms.info["virial"][a, b] for a, b in VOIGT])
            sigma.append(np.full(6, NOISE.virial * math.sqrt(n)))
            atom += n
        self.k = np.concatenate(k)
        self.y = np.concatenate([np.asarray(v, dtype=float) for v in y])
        self.s2 = np.concatenate(sigma) ** 2
        z = model.sparse_sets_[0].points
        with torch.no_grad():
            kmm = model.terms_[0].kernel.value(z, z).numpy()
        self.kmm = kmm + model.jitter_absolute_ * np.eye(kmm.shape[0])
        k_ext = self.k.astype(np.longdouble)
        self.a = (self.kmm + k_ext.T @ (k_ext / self.s2[:, None])).astype(np.float64)
        self.rhs = (k_ext.T @ (self.y / self.s2)).astype(np.float64)

    def alpha(self) -> np.ndarray:
        return _refined_solve(self.a, self.rhs)

    def log_marginal_likelihood(self) -> float:
        """log N(y | 0, Q_NN + Sigma) with Q_NN = K_NM K_MM^-1 K_MN, an N x N matrix."""
        q = self.k @ np.linalg.solve(self.kmm, self.k.T)
        c = q + np.diag(self.s2)
        chol = np.linalg.cholesky(c)
        w = np.linalg.solve(chol, self.y)
        n = self.y.shape[0]
        return float(-0.5 * w @ w - np.log(np.diag(chol)).sum() - 0.5 * n * math.log(2 * math.pi))

    def projected(self, kstar: np.ndarray) -> np.ndarray:
        """k*^T A^-1 k* for each row k*."""
        return np.einsum("nm,mn->n", kstar, _refined_solve(self.a, kstar.T))

    def nystrom(self, kstar: np.ndarray) -> np.ndarray:
        """k*^T K_MM^-1 k* for each row k*."""
        return np.einsum("nm,mn->n", kstar, _refined_solve(self.kmm, kstar.T))

    def dtc(self, kstar: np.ndarray, prior: np.ndarray) -> np.ndarray:
        return prior - self.nystrom(kstar) + self.projected(kstar)


def _energy_priors(model: GAP, frames):
    """k** of total energies (sum over all centre pairs) and of local energies."""
    term = model.terms_[0]
    res = term.descriptor.compute(frames)
    q = torch.as_tensor(res.values)
    with torch.no_grad():
        k = term.kernel.value(q, q).numpy()
    s = res.centre_structure
    total = np.array([k[np.ix_(s == f, s == f)].sum() for f in range(len(frames))])
    return total, np.diag(k).copy()


def _force_priors(model: GAP, atoms: Atoms, h: float = FD_PRIOR_STEP) -> np.ndarray:
    """k** of each force component, Cov(F_ja, F_ja) = d^2 k(E_A, E_B) / dr^A_ja dr^B_ja
    at A = B = atoms (the two minus signs of F = -dE/dr cancel), shape (n_atoms, 3).

    Central second differences of the energy-energy kernel of two displaced copies,
    D(h) = [k(+h,+h) - k(+h,-h) - k(-h,+h) + k(-h,-h)] / 4h^2, Richardson-extrapolated
    as (4 D(h) - D(2h)) / 3 to remove the O(h^2) error. Measured without extrapolation:
    the error falls as h^2 (7e-6 of k** at h = 1e-3) until, below h ~ 3e-4, the
    round-off of the kernel sums (~64 eV^2 here) over 4h^2 takes over (1e-6 at h = 1e-4).
    """
    term = model.terms_[0]
    steps = (h, 2 * h)
    frames = []
    for j in range(len(atoms)):
        for a in range(3):
            for step in steps:
                for sign in (1.0, -1.0):
                    b = atoms.copy()
                    b.positions[j, a] += sign * step
                    frames.append(b)
    res = term.descriptor.compute(frames)
    q = torch.as_tensor(res.values)
    structure = torch.as_tensor(res.centre_structure)

    def kk(x, y):
        return float(term.kernel.value(x, y).sum())

    out = np.empty((len(atoms), 3))
    with torch.no_grad():
        for j in range(len(atoms)):
            for a in range(3):
                second = []
                for i, step in enumerate(steps):
                    f = 4 * (3 * j + a) + 2 * i
                    plus, minus = q[structure == f], q[structure == f + 1]
                    second.append((kk(plus, plus) - kk(plus, minus) - kk(minus, plus)
                                   + kk(minus, minus)) / (4 * step * step))
                out[j, a] = (4 * second[0] - second[1]) / 3
    return out


# --------------------------------------------------------------------------- tests

def test_setting_is_well_conditioned(model, train):
    """The premise of this file: the dense normal equations are accurate here."""
    dense = Dense(model, train)
    assert dense.k.shape == (4 * (1 + 24 + 6), 8)
    assert np.linalg.cond(dense.kmm) < 1e6
    assert np.linalg.cond(dense.a) < 1e9


def test_r_factor_is_cholesky_of_normal_matrix(model, train):
    """R^T R = K_MM + K_MN Sigma^-1 K_NM, and U^T U = K_MM (+ jitter)."""
    dense = Dense(model, train)
    r = model.R_.numpy()
    u = model.U_.numpy()
    np.testing.assert_allclose(r.T @ r, dense.a, rtol=0, atol=RTOL * np.abs(dense.a).max())
    np.testing.assert_allclose(u.T @ u, dense.kmm, rtol=0,
                               atol=RTOL * np.abs(dense.kmm).max())
    assert np.all(np.diag(r) > 0)


def test_alpha_equals_dense_normal_equations(model, train):
    alpha = Dense(model, train).alpha()
    err = np.abs(model.alpha_.numpy() - alpha).max() / np.abs(alpha).max()
    assert err < RTOL, f"alpha differs from the dense solution by {err:.2e}"


def test_log_marginal_likelihood_equals_dense_gaussian(model, train):
    reference = Dense(model, train).log_marginal_likelihood()
    assert model.log_marginal_likelihood_ == pytest.approx(reference, rel=RTOL)


def test_energy_variances_equal_dense_dtc(model, train, probe_frames):
    dense = Dense(model, train)
    _, rows = _rows(model, probe_frames, gradients=False)
    total_prior, local_prior = _energy_priors(model, probe_frames)
    pred = model.predict(probe_frames, forces=False, virial=False)
    np.testing.assert_allclose(pred.energy_variance, dense.dtc(rows["energy"], total_prior),
                               rtol=RTOL)
    np.testing.assert_allclose(pred.local_energy_variance,
                               dense.dtc(rows["local"], local_prior), rtol=RTOL)
    # the means too: E = e0 + K_*M alpha
    e0 = np.array([sum(model.e0_[int(z)] for z in a.numbers) for a in probe_frames])
    np.testing.assert_allclose(pred.energy, e0 + rows["energy"] @ dense.alpha(), rtol=RTOL)


def test_force_and_virial_variances_equal_dense_projected(model, train, probe_frames):
    dense = Dense(model, train)
    _, rows = _rows(model, probe_frames)
    m = rows["forces"].shape[-1]
    pred = model.predict(probe_frames, forces_variance="projected")
    np.testing.assert_allclose(pred.forces_variance.reshape(-1),
                               dense.projected(rows["forces"].reshape(-1, m)), rtol=RTOL)
    voigt = dense.projected(rows["virial"].reshape(-1, m)).reshape(-1, 6)
    expected = np.empty((len(probe_frames), 3, 3))
    for i, (a, b) in enumerate(VOIGT):
        expected[:, a, b] = expected[:, b, a] = voigt[:, i]
    np.testing.assert_allclose(pred.virial_variance, expected, rtol=RTOL)
    # and the mean forces: F = K_*M alpha
    np.testing.assert_allclose(pred.forces.reshape(-1),
                               rows["forces"].reshape(-1, m) @ dense.alpha(),
                               rtol=0, atol=RTOL * np.abs(pred.forces).max())


@pytest.mark.parametrize("index", [0, 2])
def test_exact_force_variance_equals_dense_dtc(model, train, probe_frames, index):
    """var = k** - k*^T K_MM^-1 k* + k*^T A^-1 k*, with k** from finite differences of
    the energy kernel (independent of the analytic second derivatives gapkit uses)."""
    atoms = probe_frames[index]
    dense = Dense(model, train)
    _, rows = _rows(model, [atoms])
    kstar = rows["forces"].reshape(-1, rows["forces"].shape[-1])
    prior = _force_priors(model, atoms)
    expected = dense.dtc(kstar, prior.reshape(-1)).reshape(-1, 3)
    exact = model.predict([atoms], forces_variance="exact").forces_variance
    np.testing.assert_allclose(exact, expected, rtol=0, atol=FD_RTOL * prior.max())
    # 0 <= projected <= exact <= prior: k** >= k*^T K_MM^-1 k* >= k*^T A^-1 k*
    projected = model.predict([atoms], forces_variance="projected").forces_variance
    assert np.all(prior.reshape(-1) >= dense.nystrom(kstar) * (1 - RTOL))
    assert np.all(exact <= prior + FD_RTOL * prior.max())
    assert np.all(projected <= exact * (1 + RTOL))


# ------------------------------------------------------------- block independence

@pytest.mark.parametrize("batch_atoms, block_rows", [(8, 16), (8, None), (16, 1), (10_000, 7)])
def test_result_does_not_depend_on_block_size(model, train, probe_frames, monkeypatch,
                                              batch_atoms, block_rows):
    """batch_atoms: frames per design-matrix block (8 atoms = one frame per block);
    block_rows: rows buffered per QR update (default max(2M, 2048) = one update here)."""
    if block_rows is not None:
        monkeypatch.setattr(gapkit.gp.sparse, "IncrementalQR",
                            functools.partial(IncrementalQR, block_rows=block_rows))
    other = _fit(train, batch_atoms=batch_atoms)
    a0, a1 = model.alpha_.numpy(), other.alpha_.numpy()
    assert np.abs(a1 - a0).max() <= BLOCK_RTOL * np.abs(a0).max()
    np.testing.assert_allclose(other.R_.numpy(), model.R_.numpy(), rtol=0,
                               atol=BLOCK_RTOL * np.abs(model.R_.numpy()).max())
    assert other.log_marginal_likelihood_ == pytest.approx(model.log_marginal_likelihood_,
                                                           rel=BLOCK_RTOL)
    p0 = model.predict(probe_frames, forces_variance="exact")
    p1 = other.predict(probe_frames, forces_variance="exact")
    for name in ("energy", "forces", "virial", "energy_variance", "forces_variance",
                 "local_energy_variance"):
        v0, v1 = getattr(p0, name), getattr(p1, name)
        assert np.abs(v1 - v0).max() <= BLOCK_RTOL * np.abs(v0).max(), name


@pytest.mark.parametrize("lapack", [True, False])
def test_incremental_qr_equals_dense_for_any_chunking(monkeypatch, lapack):
    """The streaming factor of [Sigma^-1/2 K_NM, Sigma^-1/2 y; U, 0] on random data, by
    LAPACK's triangular-pentagonal fold (CPU float64) and by QRs of the stacked rows (the
    path of other devices and dtypes)."""
    if not lapack:
        monkeypatch.setattr(gapkit.gp.sparse, "_on_lapack", lambda t: False)
    rng = np.random.default_rng(0)
    n, m = 300, 12
    k = rng.normal(size=(n, m))
    y = rng.normal(size=n)
    sigma = rng.uniform(0.5, 2.0, size=n)
    z = rng.normal(size=(m, m))
    kmm = z @ z.T + m * np.eye(m)
    u = np.linalg.cholesky(kmm).T
    a = kmm + k.T @ (k / sigma[:, None] ** 2)
    rhs = k.T @ (y / sigma**2)
    alpha = _refined_solve(a, rhs)
    c = k @ np.linalg.solve(kmm, k.T) + np.diag(sigma**2)
    sign, logdet = np.linalg.slogdet(c)
    lml = -0.5 * y @ np.linalg.solve(c, y) - 0.5 * logdet - 0.5 * n * math.log(2 * math.pi)
    for block_rows, chunk in [(None, n), (1, 1), (7, 13), (50, 50), (1000, 37)]:
        qr = IncrementalQR(torch.as_tensor(u), block_rows=block_rows)
        for start in range(0, n, chunk):
            sl = slice(start, start + chunk)
            qr.add(torch.as_tensor(k[sl]), torch.as_tensor(y[sl]), torch.as_tensor(sigma[sl]))
        r, b, resid = qr.finish()
        r = r.numpy()
        np.testing.assert_allclose(r.T @ r, a, rtol=0, atol=1e-12 * np.abs(a).max())
        got = np.linalg.solve(np.triu(r), b.numpy())
        np.testing.assert_allclose(got, alpha, rtol=1e-11)
        value = dtc_log_marginal_likelihood(torch.as_tensor(r), torch.as_tensor(u), resid,
                                            qr.sum_log_sigma, qr.n_rows)
        assert value == pytest.approx(lml, rel=1e-12)
        assert qr.n_rows == n


def test_stack_r_is_the_r_of_the_stacked_factors(monkeypatch):
    """TSQR's combine: the R (non-negative diagonal) of [R_a; R_b] by LAPACK's triangular
    fold equals that of a dense QR of the stack, and R^T R = R_a^T R_a + R_b^T R_b."""
    rng = np.random.default_rng(3)
    m = 70
    ra = torch.linalg.qr(torch.as_tensor(rng.normal(size=(90, m))), mode="r").R
    rb = torch.linalg.qr(torch.as_tensor(rng.normal(size=(150, m))), mode="r").R
    got = stack_r(ra, rb)
    dense = torch.linalg.qr(torch.cat([ra, rb]), mode="r").R
    dense = dense * torch.sign(torch.diagonal(dense))[:, None]
    assert bool((torch.diagonal(got) >= 0).all())
    assert torch.equal(got, torch.triu(got))
    np.testing.assert_allclose(got.numpy(), dense.numpy(), rtol=0, atol=1e-12 * float(
        dense.abs().max()))
    gram = ra.T @ ra + rb.T @ rb
    np.testing.assert_allclose((got.T @ got).numpy(), gram.numpy(), rtol=0,
                               atol=1e-12 * float(gram.abs().max()))
    monkeypatch.setattr(gapkit.gp.sparse, "_on_lapack", lambda t: False)
    np.testing.assert_allclose(stack_r(ra, rb).numpy(), got.numpy(), rtol=0,
                               atol=1e-12 * float(dense.abs().max()))


def test_consuming_combine_holds_no_more_factors_and_equals_the_copying_one():
    """The reduction's combine (``stack_r(consume=True)``, what each Dask combine and the
    final stack on U run) gives the copying combine's factor, in the first input's memory
    when it is Fortran-order (as a worker's finished factor is: no R-sized copy), and
    copies a C-order input instead of writing into it."""
    rng = np.random.default_rng(5)
    m = 40
    ra = torch.linalg.qr(torch.as_tensor(rng.normal(size=(60, m))), mode="r").R
    rb = torch.linalg.qr(torch.as_tensor(rng.normal(size=(80, m))), mode="r").R
    want = stack_r(ra, rb)
    qr = IncrementalQR(torch.zeros((m - 1, m - 1), dtype=torch.float64), block_rows=16)
    qr.add(torch.as_tensor(rng.normal(size=(70, m - 1))), torch.as_tensor(rng.normal(size=70)),
           torch.ones(70, dtype=torch.float64))
    copied = qr.augmented()
    own = qr.augmented(copy=False)  # LAPACK's array itself, finished in place
    assert own.stride() == (1, m) and torch.equal(own, copied)
    def copy(t, order):
        return torch.from_numpy(np.array(t.numpy(), order=order))  # np.array copies

    fa, fb = copy(ra, "F"), copy(rb, "F")  # Fortran-order, as the workers hold them
    got = stack_r(fa, fb, consume=True)
    assert got.data_ptr() == fa.data_ptr()
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0,
                               atol=1e-13 * float(want.abs().max()))
    assert torch.equal(got, torch.triu(got)) and bool((torch.diagonal(got) >= 0).all())
    ca, cb = copy(ra, "C"), copy(rb, "C")  # C-order: folded in copies, left as they were
    np.testing.assert_allclose(stack_r(ca, cb, consume=True).numpy(), want.numpy(), rtol=0,
                               atol=1e-13 * float(want.abs().max()))
    assert torch.equal(ca, ra) and torch.equal(cb, rb)
    # a reduction's part folded in place is never read again as if it were intact
    from gapkit.gp.sparse import _QRPart, _stack_qr

    pa, pb = _QRPart(copy(ra, "F"), 60, 0.0, 0, ()), _QRPart(copy(rb, "F"), 80, 0.0, 0, ())
    assert _stack_qr(pa, pb).n_rows == 140
    with pytest.raises(RuntimeError, match="already overwrote"):
        _stack_qr(pb, _QRPart(copy(ra, "F"), 60, 0.0, 0, ()))


def test_qr_buffer_is_bounded_and_folds_use_torchs_threads(monkeypatch):
    """The rows buffered per fold stay within QR_BLOCK_BYTES from M ~ 4,000 on (the former
    2 M rows were 0.4 GB at M 5,000), never below 512 rows (beyond M 16,000); and scipy's
    LAPACK runs with torch's thread count, not one thread per core."""
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_info

    sparse = gapkit.gp.sparse
    assert sparse.qr_block_rows(100) == 2048 and sparse.qr_block_rows(1000) == 2048
    for m in (5000, 8000, 16_000):
        rows = sparse.qr_block_rows(m)
        assert rows * 8 * (m + 1) <= sparse.QR_BLOCK_BYTES and rows >= 512
    assert sparse.qr_block_rows(20_000) == sparse.qr_block_rows(10**6) == 512
    seen = []
    original = lapack.dtpqrt

    def spy(*args, **kwargs):
        seen.append({i["num_threads"] for i in threadpool_info()
                     if i["user_api"] == "blas"})
        return original(*args, **kwargs)

    monkeypatch.setattr(lapack, "dtpqrt", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        qr = IncrementalQR(torch.eye(4, dtype=torch.float64), block_rows=3)
        qr.add(torch.ones((5, 4), dtype=torch.float64), torch.ones(5, dtype=torch.float64),
               torch.ones(5, dtype=torch.float64))
        qr.finish()
    finally:
        torch.set_num_threads(before)
    assert seen and all(s == {1} for s in seen), seen


_HEAP_PROBE = """
import numpy as np
from gapkit.gp.parallel import _glibc, trim_heap

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

if _glibc() is None:
    print("no-glibc")
    raise SystemExit
base = rss()
held, keep = [], []
for i in range(3000):  # 64 kB chunks (under the mmap threshold) with small ones between
    held.append(np.ones(8192))
    keep.append(np.ones(256))
del held
freed = rss() - base
trim_heap()
print(freed, rss() - base)
"""


def test_trim_heap_gives_back_what_freed_chunks_hold():
    """Freed chunks under the mmap threshold stay resident (a descriptor pass left 207 MiB
    on 1,000 Cu frames) until trim_heap, which the QR pass runs before it allocates R."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    if out == ["no-glibc"]:
        pytest.skip("trim_heap needs glibc's malloc_trim; this C library has none")
    freed, trimmed = map(float, out)
    assert freed > 150, freed  # 188 MiB allocated, still resident after their release
    assert trimmed < 0.25 * freed, (freed, trimmed)


# --------------------------------------------------------- more data, less variance

def _strip(atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    del atoms.info["energy"], atoms.info["virial"], atoms.arrays["forces"]
    return atoms


def test_adding_observations_never_increases_variance(train, probe_frames):
    """Same frames (so the same environments and sparse points), more observations:
    energies < + forces < + virials, and frames with labels removed < all labelled.
    Every posterior variance at every test point may only go down."""
    fits = {
        "E": _fit(train, use=("energy",)),
        "EF": _fit(train, use=("energy", "forces")),
        "EFV": _fit(train),
        "half": _fit(train[:2] + [_strip(a) for a in train[2:]]),
    }
    points = fits["EFV"].sparse_sets_[0].points
    for name, fit in fits.items():
        assert torch.equal(fit.sparse_sets_[0].points, points), name
    orders = [("E", "EF"), ("EF", "EFV"), ("half", "EFV"), ("E", "EFV")]
    for form in ("projected", "exact"):
        preds = {k: f.predict(probe_frames, forces_variance=form) for k, f in fits.items()}
        for fewer, more in orders:
            for name in ("energy_variance", "local_energy_variance", "forces_variance",
                         "virial_variance"):
                v_few, v_more = getattr(preds[fewer], name), getattr(preds[more], name)
                slack = 1e-9 * np.abs(v_few).max()
                assert np.all(v_more <= v_few + slack), (form, fewer, more, name)
                assert np.any(v_more < v_few - slack), (form, fewer, more, name)


@pytest.mark.parametrize("spread", [1e-2, 1e-5])
def test_condition_number_estimate_is_a_close_lower_bound(monkeypatch, spread):
    """Beyond EXACT_CONDITION_SIZE the condition number of a triangular factor is a power
    estimate: within 5 % of the singular values' ratio, from below; exact up to it."""
    from gapkit.gp import sparse

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(700, 600, dtype=torch.float64, generator=gen)
    a[:, :4] *= spread  # a few weak directions, as near-duplicate sparse points give
    r = torch.linalg.cholesky(a.T @ a).T
    sv = torch.linalg.svdvals(r)
    exact = float(sv[0] / sv[-1])
    assert sparse.condition_number(r) == pytest.approx(exact, rel=1e-12)
    monkeypatch.setattr(sparse, "EXACT_CONDITION_SIZE", 100)
    estimate = sparse.condition_number(r)
    assert 0.95 * exact <= estimate <= exact * (1 + 1e-10)
