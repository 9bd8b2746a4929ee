"""Helpers shared by the benchmark scripts: test systems and a record of the machine.

Import only the standard library here (plus ase lazily): the scripts set the thread
environment variables before numpy/torch are imported.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "RAYON_NUM_THREADS")


def silicon(n_atoms: int, rattle: float = 0.05, seed: int = 0):
    """Rattled cubic diamond silicon with ``n_atoms = 8 k^3`` atoms (k×k×k cubic cells)."""
    import ase.build

    k = round((n_atoms / 8) ** (1 / 3))
    if 8 * k**3 != n_atoms:
        raise ValueError(f"diamond Si supercells have 8 k^3 atoms (64, 216, 512, 1000...), "
                         f"not {n_atoms}")
    atoms = ase.build.bulk("Si", "diamond", a=5.43, cubic=True) * (k, k, k)
    atoms.rattle(stdev=rattle, seed=seed)
    return atoms


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews the timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def base_machine_info() -> dict:
    """Date, CPU model, core count, platform, Python and the git state of the checkout."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10,
                                check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gapkit_commit": commit or None,
    }


def results_so_far(path: Path) -> dict:
    """A fresh results file's content: this machine, and the ``results`` an earlier run
    wrote to ``path`` (kept, so that runs of one data set at a time add up)."""
    out: dict = {"machine": base_machine_info(), "results": {}}
    if path.exists():
        out["results"] = json.loads(path.read_text()).get("results", {})
    return out


def child_result(script, *args: str, env: dict | None = None) -> dict:
    """Run ``python script *args`` in a process of its own (its peak RSS its own) and return
    the JSON object it prints last; a failed child raises RuntimeError with its last
    stderr line."""
    import sys

    run = subprocess.run([sys.executable, str(script), *args], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines() or [f"exit status {run.returncode}"]
        raise RuntimeError(lines[-1])
    return json.loads(run.stdout.strip().splitlines()[-1])


def write_results(path: Path, out: dict) -> None:
    """``out`` as JSON at ``path`` (its folder made), after every row of a long run."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
