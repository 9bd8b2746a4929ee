"""Tests of :mod:`gapkit.active`: the active-learning loop with EMT as the labeller.

The pool holds 4-atom fcc Cu cells, most gently rattled (0.05 Å) and a few strongly
(0.25 Å): the strongly rattled ones are where a model fitted on gentle data is unsure, so
variance-based selection must pick them first. Units: eV, Å, eV/Å.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import make_si_model, si_frames

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.active import (PoolDesign, active_learning, compare_strategies, labels_to_reach,
                           select_batch, select_coverage)
from gapkit.baselines import CoreRepulsion
from gapkit.data import get_all_labels
from gapkit.testing import label

pytestmark = pytest.mark.filterwarnings("ignore:.*sparse points requested:UserWarning")

WILD = (3, 8, 13, 17)  # pool indices of the strongly rattled cells


def _cell(seed: int, rattle: float):
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    eps = rng.normal(scale=0.01, size=(3, 3))
    atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def pool():
    """20 unlabelled cells; those in WILD rattled by 0.25 Å, the rest by 0.05 Å."""
    return [_cell(100 + k, 0.25 if k in WILD else 0.05) for k in range(20)]


@pytest.fixture(scope="module")
def test_set():
    return [label(_cell(200 + k, 0.05 + 0.05 * k), EMT()) for k in range(5)]


def _model():
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)
    return GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=15)],
               noise=NoiseModel(energy=0.002, forces=0.05, virial=0.02), progress=False)


def test_loop_runs_end_to_end_with_emt(pool, test_set):
    curve = active_learning(_model(), pool, EMT(), test=test_set, strategy="forces",
                            n_initial=4, batch_size=3, max_labels=10, seed=0)
    assert curve.stopped_reason == "label budget of 10 frames reached"
    assert curve.n_labelled.tolist() == [4, 7, 10]
    assert curve.n_atoms_labelled.tolist() == [16, 28, 40]
    picked = [i for batch in curve.selected for i in batch]
    assert len(picked) == len(set(picked)) == 10
    assert np.all(np.isfinite(curve.force_mae)) and np.all(curve.force_mae > 0)
    assert curve.force_mae[-1] < curve.force_mae[0]
    # the pool was not labelled in place, the model's labels came from EMT
    assert "energy" not in pool[0].info and "forces" not in pool[0].arrays
    assert curve.model.fit_info_["n_frames"] == 10
    assert curve.to_dict()["force_mae_eV_per_A"] == curve.force_mae.tolist()


@pytest.mark.parametrize("strategy,form", [("forces", "exact"), ("forces", "projected"),
                                           ("energy", "exact")])
def test_variance_selection_picks_the_unfamiliar_frames(pool, strategy, form):
    """Initial set: gentle frames only (seed chosen so); the first batch of 4 must be the
    4 strongly rattled cells (random selection would draw them with p ~ 1e-3)."""
    seed = next(s for s in range(50)
                if not set(np.random.default_rng(s).choice(20, 4, replace=False)) & set(WILD))
    curve = active_learning(_model(), pool, EMT(), strategy=strategy, n_initial=4,
                            batch_size=4, max_labels=8, seed=seed, diversity=0.0,
                            forces_variance=form)
    assert set(curve.selected[1]) == set(WILD), (strategy, form, curve.selected)
    assert np.all(np.diff(curve.scores[1]) <= 0)  # picked in order of variance


def test_random_baseline_shares_the_initial_set_and_budget(pool, test_set):
    runs = compare_strategies(_model(), pool, EMT(), test=test_set, seeds=(1,),
                              strategies=("forces", "random"), n_initial=3, batch_size=3,
                              max_labels=9)
    a, b = runs["forces"][0], runs["random"][0]
    assert a.selected[0] == b.selected[0]
    assert a.n_labelled.tolist() == b.n_labelled.tolist() == [3, 6, 9]
    assert np.all(np.isnan(b.scores[1]))
    assert labels_to_reach(a, a.force_mae[-1]) <= 9
    assert labels_to_reach(a, -1.0) == float("inf")


def test_empty_pool_stops_cleanly():
    curve = active_learning(_model(), [], EMT())
    assert "pool is empty" in curve.stopped_reason
    assert curve.n_labelled.size == 0 and curve.model is None


def test_exhausted_pool_stops_and_says_so(pool):
    curve = active_learning(_model(), pool[:5], EMT(), n_initial=2, batch_size=2,
                            max_labels=100)
    assert curve.n_labelled.tolist() == [2, 4, 5]
    assert "exhausted" in curve.stopped_reason


def test_labels_in_the_pool_are_revealed_only_on_selection(pool):
    labelled = [label(a.copy(), EMT()) for a in pool[:6]]
    curve = active_learning(_model(), labelled, None, n_initial=3, batch_size=3,
                            max_labels=6)
    assert curve.n_labelled.tolist() == [3, 6]


def test_diversity_rule_skips_near_duplicates():
    scores = np.array([1.0, 0.99, 0.5, 0.1])
    fp = np.array([[1.0, 0.0], [1.0, 1e-6], [0.0, 1.0], [0.7, 0.7]])
    assert select_batch(scores, fp, 2, diversity=0.0, d0=1.0) == [0, 1]
    assert select_batch(scores, fp, 2, diversity=1.0, d0=1.0) == [0, 2]


def test_coverage_prefers_a_dense_uncertain_region_to_a_lone_outlier():
    """Five near-identical frames of variance 0.5 and one far-off frame of variance 1: by
    its own variance the outlier comes first; by the variance it covers, the cluster (2.5),
    then the outlier, since the first pick explained most of the cluster's variance."""
    rng = np.random.default_rng(0)
    fp = np.vstack([rng.normal(scale=0.01, size=(5, 2)), [[10.0, 0.0]]])
    v = np.array([0.5] * 5 + [1.0])
    assert select_batch(v, fp, 1, diversity=0.0, d0=1.0) == [5]
    first, second = select_coverage(v, fp, 2, length=1.0)
    assert first < 5 and second == 5
    # with no correlation (a tiny length) it is selection by variance
    assert select_coverage(v, fp, 2, length=1e-6)[0] == 5


