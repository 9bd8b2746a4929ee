"""gapkit.gp.predictive: the predictive variance calibrated on held-out folds.

The out-of-fold residuals and latent variances are those of the fits without each fold
(brute force: the streaming QR on the other folds' rows, then ``GAP.predict``); the form
recovers a known variance law; on data drawn from the GP prior the calibrated sigma covers
new labels at 50/90/99 % within binomial error; components fixed by symmetry get sigma 0;
the calibration is reproducible, saved, loaded and checked.
"""

from __future__ import annotations

import copy
import json
import zipfile

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import make_strained_cells
from cv_cases import fold_refit, fold_setup
from scipy.stats import norm

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, uq
from gapkit.gp.cv import calibrate_predictive, calibration_frames, held_out_variances
from gapkit.gp.posterior import projected_variance
from gapkit.gp.predictive import (
    MIN_ROWS,
    apply_predictive,
    fit_predictive,
    miscalibration_area_abs,
    predictive_variance,
)

SOAP_ARGS = dict(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)


def _cu(n, seed, *, virial=True):
    frames = make_strained_cells(bulk("Cu", "fcc", a=3.61, cubic=True), n, seed=seed,
                                 strain=0.02, rattle=0.1, calc=EMT, virial=virial)
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "bulk" if k % 3 else "strained"
    return frames


def _gap(n_sparse=12, **kw):
    return GAP([Term(SOAP(**SOAP_ARGS), SOAPKernel(zeta=4), n_sparse=n_sparse)],
               progress=False, **kw)


@pytest.fixture(scope="module")
def fitted():
    frames = _cu(15, 0)
    return frames, _gap(noise=NoiseModel(energy=0.001, forces=0.05, virial=0.01)).fit(frames)


@pytest.mark.parametrize("low_rank_rows", [None, 10**6])  # Grams, or rows in their place
def test_out_of_fold_quantities_equal_brute_force_fits(fitted, low_rank_rows):
    frames, model = fitted
    data, obs, folds, grams, rows = fold_setup(model, frames, 3, low_rank_rows)
    factors = [2.0, 1.0, 0.5]
    held = held_out_variances(model.terms_, model.sparse_sets_, frames, obs, data.gradients,
                              folds, grams, factors, batch_atoms=64)
    sigma = obs.sigma * np.asarray(factors)[obs.kind]
    expected = {kind: [np.zeros(np.sum(obs.kind == k)) for _ in range(2)]
                for k, kind in enumerate(("energy", "forces", "virial"))}
    where = {k: np.cumsum(obs.kind == k) - 1 for k in range(3)}  # row -> index in its kind
    # the floor of a prediction's rounding: the design rows of a frame differ by an ulp
    # with the block they are computed in (the pass reads each fold's frames apart), and
    # the prediction sums M terms |k_m alpha_m| of up to 1e6 here (alpha ~1e5): n u sum|.|
    floor = np.zeros(obs.kind.size)
    for f in range(3):
        r_f, alpha_f = fold_refit(model, rows, obs, folds, f, sigma)
        mine = np.nonzero(folds[obs.frame] == f)[0]
        floor[mine] = (2 * rows.shape[1] * np.finfo(float).eps
                       * (rows[torch.as_tensor(mine)] * alpha_f).abs().sum(1).numpy())
        without = copy.copy(model)
        without.R_, without.alpha_ = r_f, alpha_f
        idx = np.nonzero(folds == f)[0]
        pred = without.predict([frames[i] for i in idx], calibrated=False)
        offsets = np.concatenate([[0], np.cumsum([len(frames[i]) for i in idx])])
        for j, i in enumerate(idx):
            e = np.nonzero((obs.frame == i) & (obs.kind == 0))[0]
            expected["energy"][0][where[0][e]] = frames[i].info["energy"] - pred.energy[j]
            expected["energy"][1][where[0][e]] = pred.energy_latent_variance[j]
            fr = np.nonzero((obs.frame == i) & (obs.kind == 1))[0]
            atoms = offsets[j] + obs.atom[fr]
            expected["forces"][0][where[1][fr]] = (frames[i].arrays["forces"][obs.atom[fr],
                                                                               obs.component[fr]]
                                                   - pred.forces[atoms, obs.component[fr]])
            expected["forces"][1][where[1][fr]] = pred.forces_latent_variance[atoms,
                                                                              obs.component[fr]]
        vir = np.nonzero((folds[obs.frame] == f) & (obs.kind == 2))[0]
        vrows = rows[torch.as_tensor(vir)]
        expected["virial"][0][where[2][vir]] = obs.y[vir] - (vrows @ without.alpha_).numpy()
        expected["virial"][1][where[2][vir]] = projected_variance(vrows, r_f)
    for k, (kind, (res, lat)) in enumerate(expected.items()):
        scale = np.abs(res).max()
        assert np.all(np.abs(held[kind][0] - res) <= 1e-8 * scale + floor[obs.kind == k])
        np.testing.assert_allclose(held[kind][1], lat, rtol=1e-6, atol=1e-10 * lat.max())
    assert np.all(held["forces"][2] > 0) and np.all(held["energy"][2] > 0)


