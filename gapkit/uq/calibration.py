"""A model's prediction against reference labels: errors, predicted variances (latent
and noise) and the calibration report per quantity."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..data import get_all_labels
from ._quantities import _FIELD, QUANTITIES, _ByQuantity, _check_arrays, _quantity
from .metrics import CalibrationResult, calibration_metrics


def _noise_included(pred, quantity: str) -> bool:
    return "+noise" in str(pred.variance_form.get(_FIELD[quantity], ""))


def quantity_errors(pred, frames, quantity: str, *, model=None, include_noise: bool = True,
                    keys: dict | None = None):
    """Errors, latent (epistemic) and noise (aleatoric) variances of one quantity.

    Parameters
    ----------
    pred : gapkit.Prediction
        With variances.
    frames : list of ase.Atoms
        The predicted frames, with reference labels.
    quantity : {"energy_per_atom", "forces"}
        Energy per atom (eV/atom) or force components (eV/Å).
    model : gapkit.GAP, optional
        Supplies the noise model (needed when ``include_noise``) and the extxyz keys.
    include_noise : bool
        Return the noise variance of each value (else zeros).

    Returns
    -------
    errors, epistemic_variance, aleatoric_variance : ndarray (flat)
        The epistemic variance is the prediction's (GP posterior, or whatever the
        prediction holds: committee spread, recalibrated predictive variance). If the
        prediction's variance already includes the noise (``variance_form`` ending in
        ``+noise``, as after :func:`apply_recalibration`), the aleatoric part is zero.
    """

    quantity = _quantity(quantity)
    frames = list(frames)
    if len(frames) != len(pred.energy):
        raise ValueError(f"the prediction has {len(pred.energy)} frames but {len(frames)} "
                         "frames with labels were given")
    if keys is None:
        keys = dict(model.keys) if model is not None else {}
    labels = get_all_labels(frames, **keys)
    n_at = np.asarray(pred.n_atoms, dtype=float)
    noise = None
    if include_noise and not _noise_included(pred, quantity):
        if model is None:
            raise ValueError("include_noise=True needs model=... (for its noise model); "
                             "pass include_noise=False to assess the latent variance alone")
        noise = getattr(model, "noise_", model.noise)  # the fitted noise (GAP), or ExactGP's
    if quantity == "energy_per_atom":
        missing = [k for k, lab in enumerate(labels) if lab.energy is None]
        if missing:
            raise ValueError(f"frames {missing[:5]} have no energy label")
        ref = np.array([lab.energy for lab in labels])
        if pred.energy_variance is None:
            _check_arrays(pred.energy, None, what="energy")
        err = (pred.energy - ref) / n_at
        var = np.asarray(pred.energy_variance, dtype=float) / n_at**2
        alea = np.zeros_like(err)
        if noise is not None:
            alea = np.array([noise.sigmas(lab, int(n))[0] ** 2 for lab, n in zip(labels, n_at)])
            alea = alea / n_at**2
        return err, var, alea
    if pred.forces is None:
        raise ValueError("the prediction has no forces; predict with forces=True")
    missing = [k for k, lab in enumerate(labels) if lab.forces is None]
    if missing:
        raise ValueError(f"frames {missing[:5]} have no force labels")
    ref = np.concatenate([lab.forces for lab in labels])
    if ref.shape != pred.forces.shape:
        raise ValueError(f"predicted forces have shape {pred.forces.shape} but the reference "
                         f"forces have shape {ref.shape}")
    if pred.forces_variance is None:
        _check_arrays(pred.forces, None, what="forces")
    err = (pred.forces - ref).ravel()
    var = np.asarray(pred.forces_variance, dtype=float).ravel()
    alea = np.zeros_like(err)
    if noise is not None:
        alea = np.concatenate([np.full(3 * len(a), noise.sigmas(lab, len(a))[1] ** 2)
                               for a, lab in zip(frames, labels)])
    return err, var, alea


def calibration_report(pred, frames, *,
                       quantities: Sequence[str] = ("energy_per_atom", "forces"),
                       include_noise: bool = True, model=None, n_bins: int = 10,
                       levels=None) -> dict[str, CalibrationResult]:
    """Calibration of a prediction's uncertainty against the labels of ``frames``.

    Parameters
    ----------
    pred : gapkit.Prediction
        From ``model.predict(frames, forces_variance="exact")`` with variances (or
        :func:`committee_predict`, or :func:`apply_recalibration`). This function makes
        no predictions itself: for forces, pass the *exact* (DTC) force variances (the
        default of ``predict``). ``forces_variance="projected"`` omits the part of the
        prior variance the sparse set cannot represent and is typically far too small
        (figures in benchmarks/README.md, ``benchmarks/uq.py``). The form assessed is
        recorded in ``variance_source`` (``"dtc+noise"`` vs ``"projected+noise"``).
    frames : list of ase.Atoms
        The same frames, with reference energies (eV) and forces (eV/Å).
    quantities : sequence of {"energy_per_atom", "forces"}
        Energy per atom (eV/atom) and/or force components (eV/Å).
    include_noise : bool
        Assess the predictive variance ``posterior + noise`` (the interval a new
        reference calculation should fall in; needs ``model``); else the latent
        posterior variance alone.
    model : gapkit.GAP, optional
        The fitted model (noise model, extxyz keys).

    Returns
    -------
    dict ``{quantity: CalibrationResult}``, with the epistemic (posterior) and aleatoric
    (noise) RMS sigma reported separately. A calibrated prediction's sigma = 0 values
    (fixed by symmetry) are left out and counted (``n_fixed``).
    """
    out = _ByQuantity()
    for q in quantities:
        q = _quantity(q)
        err, epi, alea = quantity_errors(pred, frames, q, model=model,
                                         include_noise=include_noise)
        form = pred.variance_form.get(_FIELD[q])
        fixed = np.zeros(err.shape, dtype=bool)
        if _noise_included(pred, q):
            source, epi_r, alea_r = str(form), None, None
            if str(form).startswith("calibrated"):  # sigma 0: fixed by symmetry, left out
                fixed = epi == 0
        else:
            source = str(form or "posterior") + ("+noise" if include_noise else "")
            epi_r, alea_r = epi, (alea if include_noise else None)
        keep = ~fixed
        result = calibration_metrics(
            err[keep], (epi + alea)[keep], quantity=q, unit=QUANTITIES[q], n_bins=n_bins,
            levels=levels, epistemic_variance=None if epi_r is None else epi_r[keep],
            aleatoric_variance=None if alea_r is None else alea_r[keep],
            variance_source=source)
        out[q] = dataclasses.replace(
            result, n_fixed=int(fixed.sum()),
            fixed_max_abs_error=float(np.abs(err[fixed]).max(initial=0.0)))
    return out


def error_table(pred, frames, *, keys: dict | None = None) -> dict:
    """MAE/RMSE of energies (meV/atom), forces (eV/Å) and virials (meV/atom) of ``pred``
    against the labels of ``frames`` (read with ``keys``, the model's ``keys``), over the
    frames (and atoms) that carry each label; with the counts (``energy_n``, ...). The
    one table that ``gapkit eval`` and the demo print."""
    labels = get_all_labels(frames, **(keys or {}))
    n = pred.n_atoms
    out: dict = {"n_frames": len(frames)}
    idx = [k for k, lab in enumerate(labels) if lab.energy is not None]
    if idx:
        de = np.array([(pred.energy[k] - labels[k].energy) / n[k] for k in idx]) * 1e3
        out.update(energy_n=len(idx), energy_mae_mev_per_atom=float(np.abs(de).mean()),
                   energy_rmse_mev_per_atom=float(np.sqrt((de**2).mean())))
    idx = [k for k, lab in enumerate(labels) if lab.forces is not None]
    if idx and pred.forces is not None:
        df = np.concatenate([pred.frame_forces(k) - labels[k].forces for k in idx])
        out.update(forces_n=int(df.size), forces_mae=float(np.abs(df).mean()),
                   forces_rmse=float(np.sqrt((df**2).mean())))
    idx = [k for k, lab in enumerate(labels) if lab.virial is not None]
    if idx and pred.virial is not None:
        dv = np.array([(pred.virial[k] - labels[k].virial) / n[k] for k in idx]) * 1e3
        out.update(virial_n=len(idx), virial_mae_mev_per_atom=float(np.abs(dv).mean()),
                   virial_rmse_mev_per_atom=float(np.sqrt((dv**2).mean())))
    return out
