"""Tests of :mod:`gapkit.otf`: folding labelled frames into a fitted GAP (the fit from
scratch at the same sparse points, to rounding), and MD that labels where it is unsure,
with EMT as the oracle: events, oracle failures, the warning for a threshold that labels
every step, and a resumed run that pays no label twice. Units: eV, Å, eV/Å, fs.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet

from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
from gapkit.gp.design import design_rows
from gapkit.gp.observations import ENERGY, FORCES
from gapkit.gp.sparse import solve_dtc, stored_rows
from gapkit.otf import _extend, add_sparse_points, otf_md, update
from gapkit.testing import label

pytestmark = pytest.mark.filterwarnings("ignore:.*sparse points requested:UserWarning")


def _cells(seeds, rattle=0.05, size=(1, 1, 1), symbol="Cu"):
    out = []
    for seed in seeds:
        atoms = bulk(symbol, "fcc", a=3.61, cubic=True) * size
        atoms.rattle(rattle, seed=seed)
        out.append(atoms)
    return out


def _model(train, n_sparse=12):
    return GAP([Term(SOAP(n_max=3, l_max=2, cutoff=4.0), SOAPKernel(zeta=2),
                     n_sparse=n_sparse)],
               noise=NoiseModel(energy=0.002, forces=0.02, virial=0.05), e0={29: 0.0},
               progress=False).fit(train)


def _same_weights(model, scratch):
    """The weights of ``model`` are those of the refit ``scratch``: alpha = R^-1 b is fixed
    only to cond(R) eps by any solver (cond 9e7 in the first test: 2e-8 of the largest
    weight; the update and the refit fold the same rows in another order), so alpha is
    held to that and what the weights do, the fitted function, to 1e-9 plus the rounding
    of its own evaluation: a prediction is a sum of M terms k_j alpha_j that cancel
    (|alpha| ~ 1e6 here, sum |k_j alpha_j| ~ 2e7 for an energy of 0.5 eV), so two
    evaluations of one function may differ by 2 M eps sum_j |k_j alpha_j| (1e-7 eV here;
    a change of rounding in the descriptors moved the energies by 1.9e-9 eV)."""
    scale = float(scratch.alpha.abs().max())
    eps = float(torch.finfo(torch.float64).eps)
    bound = 10 * float(torch.linalg.cond(scratch.R)) * eps
    assert float((model.alpha_ - scratch.alpha).abs().max()) <= bound * scale
    probe = [label(a, EMT()) for a in _cells(range(20, 22), rattle=0.1)]
    refit = copy.deepcopy(model)
    refit.alpha_ = scratch.alpha
    p0, p1 = model.predict(probe, virial=False), refit.predict(probe, virial=False)
    obs = model.training_data(probe).observations
    rows = design_rows(model.terms_, model.sparse_sets_, probe, obs)
    size = (rows.abs() @ scratch.alpha.abs()).numpy()  # sum_j |k_j alpha_j| per row
    for name, kind in (("energy", ENERGY), ("forces", FORCES)):
        a, b = np.asarray(getattr(p0, name)), np.asarray(getattr(p1, name))
        rounding = 2 * rows.shape[1] * eps * size[obs.kind == kind].max()
        assert np.abs(a - b).max() <= 1e-9 * np.abs(b).max() + rounding, name


@pytest.fixture(scope="module")
def train():
    return [label(a, EMT()) for a in _cells(range(4))]


def test_update_equals_the_fit_from_scratch_at_the_same_sparse_points(train):
    more = [label(a, EMT()) for a in _cells(range(10, 13), rattle=0.15)]
    model = _model(train)
    before = model.log_marginal_likelihood_
    update(model, more)
    everything = list(train) + list(more)
    data = model.training_data(everything)
    scratch = solve_dtc(model.terms_, model.sparse_sets_, everything, data.observations,
                        jitter=model.jitter, batch_atoms=model.batch_atoms)
    _same_weights(model, scratch)
    assert torch.allclose(model.R_, scratch.R, rtol=0, atol=1e-9 * float(scratch.R.abs().max()))
    assert model.log_marginal_likelihood_ == pytest.approx(scratch.log_marginal_likelihood,
                                                           rel=1e-9)
    assert model.log_marginal_likelihood_ != before
    assert model.fit_info_["n_frames"] == len(everything)
    assert model.fit_info_["updates"][-1]["n_frames"] == len(more)
    # and the predictions moved towards the new labels
    pred = model.predict(more, return_variance=False)
    old = _model(train).predict(more, return_variance=False)
    ref = np.concatenate([a.arrays["forces"] for a in more])
    assert np.abs(pred.forces - ref).mean() < np.abs(old.forces - ref).mean()


def test_update_refuses_a_species_the_model_has_not_seen(train):
    model = _model(train)
    ag = [label(a, EMT()) for a in _cells([5], symbol="Ag")]
    with pytest.raises(ValueError, match=r"species \[47\].*fit the model again"):
        update(model, ag)


def _start(seed=0):
    atoms = _cells([seed], rattle=0.02, size=(2, 1, 1))[0]
    rng = np.random.default_rng(seed)  # Maxwell-Boltzmann momenta at 600 K
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * 600))
    return atoms


def _verlet(atoms):
    return VelocityVerlet(atoms, timestep=2 * units.fs)


def test_md_labels_where_unsure_and_the_labels_are_the_oracles(train):
    model = _model(train)
    atoms = _start()
    run = otf_md(model, atoms, _verlet, EMT(), steps=12, interval=2, threshold=1.0)
    assert run.steps == 12 and len(run.events) == 6
    assert run.n_labels >= 1
    labelled = [e for e in run.events if e.labelled]
    assert len(labelled) == run.n_labels
    for event in run.events:
        assert (event.sigma_max > event.threshold) == event.labelled
        assert event.threshold == pytest.approx(1.0 * model.noise_.forces)
    for frame, event in zip(run.labels, labelled):
        assert frame.info["otf_step"] == event.step
        ref = frame.copy()
        ref.calc = EMT()
        np.testing.assert_allclose(frame.get_forces(), ref.get_forces(), atol=1e-12)
    # the labels were folded in: the same model as one update with all of them (weights
    # differ by cond(R) x rounding; the predictions they make do not)
    again = update(_model(train), run.labels)
    probe = _cells([77], rattle=0.1, size=(2, 1, 1))
    a, b = run.model.predict(probe), again.predict(probe)
    np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=1e-8)
    np.testing.assert_allclose(a.forces_variance, b.forces_variance, rtol=1e-6, atol=1e-12)
    assert not np.allclose(a.forces, _model(train).predict(probe).forces, rtol=0, atol=1e-4)
    # a high threshold labels nothing
    quiet = otf_md(_model(train), _start(), _verlet, EMT(), steps=4, threshold=1e6)
    assert quiet.n_labels == 0 and not any(e.labelled for e in quiet.events)


class _Failing(Calculator):
    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, nan=False):
        super().__init__()
        self.nan = nan

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if not self.nan:
            raise RuntimeError("SCF did not converge")
        n = len(self.atoms)
        self.results = {"energy": float("nan"), "forces": np.zeros((n, 3)),
                        "stress": np.zeros(6)}


@pytest.mark.parametrize("nan", [False, True])
def test_a_failing_oracle_is_recorded_and_skipped_or_stops(train, nan):
    reason = "label not finite" if nan else "oracle failed: RuntimeError: SCF did not"
    run = otf_md(_model(train), _start(), _verlet, _Failing(nan), steps=4, threshold=1e-6,
                 max_consecutive=100)
    assert run.steps == 4 and run.n_labels == 0
    assert all(e.reason.startswith(reason) and not e.labelled for e in run.events)
    stop = otf_md(_model(train), _start(), _verlet, _Failing(nan), steps=4, threshold=1e-6,
                  on_oracle_error="stop")
    assert stop.steps == 1 and stop.stopped_reason.startswith("step 1: " + reason)


def test_a_threshold_that_labels_every_step_warns(train):
    with pytest.warns(UserWarning, match="3 checks in a row asked for a label"):
        otf_md(_model(train), _start(), _verlet, EMT(), steps=3, threshold=1e-6,
               max_consecutive=3)


def test_a_resumed_run_pays_no_label_twice_and_continues_the_same_run(train, tmp_path):
    end = _start()
    whole = otf_md(_model(train), end, _verlet, EMT(), steps=10, threshold=1.0,
                   max_consecutive=100)
    first = otf_md(_model(train), _start(), _verlet, EMT(), steps=6, threshold=1.0,
                   checkpoint=tmp_path, max_consecutive=100)
    assert (tmp_path / "labels.xyz").exists() and (tmp_path / "state.npz").exists()
    assert whole.n_labels > first.n_labels >= 1  # labels before and after the break
    calls = []
    counting = EMT()  # the same labeller (class and settings), its calls counted
    calculate = counting.calculate

    def count(*args, **kwargs):
        calls.append(1)
        calculate(*args, **kwargs)

    counting.calculate = count
    atoms = _start()  # the original start: the checkpoint's state replaces it
    second = otf_md(_model(train), atoms, _verlet, counting, steps=10, threshold=1.0,
                    checkpoint=tmp_path, max_consecutive=100)
    assert second.steps == 10 and len(second.events) == 10
    assert second.n_labels == whole.n_labels
    assert len(calls) == whole.n_labels - first.n_labels  # only the new labels were paid
    assert [e.step for e in second.events if e.labelled] == \
        [e.step for e in whole.events if e.labelled]
    # the labels read back from extxyz carry 8 decimals: the same run to that precision
    np.testing.assert_allclose(atoms.positions, end.positions, rtol=0, atol=1e-6)
    e_whole = [e.sigma_max for e in whole.events]
    e_second = [e.sigma_max for e in second.events]
    np.testing.assert_allclose(e_second, e_whole, rtol=1e-5)


def test_bad_arguments_are_named(train, tmp_path):
    model = _model(train)
    with pytest.raises(ValueError, match="on_oracle_error"):
        otf_md(model, _start(), _verlet, EMT(), steps=1, on_oracle_error="ignore")
    with pytest.raises(ValueError, match="refit_every needs"):
        otf_md(model, _start(), _verlet, EMT(), steps=1, refit_every=2)
    otf_md(model, _start(), _verlet, EMT(), steps=1, threshold=1e6, checkpoint=tmp_path)
    other = _cells([1], size=(1, 1, 1))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="another system"):
            otf_md(model, other, _verlet, EMT(), steps=2, checkpoint=tmp_path)


def test_refit_every_fits_again_on_the_training_frames_and_every_label(train):
    model = _model(train)
    run = otf_md(model, _start(), _verlet, EMT(), steps=3, threshold=1e-6, refit_every=2,
                 train=train, max_consecutive=100, new_points=0)
    assert run.n_labels == 3
    assert run.model is not model  # a clone fitted from scratch after the second label
    assert model.fit_info_["n_frames"] == len(train) + 2 - 1  # one update before the refit
    assert run.model.fit_info_["n_frames"] == len(train) + 3  # refit on 2, updated by 1
    assert len(run.model.fit_info_["updates"]) == 1


def test_a_relaxation_stops_when_converged_or_stalled(train):
    from ase.optimize import BFGS

    run = otf_md(_model(train), _cells([3], rattle=0.05)[0], BFGS, EMT(), steps=200,
                 threshold=1e6)
    assert run.stopped_reason.startswith("optimizer converged") and run.steps < 200
    # an oracle that always fails where the optimizer takes no step: no endless loop

    class Done(BFGS):
        def converged(self, *args, **kwargs):
            return True

    stuck = otf_md(_model(train), _cells([3], rattle=0.05)[0], Done, _Failing(), steps=200,
                   threshold=1e-6, max_consecutive=10**6)
    assert stuck.stopped_reason.startswith("no step taken") and stuck.n_labels == 0


def _scratch(model, frames):
    data = model.training_data(frames)
    return solve_dtc(model.terms_, model.sparse_sets_, frames, data.observations,
                     jitter=model.jitter, batch_atoms=model.batch_atoms)


def _same_fit(model, scratch):
    _same_weights(model, scratch)
    assert float((model.R_ - scratch.R).abs().max()) <= 1e-9 * float(scratch.R.abs().max())
    assert float((model.U_ - scratch.U).abs().max()) <= 1e-9 * float(scratch.U.abs().max())
    assert model.log_marginal_likelihood_ == pytest.approx(scratch.log_marginal_likelihood,
                                                           rel=1e-9)


@pytest.mark.parametrize("in_memory", [None, "rows", "descriptors"])
def test_added_sparse_points_give_the_fit_from_scratch_at_those_points(train, in_memory):
    more = [label(a, EMT()) for a in _cells(range(10, 13), rattle=0.15)]
    everything = list(train) + list(more)
    model = update(_model(train), more)
    n_before = [s.n for s in model.sparse_sets_]
    if in_memory:  # the old columns kept: only the new ones are computed
        data = model.training_data(everything)
        rows = stored_rows(model.terms_, model.sparse_sets_, everything, data.observations,
                           batch_atoms=model.batch_atoms,
                           descriptors=in_memory == "descriptors")
        assert (rows.blocks is not None) == (in_memory == "descriptors")
        counts, rows = _extend(model, everything, more[0], [2, 0, 2], rows)
        assert rows.rows.shape[1] == sum(s.n for s in model.sparse_sets_)
    else:
        counts = add_sparse_points(model, everything, more[0], [2, 0, 2])
    assert counts == [2]  # atom 2 once: the second is its duplicate
    assert [s.n for s in model.sparse_sets_] == [n_before[0] + 2]
    assert model.fit_info_["n_sparse"] == [n_before[0] + 2]
    points = model.sparse_sets_[0].points[-2:]
    env = model.terms_[0].descriptor.compute([more[0]]).values
    np.testing.assert_array_equal(points.numpy(), np.asarray(env)[[2, 0]])
    _same_fit(model, _scratch(model, everything))
    # a point that is one of the sparse points already is not added again
    assert add_sparse_points(model, everything, more[0], [2]) == [0]


def test_add_sparse_points_needs_every_frame_the_model_holds(train):
    model = _model(train)
    with pytest.raises(ValueError, match=r"every frame the model holds \(4.*got 3"):
        add_sparse_points(model, train[:3], train[0], [0])
    with pytest.raises(ValueError, match="not atoms of the 4-atom frame"):
        add_sparse_points(model, train, train[0], [4])


def test_md_adds_the_unsure_environments_as_sparse_points(train, tmp_path):
    model = _model(train)
    m0 = sum(s.n for s in model.sparse_sets_)
    run = otf_md(model, _start(), _verlet, EMT(), steps=6, threshold=1.0, train=train,
                 new_points=2, max_consecutive=100, checkpoint=tmp_path)
    assert run.n_labels >= 1
    added = [len(np.atleast_1d(f.info["otf_sparse_atoms"])) for f in run.labels
             if "otf_sparse_atoms" in f.info]
    assert added and all(1 <= k <= 2 for k in added)
    grown = sum(s.n for s in run.model.sparse_sets_)
    assert m0 < grown <= m0 + sum(added)
    for frame in run.labels:  # the environments chosen are the labels' most uncertain
        chosen = np.atleast_1d(frame.info.get("otf_sparse_atoms", []))
        assert len(chosen) == len(set(chosen.tolist()))
    # the run's model is the fit from scratch on every frame at the sparse points it grew
    _same_fit(run.model, _scratch(run.model, list(train) + run.labels))
    # a resumed run rebuilds the same model from the checkpoint
    again = otf_md(_model(train), _start(), _verlet, EMT(), steps=6, threshold=1.0,
                   train=train, new_points=2, checkpoint=tmp_path)
    assert again.n_labels == run.n_labels
    assert [s.n for s in again.model.sparse_sets_] == [s.n for s in run.model.sparse_sets_]
    probe = _cells([77], rattle=0.1, size=(2, 1, 1))
    np.testing.assert_allclose(again.model.predict(probe).forces,
                               run.model.predict(probe).forces, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="new_points=2 needs the model's training frames"):
        otf_md(_model(train), _start(), _verlet, EMT(), steps=1, new_points=2)


def test_an_oracle_of_another_level_of_theory_is_refused(train, tmp_path):
    from ase.calculators.lj import LennardJones

    model = _model(train)
    with pytest.raises(ValueError, match=r"the oracle \(LennardJones\) is not the level of "
                                         r"theory of the training frames.*labeller='EMT'"):
        otf_md(model, _start(), _verlet, LennardJones(), steps=1, train=train)
    other = EMT(asap_cutoff=True)  # the same class with another setting
    with pytest.raises(ValueError, match="labeller_settings"):
        otf_md(model, _start(), _verlet, other, steps=1, train=train)
    # a checkpoint's labels: a resumed run with another oracle is refused too
    otf_md(_model(train), _start(), _verlet, EMT(), steps=2, threshold=1e-6,
           checkpoint=tmp_path)
    with pytest.raises(ValueError, match=r"labels in .*labels.xyz"):
        otf_md(_model(train), _start(), _verlet, LennardJones(), steps=4, checkpoint=tmp_path)
    # frames without a labeller record (read from a DFT file) are not checked
    bare = [a.copy() for a in train]
    for a, b in zip(bare, train):
        a.info, a.arrays["forces"] = dict(b.info), b.arrays["forces"]
        for key in ("labeller", "labeller_settings", "energy_property"):
            a.info.pop(key)
    run = otf_md(_model(bare), _start(), _verlet, LennardJones(), steps=1, threshold=1e6,
                 train=bare)
    assert run.n_labels == 0
