"""Core-repulsion baseline benchmark: GAP on the Zuo 2020 Si data with and without it.

Fits two GAPs with the demo's settings (SOAP n_max 8, l_max 6, cutoff 5 Å, zeta 4,
600 CUR sparse points; sigmas 3 meV/atom, 0.05 eV/Å, 0.05 eV/atom) on
``data/Si_train.xyz``: the bare GAP, and the same GAP fitted on top of
``gapkit.baselines.CoreRepulsion()`` (ZBL with its default smooth cutoff). Reports

* test errors on ``data/Si_test.xyz`` (energy meV/atom, forces eV/Å);
* the closest approach of any two atoms in hot Langevin MD of 64-atom diamond Si
  (``--temperature`` K, ``--steps`` steps of 1 fs; same seed for both models), and the
  largest predicted force standard deviation seen along the way;
* a knock-on event: one atom of 64-atom Si given ``--pka-energy`` eV towards its
  nearest neighbour (NVE, 0.1 fs steps): the closest approach, against the distance
  at which the bare ZBL potential alone would stop the pair (the head-on turning point).

The training data never has two atoms closer than 1.83 Å. Results are printed and
written to ``benchmarks/results/baselines.json``. One thread by default.
"""

from __future__ import annotations

import argparse
import os
import sys

from _common import REPO, THREAD_VARIABLES, base_machine_info, load_average, silicon

for _name in THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ase import units  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

from gapkit import GAPCalculator  # noqa: E402
from gapkit.baselines import CoreRepulsion  # noqa: E402
from gapkit.data import load_bundled  # noqa: E402
from gapkit.demo import build_model, errors_table  # noqa: E402


def min_distance(atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def hot_md(model, temperature: float, steps: int, seed: int) -> dict:
    atoms = silicon(64, rattle=0.0)
    atoms.calc = GAPCalculator(model, variance=False)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature,
                                 rng=np.random.default_rng(seed))
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02,
                   fixcm=False, rng=np.random.default_rng(seed + 1))
    closest, max_sigma, trace = np.inf, 0.0, []
    every = max(1, steps // 20)
    for step in range(steps):
        try:
            dyn.run(1)
        except ValueError as err:  # atoms on top of each other: no descriptor exists
            if "apart" not in str(err):
                raise
            return {"closest_approach": 0.0, "overlapped_at_step": step,
                    "max_force_sigma": max_sigma, "trace": trace}
        closest = min(closest, min_distance(atoms))
        if step % every == 0:  # force variances on a sample of frames (they cost ~3x)
            pred = model.predict([atoms], virial=False, forces_variance="exact")
            max_sigma = max(max_sigma, float(np.sqrt(pred.forces_variance.max())))
            trace.append({"step": step, "temperature_K": float(atoms.get_temperature()),
                          "min_distance": min_distance(atoms)})
    return {"closest_approach": closest, "max_force_sigma": max_sigma, "trace": trace}


def knock_on(model, energy_ev: float, steps: int) -> dict:
    atoms = silicon(64, rattle=0.0)
    atoms.calc = GAPCalculator(model, variance=False)
    d = atoms.get_all_distances(mic=True, vector=True)
    r = np.linalg.norm(d[0], axis=1)
    r[0] = np.inf
    j = int(np.argmin(r))
    direction = d[0, j] / r[j]
    mass = atoms.get_masses()[0]
    speed = np.sqrt(2 * energy_ev / mass)  # ASE units: eV, amu, Å
    velocities = np.zeros((len(atoms), 3))
    velocities[0] = speed * direction
    atoms.set_velocities(velocities)
    dyn = VelocityVerlet(atoms, 0.1 * units.fs)
    closest, overlapped = np.inf, False
    for _ in range(steps):
        try:
            dyn.run(1)
        except ValueError as err:  # atoms on top of each other: no descriptor exists
            if "apart" not in str(err):
                raise
            closest, overlapped = 0.0, True
            break
        closest = min(closest, float(atoms.get_distance(0, j, mic=True)))
    return {"closest_approach_pka_pair": closest, "overlapped": overlapped,
            "initial_distance": float(r[j])}


def zbl_turning_point(baseline, energy_ev: float) -> float:
    """Head-on turning point of the bare pair potential for a PKA of ``energy_ev`` on a
    resting partner of equal mass: the centre-of-mass energy is E/2."""
    from ase import Atoms

    rs = np.linspace(0.05, 2.5, 4000)
    e = np.array([baseline.compute(Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]]),
                                   forces=False, virial=False).energy for r in rs])
    above = rs[e > energy_ev / 2]
    return float(above.max()) if above.size else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temperature", type=float, nargs="+", default=[3000.0, 10000.0],
                        help="Langevin temperatures, K (one run each)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--pka-energy", type=float, default=100.0)
    parser.add_argument("--pka-steps", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="every 4th frame, short runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.pka_steps = 200, 200

    train = load_bundled("Si_train.xyz")
    test = load_bundled("Si_test.xyz")
    if args.quick:
        train = train[::4]
    core = CoreRepulsion()
    out = {"machine": base_machine_info(), "load_average_start": load_average(),
           "settings": vars(args), "core_repulsion": core.to_dict(), "models": {}}
    for name, baselines in (("bare", None), ("core_repulsion", [core])):
        model = build_model(quick=args.quick)
        model.baselines = baselines or []
        model.progress = False
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        err = errors_table(model.predict(test, return_variance=False), test)
        t0 = time.perf_counter()
        md = {f"{t:.0f}": hot_md(model, t, args.steps, seed=7) for t in args.temperature}
        md_s = time.perf_counter() - t0
        pka = knock_on(model, args.pka_energy, args.pka_steps)
        out["models"][name] = {"fit_s": fit_s, "test_errors": err, "hot_md": md,
                               "hot_md_s": md_s, "knock_on": pka}
        hot = "; ".join(f"{t} K MD closest approach {m['closest_approach']:.3f} Å "
                        + (f"(atoms overlapped at step {m['overlapped_at_step']}) "
                           if "overlapped_at_step" in m else "")
                        + f"(max force σ {m['max_force_sigma']:.2f} eV/Å)"
                        for t, m in md.items())
        print(f"{name:15s} fit {fit_s:6.1f} s | test E MAE "
              f"{err['energy_mae_mev_per_atom']:.2f} meV/atom, F MAE "
              f"{err['forces_mae']:.4f} eV/Å | {hot}"
              f" | {args.pka_energy:.0f} eV knock-on closest approach "
              f"{pka['closest_approach_pka_pair']:.3f} Å"
              + (" (atoms overlapped: the run stopped)" if pka["overlapped"] else ""),
              flush=True)
    out["zbl_turning_point"] = zbl_turning_point(core, args.pka_energy)
    print(f"head-on turning point of bare ZBL at {args.pka_energy:.0f} eV: "
          f"{out['zbl_turning_point']:.3f} Å; training data: no pair closer than 1.83 Å")
    out["load_average_end"] = load_average()
    path = REPO / "benchmarks" / "results" / "baselines.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
