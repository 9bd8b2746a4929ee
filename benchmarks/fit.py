"""Fit benchmark: gapkit's GAP against QUIP's gap_fit on the Zuo et al. (2020) silicon data.

Fits a GAP with the published settings of the Zuo 2020 Si model (SOAP n_max 8,
l_max 8, atom_sigma 0.5 Å, cutoff 5.4 Å with a 0.5 Å transition, zeta 4,
delta 1 eV, 1000 CUR sparse points, noise 0.01 eV/atom on energies and
0.05 eV/Å on forces, energies + forces only) on ``data/Si_train.xyz`` and
measures

* the wall and CPU time of the fit,
* the peak resident memory of the process that fits (each fit runs in its own
  subprocess, so the peak is that of the fit, not of this harness),
* the errors on ``data/Si_test.xyz`` (energy MAE/RMSE in meV/atom, force
  MAE/RMSE in eV/Å), the condition numbers and log marginal likelihood,

and, when QUIP's ``gap_fit`` executable and ``quippy`` are installed, the same for
gap_fit on the same data with the same settings (its test errors from
``quippy.potential.Potential``), side by side with ratios gapkit / gap_fit.

Run ``.venv/bin/python benchmarks/fit.py`` (all cores; ``--threads 1`` for one);
``--quick`` is a smoke test (every 4th training frame, 200 sparse points,
l_max 6). Results are printed and written to ``benchmarks/results/fit.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, THREAD_VARIABLES, base_machine_info, load_average

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_OUTPUT = RESULTS / "fit.json"
TRAIN = REPO / "data" / "Si_train.xyz"
TEST = REPO / "data" / "Si_test.xyz"

# Published settings of the Zuo et al. 2020 Si GAP (mvl_models/Si/gap/gap.xml).
PUBLISHED = {"n_max": 8, "l_max": 8, "atom_sigma": 0.5, "zeta": 4, "cutoff": 5.4,
             "cutoff_width": 0.5, "delta": 1.0, "n_sparse": 1000, "sigma_energy": 0.01,
             "sigma_forces": 0.05, "sparse_jitter": 1e-8}
QUICK = {"stride": 4, "n_sparse": 200, "l_max": 6}

# Targets (issue): published GAP test MAE; gapkit fit CPU <= 1/2 gap_fit; memory.
TARGET_ENERGY_MAE = 2.91    # meV/atom (Zuo et al. 2020, GAP, Si test set)
TARGET_FORCES_MAE = 0.07    # eV/Å
TARGET_CPU_RATIO = 0.5      # gapkit fit CPU / gap_fit CPU
TARGET_RSS_MIB = 1e9 / 2**20  # 1 GB = 953.7 MiB


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    return env


def maxrss_mib(who=resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def cpu_s(ru) -> float:
    return ru.ru_utime + ru.ru_stime


def run_measured(cmd, *, env, cwd=None, stdout=None) -> dict:
    """Run ``cmd`` and return its wall time and, from wait4, its own CPU time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout,
                            stderr=subprocess.STDOUT if stdout is not None else None)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"returncode": proc.returncode, "wall_s": wall, "cpu_s": cpu_s(ru),
            "user_s": ru.ru_utime, "system_s": ru.ru_stime, "peak_rss_mib": ru.ru_maxrss / 1024}


# --------------------------------------------------------------------------- errors
def errors(energy_pred, forces_pred, frames) -> dict:
    """Test errors: energy per atom (meV/atom) and force components (eV/Å)."""
    import numpy as np

    n = np.array([len(a) for a in frames])
    e_ref = np.array([a.get_potential_energy() for a in frames])
    f_ref = np.concatenate([a.get_forces() for a in frames])
    de = (np.asarray(energy_pred) - e_ref) / n * 1e3
    df = np.asarray(forces_pred) - f_ref
    return {"energy_mae_mev_per_atom": float(np.abs(de).mean()),
            "energy_rmse_mev_per_atom": float(np.sqrt((de**2).mean())),
            "forces_mae_ev_per_a": float(np.abs(df).mean()),
            "forces_rmse_ev_per_a": float(np.sqrt((df**2).mean())),
            "n_frames": len(frames), "n_atoms": int(n.sum())}


