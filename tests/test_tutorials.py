"""Every tutorial runs headless in fast mode and asserts its own key numbers.

A tutorial is ``tutorials/NN_name.py`` (jupytext percent format). In fast mode
(``GAPKIT_FAST=1``) it shrinks its data and sizes; it writes its figures under
``GAPKIT_TUTORIAL_OUT`` and raises AssertionError when a number it teaches is off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))


def test_tutorials_exist():
    assert len(TUTORIALS) >= 8, [t.name for t in TUTORIALS]


@pytest.mark.slow  # 5-13 s each (16-63 s on a loaded machine): half the suite's time
@pytest.mark.parametrize("script", TUTORIALS, ids=[t.stem for t in TUTORIALS])
def test_tutorial_runs_in_fast_mode(script, tmp_path):
    # this checkout's gapkit, whether or not it is installed
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, GAPKIT_FAST="1", GAPKIT_TUTORIAL_OUT=str(tmp_path),
               MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{script.name} failed in fast mode:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    figures = list(tmp_path.rglob("*.png"))
    assert figures, f"{script.name} wrote no figure under GAPKIT_TUTORIAL_OUT"
