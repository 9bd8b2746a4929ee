"""A fit with a large sparse set: CPU, peak memory and where the time goes (issue 25).

rMD17 (``../shared/datasets/rmd17``, split 01): the first ``--train`` training frames
(1,000), the first ``--test`` test frames (500); SOAP cutoff 5, n_max 8, l_max 6,
atom_sigma ``--atom-sigma`` (0.3, as the GAP authors advise with hydrogen), zeta 4,
``--m`` CUR sparse points in all (shared equally over the species), the noise chosen by
cross-validation and the predictive variance calibrated: ``GAP(terms).fit``, the default
path. One thread. Printed and written to ``benchmarks/results/large_m.json``: fit CPU-s,
peak RSS (``ru_maxrss``, the whole process), CPU-s and peak RSS per stage, test E MAE (meV per
molecule), F MAE (meV/Å) and the force calibration area. Target (issue 25): aspirin at
M 8,000 in <= 15 CPU-minutes and <= 8 GB. Run in the background, e.g.

    timeout 3000 prlimit --as=12000000000 python benchmarks/large_m.py --data aspirin --m 8000
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from _common import results_so_far  # noqa: E402
from accuracy import PUBLISHED, SHARED, score  # noqa: E402

import gapkit.gp.cv  # noqa: E402
import gapkit.model  # noqa: E402
from gapkit import GAP, Term  # noqa: E402
from gapkit.data import read_extxyz  # noqa: E402
from gapkit.descriptors import SOAP  # noqa: E402
from gapkit.kernels import SOAPKernel  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "large_m.json"
#: the functions timed, by the module whose name the fit calls them through
STAGES = {gapkit.model: ("term_sparse_set", "solve_dtc"),
          gapkit.gp.cv: ("fold_grams", "grid_alphas", "held_out_errors", "full_solution",
                         "calibrate_predictive")}


class RSSWatch(threading.Thread):
    """Samples the resident memory every ``interval`` s (``/proc/self/statm``; Linux) and
    keeps the largest seen while each stage runs (``peaks``, GB; "other" outside them)."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.stage, self.peaks = interval, ["other"], {}
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss_gb(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page / 2**30

    def run(self) -> None:
        while True:
            self.note()
            time.sleep(self.interval)

    def note(self) -> None:
        name = self.stage[-1]
        self.peaks[name] = max(self.peaks.get(name, 0.0), self.rss_gb())


def _timer(stages: dict, name: str, func, watch: RSSWatch | None):
    def wrapper(*a, **kw):
        cpu = time.process_time()
        if watch is not None:
            watch.stage.append(name)
        try:
            return func(*a, **kw)
        finally:
            if watch is not None:
                watch.note()
                watch.stage.pop()
            stages[name] = stages.get(name, 0.0) + time.process_time() - cpu
    return wrapper


def timed(stages: dict, watch: RSSWatch | None = None):
    """Wrap the :data:`STAGES` functions so that their CPU-s add up in ``stages`` (and
    ``watch`` knows which one runs)."""
    for module, names in STAGES.items():
        for name in names:
            setattr(module, name, _timer(stages, name, getattr(module, name), watch))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="aspirin")
    ap.add_argument("--m", type=int, default=8000)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--atom-sigma", type=float, default=0.3)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = SHARED / "rmd17" / f"rmd17_{args.data}_train_01.xyz"
    if not path.exists():
        print(f"{path} not found: needs ../shared/datasets")
        return
    train = read_extxyz(path)[:args.train]
    test = read_extxyz(SHARED / "rmd17" / f"rmd17_{args.data}_test_01.xyz")[:args.test]
    stages: dict = {}
    watch = RSSWatch() if Path("/proc/self/statm").exists() else None
    timed(stages, watch)
    if watch is not None:
        watch.start()
    term = Term(SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6,
                     atom_sigma=args.atom_sigma), SOAPKernel(zeta=4), n_sparse=args.m,
                sparse_method="cur")
    cpu, wall = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = GAP([term], progress=False, random_state=0).fit(train)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    row = score(model, test, f"m{args.m}")
    rss = {} if watch is None else {k: round(v, 2) for k, v in watch.peaks.items()}
    row.update(fit_cpu_s=cpu, fit_wall_s=wall, peak_rss_gb=peak_gb, stages_cpu_s=stages,
               stages_peak_rss_gb=rss,
               n_sparse=model.fit_info_["n_sparse"], train=len(train), test=len(test),
               atom_sigma=args.atom_sigma, noise_factors=model.fit_info_["noise_cv"]["factors"],
               published_gap=PUBLISHED.get(args.data),
               warnings=sorted({str(w.message)[:160] for w in caught}))
    print(f"{args.data} M {args.m}: fit {cpu:.0f} CPU-s ({wall:.0f} s wall), peak RSS "
          f"{peak_gb:.2f} GB; E {row['energy_mae_mev_per_frame']:.2f} meV, F "
          f"{1e3 * row['forces_mae']:.1f} meV/Å, area {row['forces_area_all']:.3f}")
    print("  stages (CPU-s): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    if rss:
        print("  peak RSS while each ran (GB): "
              + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))
    out = results_so_far(args.output)
    out["results"][f"{args.data}_m{args.m}_train{len(train)}"] = row
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
