"""A fit larger than one process on Dask workers: ASE EMT copper, 2,000 frames, over 10^6
observation rows, 5,000 sparse points (issue 13).

The frames (fcc Cu supercells of 192 atoms, some with a vacancy, strained and rattled at
several amplitudes, EMT energies and forces) are written to an extxyz file once
(``--data``, kept for later runs); the fit reads it as a :class:`gapkit.data.FrameFile`,
so each worker reads its own frame range and no process holds all frames. The fit (SOAP
cutoff 4 Å, n_max 6, l_max 4, ζ 4, CUR on the workers, fixed noise: one QR pass) runs on a
fresh ``LocalCluster`` of single-threaded workers inside ``distributed.get_task_stream``,
which records every task's compute, transfer and (de)serialisation intervals. Reported: wall
time, CPU of this process and of the workers, peak RSS per worker (VmHWM), the time per
stage (reading, descriptors and CUR, the QR pass per partition, the R-factor reductions),
the fraction spent in communication, and a model of time and memory for W workers and N
rows built from these per-block costs (printed with the measured constants). ``--check``
adds the test error on 50 held-out frames.

Results are written after the run to ``benchmarks/results/dask_large.json``. A quick
smoke run: ``--frames 40 --n-sparse 300``. The full run takes tens of minutes on 2 cores:
run it in the background, e.g.

    timeout 5400 prlimit --as=12000000000 python benchmarks/dask_large.py
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import base_machine_info, load_average  # noqa: E402

from gapkit import GAP, SOAP, NoiseModel, Term  # noqa: E402
from gapkit.data import FrameFile  # noqa: E402
from gapkit.kernels import SOAPKernel  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "dask_large.json"
ATOMS_PER_FRAME = 192  # 4 x 4 x 3 conventional fcc cells
TARGET_RSS_MIB = 1.5 * 1024
BANDWIDTH_NOTE = ("transfer time per byte measured between the local workers (loopback); a "
                  "network is slower")


# ----------------------------------------------------------------------------- the data

def cu_frames(n: int, seed: int):
    """``n`` EMT-labelled Cu frames: 192-atom fcc cells (a quarter with one vacancy),
    lattice constant 3.52-3.70 Å, a random symmetric strain of up to 2 %, rattled with
    0.02-0.15 Å. Yields the frames one at a time."""
    import ase.build
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    for _ in range(n):
        atoms = ase.build.bulk("Cu", "fcc", a=rng.uniform(3.52, 3.70), cubic=True) * (4, 4, 3)
        if rng.random() < 0.25:
            del atoms[int(rng.integers(len(atoms)))]
        strain = rng.uniform(-0.02, 0.02, size=(3, 3))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + (strain + strain.T) / 2),
                       scale_atoms=True)
        atoms.positions += rng.normal(scale=rng.uniform(0.02, 0.15), size=atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        yield atoms


def write_data(path: Path, n: int, seed: int) -> float:
    """Write ``n`` frames to ``path`` (in chunks; nothing held); returns the seconds."""
    from ase.io import write

    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    chunk = []
    with open(tmp, "w") as fh:
        for atoms in cu_frames(n, seed):
            chunk.append(atoms)
            if len(chunk) == 100:
                write(fh, chunk, format="extxyz")
                chunk = []
        if chunk:
            write(fh, chunk, format="extxyz")
    tmp.replace(path)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the fit

def model(n_sparse: int) -> GAP:
    soap = SOAP(cutoff=4.0, cutoff_width=0.5, n_max=6, l_max=4, atom_sigma=0.5)
    term = Term(soap, SOAPKernel(zeta=4, delta=1.0), n_sparse=n_sparse)
    return GAP([term], noise=NoiseModel(energy=0.001, forces=0.02),
               use=("energy", "forces"), progress=False)


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; see benchmarks/dask_fit.py)."""
    return _status_mib("VmHWM")


def rss_mib() -> float:
    """This process's resident memory now."""
    return _status_mib("VmRSS")


def start_sampler(dask_worker, period: float = 0.2) -> None:
    """On a worker (``client.run`` passes it): sample VmRSS every ``period`` seconds into
    a list kept on the worker object (a daemon thread; reading /proc costs microseconds;
    a module global would not do: cloudpickle sends this script's functions by value)."""
    import threading

    points: list = []
    dask_worker.rss_samples = points

    def loop():
        while True:
            points.append((time.time(), rss_mib(), peak_rss_mib()))
            time.sleep(period)

    threading.Thread(target=loop, daemon=True, name="rss-sampler").start()


