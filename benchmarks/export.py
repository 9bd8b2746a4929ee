"""The exported metatomic model in ASE against gapkit's own calculator: CPU ms per atom.

A model with the published Zuo 2020 Si descriptor settings (SOAP n_max 8, l_max 8, cutoff
5.4 Å, zeta 4; ``--n-sparse`` CUR points, a quick fit on every ``--stride``-th frame of
``data/Si_train.xyz``, or ``--model PATH``) is exported with :func:`gapkit.export.export`
and run on rattled diamond Si (64 and 1000 atoms) by

* ``gapkit``: :class:`gapkit.GAPCalculator` (``variance=False``: E+F; with sigma:
  ``variance=True, forces_variance=None``, the energy and per-atom energy variances);
* ``metatomic``: ``metatomic_ase.MetatomicCalculator`` on the exported file (E+F with
  ``uncertainty_threshold=None``; with sigma: the per-atom energy sigma every call, the
  threshold set high enough never to warn).

Each call recomputes (the atoms move by 1e-6 Å between calls); the codes alternate A B A B,
one thread, CPU time (``time.process_time``); best and median of ``--repeats`` calls after
three warm-up calls (TorchScript's profiling executor optimises the exported model during
its first two calls, which take 2-4x longer: the first steps of an MD run). Results are
printed and written to ``benchmarks/results/export.json``. The target (issue 14): the
exported model at most as slow as ``GAPCalculator`` (ratio <= 1).
"""

from __future__ import annotations

import os
import sys

from _common import REPO, THREAD_VARIABLES, base_machine_info, load_average, silicon

for _name in THREAD_VARIABLES:
    os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit as fit_bench  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "export.json"


def calculators(model, path, sigma: bool):
    from metatomic_ase import MetatomicCalculator

    from gapkit import GAPCalculator

    if sigma:
        return {"gapkit": GAPCalculator(model, variance=True, forces_variance=None),
                "metatomic": MetatomicCalculator(str(path), uncertainty_threshold=1e9)}
    return {"gapkit": GAPCalculator(model, variance=False),
            "metatomic": MetatomicCalculator(str(path), uncertainty_threshold=None)}


def timed(calc, atoms, step: int) -> float:
    atoms.positions[0, 0] += 1e-6 * (1 if step % 2 else -1)  # a new call, not the cache
    atoms.calc = calc
    start = time.process_time()
    atoms.get_potential_energy()
    atoms.get_forces()
    return time.process_time() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a GAP.save file")
    parser.add_argument("--n-sparse", type=int, default=500)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from gapkit import GAP
    from gapkit.data import read_extxyz
    from gapkit.export import export

    settings = dict(fit_bench.PUBLISHED, stride=args.stride, n_sparse=args.n_sparse)
    if args.model is None:
        model = fit_bench.build_gapkit(settings)
        model.progress = False
        model.fit(read_extxyz(fit_bench.TRAIN)[:: args.stride])
    else:
        model = GAP.load(args.model)
        model.progress = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, Path(tmp) / "si.pt")
        for n in args.sizes:
            atoms = silicon(n)
            for sigma in (False, True):
                calcs = calculators(model, path, sigma)
                times: dict = {name: [] for name in calcs}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for calc in calcs.values():  # warm-up: TorchScript's profiling
                        for k in range(3):  # executor specialises in the first two calls
                            timed(calc, atoms.copy(), k)
                    work = {name: atoms.copy() for name in calcs}
                    for step in range(args.repeats):
                        for name, calc in calcs.items():
                            times[name].append(timed(calc, work[name], step + 1))
                    e = {name: work[name].get_potential_energy() for name in calcs}
                for name, ts in times.items():
                    rows.append({"n_atoms": n, "sigma": sigma, "code": name,
                                 "best_ms_per_atom": 1e3 * min(ts) / n,
                                 "median_ms_per_atom": 1e3 * statistics.median(ts) / n})
                rows[-1]["energy_diff_ev"] = abs(e["metatomic"] - e["gapkit"])
                print(f"{n:>5} atoms {'E+F+sigma' if sigma else 'E+F':<10}"
                      + "".join(f"  {r['code']} {r['best_ms_per_atom']:.3f} ms/atom"
                                for r in rows[-2:])
                      + f"  ratio metatomic/gapkit "
                        f"{rows[-1]['best_ms_per_atom'] / rows[-2]['best_ms_per_atom']:.2f}"
                      + f"  |dE| {rows[-1]['energy_diff_ev']:.1e} eV", flush=True)
    import metatomic.torch as mta

    report = {"machine": {**base_machine_info(), "threads": 1, "load_average": load_average(),
                          "metatomic_torch": mta.__version__, "torch": torch.__version__},
              "settings": {**settings, "repeats": args.repeats,
                           "n_sparse_fitted": [s.n for s in model.sparse_sets_],
                           "timer": "time.process_time, one thread, codes interleaved"},
              "results": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {RESULTS}")
    return report


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
