"""n_sparse="auto": one sparse point per 13 training environments, within [500, 2000]."""

from __future__ import annotations

import pytest

from gapkit.gp.sparsify import auto_sparse_count
from gapkit.terms import Term


@pytest.mark.parametrize(("environments", "points"),
                         [(10, 500), (6500, 500), (13233, 1018), (20000, 1538), (27416, 2000)])
def test_auto_count(environments, points):
    assert auto_sparse_count(environments) == points


def test_auto_is_a_term_setting_that_round_trips():
    from gapkit import SOAP, SOAPKernel

    term = Term(SOAP(n_max=2, l_max=1), SOAPKernel(), n_sparse="auto")
    assert Term.from_dict(term.to_dict()).n_sparse == "auto"
