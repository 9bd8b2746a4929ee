"""Pool-based active learning on the Zuo Si pool: learning curves of three selection rules.

``Si_train`` (214 frames, bundled) is the pool, its labels revealed only on selection;
``Si_test`` the fixed test set. The model and budget are those of ``benchmarks/uq.py``
(SOAP n_max 6, l_max 4, 200 CUR points, fixed noise; 8 random initial frames, batches of 8,
48 labels). Rules, each with the same initial sets and seeds:

- ``random``: the baseline;
- ``forces``: the largest predicted force variance (exact form), damped for near-duplicates
  in a batch (gapkit's rule before ``coverage``);
- ``coverage``: the predicted variance a frame covers in the pool (``select_coverage``).

Issue 15's target: the new rule reaches random's final force MAE with at most half of its
labels and is never worse than random. Prints, per rule, the force MAE at every budget
(mean and range over the seeds) and the labels needed to reach random's final mean error;
writes ``benchmarks/results/active.json`` after every run. One thread, about 5 CPU-minutes
for three seeds.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing gapkit
    sys.path.insert(0, str(HERE.parent))

from _common import base_machine_info  # noqa: E402
from uq import AL, SETTINGS, build_model  # noqa: E402

from gapkit.active import active_learning, labels_to_reach  # noqa: E402
from gapkit.data import load_bundled  # noqa: E402

RESULTS = HERE / "results" / "active.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", nargs="+", default=["random", "forces", "coverage", "integrated"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pool, test = load_bundled("Si_train.xyz"), load_bundled("Si_test.xyz")
    out = {"machine": base_machine_info(), "settings": SETTINGS, "budget": AL,
           "pool": "Si_train (214 frames)", "test": "Si_test", "runs": {}}
    curves: dict[str, list] = {}
    for seed in args.seeds:
        for rule in args.rules:
            cpu = time.process_time()
            curve = active_learning(build_model(SETTINGS), pool, None, test=test,
                                    strategy=rule, seed=seed, n_initial=AL["n_initial"],
                                    batch_size=AL["batch_size"], max_labels=AL["max_labels"],
                                    diversity=AL["diversity"])
            curves.setdefault(rule, []).append(curve)
            out["runs"].setdefault(rule, []).append(
                {**curve.to_dict(), "cpu_s": time.process_time() - cpu})
            print(f"{rule:9s} seed {seed}: " + " ".join(f"{x:.4f}" for x in curve.force_mae),
                  flush=True)
            args.output.parent.mkdir(exist_ok=True)
            args.output.write_text(json.dumps(out, indent=1))
    n = curves[args.rules[0]][0].n_labelled.tolist()
    target = (float(np.mean([c.force_mae[-1] for c in curves["random"]]))
              if "random" in curves else None)
    print(f"\nforce MAE (eV/Å) on Si_test by labels, mean [min, max] over seeds {args.seeds}")
    print("rule     " + "".join(f"{k:>22d}" for k in n) + "   labels to random's final")
    summary = {}
    for rule, cs in curves.items():
        mae = np.array([c.force_mae for c in cs])
        need = None if target is None else [labels_to_reach(c, target) for c in cs]
        summary[rule] = {"mean": mae.mean(0).tolist(), "min": mae.min(0).tolist(),
                         "max": mae.max(0).tolist(), "labels_to_random_final": need}
        print(f"{rule:9s}" + "".join(f"{m:8.4f} [{a:.4f},{b:.4f}]"
                                     for m, a, b in zip(mae.mean(0), mae.min(0), mae.max(0)))
              + f"   {need}")
    out["summary"] = {"random_final_mean": target, **summary}
    args.output.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
