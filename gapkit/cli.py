"""The ``gapkit`` command line: fit, eval, predict and info.

::

    gapkit fit CONFIG.toml [key=value ...] [-o MODEL] [--force]
    gapkit fit at_file=train.xyz gp_file=model.gapkit soap_cutoff=5 n_sparse=500 ...
    gapkit eval MODEL DATA.xyz [--plot parity.png] [--json]
    gapkit predict MODEL IN.xyz OUT.xyz [--forces-variance {exact,projected,none}]
    gapkit info MODEL [--config]
    gapkit ipi-driver          # the i-PI client file: i-pi-py_driver -m custom -P "$(...)"
    gapkit export MODEL OUT.pt [--force]   # a metatomic model for LAMMPS, i-PI and ASE

Global options (before the command): ``--quiet`` (no progress bars or chatter).
Bad input exits with status 2 and one line ``gapkit: error: <reason>`` on stderr;
no output file is ever overwritten without ``--force``.

The TOML config maps 1:1 onto :class:`gapkit.GAP`'s settings::

    output = "model.gapkit"        # relative paths: relative to the config file
    e0 = "least_squares"           # or "isolated", "zero", or a table {Si = -158.5}
    jitter = 1e-8
    use = ["energy", "forces", "virial"]
    random_state = 0

    [data]
    train = "train.xyz"
    energy_key = "energy"          # also forces_key, virial_key, stress_key, config_type_key

    [[terms]]
    descriptor = {type = "SOAP", cutoff = 5.0, cutoff_width = 1.0, n_max = 8, l_max = 6}
    kernel = {type = "SOAPKernel", zeta = 4, delta = 1.0}
    n_sparse = 500
    sparse_method = "cur"

    [noise]
    energy = 0.001                 # eV/atom
    forces = 0.05                  # eV/Å
    virial = 0.01                  # eV/atom
    per_atom = true
    [noise.config_type.Surface]
    energy = 0.005

    [[baselines]]                  # optional physics baselines (gapkit.baselines)
    type = "CoreRepulsion"         # the GP learns the residual; predictions add it back

``gapkit info MODEL --config`` prints a fitted model's settings in this form.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import _threads
from ._files import atomic_path, check_output_path
from ._gap_fit import _SPARSE_METHODS, _bool, _number, parse_gap_string, resolve_per_species
from .data import LABEL_NAMES
from .io import ConfigError as CLIError
from .io import dump_toml, load_toml

__all__ = ["main", "config_to_model", "model_to_config", "parse_gap_fit_args", "dump_toml"]

def config_to_model(config: dict, *, base_dir=None, progress: bool = True):
    """``(model, train_path, output_path)`` from a config dict: :meth:`gapkit.GAP.from_config`
    (the config layout and its checks live in :mod:`gapkit.io`)."""
    from .model import GAP

    return GAP.from_config(config, base_dir=base_dir, progress=progress)


def model_to_config(model, *, train=None, output=None) -> dict:
    """A model's settings as a config dict: :func:`gapkit.io.to_config`."""
    from .io import to_config

    return to_config(model, train=train, output=output)


def _drop_none(d):
    return {k: v for k, v in d.items() if v is not None}


# ------------------------------------------------------------------ gap_fit-style arguments
_GAP_FIT_KEYS = {
    "at_file": "data.train", "gp_file": "output",
    "energy_parameter_name": "data.energy_key", "force_parameter_name": "data.forces_key",
    "virial_parameter_name": "data.virial_key", "stress_parameter_name": "data.stress_key",
    "config_type_parameter_name": "data.config_type_key",
    "soap_cutoff": "descriptor.cutoff", "cutoff_transition_width": "descriptor.cutoff_width",
    "soap_n_max": "descriptor.n_max", "soap_l_max": "descriptor.l_max",
    "atom_sigma": "descriptor.atom_sigma", "central_weight": "descriptor.central_weight",
    "zeta": "kernel.zeta", "delta": "kernel.delta",
    "n_sparse": "term.n_sparse", "sparse_method": "term.sparse_method",
    "default_sigma": "noise", "sigma_per_atom": "noise.per_atom",
    "config_type_sigma": "noise.config_type",
    "e0": "e0", "e0_method": "e0", "sparse_jitter": "jitter", "jitter": "jitter",
    "rnd_seed": "random_state", "random_state": "random_state",
    "gap": "gap",
    # gap_fit options about its own files and logging: nothing to do here
    "do_copy_at_file": "ignore", "sparse_separate_file": "ignore", "verbosity": "ignore",
    "openmp_chunk_size": "ignore",
}
_TERM_KEYS = {k for k, v in _GAP_FIT_KEYS.items() if v.split(".")[0] in
              ("descriptor", "kernel", "term")}


