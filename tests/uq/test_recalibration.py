"""gapkit.uq.recalibration: a sigma too small by 2x is detected and fixed by the scale and
isotonic maps, which lower the held-out NLL; the map is saved and loaded with the model."""

from __future__ import annotations

import numpy as np
import pytest
from uq_cases import N_SYNTH, _cells, _model, _synthetic, cu_case

from gapkit import GAP, NoiseModel, uq


@pytest.fixture(scope="module")
def cu():
    """Train, validation and test EMT Cu cells and a small GAP fitted on the first."""
    return cu_case()


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


def test_apply_recalibration_adds_each_frames_own_noise():
    """The map was fitted on latent + each frame's noise variance (its config_type's sigma);
    it is applied to the same sum (before 0.2, the default sigma was added to every frame,
    another variance than the one the map was fitted on)."""
    from gapkit import NoiseModel

    frames = _cells(8, 4)
    for k, a in enumerate(frames):
        a.info["config_type"] = "loose" if k % 2 else "tight"
    noise = NoiseModel(energy=0.002, forces=0.05, virial=0.02,
                       config_type={"loose": {"forces": 0.4}})
    model = _model().set_params(noise=noise).fit(frames)
    pred = model.predict(frames)
    spec = {"forces": {"method": "scale", "scale": 2.0}, "include_noise": True}
    out = uq.apply_recalibration(pred, model, spec, frames=frames)
    for k in range(len(frames)):
        s = 0.4 if k % 2 else 0.05
        rows = slice(pred.atom_offsets[k], pred.atom_offsets[k + 1])
        np.testing.assert_allclose(out.forces_variance[rows],
                                   2.0 * (pred.forces_variance[rows] + s**2), rtol=1e-12)
    with pytest.warns(UserWarning, match="pass frames="):
        uq.apply_recalibration(pred, model, spec)
