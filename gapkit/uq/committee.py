"""Committees: an ensemble of GAP models whose spread is compared with the GP
variance."""

from __future__ import annotations

import math

import numpy as np

from ..gp.posterior import Prediction
from ..model import clone


def fit_committee(model, frames, *, n_models: int = 5, method: str = "subsample",
                  fraction: float = 0.8, seed: int = 0) -> list:
    """Fit an ensemble of GAP models, copies of ``model``'s settings.

    Parameters
    ----------
    model : gapkit.GAP
        Template (fitted or not; it is not modified).
    frames : list of ase.Atoms
        Training data.
    method : {"subsample", "sparse_seed"}
        ``"subsample"``: each member sees a random ``fraction`` of the frames (without
        replacement; distinct subsets while possible) and its own sparse-point seed;
        ``"sparse_seed"``: all frames, different sparse-point seeds (with
        ``sparse_method="random"`` terms, else the members of a deterministic CUR/FPS
        selection are identical).
    """
    if n_models < 2:
        raise ValueError("a committee needs at least 2 models")
    if method not in ("subsample", "sparse_seed"):
        raise ValueError(f"unknown committee method {method!r}; use 'subsample' or "
                         "'sparse_seed'")
    frames = list(frames)
    rng = np.random.default_rng(seed)
    members: list = []
    seen: set = set()
    n = min(len(frames), max(2, int(round(fraction * len(frames)))))
    n_subsets = math.comb(len(frames), n)
    for k in range(n_models):
        member = clone(model)
        member.random_state = int(seed * 1000 + k)
        if method == "subsample":
            for _ in range(100):  # distinct subsets while there are enough of them
                idx = np.sort(rng.choice(len(frames), size=n, replace=False))
                if tuple(idx) not in seen or len(seen) >= n_subsets:
                    break
            seen.add(tuple(idx))
            data = [frames[i] for i in idx]
        else:
            data = frames
        members.append(member.fit(data))
    return members


def committee_predict(members, frames, *, forces: bool = True, virial: bool | None = False):
    """Committee mean and spread as a :class:`gapkit.Prediction`.

    Energies (eV), forces (eV/Å) and local energies are the members' mean; the
    variances are the sample variances across members (ddof=1, eV^2 and eV^2/Å^2): the
    committee's epistemic uncertainty, to compare with the GP posterior variance.
    """
    preds = [m.predict(frames, forces=forces, virial=virial, return_variance=False)
             for m in members]

    def stack(name):
        vals = [getattr(p, name) for p in preds]
        if vals[0] is None:
            return None, None
        a = np.stack(vals)
        return a.mean(0), a.var(0, ddof=1)

    e, ev = stack("energy")
    f, fv = stack("forces")
    v, vv = stack("virial")
    loc, lv = stack("local_energy")
    forms = {k: "committee" for k, x in (("energy", ev), ("forces", fv), ("virial", vv),
                                         ("local_energy", lv)) if x is not None}
    return Prediction(energy=e, forces=f, virial=v, local_energy=loc,
                      atom_offsets=preds[0].atom_offsets, energy_variance=ev,
                      forces_variance=fv, virial_variance=vv, local_energy_variance=lv,
                      variance_form=forms)
