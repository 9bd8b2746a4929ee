"""``benchmarks/robustness.py`` (issue 16): every hostile case it builds — bad training
data, damaged model files, the command line, threads, seeds, far-out frames — ends in a
clear error or a correct result: none unclear, silent, crashing or losing a file."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness.py"


@pytest.mark.slow
def test_robustness_table_has_only_clear_outcomes():
    spec = importlib.util.spec_from_file_location("robustness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    res = module.run()
    bad = [r for r in res["rows"] if r["outcome"] != "ok"]
    assert not bad, "\n".join(f"{r['outcome']}: {r['category']}: {r['case']} — {r['detail']}"
                              for r in bad)
    assert sum(sum(c.values()) for c in res["table"].values()) >= 60
