"""``auto``: the descriptor settings chosen by cross-validation, within a CPU budget.

:meth:`gapkit.GAP.auto` (``gapkit fit --auto --budget 20min``) searches the SOAP cutoff,
``n_max``/``l_max``, ``atom_sigma``, the kernel's ``zeta``, the number of sparse points and
an added two-body term. Every candidate is scored by the K-fold cross-validation of
:mod:`gapkit.gp.cv` -- the held-out energy and force errors, with the noise chosen inside
the candidate, on folds that are the same for every candidate -- as the noise itself is
chosen: ``E_MAE / E_MAE(default) + F_MAE / F_MAE(default)``, the default settings
(:func:`gapkit.terms.default_terms`) being always the first candidate, so the search
never returns settings that score worse than the defaults on the folds.

The search is successive halving: all candidates (a seeded sample of the grid
:data:`SPACE`, cheapest first by an estimate of their cost) on a seeded subset of the
frames, stratified by config_type; the best third on a subset three times larger; the
last few on all frames with the full fit (noise by cross-validation and the calibrated
predictive variance). The budget is CPU time (``time.process_time``, all threads); each
rung may spend an equal share of what is free (the budget less one candidate's fit on
every later rung: rung 0 of three a third, rung 1 half of what is then free, the last
rung the rest), so that neither the first rung starves the later ones nor a pessimistic
estimate of them starves the first; costs are estimated by :func:`estimate_cost`
(``A n + B n^3`` in the frames). A candidate estimated to cost more than its rung's share
leaves is passed over for the next one, on the last rung too (the notes name it).
The table of every candidate tried, and why the winner won, is ``fit_info_["auto"]`` of
the returned model (saved with it: ``gapkit info`` prints it).

Bad input and accidents: a budget too small for one fit of the data is a ``ValueError``
naming the smallest that works (measured on the first candidate); a candidate that runs
out of memory is skipped with a note; Ctrl-C stops the search and keeps the best so far
(fitted on all frames if it was not yet), and the table says so. Cutoffs longer than the
largest distance within any non-periodic frame (a molecule) + 1 Å see the same neighbours
as the shortest such one (every atom of the molecule) and are not tried; only their radial
basis differs, scaled to the cutoff.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT", "SPACE", "auto_fit", "candidate_terms", "estimate_cost", "max_sparse",
           "parse_budget", "summary"]

#: the settings searched (``sparse_factor`` multiplies ``n_sparse="auto"``'s count on all
#: frames; ``inf``: every environment; each capped at the number of environments and at
#: what the memory allows, :func:`max_sparse`)
SPACE: dict[str, tuple] = {
    "cutoff": (4.0, 5.0, 6.0),
    "n_max_l_max": ((6, 4), (8, 6), (10, 6)),
    "atom_sigma": (0.3, 0.5, 0.7),
    "zeta": (2, 4),
    "sparse_factor": (1.0, 2.0, 4.0, math.inf),
    "two_body": (False, True),
}
#: M x M float64 matrices a fit with M sparse points holds at its peak, per fold and
#: beyond them: the noise CV's force Gram of each fold, and K_MM, U, the weighted sum, its
#: Cholesky factor and R (measured: rMD17 aspirin, M 8,000, 5 folds)
MATRICES_PER_FOLD, MATRICES_BESIDE = 1, 5
#: the share of the memory a search lets the sparse-point matrices take (the design cache
#: takes a quarter, :func:`gapkit.gp.design.default_cache_bytes`)
MEMORY_SHARE = 0.5
#: today's default settings (:func:`gapkit.terms.default_terms`), always candidate 0
DEFAULT = {"cutoff": 5.0, "n_max_l_max": (8, 6), "atom_sigma": 0.5, "zeta": 4,
           "sparse_factor": 1.0, "two_body": False}
#: halving factor: each rung keeps a third of its candidates, on three times the frames
ETA = 3
#: the smallest frame subset a rung uses (5-fold cross-validation needs a few per fold)
MIN_RUNG_FRAMES = 20
#: the least a fit's CPU grows with the frames, frames^COST_EXPONENT (the "budget too
#: small" check): measured, default settings, Zuo Si 23 -> 214 frames 1.66, Cu 29 -> 87 1.4
COST_EXPONENT = 1.5
#: a candidate's CPU on n frames is modelled as ``A n + B n^3`` (descriptors and design
#: rows grow as the frames, the solves as frames x M^2 with M growing as the frames);
#: through one measurement, the cubic part is this share of it (fitted to the default's
#: three fits on Zuo Cu, 6.5 / 29.9 / 340 CPU-s on 29 / 87 / 262 frames, 6 %; Si 4 %).
#: A frames^1.5 rule under-estimated the last rung 3-6x (Li: 8.5 -> 178 CPU-s for 3x the
#: frames; Cu: 77 -> over 1,000), so the search overran its budget.
CUBIC_SHARE = 0.05
#: candidates sampled from the grid (the default included)
N_CANDIDATES = 27

_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}


def estimate_cost(points, n: int, m: float | None = None) -> float:
    """CPU-s of a fit on ``n`` frames with ``m`` sparse points (default: grown with the
    frames from the last fit's) from a candidate's fits ``points``: ``(frames, CPU-s)``
    or ``(frames, CPU-s, dense CPU-s, M)``.

    With the dense part of two fits measured (:func:`gapkit.gp.sparse.dense_cpu`: Gram
    products, Cholesky and QR factors), the model follows the work: the dense part of the
    last fit grows as ``n M^2``; the rest (descriptors, kernel rows, sparse-point choice)
    is ``a n + b n M`` through the two fits, and the sum is at least ``A n + B n^3``
    through the last fit with :data:`CUBIC_SHARE` cubic. Otherwise (one fit, or no split)
    the largest of ``A n + B n^3`` through the last two fits and those through each fit
    with the cubic share: one small fit cannot tell its descriptors (n) from its kernel
    rows (n M), and the dense part of a small fit is mostly overhead (Zuo Cu's default on
    29 frames: the split model made its fit on 262 frames 1,150 CPU-s, where 340 were
    measured, so a 12-minute search tried one candidate per rung). Small subsets are dominated by
    costs linear in the frames, so a curve through two of them alone can under-estimate a
    larger fit (Li: 19 against 110 CPU-s measured), and one point alone misses a steep
    growth (Cu: 650 against over 1,000); a cubic through two fits, on the other hand,
    reads the growth of the kernel rows (n M) as that of the solves (n M^2): rMD17
    ethanol's every-environment fit, 735 CPU-s where 436 were measured (this model: 561)."""
    def floor(p) -> float:
        return (1 - CUBIC_SHARE) * p[1] * n / p[0] + CUBIC_SHARE * p[1] * (n / p[0]) ** 3

    split = [p for p in points if len(p) >= 4 and p[3] > 0]
    if len(split) >= 2 and split[-2][3] != split[-1][3]:
        (n0, c0, d0, m0), (n1, c1, d1, m1) = split[-2], split[-1]
        m = m1 * n / n1 if m is None else m
        b = max(((c1 - d1) / n1 - (c0 - d0) / n0) / (m1 - m0), 0.0)
        a = max((c1 - d1) / n1 - b * m1, 0.0)
        return max(floor(split[-1]), a * n + b * n * m + d1 * (n / n1) * (m / m1) ** 2)
    out = max(floor(p) for p in points)
    if len(points) >= 2 and points[-2][0] != points[-1][0]:
        (n0, c0), (n1, c1) = points[-2][:2], points[-1][:2]
        b = max((c1 / n1 - c0 / n0) / (n1**2 - n0**2), 0.0)
        a = max(c1 / n1 - b * n1**2, 0.0)
        out = max(out, a * n + b * n**3)
    return out


def max_sparse(memory_bytes: float, n_folds: int = 5) -> int:
    """The most sparse points whose M x M matrices (:data:`MATRICES_PER_FOLD` per fold and
    :data:`MATRICES_BESIDE`, float64) fit in ``memory_bytes``."""
    per_m2 = 8.0 * (MATRICES_PER_FOLD * n_folds + MATRICES_BESIDE)
    return max(1, int(math.sqrt(max(memory_bytes, 0.0) / per_m2)))


def parse_budget(budget) -> float:
    """CPU seconds of ``budget``: a number (seconds) or a string such as ``"90s"``,
    ``"20min"``, ``"1.5h"``."""
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        seconds = float(budget)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", str(budget).lower())
        if not match or match.group(2) not in ("", *_UNITS):
            raise ValueError(f"budget {budget!r} is not a CPU time: give seconds or a string "
                             "such as '90s', '20min' or '1.5h'")
        seconds = float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1.0)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"budget must be a positive CPU time, got {budget!r}")
    return seconds


