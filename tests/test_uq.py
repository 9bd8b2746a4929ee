"""Tests of :mod:`gapkit.uq`: calibration metrics, recalibration, committees and LOO.

* Calibration metrics on synthetic Gaussian errors whose calibration is known: a
  calibrated sigma gives a miscalibration area ~ 0, z_std ~ 1 and ENCE ~ 0; a sigma too
  small by 2x is detected (area, z_rms ~ 2) and fixed by the scale and isotonic
  recalibrations, which lower the held-out Gaussian NLL.
* Closed-form leave-one-out residuals and leverages equal brute-force refits (the same
  sparse points, e0 and noise, one frame or one observation left out) to 1e-6 relative;
  a frame whose energy was shifted ranks first among suspicious frames.
* Recalibration is saved and loaded with the model; committees give a Prediction whose
  spread the same report can assess. Bad input fails with a clear message.

Units: eV, Å, eV/Å.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, uq
from gapkit.gp.design import design_rows
from gapkit.gp.sparse import IncrementalQR
from gapkit.testing import label

LOO_RTOL = 1e-6  # closed form vs refit, relative to the largest residual
N_SYNTH = 20000


# --------------------------------------------------------------- synthetic data
def _synthetic(seed: int, n: int = N_SYNTH, scale: float = 1.0):
    """Errors e ~ N(0, sigma^2) with log-uniform sigma; returns (e, predicted var)
    where the predicted variance is ``scale^2 sigma^2`` (scale 1: calibrated)."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(np.log(0.01), np.log(0.3), n))
    return rng.normal(scale=sigma), (scale * sigma) ** 2


def test_calibrated_gaussians_score_as_calibrated():
    e, v = _synthetic(0)
    res = uq.calibration_metrics(e, v, quantity="forces", unit="eV/Å")
    assert res.miscalibration_area < 0.01, res
    assert abs(res.z_mean) < 0.03 and abs(res.z_std - 1) < 0.02, res
    assert res.ence < 0.06, res
    assert res.spearman > 0.3, res  # sigma spans 30x: it ranks the errors
    assert np.all(np.abs(res.coverage_observed - res.coverage_expected) < 0.02)


def test_overconfident_sigma_is_detected_and_recalibrated():
    """sigma too small by 2x: z_rms ~ 2, area large; both recalibrations fix it and lower
    the held-out NLL (fitted on one draw, judged on another)."""
    e_val, v_val = _synthetic(1, scale=0.5)
    e_test, v_test = _synthetic(2, scale=0.5)
    raw = uq.calibration_metrics(e_test, v_test)
    assert abs(raw.z_rms - 2) < 0.05 and raw.miscalibration_area > 0.2, raw
    assert raw.ence > 0.8, raw
    for method in ("scale", "isotonic"):
        spec = uq.recalibration._fit_one(e_val, v_val, method, 20)
        if method == "scale":
            assert spec["scale"] == pytest.approx(4.0, rel=0.05)
        v_new = uq.recalibration._apply_one(spec, v_test)
        new = uq.calibration_metrics(e_test, v_new)
        assert new.miscalibration_area < 0.02, (method, new)
        assert new.nll < raw.nll - 0.3, (method, raw.nll, new.nll)
        assert abs(new.z_rms - 1) < 0.05, (method, new)


def test_isotonic_fixes_a_nonlinear_miscalibration_that_a_scale_cannot():
    """True sigma = sqrt(predicted sigma / 10) (too small at small sigma, too large at
    large sigma): a single scale leaves the reliability curve bent; isotonic straightens
    it (lower ENCE and NLL on held-out data)."""
    def draw(seed):
        rng = np.random.default_rng(seed)
        s_pred = np.exp(rng.uniform(np.log(0.01), np.log(1.0), N_SYNTH))
        return rng.normal(scale=np.sqrt(s_pred / 10)), s_pred**2

    e_val, v_val = draw(3)
    e_test, v_test = draw(4)
    out = {}
    for method in ("scale", "isotonic"):
        spec = uq.recalibration._fit_one(e_val, v_val, method, 20)
        out[method] = uq.calibration_metrics(e_test, uq.recalibration._apply_one(spec, v_test))
    assert out["isotonic"].ence < 0.1 < out["scale"].ence, out
    assert out["isotonic"].nll < out["scale"].nll - 0.05, out


