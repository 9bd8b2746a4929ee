"""Neural tangent kernels: neural-tangents reference values, kernel properties, the NTK
as a GAP kernel (fit/save/load, forces against finite differences), the atomistic sum,
finite networks and their empirical NTK, and argument validation.

The derivatives of :class:`gapkit.NTKKernel` against finite differences, its diagonal,
its GPyTorch call and its copies are checked by the kernel battery
(``gapkit.testing.check_kernel``, run in ``tests/kernels/test_kernel_battery.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gapkit import GAP, SOAP, NTKKernel, Term
from gapkit.kernels import nngp_and_ntk as kernels
from gapkit.ntk import (
    AtomicMLP,
    empirical_ntk,
    kernel_alignment,
    network_energies_forces,
    ntk_gradient_descent_prediction,
    ntk_width_convergence,
    structure_kernel,
    train_network,
)
from gapkit.testing import TOLERANCES, check_forces

DTYPE = torch.float64
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference" / "ntk_reference.npz"
TOL = TOLERANCES[DTYPE]
#: the reference (neural-tangents, float64) is accurate to ~1e-7 absolute
REF_RTOL = 1e-6
#: arccos(1 - O(eps)) = O(sqrt(eps)): the ReLU kernels' cusp at coincident points
CUSP_RTOL = 1e-7


def _unit(rng, n, d):
    q = rng.normal(size=(n, d))
    return torch.as_tensor(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=DTYPE)


# ---------------------------------------------------------------- reference
@pytest.mark.skipif(not REFERENCE.exists(),
                    reason=f"neural-tangents reference values not found at {REFERENCE} "
                           "(../shared is absent in this checkout)")
@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("depth", [1, 2])
def test_matches_neural_tangents(param, depth):
    ref = np.load(REFERENCE)
    meta = json.loads(REFERENCE.with_suffix(".json").read_text())
    width = meta["width_W"]["standard"] if param == "standard" else None
    for tag, a, b in (("XX", ref["X"], ref["X"]), ("X2X", ref["X2"], ref["X"])):
        out = kernels(a, b, depth=depth, activation="relu", W_std=meta["W_std"],
                      b_std=meta["b_std"], parameterization=param, width=width)
        for name in ("nngp", "ntk"):
            expected = ref[f"{name}_{tag}_{param}_depth{depth}"]
            got = getattr(out, name).numpy()
            np.testing.assert_allclose(got, expected, rtol=REF_RTOL, atol=0,
                                       err_msg=f"{name} {tag} {param} depth {depth}")


# ------------------------------------------------------- kernel properties
@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_symmetric_psd(activation, param, rng):
    x = rng.normal(size=(30, 5))
    k = kernels(x, depth=3, activation=activation, W_std=1.4, b_std=0.3,
                parameterization=param, width=100)
    for m in k:
        assert torch.allclose(m, m.T, rtol=TOL["algebra"], atol=0)
        ev = torch.linalg.eigvalsh(m)
        assert ev.min() > -TOL["psd"] * ev.max()
    # the NTK dominates the NNGP of the output layer (it contains it as one term)
    assert torch.all(torch.diagonal(k.ntk) > torch.diagonal(k.nngp))


def test_relu_one_layer_closed_form(rng):
    """One hidden ReLU layer, no bias, W_std = 1: NNGP = |x||x'| J1(t) / (2 pi d),
    NTK = NNGP + (x.x'/d) (pi - t) / (2 pi) (Cho & Saul arc-cosine kernels)."""
    x = rng.normal(size=(6, 4))
    d = x.shape[1]
    k = kernels(x, depth=1, activation="relu", W_std=1.0, b_std=0.0)
    norm = np.linalg.norm(x, axis=1)
    c = np.clip(x @ x.T / np.outer(norm, norm), -1, 1)
    t = np.arccos(c)
    sin_t = np.sqrt(np.clip(1 - c * c, 0, None))  # well conditioned at t = 0
    nngp = np.outer(norm, norm) * (sin_t + (np.pi - t) * c) / (2 * np.pi * d)
    ntk = nngp + (x @ x.T / d) * (np.pi - t) / (2 * np.pi)
    np.testing.assert_allclose(k.nngp.numpy(), nngp, rtol=TOL["algebra"],
                               atol=TOL["algebra_atol"])
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(k.ntk.numpy()[off], ntk[off], rtol=TOL["algebra"],
                               atol=TOL["algebra_atol"])
    # on the diagonal arccos(1 - O(eps)) = O(sqrt(eps)): the ReLU NTK's cusp
    np.testing.assert_allclose(np.diag(k.ntk.numpy()), np.diag(ntk), rtol=CUSP_RTOL)


def test_erf_nngp_monte_carlo(rng):
    """The erf NNGP of one hidden layer against a Monte Carlo average over 2e5 units."""
    x = rng.normal(size=(3, 4))
    k = kernels(x, depth=1, activation="erf", W_std=1.2, b_std=0.4).nngp.numpy()
    gen = np.random.default_rng(5)
    n = 200_000
    w = gen.normal(size=(n, 4)) * 1.2 / 2.0
    b = gen.normal(size=n) * 0.4
    from scipy.special import erf

    h = erf(x @ w.T + b)  # (3, n)
    mc = 1.2**2 * h @ h.T / n + 0.4**2
    np.testing.assert_allclose(k, mc, atol=5e-3)


# ------------------------------------------------------------ bad input
def test_bad_input(rng):
    x = rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match="relu, erf"):
        kernels(x, depth=1, activation="tanh")
    with pytest.raises(ValueError, match="ntk, standard"):
        kernels(x, depth=1, parameterization="mup")
    for depth in (0, -1, 1.5):
        with pytest.raises(ValueError, match="depth"):
            kernels(x, depth=depth)
    with pytest.raises(ValueError, match="width"):
        kernels(x, depth=1, parameterization="standard")
    with pytest.raises(ValueError, match="width"):
        kernels(x, depth=1, parameterization="standard", width=0)
    with pytest.raises(ValueError, match="width"):
        AtomicMLP(3, [14], width=0)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kernels(bad, depth=1)
    with pytest.raises(ValueError, match="NaN"):
        NTKKernel().unit_value(torch.as_tensor(bad), torch.as_tensor(x))
    with pytest.raises(ValueError, match="feature sizes"):
        kernels(x, rng.normal(size=(2, 4)), depth=1)
    with pytest.raises(ValueError, match="descriptor sizes"):
        NTKKernel().unit_value(torch.as_tensor(x), torch.as_tensor(rng.normal(size=(2, 4))))
    with pytest.raises(ValueError, match="relu, erf"):
        NTKKernel(activation="gelu")