# --------------------------------------------------------------------------- gapkit
def build_gapkit(settings: dict):
    from gapkit import GAP, SOAP, NoiseModel, SOAPKernel, Term

    soap = SOAP(cutoff=settings["cutoff"], cutoff_width=settings["cutoff_width"],
                n_max=settings["n_max"], l_max=settings["l_max"],
                atom_sigma=settings["atom_sigma"])
    term = Term(soap, SOAPKernel(zeta=settings["zeta"], delta=settings["delta"]),
                n_sparse=settings["n_sparse"], sparse_method="cur")
    # per_atom=True is gap_fit's sigma_per_atom: a frame of N atoms gets 0.01 sqrt(N) eV.
    # The virial noise is unused (use= leaves virials out) but must be a valid number.
    noise = NoiseModel(energy=settings["sigma_energy"], forces=settings["sigma_forces"],
                       virial=0.01, per_atom=True)
    return GAP([term], noise=noise, e0="least_squares", jitter=settings["sparse_jitter"],
               use=("energy", "forces"), progress=False)


def gapkit_worker(spec_path: str) -> int:
    """Runs in its own process: fit, note the peak RSS, predict the test set, save."""
    spec = json.loads(Path(spec_path).read_text())
    import numpy as np  # noqa: F401
    import torch

    torch.set_num_threads(spec["threads"])
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from gapkit.data import read_extxyz

    train = read_extxyz(spec["train"])[:: spec["stride"]]
    test = read_extxyz(spec["test"])
    out = {"rss_before_fit_mib": maxrss_mib(), "torch_threads": torch.get_num_threads()}
    model = build_gapkit(spec["settings"])
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(train)
    out["fit_wall_s"] = time.perf_counter() - t0
    out["fit_cpu_s"] = time.process_time() - c0
    out["fit_children_cpu_s"] = (cpu_s(resource.getrusage(resource.RUSAGE_CHILDREN))
                                 - cpu_s(children0))
    out["peak_rss_after_fit_mib"] = maxrss_mib()
    out["fit_info"] = model.fit_info_
    out["e0"] = {str(z): v for z, v in model.e0_.items()}
    out["n_train_frames"] = len(train)
    out["n_train_atoms"] = sum(len(a) for a in train)

    model.predict(test[:1], virial=False, return_variance=False)  # warm-up (radial splines etc.)
    t0 = time.perf_counter()
    pred = model.predict(test, virial=False, return_variance=False)
    out["test_predict_s"] = time.perf_counter() - t0
    out["test_errors"] = errors(pred.energy, pred.forces, test)
    if spec.get("model_out"):
        path = Path(spec["model_out"])
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path, overwrite=True)
        out["model_file"] = str(path)
    out["peak_rss_process_mib"] = maxrss_mib()
    Path(spec["result"]).write_text(json.dumps(out, indent=1))
    return 0


def run_gapkit(args, settings, workdir: Path) -> dict:
    spec = {"threads": args.threads, "train": str(args.train), "test": str(args.test),
            "stride": settings["stride"], "settings": settings,
            "model_out": str(args.model_out) if args.model_out else None,
            "result": str(workdir / "gapkit_result.json")}
    spec_path = workdir / "gapkit_spec.json"
    spec_path.write_text(json.dumps(spec))
    print(f"== gapkit: fitting in a subprocess ({args.threads} thread(s))", flush=True)
    proc = run_measured([sys.executable, str(Path(__file__).resolve()), "--worker",
                         str(spec_path)], env=thread_env(args.threads))
    if proc["returncode"] != 0:
        return {"ok": False, "note": f"worker failed with exit code {proc['returncode']}",
                "process": proc}
    out = json.loads(Path(spec["result"]).read_text())
    return {"ok": True, "process": proc, **out}


