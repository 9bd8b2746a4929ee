"""Compressed element channels (``SOAP(species_mixing=d)``, issue 17): speed and accuracy
against the uncompressed SOAP, on real several-species DFT data.

**Speed** (``--part speed``): CPU µs per atom of SOAP values + position gradients, one
thread, codes interleaved (A B C A B C ...), best of ``--repeats`` after one warm-up call:
gapkit uncompressed (dense gradients, and ``compute_compact``: each neighbour's species
blocks only, as featomic writes them), ``species_mixing`` = 1, 2 (and 3 where S > 3), and featomic's
uncompressed ``SoapPowerSpectrum`` with the same settings, on a 128-atom TiAl cell, 50
aspirin frames (rMD17), 20 frames of 3-BPA (C, H, N, O) and the 30 LiCu test cells. Each
code is called twice in a row and both calls are timed: the first follows another code's
call, the second one of its own (as a fit's blocks follow each other), where freed memory
is reused (gapkit keeps the mappings of freed large arrays, featomic's allocator its heap);
both figures and their ratios to featomic's are printed.

**Accuracy** (``--part accuracy``): the same GAP fitted with each descriptor, everything
else equal (SOAP n_max 8, l_max 6, cutoff 5 Å, atom_sigma 0.5, ζ 4, ``--n-sparse`` CUR
points, noise by cross-validation: the default fit), on TiAl (every 5th frame held out),
acetylacetone (300 K MD; test: the 300 K test set's first 200 frames), aspirin (rMD17
split 01, the first 300 training and 300 test frames) and 3-BPA (300 K; every 5th frame
held out): energy MAE (meV/atom), force MAE and RMSE (meV/Å), features, fit CPU seconds
and prediction CPU ms per atom (E + F). LiCu (timed above) is left out here: its random
buildcell cells reach 220 eV/atom and 11,000 eV/Å, so a handful of frames set any mean
error.

Needs ``../shared/datasets`` (missing sets are said and skipped). Results are printed and
written after every row to ``benchmarks/results/species_mixing.json``. The accuracy part
takes tens of minutes here: run it in the background, e.g.

    timeout 5400 prlimit --as=12000000000 python benchmarks/species_mixing.py
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import base_machine_info, load_average, results_so_far  # noqa: E402

from gapkit import GAP, SOAP, SOAPKernel, Term  # noqa: E402
from gapkit.data import get_all_labels, read_extxyz  # noqa: E402

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
RESULTS = HERE / "results" / "species_mixing.json"
SETTINGS = dict(cutoff=5.0, cutoff_width=0.5, n_max=8, l_max=6, atom_sigma=0.5)


def read(rel: str, index=":"):
    """Frames of a shared data set, read and checked by gapkit's own reader."""
    return read_extxyz(SHARED / rel, index)


def every_fifth(frames):
    """(train, test): every 5th frame held out."""
    return ([a for k, a in enumerate(frames) if k % 5],
            [a for k, a in enumerate(frames) if not k % 5])


def datasets(names=None) -> dict:
    """name -> (train, test) of ``names`` (all: None); a set whose files are missing is
    said and skipped."""
    makers = {
        "TiAl": lambda: every_fifth(read("tial_ace_tutorial/TiAl_tutorial.xyz")),
        "acac": lambda: (read("acac/train_300K.xyz"), read("acac/test_MD_300K.xyz", ":200")),
        "aspirin": lambda: (read("rmd17/rmd17_aspirin_train_01.xyz", ":300"),
                            read("rmd17/rmd17_aspirin_test_01.xyz", ":300")),
        "3bpa": lambda: every_fifth(read("3bpa/train_300K.xyz")),
    }
    out = {}
    for name, make in makers.items():
        if names and name not in names:
            continue
        try:
            out[name] = make()
        except FileNotFoundError as err:
            print(f"{name}: skipped ({err})", flush=True)
    return out


