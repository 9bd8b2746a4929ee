"""SOAP values + position gradients from 64 to 8,000 atoms: time and peak memory per atom
(issue 17: "a scaling series 64 -> 8,000 atoms (time and peak memory, linear in atoms)").

Two systems, n_max 8, l_max 6, cutoff 5 Å (``soap.py``'s settings), one thread, one call
per size in a process of its own (peak RSS by ``ru_maxrss`` above the process's RSS before
the call, after a warm-up call on the smallest cell):

- rattled diamond Si, 64 ... 8,000 atoms (dense gradients, ``SOAP.compute``);
- a random ternary fcc alloy (Cu, Ag, Au; a = 3.9 Å, rattled), 108 ... 4,000 atoms: compact
  gradients (``SOAP.compute_compact``) at every size, dense ones up to ``--dense-max`` atoms
  (a dense row holds all 6 species pairs: 1.5 MB per atom here).

Prints µs/atom (CPU), peak RSS above the start (GB) and per atom (kB); writes
``benchmarks/results/soap_scaling.json`` as it goes.
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import child_result, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "soap_scaling.json"
SETTINGS = {"cutoff": 5.0, "cutoff_width": 0.5, "n_max": 8, "l_max": 6, "atom_sigma": 0.5}


def alloy(k: int, seed: int = 0):
    """A random Cu/Ag/Au fcc alloy of 4 k^3 atoms, rattled."""
    import ase.build
    import numpy as np

    atoms = ase.build.bulk("Cu", "fcc", a=3.9, cubic=True) * (k, k, k)
    atoms.numbers = np.random.default_rng(seed).choice([29, 47, 79], len(atoms))
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


def child(system: str, k: int, mode: str) -> dict:
    import torch
    from _common import silicon

    from gapkit import SOAP

    torch.set_num_threads(1)
    make = (lambda kk: silicon(8 * kk**3)) if system == "Si" else alloy
    species = [14] if system == "Si" else [29, 47, 79]
    soap = SOAP(**SETTINGS, species=species)
    small = make(2)

    def run(atoms):
        if mode == "compact":
            return soap.compute_compact([atoms])
        return soap.compute([atoms], gradients=["positions"])

    run(small)  # warm-up
    atoms = make(k)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the warm-up's peak
    def rss_now() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30

    start = rss_now()
    cpu = time.process_time()
    out = run(atoms)
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    del out
    return {"atoms": len(atoms), "cpu_s": cpu, "us_per_atom": cpu / len(atoms) * 1e6,
            "peak_above_start_gb": max(peak, base) - start,
            "kb_per_atom": (max(peak, base) - start) * 2**20 / len(atoms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--si", type=int, nargs="+", default=[2, 3, 4, 5, 8, 10],
                    help="Si supercells k (8 k^3 atoms)")
    ap.add_argument("--alloy", type=int, nargs="+", default=[3, 5, 8, 10],
                    help="alloy supercells k (4 k^3 atoms)")
    ap.add_argument("--dense-max", type=int, default=2100)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        system, k, mode = args.child
        print(json.dumps(child(system, int(k), mode)))
        return
    runs = [("Si", k, "dense") for k in args.si]
    for k in args.alloy:
        runs.append(("CuAgAu", k, "compact"))
        if 4 * k**3 <= args.dense_max:
            runs.append(("CuAgAu", k, "dense"))
    out: dict = {"settings": SETTINGS, "rows": []}
    print(f"{'system':>7} {'atoms':>6} {'gradients':>9} {'µs/atom':>8} {'peak GB':>8} "
          f"{'kB/atom':>8}")
    for system, k, mode in runs:
        try:
            r = child_result(__file__, "--child", system, str(k), mode)
        except RuntimeError as exc:
            print(f"{system:>7} k={k} {mode}: failed ({exc})")
            continue
        out["rows"].append({"system": system, "mode": mode, **r})
        print(f"{system:>7} {r['atoms']:>6} {mode:>9} {r['us_per_atom']:>8.0f} "
              f"{r['peak_above_start_gb']:>8.2f} {r['kb_per_atom']:>8.0f}", flush=True)
        write_results(RESULTS, out)


if __name__ == "__main__":
    main()