def test_structure_kernel_size_mismatch(si8_rattled):
    ra = SOAP(cutoff=4.0, n_max=3, l_max=2, species=[14]).compute([si8_rattled])
    rb = SOAP(cutoff=4.0, n_max=4, l_max=2, species=[14]).compute([si8_rattled])
    with pytest.raises(ValueError, match="descriptor sizes differ"):
        structure_kernel(ra, rb)


# ------------------------------------------- the ReLU cusp at coincident points
def test_relu_diagonal(rng):
    """diag_value is the exact diagonal; value(x, x) meets the cusp there (which is why
    the battery skips its "diag" check for the ReLU NTK)."""
    q = _unit(rng, 9, 6)
    k = NTKKernel(depth=2, activation="relu", W_std=1.3, b_std=0.2, delta=1.7)
    full = torch.diagonal(k.value(q, q)).detach().numpy()
    np.testing.assert_allclose(k.diag_value(q).detach().numpy(), full, rtol=CUSP_RTOL)
    # the same inputs one at a time: every diagonal entry equals diag_value's
    single = torch.stack([k.value(q[i:i + 1], q[i:i + 1])[0, 0] for i in range(9)])
    np.testing.assert_allclose(single.detach().numpy(), full, rtol=CUSP_RTOL)
    erf = NTKKernel(depth=2, activation="erf", W_std=1.3, b_std=0.2, delta=1.7)
    np.testing.assert_allclose(erf.diag_value(q).detach().numpy(),
                               torch.diagonal(erf.value(q, q)).detach().numpy(), rtol=1e-13)


def test_relu_kernel_not_differentiable_at_coincident_points(rng):
    q = _unit(rng, 3, 5)
    g = torch.as_tensor(rng.normal(size=(2, 3, 5)), dtype=DTYPE)
    k = NTKKernel(activation="relu", b_std=0.0)
    with pytest.raises(ValueError, match="not differentiable"):
        k.grad_contract(q, q, g, torch.tensor([0, 1]))


