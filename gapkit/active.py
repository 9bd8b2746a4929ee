"""Active learning: ask for reference labels where the GAP is least sure.

A pool of candidate frames (unlabelled, or with labels that stay hidden until a frame
is selected), a *labeller* (any ASE calculator: EMT/LJ in tests, DFT for users), and a
loop:

1. label ``n_initial`` random frames of the pool and fit;
2. predict the remaining pool with variances and select a batch: the frames with the
   largest predicted per-atom energy variance (``strategy="energy"``, eV^2/atom^2) or
   force variance (``"forces"``: the largest over a frame's atoms of the mean
   force-component variance, eV^2/Å^2), with a diversity rule so that one batch does
   not pick near-duplicates; or by the force variance a frame *covers* in the pool
   (``"coverage"``, :func:`select_coverage`: a frame in a dense uncertain region before a
   lone outlier); ``"random"`` is the baseline;
3. label the batch, refit, evaluate on a test set (force MAE eV/Å, energy MAE eV/atom)
   and repeat until the label budget or the pool is spent.

Every run records a :class:`LearningCurve`; :func:`compare_strategies` runs variance-based
and random selection with the same budget and seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ._compat import UNSET, renamed
from .data import get_all_labels
from .labelling import label
from .model import clone

__all__ = ["LearningCurve", "active_learning", "compare_strategies", "labels_to_reach",
           "select_batch", "select_coverage"]

STRATEGIES = ("energy", "forces", "coverage", "random")
#: coverage length in units of the median nearest-neighbour fingerprint distance
COVERAGE_LENGTH = 2.0



@dataclass(frozen=True)
class LearningCurve:
    """Record of one active-learning run.

    Attributes
    ----------
    strategy : str
        ``"energy"``, ``"forces"`` or ``"random"``.
    seed : int
    n_labelled : ndarray of int
        Labelled frames after each fit.
    n_atoms_labelled : ndarray of int
        Labelled atoms after each fit.
    force_mae, energy_mae : ndarray
        Test-set force MAE (eV/Å) and energy MAE per atom (eV/atom) after each fit
        (nan without a test set).
    selected : tuple of tuple of int
        Pool indices labelled at each step (the first entry: the initial set).
    scores : tuple of ndarray
        Selection scores of the chosen frames (variance units; random: nan).
    stopped_reason : str
        Why the loop ended.
    model : gapkit.GAP or None
        The last fitted model (None if nothing could be fitted).
    """

    strategy: str
    seed: int
    n_labelled: np.ndarray
    n_atoms_labelled: np.ndarray
    force_mae: np.ndarray
    energy_mae: np.ndarray
    selected: tuple
    scores: tuple
    stopped_reason: str
    model: object = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-friendly summary (without the model)."""
        return {"strategy": self.strategy, "seed": self.seed,
                "n_labelled": self.n_labelled.tolist(),
                "n_atoms_labelled": self.n_atoms_labelled.tolist(),
                "force_mae_eV_per_A": self.force_mae.tolist(),
                "energy_mae_eV_per_atom": self.energy_mae.tolist(),
                "selected": [list(map(int, s)) for s in self.selected],
                "stopped_reason": self.stopped_reason}


def _labeller(labeller) -> Callable:
    """A function atoms -> labelled atoms (a copy)."""
    if labeller is None:
        def from_frame(atoms):  # labels are in the frame, revealed only now
            frame = atoms.copy()
            if atoms.calc is not None:  # e.g. a SinglePointCalculator from ase.io.read
                frame.calc = atoms.calc
            return frame
        return from_frame
    from ase.calculators.calculator import BaseCalculator

    if isinstance(labeller, BaseCalculator):
        def with_calc(atoms):  # generate.label copies the frame and drops its old labels
            return label([atoms], labeller, progress=False)[0]
        return with_calc
    if callable(labeller):
        return labeller
    raise TypeError(f"labeller must be an ASE calculator, a callable or None, got "
                    f"{type(labeller).__name__}")


