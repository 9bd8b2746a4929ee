"""gapkit.uq.metrics: calibration metrics on synthetic Gaussian errors whose calibration is
known (a calibrated sigma scores as calibrated; random sigma has no rank correlation; bad
variances are refused)."""

from __future__ import annotations

import numpy as np
import pytest
from uq_cases import N_SYNTH, _synthetic

from gapkit import uq


def test_calibrated_gaussians_score_as_calibrated():
    e, v = _synthetic(0)
    res = uq.calibration_metrics(e, v, quantity="forces", unit="eV/Å")
    assert res.miscalibration_area < 0.01, res
    assert abs(res.z_mean) < 0.03 and abs(res.z_std - 1) < 0.02, res
    assert res.ence < 0.06, res
    assert res.spearman > 0.3, res  # sigma spans 30x: it ranks the errors
    assert np.all(np.abs(res.coverage_observed - res.coverage_expected) < 0.02)


def test_random_sigma_has_no_rank_correlation():
    rng = np.random.default_rng(6)
    e = rng.normal(scale=0.1, size=N_SYNTH)
    v = np.exp(rng.uniform(-6, -2, N_SYNTH))
    assert abs(uq.spearman(e, v)) < 0.03


@pytest.mark.parametrize("bad, match", [
    (None, "no variances"),
    (np.zeros(10), "zero, negative"),
    (-np.ones(10), "zero, negative"),
    (np.full(10, np.nan), "zero, negative"),
    (np.ones(9), r"\(10,\).*\(9,\)"),
])
def test_bad_variances_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        uq.calibration_metrics(np.ones(10), bad)
    with pytest.raises(ValueError, match=match):
        uq.gaussian_nll(np.ones(10), bad)