# -------------------------------------------------------- atomistic NTK
def test_structure_kernel_is_sum_over_atom_pairs(ethanol_rmd17, acetamide):
    desc = SOAP(cutoff=4.0, n_max=3, l_max=2, species=[1, 6, 7, 8])
    frames = [ethanol_rmd17, acetamide]
    kern = NTKKernel(depth=2, delta=1.3)
    got = structure_kernel(frames, frames, desc, kern)
    assert got.shape == (2, 2)
    for a in range(2):
        for b in range(2):
            qa = desc.compute([frames[a]]).values
            qb = desc.compute([frames[b]]).values
            za, zb = frames[a].numbers, frames[b].numbers
            total = 0.0
            for i in range(len(za)):
                for j in range(len(zb)):
                    if za[i] == zb[j]:
                        t = kernels(qa[i:i + 1] * np.sqrt(qa.shape[1]),
                                    qb[j:j + 1] * np.sqrt(qb.shape[1]), depth=2,
                                    activation="erf", W_std=1.0, b_std=0.1).ntk
                        total += 1.3**2 * float(t[0, 0])
            assert got[a, b].item() == pytest.approx(total, rel=1e-12)
    assert torch.linalg.eigvalsh(got).min() > 0


# ------------------------------------------------------ GAP with the NTK
@pytest.fixture(scope="module")
def si_small():
    from gapkit.data import load_bundled

    frames = load_bundled("Si_train.xyz")
    return frames[:6], frames[6:8]


def test_gap_with_ntk_kernel_fits_predicts_and_loads(si_small, tmp_path):
    train, test = si_small
    desc = SOAP(cutoff=4.5, n_max=3, l_max=3)
    gap = GAP([Term(desc, NTKKernel(depth=2, delta=0.5), n_sparse=40)], progress=False)
    gap.fit(train)
    p_train = gap.predict(train, return_variance=False, virial=False)
    e_ref = np.array([a.get_potential_energy() for a in train])
    f_ref = np.concatenate([a.get_forces() for a in train])
    n = np.array([len(a) for a in train])
    # fitted: training errors well below the spread of the labels (forces dominate the fit)
    assert np.sqrt(np.mean(((p_train.energy - e_ref) / n) ** 2)) < 0.25 * np.std(e_ref / n)
    assert np.sqrt(np.mean((p_train.forces - f_ref) ** 2)) < 0.7 * np.std(f_ref)
    # predicted forces are minus the gradient of the predicted energy: every component
    # to 1e-5 eV/Å; the energy's round-off (|alpha| k sums) limits the differences to
    # ~5e-6 eV/Å (measured), which Richardson extrapolation does not improve
    check_forces(gap, test[0], rtol=0.0, atol=1e-5, virial=False)
    path = gap.save(tmp_path / "ntk.gapkit")
    loaded = GAP.load(path)
    assert isinstance(loaded.terms_[0].kernel, NTKKernel)
    q = loaded.predict(test, return_variance=False, virial=False)
    p = gap.predict(test, return_variance=False, virial=False)
    np.testing.assert_array_equal(q.energy, p.energy)
    np.testing.assert_array_equal(q.forces, p.forces)


# --------------------------------------------------------- finite networks
def test_empirical_ntk_converges_to_analytic(rng):
    """Relative Frobenius distance decreases with width (4 seeds each), at a rate
    near the 1/sqrt(width) of the theory."""
    q = _unit(rng, 8, 6)
    res = ntk_width_convergence(q, widths=(32, 128, 512), seeds=4)
    assert np.all(np.diff(res.distance_mean) < 0)
    assert -0.8 < res.slope < -0.3
    assert res.distance_mean[-1] < 0.1


def test_empirical_ntk_matches_jacobian_by_hand(rng):
    q = _unit(rng, 3, 4)
    m = AtomicMLP(4, [1], width=7, depth=2, seed=3)
    emp = empirical_ntk(m, q)
    jac = []
    for i in range(3):
        m.zero_grad()
        m(q[i:i + 1], [1]).sum().backward()
        jac.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    jac = torch.stack(jac)
    torch.testing.assert_close(emp, jac @ jac.T, rtol=1e-12, atol=1e-12)