def _braced(value: str) -> list[str]:
    v = value.strip()
    if v.startswith("{") and v.endswith("}"):
        v = v[1:-1]
    return v.replace(",", " ").split()


def parse_gap_fit_args(args) -> dict:
    """gap_fit-style ``key=value`` arguments as a (partial) config dict.

    Descriptor, kernel and sparse settings describe one SOAP term.
    """
    cfg: dict = {}
    term: dict = {}
    for arg in args:
        if "=" not in arg:
            raise CLIError(f"expected key=value, got {arg!r}")
        key, value = arg.split("=", 1)
        key = key.strip()
        if key not in _GAP_FIT_KEYS:
            raise CLIError(f"unknown argument {key!r}; known gap_fit-style keys: "
                           f"{', '.join(sorted(_GAP_FIT_KEYS))}")
        target = _GAP_FIT_KEYS[key]
        section, _, name = target.partition(".")
        if section == "data":
            cfg.setdefault("data", {})[name] = value
        elif section in ("output",):
            cfg["output"] = value
        elif section in ("descriptor", "kernel"):
            term.setdefault(section, {})[name] = _number(value, key)
        elif section == "term":
            if name == "sparse_method":
                if value not in _SPARSE_METHODS:
                    raise CLIError(f"sparse_method={value}: use one of "
                                   f"{', '.join(_SPARSE_METHODS)}")
                term[name] = _SPARSE_METHODS[value]
            else:
                term[name] = _number(value, key)
        elif target == "noise":
            parts = _braced(value)
            if len(parts) not in (3, 4):
                raise CLIError(f"default_sigma={value}: expected {{E F V}} or {{E F V H}}")
            noise = cfg.setdefault("noise", {})
            for name_, v in zip(LABEL_NAMES, parts):  # gap_fit's order is ours
                noise[name_] = float(_number(v, key))
        elif target == "noise.per_atom":
            cfg.setdefault("noise", {})["per_atom"] = _bool(value, key)
        elif target == "noise.config_type":
            # gap_fit: config_type_sigma={type:E:F:V:H:type2:E:F:V:H}
            parts = _braced(value.replace(":", " "))
            if len(parts) % 5:
                raise CLIError(f"config_type_sigma={value}: expected {{type:E:F:V:H:...}}")
            ct = cfg.setdefault("noise", {}).setdefault("config_type", {})
            for i in range(0, len(parts), 5):
                ct[parts[i]] = {n: float(_number(v, key)) for n, v in
                                zip(LABEL_NAMES, parts[i + 1:i + 4])}
        elif target == "e0":
            if key == "e0_method":
                cfg["e0"] = {"average": "least_squares"}.get(value, value)
            else:  # e0=-158.5 (every species) or e0={Si:-158.5:O:-432.1}
                parts = _braced(value.replace(":", " "))
                if len(parts) == 1:
                    cfg["e0"] = {"*": float(_number(parts[0], key))}
                elif len(parts) % 2 == 0:
                    cfg["e0"] = {parts[i]: float(_number(parts[i + 1], key))
                                 for i in range(0, len(parts), 2)}
                else:
                    raise CLIError(f"e0={value}: expected a number or {{Si:-158.5:...}}")
        elif target == "jitter":
            cfg["jitter"] = float(_number(value, key))
        elif target == "random_state":
            cfg["random_state"] = int(_number(value, key))
        elif target == "gap":
            cfg["gap_terms"], cfg["gap_per_species"] = parse_gap_string(value)
    if term and "gap_terms" in cfg:
        given = sorted({a.split("=")[0] for a in args} & _TERM_KEYS)
        raise CLIError(f"gap={{...}} describes the terms; the descriptor/kernel keys "
                       f"{', '.join(given)} belong inside it")
    if term:
        term.setdefault("descriptor", {})
        term.setdefault("kernel", {})
        cfg["terms"] = [term]
    return cfg