def samples(dask_worker) -> list:
    return list(getattr(dask_worker, "rss_samples", []))


def task_name(task, owner: dict) -> str:
    """A recorded task's name: Dask's key prefix, or for gapkit's ``_run`` tasks the pass
    they ran (``owner``: task key -> the pass, as gapkit recorded it)."""
    from dask.utils import key_split

    name = key_split(task["key"])
    return owner.get(task["key"], ("run",))[0] if name == "run" else name


def rss_by_stage(stream, owner: dict, trace: dict) -> dict:
    """Per worker and stage, the largest RSS sampled while one of the stage's tasks ran
    there (MiB), and the RSS at the first and last sample of the stage: where a worker's
    memory goes (``trace``: worker address -> [(time, MiB)])."""

    out: dict = {}
    for worker, points in trace.items():
        t = np.array([p[0] for p in points])
        mib = np.array([p[1] for p in points])
        hwm = np.array([p[2] for p in points])
        stages: dict = {}
        for task in stream:
            if task.get("worker") != worker:
                continue
            name = task_name(task, owner)
            stage = STAGES.get(name, name)
            for ss in task["startstops"]:
                if ss["action"] != "compute":
                    continue
                inside = (t >= ss["start"]) & (t <= ss["stop"])
                if inside.any():
                    cur = stages.setdefault(stage, {"peak_mib": 0.0, "first_mib": None})
                    cur["peak_mib"] = max(cur["peak_mib"], float(mib[inside].max()))
                    if cur["first_mib"] is None:
                        cur["first_mib"] = float(mib[inside][0])
                    cur["last_mib"] = float(mib[inside][-1])
                    cur["hwm_mib"] = float(hwm[inside][-1])  # VmHWM by the stage's end
        # the peak as VmHWM saw it (the samples may miss a short spike): the first sample
        # at the final VmHWM, and the one before it bound when the spike happened
        at = float(t[np.argmax(hwm >= hwm.max())]) if mib.size else None
        # what the worker was doing at its peak: every task interval (any action) around it
        doing = sorted({f"{STAGES.get(task_name(task, owner), task_name(task, owner))}: "
                        f"{ss['action']}" for task in stream if task.get("worker") == worker
                        for ss in task["startstops"]
                        if at is not None and ss["start"] - 0.5 <= at <= ss["stop"] + 0.5})
        out[worker] = {"stages": stages, "peak_mib": float(hwm.max()) if mib.size else None,
                       "peak_at_s": None if at is None else at - float(t[0]),
                       "at_peak": doing,
                       "trace": [(round(a - float(t[0]), 2), round(b), round(c))
                                 for a, b, c in points]}
    return out


#: task name (Dask's key prefix) -> stage of the fit
#: (``_run`` tasks are named by the pass they run: gapkit's record of its tasks)
STAGES = {"make_partition": "reading frames", "_descriptor_pass": "descriptors for CUR",
          "_qr_pass": "QR pass (design rows)", "stack_qr": "R-factor reductions (TSQR)",
          **{name: "sparse selection (CUR)" for name in
             ("summary", "digests", "gram", "add", "norms2", "leverage", "rows_of")}}
COMMUNICATION = ("transfer", "serialize", "deserialize", "disk-read", "disk-write")


def task_table(stream, owner: dict) -> dict:
    """Seconds per (stage, action) summed over the recorded tasks, the count and the bytes
    transferred per stage, and the compute seconds of each QR-pass task and TSQR combine
    (``owner``: task key -> the pass it ran, as gapkit recorded it)."""

    seconds: dict = defaultdict(lambda: defaultdict(float))
    count: dict = defaultdict(int)
    nbytes: dict = defaultdict(int)
    each: dict = defaultdict(list)
    for task in stream:
        name = task_name(task, owner)
        stage = STAGES.get(name, name)
        count[stage] += 1
        for ss in task["startstops"]:
            seconds[stage][ss["action"]] += ss["stop"] - ss["start"]
        nbytes[stage] += int(task.get("nbytes") or 0)
        if name in ("_qr_pass", "stack_qr"):
            each[name].append(sum(ss["stop"] - ss["start"] for ss in task["startstops"]
                                  if ss["action"] == "compute"))
    return {"seconds": {s: dict(v) for s, v in seconds.items()}, "tasks": dict(count),
            "result_bytes": dict(nbytes), "compute_each": dict(each)}


