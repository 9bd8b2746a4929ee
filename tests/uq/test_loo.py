"""gapkit.uq.loo: closed-form leave-one-out residuals and leverages equal brute-force refits
(same sparse points, e0 and noise) to 1e-6 relative; a frame whose energy was shifted ranks
first among the suspicious frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from uq_cases import LOO_RTOL, _cells, _model, cu_case

from gapkit import uq
from gapkit.gp.design import design_rows
from gapkit.gp.sparse import IncrementalQR


@pytest.fixture(scope="module")
def cu():
    """Train, validation and test EMT Cu cells and a small GAP fitted on the first."""
    return cu_case()


def _refit_without(model, frames, leave_out):
    """Brute force: the DTC solve (same sparse points, e0, noise) on every observation
    except those in ``leave_out`` (a boolean mask over the model's observation rows);
    returns alpha and all rows (design matrix, in observation order)."""
    data = model.training_data(frames)
    frames, obs = data.frames, data.observations
    rows = torch.cat([design_rows(model.terms_, model.sparse_sets_, [a], _frame_obs(obs, k),
                                  set(data.gradients)) for k, a in enumerate(frames)])
    keep = ~leave_out
    qr = IncrementalQR(model.U_)
    qr.add(rows[torch.as_tensor(keep)], torch.as_tensor(obs.y[keep]),
           torch.as_tensor(obs.sigma[keep]))
    r, b, _ = qr.finish()
    return torch.linalg.solve_triangular(r, b[:, None], upper=True)[:, 0], rows, obs


def _frame_obs(obs, k):
    sub = obs.select(np.nonzero(obs.frame == k)[0])
    return type(sub)(sub.frame - k, sub.kind, sub.atom, sub.component, sub.y, sub.sigma)


def test_loo_equals_brute_force_refits(cu):
    train, _, _, model = cu
    loo = uq.leave_one_out(model, train)
    obs_y = loo.y
    alpha_all, rows, obs = _refit_without(model, train, np.zeros(obs_y.size, bool))
    assert torch.allclose(alpha_all, model.alpha_, rtol=1e-8, atol=1e-10)
    # residuals of the full fit
    np.testing.assert_allclose(loo.residual, obs.y - (rows @ model.alpha_).numpy(),
                               atol=1e-10 * np.abs(obs_y).max())
    # leverages: dense hat matrix H = B (U^T U + B^T B)^-1 B^T = Q_B Q_B^T from the thin
    # QR of [B; U] (stable, unlike the normal equations)
    b = (rows / torch.as_tensor(obs.sigma)[:, None]).numpy()
    q, _ = np.linalg.qr(np.vstack([b, model.U_.numpy()]))
    h = (q[: b.shape[0]] ** 2).sum(1)
    np.testing.assert_allclose(loo.leverage, h, rtol=1e-8, atol=1e-12)
    assert np.all((h > 0) & (h < 1))
    # whole frames left out
    for f in (0, 4, 9):
        mask = obs.frame == f
        alpha, _, _ = _refit_without(model, train, mask)
        brute = obs.y[mask] - (rows[torch.as_tensor(mask)] @ alpha).numpy()
        err = np.abs(loo.frame_loo_residual[mask] - brute).max() / np.abs(brute).max()
        assert err < LOO_RTOL, (f, err)
    # single observations left out: an energy, a force component
    for n in (int(np.nonzero(obs.kind == 0)[0][3]), int(np.nonzero(obs.kind == 1)[0][17])):
        mask = np.zeros(obs.n_rows, bool)
        mask[n] = True
        alpha, _, _ = _refit_without(model, train, mask)
        brute = obs.y[n] - float(rows[n] @ alpha)
        assert abs(loo.loo_residual[n] - brute) < LOO_RTOL * abs(brute), (n, brute)


def test_corrupted_energy_ranks_first():
    frames = _cells(10, 0, shift={6: 0.2})  # +50 meV/atom on a 4-atom frame
    model = _model().fit(frames)
    loo = uq.leave_one_out(model, frames)
    assert loo.ranking[0] == 6, loo.suspicious(3)
    assert abs(loo.energy_loo_z[6]) > 2 * np.nanmax(np.abs(np.delete(loo.energy_loo_z, 6)))
    # the clean fit has no such outlier
    clean = uq.leave_one_out(_model().fit(_cells(10, 0)), _cells(10, 0))
    # frame_score is a standard-normal equivalent: the shifted frame is far in the tail,
    # no clean frame is (10 frames x 2 kinds; measured 6.9 vs at most 3.4)
    assert loo.frame_score[6] > 5.0, loo.suspicious(3)
    assert clean.frame_score.max() < 4.0, clean.suspicious(3)
    assert loo.frame_misfit[6, 0] > 10 * loo.frame_misfit[6, 1]  # the energy is at fault