def test_network_forces_are_minus_energy_gradient(si8_rattled):
    desc = SOAP(cutoff=4.0, n_max=3, l_max=2, species=[14])
    res = desc.compute([si8_rattled], gradients=True)
    m = AtomicMLP(res.n_features, [14], width=16, depth=2, seed=1)

    def energy_forces(atoms):
        energy, forces = network_energies_forces(m, desc.compute([atoms], gradients=True))
        return float(energy.detach()[0]), forces.detach().numpy(), None

    # every component to 1e-9 eV/Å (extrapolated differences: measured 1e-11)
    check_forces(energy_forces, si8_rattled, rtol=0.0, atol=1e-9, virial=False,
                 extrapolate=True)


def test_training_reduces_energy_and_force_loss(si8_rattled):
    desc = SOAP(cutoff=4.0, n_max=3, l_max=2, species=[14])
    frames = []
    for s in range(4):
        a = si8_rattled.copy()
        a.rattle(0.05, seed=10 + s)
        frames.append(a)
    res = desc.compute(frames, gradients=True)
    # labels: a smooth target (a fixed random network) so that they are learnable
    teacher = AtomicMLP(res.n_features, [14], width=8, depth=1, seed=7)
    e, f = network_energies_forces(teacher, res)
    student = AtomicMLP(res.n_features, [14], width=32, depth=2, seed=0, centered=True)
    e0, _ = network_energies_forces(student, res, forces=False)
    assert torch.all(e0.abs() < 1e-12)  # centred: zero at initialisation
    hist = train_network(student, res, e.detach(), f.detach(), steps=30, lr=1e-3,
                         force_weight=1.0)
    assert hist[-1] < 0.2 * hist[0]


