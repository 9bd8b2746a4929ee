"""Sparse points that grow with the data: ``n_sparse=500`` (today's default) against
``n_sparse="auto"`` (one point per 13 environments within [500, 2000]) on the Zuo 2020 data.

One GAP per element and setting, with today's default SOAP term otherwise and the noise
chosen by cross-validation (``GAP()``'s default); prints and writes, as it goes, the test
energy and force MAE, the sparse-point count, the fit CPU time and the errors per CPU
minute. Single thread.

    python benchmarks/sparse_rule.py --elements Si Li       # ../shared/datasets/zuo2020
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import REPO, base_machine_info  # noqa: E402
from gapkit import GAP, uq  # noqa: E402
from gapkit.data import read_extxyz  # noqa: E402
from gapkit.terms import default_terms  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sparse_rule.json"
DATA = REPO.parent / "shared" / "datasets" / "zuo2020"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", nargs="+", default=["Si", "Li", "Cu", "Ni"])
    ap.add_argument("--settings", nargs="+", default=["500", "auto"])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"machine": base_machine_info(), "rows": []}
    for element in args.elements:
        train = read_extxyz(args.data / f"{element}_train.xyz")
        test = read_extxyz(args.data / f"{element}_test.xyz")
        for setting in args.settings:
            n_sparse = setting if setting == "auto" else int(setting)
            term = default_terms()[0]
            term.n_sparse = n_sparse
            cpu = time.process_time()
            model = GAP([term], progress=False).fit(train)
            cpu = time.process_time() - cpu
            pred = model.predict(test, virial=False)
            rep = uq.calibration_report(pred, test, model=model)
            row = {"element": element, "n_sparse": setting,
                   "sparse_points": int(sum(model.fit_info_["n_sparse"])),
                   "environments": int(sum(len(a) for a in train)),
                   "energy_mae_mev_per_atom": 1e3 * rep["energy_per_atom"].mae,
                   "forces_mae_ev_per_a": rep["forces"].mae, "fit_cpu_s": cpu,
                   "noise_factors": model.fit_info_["noise_cv"]["factors"]}
            out["rows"].append(row)
            print(f"{element} n_sparse={setting:>4s} ({row['sparse_points']} points): E MAE "
                  f"{row['energy_mae_mev_per_atom']:.2f} meV/atom, F MAE "
                  f"{row['forces_mae_ev_per_a']:.4f} eV/Å, fit CPU {cpu:.0f} s", flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
