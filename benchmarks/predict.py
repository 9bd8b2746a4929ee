"""Prediction benchmark: GAP energies and forces (and variances), ms per atom, vs quippy.

Times ``GAP.predict`` of a model with the published Zuo 2020 Si descriptor settings
(SOAP n_max 8, l_max 8, cutoff 5.4 Å with a 0.5 Å transition, atom_sigma 0.5 Å,
zeta 4) on rattled diamond silicon (64 and 1000 atoms) in four modes:

(a) energy + forces, no variance (``variance=False``);
(b) (a) + energy and local-energy variances (``variance=True, forces_variance=None``);
(c) (b) + projected force variances (``forces_variance="projected"``);
(d) (b) + exact force variances (``forces_variance="exact"``),

and, when quippy is installed, energy + forces of ``quippy.potential.Potential``
with a gap_fit model trained on the same data with the same settings. The modes are
timed interleaved (a b c d quip, a b c d quip, ...), by CPU time (``time.process_time``,
the figure quoted) and wall time. A second table splits mode (d) into its stages
(descriptors, the kernel of E+F, the force rows, the energy variances, the prior force
variances, the force-variance solves), each timed alone on the same structure by the
functions ``GAP.predict`` calls, with their sum beside the measured (d).

The gapkit model is ``--model PATH`` (a file from ``GAP.save``, e.g. the one
``benchmarks/fit.py`` writes) or, by default, a quick fit on every 4th frame of
``data/Si_train.xyz`` with ``--n-sparse`` (200) CUR sparse points. The quippy model
is ``--quip-model PATH`` (a gap_fit XML) or, by default, a gap_fit run on the same
frames with the same settings. Everything runs on one thread unless ``--threads``.
Results are printed and written to ``benchmarks/results/predict.json``.
"""

from __future__ import annotations

import argparse
import os
import sys

from _common import REPO, THREAD_VARIABLES, load_average, silicon


def _threads_from_argv(argv) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=1)
    known, _ = pre.parse_known_args(argv)
    return max(1, known.threads)


# Threads must be fixed before numpy, torch or quippy (OpenBLAS) is imported.
THREADS = _threads_from_argv(sys.argv[1:])
for _name in THREAD_VARIABLES:
    os.environ[_name] = str(THREADS)

import importlib.metadata  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)
torch.set_num_interop_threads(1)

from ase.calculators.calculator import all_changes  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit as fit_bench  # noqa: E402  (benchmarks/fit.py: model settings, gap_fit helpers)

RESULTS = REPO / "benchmarks" / "results" / "predict.json"
MODES = ("a", "b", "c", "d", "quip")
MODE_TITLES = {"a": "(a) E+F", "b": "(b) +E var", "c": "(c) +F var proj",
               "d": "(d) +F var exact", "quip": "quippy E+F"}
MODE_KWARGS = {"a": dict(variance=False),
               "b": dict(variance=True, forces_variance=None),
               "c": dict(variance=True, forces_variance="projected"),
               "d": dict(variance=True, forces_variance="exact")}


def time_interleaved(fns: dict, repeats: int):
    """``{name: (cpu_times, wall_times, result or None, error or None)}``: one untimed
    warm-up call of each, then ``repeats`` rounds calling each once in turn (A B A B),
    so that a change of the machine's load falls on every code alike."""
    out = {}
    for name, fn in fns.items():
        try:
            out[name] = [[], [], fn(), None]
        except Exception as error:  # noqa: BLE001
            out[name] = [None, None, None,
                         f"failed: {type(error).__name__}: {error}".splitlines()[0]]
    for _ in range(repeats):
        for name, fn in fns.items():
            if out[name][3] is not None:
                continue
            cpu, wall = time.process_time(), time.perf_counter()
            out[name][2] = fn()
            out[name][0].append(time.process_time() - cpu)
            out[name][1].append(time.perf_counter() - wall)
    return {name: tuple(v) for name, v in out.items()}


