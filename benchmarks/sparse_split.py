"""How a total ``n_sparse`` is shared over species: equal (gapkit's default, gap_fit's
per-species count) against in proportion to the environments (gapkit before 0.2).

rMD17 (``../shared/datasets/rmd17``, split 01): the first ``--train`` training frames, the
first 200 test frames; SOAP cutoff 5, n_max 8, l_max 6, atom_sigma 0.3, zeta 4, CUR points,
noise fixed at 0.5 meV/atom and 0.02 eV/Å (no cross-validation: the split alone differs).
One thread; test E MAE (meV per molecule), F MAE (meV/Å), fit CPU-s. Results are printed
and written to ``benchmarks/results/sparse_split.json``.

    python benchmarks/sparse_split.py --data ethanol --m 1000
    python benchmarks/sparse_split.py --data aspirin --m 1500
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import results_so_far  # noqa: E402

from gapkit import GAP, NoiseModel, Term  # noqa: E402
from gapkit.data import read_extxyz  # noqa: E402
from gapkit.descriptors import SOAP  # noqa: E402
from gapkit.kernels import SOAPKernel  # noqa: E402

HERE = Path(__file__).resolve().parent
RMD17 = HERE.parent.parent / "shared" / "datasets" / "rmd17"
RESULTS = HERE / "results" / "sparse_split.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="ethanol")
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--train", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = RMD17 / f"rmd17_{args.data}_train_01.xyz"
    if not path.exists():
        print(f"{path} not found: needs ../shared/datasets")
        return
    train = read_extxyz(path)[:args.train]
    test = read_extxyz(RMD17 / f"rmd17_{args.data}_test_01.xyz")[:200]
    e_ref = np.array([a.get_potential_energy() for a in test])
    f_ref = np.concatenate([a.get_forces() for a in test])
    out = results_so_far(RESULTS)
    rows = {}
    for split in ("proportional", "equal"):
        term = Term(SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6, atom_sigma=0.3),
                    SOAPKernel(zeta=4), n_sparse=args.m, sparse_method="cur",
                    sparse_options={"split": split})
        cpu = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = GAP([term], noise=NoiseModel(energy=0.0005, forces=0.02), progress=False,
                        random_state=0).fit(train)
        cpu = time.process_time() - cpu
        pred = model.predict(test, return_variance=False)
        types, counts = np.unique(model.sparse_sets_[0].types.numpy(), return_counts=True)
        rows[split] = {"m_per_species": dict(zip(map(str, types.tolist()), counts.tolist())),
                       "energy_mae_mev": 1e3 * float(np.mean(np.abs(pred.energy - e_ref))),
                       "forces_mae_mev_per_a": 1e3 * float(np.mean(np.abs(pred.forces - f_ref))),
                       "fit_cpu_s": cpu}
        r = rows[split]
        print(f"{args.data} M {args.m} {split:<12} {r['m_per_species']}: E "
              f"{r['energy_mae_mev']:.2f} meV, F {r['forces_mae_mev_per_a']:.1f} meV/Å, "
              f"fit {cpu:.0f} CPU-s", flush=True)
    out["results"][f"{args.data}_m{args.m}_train{args.train}"] = rows
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
