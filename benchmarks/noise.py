"""Noise learnt from the data vs the noise a user typed: test errors and calibration.

Fits one GAP per row on a training set and predicts its test set:

(a) the given noise (``--sigma E F V``: eV/atom, eV/Å, eV/atom; default the demo's);
(b) (a), then ``optimize_hyperparameters()``: delta and one noise multiplier per kind;
(c) (a), then ``optimize_hyperparameters(noise_groups="config_type")``: per kind and
    config_type;
(d) (a), then ``cross_validate_noise()``: the energy and virial sigma chosen by 5-fold
    cross-validation over frames (held-out energy and force MAE).

``--defaults`` uses today's ``GAP()`` settings instead (the default term, 500 CUR points,
``NoiseModel()``); ``--rows`` picks rows by name.

Prints energy and force MAE, the force miscalibration area and Spearman(sigma, |error|)
(predictive variance: exact DTC latent variance + the learnt noise), the learnt sigmas and
the CPU time, and writes ``benchmarks/results/noise.json``. Single thread.

    python benchmarks/noise.py                      # bundled Zuo Si (corrected virials)
    python benchmarks/noise.py --train ../shared/datasets/zuo2020/Cu_train.xyz \\
        --test ../shared/datasets/zuo2020/Cu_test.xyz --use energy forces
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

from _common import base_machine_info  # noqa: E402
from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term, uq  # noqa: E402
from gapkit.data import bundled_path, read_extxyz  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "noise.json"


def _model(args) -> GAP:
    soap = SOAP(cutoff=args.cutoff, cutoff_width=1.0, n_max=args.n_max, l_max=args.l_max,
                atom_sigma=0.5)
    e, f, v = args.sigma
    return GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=args.n_sparse)],
               noise=NoiseModel(energy=e, forces=f, virial=v), use=tuple(args.use),
               progress=False)


def _score(model, test) -> dict:
    pred = model.predict(test, virial=False)
    rep = uq.calibration_report(pred, test, model=model)
    e, f = rep["energy_per_atom"], rep["forces"]
    return {"energy_mae_mev_per_atom": 1e3 * e.mae, "forces_mae_ev_per_a": f.mae,
            "forces_miscalibration_area": f.miscalibration_area,
            "forces_spearman": f.spearman, "energy_miscalibration_area": e.miscalibration_area}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=bundled_path("Si_train.xyz"))
    ap.add_argument("--test", type=Path, default=bundled_path("Si_test.xyz"))
    ap.add_argument("--sigma", type=float, nargs=3, default=[0.003, 0.05, 0.05])
    ap.add_argument("--use", nargs="+", default=["energy", "forces", "virial"])
    ap.add_argument("--n-sparse", type=int, default=600)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--n-max", type=int, default=8)
    ap.add_argument("--l-max", type=int, default=6)
    ap.add_argument("--defaults", action="store_true",
                    help="GAP()'s default term and NoiseModel() instead of the options above")
    ap.add_argument("--rows", nargs="*", help="only these rows: given lml lml-ct cv")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = read_extxyz(args.train), read_extxyz(args.test)
    cts = sorted({str(a.info.get("config_type")) for a in train})
    rows: dict = {}
    out = {"machine": base_machine_info(), "train": str(args.train), "test": str(args.test),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    for key, name, groups in (("given", "given", None), ("lml", "learnt per kind", "kind"),
                              ("lml-ct", "learnt per kind and config_type", "config_type"),
                              ("cv", "cross-validated (energy, virial)", "cv")):
        if args.rows and key not in args.rows:
            continue
        cpu, wall = time.process_time(), time.perf_counter()
        model = (GAP(use=tuple(args.use), progress=False) if args.defaults
                 else _model(args)).fit(train)
        if groups == "cv":
            row_cv = model.cross_validate_noise(train)
        elif groups:
            model.optimize_hyperparameters(train, noise_groups=groups)
        row = _score(model, test)
        row["cpu_s"] = time.process_time() - cpu
        row["wall_s"] = time.perf_counter() - wall
        row["sigma"] = {kind: {ct: model.noise_.sigma(kind, ct) for ct in cts}
                        for kind in args.use}
        row["delta"] = float(model.terms_[0].kernel.delta.detach().reshape(()))
        if groups == "cv":
            row["cv_factors"] = row_cv["factors"]
            row["cv_table"] = row_cv["table"]
        rows[name] = row
        print(f"{name:34s} E MAE {row['energy_mae_mev_per_atom']:6.2f} meV/atom  F MAE "
              f"{row['forces_mae_ev_per_a']:.4f} eV/Å  F miscal. area "
              f"{row['forces_miscalibration_area']:.3f}  Spearman "
              f"{row['forces_spearman']:.2f}  delta {row['delta']:.3g}  CPU "
              f"{row['cpu_s']:.0f} s", flush=True)
        for kind in args.use:
            print(f"    sigma {kind:6s} " + ", ".join(
                f"{ct} {s:.3g}" for ct, s in row["sigma"][kind].items()))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out | {"rows": rows}, indent=1, default=float))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
