"""Label consistency: one label kind against a model fitted without it (swapped
components, flipped signs, wrong units)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import VOIGT as _VOIGT
from ..data import as_frames, get_all_labels
from ..model import clone


@dataclass
class ConsistencyReport:
    """Labels of one kind compared with what a model fitted without them predicts.

    Attributes
    ----------
    kind : {"virial", "forces"}
        The kind checked (eV for virials, eV/Å for forces).
    table : list of dict
        One row per config_type and component (Voigt ``xx yy zz yz xz xy`` for virials,
        ``x y z`` for forces): ``config_type``, ``component``, ``n`` (values), ``r``
        (Pearson correlation of stored and predicted values), ``best_match`` (the
        stored component that correlates best with this predicted one), ``r_best``,
        ``slope`` (least-squares stored/predicted), ``sigma`` (RMS latent sigma of the
        predictions), ``spread`` (standard deviation of the stored values), ``flag``
        (None or the reason: ``"swapped with ..."``, ``"sign flipped"``, ``"scaled by
        ..."``, ``"uncorrelated"``). "Scaled" and "uncorrelated" are only judged where
        the model is informative, ``sigma < spread / 2``: a model that never saw a
        surface's forces cannot tell intact surface forces from wrong ones.
    frames : list of dict
        The frames whose labels of this kind deviate most from the prediction
        (``frame``, ``config_type``, ``z``: RMS of ``(stored - predicted) / scale`` over
        the frame's components, with ``scale`` the RMS deviation of the frame's
        config_type), those with ``z > 3``.
    other_kinds : list of dict
        When a component is flagged "scaled" or "uncorrelated": the other label kinds
        against a model fitted on ``kind`` alone (``kind``, ``n``, ``r``, ``slope``;
        energies and virials per atom about each config_type's mean). A kind that
        disagrees there while another agrees is the one to suspect (``suspect``).
    """

    kind: str
    table: list
    frames: list
    other_kinds: list = field(default_factory=list)

    @property
    def suspect(self) -> str | None:
        """The label kind the evidence points at: another kind when it disagrees with a
        fit on ``kind`` while a third agrees (both predicted with ``|r| > 0.5``), else
        ``kind`` if flagged, else None."""
        # only kinds the fit predicts (|r| > 0.5) are evidence
        bad = [o["kind"] for o in self.other_kinds
               if abs(o["r"]) > 0.5 and not 0.5 < o["slope"] < 2.0]
        good = [o["kind"] for o in self.other_kinds if o["r"] > 0.5 and 0.5 < o["slope"] < 2.0]
        if len(bad) == 1 and good:
            return bad[0]
        return None if self.ok else self.kind

    @property
    def flagged(self) -> list:
        """The rows with a flag."""
        return [row for row in self.table if row["flag"]]

    @property
    def ok(self) -> bool:
        """No component flagged."""
        return not self.flagged

    def summary(self) -> str:
        """One line per flagged (config_type, component), or that all agree."""
        if self.ok:
            return f"{self.kind}: every config_type and component agrees with the model"
        lines = [self._other_kinds_line()] if self.other_kinds else []
        return "\n".join(lines + [
            f"{self.kind} {row['config_type']} {row['component']}: {row['flag']} "
            f"(r {row['r']:.2f}, best match {row['best_match']} r {row['r_best']:.2f}, "
            f"{row['n']} values)" for row in self.flagged])

    def _other_kinds_line(self) -> str:
        told = ", ".join(f"{o['kind']} slope {o['slope']:.3g} (r {o['r']:.2f})"
                         for o in self.other_kinds)
        who = self.suspect
        verdict = (f"the {who} labels, not the {self.kind}, look wrong (units?)"
                   if who and who != self.kind else
                   f"the {self.kind} and the other labels disagree; check the units of both")
        return f"a fit on the {self.kind} alone predicts: {told}; {verdict}"


_COMPONENTS = {"virial": ("xx", "yy", "zz", "yz", "xz", "xy"), "forces": ("x", "y", "z")}


def label_consistency(model, frames, *, kind: str = "virial", min_values: int = 20,
                      r_min: float = 0.5, warn: bool = True) -> ConsistencyReport:
    """Check one label kind against a model fitted on the other kinds, before fitting it.

    A clone of ``model`` (its settings: descriptors, noise, e0, baselines) is fitted on
    ``frames`` *without* the labels of ``kind`` and predicts them. Per config_type and
    component, the stored labels should then correlate with the predictions, with a
    least-squares slope near 1. A component whose stored values match *another*
    predicted component better (a Voigt order mix-up), a negative slope (a sign
    convention), a slope far from 1 (units) or no correlation is flagged, and the frames
    whose labels deviate most are listed. Virials are the usual suspect: the Zuo et al.
    2020 Si data first shipped with yz and xz swapped on every AIMD and vacancy frame,
    which this finds (r 0.97 with the other component).

    Parameters
    ----------
    model : gapkit.GAP
        Its settings are used (it is not modified or fitted).
    frames : list of ase.Atoms or path
        Labelled frames; those without a label of ``kind`` are skipped in the table.
    kind : {"virial", "forces"}
        Virials (checked against a fit on energies and forces) or forces (against a fit
        on energies and virials).
    min_values : int
        Config types with fewer values of a component are reported but not flagged.
    r_min : float
        A correlation below this is flagged as "uncorrelated".
    warn : bool
        Emit a UserWarning naming the flagged config types and components.

    Returns
    -------
    ConsistencyReport
    """
    import warnings

    if kind not in _COMPONENTS:
        raise ValueError(f"kind must be 'virial' or 'forces', got {kind!r}")
    frames = as_frames(frames, **model.keys)
    others = tuple(k for k in model.use if k != kind)
    if not others:
        raise ValueError(f"model.use={model.use!r} leaves nothing to fit besides {kind}")
    fitted = clone(model).set_params(use=others, progress=False)
    fitted.fit(frames)
    labels = get_all_labels(frames, **model.keys)
    pred = fitted.predict(frames, forces=kind == "forces", virial=kind == "virial",
                          forces_variance="exact" if kind == "forces" else "projected",
                          calibrated=False)
    names = _COMPONENTS[kind]
    stored_l: list = []
    predicted_l: list = []
    var_l: list = []
    ctypes_l: list = []
    frame_l: list = []
    for k, (atoms, lab) in enumerate(zip(frames, labels)):
        if kind == "virial":
            if lab.virial is None or pred.virial is None:
                continue
            w = np.asarray(lab.virial)
            stored_l.append([w[a, b] for a, b in _VOIGT])
            predicted_l.append([pred.virial[k][a, b] for a, b in _VOIGT])
            var_l.append([pred.virial_latent_variance[k][a, b] for a, b in _VOIGT])
            ctypes_l.append(lab.config_type)
            frame_l.append(k)
        else:
            if lab.forces is None:
                continue
            f = pred.frame_forces(k)
            fv = pred.forces_latent_variance[pred.atom_offsets[k]:pred.atom_offsets[k + 1]]
            for j in range(len(atoms)):
                stored_l.append(np.asarray(lab.forces)[j])
                predicted_l.append(f[j])
                var_l.append(fv[j])
                ctypes_l.append(lab.config_type)
                frame_l.append(k)
    stored, predicted = np.asarray(stored_l, float), np.asarray(predicted_l, float)
    variance = np.asarray(var_l, float)
    ctypes, frame_of = np.asarray(ctypes_l, dtype=object), np.asarray(frame_l)
    table: list = []
    frame_rows: list = []
    for ct in sorted({str(c) for c in ctypes}):
        sel = np.array([str(c) == ct for c in ctypes])
        s, p, v = stored[sel], predicted[sel], variance[sel]
        for c, name in enumerate(names):
            sigma = float(np.sqrt(np.mean(v[:, c])))
            spread = float(np.std(s[:, c]))
            informative = sigma < 0.5 * spread
            r_all = [_pearson(s[:, other], p[:, c]) for other in range(len(names))]
            best = int(np.nanargmax(np.abs(r_all))) if np.any(np.isfinite(r_all)) else c
            r = r_all[c]
            denom = float(p[:, c] @ p[:, c])
            slope = float(s[:, c] @ p[:, c]) / denom if denom > 0 else float("nan")
            flag = None
            if sel.sum() >= min_values and np.isfinite(r):
                if best != c and abs(r_all[best]) > max(abs(r), r_min) + 0.2:
                    flag = f"swapped with {names[best]}"
                elif r < -r_min:
                    flag = "sign flipped"
                elif r < r_min and informative:
                    flag = "uncorrelated"
                elif not 0.5 < slope < 2.0 and informative:
                    flag = f"scaled by {slope:.3g}"
            table.append({"config_type": ct, "component": name, "n": int(sel.sum()),
                          "r": float(r), "best_match": names[best],
                          "r_best": float(r_all[best]), "slope": slope, "sigma": sigma,
                          "spread": spread, "flag": flag})
        dev = s - p
        scale = float(np.sqrt(np.mean(dev**2))) or 1.0
        for k in np.unique(frame_of[sel]):
            rows = sel & (frame_of == k)
            z = float(np.sqrt(np.mean((stored[rows] - predicted[rows]) ** 2))) / scale
            if z > 3.0:
                frame_rows.append({"frame": int(k), "config_type": ct, "z": z})
    frame_rows.sort(key=lambda row: -row["z"])
    report = ConsistencyReport(kind, table, frame_rows)
    if any(str(row["flag"]).startswith(("scaled", "uncorrelated")) for row in table):
        report.other_kinds = _other_kinds(model, frames, labels, kind)
    if warn and not report.ok:
        warnings.warn(f"{kind} labels disagree with a model fitted on "
                      f"{'+'.join(others)}:\n{report.summary()}\nCheck the component order, "
                      f"sign and units of these labels, or fit without them "
                      f"(GAP(use={others!r}))", UserWarning, stacklevel=2)
    return report


def _other_kinds(model, frames, labels, kind: str) -> list:
    """The other label kinds against a model fitted on ``kind`` alone: slope and
    correlation of stored against predicted (energies and virials per atom, about each
    config_type's mean, so that e0 does not matter)."""
    others = [k for k in model.use if k != kind and k in ("energy", "virial")]
    if not others:
        return []
    alone = clone(model).set_params(use=(kind,), progress=False)
    alone.fit(frames)
    pred = alone.predict(frames, forces=False, virial="virial" in others,
                         return_variance=False)
    n_at = pred.n_atoms
    cts = np.array([str(lab.config_type) for lab in labels], dtype=object)
    out = []
    for other in others:
        idx = [k for k, lab in enumerate(labels) if getattr(lab, other) is not None]
        if len(idx) < 3 or (other == "virial" and pred.virial is None):
            continue
        if other == "energy":
            s = np.array([labels[k].energy / n_at[k] for k in idx])[:, None]
            p = (pred.energy[idx] / n_at[idx])[:, None]
        else:
            s = np.array([np.asarray(labels[k].virial).ravel() / n_at[k] for k in idx])
            p = np.array([pred.virial[k].ravel() / n_at[k] for k in idx])
        for ct in set(cts[idx].tolist()):  # about each config_type's mean
            rows = cts[idx] == ct
            s[rows] -= s[rows].mean(0)
            p[rows] -= p[rows].mean(0)
        denom = float((p * p).sum())
        out.append({"kind": other, "n": len(idx), "r": _pearson(s.ravel(), p.ravel()),
                    "slope": float((s * p).sum()) / denom if denom > 0 else float("nan")})
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / den if den > 0 else float("nan")