def species_of(frames) -> list[int]:
    return sorted({int(z) for a in frames for z in a.numbers})


def variants(n_species: int) -> list:
    """None (uncompressed), then d = 1, 2 and, with more than three species, 3."""
    return [None, 1, 2] + ([3] if n_species > 3 else [])


def label(mixing) -> str:
    return "full" if mixing is None else f"d={mixing}"


# ----------------------------------------------------------------------------- speed
def speed_systems() -> dict:
    systems = {}
    try:
        for atoms in ase.io.iread(SHARED / "tial_ace_tutorial/TiAl_tutorial.xyz"):
            if len(atoms) == 128:
                systems["TiAl 128"] = [atoms]
                break
        systems["aspirin x50"] = read("rmd17/rmd17_aspirin_train_01.xyz", ":50")
        systems["3-BPA x20"] = read("3bpa/train_300K.xyz", ":20")
        systems["LiCu test (30 cells)"] = read("licu_rss_wfl/licu_rss_testing.xyz")
        # cells of 2 atoms: 20 periodic images of every neighbour within the cutoff
        systems["TiAl 2-atom cells (40)"] = read("tial_ace_tutorial/TiAl_tutorial.xyz", ":40")
    except FileNotFoundError as err:
        print(f"speed: a system is missing ({err})", flush=True)
    return systems


def featomic_call(frames):
    try:
        from featomic import SoapPowerSpectrum
    except ImportError:
        return None
    calc = SoapPowerSpectrum(
        cutoff={"radius": SETTINGS["cutoff"],
                "smoothing": {"type": "ShiftedCosine", "width": SETTINGS["cutoff_width"]}},
        density={"type": "Gaussian", "width": SETTINGS["atom_sigma"],
                 "center_atom_weight": 1.0},
        basis={"type": "TensorProduct", "max_angular": SETTINGS["l_max"],
               "radial": {"type": "Gto", "max_radial": SETTINGS["n_max"] - 1}})
    return lambda: calc.compute(frames, gradients=["positions"])


def run_speed(report: dict, repeats: int) -> None:
    rows = report["results"].setdefault("speed", {})
    for name, frames in speed_systems().items():
        n_atoms = sum(len(a) for a in frames)
        species = species_of(frames)
        calls = {}
        for mixing in variants(len(species)):
            soap = SOAP(**SETTINGS, species=species, species_mixing=mixing)
            calls[f"gapkit {label(mixing)}"] = (
                lambda soap=soap, frames=frames: soap.compute(frames, gradients=["positions"]),
                soap.n_features())
            if mixing is None:  # the compact gradients the fit's design passes read
                calls["gapkit compact"] = (
                    lambda soap=soap, frames=frames: soap.compute_compact(frames),
                    soap.n_features())
        fc = featomic_call(frames)
        if fc is not None:
            calls["featomic full"] = (fc, None)
        for fn, _ in calls.values():  # warm-up: splines, caches, lazy imports
            fn()
        # each code twice in a row: the first call follows another code's (its memory
        # is new to it), the second its own (as a fit's blocks follow each other: freed
        # memory is reused, by gapkit's pool of mappings and by featomic's allocator)
        times: dict = {key: {"after another code": [], "after its own": []} for key in calls}
        for _ in range(repeats):
            for key, (fn, _) in calls.items():
                for when in ("after another code", "after its own"):
                    t0 = time.process_time()
                    fn()
                    times[key][when].append(time.process_time() - t0)
        best = {key: {when: min(v) / n_atoms * 1e6 for when, v in by.items()}
                for key, by in times.items()}
        ref = best.get("featomic full")
        rows[name] = {
            "n_atoms": n_atoms, "species": species, "load_average": load_average(),
            "codes": {key: {"us_per_atom": round(best[key]["after another code"], 1),
                            "us_per_atom_after_its_own": round(best[key]["after its own"], 1),
                            "features": calls[key][1],
                            "vs_featomic": None if ref is None else round(
                                best[key]["after another code"] / ref["after another code"], 3),
                            "vs_featomic_after_its_own": None if ref is None else round(
                                best[key]["after its own"] / ref["after its own"], 3)}
                      for key in calls}}
        print(f"\n{name} ({n_atoms} atoms, species {species}), values + position "
              f"gradients, CPU µs/atom, best of {repeats}; a call after another code's "
              "| after one of its own:", flush=True)
        for key, row in rows[name]["codes"].items():
            print(f"  {key:16s} {row['us_per_atom']:9.1f} | {row['us_per_atom_after_its_own']:9.1f}"
                  f"  features {row['features']}  vs featomic {row['vs_featomic']} | "
                  f"{row['vs_featomic_after_its_own']}", flush=True)
        save(report)