# --------------------------------------------------------------------------- gap_fit
def find_gap_fit() -> tuple[str | None, str]:
    """The gap_fit executable: quippy's bundled binary, else ``gap_fit`` on PATH."""
    try:
        import quippy

        binary = Path(quippy.__path__[0]) / "gap_fit"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary), "bundled with quippy-ase"
    except Exception as error:  # noqa: BLE001
        note = f"quippy not importable ({type(error).__name__}: {error})".splitlines()[0]
    else:
        note = "quippy has no bundled gap_fit"
    path = shutil.which("gap_fit")
    venv = Path(sys.executable).parent / "gap_fit"
    for cand in (path, str(venv) if venv.exists() else None):
        if cand:
            return cand, "on PATH"
    return None, note


def gap_fit_command(binary, settings, xyz, xml) -> list[str]:
    gap = (f"soap l_max={settings['l_max']} n_max={settings['n_max']} "
           f"atom_sigma={settings['atom_sigma']} zeta={settings['zeta']} "
           f"cutoff={settings['cutoff']} cutoff_transition_width={settings['cutoff_width']} "
           f"delta={settings['delta']} f0=0.0 n_sparse={settings['n_sparse']} "
           "covariance_type=dot_product sparse_method=cur_points")
    return [binary, f"at_file={xyz}", f"gap={{{gap}}}",
            f"default_sigma={{{settings['sigma_energy']} {settings['sigma_forces']} 0.01 1}}",
            "e0_method=average", "energy_parameter_name=energy",
            "force_parameter_name=forces", f"sparse_jitter={settings['sparse_jitter']}",
            "rnd_seed=1", f"gp_file={xml}"]


def write_gap_fit_xyz(frames, path: Path) -> None:
    """extxyz with only what gap_fit should fit: energy (info), forces (arrays)."""
    import ase
    import ase.io

    out = []
    for a in frames:
        b = ase.Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)
        b.info["energy"] = a.get_potential_energy()
        b.info["config_type"] = a.info.get("config_type", "default")
        b.arrays["forces"] = a.get_forces().copy()
        out.append(b)  # no virial key: gap_fit would fit it (virial_parameter_name=virial)
    ase.io.write(path, out, format="extxyz")


def parse_timers(log: str) -> dict:
    timers = {}
    for m in re.finditer(r"TIMER:\s+(.+?)\s+done in\s+(\S+) cpu secs,\s+(\S+) wall", log):
        timers[m.group(1).strip()] = {"cpu_s": float(m.group(2)), "wall_s": float(m.group(3))}
    return timers


def run_gap_fit(args, settings, train, test, workdir: Path) -> dict:
    binary, note = find_gap_fit()
    if binary is None:
        return {"ok": False, "note": f"gap_fit not found: {note}"}
    outdir = Path(args.quip_model_dir) if args.quip_model_dir else workdir / "gap_fit"
    outdir.mkdir(parents=True, exist_ok=True)
    xyz, xml, log_path = outdir / "train.xyz", outdir / "gap.xml", outdir / "gap_fit.log"
    for old in outdir.glob("gap.xml*"):
        old.unlink()
    write_gap_fit_xyz(train, xyz)
    cmd = gap_fit_command(binary, settings, xyz.name, xml.name)
    print(f"== gap_fit ({binary}): {' '.join(cmd[1:])}", flush=True)
    with open(log_path, "w") as log:
        proc = run_measured(cmd, env=thread_env(args.threads), cwd=outdir, stdout=log)
    text = log_path.read_text(errors="replace")
    result = {"binary": binary, "command": " ".join(cmd[1:]), "log": str(log_path),
              "process": proc, "timers": parse_timers(text)}
    if proc["returncode"] != 0 or not xml.is_file():
        tail = " | ".join(text.strip().splitlines()[-3:])
        return {**result, "ok": False, "note": f"gap_fit failed (exit {proc['returncode']}): "
                                               f"{tail}"}
    result["model_file"] = str(xml)
    m = re.search(r'<e0 Z="14" value="([^"]+)"', xml.read_text(errors="replace")[:200000])
    result["e0"] = {"14": float(m.group(1))} if m else None
    try:
        from quippy.potential import Potential

        pot = Potential(param_filename=str(xml))

        def predict(frames):
            energies, forces = [], []
            for a in frames:
                b = a.copy()
                b.calc = pot
                energies.append(b.get_potential_energy())
                forces.append(b.get_forces())
            return energies, forces

        predict(test[:1])
        t0 = time.perf_counter()
        energies, forces = predict(test)
        result["test_predict_s"] = time.perf_counter() - t0
        import numpy as np

        result["test_errors"] = errors(energies, np.concatenate(forces), test)
    except Exception as error:  # noqa: BLE001
        result["test_errors"] = None
        result["note"] = f"quippy Potential failed: {type(error).__name__}: {error}"
    result["ok"] = True
    return result


