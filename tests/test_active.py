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
from gapkit.active import (active_learning, compare_strategies, labels_to_reach, select_batch,
                           select_coverage)
from gapkit.baselines import CoreRepulsion
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


def test_coverage_strategy_runs_end_to_end(pool, test_set):
    curve = active_learning(_model(), pool, EMT(), test=test_set, strategy="coverage",
                            n_initial=4, batch_size=3, max_labels=10, seed=0)
    picked = [i for batch in curve.selected for i in batch]
    assert len(picked) == len(set(picked)) == 10
    assert curve.n_labelled.tolist() == [4, 7, 10]
    assert np.all(np.isfinite(curve.force_mae))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown strategy"):
        active_learning(_model(), [bulk("Cu")], EMT(), strategy="greedy")
    with pytest.raises(TypeError, match="labeller"):
        active_learning(_model(), [bulk("Cu")], labeller=42)
    with pytest.raises(ValueError, match="forces_variance"):
        active_learning(_model(), [bulk("Cu")], EMT(), forces_variance="dtc")


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
