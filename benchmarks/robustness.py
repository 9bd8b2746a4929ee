"""Hostile-user robustness table (issue 16): bad training data, hostile model files, the
command line, and robustness (threads, seeds, far-out frames), each case classified as

* ``ok``      — a clear error (the expected exception type, exit status 2 for the CLI, and a
  message that names the culprit and the fix) or a correct result;
* ``unclear`` — an error, but of another type or one whose message lacks what it must say;
* ``silent``  — no error and no warning where one was due, or a wrong number;
* ``crash``   — MemoryError, RecursionError, a traceback from the CLI (exit status 1);
* ``loss``    — a file the user had was changed or deleted, or debris was left behind.

Target: zero in every column but ``ok``. Prints the table (per category) and each case that
is not ``ok``; writes ``benchmarks/results/robustness.json``. About a minute on one core::

    python benchmarks/robustness.py [--verbose]

The hostile model files come from :mod:`gapkit.testing.hostile` (the loader's tests use the
same generator); everything else is built here, in a temporary folder.
"""

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402

from gapkit import GAP, SOAP, GAPCalculator, NoiseModel, SOAPKernel, Term  # noqa: E402
from gapkit.cli import main as cli  # noqa: E402
from ase.io import write as ase_write  # noqa: E402

from gapkit.data import load_bundled  # noqa: E402
from gapkit.testing.hostile import MODEL_FILE_DAMAGE, damage_model_file  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "robustness.json"
OUTCOMES = ("ok", "unclear", "silent", "crash", "loss")
CATEGORIES = ("bad training data", "model files", "CLI", "robustness")
NOISE = NoiseModel(energy=0.003, forces=0.05, virial=0.05)
ERRORS = (ValueError, TypeError, OSError)  # what gapkit promises for bad input


def small_terms(cutoff: float = 4.0) -> list[Term]:
    soap = SOAP(cutoff=cutoff, cutoff_width=1.0, n_max=3, l_max=2, atom_sigma=0.5)
    return [Term(soap, SOAPKernel(zeta=2), n_sparse=20)]


def small_gap(**kw) -> GAP:
    return GAP(small_terms(kw.pop("cutoff", 4.0)), **{"noise": NOISE, "progress": False,
                                                      **kw})


def train_frames(n: int = 8) -> list[Atoms]:
    """Bundled Si frames of at most 64 atoms, their labels in ``info``/``arrays`` (as an
    extxyz file gives them) so that copies keep them."""
    out = []
    for a in [a for a in load_bundled("Si_train.xyz") if len(a) <= 64][:n]:
        b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)
        b.info["energy"] = a.get_potential_energy()
        b.info.update({k: a.info[k] for k in ("virial", "config_type") if k in a.info})
        b.arrays["forces"] = a.get_forces()
        out.append(b)
    return out


# ---------------------------------------------------------------- classifying outcomes

def _crash_or_unclear(err: BaseException) -> tuple[str, str]:
    what = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    if isinstance(err, (MemoryError, RecursionError, SystemError)):
        return "crash", what
    return "unclear", what


def expect_error(fn: Callable, pattern: str, types=ERRORS) -> tuple[str, str]:
    """``fn()`` must raise one of ``types`` whose message matches ``pattern``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except types as err:
        msg = " ".join(str(err).split())
        if re.search(pattern, msg, re.IGNORECASE):
            return "ok", msg[:200]
        return "unclear", f"{type(err).__name__}: {msg[:200]}"
    except BaseException as err:  # noqa: BLE001 - classified, not swallowed
        if isinstance(err, KeyboardInterrupt):
            raise
        return _crash_or_unclear(err)
    return "silent", "no error"


def expect_warning(fn: Callable, pattern: str) -> tuple[str, str]:
    """``fn()`` must run and warn with a message matching ``pattern``."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    except BaseException as err:  # noqa: BLE001
        if isinstance(err, KeyboardInterrupt):
            raise
        return _crash_or_unclear(err)
    for w in caught:
        msg = " ".join(str(w.message).split())
        if re.search(pattern, msg, re.IGNORECASE):
            return "ok", msg[:200]
    return "silent", f"no warning matching {pattern!r} ({len(caught)} others)"


