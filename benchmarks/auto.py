"""``GAP.auto`` against ``GAP()``'s defaults on real DFT data (issue 25).

For each data set of ``benchmarks/accuracy.py`` (Zuo 2020 Si, Li, Cu, Ni; rMD17 ethanol,
aspirin, benzene and malonaldehyde, split 01, 1,000 training frames, the first 500 test
frames): the settings
``GAP.auto(train, budget=...)`` chooses, the CPU of the search (the final fit included),
and the test errors and force calibration of its model, scored exactly as
``benchmarks/accuracy.py`` scores its rows, beside that file's default row (``auto``: the
default fit with ``n_sparse="auto"``, read from ``results/accuracy.json``; run accuracy.py
first for a data set without one) and the published GAP and MTP.

Needs ``../shared/datasets``. Results are written after every data set to
``benchmarks/results/auto.json``. Run in the background, one thread, e.g.

    timeout 3600 prlimit --as=12000000000 python benchmarks/auto.py --data Si --budget 12min
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from _common import results_so_far  # noqa: E402
from accuracy import PUBLISHED, load_dataset, score  # noqa: E402

from gapkit import GAP  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "auto.json"
ACCURACY = HERE / "results" / "accuracy.json"
#: the best published potential on the Zuo data (MTP, Zuo et al. 2020), meV/atom, eV/Å
MTP = {"Si": (2.21, 0.06), "Li": (0.49, 0.01), "Cu": (0.41, 0.01), "Ni": (0.42, 0.01)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=["Si", "Li", "Cu", "Ni"])
    ap.add_argument("--budget", default="12min", help="CPU budget of each search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = results_so_far(args.output)
    defaults = (json.loads(ACCURACY.read_text())["results"] if ACCURACY.exists() else {})
    for name in args.data:
        data = load_dataset(name)
        if data is None:
            continue
        train, test = data
        cpu = time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = GAP.auto(train, budget=args.budget, random_state=args.seed,
                             progress=True)
        search_cpu = time.process_time() - cpu
        report = model.fit_info_["auto"]
        row = score(model, test, "auto_search") | {
            "search_cpu_s": search_cpu, "budget": args.budget, "seed": args.seed,
            "final_fit_cpu_s": model.fit_info_.get("cpu_time_s"),
            "winner": report["winner"], "winner_settings": report["winner_settings"],
            "why": report["why"], "notes": report["notes"], "table": report["table"],
            "n_sparse": model.fit_info_["n_sparse"],
            "warnings": sorted({str(w.message)[:160] for w in caught})}
        entry = defaults.get(name, {})
        base_row = "auto" if "auto" in entry else "default"  # n_sparse "auto" or 500
        base = entry.get(base_row)
        out["results"][name] = {"published_gap": PUBLISHED.get(name), "mtp": MTP.get(name),
                                "default_row": base_row,
                                "default": base and {k: base[k] for k in (
                                    "energy_mae_mev_per_atom", "forces_mae",
                                    "forces_area_all", "fit_cpu_s") if k in base},
                                "auto": row}
        args.output.parent.mkdir(exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1))
        d = base or {}
        nan = float("nan")
        print(f"{name}: auto {row['winner']}: E {row['energy_mae_mev_per_atom']:.2f} "
              f"± {row['energy_mae_se_mev_per_atom']:.2f} meV/atom, "
              f"F {row['forces_mae']:.4f} eV/Å, area {row['forces_area_all']:.3f}, search "
              f"{search_cpu:.0f} CPU-s | default ({base_row} row of accuracy.json) E "
              f"{d.get('energy_mae_mev_per_atom', nan):.2f}, F {d.get('forces_mae', nan):.4f}, "
              f"area {d.get('forces_area_all', nan):.3f} | published GAP {PUBLISHED.get(name)}, "
              f"MTP {MTP.get(name)}", flush=True)


if __name__ == "__main__":
    main()