def candidate_terms(settings: dict, n_sparse) -> list:
    """The terms of one candidate: a SOAP term (cutoff width 1 Å, CUR points) and, with
    ``two_body``, a two-body term of the same cutoff (uniform points, 20 per species
    pair)."""
    from .descriptors import SOAP, TwoBody
    from .kernels import SOAPKernel, TwoBodyKernel
    from .terms import Term

    n_max, l_max = settings["n_max_l_max"]
    cutoff = float(settings["cutoff"])
    terms = [Term(SOAP(cutoff=cutoff, cutoff_width=1.0, n_max=int(n_max), l_max=int(l_max),
                       atom_sigma=float(settings["atom_sigma"])),
                  SOAPKernel(zeta=int(settings["zeta"]), delta=1.0), n_sparse=n_sparse,
                  sparse_method="cur")]
    if settings["two_body"]:
        terms.append(Term(TwoBody(cutoff=cutoff, cutoff_width=1.0),
                          TwoBodyKernel(lengthscale=0.5, delta=0.3), n_sparse=20,
                          sparse_method="uniform"))
    return terms


def _label(settings: dict) -> str:
    n, l = settings["n_max_l_max"]
    factor = settings["sparse_factor"]
    sparse = "M all" if math.isinf(factor) else f"M x{factor:g}"
    return (f"rc {settings['cutoff']:g} n{n} l{l} sigma {settings['atom_sigma']:g} "
            f"zeta {settings['zeta']} {sparse}"
            + (" +2b" if settings["two_body"] else ""))


