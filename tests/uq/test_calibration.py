"""gapkit.uq.calibration: the report of a GAP's prediction against labels separates the
aleatoric and epistemic parts; the figures carry units."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_si_model
from uq_cases import _synthetic, cu_case

from gapkit import uq
from gapkit.data import load_bundled


@pytest.fixture(scope="module")
def cu():
    """Train, validation and test EMT Cu cells and a small GAP fitted on the first."""
    return cu_case()


def test_report_separates_aleatoric_and_epistemic(cu):
    _, _, test, model = cu
    pred = model.predict(test)
    rep = uq.calibration_report(pred, test, model=model)
    assert set(rep) == {"energy_per_atom", "forces"}
    f = rep["forces"]
    assert f.unit == "eV/Å" and f.n == 3 * sum(len(a) for a in test)
    assert f.aleatoric_rms == pytest.approx(0.05)
    epi = np.sqrt(np.mean(pred.forces_variance))
    assert f.epistemic_rms == pytest.approx(epi)
    assert f.sharpness == pytest.approx(np.sqrt(epi**2 + 0.05**2))
    assert rep["energy_per_atom"].aleatoric_rms == pytest.approx(0.002 / np.sqrt(4))  # per atom
    latent = uq.calibration_report(pred, test, include_noise=False)
    assert latent["forces"].sharpness == pytest.approx(epi)
    with pytest.raises(ValueError, match="needs model"):
        uq.calibration_report(pred, test)
    with pytest.raises(ValueError, match="no variances"):
        uq.calibration_report(model.predict(test, return_variance=False), test, model=model)
    with pytest.raises(ValueError, match="6 frames but 5"):
        uq.calibration_report(pred, test[:5], model=model)


def test_calibration_figures_have_units(cu):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gapkit import plot

    _, _, test, model = cu
    rep = uq.calibration_report(model.predict(test), test, model=model)
    fig = plot.reliability({"GP": rep["forces"]})
    ax = fig.axes[0]
    assert "(eV/Å)" in ax.get_xlabel() and "(eV/Å)" in ax.get_ylabel()
    fig2 = plot.coverage(rep)
    assert len(fig2.axes[0].lines) == 3  # energy, forces, the diagonal
    e, v = _synthetic(7, n=500)
    fig3 = plot.z_histogram(uq.z_scores(e, v), label="forces")
    assert fig3.axes[0].get_xlabel().startswith("z = error / σ")
    for f in (fig, fig2, fig3):
        plt.close(f)


def test_uq_energy_quantity_is_per_atom_by_name():
    from gapkit import uq

    frames = [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:4]
    m = make_si_model(energy_key="energy").fit(frames[:3])
    pred = m.predict(frames[3:], forces_variance="projected")
    rep = uq.calibration_report(pred, frames[3:], model=m)
    assert set(rep) == {"energy_per_atom", "forces"}
    assert rep["energy_per_atom"].unit == "eV/atom"
    with pytest.warns(DeprecationWarning, match="energy_per_atom"):
        old = uq.calibration_report(pred, frames[3:], model=m, quantities=("energy",))
    assert old["energy_per_atom"].rmse == rep["energy_per_atom"].rmse
    with pytest.warns(DeprecationWarning):
        assert rep["energy"] is rep["energy_per_atom"]
