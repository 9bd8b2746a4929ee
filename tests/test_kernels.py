"""Kernel battery (after gpytorch's ``BaseKernelTestCase`` and sklearn's parametrised list).

Every descriptor kernel in ``KERNELS`` runs the same checks: symmetry and positive
semi-definiteness, the diagonal, the GPyTorch call interface, the two derivative
contractions against central finite differences, the ``delta`` hyper-parameter
(constraint, scaling, prior), pickling, and argument validation.
"""

from __future__ import annotations

import copy
import math
import pickle

import gpytorch
import numpy as np
import pytest
import torch
from gpytorch.constraints import Positive

from gapkit.kernels import SOAPKernel, TwoBodyKernel

DTYPE = torch.float64
#: central-difference step (descriptor units) and tolerance
H = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-9
#: algebraic identities in float64
RTOL = 1e-12
PSD_TOL = 1e-10

def _unit_vectors(rng, n, d=7):
    q = rng.normal(size=(n, d))
    return torch.as_tensor(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=DTYPE)


def _distances(rng, n, d=1):
    """Distances in [1, 5.5] Å: some inside, some in the cutoff transition, some beyond."""
    return torch.as_tensor(rng.uniform(1.0, 5.5, size=(n, 1)), dtype=DTYPE)


#: id -> (factory taking keyword overrides, descriptor sampler, n_features); delta 1.3 eV
KERNELS = {
    "soap-zeta1": (lambda **kw: SOAPKernel(zeta=1, **{"delta": 1.3, **kw}), _unit_vectors, 7),
    "soap-zeta2": (lambda **kw: SOAPKernel(zeta=2, **{"delta": 1.3, **kw}), _unit_vectors, 7),
    "soap-zeta4": (lambda **kw: SOAPKernel(zeta=4, **{"delta": 1.3, **kw}), _unit_vectors, 7),
    "twobody": (lambda **kw: TwoBodyKernel(cutoff=5.0, cutoff_width=1.0, lengthscale=0.7,
                                           **{"delta": 1.3, **kw}), _distances, 1),
}


@pytest.fixture(params=list(KERNELS), ids=list(KERNELS))
def case(request, rng):
    """(factory, sampler of n descriptors, n_features, rng) of one kernel."""
    make, sample, d = KERNELS[request.param]
    return make, (lambda n: sample(rng, n)), d, rng


def _random_gradients(rng, n_entries, r, d, n_centres):
    g = torch.as_tensor(rng.normal(size=(n_entries, r, d)), dtype=DTYPE)
    centre = torch.as_tensor(rng.integers(0, n_centres, size=n_entries))
    return g, centre


def _assert_close(actual, desired, rtol=RTOL, atol=0.0, err_msg=""):
    np.testing.assert_allclose(np.asarray(actual.detach()), np.asarray(desired.detach()),
                               rtol=rtol, atol=atol, err_msg=err_msg)


# -- values -------------------------------------------------------------------


def test_symmetric_and_psd(case):
    make, sample, _, _ = case
    k = make()
    x = sample(12)
    K = k.value(x, x).detach()
    _assert_close(K, K.T)
    eig = torch.linalg.eigvalsh(K)
    assert eig.min() >= -PSD_TOL * eig.abs().max(), eig


def test_diag_value_matches_diagonal(case):
    make, sample, _, _ = case
    k = make()
    x = sample(9)
    _assert_close(k.diag_value(x), torch.diagonal(k.value(x, x)))


def test_gpytorch_call_interface(case):
    make, sample, _, _ = case
    k = make()
    x1, x2, x3 = sample(6), sample(4), sample(6)
    _assert_close(k(x1, x2).to_dense(), k.value(x1, x2))
    _assert_close(k(x1).to_dense(), k.value(x1, x1))
    _assert_close(k(x1, diag=True), k.diag_value(x1))
    _assert_close(k(x1, x1, diag=True), torch.diagonal(k.value(x1, x1)))
    # diag of two different inputs of the same length: k(x1_i, x3_i)
    _assert_close(k(x1, x3, diag=True), torch.diagonal(k.value(x1, x3)))
    assert k(x1, x2).shape == (6, 4)


def test_values_are_float64(case):
    make, sample, _, _ = case
    k = make()
    x = sample(3)
    assert k.value(x, x).dtype == DTYPE
    assert k.grad_contract(x, x, x[:, None, :], torch.arange(3)).dtype == DTYPE
    assert k.raw_delta.dtype == DTYPE  # raw_lengthscale: see test_twobody_lengthscale_is_exact


# -- derivatives against finite differences --------------------------------------


