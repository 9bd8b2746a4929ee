"""Single-thread timing of gapkit's SOAP against featomic, DScribe and QUIP (quippy).

For every test system and every code that can be imported, this measures the CPU
time of

(a) descriptor values only,
(b) values + gradients with respect to atomic positions,
(c) values + position gradients + strain (cell) gradients, where the code has them,

and reports microseconds per atom. The timing protocol is one untimed warm-up call
(splines, caches, lazy imports), then ``--repeats`` timed calls with
``time.process_time``; the best and the median are reported. Everything runs on a
single thread (the thread environment variables are set before numpy, torch or any
of the compared libraries is imported).

As a check that the codes are set up alike, the normalised ζ=1 kernel (the matrix of
dot products of unit-length power spectra) of gapkit and featomic are compared on
every system both codes ran on: the two use the same radial basis, cutoff function
and density, so the kernels agree to rounding.

Run ``.venv/bin/python benchmarks/soap.py`` (or ``make bench``, which first installs the
``bench`` extra); ``--help`` lists the options. The table is printed and the results
are written to ``benchmarks/results/soap.json``.
"""

from __future__ import annotations

import argparse
import os
import sys

# Single thread everywhere. These must be set before numpy/torch/featomic are
# imported: BLAS and OpenMP read them once at load time, and featomic's rayon pool
# reads RAYON_NUM_THREADS when it is first used.
from _common import REPO, THREAD_VARIABLES, base_machine_info, load_average, silicon
for _name in THREAD_VARIABLES:
    os.environ[_name] = "1"

import importlib.metadata
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

import ase
import ase.build
import ase.io

if str(REPO) not in sys.path:  # run from a checkout without installing gapkit
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "soap.json"
DEFAULT_MOLECULE = Path("/work/shared/datasets/rmd17/rmd17_aspirin_train_01.xyz")
DEFAULT_SEVERAL_SPECIES = Path("/work/shared/datasets/tial_ace_tutorial/TiAl_tutorial.xyz")

# The descriptor settings shared by all codes.
CUTOFF = 5.0          # Å
CUTOFF_WIDTH = 0.5    # Å, width of the smooth cutoff region below CUTOFF
N_MAX = 8             # radial functions (featomic: max_radial = N_MAX - 1)
L_MAX = 6
ATOM_SIGMA = 0.5      # Å, Gaussian width of each neighbour
CENTRAL_WEIGHT = 1.0

TASKS = ("values", "positions", "strain")
TASK_TITLES = {"values": "(a) values", "positions": "(b) +positions",
               "strain": "(c) +pos+strain"}
CODES = ("gapkit", "featomic", "dscribe", "quip")


# --------------------------------------------------------------------------- systems
def molecule(path: Path | None) -> tuple[str, ase.Atoms]:
    """First frame of ``path`` (aspirin from rMD17 by default), else acetamide from ASE."""
    if path is not None and path.is_file():
        atoms = ase.io.read(path, index=0)
        name = atoms.info.get("config_type", path.stem).removeprefix("rmd17_")
    else:
        atoms = ase.build.molecule("CH3CONH2")
        name = "acetamide"
    atoms.pbc = False
    return f"{name} ({atoms.get_chemical_formula()})", atoms


def several_species(path: Path) -> list[tuple[str, ase.Atoms]]:
    """The first 128-atom periodic cell of the TiAl set in ``../shared`` (two species), if
    it is there: every real chemistry has several species (issue 17)."""
    if not path.is_file():
        return []
    for atoms in ase.io.iread(path):
        if len(atoms) == 128 and atoms.pbc.all():
            return [(f"TiAl ({atoms.get_chemical_formula()})", atoms)]
    return []


# --------------------------------------------------------------------------- codes
@dataclass
class Code:
    """One descriptor implementation: a callable per task for a given system."""

    name: str
    version: str | None
    settings: str
    prepare: Callable[[ase.Atoms], dict] | None  # system -> {task: (callable, note)}
    note: str = ""  # why the code is unavailable, when prepare is None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _unavailable(name: str, dist: str, error: Exception) -> Code:
    return Code(name, _version(dist), "", None,
                note=f"not importable ({type(error).__name__}: {error})".splitlines()[0])