def expect_ok(fn: Callable[[], bool | str]) -> tuple[str, str]:
    """``fn()`` returns True (correct) or a string saying what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fn()
    except BaseException as err:  # noqa: BLE001
        if isinstance(err, KeyboardInterrupt):
            raise
        return _crash_or_unclear(err)
    return ("ok", "correct") if res is True else ("silent", str(res))


def expect_cli(argv: list[str], pattern: str, *, status: int = 2) -> tuple[str, str]:
    """``gapkit ARGV`` must exit with ``status`` and say ``pattern`` (stderr for errors)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                rc = cli(argv)
            except SystemExit as exit_:  # argparse errors, --version
                rc = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - a traceback: exit status 1
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "crash", f"traceback {type(exc).__name__}: {str(exc)[:160]}"
    text = " ".join((out.getvalue() + err.getvalue()).split())
    if rc == status and re.search(pattern, text, re.IGNORECASE):
        return "ok", text[-200:]
    if status != 0 and rc == 0:
        return "silent", f"exit 0: {text[-160:]}"
    return "unclear", f"exit {rc}: {text[-200:]}"


def unchanged(paths: list[Path], run: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    """Run a case and check that every file in ``paths`` keeps its bytes and that no
    debris (partial or temporary files) is left in their folders."""
    before = {p: p.read_bytes() for p in paths}
    folders = {p.parent for p in paths}
    listing = {f: sorted(x.name for x in f.iterdir()) for f in folders}
    outcome, detail = run()
    for p, data in before.items():
        if not p.exists() or p.read_bytes() != data:
            return "loss", f"{p.name} changed or deleted ({detail})"
    for f, names in listing.items():
        extra = [n for n in sorted(x.name for x in f.iterdir())
                 if n not in names and "partial" in n]
        if extra:
            return "loss", f"debris left: {extra}"
    return outcome, detail


# ---------------------------------------------------------------- the cases

def training_data_cases(tmp: Path):
    frames = train_frames()

    def with_(edit, i=2):  # Atoms.copy copies info and arrays (the labels)
        out = [a.copy() for a in frames]
        edit(out[i])
        return out

    def setpos(a, k, v):
        a.positions[k] = v

    fit = lambda fr, **kw: small_gap(**kw).fit(fr)  # noqa: E731
    yield "NaN position", expect_error(
        lambda: fit(with_(lambda a: setpos(a, 0, [np.nan, 0, 0]))), r"frame 2.*(nan|finite)")
    yield "inf energy", expect_error(
        lambda: fit(with_(lambda a: a.info.update(energy=np.inf))), r"frame 2")
    yield "NaN force", expect_error(
        lambda: fit(with_(lambda a: a.arrays["forces"].__setitem__((1, 1), np.nan))),
        r"frame 2")
    yield "forces of the wrong shape", expect_error(
        lambda: fit(with_(lambda a: a.arrays.update(forces=np.zeros((len(a), 3))[:, :2]))),
        r"frame 2.*forces|forces.*frame 2")
    yield "singular cell", expect_error(
        lambda: fit(with_(lambda a: a.set_cell(np.diag([5.0, 5.0, 0.0])))), r"frame 2.*cell")
    yield "two atoms on one site", expect_error(
        lambda: fit(with_(lambda a: setpos(a, 1, a.positions[0]))),
        r"frame 2.*(overlap|dist|same|close)")
    yield "atoms 0.1 A apart", expect_warning(
        lambda: fit(with_(lambda a: setpos(a, 1, a.positions[0] + [0.1, 0, 0]))),
        r"closer than|apart")
    yield "energies x1000", expect_warning(
        lambda: fit([_scaled(a, 1000.0) for a in frames], e0="least_squares"),
        r"spread|unit")
    yield "energy key typo", expect_error(
        lambda: fit([_renamed(a, "energy", "REF_energy") for a in frames]),
        r"REF_energy")
    yield "noise config_type typo", expect_warning(
        lambda: small_gap(noise=NoiseModel(config_type={"bulk_typo": {"forces": 0.1}}))
        .fit(frames), r"bulk_typo.*typo")
    yield "cutoff 50 A", _cutoff_case(frames)
    yield "no frames", expect_error(lambda: fit([]), r"no frames to fit")
    yield "frame without atoms", expect_error(
        lambda: fit(frames[:3] + [Atoms(pbc=True, cell=np.eye(3) * 5)]), r"frame 3")
    yield "frames without labels", expect_error(
        lambda: fit([_unlabelled(a) for a in frames]), r"no frame carries a label.*point the key")
    yield "negative noise sigma", expect_error(
        lambda: NoiseModel(energy=-0.001), r"energy.*(positive|> ?0|>= ?0|negative)")
    yield "n_sparse larger than the data", expect_ok(lambda: _n_sparse_too_large(frames))
    yield "non-numeric energy", expect_error(
        lambda: fit(with_(lambda a: a.info.update(energy="-12.3 eV"))), r"frame 2.*energy")
    yield "species unseen at fit, in predict", expect_error(
        lambda: fit(frames).predict([bulk("Cu", "fcc", a=3.6, cubic=True)]),
        r"species|Cu|29")
    junk = _write(tmp / "junk.xyz", "not an xyz file\n")
    yield "cli: at_file that is not extxyz", expect_cli(
        ["fit", f"at_file={junk}",
         f"gp_file={tmp / 'junk.gapkit'}", "default_sigma={0.003 0.05 0.05 0}"],
        r"junk\.xyz")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _scaled(a: Atoms, s: float) -> Atoms:
    b = a.copy()
    b.info["energy"] = a.info["energy"] * s
    return b


def _renamed(a: Atoms, old: str, new: str) -> Atoms:
    b = a.copy()
    b.info[new] = b.info.pop(old)
    return b


def _unlabelled(a: Atoms) -> Atoms:
    return Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)


