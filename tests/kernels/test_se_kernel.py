"""What the squared-exponential descriptor kernel, :class:`gapkit.SEKernel`, adds to the
kernel battery (``tests/kernels/test_kernel_battery.py`` runs ``gapkit.testing.check_kernel``
on it).

Values against the formula, a singular but positive semi-definite Gram matrix, the
derivative contractions against autograd, the batched force prior variance on real
symmetry-function gradients, the fixed scales and the learnable lengthscale, and forces
of fitted GAPs (symmetry functions and SOAP) against finite differences of their energy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gpytorch.constraints import Positive

from gapkit import SEKernel
from gapkit.kernels import DescriptorKernel
from gapkit.testing import TOLERANCES, check_forces

DTYPE = torch.float64
TOL = TOLERANCES[DTYPE]
RTOL = TOL["algebra"]
#: autograd differentiates the same function along another path: round-off of the
#: derivative formulas, not of one operation
AUTOGRAD_RTOL = 1e-10
D = 6
#: features of very different magnitudes, as symmetry functions have
MAGNITUDES = np.array([10.0, 1.0, 0.3, 0.01, 2.0, 1e-3])


def _descriptors(rng, n):
    return torch.as_tensor(rng.normal(size=(n, D)) * MAGNITUDES, dtype=DTYPE)


def _kernel(**kw):
    kw = {"lengthscale": 1.7, "delta": 1.3, "scales": MAGNITUDES, **kw}
    return SEKernel(**kw)


def _gradients(rng, n_entries, r, n_centres):
    g = torch.as_tensor(rng.normal(size=(n_entries, r, D)) * MAGNITUDES, dtype=DTYPE)
    return g, torch.as_tensor(rng.integers(0, n_centres, size=n_entries))


def _close(actual, desired, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual.detach()), np.asarray(desired.detach()),
                               rtol=rtol, atol=atol)


# -- values ---------------------------------------------------------------------------


def test_values_match_the_formula(rng):
    k = _kernel()
    q1, q2 = _descriptors(rng, 5), _descriptors(rng, 4)
    diff = (q1[:, None, :] - q2[None, :, :]) / torch.as_tensor(MAGNITUDES)
    expected = 1.3**2 * torch.exp(-(diff**2).sum(-1) / (2 * 1.7**2))
    _close(k.value(q1, q2), expected)
    _close(k.diag_value(q1), torch.full((5,), 1.3**2, dtype=DTYPE))
    _close(k(q1, q2).to_dense(), expected)
    _close(k(q1, q1, diag=True), torch.diagonal(k.value(q1, q1)))


def test_symmetric_and_positive_semidefinite(rng):
    k = _kernel()
    x = _descriptors(rng, 40)
    x[7] = x[3]  # a duplicate: the Gram matrix is singular, still PSD
    gram = k.value(x, x).detach()
    _close(gram, gram.T, atol=1e-15)
    eig = torch.linalg.eigvalsh(gram)
    assert eig.min() >= -TOL["psd"] * eig.max(), eig.min()


def test_scales_make_the_kernel_unit_free(rng):
    """Rescaling feature D by c and its scale by c changes nothing; without scales a
    large feature would dominate the distance."""
    q1, q2 = _descriptors(rng, 5), _descriptors(rng, 4)
    c = torch.as_tensor([1e3, 1.0, 1e-2, 5.0, 1.0, 7.0], dtype=DTYPE)
    scaled = _kernel(scales=MAGNITUDES * c.numpy())
    _close(scaled.value(q1 * c, q2 * c), _kernel().value(q1, q2), rtol=1e-10)
    plain = SEKernel(lengthscale=1.7, delta=1.3)
    assert not torch.allclose(plain.value(q1, q2), _kernel().value(q1, q2))


def test_large_offsets_do_not_lose_precision(rng):
    """Descriptors far from the origin (a constant offset of 1e6 scales): distances are
    formed after centring, so the values do not suffer from cancellation."""
    k = _kernel()
    q1, q2 = _descriptors(rng, 5), _descriptors(rng, 4)
    offset = torch.as_tensor(1e6 * MAGNITUDES, dtype=DTYPE)
    _close(k.value(q1 + offset, q2 + offset), k.value(q1, q2), rtol=1e-8)


# -- derivatives ----------------------------------------------------------------------


def test_grad_contract_matches_autograd(rng):
    """d/dq1 of sum_m w_m k(q1_c, z_m) by autograd, contracted with g."""
    k = _kernel()
    q1, q2 = _descriptors(rng, 5), _descriptors(rng, 4)
    g, centre = _gradients(rng, 7, 3, 5)
    analytic = k.grad_contract(q1, q2, g, centre)
    assert analytic.shape == (7, 3, 4)
    w = torch.as_tensor(rng.normal(size=4), dtype=DTYPE)
    x = q1.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((k.value(x, q2) @ w).sum(), x)
    _close((analytic * w).sum(-1), torch.einsum("erd,ed->er", g, grad[centre]),
           rtol=AUTOGRAD_RTOL)


def test_hessian_contract_matches_autograd(rng):
    """The full second derivative d^2 k / dq1 dq2 by double autograd, contracted."""
    k = _kernel()
    q1, q2 = _descriptors(rng, 1), _descriptors(rng, 1)
    g1, c1 = _gradients(rng, 1, 1, 1)
    g2, c2 = _gradients(rng, 1, 1, 1)

    def first(a, b):
        return torch.autograd.functional.jacobian(lambda x: k.value(x, b)[0, 0], a,
                                                  create_graph=True)[0]

    hess = torch.autograd.functional.jacobian(lambda b: first(q1, b), q2)[:, 0, :]  # (D, D)
    expected = g1[0, 0] @ hess @ g2[0, 0]
    # a second derivative through two autograd passes: one digit more round-off
    _close(k.hessian_contract(q1, q2, g1, c1, g2, c2)[0, 0, 0, 0], expected,
           rtol=10 * AUTOGRAD_RTOL)


def test_weighted_gradient_matches_autograd(rng):
    k = _kernel()
    q1, q2 = _descriptors(rng, 5), _descriptors(rng, 4)
    w = torch.as_tensor(rng.normal(size=(5, 4)), dtype=DTYPE)
    x = q1.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((k.value(x, q2) * w).sum(), x)
    _close(k.weighted_gradient(q1, q2, w), expected, rtol=AUTOGRAD_RTOL,
           atol=TOL["algebra_atol"])


def test_force_prior_variance_matches_the_generic_loop(acetamide):
    """The batched padded-block version equals DescriptorKernel's per-atom loop of
    hessian_contract, on real symmetry-function gradients of a molecule."""
    from gapkit.descriptors import SymmetryFunctions

    res = SymmetryFunctions(cutoff=4.0, g4=[[0.05, 1.0, 1.0], [0.05, 4.0, -1.0]]) \
        .compute([acetamide], gradients=["positions"])
    k = SEKernel.with_scales_from(res, delta=0.7)
    q, g = res.torch("values"), res.torch("gradients")
    centre, atom = torch.as_tensor(res.gradient_centre), res.gradient_atom
    types = torch.as_tensor(res.centre_types)
    fast = k.force_prior_variance(q, g, centre, atom, types, len(acetamide))
    slow = DescriptorKernel.force_prior_variance(k, q, g, centre, atom, types, len(acetamide))
    assert fast.shape == (len(acetamide), 3) and float(fast.detach().min()) > 0
    _close(fast, slow, rtol=RTOL)


# -- scales and lengthscale -----------------------------------------------------------


def test_fit_scales_are_standard_deviations_with_a_floor_for_constant_features(rng):
    q = rng.normal(size=(50, 4)) * [3.0, 0.1, 1.0, 1.0]
    q[:, 2] = 5.0  # constant: never varies in training
    scales = SEKernel.fit_scales(q)
    np.testing.assert_allclose(scales[[0, 1, 3]], q[:, [0, 1, 3]].std(0), rtol=1e-14)
    assert scales[2] == pytest.approx(np.median(q[:, [0, 1, 3]].std(0)))
    with pytest.raises(ValueError, match="constant"):
        SEKernel.fit_scales(np.ones((5, 3)))
    with pytest.raises(ValueError, match="constant"):  # a perfect crystal: rounding only
        SEKernel.fit_scales(np.ones((5, 3)) * 3.7 + rng.normal(size=(5, 3)) * 1e-15)
    with pytest.raises(ValueError, match="n_centres"):
        SEKernel.fit_scales(np.ones((1, 3)))


def test_with_scales_from_picks_a_lengthscale_from_the_data(rng):
    q = rng.normal(size=(200, 5)) * [3.0, 0.1, 1.0, 1.0, 20.0]
    k = SEKernel.with_scales_from(q, delta=0.4)
    x = q / SEKernel.fit_scales(q)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[np.triu_indices(200, 1)]
    assert k.lengthscale.item() == pytest.approx(3.0 * np.median(d), rel=1e-10)
    assert k.delta.item() == pytest.approx(0.4)
    assert SEKernel.with_scales_from(q, lengthscale=2.0).lengthscale.item() == \
        pytest.approx(2.0)


def test_lengthscale_is_a_positive_learnable_float64_parameter(rng):
    k = _kernel()
    assert isinstance(k.raw_lengthscale, torch.nn.Parameter)
    assert isinstance(k.raw_lengthscale_constraint, Positive)
    assert k.raw_lengthscale.dtype == DTYPE
    assert k.lengthscale.item() == pytest.approx(1.7, rel=1e-15)
    assert "scales" in dict(k.named_buffers())
    assert "scales" not in dict(k.named_parameters())
    x = _descriptors(rng, 4)
    k.value(x, x).sum().backward()
    assert k.raw_lengthscale.grad is not None and k.raw_lengthscale.grad.abs().item() > 0
    k.lengthscale = 3.0
    assert k.lengthscale.item() == pytest.approx(3.0)


def test_get_params_names_the_constructor_keywords():
    """The battery checks the round trip; here the names and the defaults."""
    assert set(_kernel().get_params()) == {"lengthscale", "delta", "scales"}
    assert SEKernel().get_params() == {"lengthscale": 1.0, "delta": 1.0, "scales": None}
    assert _kernel().get_params()["scales"] == pytest.approx(MAGNITUDES.tolist(), rel=1e-15)


BAD = [({"lengthscale": 0.0}, "lengthscale"), ({"lengthscale": math.nan}, "lengthscale"),
       ({"delta": -1.0}, "delta"), ({"scales": [1.0, 0.0]}, "scales"),
       ({"scales": [1.0, math.inf]}, "scales"), ({"scales": []}, "scales")]


@pytest.mark.parametrize(("kwargs", "word"), BAD, ids=[str(k) for k, _ in BAD])
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SEKernel(**kwargs)


def test_wrong_number_of_features_raises(rng):
    with pytest.raises(ValueError, match="features"):
        _kernel().value(torch.zeros(2, D + 1, dtype=DTYPE), torch.zeros(3, D + 1, dtype=DTYPE))


# -- in a GAP: forces are minus the gradient of the energy -----------------------------


@pytest.mark.parametrize("descriptor", ["symmetry_functions", "soap"])
def test_gap_forces_are_minus_energy_gradients(descriptor, triclinic_two_species):
    """A GAP with the SE kernel (on symmetry functions and, generic, on SOAP) fitted to
    random synthetic labels: its forces and virial equal central differences of its
    energy, so grad_contract and the descriptor gradients agree through the whole
    pipeline."""
    from gapkit import GAP, NoiseModel, Term
    from gapkit.descriptors import SOAP, SymmetryFunctions

    if descriptor == "soap":
        desc = SOAP(cutoff=3.5, cutoff_width=0.5, n_max=3, l_max=2)
    else:
        desc = SymmetryFunctions(cutoff=3.5, g4=[[0.05, 1.0, 1.0], [0.05, 2.0, -1.0]])
    rng = np.random.default_rng(5)
    frames = []
    for k in range(6):
        atoms = triclinic_two_species.copy()
        atoms.rattle(0.08, seed=10 + k)
        atoms.info["energy"] = float(rng.normal())
        atoms.arrays["forces"] = rng.normal(scale=0.3, size=(len(atoms), 3))
        frames.append(atoms)
    kernel = SEKernel.with_scales_from(desc.compute(frames), delta=0.5)
    model = GAP([Term(desc, kernel, n_sparse="all")], use=("energy", "forces"),
                noise=NoiseModel(energy=0.01, forces=0.1), progress=False).fit(frames)
    probe = triclinic_two_species.copy()
    probe.rattle(0.05, seed=99)
    assert np.abs(model.predict([probe], return_variance=False).forces).max() > 1e-3
    # every component within 1e-8 eV/Å (components 0.05-0.8 eV/Å; measured <= 2e-9)
    check_forces(model, probe, step=1e-5, rtol=0.0, atol=1e-8, virial=False)
    # and the virial, through the strain gradients (extrapolated: measured 2e-10)
    check_forces(model, probe, virial=True, extrapolate=True)


def test_lengthscale_of_an_se_term_is_optimised_by_marginal_likelihood():
    """optimize_hyperparameters(lengthscale=True) tunes the SEKernel length scale when
    there is no two-body term; starting far too small, the likelihood rises."""
    from gapkit import GAP, NoiseModel, SymmetryFunctions, Term
    from gapkit.data import load_bundled

    frames = load_bundled("Si_train.xyz")[::20]
    sf = SymmetryFunctions(cutoff=4.0)
    kernel = SEKernel.with_scales_from(sf.compute(frames), lengthscale=2.0)
    model = GAP([Term(sf, kernel, n_sparse=40)],
                noise=NoiseModel(energy=0.005, forces=0.1, virial=0.1),
                progress=False).fit(frames)
    report = model.optimize_hyperparameters(frames, delta=False, noise=False, lengthscale=True,
                                            refit=True)
    assert report["lengthscale_before"] == pytest.approx(2.0)
    assert 2.0 < report["lengthscale"] <= 20.0 + 1e-9, report
    assert report["log_marginal_likelihood_after"] > report["log_marginal_likelihood_before"]
    assert model.log_marginal_likelihood_ == pytest.approx(
        report["log_marginal_likelihood_after"], rel=1e-6)