def test_the_form_recovers_a_known_variance_law():
    """Residuals drawn with variance 2 v + 0.5 (p / med p)^0.5: the chosen form covers
    fresh draws of the same law within binomial error at 50, 90 and 99 %."""
    rng = np.random.default_rng(0)

    def draw(n):
        v = rng.lognormal(0.0, 1.0, n)
        p = v * rng.lognormal(1.0, 0.5, n)
        true = 2.0 * v + 0.5 * (p / np.median(p)) ** 0.5
        return rng.normal(0.0, np.sqrt(true)), v, p

    spec = fit_predictive(*draw(20000))
    assert spec["area"] < 0.01 and spec["tail_share"] < 1e-3
    r, v, p = draw(20000)
    z = np.abs(r) / np.sqrt(predictive_variance(spec, v, p))
    for level in (0.5, 0.9, 0.99):
        se = np.sqrt(level * (1 - level) / r.size)
        assert abs(np.mean(z <= norm.ppf(0.5 + level / 2)) - level) < 4 * se
    assert miscalibration_area_abs(z) < 0.01


def test_zero_priors_get_zero_sigma_and_are_left_out():
    rng = np.random.default_rng(1)
    v, p = rng.uniform(0.5, 1.0, 200), rng.uniform(0.5, 1.0, 200)
    p[:50] = 1e-18  # fixed by symmetry: exact predictions whatever the residual
    r = rng.normal(0.0, 1.0, 200)
    r[:50] = 0.3
    spec = fit_predictive(r, v, p)
    assert spec["n"] == 150 and spec["n_fixed"] == 50
    assert spec["fixed_max_abs_residual"] == pytest.approx(0.3)
    var = predictive_variance(spec, v, p)
    assert np.all(var[:50] == 0) and np.all(var[50:] > 0)
    assert fit_predictive(r[:MIN_ROWS + 49], v[:MIN_ROWS + 49], p[:MIN_ROWS + 49]) is None


def test_on_data_drawn_from_the_gp_prior_sigma_covers_at_50_90_99():
    """Labels from a function drawn from the GP prior (weights on 40 sparse points drawn
    from N(0, K_MM^-1), plus Gaussian label noise); a default GAP with 20 points fitted on
    them predicts test labels inside its calibrated intervals at the nominal rates."""
    frames = _cu(60, 11)
    test = _cu(30, 12)
    truth = _gap(40, noise=NoiseModel(energy=0.001, forces=0.05, virial=0.01)).fit(frames)
    kmm = truth.U_.T @ truth.U_
    rng = np.random.default_rng(5)
    w = torch.linalg.solve_triangular(truth.U_, torch.as_tensor(rng.normal(size=40))[:, None],
                                      upper=True)[:, 0]  # cov U^-1 U^-T = K_MM^-1
    assert torch.allclose(w @ kmm @ w, torch.linalg.norm(truth.U_ @ w) ** 2)
    truth.alpha_ = w
    for group in (frames, test):
        pred = truth.predict(group, return_variance=False)
        for k, atoms in enumerate(group):
            n = len(atoms)
            atoms.info["energy"] = pred.energy[k] + 0.002 * n * rng.normal()
            atoms.arrays["forces"] = pred.frame_forces(k) + 0.02 * rng.normal(size=(n, 3))
            noise = 0.01 * n * rng.normal(size=(3, 3))
            atoms.info["virial"] = pred.virial[k] + (noise + noise.T) / 2
    model = _gap(20, random_state=1).fit(frames)
    assert model.predictive_["forces"] is not None
    pred = model.predict(test)
    assert pred.variance_form["forces"] == "calibrated+noise"
    err = (pred.forces - np.concatenate([a.arrays["forces"] for a in test])).ravel()
    z = np.abs(err) / np.sqrt(pred.forces_variance.ravel())
    for level in (0.5, 0.9, 0.99):
        se = np.sqrt(level * (1 - level) / z.size)
        assert abs(np.mean(z <= norm.ppf(0.5 + level / 2)) - level) < 4 * se, level
    # and better than the latent variance plus the regularisation noise
    report = uq.calibration_report(pred, test, model=model)
    latent = uq.calibration_report(model.predict(test, calibrated=False), test, model=model)
    assert report["forces"].miscalibration_area < latent["forces"].miscalibration_area


@pytest.fixture(scope="module")
def default_fit():
    frames = _cu(20, 3)
    return frames, _gap(random_state=2).fit(frames)


