"""gapkit.uq.committee: a committee gives a Prediction whose spread the same report assesses."""

from __future__ import annotations

import numpy as np
import pytest
from uq_cases import cu_case

from gapkit import uq


@pytest.fixture(scope="module")
def cu():
    """Train, validation and test EMT Cu cells and a small GAP fitted on the first."""
    return cu_case()


def test_committee_spread_is_a_prediction(cu):
    train, _, test, model = cu
    members = uq.fit_committee(model, train, n_models=3, fraction=0.7, seed=1)
    assert len({float(m.alpha_.abs().sum()) for m in members}) == 3  # different members
    pred = uq.committee_predict(members, test)
    assert pred.forces.shape == (sum(len(a) for a in test), 3)
    assert np.all(pred.forces_variance > 0) and np.all(pred.energy_variance > 0)
    mean = np.mean([m.predict(test, return_variance=False).forces for m in members], axis=0)
    np.testing.assert_allclose(pred.forces, mean)
    rep = uq.calibration_report(pred, test, model=model)
    assert rep["forces"].variance_source == "committee+noise"
    with pytest.raises(ValueError, match="at least 2"):
        uq.fit_committee(model, train, n_models=1)