def _merge(config: dict, overrides: dict) -> dict:
    """``config`` with gap_fit-style ``overrides`` applied (descriptor, kernel and sparse
    settings go to the config's single term)."""
    out = json.loads(json.dumps(config))  # a deep copy of plain data
    for key, value in overrides.items():
        if key == "gap_per_species":
            continue  # used after the data are read (cmd_fit)
        if key == "gap_terms":  # gap={...}: the model's terms, all of them
            out["terms"] = value
            continue
        if key == "terms":
            over = value[0]
            if not out.get("terms"):
                out["terms"] = [{}]
            if len(out["terms"]) > 1:
                raise CLIError("descriptor/kernel key=value arguments need a config with "
                               "exactly one [[terms]]")
            t = out["terms"][0]
            for k, v in over.items():
                if isinstance(v, dict):
                    t.setdefault(k, {}).update(v)
                else:
                    t[k] = v
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key != "e0":
            out[key].update(value)
        else:
            out[key] = value
    for t in out.get("terms", []):  # defaults of the gap_fit route: one SOAP term
        t.setdefault("descriptor", {}).setdefault("type", "SOAP")
        t.setdefault("kernel", {}).setdefault("type", "SOAPKernel")
    return out


# ------------------------------------------------------------------ commands
def _say(args, *msg):
    if not args.quiet:
        print(*msg)


def _refuse_overwrite(path, args, what="output file"):
    """The output path checked before any work (:func:`gapkit._files.check_output_path`)."""
    if path is not None:
        check_output_path(path, overwrite=args.force, what=what)


def _e0_star(model, frames):
    """gap_fit's single ``e0=value``: the same offset for every species in the data."""
    if isinstance(model.e0, dict) and "*" in model.e0:
        value = model.e0.pop("*")
        for z in {int(z) for a in frames for z in a.numbers}:
            model.e0.setdefault(z, value)


def cmd_fit(args) -> int:
    from .data import as_frames, read_frames

    config, base = {}, None
    kv = list(args.settings)
    if kv and "=" not in kv[0]:
        path = Path(kv.pop(0))
        config, base = load_toml(path), path.parent
    if not kv and not config:
        raise CLIError("give a CONFIG.toml or gap_fit-style key=value arguments "
                       "(see gapkit fit --help)")
    overrides = parse_gap_fit_args(kv)
    # key=value paths are relative to the working directory, config paths to the config
    if "output" in overrides:
        overrides["output"] = str(Path(overrides["output"]).absolute())
    if "train" in overrides.get("data", {}):
        overrides["data"]["train"] = str(Path(overrides["data"]["train"]).absolute())
    if overrides:
        config = _merge(config, overrides)
    model, train, output = config_to_model(config, base_dir=base, progress=not args.quiet)
    if args.output is not None:
        output = Path(args.output)
    if output is None:
        output = Path("model.gapkit")
    if train is None:
        raise CLIError("no training data: set [data] train = \"...\" or at_file=...")
    _refuse_overwrite(output, args, "model file")
    if _dask(args) and args.format in (None, "extxyz", "xyz"):  # workers read their frames
        frames = as_frames(train, lazy=True, **model.keys)
    else:
        frames = read_frames(train, format=args.format, **model.keys)
    if "gap_per_species" in overrides:  # gap_fit's add_species=T: n_sparse per species
        resolve_per_species(model, overrides["gap_per_species"],
                            {z for a in frames for z in a.numbers})
    _e0_star(model, frames)
    _say(args, f"gapkit fit: {len(frames)} frames, {sum(len(a) for a in frames)} atoms "
               f"from {train}")
    if args.budget is not None and not args.auto:
        raise CLIError("--budget is the CPU time of --auto: give --auto too (or drop it)")
    if args.auto and (args.workers or args.scheduler):
        raise CLIError("--auto budgets the CPU time of this process: run it without "
                       "--workers/--scheduler")
    from .gp.parallel import dask_passes

    # one set of workers for the fit and --learn-noise's statistics (--auto: this process)
    with dask_passes(**({} if args.auto else _dask(args)), progress=not args.quiet):
        if args.auto:
            from .auto import auto_fit, summary

            model = auto_fit(frames, budget=args.budget or "20min", template=model,
                             random_state=model.random_state or 0,
                             log=lambda line: _say(args, line))
            for line in summary(model.fit_info_["auto"])[1:2]:
                _say(args, line)
        else:
            model.fit(frames)
        cv = model.fit_info_.get("noise_cv")
        if cv:
            _say(args, "  " + _cv_summary(cv))
        if args.learn_noise:
            report = model.optimize_hyperparameters(frames, noise_groups=args.learn_noise)
            _say(args, f"  learnt noise ({args.learn_noise}): log marginal likelihood "
                       f"{report['log_marginal_likelihood_before']:.1f} -> "
                       f"{report['log_marginal_likelihood_refit']:.1f}")
            for kind in LABEL_NAMES:
                if model.fit_info_["n_observations"].get(kind):
                    cts = sorted({str(ct) for ct in model.noise_.config_type_scale})
                    per_ct = "".join(f", {ct} {model.noise_.sigma(kind, ct):.3g}" for ct in cts
                                     if kind in model.noise_.config_type_scale[ct])
                    _say(args, f"    sigma {kind}: {model.noise_.sigma(kind):.3g}{per_ct}")
    model.save(output, overwrite=args.force)
    info = model.fit_info_
    _say(args, f"  {info['wall_time_s']:.1f} s; sparse points {info['n_sparse']}; "
               f"observations {info['n_observations']}")
    _say(args, f"wrote {output}")
    return 0