def test_grad_contract_matches_finite_differences(case):
    make, sample, d, rng = case
    k = make()
    q1, q2 = sample(5), sample(4)
    g, centre = _random_gradients(rng, 7, 2, d, 5)
    analytic = k.grad_contract(q1, q2, g, centre)
    assert analytic.shape == (7, 2, 4)
    fd = torch.empty_like(analytic)
    for e in range(g.shape[0]):
        for r in range(g.shape[1]):
            plus, minus = q1.clone(), q1.clone()
            plus[centre[e]] += H * g[e, r]
            minus[centre[e]] -= H * g[e, r]
            fd[e, r] = (k.value(plus, q2) - k.value(minus, q2))[centre[e]] / (2 * H)
    _assert_close(analytic, fd, rtol=FD_RTOL, atol=FD_ATOL)


def test_hessian_contract_matches_finite_differences(case):
    make, sample, d, rng = case
    k = make()
    q1, q2 = sample(5), sample(4)
    g1, c1 = _random_gradients(rng, 6, 2, d, 5)
    g2, c2 = _random_gradients(rng, 5, 3, d, 4)
    analytic = k.hessian_contract(q1, q2, g1, c1, g2, c2)
    assert analytic.shape == (6, 2, 5, 3)
    fd = torch.empty_like(analytic)
    for f in range(g2.shape[0]):
        for s in range(g2.shape[1]):
            plus, minus = q2.clone(), q2.clone()
            plus[c2[f]] += H * g2[f, s]
            minus[c2[f]] -= H * g2[f, s]
            diff = k.grad_contract(q1, plus, g1, c1) - k.grad_contract(q1, minus, g1, c1)
            fd[:, :, f, s] = diff[:, :, c2[f]] / (2 * H)
    _assert_close(analytic, fd, rtol=FD_RTOL, atol=FD_ATOL)


def test_hessian_contract_is_symmetric_under_swapping_sides(case):
    make, sample, d, rng = case
    k = make()
    q1, q2 = sample(5), sample(4)
    g1, c1 = _random_gradients(rng, 6, 2, d, 5)
    g2, c2 = _random_gradients(rng, 5, 3, d, 4)
    h12 = k.hessian_contract(q1, q2, g1, c1, g2, c2)
    h21 = k.hessian_contract(q2, q1, g2, c2, g1, c1)
    _assert_close(h12, h21.permute(2, 3, 0, 1), atol=1e-14)


def test_grad_contract_is_linear_in_the_directions(case):
    make, sample, d, rng = case
    k = make()
    q1, q2 = sample(5), sample(4)
    g, centre = _random_gradients(rng, 4, 3, d, 5)
    gsum = g[:, :1] + 2.5 * g[:, 1:2]
    lhs = k.grad_contract(q1, q2, gsum, centre)
    rhs = k.grad_contract(q1, q2, g[:, :1], centre) + 2.5 * k.grad_contract(q1, q2, g[:, 1:2],
                                                                           centre)
    _assert_close(lhs, rhs, atol=1e-14)


# -- delta: a positive GPyTorch parameter with a prior ------------------------------


def test_delta_is_a_positive_gpytorch_parameter(case):
    make, sample, _, _ = case
    k = make()
    assert isinstance(k.raw_delta, torch.nn.Parameter)
    assert isinstance(k.raw_delta_constraint, Positive)
    assert "raw_delta" in dict(k.named_parameters())
    assert k.delta.item() > 0
    # gradients flow from the values to raw_delta
    x = sample(4)
    k.value(x, x).sum().backward()
    assert k.raw_delta.grad is not None and torch.isfinite(k.raw_delta.grad).all()


def test_setting_delta_scales_everything(case):
    make, sample, d, rng = case
    k = make(delta=1.0)
    q1, q2 = sample(5), sample(4)
    g1, c1 = _random_gradients(rng, 3, 2, d, 5)
    g2, c2 = _random_gradients(rng, 3, 2, d, 4)

    def everything():
        return [k.value(q1, q2), k.diag_value(q1), k.grad_contract(q1, q2, g1, c1),
                k.hessian_contract(q1, q2, g1, c1, g2, c2), k(q1, q2).to_dense()]

    before = [t.detach().clone() for t in everything()]
    k.delta = 2.0
    assert k.delta.item() == pytest.approx(2.0, rel=1e-14)
    for b, a in zip(before, everything()):
        _assert_close(a, 4.0 * b, atol=1e-15)