def gapkit_code() -> Code:
    try:
        from gapkit.descriptors import SOAP
    except Exception as error:  # noqa: BLE001 - any failure means "skip this code"
        return _unavailable("gapkit", "gapkit", error)

    settings = (f"SOAP(cutoff={CUTOFF}, cutoff_width={CUTOFF_WIDTH}, n_max={N_MAX}, "
                f"l_max={L_MAX}, atom_sigma={ATOM_SIGMA}, central_weight={CENTRAL_WEIGHT}, "
                "normalize=True)")

    def prepare(atoms):
        soap = SOAP(cutoff=CUTOFF, cutoff_width=CUTOFF_WIDTH, n_max=N_MAX, l_max=L_MAX,
                    atom_sigma=ATOM_SIGMA, central_weight=CENTRAL_WEIGHT, normalize=True)
        return {
            "values": (lambda: soap.compute([atoms]), ""),
            "positions": (lambda: soap.compute([atoms], gradients=["positions"]), ""),
            "strain": (lambda: soap.compute([atoms], gradients=["positions", "strain"]), ""),
        }

    return Code("gapkit", _version("gapkit") or "checkout", settings, prepare)


def featomic_code() -> Code:
    try:
        from featomic import SoapPowerSpectrum
    except Exception as error:  # noqa: BLE001
        return _unavailable("featomic", "featomic", error)

    hypers = {
        "cutoff": {"radius": CUTOFF,
                   "smoothing": {"type": "ShiftedCosine", "width": CUTOFF_WIDTH}},
        "density": {"type": "Gaussian", "width": ATOM_SIGMA,
                    "center_atom_weight": CENTRAL_WEIGHT},
        "basis": {"type": "TensorProduct", "max_angular": L_MAX,
                  "radial": {"type": "Gto", "max_radial": N_MAX - 1}},
    }
    calculator = SoapPowerSpectrum(**hypers)

    def prepare(atoms):
        tasks = {
            "values": (lambda: calculator.compute(atoms), ""),
            "positions": (lambda: calculator.compute(atoms, gradients=["positions"]), ""),
        }
        if atoms.pbc.all():
            tasks["strain"] = (
                lambda: calculator.compute(atoms, gradients=["positions", "strain"]), "")
        else:
            tasks["strain"] = (None, "featomic: strain needs a periodic cell")
        return tasks

    return Code("featomic", _version("featomic"),
                f"SoapPowerSpectrum({json.dumps(hypers)}), not normalised", prepare)


def dscribe_code(max_dense_gib: float) -> Code:
    try:
        from dscribe.descriptors import SOAP
    except Exception as error:  # noqa: BLE001
        return _unavailable("dscribe", "dscribe", error)

    def prepare(atoms):
        periodic = bool(atoms.pbc.any())
        soap = SOAP(species=sorted(set(atoms.get_chemical_symbols())), r_cut=CUTOFF,
                    n_max=N_MAX, l_max=L_MAX, sigma=ATOM_SIGMA, rbf="gto", periodic=periodic)
        # "auto" picks the analytical derivatives where DScribe has them (GTO basis,
        # no weighting, non-periodic) and falls back to finite differences otherwise.
        method = soap.validate_derivatives_method("auto", attach=False)
        tasks = {"values": (lambda: soap.create(atoms), ""),
                 "strain": (None, "dscribe: no strain derivatives")}
        # derivatives() returns a dense (centres, atoms, 3, features) float64 array.
        dense_gib = len(atoms) ** 2 * 3 * soap.get_number_of_features() * 8 / 2**30
        if dense_gib > max_dense_gib:
            note = (f"dscribe: dense derivative array would take {dense_gib:.1f} GiB "
                    "(> --max-dense-gib)")
            tasks["positions"] = (None, note)
        else:
            tasks["positions"] = (
                lambda: soap.derivatives(atoms, method=method, n_jobs=1),
                f"dscribe derivatives: {method}")
        return tasks

    settings = (f"SOAP(r_cut={CUTOFF}, n_max={N_MAX}, l_max={L_MAX}, sigma={ATOM_SIGMA}, "
                "rbf='gto'), no smooth cutoff, not normalised; derivatives(method='auto')")
    return Code("dscribe", _version("dscribe"), settings, prepare)


def quip_code() -> Code:
    try:
        from quippy.descriptors import Descriptor
    except Exception as error:  # noqa: BLE001
        return _unavailable("quip", "quippy-ase", error)

    def descriptor_string(atoms):
        species = sorted(set(atoms.numbers.tolist()))
        return (f"soap cutoff={CUTOFF} cutoff_transition_width={CUTOFF_WIDTH} n_max={N_MAX} "
                f"l_max={L_MAX} atom_sigma={ATOM_SIGMA} central_weight={CENTRAL_WEIGHT} "
                f"n_species={len(species)} species_Z={{{' '.join(map(str, species))}}}")

    def prepare(atoms):
        descriptor = Descriptor(descriptor_string(atoms))
        return {"values": (lambda: descriptor.calc(atoms), ""),
                "positions": (lambda: descriptor.calc(atoms, grad=True), ""),
                "strain": (None, "quip: no strain gradients from Descriptor.calc")}

    settings = (f"quippy Descriptor('soap cutoff={CUTOFF} cutoff_transition_width="
                f"{CUTOFF_WIDTH} n_max={N_MAX} l_max={L_MAX} atom_sigma={ATOM_SIGMA} "
                f"central_weight={CENTRAL_WEIGHT} ...'), normalised (QUIP default)")
    return Code("quip", _version("quippy-ase"), settings, prepare)