def _unlabelled(atoms):
    """A copy without labels (what the model may see of a pool frame)."""
    frame = atoms.copy()
    frame.calc = None
    for key in ("energy", "virial", "stress", "free_energy", "REF_energy"):
        frame.info.pop(key, None)
    for key in ("forces", "REF_forces"):
        if key in frame.arrays:
            del frame.arrays[key]
    return frame


def _fingerprints(model, frames) -> np.ndarray:
    """Per-frame mean descriptor of the first term, unit-normalised (for diversity)."""
    term = model.terms_[0]
    res = term.descriptor.compute(frames)
    values = np.asarray(res.values, dtype=float)
    n = len(frames)
    out = np.zeros((n, values.shape[1]))
    np.add.at(out, np.asarray(res.centre_structure), values)
    counts = np.bincount(np.asarray(res.centre_structure), minlength=n)[:, None]
    out /= np.maximum(counts, 1)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-300)
    return out


def select_batch(scores: np.ndarray, fingerprints: np.ndarray | None, batch_size: int,
                 diversity: float, d0: float) -> list[int]:
    """Greedy batch: repeatedly take the largest ``score * min(1, d / (diversity d0))``,
    ``d`` the fingerprint distance to the frames already in the batch."""
    scores = np.asarray(scores, dtype=float)
    chosen: list[int] = []
    d_min = np.full(scores.size, np.inf)
    for _ in range(min(batch_size, scores.size)):
        adj = scores.copy()
        if diversity > 0 and fingerprints is not None and chosen:
            adj = adj * np.minimum(1.0, d_min / (diversity * d0))
        adj[chosen] = -np.inf
        k = int(np.argmax(adj))
        chosen.append(k)
        if fingerprints is not None:
            d_min = np.minimum(d_min, np.linalg.norm(fingerprints - fingerprints[k], axis=1))
    return chosen


def select_coverage(variance: np.ndarray, fingerprints: np.ndarray, batch_size: int,
                    length: float) -> list[int]:
    """Greedy batch by the uncertainty a frame covers in the pool, not its own.

    Frame ``x``'s gain is ``sum_p rho(p, x)^2 v_p`` over the candidates ``p`` (``v``: their
    predicted variances, ``rho = exp(-d^2 / 2 length^2)`` of the fingerprint distance), the
    variance that labelling ``x`` would explain if the GP's correlations were ``rho``: a
    lone outlier gains only its own ``v``, a frame in a dense uncertain region gains its
    neighbours' too. After each pick the candidates' variances are conditioned on it,
    ``v_p <- v_p (1 - rho(p, x)^2)``, so one batch does not cover one region twice.
    """
    v = np.asarray(variance, dtype=float).copy()
    d2 = ((fingerprints[:, None, :] - fingerprints[None, :, :]) ** 2).sum(-1)
    rho2 = np.exp(-d2 / length ** 2)  # rho^2
    chosen: list[int] = []
    for _ in range(min(batch_size, v.size)):
        gain = rho2 @ v
        gain[chosen] = -np.inf
        k = int(np.argmax(gain))
        chosen.append(k)
        v *= 1.0 - rho2[:, k]
    return chosen


def _evaluate(model, test) -> tuple[float, float]:
    if not test:
        return float("nan"), float("nan")
    pred = model.predict(test, return_variance=False)
    labels = get_all_labels(test, **model.keys)
    f_ref = np.concatenate([lab.forces for lab in labels])
    e_ref = np.array([lab.energy for lab in labels])
    return (float(np.abs(pred.forces - f_ref).mean()),
            float(np.abs((pred.energy - e_ref) / pred.n_atoms).mean()))