def _cutoff_case(frames):
    # the smallest frame: a 50 Å cutoff makes every atom see thousands of neighbours
    return expect_warning(lambda: small_gap(cutoff=50.0).fit([min(frames, key=len)]),
                          r"cutoff.*50")


def _n_sparse_too_large(frames) -> bool | str:
    model = GAP([Term(SOAP(cutoff=4.0, cutoff_width=1.0, n_max=3, l_max=2), SOAPKernel(zeta=2),
                      n_sparse=100000)], noise=NOISE, progress=False).fit(frames[:2])
    n = model.fit_info_["n_sparse"][0]
    n_env = sum(len(a) for a in frames[:2])
    return True if n <= n_env else f"{n} sparse points from {n_env} environments"


def model_file_cases(tmp: Path, model: GAP):
    good = model.save(tmp / "good.gapkit")
    for kind, pattern in MODEL_FILE_DAMAGE.items():
        bad = tmp / f"{kind}.gapkit"
        damage_model_file(kind, good, bad)
        need = re.escape(str(bad)) + (f".*{pattern}" if pattern else "")
        yield kind, expect_error(lambda bad=bad: GAP.load(bad), need, ValueError)
    yield "missing file", expect_error(lambda: GAP.load(tmp / "nope.gapkit"), r"nope\.gapkit",
                                       FileNotFoundError)
    yield "a directory", expect_error(lambda: GAP.load(tmp), re.escape(str(tmp)))
    yield "save over an existing file", unchanged(
        [good], lambda: expect_error(lambda: model.save(good), r"exists.*overwrite"))
    yield "save into a missing folder", expect_error(
        lambda: model.save(tmp / "no" / "such" / "m.gapkit"), r"folder of the model file.*"
        r"does not exist")
    yield "loaded model predicts the same", expect_ok(
        lambda: bool(np.array_equal(GAP.load(good).predict(train_frames(2)).energy,
                                    model.predict(train_frames(2)).energy))
        or "predictions differ after save/load")
    yield "object (pickle) array", _pickle_case(tmp, good)