def _relative_cost(settings: dict, all_factor: float = 8.0) -> float:
    """A rough cost of a candidate relative to the default: the design pass scales with
    the sparse points, the power spectrum's width and the neighbours in the sphere
    (``all_factor``: the multiple of the default points that "every environment" is)."""
    n, l = settings["n_max_l_max"]
    n0, l0 = DEFAULT["n_max_l_max"]
    width = n * n * (l + 1) / (n0 * n0 * (l0 + 1))
    factor = min(settings["sparse_factor"], all_factor)
    return (factor * (0.5 + 0.5 * width)
            * (settings["cutoff"] / DEFAULT["cutoff"]) ** 3 * (1.2 if settings["two_body"]
                                                               else 1.0))


def _candidates(space: dict, rng, n_candidates: int, max_cutoff: float | None) -> list[dict]:
    keys = list(SPACE)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if max_cutoff is not None:  # molecules: cutoffs past every distance see the same atoms
        longest = [g for g in grid if g["cutoff"] >= max_cutoff]
        if longest:
            shortest = min(g["cutoff"] for g in longest)
            grid = [g for g in grid if g["cutoff"] < max_cutoff or g["cutoff"] == shortest]
    # the defaults, or the middle value of a setting whose space leaves them out
    default = {k: DEFAULT[k] if DEFAULT[k] in space[k] else space[k][(len(space[k]) - 1) // 2]
               for k in keys}
    rest = [g for g in grid if g != default]
    chosen = [rest[i] for i in rng.permutation(len(rest))[:max(0, n_candidates - 1)]]
    return [default] + chosen


def _subsets(config_types: Sequence[str], rng) -> list[np.ndarray]:
    """Nested frame subsets, a factor ETA apart, the last all frames: frames shuffled
    within each config_type and dealt round-robin, so every prefix is stratified."""
    cts = np.asarray(config_types, dtype=object)
    order: list[int] = []
    queues = [list(rng.permutation(np.nonzero(cts == ct)[0])) for ct in sorted(set(cts))]
    while any(queues):
        for q in queues:
            if q:
                order.append(int(q.pop()))
    n = len(order)
    sizes = [n]
    while sizes[0] // ETA >= MIN_RUNG_FRAMES and len(sizes) < 3:
        sizes.insert(0, sizes[0] // ETA)
    return [np.sort(np.array(order[:s])) for s in sizes]


def _score_row(report: dict | None, explicit_noise: bool) -> dict | None:
    """The held-out MAEs a fit's noise cross-validation reports at the noise used."""
    if not report or not report.get("table"):
        return None
    if explicit_noise:
        return next(r for r in report["table"] if r["energy"] == 1.0 and r["virial"] == 1.0)
    return report["best"]


def _is_memory_error(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and "memory" in str(err).lower())


def auto_fit(frames, *, template, budget="20min", random_state: int = 0,
             space: dict | None = None, n_candidates: int = N_CANDIDATES,
             log: Callable[[str], None] | None = None, memory: float | None = None):
    """Search the settings and return the fitted :class:`~gapkit.GAP` of the winner (see
    the module docstring). ``template``: a :class:`~gapkit.GAP` whose settings other than
    ``terms`` (keys, e0, noise, baselines, batch size) every candidate keeps (this module
    sits below :mod:`gapkit.model`, which calls it: it copies the template by its
    ``get_params``, as :func:`gapkit.clone`); ``space``
    overrides entries of :data:`SPACE`; ``log`` receives one line per step (None: quiet);
    ``memory`` (bytes, default :func:`gapkit.gp.design.usable_memory`) caps the sparse points at
    :func:`max_sparse` of :data:`MEMORY_SHARE` of it (stated in the report).
    """
    from .data.files import as_frames
    from .gp.cv import MIN_FRAMES
    from .gp.design import design_cache, usable_memory
    from .gp.sparse import dense_cpu
    from .gp.sparsify import auto_sparse_count

    cpu_start = time.process_time()
    limit = parse_budget(budget)
    frames = as_frames(frames, **template.keys)
    if len(frames) < MIN_FRAMES:
        raise ValueError(
            f"auto scores settings by cross-validation over frames, which needs at least "
            f"{MIN_FRAMES} frames; got {len(frames)}: give more frames, or the settings "
            "yourself (GAP(terms) or gapkit fit's soap_* keys)")
    space = {**SPACE, **(space or {})}
    unknown = set(space) - set(SPACE)
    if unknown:
        raise ValueError(f"unknown settings in space: {sorted(unknown)}; searchable: "
                         f"{list(SPACE)}")
    say = log or (lambda line: None)
    rng = np.random.default_rng(random_state)
    explicit_noise = template.noise is not None
    n_env = sum(len(a) for a in frames)
    m_auto = auto_sparse_count(n_env)
    memory = float(usable_memory() if memory is None else memory)
    m_cap = max_sparse(MEMORY_SHARE * memory)
    all_factor = min(n_env, m_cap) / m_auto
    molecules = [a for a in frames if not np.any(a.pbc)]
    max_cutoff = None
    if molecules and len(molecules) == len(frames):
        max_cutoff = max(float(a.get_all_distances().max()) for a in molecules) + 1.0
    candidates = _candidates(space, rng, n_candidates, max_cutoff)
    first = candidates[0]
    candidates.sort(key=lambda c: (c != first, _relative_cost(c, all_factor)))
    cts = [str(a.info.get(template.config_type_key, "default")) for a in frames]
    subsets = _subsets(cts, rng)
    rows: list[dict] = []
    report: dict[str, Any] = {"budget_cpu_s": limit, "random_state": random_state,
                              "n_frames": len(frames), "rungs": [len(s) for s in subsets],
                              "interrupted": False, "notes": [],
                              "memory_gb": round(memory / 2**30, 2), "max_sparse": m_cap}
    if m_cap < n_env:
        report["notes"].append(
            f"sparse points at most {m_cap} ({MEMORY_SHARE:.0%} of {memory / 2**30:.1f} GB "
            f"for the M x M matrices; every environment would be {n_env})")

    def spent() -> float:
        return time.process_time() - cpu_start

    def n_sparse(settings: dict, subset: np.ndarray) -> int:
        """The sparse points of a candidate on the frames ``subset``: its share of those
        on all frames."""
        share = len(subset) / len(frames)
        target = min(settings["sparse_factor"] * m_auto, n_env, m_cap)  # on all frames
        return min(max(50, round(target * share)), sum(len(frames[i]) for i in subset))

    def evaluate(settings: dict, subset: np.ndarray, rung: int, full: bool):
        part = [frames[i] for i in subset]
        m = n_sparse(settings, subset)
        model = type(template)(**copy.deepcopy(template.get_params()))
        model.set_params(terms=candidate_terms(settings, m), progress=False,
                         random_state=random_state)
        row = {"rung": rung, "frames": len(part), "settings": _label(settings),
               "n_sparse": m, **{k: settings[k] for k in SPACE}}
        row["n_max_l_max"] = list(settings["n_max_l_max"])
        t0, dense0 = time.process_time(), dense_cpu()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one table, not a warning per candidate
                if full:
                    model.fit(part)
                    cv = model.fit_info_.get("noise_cv")
                else:
                    with design_cache():  # the CV's passes read the same design rows
                        model._fit(part, solve=False)  # its scores need no fit on all
                        cv = model.cross_validate_noise(part, refit=False, predictive=False)
        except Exception as err:  # noqa: BLE001 -- a failed candidate is a row, not a crash
            if not _is_memory_error(err) and not isinstance(err, (ValueError,
                                                                  np.linalg.LinAlgError)):
                raise
            row.update(status=f"skipped: {type(err).__name__}: {str(err)[:120]}",
                       cpu_s=time.process_time() - t0)
            rows.append(row)
            say(f"  {row['settings']:<44} {row['status']}")
            return None, None
        best = _score_row(cv, explicit_noise)
        row.update(status="ok", cpu_s=time.process_time() - t0,
                   dense_cpu_s=dense_cpu() - dense0,
                   energy_mae=None if best is None else best["energy_mae"],
                   forces_mae=None if best is None else best["forces_mae"])
        rows.append(row)
        return row, model

    def score(rung_rows: list[dict]) -> None:
        ref = next((r for r in rung_rows if r["status"] == "ok"), None)
        for r in rung_rows:
            if r["status"] != "ok" or ref is None:
                r["score"] = math.inf
                continue
            r["score"] = float(sum(r[k] / ref[k] for k in ("energy_mae", "forces_mae")
                                   if r.get(k) and ref.get(k)))
            if r["score"] == 0.0:  # no cross-validation (too few frames): cost decides
                r["score"] = r["cpu_s"]

    say(f"gapkit auto: {len(candidates)} candidates, rungs of {report['rungs']} frames, "
        f"budget {limit:.0f} CPU-s, seed {random_state}")
    last_rung = len(subsets) - 1
    probe: list[float] = []  # CPU-s of the default on the first rung

    measured: dict[str, list] = {}  # label -> [(frames, CPU-s)] of its fits

    def estimate(settings: dict, rung: int) -> float:
        """CPU-s of one candidate on a rung (:func:`estimate_cost`) from its own fits, else
        from the first candidate's, scaled by the relative cost of the settings."""
        full = 1.3 if rung == last_rung else 1.0  # the full fit calibrates and refits
        points = measured.get(_label(settings)) or [
            (len(subsets[0]),
             probe[0] * _relative_cost(settings, all_factor) / _relative_cost(DEFAULT))]
        return estimate_cost(points, len(subsets[rung]),
                             n_sparse(settings, subsets[rung])) * full

    def reserve(rung: int) -> float:
        """CPU-s the later rungs need at the least: one candidate's fit on each."""
        return sum(estimate(DEFAULT, later) for later in range(rung + 1, len(subsets)))

    survivors = candidates
    over_budget: list[str] = []
    models: list[tuple[dict, Any]] = []
    try:
        for rung, subset in enumerate(subsets):
            full = rung == last_rung
            rung_rows: list[dict] = []
            rung_start, end = spent(), limit
            for k, settings in enumerate(survivors):
                if probe and (k > 0 or full):  # the first of a rung but the last runs
                    if end == limit:  # this rung's share of what is free, once measured
                        free = limit - rung_start - reserve(rung)
                        end = rung_start + max(free, 0.0) / (last_rung - rung + 1)
                    left = min(end, limit - reserve(rung)) - spent()
                    if estimate(settings, rung) > left:  # a cheaper one may still fit
                        over_budget.append(_label(settings))
                        continue
                row, model = evaluate(settings, subset, rung, full)
                if not probe:
                    probe.append(row["cpu_s"] if row else spent())
                    # the full fit from this one (COST_EXPONENT): the error is for budgets
                    # surely too small
                    ratio = len(subsets[-1]) / len(subset)
                    need = spent() + (0.0 if full else probe[0] * ratio ** COST_EXPONENT)
                    if need > limit:
                        raise ValueError(
                            f"budget {limit:.0f} CPU-s is too small for these data: the "
                            f"default settings took {probe[0]:.1f} CPU-s on {len(subset)} of "
                            f"{len(frames)} frames, so one fit on all frames needs about "
                            f"{need:.0f} CPU-s in all; give budget >= "
                            f"{math.ceil(need * 1.2)} s (or fewer frames)")
                if row is None:
                    continue
                measured.setdefault(row["settings"], []).append(
                    (len(subset), row["cpu_s"], row["dense_cpu_s"], row["n_sparse"]))
                row["settings_dict"] = settings
                rung_rows.append(row)
                if full:
                    models.append((row, model))
                say(f"  rung {rung} ({len(subset)} frames) {row['settings']:<44} "
                    f"E {_mev(row['energy_mae'])} F {_num(row['forces_mae'])} "
                    f"{row['cpu_s']:.1f} CPU-s")
            if over_budget:
                report["notes"].append(f"rung {rung}: {len(over_budget)} candidates not "
                                       f"tried (over the budget left): "
                                       + "; ".join(over_budget))
                over_budget.clear()
            score(rung_rows)
            ranked = sorted(rung_rows, key=lambda r: r["score"])
            if full or not ranked:
                break
            survivors = [r["settings_dict"] for r in ranked[:max(1, math.ceil(len(ranked) / ETA))]]
    except KeyboardInterrupt:
        report["interrupted"] = True
        report["notes"].append("interrupted (Ctrl-C): the best candidate so far is kept")
        say("  interrupted: keeping the best candidate so far")
    for rung in {r["rung"] for r in rows if "score" not in r and r["status"] == "ok"}:
        # a rung Ctrl-C interrupted before it was scored
        score([r for r in rows if r["rung"] == rung and r["status"] == "ok"])
    scored = [r for r in rows if r["status"] == "ok"]
    if models:
        score([r for r, _ in models])
        win_row, winner = min(models, key=lambda rm: rm[0]["score"])
    else:
        if not scored:
            raise RuntimeError("gapkit auto: no candidate could be fitted (see the "
                               "notes above); check the data or give settings explicitly")
        last = max(r["rung"] for r in scored)
        pool = sorted((r for r in scored if r["rung"] == last), key=lambda r: r["score"])
        fits = [r for r in pool  # the best whose full fit fits the budget, else the cheapest
                if report["interrupted"] or estimate(r["settings_dict"], last_rung)
                <= limit - spent()]
        best = fits[0] if fits else min(pool, key=lambda r: estimate(r["settings_dict"],
                                                                      last_rung))
        say(f"  fitting the best so far on all {len(frames)} frames: {best['settings']}")
        report["notes"].append(f"the best of rung {last} fitted on all frames without "
                               "competing there (interrupted, or the budget left was short)")
        win_row, winner = evaluate(best["settings_dict"], subsets[-1], len(subsets) - 1, True)
        if win_row is None:
            raise RuntimeError("gapkit auto: the best candidate failed on all frames: "
                               + rows[-1]["status"])
        win_row["score"] = 1.0
    for r in rows:
        r.pop("settings_dict", None)
        if r.get("score") is not None and not math.isfinite(r["score"]):
            r["score"] = None  # JSON (the model file)
    report.update(
        table=rows, winner=win_row["settings"],
        winner_settings={k: win_row[k] for k in SPACE}, cpu_s=spent(),
        why=_why(win_row, rows))
    winner.fit_info_["auto"] = report
    say(f"  winner: {win_row['settings']} ({report['why']}); {report['cpu_s']:.0f} CPU-s")
    return winner


def summary(report: dict) -> list[str]:
    """Lines on an ``auto`` search (``fit_info_["auto"]``): the winner, why, and the table
    of every candidate tried."""
    lines = [f"settings chosen by auto ({len(report['table'])} fits, {report['cpu_s']:.0f} of "
             f"{report['budget_cpu_s']:.0f} CPU-s, seed {report['random_state']}): "
             f"{report['winner']}", f"  {report['why']}"]
    lines += [f"  note: {n}" for n in report.get("notes", [])]
    lines.append(f"  {'rung':>4} {'frames':>6}  {'settings':<44} {'M':>5} {'E meV/atom':>10} "
                 f"{'F eV/Å':>8} {'score':>6} {'CPU-s':>7}")
    for r in report["table"]:
        e, f, sc = r.get("energy_mae"), r.get("forces_mae"), r.get("score")
        lines.append(f"  {r['rung']:>4} {r['frames']:>6}  {r['settings']:<44} {r['n_sparse']:>5} "
                     + (f"{1e3 * e:>10.2f}" if e is not None else f"{'-':>10}")
                     + (f" {f:>8.4f}" if f is not None else f" {'-':>8}")
                     + (f" {sc:>6.3f}" if sc is not None else f" {'-':>6}")
                     + f" {r['cpu_s']:>7.1f}" + ("" if r["status"] == "ok"
                                                  else f"  {r['status']}"))
    return lines


def _mev(x) -> str:
    return "-" if x is None else f"{1e3 * x:.2f} meV/atom"


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f} eV/Å"


def _why(win: dict, rows: list[dict]) -> str:
    default = next((r for r in rows if r["rung"] == win["rung"] and r["status"] == "ok"
                    and r["settings"] == _label(DEFAULT)), None)
    text = (f"lowest cross-validated score on all {win['frames']} frames: energy "
            f"{_mev(win.get('energy_mae'))}, forces {_num(win.get('forces_mae'))}")
    if default is not None and default is not win:
        text += (f"; the defaults gave {_mev(default.get('energy_mae'))}, "
                 f"{_num(default.get('forces_mae'))}")
    return text