@pytest.mark.parametrize("strategy", ["coverage", "integrated"])
def test_pool_strategies_run_end_to_end(pool, test_set, strategy):
    model = _model() if strategy == "coverage" else _ef_model()
    curve = active_learning(model, pool, EMT(), test=test_set, strategy=strategy,
                            n_initial=4, batch_size=3, max_labels=10, seed=0)
    picked = [i for batch in curve.selected for i in batch]
    assert len(picked) == len(set(picked)) == 10
    assert curve.n_labelled.tolist() == [4, 7, 10]
    assert np.all(np.isfinite(curve.force_mae))
    if strategy == "integrated":
        assert all(np.all(s > 0) for s in curve.scores[1:])
        # the strongly rattled cells carry the pool's uncertainty: the first batch takes them
        assert len(set(curve.selected[1]) & set(WILD)) >= 2


def test_explore_draws_a_share_of_each_batch_at_random(pool, test_set):
    """explore=1 is the random baseline's draw exactly; explore=0.5 labels the rounded
    half of each batch at random (score NaN) and the rule picks the rest given them."""
    kw = dict(test=test_set, n_initial=4, batch_size=3, max_labels=10, seed=1)
    random = active_learning(_model(), pool, EMT(), strategy="random", **kw)
    all_random = active_learning(_model(), pool, EMT(), strategy="forces", explore=1.0, **kw)
    assert all_random.selected == random.selected
    np.testing.assert_allclose(all_random.force_mae, random.force_mae)
    mixed = active_learning(_ef_model(), pool, EMT(), strategy="integrated", explore=0.5, **kw)
    picked = [i for batch in mixed.selected for i in batch]
    assert len(picked) == len(set(picked)) == 10
    for batch, scores in zip(mixed.selected[1:], mixed.scores[1:]):
        assert len(batch) == len(scores) == 3
        assert np.isnan(scores[:2]).all() and np.all(scores[2:] > 0)  # 1.5 rounds up
    rule = active_learning(_ef_model(), pool, EMT(), strategy="integrated", **kw)
    assert mixed.selected != rule.selected


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown strategy"):
        active_learning(_model(), [bulk("Cu")], EMT(), strategy="greedy")
    with pytest.raises(TypeError, match="labeller"):
        active_learning(_model(), [bulk("Cu")], labeller=42)
    with pytest.raises(ValueError, match="target= is read only by strategy='integrated'"):
        active_learning(_model(), [bulk("Cu")], EMT(), strategy="forces", target=[bulk("Cu")])
    with pytest.raises(ValueError, match="forces_variance"):
        active_learning(_model(), [bulk("Cu")], EMT(), forces_variance="dtc")
    with pytest.raises(ValueError, match="explore is the share of each batch"):
        active_learning(_model(), [bulk("Cu")], EMT(), explore=1.5)


def test_learning_curve_figure(pool, test_set):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gapkit import plot

    runs = compare_strategies(_model(), pool, EMT(), test=test_set, seeds=(0, 1),
                              strategies=("random",), n_initial=3, batch_size=3, max_labels=6)
    fig = plot.learning_curves(runs)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "test force MAE (eV/Å)"
    assert len(ax.collections) == 1  # the seed band
    plt.close(fig)


