"""Uncertainty benchmark on the Zuo et al. (2020) silicon data.

1. Calibration: a GAP fitted on 80 % of ``Si_train`` (seeded split), its predictive
   variance (GP posterior + fitted noise) judged on ``Si_test`` for energies per atom and
   force components, raw and after recalibration (variance scale and isotonic) fitted on
   the held-out 20 % validation split.
2. GP variance vs a committee of 5 models (80 % sub-samples of the same training split),
   both judged on ``Si_test`` with the same metrics; rank correlation of the two sigmas.
3. Active learning with ``Si_train`` as the pool (labels revealed only on selection):
   test force MAE vs labelled frames for force-variance and random selection, 3 seeds;
   how many labels variance-based selection needs to reach random selection's final
   force MAE.

Targets (issue 4): force miscalibration area <= 0.1 raw and <= 0.05 recalibrated;
variance-based selection reaches random selection's final force MAE with <= 60 % of its
labels. A smaller SOAP than the published model keeps the run to ~10 minutes on two cores
(settings in the JSON). Run ``.venv/bin/python benchmarks/uq.py [--quick]``; results go to
``benchmarks/results/uq.json`` and figures to ``benchmarks/results/uq_*.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without installing gapkit
    sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"

SETTINGS = {"cutoff": 5.0, "cutoff_width": 1.0, "n_max": 6, "l_max": 4, "atom_sigma": 0.5,
            "zeta": 4, "delta": 1.0, "n_sparse": 200, "sigma_energy": 0.003,
            "sigma_forces": 0.05, "sigma_virial": 0.05}
AL = {"n_initial": 8, "batch_size": 8, "max_labels": 48, "seeds": [0, 1, 2],
      "diversity": 1.0}
QUICK = {"n_sparse": 80, "n_max": 4, "l_max": 3, "al_max_labels": 24, "stride": 3}


def build_model(s, progress=False):
    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term

    soap = SOAP(cutoff=s["cutoff"], cutoff_width=s["cutoff_width"], n_max=s["n_max"],
                l_max=s["l_max"], atom_sigma=s["atom_sigma"])
    return GAP([Term(soap, SOAPKernel(zeta=s["zeta"], delta=s["delta"]),
                     n_sparse=s["n_sparse"], sparse_method="cur")],
               noise=NoiseModel(energy=s["sigma_energy"], forces=s["sigma_forces"],
                                virial=s["sigma_virial"]),
               use=("energy", "forces"), progress=progress)


def fmt(rep):
    return (f"{rep.quantity:7s} MAE {rep.mae:.4g} {rep.unit}  z_rms {rep.z_rms:5.2f}  "
            f"NLL {rep.nll:7.3f}  area {rep.miscalibration_area:.3f}  ENCE {rep.ence:.3f}  "
            f"rho {rep.spearman:5.2f}  sharp {rep.sharpness:.4g}  "
            f"(epist {rep.epistemic_rms:.3g}, aleat {rep.aleatoric_rms:.3g})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke test (small model/data)")
    parser.add_argument("--skip-al", action="store_true", help="calibration parts only")
    parser.add_argument("--output", default=str(RESULTS / "uq.json"))
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import torch

    from gapkit import plot, uq
    from gapkit.active import compare_strategies, labels_to_reach
    from gapkit.data import load_bundled

    torch.manual_seed(0)
    s = dict(SETTINGS)
    al = dict(AL)
    train_all = load_bundled("Si_train.xyz")
    test = load_bundled("Si_test.xyz")
    if args.quick:
        s.update(n_sparse=QUICK["n_sparse"], n_max=QUICK["n_max"], l_max=QUICK["l_max"])
        train_all = train_all[::QUICK["stride"]]
        al["max_labels"] = QUICK["al_max_labels"]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(train_all))
    n_val = len(train_all) // 5
    val = [train_all[i] for i in np.sort(perm[:n_val])]
    train = [train_all[i] for i in np.sort(perm[n_val:])]
    out = {"settings": s, "active_learning": al, "n_train": len(train), "n_val": len(val),
           "n_test": len(test)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = Path(args.output).with_suffix("")

    # 1. calibration, raw and recalibrated
    t0 = time.perf_counter()
    model = build_model(s).fit(train)
    p_val, p_test = model.predict(val), model.predict(test)
    print(f"fit on {len(train)} frames + predict val/test: {time.perf_counter() - t0:.0f} s")
    raw = uq.calibration_report(p_test, test, model=model)
    out["raw"] = {q: r.summary() for q, r in raw.items()}
    print("Raw (GP posterior + noise) on Si_test:")
    for r in raw.values():
        print("  " + fmt(r))
    recal = {}
    for method in ("scale", "isotonic"):
        spec = uq.fit_recalibration(model, p_val, val, method=method)
        rep = uq.calibration_report(uq.apply_recalibration(p_test, model), test, model=model)
        recal[method] = rep
        out[f"recalibrated_{method}"] = {q: r.summary() for q, r in rep.items()}
        if method == "scale":
            out["variance_scale"] = {q: spec[q]["scale"] for q in ("energy", "forces")}
        print(f"Recalibrated ({method}, fitted on {len(val)} validation frames):")
        for r in rep.values():
            print("  " + fmt(r))
    err_f, epi_f, _ = uq.quantity_errors(p_test, test, "forces", model=model)

    # 2. committee of 5 vs GP variance
    t0 = time.perf_counter()
    members = uq.fit_committee(model, train, n_models=5, method="subsample", fraction=0.8)
    p_com = uq.committee_predict(members, test, virial=False)
    print(f"committee of 5: {time.perf_counter() - t0:.0f} s")
    com = uq.calibration_report(p_com, test, model=model)
    com_latent = uq.calibration_report(p_com, test, include_noise=False)
    gp_latent = uq.calibration_report(p_test, test, include_noise=False)
    rho = float(uq.spearman(np.sqrt(p_com.forces_variance).ravel(),
                            p_test.forces_variance.ravel()))
    out["committee"] = {"with_noise": {q: r.summary() for q, r in com.items()},
                        "latent": {q: r.summary() for q, r in com_latent.items()},
                        "gp_latent": {q: r.summary() for q, r in gp_latent.items()},
                        "spearman_sigma_committee_vs_gp_forces": rho}
    print("Committee spread + noise on Si_test:")
    for r in com.values():
        print("  " + fmt(r))
    print("Latent only (no noise): GP vs committee")
    for q in ("energy", "forces"):
        print(f"  {q:7s} GP: sharp {gp_latent[q].sharpness:.3g} area "
              f"{gp_latent[q].miscalibration_area:.3f} rho {gp_latent[q].spearman:.2f} | "
              f"committee: sharp {com_latent[q].sharpness:.3g} area "
              f"{com_latent[q].miscalibration_area:.3f} rho {com_latent[q].spearman:.2f}")
    print(f"  Spearman rho(sigma_committee, sigma_GP) over force components: {rho:.2f}")

    fig = plot.coverage({"raw": raw["forces"], "scale": recal["scale"]["forces"],
                         "isotonic": recal["isotonic"]["forces"],
                         "committee": com["forces"]},
                        title="Si test forces: coverage")
    fig.savefig(f"{stem}_coverage.png")
    fig = plot.reliability({"raw": raw["forces"], "scale": recal["scale"]["forces"],
                            "committee": com["forces"]}, title="Si test forces: reliability")
    fig.savefig(f"{stem}_reliability.png")
    fig = plot.z_histogram(err_f / np.sqrt(epi_f + model.noise.forces**2), label="forces",
                           title="Si test forces: z-scores (raw)")
    fig.savefig(f"{stem}_z.png")

    # 3. active learning
    if not args.skip_al:
        t0 = time.perf_counter()
        pool = train_all
        runs = compare_strategies(build_model(s), pool, None, test=test,
                                  strategies=("forces", "random"), seeds=al["seeds"],
                                  n_initial=al["n_initial"], batch_size=al["batch_size"],
                                  max_labels=al["max_labels"], diversity=al["diversity"])
        print(f"active learning: {time.perf_counter() - t0:.0f} s")
        out["al"] = {k: [c.to_dict() for c in v] for k, v in runs.items()}
        rnd_final = float(np.mean([c.force_mae[-1] for c in runs["random"]]))
        need = [labels_to_reach(c, rnd_final) for c in runs["forces"]]
        budget = al["max_labels"]
        out["al_summary"] = {"random_final_force_mae": rnd_final,
                             "variance_labels_to_reach_random_final": need,
                             "fraction_of_random_budget": [n / budget for n in need]}
        for k, v in runs.items():
            mae = np.array([c.force_mae for c in v])
            print(f"  {k:7s} n={v[0].n_labelled.tolist()}")
            print(f"          force MAE mean {np.round(mae.mean(0), 4).tolist()} eV/Å")
        print(f"  random final force MAE {rnd_final:.4f} eV/Å; force-variance selection "
              f"reaches it after {need} labels (budget {budget}: "
              f"{[round(n / budget, 2) for n in need]})")
        fig = plot.learning_curves(runs, title="Si: active learning (pool Si_train)")
        fig.savefig(f"{stem}_learning_curve.png")

    Path(args.output).write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