def active_learning(model, pool: Sequence, labeller=None, *, test: Sequence | None = None,
                    strategy: str = "forces", n_initial: int = 5, batch_size: int = 5,
                    max_labels: int = 50, diversity: float = 1.0, seed: int = 0,
                    forces_variance: str = "exact", verbose: bool = False,
                    force_variance=UNSET) -> LearningCurve:
    """Run an active-learning loop and return its learning curve.

    Parameters
    ----------
    model : gapkit.GAP
        Template: its settings are copied for every fit (it is not modified).
    pool : list of ase.Atoms
        Candidate frames. Their labels, if any, are hidden from the model until a frame
        is selected (``labeller=None`` then reveals them).
    labeller : ASE calculator, callable or None
        Computes reference energy (eV), forces (eV/Å) and, for periodic frames,
        virial (eV) of a selected frame; a callable takes and returns ``ase.Atoms``
        with labels; ``None``: the pool frames carry the labels already.
    test : list of ase.Atoms, optional
        Labelled frames for the learning curve (force MAE eV/Å, energy MAE eV/atom).
    strategy : {"forces", "energy", "coverage", "random"}
        Selection by the largest predicted force variance (max over atoms of the
        mean component variance, eV^2/Å^2, in the form ``forces_variance``), per-atom
        energy variance
        (eV^2/atom^2, DTC form), the force variance a frame covers in the pool
        (:func:`select_coverage`, correlation length ``COVERAGE_LENGTH`` times the median
        nearest-neighbour fingerprint distance; ``diversity`` is not used), or at random
        (the baseline).
    n_initial : int
        Random frames labelled before the first fit (the same for every strategy at a
        given seed).
    batch_size : int
        Frames labelled per iteration.
    max_labels : int
        Label budget: frames labelled in total, initial set included.
    diversity : float
        Batch diversity: a candidate's score is damped by ``min(1, d / (diversity d0))``
        with ``d`` its distance (mean-SOAP fingerprint) to frames already in the batch
        and ``d0`` the median nearest-neighbour distance in the pool; 0 disables.
    seed : int
        Seeds the initial set, the random baseline and the sparse-point selection.
    forces_variance : {"exact", "projected"}
        Form of the force variance for ``strategy="forces"`` (see
        :meth:`gapkit.GAP.predict`): ``"exact"`` (default; the calibrated one, its cost
        grows with the square of the neighbour count) or the cheaper ``"projected"``.

    Returns
    -------
    LearningCurve
        With ``stopped_reason`` saying why the loop ended ("label budget of N frames
        reached", "the pool is empty", "the pool is exhausted"). An empty pool is not an
        error: nothing is fitted and the curve is empty.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {list(STRATEGIES)}")
    forces_variance = renamed(force_variance, forces_variance, "force_variance",
                              "forces_variance", "active_learning")
    if forces_variance not in ("exact", "projected"):
        raise ValueError(f"forces_variance must be 'exact' or 'projected', got "
                         f"{forces_variance!r}")
    if n_initial < 1 or batch_size < 1 or max_labels < 1:
        raise ValueError("n_initial, batch_size and max_labels must be >= 1")
    pool = list(pool)
    test = list(test) if test is not None else []
    label_fn = _labeller(labeller)
    rng = np.random.default_rng(seed)
    pick_rng = np.random.default_rng([seed, 1])

    def say(msg):
        if verbose:
            print(msg)

    curve = {"n": [], "atoms": [], "f": [], "e": []}
    selected, scores = [], []

    def finish(reason, fitted=None):
        say(f"active learning ({strategy}, seed {seed}) stopped: {reason}")
        return LearningCurve(strategy=strategy, seed=seed,
                             n_labelled=np.array(curve["n"], dtype=int),
                             n_atoms_labelled=np.array(curve["atoms"], dtype=int),
                             force_mae=np.array(curve["f"], dtype=float),
                             energy_mae=np.array(curve["e"], dtype=float),
                             selected=tuple(tuple(s) for s in selected),
                             scores=tuple(scores), stopped_reason=reason, model=fitted)

    if not pool:
        return finish("the pool is empty: there is nothing to label")
    remaining = list(range(len(pool)))
    first = sorted(rng.choice(len(pool), size=min(n_initial, len(pool), max_labels),
                              replace=False).tolist())
    labelled = [label_fn(pool[i]) for i in first]
    remaining = [i for i in remaining if i not in set(first)]
    selected.append(first)
    scores.append(np.full(len(first), np.nan))
    fingerprints = d0 = None
    fitted = None
    while True:
        fitted = clone(model)
        fitted.random_state = (model.random_state or 0) + seed
        fitted.fit(labelled)
        f_mae, e_mae = _evaluate(fitted, test)
        curve["n"].append(len(labelled))
        curve["atoms"].append(sum(len(a) for a in labelled))
        curve["f"].append(f_mae)
        curve["e"].append(e_mae)
        say(f"  {len(labelled):4d} frames labelled: force MAE {f_mae:.4f} eV/Å, "
            f"energy MAE {1e3 * e_mae:.2f} meV/atom")
        if len(labelled) >= max_labels:
            return finish(f"label budget of {max_labels} frames reached", fitted)
        if not remaining:
            return finish("the pool is exhausted: every candidate frame is labelled", fitted)
        n_pick = min(batch_size, max_labels - len(labelled), len(remaining))
        cands = [_unlabelled(pool[i]) for i in remaining]
        if strategy == "random":
            local = sorted(pick_rng.choice(len(remaining), size=n_pick, replace=False).tolist())
            sc = np.full(n_pick, np.nan)
        else:
            if strategy == "energy":
                pred = fitted.predict(cands, forces=False, virial=False, forces_variance=None)
                score = pred.energy_variance / pred.n_atoms ** 2
            else:
                pred = fitted.predict(cands, forces=True, virial=False,
                                      forces_variance=forces_variance)
                per_atom = pred.forces_variance.mean(axis=1)
                score = np.maximum.reduceat(per_atom, pred.atom_offsets[:-1])
            fp = None
            if (diversity > 0 and n_pick > 1) or strategy == "coverage":
                if fingerprints is None:  # the descriptor is fixed: compute once
                    fingerprints = _fingerprints(fitted, [_unlabelled(a) for a in pool])
                    d = np.linalg.norm(fingerprints[:, None] - fingerprints[None], axis=-1)
                    np.fill_diagonal(d, np.inf)
                    nn = d.min(1)
                    d0 = float(np.median(nn[np.isfinite(nn)])) if np.isfinite(nn).any() else 1.0
                    d0 = d0 if d0 > 0 else 1.0
                fp = fingerprints[remaining]
            if strategy == "coverage":
                local = select_coverage(score, fp, n_pick, (d0 or 1.0) * COVERAGE_LENGTH)
            else:
                local = select_batch(score, fp, n_pick, diversity, d0 or 1.0)
            sc = score[local]
        picked = [remaining[j] for j in local]
        labelled.extend(label_fn(pool[i]) for i in picked)
        remaining = [i for i in remaining if i not in set(picked)]
        selected.append(picked)
        scores.append(np.asarray(sc))


def compare_strategies(model, pool, labeller=None, *, test=None,
                       strategies: Sequence[str] = ("forces", "random"),
                       seeds: Sequence[int] = (0, 1, 2), **kw) -> dict[str, list]:
    """Run :func:`active_learning` for each strategy and seed, with the same budget,
    initial sets and sparse-point seeds; returns ``{strategy: [LearningCurve, ...]}``."""
    return {s: [active_learning(model, pool, labeller, test=test, strategy=s, seed=seed, **kw)
                for seed in seeds] for s in strategies}


def labels_to_reach(curve: LearningCurve, target_mae: float) -> float:
    """Labelled frames after which the test force MAE first drops to ``target_mae``
    (eV/Å) or below; ``inf`` if it never does."""
    hit = np.nonzero(curve.force_mae <= target_mae)[0]
    return float(curve.n_labelled[hit[0]]) if hit.size else float("inf")