def _dask(args) -> dict:
    """``client``/``n_workers`` of :meth:`gapkit.GAP.fit` and ``predict`` from
    ``--scheduler``/``--workers`` (empty without: one process)."""
    if args.workers is not None and args.scheduler is not None:
        raise CLIError("give --workers N (a local cluster) or --scheduler ADDRESS, not both")
    if args.scheduler is not None:
        return {"client": args.scheduler}
    if args.workers is not None:
        if args.workers < 1:
            raise CLIError(f"--workers must be at least 1, got {args.workers}")
        return {"n_workers": args.workers}
    return {}


def _add_dask_options(p) -> None:
    p.add_argument("--workers", metavar="N", type=int, default=None,
                   help="run the passes over the frames on N Dask worker processes on this "
                   "machine (one thread each; pip install 'gapkit[distributed]')")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run them on the workers of a running Dask scheduler, e.g. "
                   "tcp://node01:8786, or its scheduler file (*.json) (dask-jobqueue, "
                   "dask-mpi or 'dask scheduler')")


def _cv_summary(cv: dict) -> str:
    """One line on the noise chosen by cross-validation (``fit_info_["noise_cv"]``)."""
    if not cv.get("table"):
        return f"noise: {cv.get('note') or 'not cross-validated'}"
    b, best = cv["sigma_after"], cv["best"]
    return (f"noise by {cv['n_folds']}-fold cross-validation ({len(cv['table'])} settings "
            f"tried): sigma energy {b[0]:.3g} eV/atom, forces {b[1]:.3g} eV/Å, virial "
            f"{b[2]:.3g} eV/atom; held-out MAE energy "
            + (f"{1e3 * best['energy_mae']:.2f} meV/atom" if best["energy_mae"] else "-")
            + (f", forces {best['forces_mae']:.4f} eV/Å" if best["forces_mae"] else "")
            + (f". {cv['note']}" if cv.get("note") else "") + _predictive_summary(cv))


def _predictive_summary(cv: dict) -> str:
    """The predictive-variance calibration of :func:`_cv_summary` (held-out
    miscalibration area per kind: 0 is calibrated)."""
    forms = {k: v for k, v in (cv.get("predictive") or {}).items() if v}
    if not forms:
        return ""
    return ("; predictive sigma calibrated on the folds (miscalibration area "
            + ", ".join(f"{k} {v['area']:.3f}" for k, v in forms.items()) + ")")


def _load_model(path, args):
    from .model import GAP

    model = GAP.load(path)
    model.progress = not args.quiet
    return model


def errors(pred, frames, keys) -> dict:
    """The error table of ``gapkit eval`` (:func:`gapkit.uq.error_table`)."""
    from .uq import error_table

    return error_table(pred, frames, keys=keys)


