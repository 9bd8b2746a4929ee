"""Every tutorial runs headless in fast mode and asserts its own key numbers.

A tutorial is ``tutorials/NN_name.py`` (jupytext percent format). In fast mode
(``GAPKIT_FAST=1``) it shrinks its data and sizes; it writes its figures under
``GAPKIT_TUTORIAL_OUT`` and raises AssertionError when a number it teaches is off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))


def test_tutorials_exist():
    assert len(TUTORIALS) >= 8, [t.name for t in TUTORIALS]


def _run_tutorial(script: Path, out: Path) -> subprocess.CompletedProcess:
    # this checkout's gapkit, whether or not it is installed
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, GAPKIT_FAST="1", GAPKIT_TUTORIAL_OUT=str(out),
               MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONPATH=path)
    return subprocess.run([sys.executable, str(script)], cwd=out, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tutorial_runs(request, tmp_path_factory):
    """The selected tutorials, started together as one-thread processes, as many at a time
    as there are cores: ``{script: (future, out folder)}``. Each test waits for its own."""
    selected = [item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_tutorial_runs_in_fast_mode"]
    from gapkit._threads import usable_cores

    workers = min(4, usable_cores())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = {}
        for script in selected:
            out = tmp_path_factory.mktemp(script.stem)
            runs[script] = (pool.submit(_run_tutorial, script, out), out)
        yield runs
        for future, _ in runs.values():
            future.cancel()


@pytest.mark.slow  # 5-20 s each, two at a time on two cores
@pytest.mark.parametrize("script", TUTORIALS, ids=[t.stem for t in TUTORIALS])
def test_tutorial_runs_in_fast_mode(script, tutorial_runs):
    future, out = tutorial_runs[script]
    proc = future.result()
    assert proc.returncode == 0, (
        f"{script.name} failed in fast mode:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    figures = list(out.rglob("*.png"))
    assert figures, f"{script.name} wrote no figure under GAPKIT_TUTORIAL_OUT"


def test_tutorial_figures_inline_in_jupyter_files_in_scripts(tmp_path, monkeypatch):
    """Tutorials pick matplotlib's backend with gapkit.plot.script_backend and write figures
    with gapkit.plot.save: in a script (here) Agg and the figure is closed after writing; in
    a Jupyter kernel (an IPython shell whose config has IPKernelApp) the current backend
    stays and the figure stays open for the cell to show. Every tutorial uses both."""
    import sys
    import types

    import matplotlib
    import matplotlib.pyplot as plt

    from gapkit import plot

    assert not plot.in_notebook() and plot.script_backend() == "Agg"
    fig = plt.figure()
    plot.save(fig, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0 and not plt.fignum_exists(fig.number)

    shell = types.SimpleNamespace(config={"IPKernelApp": {"connection_file": "x.json"}})
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert plot.in_notebook() and plot.script_backend() == matplotlib.get_backend()
    fig = plt.figure()
    plot.save(fig, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0 and plt.fignum_exists(fig.number)
    plt.close(fig)
    shell.config = {}  # a terminal IPython: files, as a script
    assert not plot.in_notebook()

    for path in TUTORIALS:
        text = path.read_text()
        assert "matplotlib.use(script_backend())" in text, path.name
        assert "savefig" not in text and "plt.close(fig)" not in text, path.name