def test_isotonic_stays_finite_with_symmetry_zeros_and_heavy_tails():
    """Validation set whose smallest variances have exactly zero errors (force components
    that vanish by symmetry) and Student-t (df 2) errors elsewhere; the held-out set has
    some nonzero errors at those smallest variances. Unprotected, the isotonic map sends
    them to ~0 variance (|z| in the 100s, NLL in the thousands); the default floor (0.1 of
    the scale-recalibrated variance) keeps the held-out NLL close to the scale
    recalibration's, and the z-scores moderate."""
    def draw(seed, n_zero_err):
        rng = np.random.default_rng(seed)
        n = 8000
        v = np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), n))
        e = 2 * np.sqrt(v) * rng.standard_t(2, size=n)  # heavy tails, sigma too small
        v[:2000] = 1e-4  # the noise floor, where symmetry zeroes the errors
        e[:2000] = 0.0
        e[:n_zero_err] = 2e-2 * rng.standard_t(2, size=n_zero_err)
        return e, v

    e_val, v_val = draw(11, 0)
    e_test, v_test = draw(12, 200)
    out = {}
    for name, method, floor in (("scale", "scale", 0.1), ("isotonic", "isotonic", 0.1),
                                ("unprotected", "isotonic", 0.0)):
        spec = uq.recalibration._fit_one(e_val, v_val, method, 20, floor=floor)
        v_new = uq.recalibration._apply_one(spec, v_test)
        assert np.all(np.isfinite(v_new) & (v_new > 0))
        out[name] = (uq.calibration_metrics(e_test, v_new),
                     float(np.abs(e_test / np.sqrt(v_new)).max()))
    iso, iso_zmax = out["isotonic"]
    bad, bad_zmax = out["unprotected"]
    assert bad.nll > 100 and bad_zmax > 100, bad  # the failure being guarded against
    assert np.isfinite(iso.nll) and iso.nll < out["scale"][0].nll + 0.5, (iso, out["scale"])
    assert iso_zmax < 100, iso_zmax
    spec = uq.recalibration._fit_one(e_val, v_val, "isotonic", 20)
    assert spec["n_floored"] >= 1 and min(spec["counts"]) >= 20
    assert np.all(np.diff(spec["log_variance"]) > 0)  # tied variances share one bin
    assert np.all(np.diff(spec["log_calibrated"]) >= 0)


def test_pav_matches_brute_force_monotone_fit():
    rng = np.random.default_rng(5)
    x = rng.uniform(size=40)
    y = x + rng.normal(scale=0.3, size=40)
    fit = uq.isotonic_fit(x, y)
    ys = y[np.argsort(x)]
    assert np.all(np.diff(fit) >= -1e-15)
    # PAV is the least-squares monotone fit: no monotone perturbation does better
    base = ((fit - ys) ** 2).sum()
    for _ in range(200):
        other = np.maximum.accumulate(fit + rng.normal(scale=0.05, size=fit.size))
        assert ((other - ys) ** 2).sum() >= base - 1e-12
    assert fit.mean() == pytest.approx(ys.mean())  # blocks keep the mean


def test_random_sigma_has_no_rank_correlation():
    rng = np.random.default_rng(6)
    e = rng.normal(scale=0.1, size=N_SYNTH)
    v = np.exp(rng.uniform(-6, -2, N_SYNTH))
    assert abs(uq.spearman(e, v)) < 0.03


@pytest.mark.parametrize("bad, match", [
    (None, "no variances"),
    (np.zeros(10), "zero, negative"),
    (-np.ones(10), "zero, negative"),
    (np.full(10, np.nan), "zero, negative"),
    (np.ones(9), r"\(10,\).*\(9,\)"),
])
def test_bad_variances_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        uq.calibration_metrics(np.ones(10), bad)
    with pytest.raises(ValueError, match=match):
        uq.gaussian_nll(np.ones(10), bad)


