"""Sparse points chosen from streamed descriptors (issue 17 item 5): above
``GAPKIT_SPARSE_STREAM_GB`` of descriptor values one process computes them a partition at
a time, again at each pass, and chooses the rows it chooses with all of them in memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gapkit import SOAP, SOAPKernel, Term
from gapkit.data import bundled_path, read_frames
from gapkit.gp import sparse_sets
from gapkit.gp.sparse_sets import term_sparse_set


def _cases():
    si = read_frames(bundled_path("Si_train.xyz"))[:24]
    ethanol = read_frames(bundled_path("ethanol_rmd17_200.xyz"))[:80]
    return [(si, SOAP(cutoff=4.5, n_max=4, l_max=3), 100),
            (ethanol, SOAP(cutoff=4.0, n_max=2, l_max=2), 90)]


@pytest.mark.parametrize("method, options", [("cur", {}), ("cur", {"cur_mode": "deterministic"}),
                                             ("fps", {}), ("random", {})])
def test_streamed_descriptors_choose_the_points_of_one_pass(method, options, monkeypatch):
    """Si (one kernel type, CUR by the Gram path) and ethanol (H by the Gram path, C and O
    by the SVD of their few rows): the same rows and points as with every descriptor in
    memory, while no descriptor call sees more than one partition's frames."""
    seen: list = []
    real = SOAP.compute

    def spy(self, frames, **kwargs):
        seen.append(len(frames))
        return real(self, frames, **kwargs)

    for data, soap, n_sparse in _cases():
        species = sorted({int(z) for a in data for z in a.numbers})
        term = Term(soap, SOAPKernel(zeta=4), n_sparse=n_sparse, sparse_method=method,
                    sparse_options=options).for_species(species, SOAPKernel(zeta=4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            one = term_sparse_set(term, data, 0)
            with monkeypatch.context() as m:
                m.setenv("GAPKIT_SPARSE_STREAM_GB", "0")
                per_part = 40 * 8 * int(np.asarray(one.points).shape[1])
                m.setattr(sparse_sets, "PART_BYTES", per_part)  # about 40 atoms a partition
                m.setattr(SOAP, "compute", spy)
                seen.clear()
                two = term_sparse_set(term, data, 0)
        parts = sparse_sets.streamed_parts(soap, data)
        assert parts is None  # the environment is back: the values fit in memory
        assert len(seen) > 4 and max(seen) < len(data) / 2, seen
        assert np.array_equal(one.indices, two.indices)
        np.testing.assert_allclose(np.asarray(two.points), np.asarray(one.points),
                                   rtol=1e-13, atol=1e-15)
        assert np.array_equal(np.asarray(one.types), np.asarray(two.types))


def test_stream_threshold(monkeypatch):
    """Small data stays in memory by default; the threshold is read from the environment
    and a bad value is an error that says what to give."""
    data, soap, _ = _cases()[0]
    assert sparse_sets.streamed_parts(soap, data) is None
    monkeypatch.setenv("GAPKIT_SPARSE_STREAM_GB", "1e-6")  # 1 kB: streamed
    parts = sparse_sets.streamed_parts(soap, data)
    assert parts is not None and sum(len(p.frames) for p in parts) == len(data)
    monkeypatch.setenv("GAPKIT_SPARSE_STREAM_GB", "lots")
    with pytest.raises(ValueError, match="GAPKIT_SPARSE_STREAM_GB='lots' is not a size"):
        sparse_sets.streamed_parts(soap, data)
