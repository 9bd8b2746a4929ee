"""Design pass (descriptors and force rows) on a molecule with several species: dense
position gradients (every feature of every (centre, atom) entry) against compact ones
(``SOAP.compute_compact``: per neighbour only its species' blocks, the normalisation's
rank-one term apart), which the fit's design passes read since 2026-12-07; with
``--masked`` also the reference that contracts every dense entry against all M sparse
points and masks the columns of other species (gapkit until 0.9).

rMD17 aspirin (C9H8O4; ``../shared/datasets/rmd17``, the first ``--frames`` training
frames) or, ``--data licu``, the LiCu random-search cells (``../shared/datasets/
licu_rss_wfl``: 1-24 atoms, periodic, so most neighbours are several images of one atom),
SOAP cutoff 5, n_max 8, l_max 6, atom_sigma 0.3, zeta 4, ``--m`` CUR points split over the
species as ``n_sparse`` splits them. CPU time (``time.process_time``), one
thread, the two codes interleaved ``--repeats`` times; the rows of both are compared. Then
predictions, E + F and with exact force variances, dense and compact interleaved.
Results: ``benchmarks/results/design.json`` (``design_licu.json``).
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

from gapkit.data import read_extxyz  # noqa: E402
from gapkit.descriptors import SOAP  # noqa: E402
from gapkit.gp.design import ENTRY_CHUNK, functional_rows, type_mask  # noqa: E402
from gapkit.gp.sparsify import sparse_points  # noqa: E402
from gapkit.kernels import SOAPKernel  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASETS = HERE.parent.parent / "shared" / "datasets"
DATA = {"aspirin": DATASETS / "rmd17" / "rmd17_aspirin_train_01.xyz",
        "licu": DATASETS / "licu_rss_wfl" / "licu_rss_fitting.xyz"}


def masked_reference(kernel, res, sparse) -> torch.Tensor:
    """Force rows the way gapkit built them before: every entry against every column."""
    q = res.torch("values", dtype=torch.float64)
    g = res.torch("gradients", dtype=torch.float64)
    centre = torch.as_tensor(res.gradient_centre)
    atom = torch.as_tensor(res.gradient_atom_global)
    mask = type_mask(torch.as_tensor(res.centre_types), sparse.types, q.dtype)
    rows = torch.zeros((int(res.n_atoms.sum()), 3, sparse.n), dtype=q.dtype)
    for e0 in range(0, g.shape[0], ENTRY_CHUNK):
        sl = slice(e0, e0 + ENTRY_CHUNK)
        part = (kernel.grad_contract(q, sparse.points, g[sl], centre[sl])
                * mask[centre[sl]][:, None, :])
        rows.index_add_(0, atom[sl], part, alpha=-1.0)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=sorted(DATA), default="aspirin")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--m", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--masked", action="store_true",
                    help="also time the masked reference (gapkit until 0.9)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = DATA[args.data]
    if not path.exists():
        print(f"{path} not found: needs ../shared/datasets")
        return
    frames = read_extxyz(path)[:max(args.frames + 50, 200)]
    desc = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6, atom_sigma=0.3,
                species=sorted({int(z) for a in frames for z in a.numbers}))
    env = desc.compute(frames[:200])
    sparse = sparse_points(np.asarray(env.values), args.m, types=env.centre_types,
                           method="cur", random_state=0)
    kernel = SOAPKernel(zeta=4)
    block = frames[:args.frames]
    times: dict[str, list[float]] = {k: [] for k in (
        "dense descriptors", "dense rows", "compact descriptors", "compact rows",
        "masked rows")}
    with torch.no_grad():
        for _ in range(args.repeats):
            t = time.process_time()
            res = desc.compute(block, gradients=["positions"])
            times["dense descriptors"].append(time.process_time() - t)
            entries = {"dense (centre, atom) entries": int(res.gradients.shape[0])}
            t = time.process_time()
            new = functional_rows(kernel, res, sparse, energy=False, forces=True,
                                  virial=False)["forces"]
            times["dense rows"].append(time.process_time() - t)
            t = time.process_time()
            if args.masked:
                old = masked_reference(kernel, res, sparse)
                times["masked rows"].append(time.process_time() - t)
            del res
            t = time.process_time()
            res_c, compact = desc.compute_compact(block)
            times["compact descriptors"].append(time.process_time() - t)
            entries["compact entries (own entries apart)"] = int(compact.x.shape[0])
            t = time.process_time()
            rows_c = functional_rows(kernel, res_c, sparse, energy=False, forces=True,
                                     virial=False, compact=compact)["forces"]
            times["compact rows"].append(time.process_time() - t)
            del res_c, compact
    diff = float((new - rows_c).abs().max() / new.abs().max())
    best = {k: min(v) for k, v in times.items() if v}
    dense = best["dense descriptors"] + best["dense rows"]
    compact_total = best["compact descriptors"] + best["compact rows"]
    counts = {int(t): int(c) for t, c in zip(*np.unique(sparse.types.numpy(),
                                                         return_counts=True))}
    out = {"machine": base_machine_info(), "data": args.data, "frames": args.frames,
           "m": sparse.n, "gradient_entries": entries,
           "m_per_species": counts, "cpu_s": best,
           "dense_total_s": dense, "compact_total_s": compact_total,
           "compact_speedup": dense / compact_total,
           "max_relative_difference_compact": diff}
    print(f"{args.data}, {args.frames} frames, M {sparse.n} {counts} (CPU-s, best of "
          f"{args.repeats}); gradient entries {entries}:")
    print(f"  dense gradients:   descriptors {best['dense descriptors']:.2f} + force rows "
          f"{best['dense rows']:.2f} = {dense:.2f}")
    print(f"  compact gradients: descriptors {best['compact descriptors']:.2f} + force rows "
          f"{best['compact rows']:.2f} = {compact_total:.2f} (x{dense / compact_total:.2f}); "
          f"rows agree to {diff:.1e}")
    if "masked rows" in best:
        mdiff = float((old - new).abs().max() / old.abs().max())
        out["masked_speedup"] = best["masked rows"] / best["dense rows"]
        print(f"  every entry against every column, masked: force rows "
              f"{best['masked rows']:.2f} (rows agree to {mdiff:.1e})")
    # predictions of --frames more frames with a fixed-noise GAP on the first 50 (500 CUR
    # points), dense and compact interleaved: E + F (what MD asks for), and with exact force
    # variances (the prior force variances from compact gradients since 2026-12-07)
    from gapkit import GAP, NoiseModel, Term
    from gapkit.gp import design

    model = GAP([Term(desc, kernel, n_sparse=500)], progress=False, random_state=0,
                noise=NoiseModel(energy=0.001, forces=0.05)).fit(frames[:50])
    test = frames[50:50 + args.frames]
    n_atoms = sum(len(a) for a in test)
    asks = {"E + F": {"return_variance": False},
            "E + F + exact force variances": {"forces_variance": "exact"}}
    pred: dict[str, dict[str, list[float]]] = {a: {"dense": [], "compact": []} for a in asks}
    last: dict = {}
    for _ in range(args.repeats):
        for ask, options in asks.items():
            for mode in ("dense", "compact"):
                design.COMPACT_GRADIENTS = mode == "compact"
                t = time.process_time()
                last[ask, mode] = model.predict(test, **options)
                pred[ask][mode].append(time.process_time() - t)
    design.COMPACT_GRADIENTS = True
    ask = "E + F + exact force variances"
    want = last[ask, "dense"].forces_variance
    vdiff = float(np.abs(last[ask, "compact"].forces_variance - want).max() / want.max())
    out["predict_us_per_atom"] = {a: {k: min(v) / n_atoms * 1e6 for k, v in p.items()}
                                  for a, p in pred.items()}
    out["max_relative_difference_force_variance"] = vdiff
    for a, p in out["predict_us_per_atom"].items():
        print(f"  predict {a} ({args.frames} frames, M 500), µs/atom: dense "
              f"{p['dense']:.0f}, compact {p['compact']:.0f}")
    print(f"  exact force variances agree to {vdiff:.1e}")
    (HERE / "results").mkdir(exist_ok=True)
    name = "design.json" if args.data == "aspirin" else f"design_{args.data}.json"
    (HERE / "results" / name).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
