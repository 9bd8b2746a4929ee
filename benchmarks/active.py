"""Pool-based active learning on Zuo Si or EMT Cu: learning curves of four selection rules.

``--system Si`` (default): ``Si_train`` (214 frames, bundled) is the pool, its labels
revealed only on selection, ``Si_test`` the fixed test set. ``--system Cu``: 190 EMT frames
(``cu_frames``: MD at 300/900/1500 K, vacancies, strained cells, a slab) and 25 more drawn
the same way as the test set. The model and budget are those of ``benchmarks/uq.py`` (SOAP
n_max 6, l_max 4, 200 CUR points, fixed noise; 8 random initial frames, batches of 8, 48
labels; ``--batch-size`` sets the labels per round; ``--n-sparse`` and ``--noise cv``
change the model, ``--explore`` draws that share of every batch at random, ``--sparse-from
pool`` chooses every refit's sparse points from the whole pool's environments, each for
every rule alike; ``--target half`` gives the integrated
rule every other test frame, unlabelled, as the structures to be accurate on, and scores
every rule on the other half). Rules, each with the same initial sets and seeds:

- ``random``: the baseline;
- ``forces``: the largest predicted force variance (exact form), damped for near-duplicates
  in a batch (gapkit's rule before ``coverage``);
- ``coverage``: the predicted variance a frame covers in the pool (``select_coverage``);
- ``integrated``: the force variance a frame's labels remove from the pool
  (``active.PoolDesign``).

Issue 15's target: the new rule reaches random's final force MAE with at most half of its
labels and is never worse than random. ``--subsets K``: how far any choice of that many
labels gets, K random label sets of half the budget per seed (each with the seed's initial
frames), fitted and tested like the rules: how rare a set of that size is that reaches a
given error (not a bound: a rule may find a rarer one). Prints, per rule, the force MAE at
every budget (mean and range over the seeds) and the labels needed to reach random's final
mean error; writes ``benchmarks/results/active.json`` (``active_Cu.json``) after every run.
One thread, about 6 CPU-minutes for three seeds.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
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
from uq import AL, SETTINGS, build_model  # noqa: E402

from gapkit.active import active_learning, labels_to_reach  # noqa: E402
from gapkit.data import load_bundled  # noqa: E402

RESULTS = HERE / "results" / "active.json"
#: Cu pool/test mix (frames per kind): MD at three temperatures, vacancies, strained
#: cells, a surface slab; the test set is drawn the same way with other seeds
CU_MIX = {"md300": 30, "md900": 30, "md1500": 30, "vacancy": 40, "elastic": 40,
          "surface": 20}


def cu_frames(seed: int, share: float = 1.0) -> list:
    """EMT-labelled Cu frames drawn as ``CU_MIX`` says (``share`` of each count): Langevin
    snapshots of 32-atom fcc cells at 300/900/1500 K and of 31-atom vacancy cells at 600 K,
    cells strained by up to 4 % and rattled by 0.01 Å, and a 4-layer (100) slab at 600 K."""
    from ase import units
    from ase.build import bulk, fcc100
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    from gapkit.testing import label

    rng = np.random.default_rng(seed)

    def snapshots(atoms, temperature, n, tag):
        atoms = atoms.copy()
        atoms.calc = EMT()
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        md = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.05, fixcm=False,
                      rng=np.random.default_rng(int(rng.integers(1 << 30))))
        md.run(100)
        out = []
        for _ in range(n):
            md.run(20)
            frame = atoms.copy()
            frame.info["config_type"] = tag
            out.append(frame)
        return out

    cube = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    vacancy = cube.copy()
    del vacancy[0]
    slab = fcc100("Cu", size=(2, 2, 4), vacuum=6.0)
    slab.pbc = True
    count = {k: max(1, round(v * share)) for k, v in CU_MIX.items()}
    frames = []
    for t in (300, 900, 1500):
        frames += snapshots(cube, t, count[f"md{t}"], f"MD{t}")
    frames += snapshots(vacancy, 600, count["vacancy"], "Vacancy")
    frames += snapshots(slab, 600, count["surface"], "Surface")
    for _ in range(count["elastic"]):
        frame = cube.copy()
        eps = rng.uniform(-0.04, 0.04, size=(3, 3))
        frame.set_cell(frame.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        frame.rattle(0.01, seed=int(rng.integers(1 << 30)))
        frame.info["config_type"] = "Elastic"
        frames.append(frame)
    return [label(a, EMT()) for a in frames]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", nargs="+", default=["random", "forces", "coverage", "integrated"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--system", choices=["Si", "Cu"], default="Si",
                    help="Si: the Zuo pool (Si_train/Si_test); Cu: EMT frames (cu_frames)")
    ap.add_argument("--output", type=Path, default=None,
                    help="default results/active.json (Si) or active_Cu.json")
    ap.add_argument("--subsets", type=int, default=0,
                    help="K random label sets of half the budget per seed: their force MAE")
    ap.add_argument("--noise", choices=["fixed", "cv"], default="fixed",
                    help="fixed: uq.py's NoiseModel; cv: GAP's default, the noise chosen by "
                         "cross-validation at every refit (all rules alike)")
    ap.add_argument("--n-sparse", type=int, default=SETTINGS["n_sparse"])
    ap.add_argument("--target", choices=["pool", "half"], default="pool",
                    help="integrated rule's target: the pool, or (half) every other test "
                         "frame unlabelled, the curves then scored on the other half")
    ap.add_argument("--sparse-from", choices=["labelled", "pool"], default="labelled",
                    help="the sparse points of every refit: from the labelled frames "
                         "(GAP's fit) or from the whole pool's environments (no labels "
                         "needed; the same points at every refit), for every rule alike")
    ap.add_argument("--batch-size", type=int, default=AL["batch_size"],
                    help="labels per round, every rule alike (default 8; smaller: more "
                         "refits, each choice made with more labels seen)")
    ap.add_argument("--explore", type=float, default=0.0,
                    help="share of each batch drawn at random before the rule picks the "
                         "rest (active_learning's explore=)")
    args = ap.parse_args()
    settings = {**SETTINGS, "n_sparse": args.n_sparse}

    def model():
        gap = build_model(settings)
        if args.noise == "cv":
            gap.noise = None
        return gap

    torch.set_num_threads(1)
    if args.system == "Si":
        pool, test = load_bundled("Si_train.xyz"), load_bundled("Si_test.xyz")
        names = ("Si_train (214 frames)", "Si_test")
    else:
        pool, test = cu_frames(0), cu_frames(1, share=25 / sum(CU_MIX.values()))
        names = (f"EMT Cu, {len(pool)} frames {CU_MIX}", f"EMT Cu, {len(test)} frames")
    target_frames = None
    if args.target == "half":  # the structures one means to simulate, unlabelled; scored on
        target_frames, test = test[::2], test[1::2]  # the other half, for every rule alike
        names = (names[0], f"{names[1]}, odd frames (the even ones: the target)")
    if args.sparse_from == "pool":
        sparse_from_pool(pool)
    args.output = args.output or RESULTS.with_name(
        "active.json" if args.system == "Si" else f"active_{args.system}.json")
    out = {"machine": base_machine_info(), "settings": settings, "noise": args.noise,
           "explore": args.explore, "target": args.target, "sparse_from": args.sparse_from,
           "budget": {**AL, "batch_size": args.batch_size},
           "pool": names[0], "test": names[1], "runs": {}}
    curves: dict[str, list] = {}
    for seed in args.seeds:
        for rule in args.rules:
            cpu = time.process_time()
            curve = active_learning(model(), pool, None, test=test,
                                    strategy=rule, seed=seed, n_initial=AL["n_initial"],
                                    batch_size=args.batch_size, max_labels=AL["max_labels"],
                                    diversity=AL["diversity"], explore=args.explore,
                                    target=target_frames if rule == "integrated" else None)
            curves.setdefault(rule, []).append(curve)
            out["runs"].setdefault(rule, []).append(
                {**curve.to_dict(), "cpu_s": time.process_time() - cpu})
            print(f"{rule:9s} seed {seed}: " + " ".join(f"{x:.4f}" for x in curve.force_mae),
                  flush=True)
            args.output.parent.mkdir(exist_ok=True)
            args.output.write_text(json.dumps(out, indent=1))
    n = curves[args.rules[0]][0].n_labelled.tolist()
    target = (float(np.mean([c.force_mae[-1] for c in curves["random"]]))
              if "random" in curves else None)
    print(f"\nforce MAE (eV/Å) on the test set ({names[1]}) by labels, mean [min, max] over "
          f"seeds {args.seeds}")
    print("rule     " + "".join(f"{k:>22d}" for k in n) + "   labels to random's final")
    summary = {}
    for rule, cs in curves.items():
        mae = np.array([c.force_mae for c in cs])
        need = None if target is None else [labels_to_reach(c, target) for c in cs]
        summary[rule] = {"mean": mae.mean(0).tolist(), "min": mae.min(0).tolist(),
                         "max": mae.max(0).tolist(), "labels_to_random_final": need}
        print(f"{rule:9s}" + "".join(f"{m:8.4f} [{a:.4f},{b:.4f}]"
                                     for m, a, b in zip(mae.mean(0), mae.min(0), mae.max(0)))
              + f"   {need}")
    out["summary"] = {"random_final_mean": target, **summary}
    args.output.write_text(json.dumps(out, indent=1))
    if args.subsets:
        out["subsets"] = random_subsets(pool, test, args.seeds, args.subsets,
                                        AL["max_labels"] // 2, model)
        args.output.write_text(json.dumps(out, indent=1))


def sparse_from_pool(pool) -> None:
    """Make every fit of this process choose its sparse points from ``pool``'s environments
    instead of its training frames (exploratory: the fit's own sparse-set function wrapped;
    one set per term and seed, reused)."""
    import gapkit.model

    choose, chosen = gapkit.model.term_sparse_set, {}

    def from_pool(term, frames, random_state):
        key = (repr(term.descriptor), random_state)
        if key not in chosen:
            chosen[key] = choose(term, pool, random_state)
        return chosen[key]

    gapkit.model.term_sparse_set = from_pool


def random_subsets(pool, test, seeds, tries: int, n_labels: int, make_model) -> dict:
    """Force MAE on ``test`` of ``tries`` random label sets of ``n_labels`` frames per seed,
    each holding the seed's initial frames (drawn as ``active_learning`` draws them) and
    fitted with the seed's sparse-point seed: the spread of what that many labels give."""
    from gapkit.data import get_all_labels

    ref = np.concatenate([lab.forces for lab in get_all_labels(test)])
    print(f"\n{tries} random sets of {n_labels} labels per seed, force MAE (eV/Å)")
    out = {}
    for seed in seeds:
        first = sorted(np.random.default_rng(seed).choice(
            len(pool), size=AL["n_initial"], replace=False).tolist())
        rest = [i for i in range(len(pool)) if i not in first]
        rng = np.random.default_rng([seed, 2])
        maes = []
        for _ in range(tries):
            extra = rng.choice(rest, size=n_labels - len(first), replace=False).tolist()
            model = make_model()
            model.random_state = seed
            model.fit([pool[i] for i in first + extra])
            pred = model.predict(test, return_variance=False)
            maes.append(float(np.abs(pred.forces - ref).mean()))
        q = np.quantile(maes, [0.0, 0.1, 0.5, 1.0])
        out[str(seed)] = {"n_labels": n_labels, "force_mae": maes, "min": q[0], "p10": q[1],
                          "median": q[2], "max": q[3]}
        print(f"seed {seed}: min {q[0]:.4f}  10 % {q[1]:.4f}  median {q[2]:.4f}  "
              f"max {q[3]:.4f}", flush=True)
    return out


if __name__ == "__main__":
    main()