def stage_times(model, atoms, repeats: int) -> dict:
    """CPU seconds (best of ``repeats``) of each stage of mode (d), each run alone on
    ``atoms`` with the functions ``gapkit.gp.posterior.predict_block`` calls in it."""
    from gapkit.gp.design import functional_rows
    from gapkit.gp.posterior import (derivative_means, dtc_variance, prior_energy_variances,
                                     prior_force_variances)

    n_atoms = len(atoms)
    alphas = torch.split(model.alpha_, [s.n for s in model.sparse_sets_])
    pairs = list(zip(model.terms_, model.sparse_sets_, alphas))
    results = [t.descriptor.compute([atoms], gradients=["positions"]) for t, _, _ in pairs]

    def descriptors():
        return [t.descriptor.compute([atoms], gradients=["positions"]) for t, _, _ in pairs]

    def kernel_mean():  # energy and local-energy rows, the force mean
        for (t, z, a), res in zip(pairs, results):
            functional_rows(t.kernel, res, z, energy=True, forces=False, virial=False,
                            local=True)
            derivative_means(t.kernel, z, a, res, True, False)

    def force_rows():
        return torch.cat([functional_rows(t.kernel, res, z, energy=False, forces=True,
                                          virial=False)["forces"]
                          for (t, z, _), res in zip(pairs, results)], dim=-1)

    rows = force_rows().reshape(3 * n_atoms, -1)
    e_rows = torch.cat([functional_rows(t.kernel, res, z, energy=True, forces=False,
                                        virial=False)["energy"]
                        for (t, z, _), res in zip(pairs, results)], dim=1)
    prior_f = prior_force_variances(model.terms_, results, n_atoms).reshape(-1)

    def energy_variances():
        prior_e, _ = prior_energy_variances(model.terms_, results, 1, n_atoms)
        return dtc_variance(e_rows, prior_e, model.R_, model.U_)

    stages = {"descriptors": descriptors, "kernel E+F": kernel_mean,
              "energy variances": energy_variances, "force rows": force_rows,
              "prior force variances": lambda: prior_force_variances(model.terms_, results,
                                                                     n_atoms),
              "force-variance solves": lambda: dtc_variance(rows, prior_f, model.R_,
                                                            model.U_)}
    with torch.no_grad():
        timed = time_interleaved(stages, repeats)
    return {name: min(cpu) for name, (cpu, _, _, _) in timed.items()}


# --------------------------------------------------------------------------- models
def gapkit_model(args, settings, train):
    from gapkit import GAP

    if args.model is not None:
        model = GAP.load(args.model)
        model.progress = False
        return model, {"source": str(args.model), "fit_s": None,
                       "terms": [t.to_dict() for t in model.terms_],
                       "n_sparse": [z.n for z in model.sparse_sets_]}
    model = fit_bench.build_gapkit(settings)
    t0 = time.perf_counter()
    model.fit(train)
    info = {"source": f"fitted here on {len(train)} frames of {args.train.name} "
                      f"(every {settings['stride']}th)",
            "fit_s": time.perf_counter() - t0,
            "terms": [t.to_dict() for t in model.terms_],
            "n_sparse": [z.n for z in model.sparse_sets_]}
    return model, info


def quip_potential(args, settings, train, workdir: Path):
    try:
        from quippy.potential import Potential
    except Exception as error:  # noqa: BLE001
        return None, {"note": f"quippy not importable ({type(error).__name__}: {error})"
                              .splitlines()[0]}
    if args.quip_model is not None:
        xml = args.quip_model
        info = {"source": str(xml)}
    else:
        binary, note = fit_bench.find_gap_fit()
        if binary is None:
            return None, {"note": f"gap_fit not found ({note}); pass --quip-model"}
        fit_bench.write_gap_fit_xyz(train, workdir / "train.xyz")
        cmd = fit_bench.gap_fit_command(binary, settings, "train.xyz", "gap.xml")
        t0 = time.perf_counter()
        with open(workdir / "gap_fit.log", "w") as log:
            rc = subprocess.run(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                check=False).returncode
        xml = workdir / "gap.xml"
        if rc != 0 or not xml.is_file():
            return None, {"note": f"gap_fit failed (exit {rc})"}
        info = {"source": f"gap_fit here on {len(train)} frames: {' '.join(cmd[1:])}",
                "fit_s": time.perf_counter() - t0}
    # calculation_always_required: repeated calls on unchanged atoms must recompute
    pot = Potential(param_filename=str(xml), calculation_always_required=True)
    return pot, info


# --------------------------------------------------------------------------- report
def fmt_entry(entry) -> str:
    if entry is None or entry.get("best_ms_per_atom") is None:
        return "-"
    return f"{entry['best_ms_per_atom']:.3f} ({entry['median_ms_per_atom']:.3f})"


