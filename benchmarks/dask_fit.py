"""Fits on Dask workers against one process: wall time, speed-up, memory per worker and the
difference of the models (issue 13).

Zuo et al. (2020) Si with the published settings of ``benchmarks/fit.py`` (SOAP n_max 8,
l_max 8, cutoff 5.4 Å, 1,000 CUR sparse points, noise 0.01 eV/atom and 0.05 eV/Å, energies
and forces): the fit in this process (one thread), then on a ``LocalCluster`` of 1 and of 2
single-threaded worker processes (started before the clock starts; their start is reported
apart). For each: wall time, this process's CPU, the workers' CPU, peak RSS of each worker
(VmHWM: each cluster is fresh), max |Δα| / max |α| and the largest prediction
difference on the test set (energy, forces, relative to the largest value) against the
one-process fit, and, for scale, the same differences between two one-process fits that
differ only in ``batch_atoms`` (the rounding floor). ``--cv`` adds the default fit (noise by
cross-validation, predictive variance calibrated on the folds), one process against 2
workers.

Needs ``../shared/datasets/zuo2020`` (else the bundled ``data/Si_train.xyz``, said). Results
are printed and written after every row to ``benchmarks/results/dask_fit.json``. Run in
the background, e.g.

    timeout 3000 prlimit --as=12000000000 python benchmarks/dask_fit.py
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
from _common import base_machine_info  # noqa: E402

from gapkit import GAP, SOAP, NoiseModel, Term  # noqa: E402
from gapkit.data import read_extxyz  # noqa: E402
from gapkit.kernels import SOAPKernel  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets" / "zuo2020"
RESULTS = HERE / "results" / "dask_fit.json"
TARGET_SPEEDUP = 1.7
TARGET_RELATIVE = 1e-9


def data():
    """Zuo Si train and test frames (the shared copy, else the bundled one, said)."""
    base = SHARED if (SHARED / "Si_train.xyz").exists() else HERE.parent / "data"
    if base != SHARED:
        print(f"{SHARED} not found: the bundled data/Si_*.xyz", flush=True)
    return read_extxyz(base / "Si_train.xyz"), read_extxyz(base / "Si_test.xyz"), str(base)


def published(batch_atoms: int = 256, cv: bool = False) -> GAP:
    soap = SOAP(cutoff=5.4, cutoff_width=0.5, n_max=8, l_max=8, atom_sigma=0.5)
    term = Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=1000)
    noise = None if cv else NoiseModel(energy=0.01, forces=0.05, virial=0.05)
    return GAP([term], noise=noise, use=("energy", "forces"), progress=False,
               batch_atoms=batch_atoms)


def differences(reference: GAP, model: GAP, test) -> dict:
    a, b = reference.predict(test, virial=False), model.predict(test, virial=False)
    out = {"alpha": float((model.alpha_ - reference.alpha_).abs().max()
                          / reference.alpha_.abs().max())}
    for name in ("energy", "forces", "energy_variance", "forces_variance"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        out[name] = float(np.abs(x - y).max() / np.abs(x).max())
    return out


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss survives fork and exec, so a
    spawned worker would report its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def on_workers(n: int, train, cv: bool):
    """The fit on a fresh LocalCluster of ``n`` workers: (model, row)."""
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(cluster)
    client.run(lambda: __import__("gapkit"))  # imports done before the clock starts
    start_s = time.perf_counter() - t0
    cpu_before = client.run(time.process_time)
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = published(cv=cv).fit(train, client=client)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cpu_after = client.run(time.process_time)
    rss = client.run(peak_rss_mib)
    client.close()
    cluster.close()
    return model, {"workers": n, "wall_s": wall, "cpu_s_this_process": cpu,
                   "cpu_s_workers": float(sum(cpu_after[w] - cpu_before[w] for w in cpu_after)),
                   "peak_rss_mib_per_worker": sorted(float(v) for v in rss.values()),
                   "cluster_start_s": start_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cv", action="store_true", help="also the default (noise by CV) fit")
    ap.add_argument("--stride", type=int, default=1,
                    help="every stride-th training frame (a smoke test: --stride 8)")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test, source = data()
    train = train[::args.stride]
    out = {"machine": base_machine_info(), "data": source, "n_frames": len(train),
           "settings": "Zuo 2020 Si published (benchmarks/fit.py)", "rows": []}

    def save(row):
        out["rows"].append(row)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=1))
        print(json.dumps(row), flush=True)

    modes = [False, True] if args.cv else [False]
    for cv in modes:
        label = "default (noise by CV)" if cv else "published noise"
        wall, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = published(cv=cv).fit(train)
        base = {"fit": label, "workers": 0, "wall_s": time.perf_counter() - wall,
                "cpu_s_this_process": time.process_time() - cpu,
                "peak_rss_mib_this_process": peak_rss_mib()}
        if not cv:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                other = published(batch_atoms=100).fit(train)
            base["rounding_floor_batch_atoms_100"] = differences(one, other, test)
        save(base)
        for n in ((1, 2) if not cv else (2,)):
            model, row = on_workers(n, train, cv)
            row.update(fit=label, difference=differences(one, model, test),
                       speedup_vs_one_process=base["wall_s"] / row["wall_s"])
            if cv:
                row["same_noise"] = model.noise_ == one.noise_
            save(row)
    rows = out["rows"]
    for label in sorted({r["fit"] for r in rows}):
        sub = {r["workers"]: r for r in rows if r["fit"] == label}
        if 1 in sub and 2 in sub:
            out.setdefault("speedup_2_vs_1_worker", {})[label] = (sub[1]["wall_s"]
                                                                  / sub[2]["wall_s"])
    args.output.write_text(json.dumps(out, indent=1))
    print(f"\n{'fit':24s} {'workers':>7s} {'wall s':>8s} {'speed-up':>8s} "
          f"{'RSS MiB/worker':>16s} {'max dE rel':>10s} {'max dF rel':>10s} {'d alpha':>9s}")
    for r in rows:
        d = r.get("difference", {})
        print(f"{r['fit']:24s} {r['workers']:7d} {r['wall_s']:8.1f} "
              f"{r.get('speedup_vs_one_process', 1.0):8.2f} "
              f"{str([round(x) for x in r.get('peak_rss_mib_per_worker', [])]):>16s} "
              f"{d.get('energy', 0):10.1e} {d.get('forces', 0):10.1e} {d.get('alpha', 0):9.1e}")
    for label, s in out.get("speedup_2_vs_1_worker", {}).items():
        print(f"{label}: 2 workers vs 1 worker {s:.2f}x (target >= {TARGET_SPEEDUP})")
    print(f"prediction differences target <= {TARGET_RELATIVE:g} relative")


if __name__ == "__main__":
    main()
