"""What the cross-validation tests share: a fitted model's folds, fold statistics and the
brute-force design rows (frame by frame) they are checked against."""

from __future__ import annotations

import numpy as np
import torch

from gapkit.gp.cv import assign_folds, fold_grams, frame_config_types
from gapkit.gp.design import design_rows


def fold_setup(model, frames, n_folds: int, low_rank_rows=None):
    """``(data, obs, folds, grams, rows)``: the model's training data and observations,
    folds stratified by config_type (seed 0), their :func:`fold_grams` (``low_rank_rows``
    passed on) and every row's design row, built one frame at a time."""
    data = model.training_data(frames)
    obs = data.observations
    folds = assign_folds(frame_config_types(obs, len(frames)), n_folds, seed=0)
    grams = fold_grams(model.terms_, model.sparse_sets_, model.U_, frames, obs,
                       data.gradients, folds, batch_atoms=64,
                       low_rank_rows=low_rank_rows)
    rows = torch.cat([design_rows(model.terms_, model.sparse_sets_, [a],
                                  obs.select(np.nonzero(obs.frame == k)[0]).shifted(k),
                                  set(data.gradients)) for k, a in enumerate(frames)])
    return data, obs, folds, grams, rows


def fold_refit(model, rows, obs, folds, fold: int, sigma):
    """Brute force: the DTC fit without ``fold`` (its rows left out of a fresh QR at noise
    ``sigma`` per row), as ``(R, alpha)``."""
    from gapkit.gp.sparse import IncrementalQR

    train = folds[obs.frame] != fold
    qr = IncrementalQR(model.U_)
    qr.add(rows[torch.as_tensor(train)], torch.as_tensor(obs.y[train]),
           torch.as_tensor(sigma[train]))
    r, b, _ = qr.finish()
    return r, torch.linalg.solve_triangular(r, b[:, None], upper=True)[:, 0]
