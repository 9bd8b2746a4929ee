"""On-the-fly learning of Cu with EMT as the oracle, or of Si with Tersoff's potential as
the oracle (``--system Si``): labels called, cost per step, and the error against the
oracle on an independent trajectory, at two temperatures.

A GAP (SOAP n_max 6, l_max 4, cutoff 4.5 Å, ζ 4, 100 CUR points, fixed noise σ_E 1 meV/atom,
σ_F 0.02 eV/Å) is fitted on four cells rattled by 0.05 Å and labelled by the oracle: Cu,
32-atom fcc cells and EMT; Si, 64-atom diamond cells and ase's Tersoff calculator with
Tersoff's 1988 silicon parameters (PRB 37, 6991; LAMMPS's ``Si.tersoff``), e0 the
per-atom average energy.
Then, per temperature, ``gapkit.otf.otf_md`` runs Langevin MD (2 fs, friction 0.02) for
``--steps`` steps from a perfect cell, checking every ``--interval`` steps with ``--threshold``
noise σ. Reported per temperature:

- labels called, and at which steps;
- CPU ms per MD step of the OTF run (checks, labels and updates included) and of plain MD
  with the final model (``GAPCalculator(variance=False)``) over the same number of steps;
- force MAE against EMT on an independent EMT Langevin trajectory at that temperature (every
  10th of 300 steps, another seed), for the initial and the final model;
- the incremental update against the fit from scratch on the initial frames and every label
  at the same sparse points: largest relative difference of the weights and of the
  predicted forces on the independent trajectory (after the last refit, with
  ``--refit-every K``: a fit from scratch with new sparse points after every K labels),
  beside the rounding of one force prediction itself, 2 M eps max sum_j |k_j alpha_j| /
  max |F| (a force is a sum of M terms k_j alpha_j that cancel; two evaluations of one
  function may differ by that much);
- the sparse points the run ended with (``--new-points``: the most uncertain environments
  of each label join by a column update; 0 keeps the 100 points), and the CPU seconds of
  one column update of four points from the rows and descriptors in memory (as the run
  keeps them) against the fit from scratch
  at the final sparse points (all rows and columns: what the update replaces).

Writes ``benchmarks/results/otf.json`` (``otf_Si.json``) after each temperature. One thread,
about a minute for Cu; Si about 4 minutes (Tersoff in ase is Python: 0.17 s a 64-atom
frame, and the independent trajectory is 300 of them).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
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
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402

from gapkit import GAP, SOAP, GAPCalculator, NoiseModel, SOAPKernel, Term  # noqa: E402
from gapkit.gp.design import design_rows  # noqa: E402
from gapkit.gp.observations import FORCES  # noqa: E402
from gapkit.gp.sparse import solve_dtc  # noqa: E402
from gapkit.otf import otf_md  # noqa: E402
from gapkit.testing import label  # noqa: E402

RESULTS = HERE / "results" / "otf.json"
SYSTEM = "Cu"  # set by --system
#: Tersoff 1988 silicon (PRB 37, 6991), in the order of ase's TersoffParameters
TERSOFF_SI = [3.0, 1.0, 1.3258, 4.8381, 2.0417, 0.0, 22.956, 0.33675, 1.3258, 95.373, 3.0,
              0.2, 3.2394, 3264.7]


def force_rounding(model, frames) -> float:
    """2 M eps max over force rows of sum_j |k_j alpha_j|: how far two evaluations of one
    fitted function may differ by rounding alone (eV/Å)."""
    obs = model.training_data(frames).observations
    rows = design_rows(model.terms_, model.sparse_sets_, frames, obs)
    size = (rows.abs() @ model.alpha_.abs()).numpy()[obs.kind == FORCES]
    eps = float(torch.finfo(torch.float64).eps)
    return 2 * rows.shape[1] * eps * float(size.max())


def cell(rattle: float, seed: int):
    if SYSTEM == "Si":
        atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    else:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def oracle():
    if SYSTEM == "Si":
        from ase.calculators.tersoff import Tersoff, TersoffParameters

        return Tersoff({("Si", "Si", "Si"): TersoffParameters.from_list(TERSOFF_SI)})
    return EMT()


def langevin(temperature: float, seed: int):
    def make(atoms):
        return Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02,
                        rng=np.random.default_rng(seed))
    return make


def fresh_model(train):
    return GAP([Term(SOAP(n_max=6, l_max=4, cutoff=4.5), SOAPKernel(zeta=4), n_sparse=100)],
               noise=NoiseModel(energy=0.001, forces=0.02, virial=0.05, per_atom=True),
               e0="least_squares" if SYSTEM == "Si" else {29: 0.0},
               progress=False).fit(train)


def reference_trajectory(temperature: float, seed: int, steps: int = 300):
    atoms = cell(0.0, 0)
    atoms.calc = oracle()
    dyn = langevin(temperature, seed)(atoms)
    frames = []
    for _ in range(steps // 10):
        dyn.run(10)
        frame = atoms.copy()
        frames.append(label(frame, oracle()))
    return frames


def force_mae(model, frames) -> float:
    pred = model.predict(frames, return_variance=False)
    ref = np.concatenate([a.arrays["forces"] for a in frames])
    return float(np.abs(pred.forces - ref).mean())


def column_update_seconds(model, frames, atoms) -> float:
    """CPU seconds of adding the environments of four atoms of ``atoms`` to a copy of
    ``model`` by the column update from the design rows and descriptors in memory (those
    not timed: an OTF run keeps them)."""
    from gapkit.gp.sparse import stored_rows
    from gapkit.otf import _extend

    model = copy.deepcopy(model)
    data = model.training_data(frames)
    rows = stored_rows(model.terms_, model.sparse_sets_, frames, data.observations,
                       batch_atoms=model.batch_atoms, descriptors=True)
    cpu = time.process_time()
    _extend(model, frames, atoms, [0, 8, 16, 24], rows)
    return time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--system", choices=["Cu", "Si"], default="Cu")
    ap.add_argument("--temperatures", type=float, nargs="+", default=None,
                    help="default: 300 900 (Cu), 600 1500 (Si)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=2.0)
    ap.add_argument("--refit-every", type=int, default=None,
                    help="fit from scratch (new sparse points) after this many labels")
    ap.add_argument("--new-points", type=int, default=4,
                    help="sparse points per label (column update); 0 keeps them fixed")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    global SYSTEM
    SYSTEM = args.system
    if args.temperatures is None:
        args.temperatures = [600.0, 1500.0] if SYSTEM == "Si" else [300.0, 900.0]
    if args.output == RESULTS and SYSTEM != "Cu":
        args.output = RESULTS.with_name(f"otf_{SYSTEM}.json")
    torch.set_num_threads(1)
    train = [label(cell(0.05, s), oracle()) for s in range(4)]
    out = {"machine": base_machine_info(), "settings": vars(args) | {"output": None},
           "runs": {}}
    print(f"{'T (K)':>6} {'labels':>7} {'M':>5} {'OTF ms/step':>12} {'plain ms/step':>14} "
          f"{'F MAE before':>13} {'after':>8} {'update vs scratch':>18} {'rounding':>9} "
          f"{'column s':>9} "
          f"{'fit s':>7}")
    for temperature in args.temperatures:
        model = fresh_model(train)
        test = reference_trajectory(temperature, seed=1000 + int(temperature))
        before = force_mae(model, test)
        atoms = cell(0.0, 0)
        cpu = time.process_time()
        run = otf_md(model, atoms, langevin(temperature, 7), oracle(), steps=args.steps,
                     interval=args.interval, threshold=args.threshold, max_consecutive=10**6,
                     refit_every=args.refit_every, train=train, new_points=args.new_points)
        otf_ms = (time.process_time() - cpu) / args.steps * 1e3
        plain = cell(0.0, 0)
        plain.calc = GAPCalculator(run.model, variance=False)
        dyn = langevin(temperature, 7)(plain)
        cpu = time.process_time()
        dyn.run(args.steps)
        plain_ms = (time.process_time() - cpu) / args.steps * 1e3
        after = force_mae(run.model, test)
        everything = list(train) + list(run.labels)
        data = run.model.training_data(everything)
        cpu = time.process_time()
        scratch = solve_dtc(run.model.terms_, run.model.sparse_sets_, everything,
                            data.observations, jitter=run.model.jitter,
                            batch_atoms=run.model.batch_atoms)
        scratch_s = time.process_time() - cpu
        column_s = column_update_seconds(run.model, everything, test[-1])
        alpha_rel = float((run.model.alpha_ - scratch.alpha).abs().max()
                          / scratch.alpha.abs().max())
        from_scratch = copy.deepcopy(run.model)  # its sparse points, the fit from scratch
        from_scratch.alpha_, from_scratch.R_ = scratch.alpha, scratch.R
        f_a = run.model.predict(test, return_variance=False).forces
        f_b = from_scratch.predict(test, return_variance=False).forces
        force_rel = float(np.abs(f_a - f_b).max() / np.abs(f_b).max())
        rounding_rel = force_rounding(run.model, test) / float(np.abs(f_b).max())
        row = {"labels": run.n_labels,
               "label_steps": [e.step for e in run.events if e.labelled],
               "otf_cpu_ms_per_step": otf_ms, "plain_cpu_ms_per_step": plain_ms,
               "force_mae_before": before, "force_mae_after": after,
               "update_vs_scratch_alpha_rel": alpha_rel,
               "update_vs_scratch_forces_rel": force_rel,
               "force_prediction_rounding_rel": rounding_rel,
               "sigma_max_last": run.events[-1].sigma_max if run.events else None,
               "n_sparse": sum(s.n for s in run.model.sparse_sets_),
               "column_update_cpu_s": column_s, "fit_at_same_points_cpu_s": scratch_s,
               "threshold_eV_per_A": args.threshold * model.noise_.forces}
        out["runs"][str(temperature)] = row
        print(f"{temperature:>6.0f} {run.n_labels:>7} {row['n_sparse']:>5} {otf_ms:>12.1f} "
              f"{plain_ms:>14.1f} {before:>13.4f} {after:>8.4f} "
              f"{max(alpha_rel, force_rel):>18.1e} {rounding_rel:>9.1e} {column_s:>9.3f} "
              f"{scratch_s:>7.3f}",
              flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