# --------------------------------------------------------------------------- report
def machine_info(threads: int) -> dict:
    import ase
    import numpy as np
    import torch

    try:
        mem = next(int(line.split()[1]) / 2**20 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = None

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        **base_machine_info(),
        "usable_cpus": len(os.sched_getaffinity(0)), "memory_gib": mem,
        "numpy": np.__version__, "torch": torch.__version__, "ase": ase.__version__,
        "quippy_ase": version("quippy-ase"),
        "threads": threads, "thread_env": {name: str(threads) for name in THREAD_VARIABLES},
    }


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt(value, spec=".2f", unit=""):
    return "-" if value is None else f"{value:{spec}}{unit}"


def verdict(ok):
    return "-" if ok is None else ("met" if ok else "NOT met")


def summarise(report: dict) -> None:
    g, q = report["gapkit"], report.get("gap_fit") or {}
    q_ok = q.get("ok", False)
    s = report["settings"]
    print(f"\nGAP fit on {g.get('n_train_frames', '?')} Si frames "
          f"({g.get('n_train_atoms', '?')} atoms; energies + forces), "
          f"n_max {s['n_max']}, l_max {s['l_max']}, {s['n_sparse']} CUR sparse points; "
          f"{report['machine']['threads']} thread(s); load average before "
          f"{report['machine']['load_average_before']}, after "
          f"{report['machine']['load_average_after']}\n")
    rows = []

    def row(name, gv, qv, spec=".1f"):
        r = ratio(gv, qv) if q_ok else None
        rows.append((name, fmt(gv, spec), fmt(qv, spec) if q_ok else "-", fmt(r, ".2f")))

    gp, qp = g.get("process", {}), q.get("process", {})
    row("fit wall (s) *", g.get("fit_wall_s"), qp.get("wall_s"))
    row("fit CPU (s) *", g.get("fit_cpu_s"), qp.get("cpu_s"))
    row("process wall (s)", gp.get("wall_s"), qp.get("wall_s"))
    row("process CPU, user+sys (s)", gp.get("cpu_s"), qp.get("cpu_s"))
    row("peak RSS after fit (MiB) *", g.get("peak_rss_after_fit_mib"), qp.get("peak_rss_mib"),
        ".0f")
    row("peak RSS of process (MiB)", gp.get("peak_rss_mib"), qp.get("peak_rss_mib"), ".0f")
    ge, qe = g.get("test_errors") or {}, q.get("test_errors") or {}
    row("test energy MAE (meV/atom)", ge.get("energy_mae_mev_per_atom"),
        qe.get("energy_mae_mev_per_atom"), ".2f")
    row("test energy RMSE (meV/atom)", ge.get("energy_rmse_mev_per_atom"),
        qe.get("energy_rmse_mev_per_atom"), ".2f")
    row("test force MAE (eV/Å)", ge.get("forces_mae_ev_per_a"), qe.get("forces_mae_ev_per_a"),
        ".4f")
    row("test force RMSE (eV/Å)", ge.get("forces_rmse_ev_per_a"),
        qe.get("forces_rmse_ev_per_a"), ".4f")
    na = ge.get("n_atoms")
    row("test predict E+F (ms/atom)",
        g["test_predict_s"] / na * 1e3 if g.get("test_predict_s") and na else None,
        q["test_predict_s"] / na * 1e3 if q.get("test_predict_s") and na else None, ".3f")
    e0g = (g.get("e0") or {}).get("14")
    e0q = (q.get("e0") or {}).get("14") if q.get("e0") else None
    rows.append(("e0 Si (eV)", fmt(e0g, ".4f") + " (least_squares)",
                 fmt(e0q, ".4f") + " (average)" if q_ok else "-", ""))
    w = [max(len(r[i]) for r in rows + [("", "gapkit", "gap_fit", "gapkit/gap_fit")])
         for i in range(4)]
    print(f"{'':<{w[0]}}  {'gapkit':>{w[1]}}  {'gap_fit':>{w[2]}}  {'gapkit/gap_fit':>{w[3]}}")
    print("-" * (sum(w) + 6))
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}")
    print("* gapkit: GAP.fit alone (process_time / ru_maxrss when fit returns); gap_fit: its "
          "whole process (wait4).\n  process rows: the whole subprocess of each code (imports, "
          "reading, fit, test prediction for gapkit; gap_fit's run).")
    if not q_ok:
        print(f"\ngap_fit: {q.get('note', 'not run')}")
    info = g.get("fit_info") or {}
    print(f"\ngapkit fit_info_: cond(R) = {fmt(info.get('condition_number_R'), '.3g')}, "
          f"cond(K_MM + jitter) = {fmt(info.get('condition_number_kmm_jitter'), '.3g')}, "
          f"log marginal likelihood = {fmt(info.get('log_marginal_likelihood'), '.1f')}, "
          f"observations {info.get('n_observations')}, sparse {info.get('n_sparse')}")

    print("\nTargets")
    for t in report["targets"]:
        print(f"  {t['name']:<44} target {t['target']:<18} measured {t['measured']:<22} "
              f"{verdict(t['met'])}")


