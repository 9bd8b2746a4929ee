"""On-the-fly learning: MD with a GAP that asks an oracle for labels when it is unsure.

:func:`otf_md` runs any ASE dynamics (Verlet, Langevin, NPT, an optimizer) with a
:class:`~gapkit.calculator.GAPCalculator` and, every ``interval`` steps, compares the
largest per-atom force σ of the current frame with ``threshold`` times the model's force
noise σ_F (``model.noise_.forces``: the threshold is stated in the noise's units). Above
it, the frame is labelled by the oracle (any ASE calculator: EMT or LJ in tests, DFT in
practice), its rows are folded into the fitted factors by :func:`update` (the fit from
scratch on all rows at the same sparse points, at the cost of the new rows), and the
dynamics go on from the same state with the updated model. With the training frames
(``train``), the labelled frame's most uncertain environments then become sparse points by
:func:`add_sparse_points` (their columns added to the fit, not a refit: ``new_points``).
``refit_every`` labels, the model is fitted again from scratch on everything labelled
(new noise, calibration and choice of sparse points).

Everything is recorded (:class:`OTFEvent` per check: step, σ, threshold, labelled or
not, why, the oracle's and the update's seconds), and with ``checkpoint`` (a folder) every
label is appended to ``labels.xyz`` the moment it is paid for, the dynamics state to
``state.npz`` and the log to ``log.json``: a run started again with the same
``checkpoint`` folds the labels already paid for into the model and resumes at the step
and state it stopped at.

The per-atom σ is the root mean square of the atom's three force-component σ (eV/Å),
calibrated when the model has a calibration (``GAP()`` defaults), latent otherwise.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ase.optimize.optimize import Optimizer

from .calculator import GAPCalculator
from .data import as_frames
from .gp.design import SparseSet, type_mask, usable_memory
from .gp.sparse import (StoredRows, condition_number, extend_dtc, fold_dtc, stored_rows,
                        warn_symmetry)
from .labelling import LABELLER_KEYS, check_consistent, label, labeller_record
from .model import clone

__all__ = ["OTFEvent", "OTFRun", "add_sparse_points", "otf_md", "update"]


def update(model, frames):
    """Fold labelled ``frames`` into the fitted ``model``, in place, and return it.

    The result is the fit from scratch on the old and the new rows at the model's sparse
    points, kernels, noise and e0 (to rounding; tested), computed from the R factor and the
    weights alone at O(new rows x M^2): the old frames are not needed. The noise, e0, the
    sparse points and a predictive-variance calibration stay those of the last fit (the
    calibration's law is applied to the updated latent and prior variances); a refit
    chooses them again. ``fit_info_["updates"]`` records each update.
    """
    return _fold(model, frames, condition=True)


def _fold(model, frames, *, condition: bool):
    """:func:`update`; without ``condition`` cond(R) is left for the caller to record once
    (its SVD costs 4-6x the fold itself at M 500-2,000: not once per label of a run)."""
    model.check_fitted()
    frames = as_frames(frames, require="update", **model.keys)
    known = set(model.species_)
    for i, atoms in enumerate(frames):
        unknown = sorted(set(int(z) for z in np.unique(atoms.numbers)) - known)
        if unknown:
            raise ValueError(f"frame {i} has species {unknown} that the model was not fitted "
                             f"for (species {sorted(known)}): fit the model again with a "
                             "frame of each species instead of updating it")
    data = model.training_data(frames)
    folded = fold_dtc(model.terms_, model.sparse_sets_, model.alpha_, model.R_, data.frames,
                      data.observations, batch_atoms=model.batch_atoms)
    if folded.symmetry_violations:
        warn_symmetry(folded.symmetry_violations, stacklevel=2)
    model.alpha_, model.R_ = folded.alpha, folded.R
    model.log_marginal_likelihood_ = (float(model.log_marginal_likelihood_)
                                      + folded.delta_log_marginal_likelihood)
    info = model.fit_info_
    info["n_frames"] = int(info.get("n_frames", 0)) + len(frames)
    if condition:
        info["condition_number_R"] = condition_number(folded.R)
    info["log_marginal_likelihood"] = model.log_marginal_likelihood_
    info.setdefault("updates", []).append({"n_frames": len(frames), "n_rows": folded.n_rows,
                                           "n_zero_rows": folded.n_zero_rows})
    return model


#: an environment whose prior variance, given the sparse points, is below this fraction of
#: its prior variance (or below 10 x the fit's absolute jitter) is (nearly) one of them: it
#: is not added (near-crystalline environments differ by 1e-7 to 1e-6 of it, and count)
DISTINCT_TOL = 1e-7


def _distinct_environments(model, atoms, indices) -> list[SparseSet]:
    """Per term, the environments of ``atoms`` centred on ``indices`` (in that order) that
    are not (nearly) combinations of the term's sparse points or of the ones taken before
    them: a pivoted Cholesky of their prior covariance given the sparse points, which keeps
    an environment when its conditional variance exceeds :data:`DISTINCT_TOL` of its own
    and 10 x the jitter."""
    out, start = [], 0
    rank: dict[int, int] = {}
    for i in indices:  # the first place of each atom
        rank.setdefault(int(i), len(rank))
    for term, sparse in zip(model.terms_, model.sparse_sets_):
        res = term.descriptor.compute([atoms])
        rows = [j for j, a in enumerate(res.centre_atom) if int(a) in rank]
        rows.sort(key=lambda j: rank[int(res.centre_atom[j])])
        x = torch.as_tensor(np.asarray(res.values, dtype=np.float64)[rows])
        types = torch.as_tensor(np.asarray(res.centre_types, dtype=np.int64)[rows])
        u = model.U_[start:start + sparse.n, start:start + sparse.n].to(x.dtype)
        start += sparse.n
        with torch.no_grad():
            k_sx = (term.kernel.value(sparse.points, x)
                    * type_mask(sparse.types, types, x.dtype)).detach()
            k_xx = (term.kernel.value(x, x) * type_mask(types, types, x.dtype)).detach()
        v = torch.linalg.solve_triangular(u.T, k_sx, upper=False) if sparse.n else k_sx[:0]
        cond = k_xx + model.jitter_absolute_ * torch.eye(len(rows), dtype=x.dtype) - v.T @ v
        taken: list[int] = []
        factor = torch.zeros((0, len(rows)), dtype=x.dtype)
        for i in range(len(rows)):
            rest = float(cond[i, i] - (factor[:, i] ** 2).sum())
            if rest > max(DISTINCT_TOL * float(k_xx[i, i]), 10 * model.jitter_absolute_):
                col = (cond[i] - factor.T @ factor[:, i]) / math.sqrt(rest)
                factor = torch.cat([factor, col[None]])
                taken.append(i)
        out.append(SparseSet(x[taken], types[taken], None))
    return out


def add_sparse_points(model, frames, atoms, indices) -> list[int]:
    """Add the environments of ``atoms`` centred on the atoms ``indices`` as sparse points
    of every term, in place, and return the number added per term.

    The result is the fit on ``frames`` at the old and the new sparse points with the
    model's kernels, noise, e0 and absolute jitter (:func:`gapkit.gp.sparse.extend_dtc`;
    equal to the fit from scratch at those settings to rounding, tested): no noise
    learning, no new choice of the other sparse points. ``frames`` must be every frame the
    model holds: its training frames and every frame an :func:`update` folded in (``atoms``
    itself only when it was). An environment that is (nearly) a combination of the sparse
    points or of one taken before it is skipped (:data:`DISTINCT_TOL`); the calibration
    stays. :func:`otf_md` keeps the design rows in memory, so that only the new columns'
    kernels are computed.
    """
    return _extend(model, frames, atoms, indices, None)[0]


def _extend(model, frames, atoms, indices, stored):
    """:func:`add_sparse_points` with the stored rows (or None): ``(counts, stored)``."""
    model.check_fitted()
    frames = as_frames(frames, require="add_sparse_points", **model.keys)
    held = int(model.fit_info_.get("n_frames", len(frames)))
    if len(frames) != held:
        raise ValueError(f"add_sparse_points needs every frame the model holds ({held}: its "
                         f"training frames and the updates'), got {len(frames)}: pass "
                         "train + every frame given to update()")
    indices = [int(i) for i in np.atleast_1d(indices)]
    if any(i < 0 or i >= len(atoms) for i in indices):
        raise ValueError(f"indices {indices} are not atoms of the {len(atoms)}-atom frame")
    added = _distinct_environments(model, atoms, indices)
    counts = [a.n for a in added]
    if sum(counts) == 0:
        return counts, stored
    data = model.training_data(frames)
    ext = extend_dtc(model.terms_, model.sparse_sets_, added, model.jitter_absolute_,
                     data.frames, data.observations, batch_atoms=model.batch_atoms,
                     stored=stored)
    model.sparse_sets_, model.alpha_, model.R_, model.U_ = (ext.sparse_sets, ext.alpha,
                                                            ext.R, ext.U)
    model.log_marginal_likelihood_ = ext.log_marginal_likelihood
    info = model.fit_info_
    info["n_sparse"] = [s.n for s in ext.sparse_sets]
    info["log_marginal_likelihood"] = model.log_marginal_likelihood_
    info.setdefault("updates", []).append({"n_sparse_added": counts})
    return counts, ext.stored


@dataclass(frozen=True)
class OTFEvent:
    """One check of the on-the-fly run.

    ``step`` (MD steps done), ``sigma_max`` (the largest per-atom force σ, eV/Å),
    ``threshold`` (eV/Å), ``labelled`` (the oracle was called and the label used),
    ``reason`` ("sigma above threshold", "below threshold", "oracle failed: ...",
    "label not finite"), ``oracle_s`` and ``update_s`` (wall seconds; 0 when not called),
    ``atom`` (the atom with the largest σ)."""

    step: int
    sigma_max: float
    threshold: float
    labelled: bool
    reason: str
    oracle_s: float = 0.0
    update_s: float = 0.0
    atom: int = -1


@dataclass
class OTFRun:
    """What :func:`otf_md` did: its ``events``, the ``labels`` it paid for (labelled
    Atoms, in order), the final ``model`` and ``stopped_reason``."""

    events: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    model: Any = None
    stopped_reason: str = ""
    steps: int = 0

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict:
        """JSON-friendly record (without the model and the frames)."""
        return {"steps": self.steps, "n_labels": self.n_labels,
                "stopped_reason": self.stopped_reason,
                "events": [asdict(e) for e in self.events]}


def _sigma_per_atom(calc: GAPCalculator, atoms) -> np.ndarray:
    """Per-atom force σ at the current positions: asked of a calculator that computes no
    variance during the steps between checks (only the checks pay for it)."""
    variance = np.asarray(calc.get_property("forces_variance", atoms), dtype=float)
    return np.sqrt(np.maximum(variance, 0.0).mean(axis=1))


def _finite_label(frame) -> bool:
    try:
        energy = frame.get_potential_energy()
        forces = frame.get_forces()
    except Exception:  # noqa: BLE001  (no labels at all)
        return False
    return bool(np.isfinite(energy) and np.all(np.isfinite(forces)))


def _check_oracle(oracle, frames, what: str) -> None:
    """Refuse an ``oracle`` whose labeller record (:func:`gapkit.generate.labeller_record`:
    class and every setting) differs from that of ``frames`` labelled by
    :func:`gapkit.generate.label`: its labels would mix levels of theory in one model.
    Frames without a record (read from a DFT file) are not checked."""
    recorded = [a for a in frames if all(key in a.info for key in LABELLER_KEYS)]
    if not recorded:
        return
    reference = check_consistent(recorded)
    name, settings = labeller_record(oracle)
    mine = {"labeller": name, "labeller_settings": settings, "energy_property": "energy"}
    for key in LABELLER_KEYS:
        if reference[key] != mine[key]:
            raise ValueError(
                f"the oracle ({name}) is not the level of theory of {what}: they have "
                f"{key}={reference[key]!r}, the oracle gives {mine[key]!r}; its labels would "
                f"mix levels of theory in one model. Use the calculator (and settings) that "
                f"labelled {what}, or relabel them with gapkit.generate.label and fit again")


class _Columns:
    """The sparse points an OTF run adds, by :func:`_extend`, with the design rows of
    every frame the model holds and their descriptors kept in memory (so that only the
    kernels of new columns are computed) while they take under a quarter of it (the rows
    alone when the descriptors do not fit; nothing when the rows do not)."""

    def __init__(self, train, new_points: int):
        self.train = [] if train is None else list(train)
        self.new_points = new_points
        self.stored: StoredRows | None = None

    def add(self, model, labels, frame, atoms, *, new_rows: bool = True) -> None:
        """After ``frame`` (one of ``labels``) was folded into ``model``: its rows to the
        stored rows (unless not ``new_rows``: a resumed run's labels, all folded before),
        and the environments of ``atoms`` as sparse points."""
        if not self.new_points:
            return
        atoms = np.atleast_1d(np.asarray(atoms, dtype=np.int64))
        frames = self.train + list(labels)
        if self.stored is not None and new_rows:
            data = model.training_data([frame])
            self.stored.append(stored_rows(model.terms_, model.sparse_sets_, data.frames,
                                           data.observations, batch_atoms=model.batch_atoms,
                                           descriptors=self.stored.blocks is not None))
            if self.stored.nbytes > usable_memory() // 4:
                self.stored.drop_descriptors()
        if atoms.size == 0:
            return
        if self.stored is None:
            data = model.training_data(frames)
            size = 8 * data.observations.y.size * (sum(model.fit_info_["n_sparse"]) + 1)
            if size < usable_memory() // 4:
                self.stored = stored_rows(model.terms_, model.sparse_sets_, data.frames,
                                          data.observations, batch_atoms=model.batch_atoms,
                                          descriptors=True)
                if self.stored.nbytes > usable_memory() // 4:
                    self.stored.drop_descriptors()
        self.stored = _extend(model, frames, frame, atoms, self.stored)[1]


class _Checkpoint:
    """``labels.xyz`` (appended per label, extxyz: training data as it is), ``state.npz``
    (numbers, positions, momenta, cell and step, lossless) and ``log.json`` in a folder."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels = self.folder / "labels.xyz"
        self.state = self.folder / "state.npz"
        self.log = self.folder / "log.json"

    def read(self):
        import ase.io

        labels = ase.io.read(self.labels, index=":") if self.labels.exists() else []
        state = dict(np.load(self.state)) if self.state.exists() else None
        log = json.loads(self.log.read_text()) if self.log.exists() else {}
        return labels, state, log

    def add_label(self, frame) -> None:
        import ase.io

        ase.io.write(self.labels, frame, format="extxyz", append=True)

    def save(self, atoms, run: OTFRun) -> None:
        tmp = self.folder / "state.tmp.npz"
        np.savez(tmp, numbers=atoms.numbers, positions=atoms.positions,
                 momenta=atoms.get_momenta(), cell=np.asarray(atoms.cell),
                 step=np.array(run.steps))  # lossless: the resumed run is the same run
        tmp.replace(self.state)  # never a half-written state
        tmp = self.log.with_suffix(".tmp.json")
        tmp.write_text(json.dumps(run.to_dict(), indent=1) + "\n")
        tmp.replace(self.log)


def otf_md(model, atoms, dynamics: Callable, oracle, *, steps: int, threshold: float = 2.0,
           interval: int = 1, refit_every: int | None = None, max_labels: int | None = None,
           max_consecutive: int = 10, on_oracle_error: str = "skip", checkpoint=None,
           train=None, new_points: int | None = None) -> OTFRun:
    """Run ``steps`` MD steps of ``atoms`` with ``model``, labelling where it is unsure.

    Parameters
    ----------
    model : gapkit.GAP
        A fitted model; updated in place (refits replace it: the run's ``model``).
    atoms : ase.Atoms
        The starting structure (with momenta if the dynamics need them); moved in place.
    dynamics : callable
        ``dynamics(atoms)`` returns an ASE dynamics or optimizer on ``atoms``, e.g.
        ``lambda a: Langevin(a, 1 * units.fs, temperature_K=300, friction=0.02)``.
    oracle : ASE calculator
        Labels a frame (energy, forces and, for periodic frames, stress).
    steps : int
        MD steps in all (a resumed run counts the steps already done).
    threshold : float
        Label when the largest per-atom force σ exceeds ``threshold * model.noise_.forces``.
    interval : int
        Steps between checks.
    refit_every : int, optional
        After this many labels since the last fit, fit ``clone(model)`` from scratch on
        ``train`` plus every label (new sparse points, noise and calibration).
    max_labels : int, optional
        Stop when this many labels were paid for.
    max_consecutive : int
        Warn when this many checks in a row asked for a label (a threshold below what the
        model can reach labels every step).
    on_oracle_error : "skip" or "stop"
        An oracle that raises or returns non-finite labels: the event is recorded and the
        run goes on without the label ("skip") or stops ("stop").
    checkpoint : path, optional
        A folder: labels are appended to ``labels.xyz`` as they are paid for, the state and
        the log written at each check; a run started with a folder that has them resumes.
    train : list of ase.Atoms, optional
        The model's training frames, for ``refit_every`` and ``new_points``. Those
        labelled by :func:`gapkit.generate.label` (and the labels of a checkpoint) must
        have the oracle's level of theory: its class and every setting (ValueError
        otherwise, naming the difference).
    new_points : int, optional
        After each label, up to this many of its atoms whose σ exceeds the threshold (the
        most uncertain first) give every term a sparse point (:func:`add_sparse_points`:
        the environments that carry the uncertainty join the model by a column update,
        the design rows kept in memory while they take under a quarter of it; near
        duplicates of the sparse points are skipped). Default 4 with ``train``, 0 (the
        labels' rows folded in, the sparse points kept) without; it needs ``train``.

    A resumed run folds the labels already paid for into ``model`` by :func:`update` and
    adds the sparse points they gave (each label's ``info["otf_sparse_atoms"]``); a refit
    comes again after ``refit_every`` new labels. A relaxation stops when the
    optimizer has converged at a check that labels nothing, or takes no step.
    """
    if on_oracle_error not in ("skip", "stop"):
        raise ValueError(f"on_oracle_error must be 'skip' or 'stop', got {on_oracle_error!r}")
    if interval < 1 or steps < 0:
        raise ValueError(f"interval must be >= 1 and steps >= 0 (got {interval}, {steps})")
    if refit_every is not None and train is None:
        raise ValueError("refit_every needs the model's training frames: pass train=")
    if new_points is None:
        new_points = 0 if train is None else 4
    if new_points < 0 or (new_points and train is None):
        raise ValueError(f"new_points={new_points} needs the model's training frames (pass "
                         "train=) and must be >= 0; new_points=0 keeps the sparse points")
    columns = _Columns(train, new_points)
    if train is not None:
        _check_oracle(oracle, train, "the training frames (train=)")
    model.check_fitted()
    sigma_f = float(model.noise_.forces)
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a positive number of noise sigmas, got {threshold}")
    limit = threshold * sigma_f
    run = OTFRun(model=model)
    store = _Checkpoint(checkpoint) if checkpoint is not None else None
    if store is not None:
        paid, state, log = store.read()
        if paid:
            _check_oracle(oracle, paid, f"the labels in {store.labels}")
            _fold(model, paid, condition=False)
            run.labels = list(paid)
            for frame in paid:
                columns.add(model, run.labels, frame,
                            frame.info.get("otf_sparse_atoms", np.zeros(0, dtype=int)),
                            new_rows=False)
        if state is not None:
            if not np.array_equal(state["numbers"], atoms.numbers):
                raise ValueError(f"the checkpoint {store.state} holds another system "
                                 f"({len(state['numbers'])} atoms) than atoms "
                                 f"({atoms.get_chemical_formula()}): give a new folder")
            atoms.cell = state["cell"]
            atoms.positions = state["positions"]
            atoms.set_momenta(state["momenta"])
            run.steps = int(state["step"])
        run.events = [OTFEvent(**e) for e in log.get("events", [])]
    calc = GAPCalculator(run.model, variance=False, forces_variance="exact")
    atoms.calc = calc
    dyn = dynamics(atoms)
    consecutive, since_fit = 0, 0
    run.stopped_reason = "steps done"
    while run.steps < steps:
        before, n_labels = dyn.nsteps, run.n_labels
        converged = dyn.run(steps=min(interval, steps - run.steps))
        run.steps += dyn.nsteps - before
        stalled = dyn.nsteps == before  # a converged optimizer: no step was taken
        sigma = _sigma_per_atom(calc, atoms)
        worst = int(np.argmax(sigma))
        s_max = float(sigma[worst])
        if s_max <= limit:
            run.events.append(OTFEvent(run.steps, s_max, limit, False, "below threshold",
                                       atom=worst))
            consecutive = 0
            if isinstance(dyn, Optimizer) and converged:  # a relaxation that is done
                run.stopped_reason = f"optimizer converged at step {run.steps}"
                break
        else:
            consecutive += 1
            if consecutive == max_consecutive:
                warnings.warn(f"{consecutive} checks in a row asked for a label (sigma "
                              f"{s_max:.3g} > {limit:.3g} eV/Å at step {run.steps}): the "
                              "threshold may be below what the model can reach; raise it",
                              UserWarning, stacklevel=2)
            t0 = time.perf_counter()
            try:
                frame = label([atoms], oracle, progress=False)[0]
                error = None if _finite_label(frame) else "label not finite"
            except Exception as exc:  # noqa: BLE001  (any oracle failure is recorded)
                cause = exc.__cause__ or exc  # the oracle's own error, not label()'s wrapper
                frame, error = None, f"oracle failed: {type(cause).__name__}: {cause}"
            oracle_s = time.perf_counter() - t0
            if error is not None:
                run.events.append(OTFEvent(run.steps, s_max, limit, False, error,
                                           oracle_s=oracle_s, atom=worst))
                if on_oracle_error == "stop":
                    run.stopped_reason = f"step {run.steps}: {error}"
                    break
            elif frame is not None:
                frame.info["otf_step"] = run.steps
                frame.info["otf_sigma_max"] = s_max
                unsure = np.argsort(-sigma)[:new_points]
                unsure = unsure[sigma[unsure] > limit]
                if unsure.size:
                    frame.info["otf_sparse_atoms"] = unsure.astype(np.int64)
                if store is not None:
                    store.add_label(frame)  # paid for: on disk before anything else
                run.labels.append(frame)
                since_fit += 1
                t0 = time.perf_counter()
                if refit_every is not None and since_fit >= refit_every:
                    if run.model.fit_info_.get("updates"):  # the model left behind
                        run.model.fit_info_["condition_number_R"] = condition_number(
                            run.model.R_)
                    run.model = clone(run.model).fit(list(train) + run.labels)
                    calc.model = run.model
                    since_fit = 0
                    columns.stored = None  # other sparse points: the rows again when needed
                else:
                    _fold(run.model, [frame], condition=False)
                    columns.add(run.model, run.labels, frame, unsure)
                calc.reset()
                run.events.append(OTFEvent(run.steps, s_max, limit, True,
                                           "sigma above threshold", oracle_s=oracle_s,
                                           update_s=time.perf_counter() - t0, atom=worst))
        if store is not None:
            store.save(atoms, run)
        if max_labels is not None and run.n_labels >= max_labels:
            run.stopped_reason = f"{run.n_labels} labels (max_labels)"
            break
        if stalled and run.n_labels == n_labels:  # nothing changed: the next check neither
            run.stopped_reason = f"no step taken at step {run.steps} and no label added"
            break
    if store is not None:
        store.save(atoms, run)
    if run.model.fit_info_.get("updates"):  # cond(R) once, of the factor the run ends with
        run.model.fit_info_["condition_number_R"] = condition_number(run.model.R_)
    return run