# --------------------------------------------------------------------------- timing
def time_call(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """One warm-up call, then ``repeats`` calls timed by CPU time (``time.process_time``:
    one thread, so it is the wall time on an idle machine and robust to load); returns the
    times and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return times, result


# --------------------------------------------------------------------------- kernel check
def featomic_unit_features(tensor, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom unit-length power spectra from a featomic TensorMap, and the centre species.

    Each (center_type, neighbour pair) block fills its own columns, so rows of
    different centre species are block-orthogonal, which does not matter because
    only kernels between centres of the same species are compared.
    """
    blocks = []
    species = np.zeros(n_atoms, dtype=np.int64)
    for key, block in tensor.items():
        atom = block.samples.column("atom")
        dense = np.zeros((n_atoms, block.values.shape[1]))
        dense[atom] = block.values
        species[atom] = key["center_type"]
        blocks.append(dense)
    features = np.concatenate(blocks, axis=1)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0), species


def kernel_difference(gapkit_result, featomic_tensor) -> float:
    """max |K_gapkit - K_featomic| of the ζ=1 kernel over same-species centre pairs."""
    q_gapkit = gapkit_result.values
    q_featomic, species = featomic_unit_features(featomic_tensor, q_gapkit.shape[0])
    if not np.array_equal(species, gapkit_result.centre_species):
        raise RuntimeError("gapkit and featomic disagree on the centre species")
    same = species[:, None] == species[None, :]
    k_gapkit = q_gapkit @ q_gapkit.T
    k_featomic = q_featomic @ q_featomic.T
    return float(np.max(np.abs(k_gapkit - k_featomic)[same]))


