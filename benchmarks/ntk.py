"""NTK benchmark: wide networks against GAP kernels on the Zuo Si data and rMD17 ethanol.

Prints (a) empirical vs analytic NTK distance by width with the log-log slope (theory
-1/2), (b) trained finite networks vs the NTK gradient-descent prediction by width,
(c) SOAP-kernel vs NTK alignment and test errors of GAP(SOAP), GAP(NTK) and finite
networks (trained on energies and forces), and the time of the analytic NTK on
1000 x 1000 inputs. Small subsets: 14 minutes measured on two CPU cores shared with
other jobs (--quick: a few minutes); JSON to benchmarks/results/ntk.json.

    .venv/bin/python benchmarks/ntk.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gapkit import SOAP
from gapkit.data import load_bundled
from gapkit.kernels import nngp_and_ntk
from gapkit.ntk import (
    NTKKernel,
    compare_models,
    ntk_width_convergence,
    training_vs_kernel_regression,
)

RESULTS = Path(__file__).resolve().parent / "results" / "ntk.json"


def _energy_targets(frames, e0=None):
    e = np.array([a.get_potential_energy() for a in frames])
    n = np.array([len(a) for a in frames])
    if e0 is None:
        e0 = e.sum() / n.sum()
    return e - e0 * n, e0


def run_dataset(name, train, test, species, *, widths_a, widths_b, widths_c, steps, n_sparse):
    desc = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=4, l_max=4, atom_sigma=0.5, species=species)
    out = {"name": name, "n_train": len(train), "n_test": len(test)}
    rt, rs = desc.compute(train), desc.compute(test)
    out["n_features"] = rt.n_features

    # (a) empirical -> analytic NTK, on 12 training environments of the first species
    q = rt.torch("values")[np.flatnonzero(rt.centre_types == rt.centre_types[0])[:12]]
    t0 = time.perf_counter()
    a = ntk_width_convergence(q, widths=widths_a, seeds=4)
    out["a"] = {"widths": a.widths.tolist(), "distance_mean": a.distance_mean.tolist(),
                "distance_std": a.distance_std.tolist(), "slope": a.slope,
                "time_s": time.perf_counter() - t0}
    print(f"\n== {name}: (a) empirical vs analytic NTK (depth 2, erf), 12 environments, 4 seeds")
    print(f"{'width':>8} {'|Θ_emp-Θ|/|Θ|':>16} {'std':>10}")
    for w, m, s in zip(a.widths, a.distance_mean, a.distance_std):
        print(f"{w:>8d} {m:>16.4f} {s:>10.4f}")
    print(f"log-log slope {a.slope:.3f} (theory -0.5)")

    # (b) trained networks -> NTK prediction of the same gradient-descent run
    y, e0 = _energy_targets(train)
    yt, _ = _energy_targets(test, e0)
    t0 = time.perf_counter()
    b = training_vs_kernel_regression(rt, y, rs, yt, widths=widths_b, seeds=2, steps=steps)
    out["b"] = {"widths": b.widths.tolist(),
                "rms_difference_eV_per_atom": b.rms_difference.tolist(),
                "ntk_test_rmse_eV_per_atom": b.ntk_test_rmse,
                "network_test_rmse_eV_per_atom": b.network_test_rmse.tolist(),
                "slope": b.slope, "lr": b.lr, "steps": b.steps, "time_s": time.perf_counter() - t0}
    print(f"\n== {name}: (b) centred networks after {steps} GD steps (lr = N/λ_max = {b.lr:.3g}) "
          "vs linearised NTK prediction, test energies")
    print(f"{'width':>8} {'|net-NTK| meV/at':>18} {'net RMSE meV/at':>17}")
    for w, d, r in zip(b.widths, b.rms_difference, b.network_test_rmse):
        print(f"{w:>8d} {1e3 * d:>18.3f} {1e3 * r:>17.2f}")
    print(f"NTK prediction RMSE {1e3 * b.ntk_test_rmse:.2f} meV/atom; slope {b.slope:.3f}")

    # (c) GAP(SOAP) vs GAP(NTK) vs networks
    t0 = time.perf_counter()
    c = compare_models(train, test, desc, n_sparse=n_sparse, widths=widths_c, steps=steps)
    out["c"] = {"alignment_environments": c.alignment_environments,
                "alignment_structures": c.alignment_structures,
                "energy_rmse_eV_per_atom": c.energy_rmse, "force_rmse_eV_per_A": c.force_rmse,
                "fit_time_s": c.fit_time_s, "network_lr": c.network_lr,
                "network_force_weight_A2": c.force_weight, "n_sparse": n_sparse,
                "steps": steps, "time_s": time.perf_counter() - t0}
    print(f"\n== {name}: (c) centred kernel alignment SOAP(ζ=4) vs NTK: environments "
          f"{c.alignment_environments:.4f}, structures {c.alignment_structures:.4f}")
    print(f"GAPs: {n_sparse} sparse points per species, default noise; networks: {steps} GD "
          f"steps on energies + forces (force weight {c.force_weight:.3g} Å²)")
    print(f"{'model':>22} {'E RMSE meV/at':>14} {'F RMSE eV/Å':>12} {'fit s':>8} {'lr':>9}")
    for k in c.energy_rmse:
        lr = f"{c.network_lr[k]:.3g}" if k in c.network_lr else "-"
        print(f"{k:>22} {1e3 * c.energy_rmse[k]:>14.2f} {c.force_rmse[k]:>12.3f} "
              f"{c.fit_time_s[k]:>8.2f} {lr:>9}")
    print(f"[{name}: (a) {out['a']['time_s']:.0f} s, (b) {out['b']['time_s']:.0f} s, "
          f"(c) {out['c']['time_s']:.0f} s]", flush=True)
    return out


def time_analytic(n=1000, d=100, repeats=3):
    x = torch.as_tensor(np.random.default_rng(0).standard_normal((n, d)))
    rows = []
    for act in ("relu", "erf"):
        for depth in (2, 5):
            nngp_and_ntk(x, depth=depth, activation=act)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                nngp_and_ntk(x, depth=depth, activation=act)
                ts.append(time.perf_counter() - t0)
            rows.append({"activation": act, "depth": depth, "n": n, "d": d,
                         "time_s": min(ts)})
    # NTKKernel with the first derivatives the force rows need (grad_contract partials)
    k = NTKKernel(depth=2)
    q = x / torch.linalg.norm(x, dim=1, keepdim=True)
    t0 = time.perf_counter()
    k._partials(q, q)
    rows.append({"activation": "erf", "depth": 2, "n": n, "d": d, "what": "value + dF/ds, dF/da",
                 "time_s": time.perf_counter() - t0})
    print(f"\n== analytic kernels on {n} x {n} inputs (d = {d}), {torch.get_num_threads()} threads")
    for r in rows:
        print(f"{r['activation']:>5} depth {r['depth']} {r.get('what', 'nngp + ntk'):>22}: "
              f"{1e3 * r['time_s']:.1f} ms")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller subsets and widths")
    args = ap.parse_args()
    quick = args.quick
    torch.manual_seed(0)
    results = {"timing": time_analytic()}
    # evenly spaced frames, so that every config type (vacancy, surface, AIMD, elastic) is
    # in both sets: the files are ordered by config type, and the vacancy frames alone span
    # -5.33 to -4.65 eV/atom
    si_all, si_test_all = load_bundled("Si_train.xyz"), load_bundled("Si_test.xyz")
    n_tr, n_te = (6, 3) if quick else (12, 6)
    si_train = [si_all[i] for i in np.linspace(0, len(si_all) - 1, n_tr).round().astype(int)]
    si_test = [si_test_all[i]
               for i in np.linspace(0, len(si_test_all) - 1, n_te).round().astype(int)]
    eth = load_bundled("ethanol_rmd17_200.xyz")
    for a in eth:
        a.pbc = False
    eth_train, eth_test = eth[: 30 if quick else 80], eth[100: 115 if quick else 140]
    common = dict(widths_a=(32, 128, 512), widths_b=(32, 128) if quick else (32, 128, 512),
                  widths_c=(64, 256), steps=50 if quick else 150)
    results["Si"] = run_dataset("Zuo Si", si_train, si_test, [14], n_sparse=60 if quick else 150,
                                **common)
    results["ethanol"] = run_dataset("rMD17 ethanol", eth_train, eth_test, [1, 6, 8],
                                     n_sparse=60 if quick else 150, **common)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"\nwritten {RESULTS}")


if __name__ == "__main__":
    main()
