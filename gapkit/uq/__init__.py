"""Uncertainty diagnostics: calibration, recalibration, committees and data hygiene.

A predicted variance is only worth something if it is checked against errors. This
module turns a :class:`gapkit.Prediction` with variances and the reference labels into

* calibration metrics (:func:`calibration_metrics`, :func:`calibration_report`): z-scores,
  Gaussian negative log-likelihood, coverage of central intervals and the miscalibration
  area, Spearman rank correlation of sigma and |error|, the binned RMSE-vs-RMV
  reliability curve and its ENCE, and the sharpness (RMS predicted sigma);
* aleatoric vs epistemic variance: the fitted observation noise of the model (its
  :class:`~gapkit.gp.NoiseModel`, per frame / config_type) against the GP posterior
  variance of the latent quantity, reported separately and added for predictive
  intervals (``include_noise=True``). For forces, judge the exact (DTC) variance,
  ``model.predict(frames)`` (``forces_variance="exact"``, the default): the projected form
  is far too small on real data;
* recalibration (:func:`fit_recalibration`, :func:`apply_recalibration`): a variance scale
  per quantity (closed-form maximum of the Gaussian likelihood on a validation set) or an
  isotonic (monotone, pool-adjacent-violators) map from predicted to observed variance,
  stored on the model as ``model.recalibration_`` (saved and loaded with it);
* committees (:func:`fit_committee`, :func:`committee_predict`): an ensemble of GAP models on
  sub-sampled data or different sparse-point seeds, whose spread can be judged with the
  same metrics as the GP variance;
* data hygiene (:func:`leave_one_out`): closed-form leave-one-out residuals and leverages
  of the fitted sparse GP from its R factor (no refits), per observation and per frame,
  with a ranking of suspicious training frames;
* label consistency (:func:`label_consistency`): one label kind (virials or forces)
  against a clone fitted without it, flagging swapped components, flipped signs and
  wrong units per config_type.

Quantities and units: ``"energy_per_atom"`` is the energy per atom (eV/atom, variances
eV^2/atom^2), ``"forces"`` the Cartesian force components (eV/Å, variances eV^2/Å^2).
(``"energy"``, the name before 0.2, is read as ``"energy_per_atom"`` with a warning: in
:class:`gapkit.Prediction` ``energy`` is the total.)

The package has one module per concept: ``metrics`` (the metrics of errors against
variances), ``calibration`` (a prediction against labels), ``recalibration``,
``committee``, ``loo`` and ``consistency``; ``gapkit.uq.X`` answers every name below.
"""

from __future__ import annotations

from ._quantities import QUANTITIES
from .calibration import calibration_report, error_table, quantity_errors
from .committee import committee_predict, fit_committee
from .consistency import ConsistencyReport, label_consistency
from .loo import LOOResult, leave_one_out
from .metrics import (
                      CalibrationResult,
                      calibration_metrics,
                      coverage_curve,
                      ence,
                      gaussian_nll,
                      miscalibration_area,
                      reliability_curve,
                      sharpness,
                      spearman,
                      z_scores,
)
from .recalibration import apply_recalibration, fit_recalibration, isotonic_fit

__all__ = [
    "CalibrationResult", "ConsistencyReport", "LOOResult", "QUANTITIES", "apply_recalibration",
    "label_consistency",
    "calibration_metrics", "calibration_report", "committee_predict", "coverage_curve",
    "ence", "error_table", "fit_committee", "fit_recalibration", "gaussian_nll", "isotonic_fit",
    "leave_one_out", "miscalibration_area", "quantity_errors", "reliability_curve",
    "sharpness", "spearman", "z_scores",
]
