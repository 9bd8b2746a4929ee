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
   lone outlier); or by the force variance its labels would remove from the whole pool
   (``"integrated"``, :class:`PoolDesign`: the GP's own Bayesian update, batch by batch);
   ``"random"`` is the baseline;
3. label the batch, refit, evaluate on a test set (force MAE eV/Å, energy MAE eV/atom)
   and repeat until the label budget or the pool is spent.

Every run records a :class:`LearningCurve`; :func:`compare_strategies` runs variance-based
and random selection with the same budget and seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ._compat import UNSET, renamed
from .data import get_all_labels
from .labelling import label
from .model import clone

__all__ = ["LearningCurve", "PoolDesign", "active_learning", "compare_strategies",
           "labels_to_reach", "select_batch", "select_coverage"]

STRATEGIES = ("energy", "forces", "coverage", "integrated", "random")
#: coverage length in units of the median nearest-neighbour fingerprint distance
COVERAGE_LENGTH = 2.0



@dataclass(frozen=True)
class LearningCurve:
    """Record of one active-learning run.

    Attributes
    ----------
    strategy : str
        ``"energy"``, ``"forces"``, ``"coverage"``, ``"integrated"`` or ``"random"``.
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


class PoolDesign:
    """The pool's labels as the GP sees them, for selection by integrated variance.

    A pool's structures are known before its labels: the model's terms choose sparse points
    ``Z`` from the pool's own environments (its kernels and sparse rule, the model's seed),
    and the latent energy is written ``f = K_xZ L^-T u`` with ``u ~ N(0, I)`` (``L L^T =
    K_ZZ`` plus the model's jitter). Each frame's energy and force rows ``B_j`` in these
    coordinates are computed once. With the frames labelled so far the posterior covariance
    of ``u`` is ``Sigma = (I + sum_j B_j^T S_j^-1 B_j)^-1`` (``S_j``: the model's noise of
    frame ``j``) and the summed variance of the target's force components ``tr(C Sigma)``,
    ``C`` the sum of the target's force rows ``B^T B``. Labelling frame ``x`` removes

        gain(x) = tr((S_x + B_x Sigma B_x^T)^-1 B_x Sigma C Sigma B_x^T)

    of it: a frame that many target environments resemble gains more than a lone outlier
    of larger variance, and after each pick ``Sigma`` is conditioned on it, so one batch
    does not label the same region twice. The target is the pool unless given (e.g. frames
    of the MD one means to run). Memory: the pool's force rows, ``3 N_atoms x M`` floats.
    Virials are not counted (energies and forces carry almost all the rows).
    """

    def __init__(self, model, pool: Sequence, *, target: Sequence | None = None,
                 n_sparse: int | None = None, batch_atoms: int = 2000):
        import dataclasses

        from .descriptors.base import frame_batches
        from .gp.design import functional_rows, kmm
        from .gp.sparse import cholesky_upper
        from .gp.sparse_sets import term_sparse_set

        terms = model.terms_
        if n_sparse is not None:
            terms = [dataclasses.replace(t, n_sparse=n_sparse) for t in terms]
        frames = [_unlabelled(a) for a in pool]
        missing = sorted({int(z) for a in frames for z in np.unique(a.numbers)}
                         - set(model.species_))
        if missing:
            raise ValueError(f"the pool has species {missing} that the model was fitted "
                             f"without (its species {list(model.species_)}): label a frame of "
                             "each species first, or give the descriptor species=[...]")
        seed = model.random_state
        sparse = [term_sparse_set(t, frames, None if seed is None else seed + i)
                  for i, t in enumerate(terms)]
        k = kmm(terms, sparse).to(torch.float64)
        upper = cholesky_upper(k, model.jitter)[0]  # U^T U = K_ZZ + the model's jitter

        def rows(some):
            """Whitened (energy (n, M), forces (n_atoms, 3, M)) rows of ``some`` frames."""
            e_all, f_all = [], []
            for start, stop in frame_batches(some, batch_atoms):
                block, e, f = list(some[start:stop]), [], []
                for term, z in zip(terms, sparse):
                    res = term.descriptor.compute(block, gradients=["positions"])
                    with torch.no_grad():
                        b = functional_rows(term.kernel, res, z, energy=True, forces=True,
                                            virial=False)
                    e.append(b["energy"])
                    f.append(b["forces"].reshape(-1, b["forces"].shape[-1]))
                for out, parts in ((e_all, e), (f_all, f)):
                    x = torch.cat(parts, dim=1).to(torch.float64)
                    out.append(torch.linalg.solve_triangular(upper, x, upper=True, left=False))
            return torch.cat(e_all), torch.cat(f_all)

        energy, forces = rows(frames)
        counts = [len(a) for a in frames]
        offsets = np.concatenate([[0], np.cumsum(counts)]) * 3
        #: per pool frame: the whitened energy row (1, M) and force rows (3 n, M)
        self.energy = [energy[j:j + 1] for j in range(len(frames))]
        self.forces = [forces[offsets[j]:offsets[j + 1]] for j in range(len(frames))]
        self.n_atoms = np.array(counts)
        self.config_types = [a.info.get("config_type") for a in frames]
        target_forces = forces if target is None else rows(
            [_unlabelled(a) for a in target])[1]
        #: C: the target's force Gram in the whitened coordinates (M, M)
        self.target_gram = target_forces.T @ target_forces
        self.n_sparse = int(k.shape[0])

    def _scaled(self, j: int, noise) -> "torch.Tensor":
        """Frame ``j``'s rows divided by their noise (the model's, for its config_type)."""
        ct = self.config_types[j]
        s_e = noise.sigma("energy", ct) * (np.sqrt(self.n_atoms[j]) if noise.per_atom else 1.0)
        return torch.cat([self.energy[j] / s_e, self.forces[j] / noise.sigma("forces", ct)])

    def gains(self, labelled: Sequence[int], candidates: Sequence[int], noise,
              batch_size: int, scale: float = 1.0) -> tuple[list[int], np.ndarray]:
        """Greedy batch of ``batch_size`` pool indices out of ``candidates`` with the frames
        ``labelled`` known and ``noise`` (a NoiseModel) times ``scale``: each pick the
        largest gain (eV^2/Å^2, summed over the target's force components) given the picks
        before it.

        Returns the picks and their gains."""
        m = self.n_sparse
        precision = torch.eye(m, dtype=torch.float64)
        if len(labelled):
            known = torch.cat([self._scaled(j, noise) for j in labelled])
            precision += known.T @ known / scale ** 2
        scaled = {j: self._scaled(j, noise) / scale for j in candidates}
        chosen: list[int] = []
        gains: list[float] = []
        for _ in range(min(batch_size, len(candidates))):
            factor = torch.linalg.cholesky(precision)
            cov = torch.cholesky_inverse(factor)
            g = cov @ self.target_gram @ cov
            best, best_gain = -1, -np.inf
            for j in candidates:
                if j in chosen:
                    continue
                b = scaled[j]
                h = torch.eye(b.shape[0], dtype=b.dtype) + b @ cov @ b.T
                n = b @ g @ b.T
                gain = float(torch.cholesky_solve(n, torch.linalg.cholesky(h)).trace())
                if gain > best_gain:
                    best, best_gain = j, gain
            chosen.append(best)
            gains.append(best_gain)
            precision += scaled[best].T @ scaled[best]
        return chosen, np.array(gains)


def _label_scale(model, frames) -> float:
    """How much less a new label tells the model than its noise says: the force RMSE of
    ``model`` on ``frames`` before it saw their labels, over its force sigma (at least 1).
    A model short of sparse points or descriptor resolution cannot follow its labels to
    within their noise; this is what each label can still teach it."""
    pred = model.predict(frames, return_variance=False)
    ref = np.concatenate([lab.forces for lab in get_all_labels(frames, **model.keys)])
    rmse = float(np.sqrt(np.mean((pred.forces - ref) ** 2)))
    return max(1.0, rmse / model.noise_.sigma("forces"))


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
                    target: Sequence | None = None, explore: float = 0.0,
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
    strategy : {"forces", "energy", "coverage", "integrated", "random"}
        Selection by the largest predicted force variance (max over atoms of the
        mean component variance, eV^2/Å^2, in the form ``forces_variance``), per-atom
        energy variance
        (eV^2/atom^2, DTC form), the force variance a frame covers in the pool
        (:func:`select_coverage`, correlation length ``COVERAGE_LENGTH`` times the median
        nearest-neighbour fingerprint distance; ``diversity`` is not used), the force
        variance a frame's labels remove from the pool (or from ``target``) by the GP's
        Bayesian update (``"integrated"``, :class:`PoolDesign`; the pool's design rows are
        computed once, with the first fit's kernels), or at random (the baseline).
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
    target : list of ase.Atoms, optional
        For ``strategy="integrated"``: the frames whose force variance the labels should
        remove (e.g. snapshots of the simulation one means to run); default the pool.
    explore : float
        Share of each batch (rounded half up) drawn at random before the rule picks the rest
        given those frames: a guard against the rule's sampling bias (a rule that chases
        the largest variances can leave whole kinds of structure unlabelled); 0, the
        default, leaves the rule alone; not read by ``strategy="random"``.
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
    if target is not None and strategy != "integrated":
        raise ValueError(f"target= is read only by strategy='integrated' (got strategy="
                         f"{strategy!r}): leave it out or select by 'integrated'")
    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"explore is the share of each batch drawn at random: a number "
                         f"from 0 to 1, got {explore!r}")
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
    fingerprints = d0 = design = None
    scale = 1.0
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
        # a share of the batch drawn at random first (the rule then picks the rest given
        # them): a guard against the rule's own sampling bias
        n_explore = 0 if strategy == "random" else min(n_pick, int(explore * n_pick + 0.5))
        explored = (sorted(pick_rng.choice(remaining, size=n_explore, replace=False).tolist())
                    if n_explore else [])
        taken = set(explored)
        cand = [i for i in remaining if i not in taken]
        n_rule = n_pick - n_explore
        if strategy == "random":
            local = sorted(pick_rng.choice(len(cand), size=n_pick, replace=False).tolist())
            sc = np.full(n_pick, np.nan)
        elif n_rule == 0:
            local, sc = [], np.zeros(0)
        elif strategy == "integrated":
            if design is None:  # the pool's rows: its structures are fixed, so once
                design = PoolDesign(fitted, pool, target=target)
            done = [i for batch in selected for i in batch] + explored
            picked, sc = design.gains(done, cand, fitted.noise_, n_rule, scale)
            local = [cand.index(i) for i in picked]
        else:
            cands = [_unlabelled(pool[i]) for i in cand]
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
                fp = fingerprints[cand]
            if strategy == "coverage":
                local = select_coverage(score, fp, n_rule, (d0 or 1.0) * COVERAGE_LENGTH)
            else:
                local = select_batch(score, fp, n_rule, diversity, d0 or 1.0)
            sc = score[local]
        picked = explored + [cand[j] for j in local]
        sc = np.concatenate([np.full(n_explore, np.nan), np.asarray(sc, dtype=float)])
        new = [label_fn(pool[i]) for i in picked]
        if strategy == "integrated":
            scale = _label_scale(fitted, new)
        labelled.extend(new)
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