# --------------------------------------------------------------- a small GAP
def _cells(n: int, seed: int, shift: dict | None = None, *, strain: float = 0.02,
           rattle: float = 0.1):
    """``n`` EMT-labelled 4-atom fcc Cu cells, strained (standard deviation ``strain``,
    default ±2 %) and rattled (``rattle`` Å)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        eps = rng.normal(scale=strain, size=(3, 3))
        atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        atoms = label(atoms, EMT())
        if shift and k in shift:
            atoms.info["energy"] += shift[k]
        out.append(atoms)
    return out


def _model(n_sparse=15, **kw):
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)
    return GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=n_sparse)],
               noise=NoiseModel(energy=0.002, forces=0.05, virial=0.02), progress=False, **kw)


@pytest.fixture(scope="module")
def cu():
    train, val, test = _cells(10, 0), _cells(8, 1), _cells(6, 2)
    return train, val, test, _model().fit(train)


def _refit_without(model, frames, leave_out):
    """Brute force: the DTC solve (same sparse points, e0, noise) on every observation
    except those in ``leave_out`` (a boolean mask over the model's observation rows);
    returns alpha and all rows (design matrix, in observation order)."""
    data = model.training_data(frames)
    frames, obs = data.frames, data.observations
    rows = torch.cat([design_rows(model.terms_, model.sparse_sets_, [a], _frame_obs(obs, k),
                                  set(data.gradients)) for k, a in enumerate(frames)])
    keep = ~leave_out
    qr = IncrementalQR(model.U_)
    qr.add(rows[torch.as_tensor(keep)], torch.as_tensor(obs.y[keep]),
           torch.as_tensor(obs.sigma[keep]))
    r, b, _ = qr.finish()
    return torch.linalg.solve_triangular(r, b[:, None], upper=True)[:, 0], rows, obs


def _frame_obs(obs, k):
    sub = obs.select(np.nonzero(obs.frame == k)[0])
    return type(sub)(sub.frame - k, sub.kind, sub.atom, sub.component, sub.y, sub.sigma)


def test_loo_equals_brute_force_refits(cu):
    train, _, _, model = cu
    loo = uq.leave_one_out(model, train)
    obs_y = loo.y
    alpha_all, rows, obs = _refit_without(model, train, np.zeros(obs_y.size, bool))
    assert torch.allclose(alpha_all, model.alpha_, rtol=1e-8, atol=1e-10)
    # residuals of the full fit
    np.testing.assert_allclose(loo.residual, obs.y - (rows @ model.alpha_).numpy(),
                               atol=1e-10 * np.abs(obs_y).max())
    # leverages: dense hat matrix H = B (U^T U + B^T B)^-1 B^T = Q_B Q_B^T from the thin
    # QR of [B; U] (stable, unlike the normal equations)
    b = (rows / torch.as_tensor(obs.sigma)[:, None]).numpy()
    q, _ = np.linalg.qr(np.vstack([b, model.U_.numpy()]))
    h = (q[: b.shape[0]] ** 2).sum(1)
    np.testing.assert_allclose(loo.leverage, h, rtol=1e-8, atol=1e-12)
    assert np.all((h > 0) & (h < 1))
    # whole frames left out
    for f in (0, 4, 9):
        mask = obs.frame == f
        alpha, _, _ = _refit_without(model, train, mask)
        brute = obs.y[mask] - (rows[torch.as_tensor(mask)] @ alpha).numpy()
        err = np.abs(loo.frame_loo_residual[mask] - brute).max() / np.abs(brute).max()
        assert err < LOO_RTOL, (f, err)
    # single observations left out: an energy, a force component
    for n in (int(np.nonzero(obs.kind == 0)[0][3]), int(np.nonzero(obs.kind == 1)[0][17])):
        mask = np.zeros(obs.n_rows, bool)
        mask[n] = True
        alpha, _, _ = _refit_without(model, train, mask)
        brute = obs.y[n] - float(rows[n] @ alpha)
        assert abs(loo.loo_residual[n] - brute) < LOO_RTOL * abs(brute), (n, brute)


def test_corrupted_energy_ranks_first():
    frames = _cells(10, 0, shift={6: 0.2})  # +50 meV/atom on a 4-atom frame
    model = _model().fit(frames)
    loo = uq.leave_one_out(model, frames)
    assert loo.ranking[0] == 6, loo.suspicious(3)
    assert abs(loo.energy_loo_z[6]) > 2 * np.nanmax(np.abs(np.delete(loo.energy_loo_z, 6)))
    # the clean fit has no such outlier
    clean = uq.leave_one_out(_model().fit(_cells(10, 0)), _cells(10, 0))
    # frame_score is a standard-normal equivalent: the shifted frame is far in the tail,
    # no clean frame is (10 frames x 2 kinds; measured 6.9 vs at most 3.4)
    assert loo.frame_score[6] > 5.0, loo.suspicious(3)
    assert clean.frame_score.max() < 4.0, clean.suspicious(3)
    assert loo.frame_misfit[6, 0] > 10 * loo.frame_misfit[6, 1]  # the energy is at fault


# --------------------------------------------------------------- reports on a GAP
def test_report_separates_aleatoric_and_epistemic(cu):
    _, _, test, model = cu
    pred = model.predict(test)
    rep = uq.calibration_report(pred, test, model=model)
    assert set(rep) == {"energy_per_atom", "forces"}
    f = rep["forces"]
    assert f.unit == "eV/Å" and f.n == 3 * sum(len(a) for a in test)
    assert f.aleatoric_rms == pytest.approx(0.05)
    epi = np.sqrt(np.mean(pred.forces_variance))
    assert f.epistemic_rms == pytest.approx(epi)
    assert f.sharpness == pytest.approx(np.sqrt(epi**2 + 0.05**2))
    assert rep["energy_per_atom"].aleatoric_rms == pytest.approx(0.002 / np.sqrt(4))  # per atom
    latent = uq.calibration_report(pred, test, include_noise=False)
    assert latent["forces"].sharpness == pytest.approx(epi)
    with pytest.raises(ValueError, match="needs model"):
        uq.calibration_report(pred, test)
    with pytest.raises(ValueError, match="no variances"):
        uq.calibration_report(model.predict(test, return_variance=False), test, model=model)
    with pytest.raises(ValueError, match="6 frames but 5"):
        uq.calibration_report(pred, test[:5], model=model)


def test_recalibration_lowers_heldout_nll_and_is_saved(cu, tmp_path):
    train, val, test, model = cu
    model = _model().fit(train)
    # an overconfident noise model makes the predictive sigma too small
    model.noise_ = NoiseModel(energy=0.0005, forces=0.01, virial=0.02)  # the fit's noise
    p_val, p_test = model.predict(val), model.predict(test)
    raw = uq.calibration_report(p_test, test, model=model)
    for method in ("scale", "isotonic"):
        spec = uq.fit_recalibration(model, p_val, val, method=method)
        new = uq.calibration_report(uq.apply_recalibration(p_test, model), test, model=model)
        assert new["forces"].nll < raw["forces"].nll, (method, raw, new)
        assert new["forces"].miscalibration_area < raw["forces"].miscalibration_area
        assert new["forces"].variance_source.endswith("+noise")
        assert np.isnan(new["forces"].aleatoric_rms)
    assert spec["forces"]["method"] == "isotonic"
    assert spec["forces"]["variance_form"] == "dtc"  # predict's default: exact
    with pytest.warns(UserWarning, match="fitted on 'dtc' variances"):
        uq.apply_recalibration(model.predict(test, forces_variance="projected"), model)
    path = model.save(tmp_path / "m.gap")
    back = GAP.load(path)
    assert back.recalibration_ == model.recalibration_
    a = uq.apply_recalibration(model.predict(test), model)
    b = uq.apply_recalibration(back.predict(test), back)
    np.testing.assert_array_equal(a.forces_variance, b.forces_variance)
    back.fit(train)  # a refit drops the stale recalibration
    with pytest.raises(ValueError, match="no recalibration"):
        uq.apply_recalibration(back.predict(test), back)


def test_committee_spread_is_a_prediction(cu):
    train, _, test, model = cu
    members = uq.fit_committee(model, train, n_models=3, fraction=0.7, seed=1)
    assert len({float(m.alpha_.abs().sum()) for m in members}) == 3  # different members
    pred = uq.committee_predict(members, test)
    assert pred.forces.shape == (sum(len(a) for a in test), 3)
    assert np.all(pred.forces_variance > 0) and np.all(pred.energy_variance > 0)
    mean = np.mean([m.predict(test, return_variance=False).forces for m in members], axis=0)
    np.testing.assert_allclose(pred.forces, mean)
    rep = uq.calibration_report(pred, test, model=model)
    assert rep["forces"].variance_source == "committee+noise"
    with pytest.raises(ValueError, match="at least 2"):
        uq.fit_committee(model, train, n_models=1)


# --------------------------------------------------------------- figures
def test_calibration_figures_have_units(cu):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gapkit import plot

    _, _, test, model = cu
    rep = uq.calibration_report(model.predict(test), test, model=model)
    fig = plot.reliability({"GP": rep["forces"]})
    ax = fig.axes[0]
    assert "(eV/Å)" in ax.get_xlabel() and "(eV/Å)" in ax.get_ylabel()
    fig2 = plot.coverage(rep)
    assert len(fig2.axes[0].lines) == 3  # energy, forces, the diagonal
    e, v = _synthetic(7, n=500)
    fig3 = plot.z_histogram(uq.z_scores(e, v), label="forces")
    assert fig3.axes[0].get_xlabel().startswith("z = error / σ")
    for f in (fig, fig2, fig3):
        plt.close(f)


# -- label consistency ------------------------------------------------------------------
def _strained_cells(n, seed):
    """EMT Cu cells with strains large enough to give every virial component a spread,
    alternately of config_type "strained" and "bulk"."""
    out = _cells(n, seed, strain=0.03, rattle=0.05)
    for k, atoms in enumerate(out):
        atoms.info["config_type"] = "bulk" if k % 2 else "strained"
    return out


def test_label_consistency_finds_swapped_virial_components_and_flipped_forces():
    frames = _strained_cells(48, 3)
    model = _model()
    clean = uq.label_consistency(model, frames)
    assert clean.ok, clean.summary()
    bad = []
    for atoms in frames:
        a = atoms.copy()
        if a.info["config_type"] == "strained":  # mlearn's xy, yz, zx order read as Voigt
            w = a.info["virial"].copy()
            w[1, 2] = w[2, 1] = atoms.info["virial"][0, 2]
            w[0, 2] = w[2, 0] = atoms.info["virial"][1, 2]
            a.info["virial"] = w
        bad.append(a)
    with pytest.warns(UserWarning, match="virial labels disagree"):
        report = uq.label_consistency(model, bad)
    flagged = {(row["config_type"], row["component"], row["flag"]) for row in report.flagged}
    assert flagged == {("strained", "yz", "swapped with xz"), ("strained", "xz", "swapped with yz")}
    flipped = [a.copy() for a in frames]
    for a in flipped[::2]:
        a.arrays["forces"] = -a.arrays["forces"]
    report = uq.label_consistency(model, flipped, kind="forces", warn=False)
    assert {row["flag"] for row in report.flagged} == {"sign flipped"}
    assert {row["config_type"] for row in report.flagged} == {"strained"}


@pytest.mark.slow
def test_bundled_si_virials_are_consistent_and_the_old_swap_is_found():
    """The bundled Zuo Si virials (corrected 2026-12-03) agree with a model fitted on energies
    and forces; re-swapping yz and xz on the AIMD-NVT frames, as the old files had them, is
    found there and nowhere else."""
    from gapkit.data import load_bundled

    frames = load_bundled("Si_train.xyz")
    model = GAP([Term(SOAP(cutoff=5.0, cutoff_width=1.0, n_max=4, l_max=3), SOAPKernel(zeta=4),
                      n_sparse=200)], noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05),
                progress=False)
    assert uq.label_consistency(model, frames).ok
    for atoms in frames:
        if atoms.info["config_type"] == "AIMD-NVT":
            w = atoms.info["virial"].copy()
            w[[1, 2, 0, 2], [2, 1, 2, 0]] = w[[0, 2, 1, 2], [2, 0, 2, 1]]
            atoms.info["virial"] = w
    report = uq.label_consistency(model, frames, warn=False)
    assert {(r["config_type"], r["component"]) for r in report.flagged} == {
        ("AIMD-NVT", "yz"), ("AIMD-NVT", "xz")}