def print_tables(report: dict) -> None:
    rows = report["results"]
    systems = list(dict.fromkeys(r["system"] for r in rows))

    def find(system, mode):
        return next((r for r in rows if r["system"] == system and r["mode"] == mode), None)

    print(f"\nCPU ms/atom, {report['machine']['threads']} thread(s): best (median) of "
          f"{report['settings']['repeats']} interleaved calls after a warm-up\n")
    header = f"{'system':<18}{'atoms':>6}" + "".join(f"{MODE_TITLES[m]:>19}" for m in MODES)
    print(header)
    print("-" * len(header))
    for system in systems:
        n = next(r["n_atoms"] for r in rows if r["system"] == system)
        print(f"{system:<18}{n:>6}" + "".join(f"{fmt_entry(find(system, m)):>19}"
                                               for m in MODES))
    print("\nRatios (best times): mode / (a), and quippy / gapkit (a) (> 1: gapkit faster)\n")
    print(f"{'system':<18}" + "".join(f"{m + '/(a)':>10}" for m in ("b", "c", "d"))
          + f"{'quippy/(a)':>13}")
    for system in systems:
        a = find(system, "a")
        base = a and a.get("best_ms_per_atom")
        cells = []
        for m in ("b", "c", "d", "quip"):
            e = find(system, m)
            v = e.get("best_ms_per_atom") if e else None
            cells.append("-" if not base or v is None else f"{v / base:.2f}")
        print(f"{system:<18}" + "".join(f"{c:>10}" for c in cells[:3]) + f"{cells[3]:>13}")
    stages = report.get("stages_ms_per_atom") or {}
    if stages:
        names = list(next(iter(stages.values())))
        print("\nStages of (d), CPU ms/atom, each timed alone (best), their sum and (d):\n")
        print(f"{'system':<18}" + "".join(f"{n:>23}" for n in names)
              + f"{'sum':>8}{'(d)':>8}")
        for system, st in stages.items():
            d = find(system, "d")
            print(f"{system:<18}" + "".join(f"{st[n]:>23.3f}" for n in names)
                  + f"{sum(st.values()):>8.3f}{d['best_ms_per_atom']:>8.3f}")
    notes = [f"{r['system']} {r['mode']}: {r['note']}" for r in rows if r.get("note")]
    for note in notes:
        print(f"  note: {note}")
    check = report.get("check")
    if check:
        print("\nSanity check (gapkit (a) vs quippy; different models fitted to the same data): "
              + "; ".join(f"{s}: |ΔE|/atom {v['energy_diff_mev_per_atom']:.1f} meV, "
                          f"rms ΔF {v['forces_rms_diff']:.3f} eV/Å" for s, v in check.items()))
    print("\nModels:")
    print(f"  gapkit: {report['models']['gapkit']['source']}; sparse "
          f"{report['models']['gapkit']['n_sparse']}")
    q = report["models"].get("quip") or {}
    print(f"  quippy: {q.get('source') or q.get('note')}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads (set before numpy/torch/quippy are imported)")
    parser.add_argument("--model", type=Path, default=None,
                        help="gapkit model file (GAP.save); default: fit one quickly")
    parser.add_argument("--quip-model", type=Path, default=None,
                        help="gap_fit XML for quippy; default: run gap_fit quickly")
    parser.add_argument("--no-quip", action="store_true", help="skip quippy")
    parser.add_argument("--n-sparse", type=int, default=200,
                        help="sparse points of the quick fits")
    parser.add_argument("--stride", type=int, default=4,
                        help="quick fits use every STRIDE-th training frame")
    parser.add_argument("--train", type=Path, default=fit_bench.TRAIN, help="training extxyz")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="diamond-Si atom counts, 8 k^3 (default 64 1000; 64 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement after a warm-up (default 5; 2 "
                             "with --quick)")
    parser.add_argument("--exact-max-atoms", type=int, default=1000,
                        help="run mode (d), exact force variances, up to this many atoms")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: Si 64 only, 2 repeats, l_max 6 quick fits")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON output file")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [64] if args.quick else [64, 1000]
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = fit_bench.machine_info(THREADS)
    machine["torch_threads"] = torch.get_num_threads()
    load_before = load_average()
    if load_before is not None and load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run; other processes "
              "may slow the timings down", flush=True)
    from gapkit.data import read_extxyz

    settings = dict(fit_bench.PUBLISHED, stride=args.stride, n_sparse=args.n_sparse)
    if args.quick:
        settings["l_max"] = fit_bench.QUICK["l_max"]
    need_train = args.model is None or (not args.no_quip and args.quip_model is None)
    train = read_extxyz(args.train)[:: args.stride] if need_train else []

    print("== gapkit model", flush=True)
    model, model_info = gapkit_model(args, settings, train)
    pot, quip_info = None, {"note": "skipped (--no-quip)"}
    with tempfile.TemporaryDirectory(prefix="gapkit-predict-bench-") as tmp:
        if not args.no_quip:
            print("== quippy model", flush=True)
            pot, quip_info = quip_potential(args, settings, train, Path(tmp))

        systems = [(f"Si{n} (diamond)", silicon(n)) for n in args.sizes]
        results, check, stages = [], {}, {}
        for system, atoms in systems:
            n_atoms = len(atoms)
            print(f"== {system}: {n_atoms} atoms", flush=True)
            fns, notes = {}, {}
            for mode in MODES:
                if mode == "quip":
                    if pot is None:
                        notes[mode] = quip_info.get("note", "")
                        continue
                    work = atoms.copy()

                    def fn(work=work):
                        pot.calculate(work, ["energy", "forces"], all_changes)
                        return pot.results["energy"], pot.results["forces"].copy()
                else:
                    if mode == "d" and n_atoms > args.exact_max_atoms:
                        notes[mode] = f"skipped (> --exact-max-atoms {args.exact_max_atoms})"
                        continue
                    kwargs = MODE_KWARGS[mode]

                    def fn(kwargs=kwargs, atoms=atoms):
                        return model.predict([atoms], forces=True, virial=False, **kwargs)
                fns[mode] = fn
            timed = time_interleaved(fns, args.repeats)
            last = {}
            for mode in MODES:
                entry = {"system": system, "n_atoms": n_atoms, "mode": mode,
                         "note": notes.get(mode, ""), "cpu_s": None, "wall_s": None,
                         "best_ms_per_atom": None, "median_ms_per_atom": None,
                         "best_wall_ms_per_atom": None}
                if mode in timed:
                    cpu, wall, result, error = timed[mode]
                    if error is not None:
                        entry["note"] = error
                    else:
                        entry.update(cpu_s=cpu, wall_s=wall,
                                     best_ms_per_atom=min(cpu) / n_atoms * 1e3,
                                     median_ms_per_atom=statistics.median(cpu) / n_atoms * 1e3,
                                     best_wall_ms_per_atom=min(wall) / n_atoms * 1e3)
                        last[mode] = result
                results.append(entry)
                print(f"   {MODE_TITLES[mode]:<18} {fmt_entry(entry):>20} ms/atom CPU  "
                      f"{entry['note']}", flush=True)
            if "d" in last:
                stages[system] = {name: t / n_atoms * 1e3 for name, t in
                                  stage_times(model, atoms, args.repeats).items()}
            if "a" in last and "quip" in last:
                e_q, f_q = last["quip"]
                pa = last["a"]
                check[system] = {
                    "energy_diff_mev_per_atom": float(abs(pa.energy[0] - e_q) / n_atoms * 1e3),
                    "forces_rms_diff": float(np.sqrt(np.mean((pa.forces - f_q) ** 2)))}

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    report = {
        "machine": {**machine, "load_average_before": load_before,
                    "load_average_after": load_average()},
        "settings": {**settings, "repeats": args.repeats, "warmup_calls": 1,
                     "timer": "time.process_time (CPU, quoted) and time.perf_counter "
                              "(wall); modes interleaved", "threads": THREADS,
                     "predict_call": "GAP.predict([atoms], forces=True, virial=False, ...)",
                     "quip_call": "Potential.calculate(atoms, ['energy', 'forces'], "
                                  "all_changes)",
                     "modes": {m: MODE_KWARGS.get(m, "quippy") for m in MODES},
                     "systems": {name: {"n_atoms": len(a), "formula": a.get_chemical_formula()}
                                 for name, a in systems}},
        "models": {"gapkit": model_info, "quip": {**quip_info,
                                                  "quippy_ase": version("quippy-ase")}},
        "results": results,
        "stages_ms_per_atom": stages,
        "check": check,
    }
    print_tables(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwritten {args.output}")
    return report


if __name__ == "__main__":
    main()
