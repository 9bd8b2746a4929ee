"""Accuracy and calibration of GAP's defaults on real DFT data: the fixed base noise, the
default fit (noise by cross-validation, predictive variance calibrated on the folds) and
the marginal likelihood (ML-II), side by side; rows ``auto`` and ``n500`` are the default fit
with ``n_sparse="auto"`` (the default since 2026-12-06; results before that date have 500
points in every other row) and 500; row ``forcegrid`` is the default fit with the force
noise cross-validated too (:data:`FORCE_GRID` crossed with the energy x virial grid);
row ``settings`` the default fit of the terms of one ``gapkit.auto`` candidate (``--settings``,
``--n-sparse``); ``--force-grid`` gives every row's noise CV the force axis of ``forcegrid``.

For each data set (Zuo 2020 Si, Li, Cu, Ni; rMD17 ethanol, aspirin, benzene and
malonaldehyde, split 01, 1,000 training frames, the first 500 test frames) and each row:
energy (with the standard error of the mean over the test frames) and force MAE, the
force miscalibration area over all components (a sigma-0 component counts as covered when
its error is below 1 meV/Å, and never otherwise) and over those whose prior variance is not
zero by symmetry, Spearman(sigma, |error|) over the latter, their share of |z| > 5, and the
fit's CPU seconds (one thread). With two rows or more, each row's sigma is also ranked
against the other rows' errors (``cross_spearman``). The base and ML-II rows' sigma is the
latent variance plus the fitted noise; the default row's is the calibrated predictive
variance.

Needs ``../shared/datasets`` (skipped data sets are said). Results are written after every
row to ``benchmarks/results/accuracy.json``. Run in the background, e.g.

    OMP_NUM_THREADS=1 timeout 3600 prlimit --as=12000000000 python benchmarks/accuracy.py
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest.mock import patch  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import results_so_far  # noqa: E402
from scipy.stats import norm, spearmanr  # noqa: E402

from gapkit import GAP, NoiseModel, uq  # noqa: E402
from gapkit.terms import default_terms  # noqa: E402
from gapkit.data import read_extxyz  # noqa: E402
from gapkit.gp import cv  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
RESULTS = HERE / "results" / "accuracy.json"
ZERO_ERR = 1e-3  # eV/Å: a sigma-0 component is covered when its error is below this
LEVELS = np.linspace(0.01, 0.99, 99)
#: row ``forcegrid``: the force-noise multipliers crossed with the energy x virial grid
FORCE_GRID = (0.25, 0.5, 1.0)

DATASETS = {
    "Si": ("zuo2020/Si_train.xyz", "zuo2020/Si_test.xyz", None, None),
    "Li": ("zuo2020/Li_train.xyz", "zuo2020/Li_test.xyz", None, None),
    "Cu": ("zuo2020/Cu_train.xyz", "zuo2020/Cu_test.xyz", None, None),
    "Ni": ("zuo2020/Ni_train.xyz", "zuo2020/Ni_test.xyz", None, None),
    "ethanol": ("rmd17/rmd17_ethanol_train_01.xyz", "rmd17/rmd17_ethanol_test_01.xyz",
                1000, 500),
    "aspirin": ("rmd17/rmd17_aspirin_train_01.xyz", "rmd17/rmd17_aspirin_test_01.xyz",
                1000, 500),
    "benzene": ("rmd17/rmd17_benzene_train_01.xyz", "rmd17/rmd17_benzene_test_01.xyz",
                1000, 500),
    "malonaldehyde": ("rmd17/rmd17_malonaldehyde_train_01.xyz",
                      "rmd17/rmd17_malonaldehyde_test_01.xyz", 1000, 500),
}
#: published GAP (Zuo et al. 2020, meV/atom, eV/Å; rMD17: Christensen & von Lilienfeld
#: 2020, meV per molecule, meV/Å; none quoted here for benzene and malonaldehyde)
PUBLISHED = {"Si": (2.91, 0.07), "Li": (0.49, 0.01), "Cu": (0.46, 0.01), "Ni": (0.42, 0.02),
             "ethanol": (3.5, 18.1), "aspirin": (17.7, 44.9)}


def load_dataset(name: str):
    """``(train, test)`` frames of a data set of :data:`DATASETS` (its frame counts), or
    None, said, when ``../shared/datasets`` lacks it."""
    tr, te, n_train, n_test = DATASETS[name]
    if not (SHARED / tr).exists():
        print(f"{name}: {SHARED / tr} not found, skipped", flush=True)
        return None
    return read_extxyz(SHARED / tr)[:n_train], read_extxyz(SHARED / te)[:n_test]


def area_all(err, var):
    """Miscalibration area with sigma-0 components: one with |error| <= ZERO_ERR is
    covered at level p with probability p (no miscalibration), one above never."""
    zero = var <= 0
    z = np.sort(np.abs(err[~zero]) / np.sqrt(var[~zero]))
    exact = int(np.sum(zero & (np.abs(err) <= ZERO_ERR)))
    covered = np.searchsorted(z, norm.ppf(0.5 + 0.5 * LEVELS), side="right")
    return float(np.mean(np.abs((covered + exact * LEVELS) / err.size - LEVELS)))


def by_config_type(test, err) -> dict:
    """Force MAE (eV/Å) and component count per config_type of the test frames (``err``:
    the force errors of every component, frame after frame): where the error is."""
    kinds = np.concatenate([np.full(3 * len(a), str(a.info.get("config_type", "default")))
                            for a in test])
    return {k: {"mae": float(np.mean(np.abs(err[kinds == k]))), "n": int(np.sum(kinds == k))}
            for k in sorted(set(kinds))}


def score(model, test, row: str, keep: dict | None = None) -> dict:
    """The row's figures on ``test``; with ``keep``, its force errors, sigmas and the mask
    of components not fixed by symmetry go in ``keep[row]`` (for :func:`cross_spearman`)."""
    pred = model.predict(test, virial=False)
    err_e, epi_e, alea_e = uq.quantity_errors(pred, test, "energy_per_atom", model=model)
    err, epi, alea = uq.quantity_errors(pred, test, "forces", model=model)
    var = epi + alea
    latent = pred.forces_latent_variance.ravel()
    # prior variance not zero by symmetry (the calibrated rows: sigma > 0, the same up to
    # the round-off threshold)
    nz = (latent > 1e-12 * latent.max()) & (var > 0)
    z = np.abs(err[nz]) / np.sqrt(var[nz])
    n_at = pred.n_atoms
    if keep is not None:
        keep[row] = (err, np.sqrt(var), nz)
    return {"row": row, "energy_mae_mev_per_atom": 1e3 * float(np.mean(np.abs(err_e))),
            "energy_mae_mev_per_frame": 1e3 * float(np.mean(np.abs(err_e) * n_at)),
            # the standard error of that mean over the test frames (25-31 on Zuo's sets)
            "energy_mae_se_mev_per_atom": 1e3 * float(np.std(np.abs(err_e), ddof=1)
                                                      / np.sqrt(err_e.size)),
            "forces_mae": float(np.mean(np.abs(err))),
            "forces_mae_by_config_type": by_config_type(test, err),
            "forces_area_all": area_all(err, var),
            "forces_area_nonzero": float(uq.miscalibration_area(err[nz], var[nz])),
            "forces_spearman_nonzero": float(spearmanr(np.sqrt(var[nz]),
                                                       np.abs(err[nz])).statistic),
            "forces_share_z_above_5": float(np.mean(z > 5)),
            "forces_n": int(err.size), "forces_n_zero_prior": int((~nz).sum()),
            "energy_area": float(uq.miscalibration_area(err_e, epi_e + alea_e)),
            "variance_form": pred.variance_form.get("forces")}


def cross_spearman(kept: dict) -> dict:
    """Spearman(sigma of row a, |error| of row b) for every ordered pair of rows kept, over
    the components neither fixes by symmetry: whether a row's lower Spearman comes from its
    sigma (it ranks the other row's errors worse too) or from its errors (they are harder
    to rank by any of the sigmas)."""
    out = {}
    for a, (_, sigma, nz_a) in kept.items():
        for b, (err, _, nz_b) in kept.items():
            both = nz_a & nz_b
            out[f"sigma {a} vs errors {b}"] = float(
                spearmanr(sigma[both], np.abs(err[both])).statistic)
    return out


def fit(row: str, train, settings: dict | None = None, n_sparse: int | None = None):
    if row == "settings":  # the default fit of the terms of one ``gapkit.auto`` candidate
        from gapkit.auto import candidate_terms

        return GAP(candidate_terms(settings, n_sparse=n_sparse or "auto"),
                   progress=False).fit(train)
    if row == "default":
        return GAP(progress=False).fit(train)
    if row == "forcegrid":  # the default fit, the force noise also cross-validated
        with patch.object(cv, "FORCE_FACTORS", FORCE_GRID):
            return GAP(progress=False).fit(train)
    if row in ("auto", "n500"):  # the default fit with n_sparse "auto" (the default since
        terms = default_terms()  # 2026-12-06) or 500 (the former default)
        terms[0].n_sparse = "auto" if row == "auto" else 500
        return GAP(terms, progress=False).fit(train)
    model = GAP(noise=NoiseModel(), progress=False).fit(train)
    if row == "ml2":
        model.optimize_hyperparameters(train)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=list(DATASETS))
    ap.add_argument("--rows", nargs="+", default=["base", "default", "ml2"])
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--settings", type=json.loads, default=None,
                    help='row "settings": a gapkit.auto candidate as JSON, e.g. \'{"cutoff": 6, '
                         '"n_max_l_max": [10, 8], "atom_sigma": 0.3, "zeta": 4, '
                         '"two_body": true}\'')
    ap.add_argument("--force-grid", action="store_true",
                    help="every row's noise CV also searches the force multipliers FORCE_GRID")
    ap.add_argument("--n-sparse", type=int, default=None,
                    help='row "settings": the SOAP sparse points (default "auto")')
    args = ap.parse_args()
    if "settings" in args.rows and args.settings is None:
        ap.error('row "settings" needs --settings')
    torch.set_num_threads(1)
    if args.force_grid:  # for the whole run
        patch.object(cv, "FORCE_FACTORS", FORCE_GRID).start()
    out = results_so_far(args.output)
    for name in args.data:
        data = load_dataset(name)
        if data is None:
            continue
        train, test = data
        res = out["results"].setdefault(name, {"published_gap": PUBLISHED.get(name)})
        kept: dict = {}
        for row in args.rows:
            cpu = time.process_time()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = fit(row, train, args.settings, args.n_sparse)
            fit_cpu = time.process_time() - cpu
            res[row] = score(model, test, row, kept) | {
                "fit_cpu_s": fit_cpu, "n_sparse": model.fit_info_["n_sparse"],
                "sigma": [model.noise_.sigma(k) for k in ("energy", "forces", "virial")],
                "warnings": sorted({str(w.message)[:160] for w in caught})}
            if row == "settings":
                res[row]["settings"] = args.settings
            if row in ("default", "auto", "n500", "forcegrid", "settings"):
                report = model.fit_info_["noise_cv"]
                res[row]["noise_factors"] = report.get("factors")
                res[row]["noise_table"] = report.get("table")
                res[row]["predictive"] = {
                    k: v and {kk: vv for kk, vv in v.items() if kk != "table"}
                    for k, v in model.fit_info_["noise_cv"]["predictive"].items()}
            r = res[row]
            print(f"{name:8s} {row:8s} E {r['energy_mae_mev_per_atom']:6.2f} "
                  f"± {r['energy_mae_se_mev_per_atom']:.2f} meV/atom "
                  f"({r['energy_mae_mev_per_frame']:6.1f}/frame)  F {r['forces_mae']:.4f} eV/Å  "
                  f"area all {r['forces_area_all']:.3f} nz {r['forces_area_nonzero']:.3f}  "
                  f"rho {r['forces_spearman_nonzero']:.3f}  |z|>5 "
                  f"{100 * r['forces_share_z_above_5']:.2f}%  fit CPU {fit_cpu:.0f} s",
                  flush=True)
            print(f"{'':8s} F by config_type: " + ", ".join(
                f"{k} {v['mae']:.4f} ({v['n']})"
                for k, v in r["forces_mae_by_config_type"].items()), flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=1, default=float))
        if len(kept) > 1:
            res["cross_spearman"] = cross_spearman(kept)
            for key, rho in res["cross_spearman"].items():
                print(f"{name:8s} Spearman({key}) {rho:.3f}", flush=True)
            args.output.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