# -- clones keep the settings ------------------------------------------------------------
def test_committee_and_active_learning_keep_the_baselines():
    from gapkit.active import active_learning
    from gapkit.uq import fit_committee

    frames = si_frames(4)
    members = fit_committee(make_si_model(), frames, n_models=2)
    assert all(member.baselines == [CoreRepulsion()] for member in members)
    curve = active_learning(make_si_model(), frames, n_initial=2, batch_size=1, max_labels=3,
                            strategy="random")
    assert curve.model.baselines == [CoreRepulsion()]


@pytest.fixture(scope="module")
def labelled_pool(pool):
    return [label(a, EMT()) for a in pool]


def _ef_model(n_sparse=15):
    soap = SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2)
    return GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=n_sparse)],
               noise=NoiseModel(energy=0.002, forces=0.05), use=("energy", "forces"),
               progress=False, random_state=3)


def test_pool_design_is_the_fitted_gps_posterior(labelled_pool):
    """Independent check of the rows, the whitening and the noise: a GAP fitted on the whole
    pool picks the same sparse points as PoolDesign (same frames, rule and seed), so its
    projected force variance is diag(B_x Sigma B_x^T) with Sigma from every pool frame."""
    import torch

    model = _ef_model().fit(labelled_pool)
    design = PoolDesign(model, labelled_pool)
    assert design.n_sparse == sum(s.n for s in model.sparse_sets_)
    rows = torch.cat([design._scaled(j, model.noise_) for j in range(len(labelled_pool))])
    cov = torch.linalg.inv(torch.eye(design.n_sparse, dtype=rows.dtype) + rows.T @ rows)
    frames = labelled_pool[:6]
    ours = np.concatenate([((design.forces[j] @ cov) * design.forces[j]).sum(1).numpy()
                           for j in range(6)])
    pred = model.predict(frames, forces_variance="projected")
    np.testing.assert_allclose(ours, pred.forces_variance.ravel(), rtol=1e-5, atol=1e-12)


def test_integrated_gain_is_the_variance_a_label_removes(labelled_pool):
    """Each greedy pick's gain equals tr(C Sigma) - tr(C Sigma') computed by inverting the
    precision with and without the frame, it is the largest over the candidates, and the
    second pick is conditioned on the first (no frame twice; a copy of the first pick
    gains less than it did)."""
    import torch

    model = _ef_model().fit(labelled_pool[:4])
    pool = labelled_pool + [labelled_pool[WILD[0]].copy()]  # a duplicate of a wild frame
    design = PoolDesign(model, pool)
    known, cands = [0, 1, 2, 4], [j for j in range(len(pool)) if j not in (0, 1, 2, 4)]
    eye = torch.eye(design.n_sparse, dtype=torch.float64)

    def precision(frames, scale=1.0):
        rows = torch.cat([design._scaled(j, model.noise_) for j in frames]) / scale
        return eye + rows.T @ rows

    def variance(p):
        return float((design.target_gram @ torch.linalg.inv(p)).trace())

    for scale in (1.0, 3.0):
        base = variance(precision(known, scale))
        brute = {j: base - variance(precision(known + [j], scale)) for j in cands}
        picks, gains = design.gains(known, cands, model.noise_, 2, scale)
        assert picks[0] == max(brute, key=brute.get)
        assert gains[0] == pytest.approx(brute[picks[0]], rel=1e-8)
        after = variance(precision(known + picks[:1], scale))
        assert gains[1] == pytest.approx(
            after - variance(precision(known + picks, scale)), rel=1e-8)
        assert picks[0] != picks[1] and gains[1] <= gains[0]
    # the duplicate and its original: labelling one leaves the other almost nothing
    twin = {WILD[0], len(pool) - 1}
    if picks[0] in twin:
        assert not set(picks) >= twin


def test_pool_design_names_species_the_model_lacks(labelled_pool):
    model = _ef_model().fit(labelled_pool[:4])
    odd = labelled_pool[5].copy()
    odd[0].symbol = "Ni"
    with pytest.raises(ValueError, match=r"pool has species \[28\].*label a frame of each"):
        PoolDesign(model, labelled_pool[:4] + [odd])


def test_label_scale_is_the_out_of_sample_force_error(labelled_pool):
    from gapkit.active import _label_scale

    model = _ef_model().fit(labelled_pool[:4])
    new = [labelled_pool[j] for j in WILD]
    pred = model.predict(new, return_variance=False)
    ref = np.concatenate([lab.forces for lab in get_all_labels(new, **model.keys)])
    rmse = np.sqrt(np.mean((pred.forces - ref) ** 2))
    assert rmse > 0.05  # the wild cells are far from the four it saw
    assert _label_scale(model, new) == pytest.approx(rmse / 0.05)
    loose = _ef_model()
    loose.noise = NoiseModel(energy=0.002, forces=5.0)
    loose.fit(labelled_pool[:4])  # errors far below its noise: the floor, 1
    assert _label_scale(loose, new) == 1.0