def cmd_eval(args) -> int:
    import numpy as np

    from .data import get_all_labels, read_frames

    model = _load_model(args.model, args)
    keys = dict(model.keys)
    for k in ("energy_key", "forces_key", "virial_key"):
        if getattr(args, k) is not None:
            keys[k] = getattr(args, k)
    _refuse_overwrite(args.plot, args, "plot")
    frames = read_frames(args.data, format=args.format, **keys)
    pred = model.predict(frames, forces_variance=None)  # the plot shows energy σ only
    err = errors(pred, frames, keys)
    if not any(k in err for k in ("energy_n", "forces_n", "virial_n")):
        raise CLIError(f"{args.data}: no energy, forces or virial labels under the keys "
                       f"{keys['energy_key']!r}, {keys['forces_key']!r}, "
                       f"{keys['virial_key']!r}; set --energy-key etc.")
    if args.json:
        print(json.dumps(err, indent=1))
    else:
        print(f"{args.data}: {len(frames)} frames, {int(pred.atom_offsets[-1])} atoms")
        print(f"  {'':8s} {'MAE':>10s} {'RMSE':>10s}  unit")
        if "energy_n" in err:
            print(f"  {'energy':8s} {err['energy_mae_mev_per_atom']:10.3f} "
                  f"{err['energy_rmse_mev_per_atom']:10.3f}  meV/atom ({err['energy_n']} frames)")
        if "forces_n" in err:
            print(f"  {'forces':8s} {err['forces_mae']:10.4f} {err['forces_rmse']:10.4f}  "
                  f"eV/Å ({err['forces_n']} components)")
        if "virial_n" in err:
            print(f"  {'virial':8s} {err['virial_mae_mev_per_atom']:10.3f} "
                  f"{err['virial_rmse_mev_per_atom']:10.3f}  meV/atom ({err['virial_n']} frames)")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from . import plot

        labels = get_all_labels(frames, **keys)
        n = pred.n_atoms
        panels = []
        ie = [k for k, lab in enumerate(labels) if lab.energy is not None]
        iforce = [k for k, lab in enumerate(labels) if lab.forces is not None]
        if ie:
            panels.append("energy")
        if iforce:
            panels.append("forces")
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), dpi=150,
                                 squeeze=False)
        for ax, what in zip(axes[0], panels):
            if what == "energy":
                plot.parity(np.array([labels[k].energy / n[k] for k in ie]),
                            pred.energy[ie] / n[ie],
                            sigma=np.sqrt(pred.energy_variance[ie]) / n[ie], ax=ax,
                            label="energy", unit="eV/atom", title="energies")
            else:
                plot.parity(np.concatenate([labels[k].forces for k in iforce]).ravel(),
                            np.concatenate([pred.frame_forces(k) for k in iforce]).ravel(),
                            ax=ax, label="force component", unit="eV/Å", title="forces")
        fig.tight_layout()
        fig.savefig(args.plot)
        plt.close(fig)
        _say(args, f"wrote {args.plot}")
    return 0


def cmd_predict(args) -> int:
    import ase.io

    from .data import read_frames

    if Path(args.output).resolve() == Path(args.input).resolve():
        raise CLIError("OUT.xyz must differ from IN.xyz (the input is never overwritten)")
    _refuse_overwrite(args.output, args)
    model = _load_model(args.model, args)
    frames = read_frames(args.input, format=args.format)
    fv = None if args.forces_variance == "none" else args.forces_variance
    pred = model.predict(frames, forces_variance=fv, **_dask(args))
    off = pred.atom_offsets
    ours = {"gap_energy", "gap_energy_variance", "gap_forces", "gap_forces_variance",
            "gap_local_energy", "gap_local_energy_variance", "gap_virial",
            "gap_virial_variance"}
    for k, atoms in enumerate(frames):
        # results of an earlier prediction in the input are replaced, never mixed in
        for key in ours & set(atoms.info):
            del atoms.info[key]
        for key in ours & set(atoms.arrays):
            del atoms.arrays[key]
        a0, a1 = off[k], off[k + 1]
        atoms.info["gap_energy"] = float(pred.energy[k])
        atoms.info["gap_energy_variance"] = float(pred.energy_variance[k])
        atoms.arrays["gap_forces"] = pred.forces[a0:a1].copy()
        if pred.forces_variance is not None:
            atoms.arrays["gap_forces_variance"] = pred.forces_variance[a0:a1].copy()
        atoms.arrays["gap_local_energy"] = pred.local_energy[a0:a1].copy()
        atoms.arrays["gap_local_energy_variance"] = pred.local_energy_variance[a0:a1].copy()
        if pred.virial is not None:
            atoms.info["gap_virial"] = pred.virial[k].reshape(-1).copy()
            if pred.virial_variance is not None:
                atoms.info["gap_virial_variance"] = pred.virial_variance[k].reshape(-1).copy()
    with atomic_path(args.output) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    written = sorted(ours & (set(frames[0].info) | set(frames[0].arrays))) if frames else []
    _say(args, f"wrote {args.output}: {len(frames)} frames with {', '.join(written)}")
    return 0