def _pickle_case(tmp: Path, good: Path):
    import zipfile

    bad = tmp / "pickle.gapkit"
    marker = tmp / "pickle_ran"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            if name == "alpha.npy":
                buf = io.BytesIO()
                np.save(buf, np.array([Boom()], dtype=object), allow_pickle=True)
                zout.writestr(name, buf.getvalue())
            else:
                zout.writestr(name, zin.read(name))
    outcome = expect_error(lambda: GAP.load(bad), r"pickle\.gapkit", ValueError)
    if marker.exists():
        return "crash", "loading ran code from the file"
    return outcome


def cli_cases(tmp: Path, model_path: Path, data: Path):
    model_file = tmp / "cli.gapkit"
    base = [f"at_file={data}", "soap_cutoff=4", "cutoff_transition_width=1", "soap_n_max=3",
            "soap_l_max=2", "zeta=2", "n_sparse=20", "default_sigma={0.003 0.05 0.05 0}",
            "--quiet"]
    yield "fit without settings", expect_cli(["fit"], r"config|key=value")
    yield "key=value after -o", expect_cli(["fit", "-o", str(model_file), *base],
                                           r"", status=0)
    yield "unknown key", expect_cli(["fit", *base, "soap_cutof=5", "-o", str(tmp / "u.gapkit")],
                                    r"soap_cutof")
    yield "missing output folder (before the fit)", expect_cli(
        ["fit", *base, "-o", str(tmp / "no" / "m.gapkit")], r"folder.*does not exist")
    yield "-o a directory", expect_cli(["fit", *base, "-o", str(tmp)], r"is a directory")
    yield "existing model without --force", unchanged(
        [model_file], lambda: expect_cli(["fit", *base, "-o", str(model_file)],
                                         r"exists.*--force"))
    mine = tmp / "cli.gapkit.tmp"
    mine.write_text("the user's own notes")
    yield "user's MODEL.tmp kept", unchanged(
        [mine], lambda: expect_cli(["fit", *base, "-o", str(model_file), "--force"], r"",
                                   status=0))
    out = tmp / "pred.xyz"
    out.write_text("the user's results")
    yield "predict over an existing output", unchanged(
        [out], lambda: expect_cli(["predict", str(model_path), str(data), str(out)],
                                  r"exists.*--force"))
    yield "predict onto its own input", unchanged(
        [data], lambda: expect_cli(["predict", str(model_path), str(data), str(data)],
                                   r"must differ"))
    yield "eval on a missing file", expect_cli(["eval", str(model_path), str(tmp / "x.xyz")],
                                               r"x\.xyz")
    yield "info on a damaged model", expect_cli(["info", str(tmp / "truncated.gapkit")],
                                                r"truncated")
    yield "--version", expect_cli(["--version"], r"gapkit \d", status=0)
    yield "--threads 0", expect_cli(["--threads", "0", "info", str(model_path)],
                                    r"--threads must be")
    yield "full disk during the write", unchanged([model_file], lambda: _full_disk(
        base, model_file))


