"""The descriptor-kernel battery over every kernel class, and what each kernel adds.

``gapkit.testing.check_kernel`` (after gpytorch's ``BaseKernelTestCase`` and sklearn's
parametrised kernel list) runs once per case below: symmetry and positive
semi-definiteness, the diagonal, the GPyTorch call, ``delta`` (scaling, setter,
parameter), ``grad_contract``, ``hessian_contract`` and ``weighted_gradient`` against
central differences, the batched force prior variance against the generic loop,
``get_params`` and copies. The rest of this file is what the battery cannot know about
any kernel: the ``delta`` prior and argument validation. Each kernel's own physics is in
its file here (``test_twobody_kernel.py``: the cutoff; ``test_se_kernel.py``: the scales;
``test_soap_kernel.py``) and the NTK's closed forms in ``tests/test_ntk.py``.
"""

from __future__ import annotations

import copy
import pickle

import gpytorch
import numpy as np
import pytest
import torch
from gpytorch.constraints import Positive

from gapkit import NTKKernel, SEKernel, SOAPKernel, TwoBodyKernel
from gapkit.kernels import KERNELS
from gapkit.testing import TOLERANCES, check_kernel

DTYPE = torch.float64
TOL = TOLERANCES[DTYPE]
#: features of very different magnitudes, as symmetry functions have (SEKernel)
MAGNITUDES = np.array([10.0, 1.0, 0.3, 0.01, 2.0, 1e-3])


def _unit_vectors(d):
    """Random unit vectors in d dimensions: normalised SOAP power spectra."""
    def sample(rng, n):
        q = rng.normal(size=(n, d))
        return torch.as_tensor(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=DTYPE)
    return sample


def _distances(rng, n):
    """Pair distances in [1, 5.5] Å: inside the cutoff (5 Å, width 1 Å), in its
    transition and beyond it."""
    return torch.as_tensor(rng.uniform(1.0, 5.5, size=(n, 1)), dtype=DTYPE)


def _scaled_normal(rng, n):
    return torch.as_tensor(rng.normal(size=(n, MAGNITUDES.size)) * MAGNITUDES, dtype=DTYPE)


def _scaled_gradients(rng, n_entries, n_directions):
    """Descriptor gradients on the scale of each feature."""
    g = rng.normal(size=(n_entries, n_directions, MAGNITUDES.size)) * MAGNITUDES
    return torch.as_tensor(g, dtype=DTYPE)


def _ntk(activation, parameterization="ntk", width=None):
    return lambda: NTKKernel(depth=2, activation=activation, W_std=1.3, b_std=0.2,
                             parameterization=parameterization, width=width, delta=1.7)


#: id -> (make_kernel, sample, keyword arguments of check_kernel)
CASES = {
    "soap-zeta1": (lambda: SOAPKernel(zeta=1, delta=1.3), _unit_vectors(7), {}),
    "soap-zeta2": (lambda: SOAPKernel(zeta=2, delta=1.3), _unit_vectors(7), {}),
    "soap-zeta4": (lambda: SOAPKernel(zeta=4, delta=1.3), _unit_vectors(7), {}),
    "twobody": (lambda: TwoBodyKernel(cutoff=5.0, cutoff_width=1.0, lengthscale=0.7,
                                      delta=1.3), _distances, {}),
    # (its hessian swap symmetry was checked to atol 1e-15 before the battery: kept)
    "se": (lambda: SEKernel(lengthscale=1.7, delta=1.3, scales=MAGNITUDES), _scaled_normal,
           {"gradients": _scaled_gradients, "tolerances": {"algebra_atol": 1e-15}}),
    # (the NTK's diagonal was checked to rtol 1e-13 before the battery: kept)
    "ntk-erf": (_ntk("erf"), _unit_vectors(6), {"tolerances": {"algebra": 1e-13}}),
    "ntk-erf-standard": (_ntk("erf", "standard", 64), _unit_vectors(6),
                         {"tolerances": {"algebra": 1e-13}}),
    # The ReLU NTK has a cusp at coincident points: it is not differentiable there, so
    # the force prior variance (which pairs every centre with itself) raises (see
    # test_ntk.py::test_batched_force_prior_variance_matches_generic), and on the
    # diagonal of value(x, x) arccos(1 - O(eps)) = O(sqrt(eps)) leaves ~1e-8 relative
    # error, which test_ntk.py::test_relu_diagonal checks with its own tolerance.
    "ntk-relu": (_ntk("relu"), _unit_vectors(6), {"skip": ("diag", "force_prior_variance"),
                                                   "tolerances": {"algebra": 1e-13}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_battery(case):
    make, sample, kwargs = CASES[case]
    check_kernel(make, sample, **kwargs)


def test_battery_covers_every_kernel_class():
    """A kernel class added to the registry must get a case here."""
    covered = {type(make()) for make, _, _ in CASES.values()}
    assert covered == set(KERNELS.values())


#: one kernel per class, for the tests below
ONE_PER_CLASS = {"soap": CASES["soap-zeta2"], "twobody": CASES["twobody"], "se": CASES["se"],
                 "ntk": CASES["ntk-erf"]}


@pytest.fixture(params=list(ONE_PER_CLASS))
def case(request, rng):
    """(make_kernel with keyword overrides, sampler of n descriptors) of one kernel class."""
    make, sample, _ = ONE_PER_CLASS[request.param]

    def make_with(**kw):
        kernel = make()
        return type(kernel)(**{**kernel.get_params(), **kw})

    return make_with, (lambda n: sample(rng, n))


# -- delta: its constraint and prior ------------------------------------------------------


def test_delta_is_positive_by_default(case):
    make, _ = case
    assert isinstance(make().raw_delta_constraint, Positive)


def test_delta_prior_registers_and_contributes(case):
    make, _ = case
    prior = gpytorch.priors.GammaPrior(2.0, 2.0)
    k = make(delta_prior=prior)
    priors = {name: (p, closure) for name, _, p, closure, _ in k.named_priors()}
    assert "delta_prior" in priors
    p, _ = priors["delta_prior"]
    assert p is prior
    delta = float(k.delta.detach().reshape(()))
    expected = torch.distributions.Gamma(2.0, 2.0).log_prob(torch.tensor(delta, dtype=DTYPE))
    total = sum(pr.log_prob(cl(m)).sum() for _, m, pr, cl, _ in k.named_priors())
    np.testing.assert_allclose(total.detach().numpy(), expected.numpy(), rtol=TOL["algebra"])
    k.delta = 0.5
    moved = sum(pr.log_prob(cl(m)).sum() for _, m, pr, cl, _ in k.named_priors())
    assert moved.item() != pytest.approx(total.item())
    # the closure that sets the value from a prior sample works
    k.sample_from_prior("delta_prior")
    assert k.delta.item() > 0


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copy_with_prior(case, how):
    make, sample = case
    k = make(delta_prior=gpytorch.priors.GammaPrior(2.0, 2.0))
    clone = pickle.loads(pickle.dumps(k)) if how == "pickle" else copy.deepcopy(k)
    x = sample(4)
    assert torch.equal(clone.value(x, x), k.value(x, x))
    assert "delta_prior" in [name for name, *_ in clone.named_priors()]


# -- argument validation ------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_delta(case, delta):
    make, _ = case
    with pytest.raises(ValueError, match="delta"):
        make(delta=delta)


def test_last_dim_is_batch_is_refused(case):
    make, sample = case
    x = sample(3)
    with pytest.raises(ValueError, match="last_dim_is_batch"):
        make().forward(x, x, last_dim_is_batch=True)


# -- two-body specifics -------------------------------------------------------------------