def cmd_info(args) -> int:
    import zipfile

    from ase.data import chemical_symbols

    model = _load_model(args.model, args)
    if args.config:
        print(dump_toml(model_to_config(model)), end="")
        return 0
    with zipfile.ZipFile(args.model) as zf:
        meta = json.loads(zf.read("metadata.json"))
    print(f"gapkit model {args.model}")
    print(f"  format version {meta.get('format_version')}, written by gapkit "
          f"{meta.get('gapkit_version')}")
    print(f"  species: {', '.join(chemical_symbols[z] for z in model.species_)}")
    e0_method = model.fit_info_.get("e0_method")
    print("  e0 (eV): " + ", ".join(f"{chemical_symbols[z]} {v:.6f}"
                                    for z, v in sorted(model.e0_.items()))
          + (f" ({e0_method})" if e0_method else ""))
    for b in model.baselines:
        bd = b.to_dict()
        print(f"  baseline: {bd['type']}(" + ", ".join(
            f"{k}={v}" for k, v in _drop_none(bd["params"]).items()) + ")")
    for i, (t, sparse) in enumerate(zip(model.terms_, model.sparse_sets_)):
        td = t.to_dict()
        dp = ", ".join(f"{k}={v}" for k, v in _drop_none(td["descriptor"]["params"]).items()
                       if k != "species")
        kp = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in td["kernel"]["params"].items())
        import numpy as np

        types, counts = np.unique(sparse.types.numpy(), return_counts=True)
        per = ", ".join(f"{chemical_symbols[int(z)] if 0 < int(z) < len(chemical_symbols) else z}"
                        f" {c}" for z, c in zip(types, counts))
        print(f"  term {i}: {td['descriptor']['type']}({dp})")
        print(f"          {td['kernel']['type']}({kp})")
        given = td["n_sparse"]
        how = ("per species as given (gap_fit's count)" if isinstance(given, dict) else
               f"n_sparse={given} in all, split "
               + str((td.get("sparse_options") or {}).get("split", "equal")))
        print(f"          {sparse.n} sparse points ({td['sparse_method']}; {per}; {how})")
    nz = model.noise_
    print(f"  noise: energy {nz.energy} eV{'/atom' if nz.per_atom else ''}, forces {nz.forces} "
          f"eV/Å, virial {nz.virial} eV{'/atom' if nz.per_atom else ''}")
    if nz.scale:
        print("    learnt multipliers (applied to every sigma): "
              + ", ".join(f"{k} x{v:.4g}" for k, v in nz.scale.items()))
    for ct, over in nz.config_type_scale.items():
        print(f"    learnt for config_type {ct}: "
              + ", ".join(f"{k} x{v:.4g} (sigma {nz.sigma(k, ct):.3g})" for k, v in over.items()))
    for ct, over in nz.config_type.items():
        print(f"    config_type {ct}: " + ", ".join(f"{k} {v}" for k, v in over.items()))
    if model.fit_info_.get("noise_cv"):
        print(f"    {_cv_summary(model.fit_info_['noise_cv'])}")
    if model.fit_info_.get("auto"):
        from .auto import summary

        print("\n".join("  " + line for line in summary(model.fit_info_["auto"])))
    fitted_on = [k for k, n in (model.fit_info_.get("n_observations") or {}).items() if n]
    print(f"  fitted on: {', '.join(fitted_on or model.use)}; keys " +
          ", ".join(f"{k}={v}" for k, v in model.keys.items()))
    print(f"  jitter {model.jitter:g} (absolute {model.jitter_absolute_:.3g})")
    fi = model.fit_info_
    print(f"  fit: {fi.get('n_frames')} frames; observations {fi.get('n_observations')}; "
          f"{fi.get('wall_time_s', float('nan')):.1f} s wall"
          + (f"; random_state {fi['random_state']}" if "random_state" in fi else ""))
    lml = fi.get("log_marginal_likelihood")
    if lml is not None:
        print(f"       log marginal likelihood {lml:.2f}; "
              f"cond(R) {fi.get('condition_number_R', float('nan')):.3g}")
    if getattr(model, "recalibration_", None):
        print(f"  variance recalibration: {model.recalibration_}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gapkit", description="Fit and use Gaussian Approximation Potentials "
        "(SOAP + sparse GP) from the shell.",
        epilog="Run 'gapkit COMMAND --help' for each command's options.")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bars or progress messages")
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"gapkit {__version__}")
    parser.add_argument("--threads", metavar="N", default="auto",
                        help="CPU threads for the numerics (default 'auto': the free cores at each "
                        "call, i.e. usable cores minus other processes' load, or "
                        "$GAPKIT_THREADS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter
    # --quiet also after the command (SUPPRESS: an absent one keeps the global value)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars or progress messages")
    quiet.add_argument("--threads", metavar="N", default=argparse.SUPPRESS,
                       help="CPU threads (default 'auto': the free cores)")

    p = sub.add_parser(
        "fit", parents=[quiet],
        help="fit a GAP from a TOML config or gap_fit-style key=value arguments",
        formatter_class=fmt,
        description="Fit a GAP and save it.\n\n"
        "  gapkit fit CONFIG.toml [key=value ...]\n"
        "  gapkit fit at_file=train.xyz gp_file=model.gapkit soap_cutoff=5 soap_n_max=8 \\\n"
        "      soap_l_max=6 atom_sigma=0.5 zeta=4 delta=1 n_sparse=500 \\\n"
        "      default_sigma={0.001 0.05 0.01} energy_parameter_name=energy\n\n"
        "key=value arguments override the config's settings (descriptor, kernel and\n"
        "sparse keys act on its single [[terms]]; without a config they describe one\n"
        "SOAP term). Paths in a config are relative to the config file.\n"
        "Known keys: " + ", ".join(sorted(_GAP_FIT_KEYS)) + ".\n\n"
        "Config layout (see 'gapkit info MODEL --config' for a full example):\n"
        + (__doc__ or "").split("maps 1:1 onto :class:`gapkit.GAP`'s settings::")[-1]
        .split("``gapkit info")[0])
    p.add_argument("settings", nargs="*", metavar="CONFIG.toml|key=value",
                   help="a TOML config and/or gap_fit-style key=value settings")
    p.add_argument("-o", "--output", help="model file to write (overrides the config's "
                   "'output'/gp_file; default model.gapkit)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model file")
    p.add_argument("--learn-noise", choices=("kind", "config_type"), default=None,
                   help="after the fit, learn the noise (and each term's delta) from the data "
                   "by maximising the marginal likelihood, one multiplier per label kind "
                   "('kind') or per kind and config_type ('config_type'), and refit")
    p.add_argument("--format", metavar="NAME", default=None,
                   help="the data file's ase.io format (default: ase.io's guess; extxyz, db, "
                   "vasp-out, vasp-xml, traj, ...)")
    p.add_argument("--auto", action="store_true",
                   help="choose the SOAP settings (cutoff, n_max/l_max, atom_sigma, zeta, "
                   "sparse points, a two-body term) by cross-validation within --budget; "
                   "the config's terms are replaced, its other settings kept")
    p.add_argument("--budget", metavar="TIME", default=None,
                   help="CPU time for --auto: seconds or e.g. 90s, 20min, 1.5h (default 20min)")
    _add_dask_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("eval", parents=[quiet],
                       help="errors table (and parity plot) of a model on labelled data",
                       description="Predict DATA.xyz with MODEL and print MAE/RMSE of energies "
                       "(meV/atom), forces (eV/Å) and virials (meV/atom) where present.")
    p.add_argument("model", metavar="MODEL", help="a model file written by 'gapkit fit'")
    p.add_argument("data", metavar="DATA.xyz", help="labelled frames: extended XYZ or any "
                   "file ase.io reads (ASE db, OUTCAR, vasprun.xml, traj)")
    p.add_argument("--plot", metavar="PNG", help="write an energy/force parity plot")
    p.add_argument("--json", action="store_true", help="print the errors as JSON")
    for k, what in (("energy_key", "energy"), ("forces_key", "forces"),
                    ("virial_key", "virial")):
        p.add_argument("--" + k.replace("_", "-"), dest=k,
                       help=f"extxyz key of the reference {what} (default: the model's)")
    p.add_argument("--force", action="store_true", help="overwrite an existing plot")
    p.add_argument("--format", metavar="NAME", default=None,
                   help="the data file's ase.io format (default: ase.io's guess; extxyz, db, "
                   "vasp-out, vasp-xml, traj, ...)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "predict", parents=[quiet],
        help="write predicted energies, forces and variances into extxyz",
        description="Predict IN.xyz with MODEL and write OUT.xyz: info gap_energy, "
        "gap_energy_variance (and gap_virial, gap_virial_variance as 9 numbers for 3D-periodic "
        "frames); arrays gap_forces, gap_forces_variance, gap_local_energy, "
        "gap_local_energy_variance. Units eV, eV/Å, variances eV^2, eV^2/Å^2. The input's "
        "own labels are copied unchanged.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("input", metavar="IN.xyz")
    p.add_argument("output", metavar="OUT.xyz")
    p.add_argument("--forces-variance", "--force-variance", dest="forces_variance",
                   choices=("projected", "exact", "none"),
                   default="exact", help="force variance form (default exact: the "
                   "calibrated DTC form; projected is cheaper and far too small)")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT.xyz")
    p.add_argument("--format", metavar="NAME", default=None,
                   help="IN's ase.io format (default: ase.io's guess; extxyz, db, "
                   "vasp-out, vasp-xml, traj, ...)")
    _add_dask_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("info", parents=[quiet], help="print a model card",
                       description="Print a model's terms, species, e0, noise, sparse points, "
                       "fit information and file format version.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--config", action="store_true",
                   help="print the model's settings as a TOML config for 'gapkit fit'")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("ipi-driver", help="print the path of gapkit's i-PI client",
                       description="Print the path of gapkit's i-PI client file, for "
                       "'i-pi-py_driver -m custom -P PATH -o template=FILE,model=MODEL' "
                       "(see gapkit.ipi).")
    p.set_defaults(func=cmd_ipi_driver)

    p = sub.add_parser("export", parents=[quiet],
                       help="write a model as a metatomic file (LAMMPS, i-PI, ASE)",
                       description="Write MODEL as a metatomic TorchScript file: energy, "
                       "forces, stress and energy_uncertainty in LAMMPS (pair_style "
                       "metatomic), i-PI (-m metatomic) and ASE (see gapkit.export).")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("output", metavar="OUT.pt")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT.pt")
    p.set_defaults(func=cmd_export)
    return parser


def cmd_export(args) -> int:
    from .export import export

    _refuse_overwrite(args.output, args, what="exported model")
    path = export(_load_model(args.model, args), args.output, overwrite=True)
    _say(args, f"wrote {path}: run it with LAMMPS' pair_style metatomic {path}, i-PI's "
         f"i-pi-py_driver -m metatomic -o template=INIT.xyz,model={path}, or ASE's "
         "metatomic_ase.MetatomicCalculator")
    return 0


def cmd_ipi_driver(args) -> int:
    import importlib.util

    print(importlib.util.find_spec("gapkit.ipi").origin)
    if importlib.util.find_spec("ipi") is None:
        print("gapkit: warning: i-PI is not installed here (pip install ipi)", file=sys.stderr)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"gapkit: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv=None) -> int:
    """Entry point of the ``gapkit`` command; returns the exit status."""
    import warnings

    parser = build_parser()
    # gap_fit's key=value settings may come before or after options (-o, --force):
    # argparse stops the positional list at the first option, so the rest arrive here
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "settings", None) is None or any(
                e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.settings = list(args.settings) + extra
    with warnings.catch_warnings():
        # library warnings as one line each, without the source path
        warnings.showwarning = _show_warning
        restore = _threads.snapshot()  # main() may run in a program
        try:
            _threads.set_threads(args.threads)
            return args.func(args)
        except (ValueError, OSError, ImportError, MemoryError) as err:  # bad input, paths, a
            # full disk, an optional package missing, Dask workers without this gapkit or out
            # of memory (the message names the partition and what to lower)
            msg = " ".join(str(err).split()) or type(err).__name__
            print(f"gapkit: error: {msg}", file=sys.stderr)
            return 2
        finally:
            restore()


if __name__ == "__main__":
    raise SystemExit(main())