# -------------------------------------------------------------------------- accuracy
def errors(model: GAP, test) -> dict:
    t0 = time.process_time()
    pred = model.predict(test, virial=False)
    cpu = time.process_time() - t0
    n = np.array([len(a) for a in test])
    labels = get_all_labels(test, require=("energy", "forces"))
    e_ref = np.array([lab.energy for lab in labels])
    f_ref = np.concatenate([lab.forces for lab in labels])
    de = (pred.energy - e_ref) / n
    df = pred.forces - f_ref
    return {"energy_mae_meV_atom": float(np.mean(np.abs(de)) * 1e3),
            "forces_mae_meV_A": float(np.mean(np.abs(df)) * 1e3),
            "forces_rmse_meV_A": float(np.sqrt(np.mean(df ** 2)) * 1e3),
            "predict_ms_per_atom": cpu / n.sum() * 1e3}


def run_accuracy(report: dict, n_sparse: int, names=None) -> None:
    rows = report["results"].setdefault("accuracy", {})
    for name, (train, test) in datasets(names).items():
        species = species_of(train + test)
        for mixing in variants(len(species)):
            key = f"{name} {label(mixing)}"
            if key in rows:
                print(f"{key}: done before, kept", flush=True)
                continue
            soap = SOAP(**SETTINGS, species=species, species_mixing=mixing)
            model = GAP([Term(soap, SOAPKernel(zeta=4), n_sparse=n_sparse)],
                        use=["energy", "forces"], progress=False)
            t0 = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(train)
            fit_cpu = time.process_time() - t0
            rows[key] = {"dataset": name, "mixing": mixing, "species": species,
                         "features": soap.n_features(), "n_train": len(train),
                         "n_test": len(test), "fit_cpu_s": round(fit_cpu, 1),
                         **{k: round(v, 3) for k, v in errors(model, test).items()},
                         "load_average": load_average()}
            r = rows[key]
            print(f"{key:14s} features {r['features']:5d}  E {r['energy_mae_meV_atom']:7.2f} "
                  f"meV/atom  F MAE {r['forces_mae_meV_A']:7.1f} RMSE "
                  f"{r['forces_rmse_meV_A']:7.1f} meV/A  fit {r['fit_cpu_s']:7.1f} CPU-s  "
                  f"predict {r['predict_ms_per_atom']:.2f} ms/atom", flush=True)
            save(report)


def save(report: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["speed", "accuracy", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-sparse", type=int, default=500)
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="accuracy on these sets only (TiAl acac aspirin 3bpa)")
    parser.add_argument("--fresh", action="store_true",
                        help="start a new results file (default: keep finished rows)")
    args = parser.parse_args(argv)
    report = ({"machine": base_machine_info(), "results": {}} if args.fresh
              else results_so_far(RESULTS))
    report["settings"] = {**SETTINGS, "zeta": 4, "n_sparse": args.n_sparse}
    if args.part in ("speed", "all"):
        report["results"].pop("speed", None)  # timings are of this run only
        run_speed(report, args.repeats)
    if args.part in ("accuracy", "all"):
        run_accuracy(report, args.n_sparse, args.datasets)
    return report


if __name__ == "__main__":
    main()