def targets(report: dict) -> list[dict]:
    g, q = report["gapkit"], report.get("gap_fit") or {}
    ge = g.get("test_errors") or {}
    out = []
    e = ge.get("energy_mae_mev_per_atom")
    out.append({"name": "test energy MAE <= published GAP", "target": "<= 2.91 meV/atom",
                "measured": fmt(e, ".2f", " meV/atom"),
                "met": None if e is None else e <= TARGET_ENERGY_MAE})
    f = ge.get("forces_mae_ev_per_a")
    out.append({"name": "test force MAE <= published GAP", "target": "<= 0.07 eV/Å",
                "measured": fmt(f, ".4f", " eV/Å"),
                "met": None if f is None else f <= TARGET_FORCES_MAE})
    qcpu = (q.get("process") or {}).get("cpu_s") if q.get("ok") else None
    r = ratio(g.get("fit_cpu_s"), qcpu)
    out.append({"name": "fit CPU <= half of gap_fit's (GAP.fit only)",
                "target": "ratio <= 0.50", "measured": fmt(r, ".2f"),
                "met": None if r is None else r <= TARGET_CPU_RATIO})
    r2 = ratio((g.get("process") or {}).get("cpu_s"), qcpu)
    out.append({"name": "fit CPU <= half of gap_fit's (whole process)",
                "target": "ratio <= 0.50", "measured": fmt(r2, ".2f"),
                "met": None if r2 is None else r2 <= TARGET_CPU_RATIO})
    rss = (g.get("process") or {}).get("peak_rss_mib")
    out.append({"name": "peak memory of the fit process <= 1 GB", "target": "<= 953.7 MiB",
                "measured": fmt(rss, ".0f", " MiB"),
                "met": None if rss is None else rss <= TARGET_RSS_MIB})
    gp, qp = g.get("test_predict_s"), q.get("test_predict_s")
    r3 = ratio(gp, qp)
    out.append({"name": "prediction faster than quippy (test set, E+F)",
                "target": "gapkit/quippy < 1", "measured": fmt(r3, ".2f"),
                "met": None if r3 is None else r3 < 1})
    return out