def _full_disk(base, model_file):
    import errno

    import gapkit.io as gio

    real = gio.zipfile.ZipFile.writestr

    def no_space(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    gio.zipfile.ZipFile.writestr = no_space
    try:
        return expect_cli(["fit", *base, "-o", str(model_file), "--force"],
                          r"no space left")
    finally:
        gio.zipfile.ZipFile.writestr = real


def robustness_cases(model: GAP, frames):
    def threads() -> bool | str:
        calc = GAPCalculator(model)
        cells = [bulk("Si", "diamond", a=5.43, cubic=True) * (k, 1, 1) for k in (1, 2)]
        for c in cells:
            c.rattle(0.05, seed=1)
        want = [model.predict([c]).energy[0] for c in cells]
        wrong = []

        def work(i):
            for _ in range(6):
                a = cells[i].copy()
                a.calc = calc
                e = a.get_potential_energy()
                if abs(e - want[i]) > 1e-8:
                    wrong.append((i, e))

        ts = [threading.Thread(target=work, args=(i % 2,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return True if not wrong else f"{len(wrong)} of 24 results were another thread's"

    yield "calculator shared by threads", expect_ok(threads)

    def seeds() -> bool | str:
        a = small_gap(random_state=3).fit(frames)
        b = small_gap(random_state=3).fit(frames)
        return bool(np.array_equal(a.alpha_, b.alpha_)) or "same seed, different weights"

    yield "same seed, identical fit", expect_ok(seeds)

    def far() -> bool | str:
        near = frames[0]
        spread = near.copy()
        spread.set_cell(near.cell.array * 3, scale_atoms=True)  # atoms ~7 Å apart
        p_near, p_far = model.predict([near]), model.predict([spread])
        if not (np.isfinite(p_far.energy).all() and np.isfinite(p_far.forces).all()):
            return "not finite"
        v_near = p_near.energy_variance[0] / len(near)
        v_far = p_far.energy_variance[0] / len(spread)
        return True if v_far > v_near else "far-out frame not more uncertain"

    yield "far-out frame: finite, more uncertain", expect_ok(far)

    def isolated() -> bool | str:
        p_atom = model.predict([Atoms("Si", positions=[[0, 0, 0]])])
        p_bulk = model.predict([frames[0]])
        if not np.isfinite(p_atom.energy).all():
            return "not finite"
        return True if p_atom.energy_variance[0] > p_bulk.energy_variance[0] / len(
            frames[0]) else "an isolated atom is not more uncertain than a bulk atom"

    yield "isolated atom: finite, more uncertain", expect_ok(isolated)

    def large() -> bool | str:
        big = bulk("Si", "diamond", a=5.43, cubic=True) * (4, 4, 4)
        big.rattle(0.05, seed=2)
        torch.manual_seed(0)
        p = model.predict([big], forces_variance="exact")
        return bool(np.isfinite(p.forces).all() and (p.forces_variance >= 0).all()) \
            or "non-finite or negative variance on 512 atoms"

    yield "512-atom frame", expect_ok(large)


# ---------------------------------------------------------------- run

def run(verbose: bool = False) -> dict:
    """Every case, in a temporary folder: ``{"rows": [...], "table": {category: counts}}``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(verbose)
    finally:
        torch.set_num_threads(threads)


def _run(verbose: bool) -> dict:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        frames = train_frames()
        model = small_gap().fit(frames)
        model_path = model.save(tmp / "model.gapkit")
        data = tmp / "train.xyz"
        ase_write(data, frames, format="extxyz")
        groups = {"bad training data": training_data_cases(tmp),
                  "model files": model_file_cases(tmp, model),
                  "CLI": cli_cases(tmp, model_path, data),
                  "robustness": robustness_cases(model, frames)}
        for category, cases in groups.items():
            for name, (outcome, detail) in cases:
                rows.append({"category": category, "case": name, "outcome": outcome,
                             "detail": detail})
                if verbose or outcome != "ok":
                    print(f"  [{outcome:7s}] {category}: {name} — {detail}", flush=True)
    table = {c: {o: sum(r["outcome"] == o for r in rows if r["category"] == c)
                 for o in OUTCOMES} for c in CATEGORIES}
    return {"rows": rows, "table": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verbose", action="store_true", help="print every case")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()
    res = run(args.verbose)
    print(f"\n{'category':20s} {'cases':>5s} " + " ".join(f"{o:>7s}" for o in OUTCOMES))
    for c, counts in res["table"].items():
        print(f"{c:20s} {sum(counts.values()):5d} "
              + " ".join(f"{counts[o]:7d}" for o in OUTCOMES))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