def fit_on_workers(path: Path, workers: int, n_sparse: int):
    from distributed import Client, LocalCluster, get_task_stream

    from gapkit.gp.parallel import dask_passes

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit="6GB")
    client = Client(cluster)
    client.run(lambda: __import__("gapkit"))
    start_s = time.perf_counter() - t0
    frames = FrameFile(path)
    base_rss = client.run(rss_mib)
    client.run(start_sampler)
    cpu_before = client.run(time.process_time)
    wall, cpu = time.perf_counter(), time.process_time()
    with get_task_stream(client) as ts, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the fit's passes on these workers (as fit(client=...)), keeping gapkit's record
        # of which pass each task ran
        with dask_passes(client) as passes:
            gap = model(n_sparse).fit(frames)
            owner = dict(passes._owner)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    cpu_after = client.run(time.process_time)
    rss = client.run(peak_rss_mib)
    trace = client.run(samples)
    client.close()
    cluster.close()
    stages = task_table(ts.data, owner)
    worker_cpu = float(sum(cpu_after[w] - cpu_before[w] for w in cpu_after))
    row = {"workers": workers, "wall_s": wall, "cpu_s_this_process": cpu,
           "cpu_s_workers": worker_cpu, "cluster_start_s": start_s,
           "peak_rss_mib_per_worker": sorted(float(v) for v in rss.values()),
           "rss_mib_per_worker_before_fit": sorted(float(v) for v in base_rss.values()),
           "peak_rss_mib_this_process": peak_rss_mib(), "stages": stages,
           "rss_by_stage": rss_by_stage(ts.data, owner, trace),
           "fit_info_stages": {k: v for k, v in gap.fit_info_.items()
                               if isinstance(v, (int, float, str))}}
    return gap, row


def communication(stages: dict, wall: float, workers: int) -> dict:
    """Seconds of compute and of communication (transfers, (de)serialisation) in the
    recorded tasks, and their share of the workers' wall time (``wall * workers``)."""
    comp = sum(v.get("compute", 0.0) for v in stages["seconds"].values())
    comm = sum(v.get(a, 0.0) for v in stages["seconds"].values() for a in COMMUNICATION)
    return {"compute_s": comp, "communication_s": comm,
            "communication_fraction_of_task_time": comm / max(comp + comm, 1e-12),
            "communication_fraction_of_worker_wall": comm / max(wall * workers, 1e-12),
            "idle_or_this_process_s": wall * workers - comp - comm}


