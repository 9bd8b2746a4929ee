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


def test_auto_is_the_default_everywhere_a_user_leaves_it_out():
    """GAP()'s term, a Term without n_sparse and a config term without it all scale with
    the data (issue 24 item 2); an explicit count stays as given."""
    from gapkit import GAP, SOAP, SOAPKernel
    from gapkit.io import from_config

    assert GAP().terms[0].n_sparse == "auto"
    assert Term(SOAP(n_max=2, l_max=1), SOAPKernel()).n_sparse == "auto"
    spec = {"descriptor": {"type": "SOAP", "n_max": 2, "l_max": 1},
            "kernel": {"type": "SOAPKernel"}}
    assert from_config({"terms": [spec]}).params["terms"][0].n_sparse == "auto"
    assert from_config({"terms": [spec | {"n_sparse": 300}]}).params["terms"][0].n_sparse == 300
    assert from_config({}).params["terms"][0].n_sparse == "auto"
