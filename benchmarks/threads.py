"""Threads that never slow gapkit down (issue 17 item 4): 1 thread, 2 threads and
``gapkit.set_threads("auto")`` on an idle machine and with the other core busy.

torch starts one thread per core and, between its many small ops, its OpenMP threads
spin: when another process holds a core, two threads can take far longer than one. The
``auto`` setting (the default) gives each fit, predict and descriptor call the cores other
processes left free, measured since the previous call (``gapkit._threads``).

Workloads, each timed by wall and CPU time, best of ``--repeats``, the three settings
interleaved (1, 2, auto, 1, 2, auto, ...):

- SOAP values + position gradients of 216 Si atoms (one species) and of 50 bundled
  ethanol frames (C, H, O); n_max 8, l_max 6, cutoff 5 Å;
- a fixed-noise GAP fit on 40 bundled Si frames (descriptors, design rows, the QR; SOAP
  n_max 6, l_max 4, 300 CUR points);
- that model's prediction of 216 Si atoms with exact force variances.

The busy core is a Python loop in a second process, started and stopped by this script.
Target: every setting that may run 2 threads is never slower (wall time) than 1 thread,
in either state. Writes ``benchmarks/results/threads.json``. About 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing gapkit
    sys.path.insert(0, str(HERE.parent))

from _common import base_machine_info, load_average, silicon  # noqa: E402

RESULTS = HERE / "results" / "threads.json"
SETTINGS = (1, 2, "auto")


def workloads():
    """name -> a function running it once."""
    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term
    from gapkit.data import load_bundled

    si = [silicon(216)]
    ethanol = load_bundled("ethanol_rmd17_200.xyz")[:50]
    soap = SOAP(cutoff=5.0, n_max=8, l_max=6, atom_sigma=0.5)
    soap_mol = SOAP(cutoff=5.0, n_max=8, l_max=6, atom_sigma=0.5, species=[1, 6, 8])
    train = load_bundled("Si_train.xyz")[::5][:40]

    def model():
        return GAP([Term(SOAP(cutoff=5.0, n_max=6, l_max=4, atom_sigma=0.5),
                         SOAPKernel(zeta=4), n_sparse=300)],
                   noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05), random_state=0,
                   progress=False)

    fitted = model().fit(train)
    return {
        "SOAP Si 216 + gradients": lambda: soap.compute(si, gradients=["positions"]),
        "SOAP ethanol x50 + gradients": lambda: soap_mol.compute(ethanol,
                                                                 gradients=["positions"]),
        "fit, 40 Si frames (M 300)": lambda: model().fit(train),
        "predict Si 216, exact force variances": lambda: fitted.predict(si),
    }


def measure(jobs: dict, repeats: int) -> dict:
    import torch

    from gapkit import set_threads
    from gapkit._threads import call_threads

    out = {}
    for name, job in jobs.items():
        set_threads(1)
        job()  # warm-up
        best: dict = {}
        for _ in range(repeats):
            for setting in SETTINGS:
                chosen = set_threads(setting)
                with call_threads():
                    used = torch.get_num_threads()
                cpu, wall = time.process_time(), time.perf_counter()
                job()
                t = (time.perf_counter() - wall, time.process_time() - cpu)
                key = str(setting)
                if key not in best or t[0] < best[key]["wall_s"]:
                    best[key] = {"wall_s": t[0], "cpu_s": t[1], "threads": used,
                                 "set_threads_returned": chosen}
        out[name] = best
        print(f"  {name}: " + ", ".join(
            f"{k} ({v['threads']} thr) {v['wall_s']:.3f} s wall / {v['cpu_s']:.3f} s CPU"
            for k, v in best.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    from gapkit._threads import other_load

    jobs = workloads()
    result = {"machine": base_machine_info(), "repeats": args.repeats, "states": {}}
    for state in ("idle", "busy"):
        busy = None
        if state == "busy":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            other_load()
            time.sleep(1.0)  # the next look sees a second of the other process
            print(f"{state} (other processes: {other_load():.2f} cores; load average "
                  f"{load_average()})", flush=True)
            result["states"][state] = measure(jobs, args.repeats)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        args.output.parent.mkdir(exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1))
    print("\nwall time relative to 1 thread (below 1: faster; target: never above 1)")
    print(f"{'workload':42s} {'idle 2':>7s} {'idle auto':>9s} {'busy 2':>7s} {'busy auto':>9s}")
    for name in jobs:
        row = []
        for state in ("idle", "busy"):
            r = result["states"][state][name]
            row += [r["2"]["wall_s"] / r["1"]["wall_s"], r["auto"]["wall_s"] / r["1"]["wall_s"]]
        print(f"{name:42s} {row[0]:7.2f} {row[1]:9.2f} {row[2]:7.2f} {row[3]:9.2f}")


if __name__ == "__main__":
    main()
