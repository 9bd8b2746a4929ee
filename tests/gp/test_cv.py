"""gapkit.gp.cv: the noise chosen by K-fold cross-validation, in closed form.

The fold fits of the grid are exactly the DTC solves without the fold (same sparse points,
e0, kernels; brute force by the streaming QR on the other folds' rows), the held-out errors
are those of those fits, the search is reproducible from the seed, data without virials get
the one-dimensional grid, and energies that carry more noise get a larger energy sigma.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import make_strained_cells
from cv_cases import fold_refit, fold_setup

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.gp.cv import (
    ENERGY_FACTORS,
    VIRIAL_FACTORS,
    _add_gram_,
    _cholesky_,
    _mirror_gram_,
    assign_folds,
    full_solution,
    grid_alphas,
    held_out_errors,
)

#: the closed form against the brute-force QR solve: two orders of the same sums (also the
#: refit after the search, now computed from the fold statistics)
RTOL = 1e-8


def _cu(n, seed, *, virial=True, energy_noise=0.0):
    frames = make_strained_cells(bulk("Cu", "fcc", a=3.61, cubic=True), n, seed=seed,
                                 strain=0.02, rattle=0.1, calc=EMT, virial=virial)
    rng = np.random.default_rng(seed + 100)
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "bulk" if k % 3 else "strained"
        atoms.info["energy"] += energy_noise * len(atoms) * rng.normal()
    return frames


def _model(**kw):
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)
    return GAP([Term(soap, SOAPKernel(zeta=4), n_sparse=12)],
               noise=NoiseModel(energy=0.001, forces=0.05, virial=0.01), progress=False, **kw)


@pytest.fixture(scope="module")
def fitted():
    frames = _cu(15, 0)
    return frames, _model().fit(frames)


def test_folds_are_stratified_and_seeded():
    cts = ["a"] * 10 + ["b"] * 7 + ["c"] * 3
    folds = assign_folds(cts, 5, seed=1)
    assert np.array_equal(folds, assign_folds(cts, 5, seed=1))
    assert not np.array_equal(folds, assign_folds(cts, 5, seed=2))
    for ct, n in (("a", 10), ("b", 7)):
        per_fold = np.bincount(folds[np.asarray(cts) == ct], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n
    assert np.bincount(folds, minlength=5).max() - np.bincount(folds, minlength=5).min() <= 1
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(cts, 1)


@pytest.mark.parametrize("m,block", [(7, 3), (9, 3), (5, 8), (6, 1)])
def test_the_block_triangle_gram_equals_the_full_product(m, block):
    """Rank updates on the upper blocks, then mirrored: ``sum b^T b`` (the fold Grams)."""
    rng = np.random.default_rng(m)
    gram, ref = torch.zeros((m, m), dtype=torch.float64), torch.zeros((m, m), dtype=torch.float64)
    for r in (1, 4, 13):
        b = torch.as_tensor(rng.normal(size=(r, m)))
        _add_gram_(gram, b, block)
        ref.addmm_(b.T, b)
    assert not torch.equal(gram, gram.T) or m <= block  # the lower blocks wait for the mirror
    _mirror_gram_(gram, block)
    np.testing.assert_allclose(gram.numpy(), ref.numpy(), rtol=1e-13, atol=1e-12)
    assert torch.equal(gram, gram.T)


@pytest.mark.parametrize("m,block", [(10, 3), (9, 3), (4, 8), (5, 1)])
def test_the_in_place_cholesky_equals_torchs(m, block):
    rng = np.random.default_rng(m)
    a = rng.normal(size=(m, m + 2))
    spd = torch.as_tensor(a @ a.T + 0.1 * np.eye(m))
    work = spd.clone()
    factor = _cholesky_(work, block)
    assert factor is work  # in place: the factor is the matrix given
    torch.testing.assert_close(factor, torch.linalg.cholesky(spd), rtol=1e-12, atol=1e-12)
    spd[m - 1, m - 1] = -1.0
    with pytest.raises(torch.linalg.LinAlgError):
        _cholesky_(spd, block)


@pytest.mark.parametrize("low_rank_rows,woodbury,gram_block", [
    (None, None, None), (0, None, 5), (10**6, False, None), (10**6, True, None),
    (100, True, 5)])
def test_fold_fits_equal_brute_force_refits_and_their_held_out_errors(
        fitted, low_rank_rows, woodbury, gram_block, monkeypatch):
    """Kinds kept as Grams (0: all), as whitened rows (10**6: all; 100: energies and
    virials, forces as Grams) or by the default rule (M = 12 here, so Grams); Grams summed
    in one block or in blocks of 5 (5, 5, 2); the grid solved directly or by Woodbury: the
    same fold fits, the same full fit."""
    if gram_block is not None:
        monkeypatch.setattr("gapkit.gp.cv.GRAM_BLOCK", gram_block)
    frames, model = fitted
    data, obs, folds, grams, rows = fold_setup(model, frames, 4, low_rank_rows)
    m = model.U_.shape[0]
    n_dense = {None: 3, 0: 3, 10**6: 0, 100: 1}[low_rank_rows]
    assert grams.gram.shape == (4, n_dense, m, m) and len(grams.rows) == 3 - n_dense
    if low_rank_rows == 10**6:  # rows in place of Grams: each fold's rows of each kind
        assert [sum(r.shape[0] for r in grams.rows[k]) for k in range(3)] == \
            np.bincount(obs.kind, minlength=3).tolist()
    grid = np.array([[1.0, 1.0, 1.0], [4.0, 1.0, 0.5], [2.0, 0.5, 1.0]])
    alphas = grid_alphas(grams, grid, woodbury=woodbury)
    n_atoms = np.array([len(a) for a in frames], dtype=float)
    expected = {kind: np.zeros(len(grid)) for kind in ("energy", "forces", "virial")}
    for p, factors in enumerate(grid):
        sigma = obs.sigma * np.asarray(factors)[obs.kind]
        for f in range(4):
            train = folds[obs.frame] != f
            _, alpha = fold_refit(model, rows, obs, folds, f, sigma)
            scale = float(alpha.abs().max())
            np.testing.assert_allclose(alphas[p, f].numpy(), alpha.numpy(), rtol=0,
                                       atol=RTOL * scale)
            held = ~train
            err = np.abs((rows[torch.as_tensor(held)] @ alpha).numpy() - obs.y[held])
            per_atom = np.isin(obs.kind[held], (0, 2))
            err[per_atom] /= n_atoms[obs.frame[held][per_atom]]
            for k, kind in enumerate(("energy", "forces", "virial")):
                expected[kind][p] += err[obs.kind[held] == k].sum()
        _, alpha = fold_refit(model, rows, obs, folds, -1, sigma)  # every fold: the full fit
        np.testing.assert_allclose(full_solution(grams, factors, 0.0).alpha.numpy(),
                                   alpha.numpy(), rtol=0,
                                   atol=RTOL * float(alpha.abs().max()))
    errors = held_out_errors(model.terms_, model.sparse_sets_, frames, obs, data.gradients,
                             folds, alphas, batch_atoms=64)
    for k, kind in enumerate(("energy", "forces", "virial")):
        np.testing.assert_allclose(errors[kind], expected[kind] / np.sum(obs.kind == k),
                                   rtol=1e-7)


def test_the_search_is_reproducible_and_refits(fitted):
    frames, _ = fitted
    a = _model(random_state=3).fit(frames)
    report = a.cross_validate_noise(frames)
    b = _model(random_state=3).fit(frames)
    again = b.cross_validate_noise(frames)
    assert report["factors"] == again["factors"] and report["table"] == again["table"]
    assert len(report["table"]) >= len(ENERGY_FACTORS) * len(VIRIAL_FACTORS)
    assert a.noise.energy == 0.001  # the noise given stays; the fit's is noise_
    assert a.noise_.sigma("energy") == pytest.approx(0.001 * report["factors"][0])
    assert a.noise_.sigma("forces") == 0.05
    assert a.fit_info_["noise_cv"] is report
    # the refit (closed form from the fold statistics) is the plain QR fit at the chosen
    # noise: weights, factors, predictions and likelihood, to the closed form's RTOL
    c = GAP(_model().terms, noise=a.noise_, progress=False, random_state=3).fit(frames)
    _same_fit(a, c, frames)


def _same_fit(a, c, frames):
    scale = float(c.alpha_.abs().max())
    np.testing.assert_allclose(a.alpha_.numpy(), c.alpha_.numpy(), rtol=0, atol=RTOL * scale)
    np.testing.assert_allclose((a.R_.T @ a.R_).numpy(), (c.R_.T @ c.R_).numpy(), rtol=0,
                               atol=RTOL * float((c.R_.T @ c.R_).abs().max()))
    pa, pc = a.predict(frames[:3], calibrated=False), c.predict(frames[:3])
    np.testing.assert_allclose(pa.energy, pc.energy, rtol=RTOL)
    np.testing.assert_allclose(pa.forces, pc.forces, rtol=0, atol=RTOL * np.abs(pc.forces).max())
    np.testing.assert_allclose(pa.forces_variance, pc.forces_variance, rtol=1e-6,
                               atol=RTOL * pc.forces_variance.max())
    # both quadratic terms are y^T S^-1 y - |b|^2, a difference of two large numbers; b
    # carries the round-off of a triangular solve with R: eps cond(R) relative
    obs = c.training_data(frames).observations
    yy = float(np.sum((obs.y / obs.sigma) ** 2))
    bound = yy * np.finfo(float).eps * c.fit_info_["condition_number_R"]
    assert abs(a.log_marginal_likelihood_ - c.log_marginal_likelihood_) < bound, bound


def test_force_multipliers_cross_the_grid_and_the_refit_uses_the_best(fitted):
    """``force_factors``: the energy x virial grid at every force multiplier, scored against
    the base noise; the lowest score wins and the refit is the plain fit at that noise."""
    frames, _ = fitted
    plain = _model(random_state=3).fit(frames).cross_validate_noise(frames, refit=False)
    model = _model(random_state=3).fit(frames)
    report = model.cross_validate_noise(frames, force_factors=(0.5, 1.0, 2.0))
    table = report["table"]
    by_point = {(r["energy"], r["forces"], r["virial"]): r for r in table}
    assert len(by_point) == len(table)
    for r in plain["table"]:  # the grid at force multiplier 1 is the grid without the axis
        again = by_point[(r["energy"], 1.0, r["virial"])]
        assert again["energy_mae"] == r["energy_mae"] and again["forces_mae"] == r["forces_mae"]
    forces = {r["forces"] for r in table}
    assert {0.5, 1.0, 2.0} <= forces
    for f in forces:  # every force multiplier crosses the whole energy x virial grid
        assert {(r["energy"], r["virial"]) for r in table if r["forces"] == f} >= \
            {(r["energy"], r["virial"]) for r in plain["table"]}
    best = min(table, key=lambda r: r["score"])
    assert report["factors"] == [best["energy"], best["forces"], best["virial"]]
    assert model.noise_.sigma("forces") == pytest.approx(0.05 * best["forces"])
    c = GAP(_model().terms, noise=model.noise_, progress=False, random_state=3).fit(frames)
    _same_fit(model, c, frames)
    with pytest.raises(ValueError, match="force_factors must hold 1"):
        model.cross_validate_noise(frames, force_factors=(0.5, 2.0), refit=False)


@pytest.mark.parametrize("grid", [{"force_factors": (0.0, 1.0)},
                                  {"force_factors": (float("nan"), 1.0)},
                                  {"energy_factors": (-1.0, 1.0)},
                                  {"virial_factors": (1.0, "a")}])
def test_a_multiplier_that_is_not_a_positive_number_is_refused(fitted, grid):
    frames, model = fitted
    (name, _), = grid.items()
    with pytest.raises(ValueError, match=f"{name} are multipliers .* positive finite"):
        model.cross_validate_noise(frames, refit=False, **grid)


def test_an_axis_that_reaches_its_edge_after_another_was_extended_is_extended_too(
        monkeypatch):
    """Held-out errors made up on the grid: the force error is smallest at virial x64
    (beyond the grid), and there the energy error is smallest at energy x1/8 (beyond it
    too), elsewhere at x1. The virial axis is extended first, then the energy axis, which
    reached its edge only then; no warning, since neither optimum stays on an edge."""
    from types import SimpleNamespace

    from gapkit.gp import cv

    def errors(_terms, _sets, _frames, _obs, _gradients, _folds, grid, **_kw):
        e, v = np.log2(grid[:, 0]), np.log2(grid[:, 2])
        best_e = np.where(v >= 6, -3.0, 0.0)
        return {"energy": 1 + 0.01 * (e - best_e) ** 2, "forces": 1 + 0.1 * (v - 6) ** 2,
                "virial": np.ones(len(grid))}

    monkeypatch.setattr(cv, "grid_alphas", lambda grams, grid: np.asarray(grid))
    monkeypatch.setattr(cv, "held_out_errors", errors)
    obs = SimpleNamespace(kind=np.array([0, 1, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = cv.search_noise(None, None, None, None, obs, None, np.array([0, 1]),
                                 batch_atoms=1, grams=object())
    assert report["factors"] == [0.125, 1.0, 64.0] and report["edge"] == []
    energies = sorted({r["energy"] for r in report["table"]})
    assert energies[:3] == [1 / 16, 1 / 8, 1 / 4]  # extended once, below the grid


@pytest.mark.parametrize("slope, warned", [(0.05, True), (0.001, False)])
def test_an_optimum_left_on_an_edge_is_warned_about_only_where_the_score_is_not_flat(
        monkeypatch, slope, warned):
    """Held-out energy errors that fall with the energy multiplier without end: the
    optimum stays on the grid's upper edge after the extension. It is warned about (with
    the share by which it beats one step inside) when that share is above EDGE_GAIN, not
    on a nearly flat score; the report keeps the edge and the share either way."""
    from types import SimpleNamespace

    from gapkit.gp import cv

    def errors(_terms, _sets, _frames, _obs, _gradients, _folds, grid, **_kw):
        e = np.log2(grid[:, 0])
        return {"energy": 1 - slope * e, "forces": np.ones(len(grid)),
                "virial": np.ones(len(grid))}

    monkeypatch.setattr(cv, "grid_alphas", lambda grams, grid: np.asarray(grid))
    monkeypatch.setattr(cv, "held_out_errors", errors)
    obs = SimpleNamespace(kind=np.array([0, 1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = cv.search_noise(None, None, None, None, obs, None, np.array([0, 1]),
                                 batch_atoms=1, grams=object())
    assert report["factors"][0] == 256.0 and report["edge"] == ["energy"]
    gain = report["edge_gain"]["energy"]
    assert gain == pytest.approx(slope / (2 - 8 * slope), rel=1e-12)
    said = [str(w.message) for w in caught if "edge of the grid" in str(w.message)]
    assert len(said) == int(warned)
    if warned:
        assert f"{100 * gain:.1f} % better than one step inside" in said[0]


def test_without_virials_the_grid_is_one_dimensional():
    frames = _cu(12, 1, virial=False)
    model = _model(use=("energy", "forces")).fit(frames)
    report = model.cross_validate_noise(frames, refit=False)
    assert len(report["table"]) in (len(ENERGY_FACTORS), len(ENERGY_FACTORS) + 2)
    assert {row["virial"] for row in report["table"]} == {1.0}
    assert report["table"][0]["virial_mae"] is None


def test_noisier_energies_get_a_larger_energy_sigma():
    """EMT energies are exact; with 20 meV/atom of Gaussian noise added the chosen energy
    sigma (base 1 meV/atom) grows by more than a factor 8, without them it does not grow."""
    clean, noisy = _cu(20, 2), _cu(20, 2, energy_noise=0.02)
    f_clean = _model().fit(clean).cross_validate_noise(clean, refit=False)["factors"][0]
    f_noisy = _model().fit(noisy).cross_validate_noise(noisy, refit=False)["factors"][0]
    assert f_clean <= 1.0 and f_noisy >= 8.0


def test_too_few_frames_keep_the_base_noise_and_say_so():
    frames = _cu(6, 3)
    model = _model().fit(frames)
    report = model.cross_validate_noise(frames)
    assert report["factors"] == [1.0, 1.0, 1.0] and "fewer than 10" in report["note"]
    assert model.noise_ == model.noise


def test_without_a_noise_model_the_fit_cross_validates_it(fitted):
    """GAP(noise=None), the default, chooses the noise from the data; an explicit
    NoiseModel is used exactly as given; configs without [noise] mean the former."""
    from gapkit.io import to_config

    frames, explicit = fitted
    assert "noise_cv" not in explicit.fit_info_
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)
    auto = GAP([Term(soap, SOAPKernel(zeta=4), n_sparse=12)], progress=False).fit(frames)
    report = auto.fit_info_["noise_cv"]
    assert auto.noise is None and auto.get_params()["noise"] is None
    assert auto.noise_.sigma("energy") == pytest.approx(0.001 * report["factors"][0])
    by_hand = GAP([Term(soap, SOAPKernel(zeta=4), n_sparse=12)], noise=auto.noise_,
                  progress=False).fit(frames)
    _same_fit(auto, by_hand, frames)
    unfitted = GAP([Term(soap, SOAPKernel(zeta=4), n_sparse=12)])
    assert "noise" not in to_config(unfitted)
    assert GAP.from_config(to_config(unfitted))[0].noise is None
    assert to_config(auto)["noise"]["scale"]  # the chosen noise, for a refit as given


def test_the_default_fit_leaves_its_solve_to_the_closed_form():
    """GAP().fit skips the streaming QR fit (the CV's refit from its fold statistics
    replaces it anyway): the same model as the streaming fit followed by the CV, with
    the zero design rows (a perfect cell: forces zero by symmetry) counted by the CV's
    pass; too few frames to cross-validate get the streaming fit."""
    from gapkit.testing import label

    frames = _cu(14, 5) + [label(bulk("Cu", "fcc", a=3.61, cubic=True), EMT())]
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)

    def gap():
        return GAP([Term(soap, SOAPKernel(zeta=4), n_sparse=12)], progress=False)

    deferred = gap().fit(frames)
    streamed = gap()._fit(frames)
    zero_rows = streamed.fit_info_["n_zero_rows"]
    streamed.cross_validate_noise(frames)
    assert zero_rows == deferred.fit_info_["n_zero_rows"] > 0
    assert torch.equal(deferred.alpha_, streamed.alpha_)
    assert torch.equal(deferred.R_, streamed.R_)
    assert deferred.log_marginal_likelihood_ == streamed.log_marginal_likelihood_
    assert deferred.predictive_ == streamed.predictive_
    few = frames[:6]
    small = gap().fit(few)
    assert "not cross-validated" in small.fit_info_["noise_cv"]["note"]
    plain = GAP(gap().terms, noise=NoiseModel(), progress=False).fit(few)
    assert torch.equal(small.alpha_, plain.alpha_)


def test_the_command_line_reports_the_cross_validated_noise(tmp_path, capsys):
    import ase.io

    from gapkit.cli import main

    frames = _cu(12, 5)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    out = tmp_path / "cu.gapkit"
    assert main(["fit", f"at_file={tmp_path / 'train.xyz'}", f"gp_file={out}",
                 "soap_cutoff=4", "soap_n_max=3", "soap_l_max=2", "n_sparse=12"]) == 0
    text = capsys.readouterr().out
    assert "noise by 5-fold cross-validation" in text
    assert main(["info", str(out)]) == 0
    assert "noise by 5-fold cross-validation" in capsys.readouterr().out


def test_a_gap_fit_command_line_without_a_descriptor_uses_gaps_default(tmp_path, capsys):
    """`gapkit fit at_file=... gp_file=...` as a new user types it: GAP()'s default term and
    the cross-validated noise (before, "the config has no [[terms]]")."""
    import ase.io

    from gapkit import GAP
    from gapkit.cli import main
    from gapkit.terms import default_terms

    ase.io.write(tmp_path / "train.xyz", _cu(10, 6), format="extxyz")
    out = tmp_path / "cu.gapkit"
    assert main(["fit", "--quiet", f"at_file={tmp_path / 'train.xyz'}",
                 f"gp_file={out}"]) == 0
    model = GAP.load(out)
    assert model.terms_[0].descriptor.get_params()["n_max"] == \
        default_terms()[0].descriptor.get_params()["n_max"]
    assert model.fit_info_["noise_cv"]["table"]
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and "gapkit 0." in capsys.readouterr().out


@pytest.mark.parametrize("n_folds", [1, 2.5, True, "5"])
def test_a_bad_number_of_folds_is_refused(fitted, n_folds):
    frames, model = fitted
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        model.cross_validate_noise(frames, n_folds=n_folds, refit=False)


def test_a_symmetry_breaking_label_is_named_once_with_the_refit():
    import warnings

    frames = _cu(10, 7)
    perfect = bulk("Cu", "fcc", a=3.61, cubic=True)
    from gapkit.testing import label

    perfect = label(perfect, EMT())
    perfect.arrays["forces"][0, 0] = 0.2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GAP([Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=4),
                  n_sparse=12)], progress=False).fit(frames + [perfect])
    named = [w for w in caught if "symmetry" in str(w.message)]
    assert len(named) == 1 and "frame 10 forces atom 0 x = 0.2" in str(named[0].message)
    assert named[0].filename == __file__  # points at the user's call