def scaling_model(row: dict, n_rows: int, M: int, smaller: dict | None = None) -> dict:
    """Time and memory of W workers on N rows from the measured per-block costs:

    T(W, N) = T_fixed + (c_row N + c_sel N) / W + ceil(log2 W) (t_comb + 2 M^2 8 B / bw)

    c_row: compute of the QR pass per row (its tasks over the rows), c_sel: the reading,
    descriptors and CUR per row, t_comb: one TSQR combine (QR of a 2M x M stack),
    bw: the bytes per second the R-factor transfers reached, T_fixed: what ran in this
    process (wall minus the slowest worker's tasks). Memory per worker: the R factor and
    the stacked pair (3 M^2 8 B), the worker's memory before the fit, and what grows with
    its rows (the measured peak less those two, per row). With ``smaller`` (the result of
    a run with fewer frames, same M and workers) the memory is a line through both peaks
    instead: what does not grow with the rows (design blocks, QR buffers) is then not
    counted per row."""
    st = row["stages"]["seconds"]
    runs = row["stages"]["compute_each"].get("_qr_pass", [])
    combines = row["stages"]["compute_each"].get("stack_qr", [])
    W = row["workers"]
    qr_rows = sum(runs)
    sel = sum(st.get(s, {}).get("compute", 0.0) for s in (
        "reading frames", "descriptors for CUR", "sparse selection (CUR)"))
    c_row = qr_rows / n_rows
    c_sel = sel / n_rows
    t_comb = float(np.mean(combines)) if combines else 0.0
    tsqr = st.get("R-factor reductions (TSQR)", {})
    moved = tsqr.get("transfer", 0.0)
    r_bytes = 8.0 * M * M
    bw = (r_bytes * max(len(combines), 1) / moved) if moved > 0 else float("inf")
    busiest = (qr_rows + sel) / W + math.ceil(math.log2(max(W, 1))) * t_comb
    t_fixed = max(row["wall_s"] - busiest, 0.0)
    r_mib = 3 * r_bytes / 2**20
    base_mib = max(row["rss_mib_per_worker_before_fit"])
    peak = max(row["peak_rss_mib_per_worker"])
    per_row_mib = max(peak - r_mib - base_mib, 0.0) / (n_rows / W)
    if smaller is not None:
        small_peak = max(smaller["fit"]["peak_rss_mib_per_worker"])
        per_row_mib = (peak - small_peak) / ((n_rows - smaller["n_rows"]) / W)
        base_mib = peak - per_row_mib * n_rows / W - r_mib  # the rest: fixed

    def T(w, n):
        return (t_fixed + (c_row + c_sel) * n / w
                + math.ceil(math.log2(w)) * (t_comb + r_bytes / bw) if w > 1 else
                t_fixed + (c_row + c_sel) * n)

    table = []
    for n in (10**6, 10**7, 10**8):
        for w in (1, 2, 8, 32, 128, 512, 2048):
            reduce_s = math.ceil(math.log2(w)) * (t_comb + r_bytes / bw) if w > 1 else 0.0
            table.append({"rows": n, "workers": w, "time_s": T(w, n),
                          "reduction_share": reduce_s / T(w, n),
                          "memory_mib_per_worker": base_mib + r_mib + per_row_mib * n / w})
    # where adding workers stops paying: the reduction's log2 W term equals the row work
    stop = {n: next((w for w in (2**k for k in range(1, 20))
                     if T(2 * w, n) > 0.9 * T(w, n)), None) for n in (10**6, 10**7, 10**8)}
    return {"c_row_s": c_row, "c_select_s": c_sel, "t_combine_s": t_comb,
            "bytes_per_s": bw, "t_fixed_s": t_fixed, "r_factor_mib": r_bytes / 2**20,
            "worker_base_mib": base_mib,
            "memory_per_row_mib": per_row_mib, "note": BANDWIDTH_NOTE, "table": table,
            "workers_where_doubling_saves_under_10pct": {str(k): v for k, v in stop.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--n-sparse", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=None,
                    help="the extxyz file (written if absent; default results/cu_emt_N.xyz)")
    ap.add_argument("--check", action="store_true", help="test errors on 50 new frames")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--smaller", type=Path, default=None,
                    help="the JSON of a run with fewer frames (same M, workers): memory "
                         "model through both peaks")
    ap.add_argument("--report", type=Path, default=None,
                    help="no fit: the model and tables of this saved result (with "
                         "--smaller), written back to it")
    args = ap.parse_args()
    smaller = json.loads(args.smaller.read_text()) if args.smaller else None
    if args.report is not None:
        out = json.loads(args.report.read_text())
        out["model"] = scaling_model(out["fit"], out["n_rows"], out["settings"]["n_sparse"],
                                     smaller)
        if smaller is not None:
            out["model"]["smaller_run"] = {"n_rows": smaller["n_rows"], "peak_rss_mib_per_worker":
                                           smaller["fit"]["peak_rss_mib_per_worker"]}
        args.report.write_text(json.dumps(out, indent=1))
        report(out)
        return
    torch.set_num_threads(1)
    path = args.data or HERE / "results" / f"cu_emt_{args.frames}.xyz"
    out = {"machine": base_machine_info(), "load_before": load_average(),
           "settings": {"frames": args.frames, "n_sparse": args.n_sparse,
                        "workers": args.workers, "seed": args.seed,
                        "soap": "cutoff 4, width 0.5, n_max 6, l_max 4, atom_sigma 0.5",
                        "kernel": "SOAPKernel(zeta=4, delta=1)",
                        "noise": "0.001 eV/atom, 0.02 eV/A (fixed: one QR pass)"}}
    if not path.exists():
        out["data_written_s"] = write_data(path, args.frames, args.seed)
        print(f"wrote {path} in {out['data_written_s']:.0f} s", flush=True)
    frames = FrameFile(path)
    n_atoms = int(np.sum(frames.n_atoms))
    n_rows = len(frames) + 3 * n_atoms
    out.update(data=str(path), n_frames=len(frames), n_atoms=n_atoms, n_rows=n_rows)
    print(f"{len(frames)} frames, {n_atoms} atoms, {n_rows} observation rows; fitting on "
          f"{args.workers} workers, M {args.n_sparse}", flush=True)
    gap, row = fit_on_workers(path, args.workers, args.n_sparse)
    row["communication"] = communication(row["stages"], row["wall_s"], args.workers)
    out["fit"] = row
    out["model"] = scaling_model(row, n_rows, args.n_sparse, smaller)
    out["load_after"] = load_average()
    if args.check:
        test = list(cu_frames(50, args.seed + 1))
        p = gap.predict(test, virial=False)
        e_ref = np.array([a.get_potential_energy() / len(a) for a in test])
        e = np.asarray(p.energy) / np.array([len(a) for a in test])
        f_ref = np.concatenate([a.get_forces() for a in test])
        out["test"] = {"energy_mae_mev_per_atom": float(1e3 * np.abs(e - e_ref).mean()),
                       "forces_mae_ev_per_a": float(np.abs(np.asarray(p.forces)
                                                           - f_ref).mean())}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1))
    report(out)