# --------------------------------------------------------------------------- reporting
def machine_info() -> dict:
    return {
        **base_machine_info(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "ase": ase.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def fmt_time(entry: dict | None) -> str:
    if entry is None or entry.get("best_us_per_atom") is None:
        return "-"
    return f"{entry['best_us_per_atom']:.0f} ({entry['median_us_per_atom']:.0f})"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_tables(report: dict) -> None:
    rows = report["results"]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    codes = [c for c in CODES if any(r["code"] == c for r in rows)]

    def find(system, code, task):
        for r in rows:
            if (r["system"], r["code"], r["task"]) == (system, code, task):
                return r
        return None

    print("\nµs/atom, single thread: best (median) of "
          f"{report['settings']['repeats']} calls after a warm-up\n")
    header = (f"{'system':<22}{'atoms':>6}  {'code':<9}"
              + "".join(f"{TASK_TITLES[t]:>17}" for t in TASKS) + "  notes")
    print(header)
    print("-" * len(header))
    for system in systems:
        first = True
        for code in codes:
            entries = [find(system, code, t) for t in TASKS]
            n_atoms = next(e["n_atoms"] for e in entries if e is not None)
            notes = "; ".join(dict.fromkeys(e["note"] for e in entries if e and e["note"]))
            label = system if first else ""
            atoms = str(n_atoms) if first else ""
            print(f"{label:<22}{atoms:>6}  {code:<9}"
                  + "".join(f"{fmt_time(e):>17}" for e in entries) + f"  {notes}")
            first = False

    others = [c for c in codes if c != "gapkit"]
    if "gapkit" in codes and others:
        print("\nTime ratios, other code / gapkit (best times; > 1 means gapkit is faster)\n")
        header = f"{'system':<22}" + "".join(
            f"{c + t:>13}" for c in others for t in ("(a)", "(b)", "(c)"))
        print(header + "   kernel max|Δ| vs featomic")
        print("-" * (len(header) + 28))
        for system in systems:
            ratios = report["ratios"].get(system, {})
            cells = "".join(f"{fmt_ratio(ratios.get(c, {}).get(t)):>13}"
                            for c in others for t in TASKS)
            check = report["kernel_check"].get(system)
            check_text = "-" if check is None else f"{check:.1e}"
            print(f"{system:<22}{cells}   {check_text}")
        print("\n(a) values, (b) values + position gradients, "
              "(c) values + position and strain gradients")

    print("\nSettings:")
    for code in report["codes"]:
        text = code["settings"] or code["note"]
        print(f"  {code['name']} {code['version'] or ''}: {text}")


# --------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement, after one warm-up call "
                             "(default 5, or 2 with --quick)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="atom counts of the diamond-Si supercells, 8 k^3 "
                             "(default 64 216 1000, or 64 with --quick)")
    parser.add_argument("--molecule", type=Path, default=DEFAULT_MOLECULE,
                        help="extxyz file whose first frame is the molecule "
                             "(acetamide from ase.build when missing)")
    parser.add_argument("--no-molecule", action="store_true", help="skip the molecule")
    parser.add_argument("--codes", nargs="+", choices=CODES, default=list(CODES),
                        help="codes to time (gapkit is the reference of the ratios)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: Si 64 and the molecule only, 2 repeats "
                             "(explicit --sizes/--repeats take precedence)")
    parser.add_argument("--max-dense-gib", type=float, default=2.0,
                        help="skip DScribe derivatives whose dense output exceeds this size")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON output file")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [64] if args.quick else [64, 216, 1000]
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = machine_info()
    load_before = load_average()
    if load_before is not None and load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run; other processes "
              "may slow the timings down", flush=True)

    systems = [(f"Si{n} (diamond)", silicon(n)) for n in args.sizes]
    if not args.no_molecule:
        systems.append(molecule(args.molecule))
    if not args.no_molecule:
        systems += several_species(DEFAULT_SEVERAL_SPECIES)

    factories = {"gapkit": gapkit_code, "featomic": featomic_code,
                 "dscribe": lambda: dscribe_code(args.max_dense_gib), "quip": quip_code}
    codes = [factories[name]() for name in args.codes]

    results, ratios, kernel_check = [], {}, {}
    for system, atoms in systems:
        n_atoms = len(atoms)
        print(f"== {system}: {n_atoms} atoms", flush=True)
        last = {}
        for code in codes:
            tasks = code.prepare(atoms) if code.prepare is not None else {}
            for task in TASKS:
                fn, note = tasks.get(task, (None, code.note))
                entry = {"system": system, "n_atoms": n_atoms, "code": code.name,
                         "task": task, "note": note, "times_s": None,
                         "best_us_per_atom": None, "median_us_per_atom": None}
                if fn is not None:
                    try:
                        times, result = time_call(fn, args.repeats)
                    except Exception as error:  # noqa: BLE001 - report the failure, go on
                        entry["note"] = f"failed: {type(error).__name__}: {error}".splitlines()[0]
                    else:
                        entry.update(times_s=times,
                                     best_us_per_atom=min(times) / n_atoms * 1e6,
                                     median_us_per_atom=statistics.median(times) / n_atoms * 1e6)
                        if task == "values":
                            last[code.name] = result
                results.append(entry)
                print(f"   {code.name:<9} {task:<10} {fmt_time(entry):>14} µs/atom"
                      f"  {entry['note']}",
                      flush=True)

        reference = {e["task"]: e["best_us_per_atom"] for e in results
                     if e["system"] == system and e["code"] == "gapkit"}
        for e in results:
            if e["system"] == system and e["code"] != "gapkit":
                base = reference.get(e["task"])
                value = (e["best_us_per_atom"] / base
                         if base and e["best_us_per_atom"] is not None else None)
                ratios.setdefault(system, {}).setdefault(e["code"], {})[e["task"]] = value

        if "gapkit" in last and "featomic" in last:
            kernel_check[system] = kernel_difference(last["gapkit"], last["featomic"])

    report = {
        "machine": {**machine, "load_average_before": load_before,
                    "load_average_after": load_average()},
        "settings": {"cutoff": CUTOFF, "cutoff_width": CUTOFF_WIDTH, "n_max": N_MAX,
                     "l_max": L_MAX, "atom_sigma": ATOM_SIGMA,
                     "central_weight": CENTRAL_WEIGHT, "repeats": args.repeats,
                     "warmup_calls": 1, "timer": "time.process_time", "threads": 1,
                     "systems": {name: {"n_atoms": len(a), "formula": a.get_chemical_formula(),
                                        "periodic": bool(a.pbc.any())}
                                 for name, a in systems}},
        "codes": [{"name": c.name, "version": c.version, "settings": c.settings,
                   "note": c.note} for c in codes],
        "results": results,
        "ratios": ratios,
        "kernel_check": kernel_check,
    }
    print_tables(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.output}")
    return report


if __name__ == "__main__":
    main()