# --------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for gapkit (torch, BLAS) and gap_fit (BLAS) "
                             "(default: all usable cores)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: every 4th training frame, 200 sparse points, l_max 6")
    parser.add_argument("--n-sparse", type=int, default=None,
                        help="sparse points (default 1000, or 200 with --quick)")
    parser.add_argument("--no-quip", action="store_true", help="skip gap_fit")
    parser.add_argument("--no-gapkit", action="store_true", help="skip gapkit (gap_fit only)")
    parser.add_argument("--train", type=Path, default=TRAIN, help="training extxyz")
    parser.add_argument("--test", type=Path, default=TEST, help="test extxyz")
    parser.add_argument("--model-out", type=Path, default=None,
                        help="save the gapkit model here (default "
                             "benchmarks/results/models/gapkit_Si[_quick].zip)")
    parser.add_argument("--quip-model-dir", type=Path, default=None,
                        help="folder for gap_fit's gap.xml, input and log (default "
                             "benchmarks/results/models/gap_fit_Si[_quick])")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON output file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0))
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    suffix = "_quick" if args.quick else ""
    if args.model_out is None:
        args.model_out = RESULTS / "models" / f"gapkit_Si{suffix}.zip"
    if args.quip_model_dir is None:
        args.quip_model_dir = RESULTS / "models" / f"gap_fit_Si{suffix}"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    # thread settings before numpy/torch are imported (BLAS/OpenMP read them once)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from gapkit.data import read_extxyz

    settings = dict(PUBLISHED, stride=1)
    if args.quick:
        settings.update(QUICK)
    if args.n_sparse is not None:
        settings["n_sparse"] = args.n_sparse
    machine = machine_info(args.threads)
    machine["torch_threads"] = torch.get_num_threads()
    load_before = load_average()
    if load_before is not None and load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run; other processes "
              "may slow the timings down (CPU times are affected less than wall times)",
              flush=True)
    train = read_extxyz(args.train)[:: settings["stride"]]
    test = read_extxyz(args.test)

    with tempfile.TemporaryDirectory(prefix="gapkit-fit-bench-") as tmp:
        workdir = Path(tmp)
        gapkit = ({"ok": False, "note": "skipped (--no-gapkit)"} if args.no_gapkit
                  else run_gapkit(args, settings, workdir))
        loads = {"after_gapkit": load_average()}
        gap_fit = ({"ok": False, "note": "skipped (--no-quip)"} if args.no_quip
                   else run_gap_fit(args, settings, train, test, workdir))
        loads["after_gap_fit"] = load_average()

    report = {
        "machine": {**machine, "load_average_before": load_before,
                    "load_average_after": load_average(), "load_average_between": loads,
                    "harness_peak_rss_mib": maxrss_mib()},
        "settings": {**settings, "e0": {"gapkit": "least_squares", "gap_fit": "e0_method=average",
                                        "published": -0.79},
                     "use": ["energy", "forces"], "sparse_method": "CUR",
                     "train": str(args.train), "test": str(args.test),
                     "energy_sigma_per_atom": True, "quick": args.quick},
        "gapkit": gapkit,
        "gap_fit": gap_fit,
        "published": {"energy_mae_mev_per_atom": TARGET_ENERGY_MAE,
                      "forces_mae_ev_per_a": TARGET_FORCES_MAE,
                      "source": "Zuo et al., J. Phys. Chem. A 124, 731 (2020), GAP, Si"},
    }
    g, q = gapkit, gap_fit
    if g.get("ok") and q.get("ok"):
        report["ratios_gapkit_over_gap_fit"] = {
            "fit_cpu_fit_only": ratio(g["fit_cpu_s"], q["process"]["cpu_s"]),
            "fit_wall_fit_only": ratio(g["fit_wall_s"], q["process"]["wall_s"]),
            "process_cpu": ratio(g["process"]["cpu_s"], q["process"]["cpu_s"]),
            "process_wall": ratio(g["process"]["wall_s"], q["process"]["wall_s"]),
            "peak_rss": ratio(g["process"]["peak_rss_mib"], q["process"]["peak_rss_mib"]),
            "test_predict": ratio(g.get("test_predict_s"), q.get("test_predict_s")),
        }
    report["targets"] = targets(report)
    if g.get("ok"):
        summarise(report)
    else:
        print(f"gapkit: {g.get('note')}")
        if q.get("ok"):
            print(json.dumps({k: q[k] for k in ("process", "test_errors", "e0")}, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.output}")
    return report


if __name__ == "__main__":
    if "--worker" in sys.argv:
        raise SystemExit(gapkit_worker(sys.argv[sys.argv.index("--worker") + 1]))
    main()
