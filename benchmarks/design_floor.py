"""The fit's design matrix against its floor (issue 17 item 5: "the design matrix ... at
its floor", target <= 1.3x).

Zuo 2020 Si (the bundled training set, 214 frames) with the published gap_fit settings
(SOAP n_max 8, l_max 8, cutoff 5.4 Å, width 0.5 Å, atom_sigma 0.5 Å, zeta 4) and ``--m``
CUR points (1000). One thread, CPU time (``time.process_time``), best of ``--repeats``,
frames in the fit's blocks (``--batch-atoms``). Stages: descriptors (values + position
gradients), force rows (``functional_rows``: the kernel derivative at every sparse point
contracted with every gradient entry), energy rows, and the rows gathered into the
observations' order.

The floor of the force rows is their GEMM: ``2 x 3 E x D x M`` flops (E gradient entries,
D features) at the best rate this core reaches for that GEMM shape, measured here on
(rows, D) x (D, M) products of 1,024 to 12,288 rows (best of 5 each). Results:
``benchmarks/results/design_floor.json``.
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import base_machine_info  # noqa: E402

from gapkit.data import bundled_path, read_frames  # noqa: E402
from gapkit.descriptors import SOAP  # noqa: E402
from gapkit.descriptors.base import frame_batches  # noqa: E402
from gapkit.gp.design import functional_rows, gather_rows  # noqa: E402
from gapkit.data.labels import get_all_labels  # noqa: E402
from gapkit.gp.observations import NoiseModel, build_observations  # noqa: E402
from gapkit.gp.sparsify import sparse_points  # noqa: E402
from gapkit.kernels import SOAPKernel  # noqa: E402

HERE = Path(__file__).resolve().parent


def gemm_rate(d: int, m: int, repeats: int = 5) -> float:
    """GFLOP/s of a float64 (rows, d) x (d, m) product on this thread: the best over
    ``repeats`` and over 1,024, 3,072 and 12,288 rows (the reachable rate for that shape)."""
    rate = 0.0
    for rows in (1024, 3 * 1024, 3 * 4096):
        a = torch.randn(rows, d, dtype=torch.float64)
        b = torch.randn(d, m, dtype=torch.float64)
        a @ b
        best = np.inf
        for _ in range(repeats):
            t = time.process_time()
            a @ b
            best = min(best, time.process_time() - t)
        rate = max(rate, 2.0 * rows * d * m / best / 1e9)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-atoms", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(1)
    frames = read_frames(bundled_path("Si_train.xyz"))
    soap = SOAP(cutoff=5.4, cutoff_width=0.5, n_max=8, l_max=8, atom_sigma=0.5)
    kernel = SOAPKernel(zeta=4)
    env = soap.compute(frames)
    sparse = sparse_points(np.asarray(env.values), args.m, types=env.centre_types,
                           method="cur", random_state=0)
    blocks = list(frame_batches(frames, args.batch_atoms))
    times = {k: [] for k in ("descriptors", "force rows", "energy rows", "gather")}
    n_entries = 0
    with torch.no_grad():
        for _ in range(args.repeats):
            spent = dict.fromkeys(times, 0.0)
            n_entries = 0
            for a, b in blocks:
                block = frames[a:b]
                obs = build_observations(block, get_all_labels(block), NoiseModel(),
                                         {14: 0.0}, ("energy", "forces"))
                t = time.process_time()
                res = soap.compute(block, gradients=["positions"])
                spent["descriptors"] += time.process_time() - t
                n_entries += res.gradients.shape[0]
                t = time.process_time()
                f = functional_rows(kernel, res, sparse, energy=False, forces=True,
                                    virial=False)
                spent["force rows"] += time.process_time() - t
                t = time.process_time()
                e = functional_rows(kernel, res, sparse, energy=True, forces=False,
                                    virial=False)
                spent["energy rows"] += time.process_time() - t
                t = time.process_time()
                gather_rows({**f, **e}, obs, np.asarray(res.atom_offsets))
                spent["gather"] += time.process_time() - t
            for k, v in spent.items():
                times[k].append(v)
    best = {k: min(v) for k, v in times.items()}
    d = env.values.shape[1]
    rate = gemm_rate(d, sparse.n)
    flops = 2.0 * 3 * n_entries * d * sparse.n
    floor = flops / rate / 1e9
    total = sum(best.values())
    out = {"machine": base_machine_info(), "m": sparse.n, "features": d,
           "gradient_entries": n_entries, "atoms": sum(len(a) for a in frames),
           "cpu_s": best, "gemm_gflops": rate, "force_rows_gflop": flops / 1e9,
           "force_rows_floor_s": floor, "force_rows_over_floor": best["force rows"] / floor,
           "design_over_floor": total / floor}
    print(f"Zuo Si, {len(frames)} frames, {out['atoms']} atoms, {n_entries} gradient "
          f"entries, D {d}, M {sparse.n}; one thread, CPU-s, best of {args.repeats}:")
    for k, v in best.items():
        print(f"  {k:<12} {v:7.2f}")
    print(f"  force rows: {flops / 1e9:.0f} GFLOP at {rate:.1f} GFLOP/s (this core, that "
          f"GEMM) = floor {floor:.2f} s; force rows {best['force rows'] / floor:.2f}x the "
          f"floor, the whole design pass {total / floor:.2f}x")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "design_floor.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