def test_gradient_descent_prediction_limits(rng):
    x = _unit(rng, 6, 4)
    k = NTKKernel().unit_value(x, x)
    ks = NTKKernel().unit_value(_unit(rng, 3, 4), x)
    y = torch.as_tensor(rng.normal(size=6), dtype=DTYPE)
    lr = float(6 / torch.linalg.eigvalsh(k).max())
    test_inf, train_inf = ntk_gradient_descent_prediction(k, ks, y, lr=lr, steps=10**7)
    torch.testing.assert_close(train_inf, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(test_inf, ks @ torch.linalg.solve(k, y), rtol=1e-5, atol=1e-6)
    # one step of GD from zero: f = lr/N Θ y
    test1, _ = ntk_gradient_descent_prediction(k, ks, y, lr=lr, steps=1)
    torch.testing.assert_close(test1, lr / 6 * ks @ y, rtol=1e-10, atol=1e-12)


def test_kernel_alignment(rng):
    x = rng.normal(size=(10, 3))
    k = x @ x.T
    assert kernel_alignment(k, 3.0 * k) == pytest.approx(1.0, rel=1e-12)
    assert kernel_alignment(k, k + 5.0) == pytest.approx(1.0, rel=1e-12)  # centred
    assert kernel_alignment(k, k + 5.0, centered=False) < 1.0 - 1e-3
    with pytest.raises(ValueError, match="square"):
        kernel_alignment(k, k[:5])


# ------------------------------------------------------- kernel by name, batched variances
def test_make_kernel_and_term_by_name():
    from gapkit.kernels import SOAPKernel, TwoBodyKernel, make_kernel

    k = make_kernel("ntk", depth=3, delta=0.5)
    assert isinstance(k, NTKKernel) and k.depth == 3
    assert float(k.delta.detach()) == pytest.approx(0.5)
    assert isinstance(make_kernel("SOAP", zeta=2), SOAPKernel)
    assert isinstance(make_kernel("two_body"), TwoBodyKernel)
    with pytest.raises(ValueError, match="supported: soap, ntk, twobody"):
        make_kernel("rbf")
    desc = SOAP(cutoff=4.0, n_max=3, l_max=2)
    assert isinstance(Term(desc, "ntk").kernel, NTKKernel)
    assert isinstance(Term(desc, kernel="soap").kernel, SOAPKernel)
    with pytest.raises(ValueError, match="unknown kernel"):
        Term(desc, "gaussian")


def test_gap_fit_with_kernel_name(si8_rattled):
    frames = []
    for s in range(3):
        a = si8_rattled.copy()
        a.rattle(0.05, seed=20 + s)
        a.calc = None
        a.info["energy"] = -5.0 * len(a) + 0.1 * s
        a.arrays["forces"] = np.zeros((len(a), 3))
        frames.append(a)
    gap = GAP([Term(SOAP(cutoff=4.0, n_max=3, l_max=2), "ntk", n_sparse=10)], progress=False)
    gap.fit(frames)
    assert isinstance(gap.terms_[0].kernel, NTKKernel)
    assert np.all(np.isfinite(gap.predict(frames[:1], virial=False).forces_variance))


@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_batched_force_prior_variance_matches_generic(activation, ethanol_rmd17, si8_rattled):
    from gapkit.kernels import DescriptorKernel

    kern = NTKKernel(depth=2, activation=activation, delta=0.7)
    for atoms in (ethanol_rmd17, si8_rattled):
        res = SOAP(cutoff=4.0, n_max=3, l_max=2).compute([atoms], gradients=True)
        args = (res.torch("values"), res.torch("gradients"),
                torch.as_tensor(res.gradient_centre), res.gradient_atom_global,
                torch.as_tensor(res.centre_types), len(atoms))
        if activation == "relu":
            # the entry of a centre with itself has coincident descriptors: not differentiable
            with pytest.raises(ValueError, match="not finite"):
                kern.force_prior_variance(*args)
            continue
        got = kern.force_prior_variance(*args)
        ref = DescriptorKernel.force_prior_variance(kern, *args)
        assert got.shape == (len(atoms), 3)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
        assert torch.all(got > 0)


def test_ntk_plots(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gapkit import plot
    from gapkit.ntk import ModelComparison, WidthConvergence

    widths = np.array([32, 128, 512])
    res = WidthConvergence(widths, 0.8 * widths**-0.5, 0.1 * widths**-0.5, -0.5)
    fig = plot.ntk_width_convergence(res, title="Si")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "width" in ax.get_xlabel() and "Theta" in ax.get_ylabel()
    assert any("slope -0.50" in t.get_text() for t in ax.get_legend().get_texts())
    fig.savefig(tmp_path / "w.png")
    cmp = ModelComparison(0.99, 0.999, {"GAP(SOAP)": 0.01, "GAP(NTK)": 0.012,
                                        "network(width=64)": 0.05},
                          {"GAP(SOAP)": 0.2, "GAP(NTK)": 0.25, "network(width=64)": 1.0},
                          {}, {}, 0.1)
    fig2 = plot.kernel_comparison(cmp, title="ethanol")
    assert "meV/atom" in fig2.axes[0].get_ylabel() and "eV/Å" in fig2.axes[1].get_ylabel()
    fig2.savefig(tmp_path / "c.png")
    plt.close("all")
    with pytest.raises(ValueError, match="two widths"):
        plot.ntk_width_convergence(WidthConvergence(widths[:1], np.ones(1), np.zeros(1), 0.0))


def test_compare_models_trains_networks_on_forces(si8_rattled):
    from ase.calculators.singlepoint import SinglePointCalculator

    from gapkit.ntk import compare_models

    frames = []
    for s in range(5):
        a = si8_rattled.copy()
        a.rattle(0.05, seed=40 + s)
        a.calc = SinglePointCalculator(a, energy=-5.0 * len(a) + 0.05 * s,
                                       forces=0.1 * np.random.default_rng(s).normal(size=(8, 3)))
        frames.append(a)
    desc = SOAP(cutoff=4.0, n_max=3, l_max=2, species=[14])
    c = compare_models(frames[:4], frames[4:], desc, n_sparse=8, widths=(8,), steps=25)
    assert c.force_weight == pytest.approx(3 * 64 * (0.001 / 0.05) ** 2)
    assert set(c.energy_rmse) == {"GAP(SOAP)", "GAP(NTK)", "network(width=8)"}
    assert all(np.isfinite(v) for v in c.force_rmse.values())
    assert c.network_lr["network(width=8)"] > 0
    with pytest.raises(ValueError, match="force_weight"):
        compare_models(frames[:4], frames[4:], desc, n_sparse=8, widths=(8,), steps=2,
                       force_weight=-1.0)
