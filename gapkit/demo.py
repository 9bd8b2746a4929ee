"""``make demo``: fit a GAP on the bundled Zuo 2020 silicon data and judge it.

Fits on ``Si_train.xyz`` (214 DFT frames: energies, forces, virials), predicts
``Si_test.xyz`` with variances, prints MAE/RMSE, and writes a parity plot and a
force-error-vs-predicted-sigma plot. Run as ``python -m gapkit.demo [--output DIR]
[--quick] [--threads N]``; the fit takes about 20 s on two idle cores (``--quick``: a
quarter of the data). Threads default to the free cores (usable cores minus the load
average): on a busy machine torch's one-per-core threads wait on each other.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def build_model(quick: bool = False):
    from . import GAP, SOAP, NoiseModel, SOAPKernel, Term

    soap = SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6, atom_sigma=0.5)
    return GAP([Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=200 if quick else 600,
                     sparse_method="cur")],
               noise=NoiseModel(energy=0.003, forces=0.05, virial=0.05), e0="least_squares")


def errors_table(pred, frames) -> dict:
    """The demo's test errors: :func:`gapkit.uq.error_table`, the table of ``gapkit eval``."""
    from .uq import error_table

    return error_table(pred, frames)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_output", help="folder for the figures")
    parser.add_argument("--quick", action="store_true", help="every 4th training frame")
    parser.add_argument("--threads", default="auto",
                        help="CPU threads (default 'auto': the free cores at each call, i.e. "
                        "usable cores minus other processes' load, or $GAPKIT_THREADS)")
    args = parser.parse_args(argv)
    from ._threads import set_threads

    try:
        n_threads = set_threads(args.threads)
    except ValueError as err:
        parser.error(str(err))

    import matplotlib

    matplotlib.use("Agg")
    from . import plot
    from .data import get_all_labels, load_bundled

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    train = load_bundled("Si_train.xyz")
    test = load_bundled("Si_test.xyz")
    if args.quick:
        train = train[::4]
    model = build_model(args.quick)
    print(f"Fitting a GAP on {len(train)} Zuo 2020 Si frames "
          f"({sum(len(a) for a in train)} atoms; energies, forces, virials) "
          f"on {n_threads} thread{'s' * (n_threads > 1)}")
    t0 = time.perf_counter()
    model.fit(train)
    info = model.fit_info_
    print(f"  fit: {time.perf_counter() - t0:.0f} s wall, {info['cpu_time_s']:.0f} s CPU; "
          f"{info['n_sparse']} sparse points; observations {info['n_observations']}; "
          f"cond(R) = {info['condition_number_R']:.2g}")
    print(f"  e0 = {model.e0_} eV; log marginal likelihood {info['log_marginal_likelihood']:.1f}")
    t0 = time.perf_counter()
    pred = model.predict(test, forces_variance="exact")
    n_test = pred.atom_offsets[-1]
    print(f"  predicted {len(test)} test frames ({n_test} atoms) with variances in "
          f"{time.perf_counter() - t0:.1f} s")
    err = errors_table(pred, test)
    print("Test-set errors (Si_test.xyz):")
    print(f"  energy  MAE {err['energy_mae_mev_per_atom']:.2f} meV/atom   "
          f"RMSE {err['energy_rmse_mev_per_atom']:.2f} meV/atom")
    print(f"  forces  MAE {err['forces_mae']:.3f} eV/Å      RMSE {err['forces_rmse']:.3f} eV/Å")
    if "virial_mae_mev_per_atom" in err:
        print(f"  virial  MAE {err['virial_mae_mev_per_atom']:.1f} meV/atom")

    labels = get_all_labels(test)
    n = pred.n_atoms
    e_ref = np.array([lab.energy for lab in labels]) / n
    f_ref = np.concatenate([lab.forces for lab in labels])
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.0), dpi=150)
    plot.parity(e_ref, pred.energy / n, sigma=np.sqrt(pred.energy_variance) / n, ax=axes[0],
                label="energy", unit="eV/atom", title="Si test set: energies")
    plot.parity(f_ref.ravel(), pred.forces.ravel(), ax=axes[1], label="force component",
                unit="eV/Å", title="Si test set: forces")
    fig.tight_layout()
    path = output / "parity.png"
    fig.savefig(path)
    sigma_f = np.sqrt(pred.forces_variance + model.noise_.sigma("forces") ** 2)
    fig = plot.error_vs_sigma(pred.forces - f_ref, sigma_f,
                              title="Si test forces: error vs predicted σ\n"
                                    "(posterior + noise σ_F)")
    path2 = output / "force_error_vs_sigma.png"
    fig.savefig(path2)
    inside = np.mean(np.abs(pred.forces - f_ref) < 2 * sigma_f)
    print(f"  {100 * inside:.0f}% of force errors lie within 2 predicted σ "
          f"(95% for a calibrated Gaussian)")
    print(f"Wrote {path} and {path2}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
