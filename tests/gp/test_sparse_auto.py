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


def test_a_total_is_shared_equally_over_the_species_unless_asked_otherwise(tmp_path, capsys):
    """Ethanol (6 H, 2 C, 1 O): 60 points are 20 per species, as gap_fit counts them, not
    40 H, 13 C and 7 O; ``sparse_options={"split": "proportional"}`` gives the latter, and
    ``gapkit info`` says which."""
    import numpy as np

    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel
    from gapkit.cli import main
    from gapkit.data import load_bundled

    frames = load_bundled("ethanol_rmd17_200.xyz")[:30]

    def fitted(n_frames=30, **options):
        term = Term(SOAP(cutoff=3.0, n_max=3, l_max=2), SOAPKernel(), n_sparse=60,
                    sparse_options=options or None)
        return GAP([term], noise=NoiseModel(energy=0.01, forces=0.1), progress=False,
                   e0={"H": -13.6, "C": -1029.0, "O": -2041.0}).fit(frames[:n_frames])

    def counts(model):
        types, n = np.unique(model.sparse_sets_[0].types.numpy(), return_counts=True)
        return dict(zip(types.tolist(), n.tolist()))

    equal = fitted()
    assert counts(equal) == {1: 20, 6: 20, 8: 20}
    assert counts(fitted(split="proportional")) == {1: 40, 6: 13, 8: 7}
    # 10 frames: O has 10 environments, C 20; both get all, H the rest
    assert counts(fitted(n_frames=10)) == {1: 30, 6: 20, 8: 10}
    equal.save(tmp_path / "m.gapkit")
    assert main(["info", str(tmp_path / "m.gapkit")]) == 0
    assert "H 20, C 20, O 20; n_sparse=60 in all, split equal" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"Term\(sparse_options=\{'split': 'bogus'\}\)"):
        fitted(split="bogus")
