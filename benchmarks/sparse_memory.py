"""Peak memory of choosing the sparse points, descriptors in memory against streamed
(issue 17 item 5: "sparse selection from a streamed descriptor pass so peak memory stays
flat in N").

Rattled 64-atom diamond Si cells (``--frames`` sizes), SOAP cutoff 5, n_max 8, l_max 8
(324 features), CUR (gap_fit's sampling) of ``--m`` points, one thread. Each mode and size
runs in a process of its own: its CPU-s (``time.process_time``) and peak RSS
(``ru_maxrss``) after the imports and the frames, and the rows chosen (the same in both
modes). ``GAPKIT_SPARSE_STREAM_GB`` picks the mode: 0 streams, a large value holds every
environment's values (the default streams above 1 GB of them). Results:
``benchmarks/results/sparse_memory.json``.
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
RESULTS = HERE / "results" / "sparse_memory.json"


def child(n_frames: int, m: int) -> dict:
    import hashlib

    import numpy as np
    import torch
    from _common import silicon

    from gapkit import SOAP, SOAPKernel, Term
    from gapkit.gp.sparse_sets import term_sparse_set

    torch.set_num_threads(1)
    frames = [silicon(64, rattle=0.1, seed=s) for s in range(n_frames)]
    term = Term(SOAP(cutoff=5.0, n_max=8, l_max=8), SOAPKernel(zeta=4),
                n_sparse=m).for_species([14], SOAPKernel(zeta=4))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    cpu = time.process_time()
    chosen = term_sparse_set(term, frames, 0)
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"cpu_s": cpu, "peak_rss_gb": peak, "rss_before_gb": base,
            "rows": hashlib.sha1(np.asarray(chosen.indices).tobytes()).hexdigest()[:12]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.m)))
        return
    out: dict = {"m": args.m, "rows": {}}
    print(f"{'frames':>7} {'atoms':>8} {'mode':>9} {'CPU-s':>7} {'peak RSS GB':>12} "
          f"{'above start':>11}  rows chosen")
    for n in args.frames:
        for mode, gb in (("in memory", "1e9"), ("streamed", "0")):
            env = {**os.environ, "GAPKIT_SPARSE_STREAM_GB": gb}
            r = child_result(__file__, "--child", str(n), "--m", str(args.m), env=env)
            out["rows"][f"{n} {mode}"] = {"frames": n, "atoms": 64 * n, "mode": mode, **r}
            print(f"{n:>7} {64 * n:>8} {mode:>9} {r['cpu_s']:>7.1f} {r['peak_rss_gb']:>12.2f} "
                  f"{r['peak_rss_gb'] - r['rss_before_gb']:>11.2f}  {r['rows']}", flush=True)
            write_results(RESULTS, out)


if __name__ == "__main__":
    main()