def report(out: dict) -> None:
    row, m, comm = out["fit"], out["model"], out["fit"]["communication"]
    print(f"\nwall {row['wall_s']:.0f} s on {row['workers']} workers (cluster start "
          f"{row['cluster_start_s']:.0f} s apart); CPU: workers {row['cpu_s_workers']:.0f} s, "
          f"this process {row['cpu_s_this_process']:.0f} s; peak RSS per worker "
          f"{[round(x) for x in row['peak_rss_mib_per_worker']]} MiB (target <= "
          f"{TARGET_RSS_MIB:.0f}), this process {row['peak_rss_mib_this_process']:.0f} MiB")
    for worker, by in row.get("rss_by_stage", {}).items():
        if by["peak_mib"] is None:
            continue
        print(f"RSS on {worker}: peak {by['peak_mib']:.0f} MiB; per stage (first / peak / "
              "last MiB, VmHWM by its end): " + "; ".join(
                  f"{st} {v['first_mib']:.0f} / {v['peak_mib']:.0f} / {v['last_mib']:.0f}, "
                  f"{v['hwm_mib']:.0f}"
                  for st, v in by["stages"].items())
              + f"; at the peak: {by['at_peak'] or 'no task'}")
    print(f"{'stage':32s} {'tasks':>6s} {'compute s':>10s} {'transfer s':>10s} "
          f"{'(de)ser. s':>10s}")
    for stage, secs in row["stages"]["seconds"].items():
        ser = secs.get("serialize", 0.0) + secs.get("deserialize", 0.0)
        print(f"{stage:32s} {row['stages']['tasks'][stage]:6d} {secs.get('compute', 0):10.1f} "
              f"{secs.get('transfer', 0):10.2f} {ser:10.2f}")
    print(f"communication: {comm['communication_s']:.2f} s, "
          f"{100 * comm['communication_fraction_of_task_time']:.2f} % of task time; "
          f"this process and idle {comm['idle_or_this_process_s']:.0f} worker-s")
    print(f"\nmodel: c_row {1e3 * m['c_row_s']:.3f} ms/row, selection "
          f"{1e3 * m['c_select_s']:.3f} ms/row, one TSQR combine {m['t_combine_s']:.1f} s, "
          f"R factor {m['r_factor_mib']:.0f} MiB at {m['bytes_per_s'] / 2**20:.0f} MiB/s, "
          f"fixed {m['t_fixed_s']:.0f} s, {1e3 * m['memory_per_row_mib']:.3f} kiB/row")
    print(f"{'rows':>10s} {'workers':>8s} {'time s':>10s} {'reduction':>10s} {'MiB/worker':>11s}")
    for r in m["table"]:
        print(f"{r['rows']:10.0e} {r['workers']:8d} {r['time_s']:10.0f} "
              f"{100 * r['reduction_share']:9.1f}% {r['memory_mib_per_worker']:11.0f}")
    print("doubling the workers saves under 10 % from:",
          m["workers_where_doubling_saves_under_10pct"])
    if "test" in out:
        print("test (50 new frames):", out["test"])


if __name__ == "__main__":
    main()