def test_the_default_fit_calibrates_and_a_perfect_crystal_gets_zero_force_sigma(default_fit):
    frames, model = default_fit
    spec = model.predictive_
    assert set(spec) == {"energy", "forces", "virial"} and all(spec.values())
    report = model.fit_info_["noise_cv"]["predictive"]
    assert report["forces"]["area"] == spec["forces"]["area"] < 0.1
    perfect = bulk("Cu", "fcc", a=3.63, cubic=True).repeat(2)
    pred = model.predict([perfect])
    assert np.all(pred.forces_variance == 0) and pred.energy_variance[0] > 0
    assert np.all(np.abs(pred.forces) < 1e-8)
    # off-diagonal virials of a cubic cell are fixed by symmetry as well
    off = ~np.eye(3, dtype=bool)
    assert np.all(pred.virial_variance[0][off] == 0)
    assert np.all(pred.virial_variance[0][~off] > 0)
    latent = model.predict([perfect], calibrated=False)
    assert latent.variance_form["forces"] == "dtc"
    np.testing.assert_array_equal(latent.forces_variance, pred.forces_latent_variance)
    # a calibration report leaves the symmetry-fixed components out and counts them
    perfect.calc = EMT()
    perfect.info["energy"] = perfect.get_potential_energy()
    perfect.arrays["forces"] = perfect.get_forces()
    rattled = _cu(3, 9)
    result = uq.calibration_report(model.predict([perfect] + rattled), [perfect] + rattled,
                                   model=model)["forces"]
    assert result.n_fixed == 3 * len(perfect) and result.n == 3 * sum(map(len, rattled))
    assert result.fixed_max_abs_error < 1e-8


def test_the_calibration_is_reproducible_saved_and_checked(default_fit, tmp_path):
    frames, model = default_fit
    again = _gap(random_state=2).fit(frames)
    assert again.predictive_ == model.predictive_
    path = model.save(tmp_path / "m.gapkit")
    loaded = GAP.load(path)
    assert loaded.predictive_ == json.loads(json.dumps(model.predictive_))
    a, b = model.predict(frames[:3]), loaded.predict(frames[:3])
    np.testing.assert_array_equal(a.forces_variance, b.forces_variance)
    np.testing.assert_array_equal(a.energy_variance, b.energy_variance)
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("metadata.json"))
        members = {n: zf.read(n) for n in zf.namelist()}
    assert meta["format_version"] == 4
    meta["predictive"]["forces"]["b"] = -1.0
    bad = tmp_path / "bad.gapkit"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, json.dumps(meta) if name == "metadata.json" else data)
    with pytest.raises(ValueError, match="b must be a finite number"):
        GAP.load(bad)
    # a refit with other hyper-parameters drops the calibration (it belongs to one fit)
    refit = _gap(random_state=2).fit(frames)
    refit.optimize_hyperparameters(frames, delta=True, noise=False)
    assert not hasattr(refit, "predictive_")
    assert refit.predict(frames[:1]).variance_form["forces"] == "dtc"


def test_explicit_noise_and_too_few_frames_are_not_calibrated(fitted):
    frames, model = fitted
    assert not hasattr(model, "predictive_")
    assert model.predict(frames[:1]).variance_form["forces"] == "dtc"
    few = _gap().fit(_cu(6, 4))
    assert not hasattr(few, "predictive_")
    arrays = {"energy_variance": np.ones(2), "energy_prior": np.ones(2)}
    forms = {"energy": "dtc"}
    apply_predictive(None, arrays, forms)
    assert forms == {"energy": "dtc"} and "energy_prior" not in arrays
    np.testing.assert_array_equal(arrays["energy_latent_variance"], np.ones(2))


def test_without_virials_there_is_no_virial_form():
    frames = _cu(12, 1, virial=False)
    model = _gap(use=("energy", "forces")).fit(frames)
    assert model.predictive_["virial"] is None and model.predictive_["forces"] is not None


def test_the_calibration_pass_reads_a_stratified_subset_of_large_data(fitted):
    """Beyond ``max_force_rows`` force rows the predictive-variance pass reads a seeded,
    config_type-stratified subset of frames; its rows are exactly the full pass's rows of
    those frames (the fold fits are still those of all the data)."""
    frames, model = fitted
    data, obs, folds, grams, _ = fold_setup(model, frames, 3)
    n_force = int(np.sum(obs.kind == 1))
    assert np.array_equal(calibration_frames(obs, len(frames)), np.arange(len(frames)))
    keep = calibration_frames(obs, len(frames), 3, max_force_rows=n_force // 3, min_frames=4)
    again = calibration_frames(obs, len(frames), 3, max_force_rows=n_force // 3, min_frames=4)
    assert np.array_equal(keep, again) and 4 <= keep.size < len(frames)
    cts = np.array([a.info["config_type"] for a in frames])
    assert set(cts[keep]) == set(cts)  # every config_type is represented
    factors = [2.0, 1.0, 0.5]
    full = held_out_variances(model.terms_, model.sparse_sets_, frames, obs, data.gradients,
                              folds, grams, factors, batch_atoms=64)
    forms = calibrate_predictive(model.terms_, model.sparse_sets_, frames, obs, data.gradients,
                                 folds, grams, factors, batch_atoms=64, seed=3,
                                 max_force_rows=n_force // 3, min_frames=4)
    assert forms["forces"]["n_frames"] == keep.size < len(frames)
    # the subset's forces are the full pass's rows of the kept frames
    mask = np.isin(obs.frame[obs.kind == 1], keep)
    expect = fit_predictive(*(x[mask] for x in full["forces"]))
    for key in ("a", "b", "q", "f", "area", "n"):
        assert forms["forces"][key] == pytest.approx(expect[key], rel=1e-9, abs=1e-15)