def test_delta_prior_registers_and_contributes(case):
    make, _, _, _ = case
    prior = gpytorch.priors.GammaPrior(2.0, 2.0)
    k = make(delta_prior=prior)
    priors = {name: (p, closure) for name, _, p, closure, _ in k.named_priors()}
    assert "delta_prior" in priors
    p, closure = priors["delta_prior"]
    assert p is prior
    expected = torch.distributions.Gamma(2.0, 2.0).log_prob(torch.tensor(1.3, dtype=DTYPE))
    total = sum(pr.log_prob(cl(m)).sum() for _, m, pr, cl, _ in k.named_priors())
    _assert_close(total, expected, rtol=1e-12)
    k.delta = 0.5
    moved = sum(pr.log_prob(cl(m)).sum() for _, m, pr, cl, _ in k.named_priors())
    assert moved.item() != pytest.approx(total.item())
    # the closure that sets the value from a prior sample works
    k.sample_from_prior("delta_prior")
    assert k.delta.item() > 0


# -- copies ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copy_round_trip(case, how):
    make, sample, d, rng = case
    k = make()
    k.delta = 1.7
    clone = pickle.loads(pickle.dumps(k)) if how == "pickle" else copy.deepcopy(k)
    q1, q2 = sample(5), sample(4)
    g, c = _random_gradients(rng, 3, 2, d, 5)
    g2, c2 = _random_gradients(rng, 3, 2, d, 4)
    assert torch.equal(clone.value(q1, q2), k.value(q1, q2))
    assert torch.equal(clone.grad_contract(q1, q2, g, c), k.grad_contract(q1, q2, g, c))
    assert torch.equal(clone.hessian_contract(q1, q2, g, c, g2, c2),
                       k.hessian_contract(q1, q2, g, c, g2, c2))
    clone.delta = 3.0  # independent of the original
    assert k.delta.item() == pytest.approx(1.7)


def test_deepcopy_with_prior(case):
    make, sample, _, _ = case
    k = make(delta_prior=gpytorch.priors.GammaPrior(2.0, 2.0))
    clone = copy.deepcopy(k)
    x = sample(4)
    assert torch.equal(clone.value(x, x), k.value(x, x))
    assert "delta_prior" in [name for name, *_ in clone.named_priors()]


def test_pickle_with_prior(case):
    make, sample, _, _ = case
    k = make(delta_prior=gpytorch.priors.GammaPrior(2.0, 2.0))
    clone = pickle.loads(pickle.dumps(k))
    x = sample(4)
    assert torch.equal(clone.value(x, x), k.value(x, x))


# -- two-body specifics -------------------------------------------------------------


def test_twobody_vanishes_beyond_the_cutoff(rng):
    k = TwoBodyKernel(cutoff=5.0, cutoff_width=1.0, lengthscale=0.7)
    inside = torch.tensor([[2.0], [3.9]], dtype=DTYPE)
    outside = torch.tensor([[5.0], [5.3]], dtype=DTYPE)
    assert torch.all(k.value(inside, outside) == 0)
    g = torch.ones(2, 3, 1, dtype=DTYPE)
    assert torch.all(k.grad_contract(outside, inside, g, torch.tensor([0, 1])) == 0)
    # inside the flat part of the cutoff the kernel is the bare squared exponential
    expected = torch.tensor(math.exp(-0.5 * (2.0 - 3.9) ** 2 / 0.7**2), dtype=DTYPE)
    _assert_close(k.value(inside, inside)[0, 1], expected, rtol=1e-12)


def test_twobody_lengthscale_is_exact_float64():
    k = TwoBodyKernel(lengthscale=0.3)
    assert k.raw_lengthscale.dtype == DTYPE
    assert k.lengthscale.item() == pytest.approx(0.3, rel=1e-15)


# -- argument validation ------------------------------------------------------------


@pytest.mark.parametrize("zeta", [0, -1, 2.5, True])
def test_bad_zeta(zeta):
    with pytest.raises(ValueError, match="zeta"):
        SOAPKernel(zeta=zeta)


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("make", [lambda d: SOAPKernel(zeta=2, delta=d),
                                  lambda d: TwoBodyKernel(delta=d)], ids=["soap", "twobody"])
def test_bad_delta(make, delta):
    with pytest.raises(ValueError, match="delta"):
        make(delta)


@pytest.mark.parametrize("lengthscale", [0.0, -0.5, float("nan")])
def test_bad_lengthscale(lengthscale):
    with pytest.raises(ValueError, match="lengthscale"):
        TwoBodyKernel(lengthscale=lengthscale)


def test_last_dim_is_batch_is_refused():
    k = SOAPKernel(zeta=2)
    x = torch.eye(3, dtype=DTYPE)
    with pytest.raises(ValueError, match="last_dim_is_batch"):
        k.forward(x, x, last_dim_is_batch=True)
