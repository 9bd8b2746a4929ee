"""What a fit sends between Dask processes (:class:`gapkit.gp.parallel.SendsTensors`): its
M x M factors travel out of band, without a copy, and come back as the same numbers in the
same layout, writable. (tests/test_distributed.py checks a real transfer between worker
processes.)"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from gapkit.gp.cv import FoldGrams
from gapkit.gp.sparse import _augmented, _QRPart, _stack_qr


def _part(m: int, seed: int) -> _QRPart:
    g = torch.Generator().manual_seed(seed)
    r = torch.randn((m, m), generator=g, dtype=torch.float64).triu_()
    return _QRPart(_augmented(r, fortran=True), 7, 1.5, 2, ((3, "frame 3"),))


def _round_trip(obj, *, readonly: bool = False):
    """pickle protocol 5 with a buffer callback, as Dask sends; the buffers and the pickle
    bytes."""
    buffers: list = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    if readonly:
        views = [bytes(v) for v in views]  # memory the receiver may not write
    return pickle.loads(data, buffers=views), data, buffers


def test_qr_part_travels_out_of_band_in_its_own_memory():
    part = _part(300, 0)
    back, data, buffers = _round_trip(part)
    # the factor is not in the pickle bytes (torch would put a copy of it there)
    assert len(data) < 2000
    assert sum(b.raw().nbytes for b in buffers) >= part.aug.numel() * 8
    assert back.aug.stride() == part.aug.stride() == (1, 301)  # Fortran order kept
    assert back.aug.data_ptr() == part.aug.data_ptr()  # the very memory (no copy made)
    assert (back.n_rows, back.sum_log_sigma, back.n_zero, back.violations) == (
        7, 1.5, 2, ((3, "frame 3"),))
    # and a combine of two received parts is the combine of the originals
    a, b = _part(300, 1), _part(300, 2)
    want = _stack_qr(_part(300, 1), _part(300, 2)).aug
    got = _stack_qr(_round_trip(a)[0], _round_trip(b)[0]).aug
    assert torch.equal(got, want)


def test_read_only_buffers_are_copied_and_a_consumed_mark_travels():
    part = _part(50, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns of a tensor over read-only memory
        back, _, _ = _round_trip(part, readonly=True)
    assert back.aug.data_ptr() != part.aug.data_ptr()
    assert torch.equal(back.aug, part.aug) and back.aug.stride() == part.aug.stride()
    _stack_qr(part, _part(50, 4))  # marks part as folded into
    again, _, _ = _round_trip(part)
    with pytest.raises(RuntimeError, match="already overwrote"):
        _stack_qr(again, _part(50, 5))


def test_fold_grams_send_their_tensors_out_of_band():
    m, folds = 40, 3
    g = torch.Generator().manual_seed(5)
    rows = {0: [torch.randn((4, m), generator=g, dtype=torch.float64) for _ in range(folds)]}
    grams = FoldGrams(gram=torch.randn((folds, 1, m, m), generator=g, dtype=torch.float64),
                      rhs=torch.randn((folds, 3, m), generator=g, dtype=torch.float64),
                      counts=np.ones((folds, 3)), u_factor=torch.eye(m, dtype=torch.float64),
                      yy=np.zeros((folds, 3)), sum_log_sigma=np.zeros((folds, 3)),
                      dense=(1,), rows=rows, n_zero_rows=4, symmetry_violations=((1, "x"),))
    back, data, buffers = _round_trip(grams)
    assert len(data) < 3000 and len(buffers) >= 6
    for name in ("gram", "rhs", "u_factor"):
        assert torch.equal(getattr(back, name), getattr(grams, name))
        assert isinstance(getattr(back, name), torch.Tensor)
    assert all(torch.equal(x, y) for x, y in zip(back.rows[0], rows[0]))
    assert isinstance(back.counts, np.ndarray) and back.dense == (1,)
    assert (back.n_zero_rows, back.symmetry_violations) == (4, ((1, "x"),))
