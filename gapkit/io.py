"""Hypers as data: the model file format and the TOML/dict config, one path each way.

A GAP's settings exist once, as constructor arguments (:meth:`gapkit.GAP.get_params`).
This module turns them into data and back:

* **model files** (:func:`write_model`, :func:`read_model`; ``GAP.save``/``GAP.load``
  are one-line calls of these): a zip of ``metadata.json`` and ``.npy`` arrays read with
  ``allow_pickle=False``, so loading never runs code from the file; versioned by
  :data:`FORMAT_VERSION` (a newer file is refused with "upgrade gapkit", a damaged one
  with the reason); written to a temporary file beside the target (``.NAME.*.gapkit-partial``,
  a name no user file has), fsynced and renamed, removed if the write fails, and never over
  an existing file unless asked.
* **configs** (:func:`from_config`, :func:`to_config`, :func:`dump_toml`,
  :func:`load_toml`): the layout of ``gapkit fit CONFIG.toml`` (see :mod:`gapkit.cli`).

File format versions: 1 (terms, noise, e0, arrays), 2 adds physics baselines
(``"baselines"``), 3 adds the learnt noise multipliers (``noise.scale``,
``noise.config_type_scale``), 4 the predictive-variance calibration (``"predictive"``,
:mod:`gapkit.gp.predictive`: an older gapkit would predict uncalibrated variances without
a word, so it refuses the file). A file is
written in the lowest version that holds its content, so older gapkit versions still
read what they can represent.

This module sits below :mod:`gapkit.model`: it builds terms, noise models and baselines
but never a ``GAP``, which :meth:`gapkit.GAP.load` and :meth:`gapkit.GAP.from_config`
assemble from what it returns.
"""

from __future__ import annotations

import io as _io
import json
import math
import re
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ._files import atomic_path, check_output_path
from ._version import __version__
from .baselines import BASELINES
from .baselines import from_dict as baseline_from_dict
from .gp.design import SparseSet
from .gp.observations import KINDS, NoiseModel
from .gp.predictive import check_spec
from .kernels import DESCRIPTORS, KERNELS
from .terms import Term, default_terms

__all__ = ["FORMAT_VERSION", "ConfigError", "ModelConfig", "dump_toml", "from_config",
           "load_toml", "read_model", "to_config", "write_model"]

#: newest version of the model file format that :func:`write_model` writes and
#: :func:`read_model` reads (see the module docstring).
FORMAT_VERSION = 4
_FORMAT = "gapkit.model"


class ConfigError(ValueError):
    """Bad input in a config (or on the command line)."""


# ------------------------------------------------------------------ model files
def write_model(path: str | Path, params: dict, state: dict, *,
                overwrite: bool = False) -> Path:
    """Write a fitted model: ``params`` its constructor arguments (fitted terms), ``state``
    its fitted arrays and metadata (see :meth:`gapkit.GAP.save`)."""
    # checked first: a missing folder is named, not the temporary file's path
    path = check_output_path(path, overwrite=overwrite, what="model file",
                             flag="overwrite=True")
    noise = params["noise"].to_dict()
    predictive = {k: v for k, v in (state.get("predictive") or {}).items() if v}
    version = (4 if predictive else 3 if "scale" in noise or "config_type_scale" in noise
               else 2 if params["baselines"] else 1)
    terms = params["terms"]
    meta = {
        "format": _FORMAT, "format_version": version, "gapkit_version": __version__,
        "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom",
                  "virial": "eV"},
        "terms": [t.to_dict() for t in terms],
        "noise": noise, "e0": {str(z): v for z, v in state["e0"].items()},
        "jitter": params["jitter"], "jitter_absolute": state["jitter_absolute"],
        "species": list(state["species"]), "use": list(params["use"]),
        "keys": {k: params[k] for k in KEY_NAMES},
        "fit_info": state["fit_info"],
    }
    if state.get("recalibration"):  # variance recalibration (gapkit.uq)
        meta["recalibration"] = state["recalibration"]
    if predictive:
        meta["predictive"] = predictive
    if params["baselines"]:
        meta["baselines"] = [b.to_dict() for b in params["baselines"]]
    arrays = {"alpha": state["alpha"].numpy(), "R": state["R"].numpy(),
              "U": state["U"].numpy()}
    for i, sparse in enumerate(state["sparse_sets"]):
        arrays[f"term{i}_points"] = sparse.points.numpy()
        arrays[f"term{i}_types"] = sparse.types.numpy()
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w",
                                                   compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps(meta, indent=1))
        for name, arr in arrays.items():
            buf = _io.BytesIO()
            np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())
    return path


#: the extxyz key settings of a GAP, stored together in model files (``"keys"``)
KEY_NAMES = ("energy_key", "forces_key", "virial_key", "stress_key", "config_type_key")

#: limits a model file's members are checked against before anything is read: the metadata
#: (JSON) size, any member's uncompressed size, and the compression ratio of a member above
#: 1 MiB (float64 weights and descriptors compress about 1.1-2.5x; a ratio of 1,000 is a
#: zip bomb: a 2 MB file that would unpack to gigabytes)
MAX_METADATA_BYTES = 64 * 2**20
MAX_MEMBER_BYTES = 64 * 2**30
MAX_COMPRESSION_RATIO = 50
_MEMBER = re.compile(r"(metadata\.json|alpha\.npy|R\.npy|U\.npy|term[0-9]+_(points|types)\.npy)")


def _check_members(zf: zipfile.ZipFile) -> None:
    """Names, duplicates and sizes of a model file's members, before any is read."""
    names = zf.namelist()
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate members {dup}")
    unknown = [n for n in names if not _MEMBER.fullmatch(n)]
    if unknown:
        raise ValueError(f"unknown members {unknown[:5]} (not written by gapkit)")
    for info in zf.infolist():
        limit = MAX_METADATA_BYTES if info.filename == "metadata.json" else MAX_MEMBER_BYTES
        if info.file_size > limit:
            raise ValueError(f"member {info.filename} would unpack to {info.file_size:,} "
                             f"bytes, more than the limit of {limit:,}")
        if info.file_size > 2**20 and \
                info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise ValueError(f"member {info.filename} would unpack to {info.file_size:,} "
                             f"bytes from {info.compress_size:,} (compression ratio above "
                             f"{MAX_COMPRESSION_RATIO}: not gapkit's arrays; a zip bomb?)")


def _check_arrays(arrays: dict) -> None:
    """dtype and finiteness of every array: float64 and finite, the types integers."""
    for name, arr in arrays.items():
        if name.endswith("_types"):
            if arr.dtype.kind not in "iu":
                raise ValueError(f"array {name} has dtype {arr.dtype}, not integers")
            continue
        if arr.dtype != np.float64:
            raise ValueError(f"array {name} has dtype {arr.dtype}, not float64")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"array {name} holds {int((~np.isfinite(arr)).sum())} NaN or "
                             "infinite values")


def read_model(path: str | Path) -> tuple[dict, dict]:
    """Read a model file: ``(params, state)`` as :func:`write_model` takes them.

    A corrupted, truncated or newer file raises ValueError with the reason. Only JSON
    and .npy arrays (without pickles) are read: loading never executes code from the
    file.
    """
    import zlib

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            _check_members(zf)
            meta = json.loads(zf.read("metadata.json"))
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a gapkit model file")
            version = meta.get("format_version")
            if isinstance(version, int) and not isinstance(version, bool) and \
                    version > FORMAT_VERSION:
                raise ValueError(
                    f"{path} was written in model format {version}, newer than this "
                    f"gapkit understands ({FORMAT_VERSION}); upgrade gapkit")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise ValueError(f"format_version must be an integer 1 ... "
                                 f"{FORMAT_VERSION}, got {version!r}")
            arrays = {n[:-4]: np.load(_io.BytesIO(zf.read(n)), allow_pickle=False)
                      for n in zf.namelist() if n.endswith(".npy")}
            _check_arrays(arrays)
        terms, sparse_sets = [], []
        for i, td in enumerate(meta["terms"]):
            terms.append(Term.from_dict(td))
            sparse_sets.append(SparseSet(torch.as_tensor(arrays[f"term{i}_points"]),
                                         torch.as_tensor(arrays[f"term{i}_types"])))
        for name in ("alpha", "R", "U"):
            if name not in arrays:
                raise KeyError(f"array {name!r}")
        for key in ("noise", "e0", "jitter", "jitter_absolute", "species", "use", "keys",
                    "fit_info"):
            if key not in meta:
                raise KeyError(f"metadata key {key!r}")
        baselines = []
        if meta.get("baselines"):
            baselines = [baseline_from_dict(d) for d in meta["baselines"]]
        noise = NoiseModel(**meta["noise"])
        predictive = meta.get("predictive")
        if predictive is not None:
            if not isinstance(predictive, dict) or not set(predictive) <= set(KINDS):
                raise ValueError(f"'predictive' must map kinds {list(KINDS)} to forms")
            predictive = {k: check_spec(v) for k, v in predictive.items()}
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path} is not a readable gapkit model file: {err}") from err
    except (zipfile.BadZipFile, KeyError, TypeError, AttributeError, json.JSONDecodeError,
            EOFError, OSError, zlib.error, RuntimeError,
            NotImplementedError) as err:  # zipfile: a corrupted compression-method field
        raise ValueError(f"{path} is not a readable gapkit model file "
                         f"(truncated or corrupted? missing {err})"
                         if isinstance(err, KeyError) else
                         f"{path} is not a readable gapkit model file "
                         f"(truncated or corrupted?): {err}") from err
    e0 = {int(z): float(v) for z, v in meta["e0"].items()}
    bad = [z for z, v in e0.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{path}: e0 of species {bad} is not a finite number (corrupted or "
                         "hand-edited metadata?)")
    params = {"terms": terms, "noise": noise, "e0": dict(e0), "jitter": meta["jitter"],
              "use": tuple(meta["use"]), "baselines": baselines,
              "random_state": meta["fit_info"].get("random_state", 0), **meta["keys"]}
    state = {"species": list(meta["species"]), "e0": e0,
             "jitter_absolute": meta["jitter_absolute"],
             "alpha": torch.as_tensor(arrays["alpha"]), "R": torch.as_tensor(arrays["R"]),
             "U": torch.as_tensor(arrays["U"]), "sparse_sets": sparse_sets,
             "fit_info": meta["fit_info"], "recalibration": meta.get("recalibration"),
             "predictive": predictive}
    m = sum(s.n for s in sparse_sets)
    if state["alpha"].shape != (m,) or state["R"].shape != (m, m) or \
            state["U"].shape != (m, m):
        raise ValueError(f"{path}: inconsistent array shapes (corrupted file?)")
    _check_species(path, state, terms)
    return params, state


def _check_species(path: Path, state: dict, terms: list) -> None:
    """Species are atomic numbers with an e0 each, and every sparse point's kernel type is
    one the term makes for them (a hand-edited type matches no atom: its species would
    predict 0 eV with the prior variance, silently)."""
    from .descriptors.twobody import TwoBody

    species = state["species"]
    if not species or any(isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 118
                          for z in species):
        raise ValueError(f"{path}: species must be atomic numbers 1 ... 118, got {species!r}")
    missing = sorted(set(species) - set(state["e0"]))
    if missing:
        raise ValueError(f"{path}: species {missing} have no e0 (corrupted or hand-edited?)")
    n = len(species)
    for i, (term, sparse) in enumerate(zip(terms, state["sparse_sets"])):
        own = getattr(term.descriptor, "species", None)
        allowed = (set(range(n * (n + 1) // 2)) if isinstance(term.descriptor, TwoBody)
                   else set(own if own is not None else species))
        bad = sorted(set(sparse.types.tolist()) - allowed)
        if bad:
            raise ValueError(f"{path}: term {i}'s sparse points have kernel types {bad}, "
                             f"which its species {sorted(allowed)} never give (corrupted or "
                             f"hand-edited term{i}_types?)")


# ------------------------------------------------------------------ configs
class ModelConfig(NamedTuple):
    """What :func:`from_config` reads: the GAP's constructor arguments, and the training
    data and output paths (None when the config lacks them)."""

    params: dict
    train: Path | None
    output: Path | None


_TOP_KEYS = {"data", "terms", "noise", "e0", "jitter", "use", "random_state", "output",
             "batch_atoms", "baselines"}
_DATA_KEYS = {"train", "energy_key", "forces_key", "virial_key", "stress_key",
              "config_type_key"}
_TERM_KEYS = {"descriptor", "kernel", "n_sparse", "sparse_method", "sparse_options"}
_NOISE_KEYS = {"energy", "forces", "virial", "per_atom", "config_type", "scale",
               "config_type_scale"}


def _check_keys(d: Any, allowed: Iterable[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a table, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                       f"in {where}; expected some of {', '.join(sorted(allowed))}")


def _build(registry: Mapping[str, Any], spec: Any, where: str) -> Any:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where} must be a table with a 'type' key, e.g. "
                       f"{{type = \"{next(iter(registry))}\", ...}}")
    params = {k: v for k, v in spec.items() if k != "type"}
    kind = spec["type"]
    if kind not in registry:
        raise ConfigError(f"{where}: unknown type {kind!r}; use one of {', '.join(registry)}")
    # only the keywords the class names itself (a kernel would pass others on to
    # GPyTorch, which ignores them: a typo must not be dropped silently)
    import inspect

    named = [p.name for p in inspect.signature(registry[kind].__init__).parameters.values()
             if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    _check_keys(params, named, f"{where} ({kind})")
    try:
        return registry[kind](**params)
    except TypeError as err:
        raise ConfigError(f"{where} ({kind}): {err}") from None


def _int_keys(d: Mapping) -> dict:
    return {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v
            for k, v in d.items()}


def from_config(config: dict, *, base_dir: str | Path | None = None) -> ModelConfig:
    """A GAP's constructor arguments from a config dict (the TOML layout).

    ``GAP(**from_config(config).params)`` is the unfitted model
    (:meth:`gapkit.GAP.from_config` does this). Relative paths are taken relative to
    ``base_dir``. Raises :class:`ConfigError` (a ValueError) naming the offending key.
    """
    _check_keys(config, _TOP_KEYS, "the config")
    data = config.get("data", {})
    _check_keys(data, _DATA_KEYS, "[data]")
    terms_cfg = config.get("terms", [])
    if "terms" in config and not terms_cfg:
        raise ConfigError("the config has an empty [[terms]]: give at least one descriptor "
                          "and kernel, or leave [[terms]] out for GAP()'s default term")
    if not isinstance(terms_cfg, list):
        raise ConfigError("'terms' must be an array of tables ([[terms]])")
    # no [[terms]]: GAP()'s default term (SOAP, n_sparse "auto")
    terms = [] if terms_cfg else default_terms()
    for i, t in enumerate(terms_cfg):
        where = f"[[terms]] #{i + 1}"
        _check_keys(t, _TERM_KEYS, where)
        for key in ("descriptor", "kernel"):
            if key not in t:
                raise ConfigError(f"{where} lacks '{key}'")
        n_sparse = t.get("n_sparse", "auto")
        if isinstance(n_sparse, dict):
            n_sparse = _int_keys(n_sparse)
        try:
            terms.append(Term(_build(DESCRIPTORS, t["descriptor"], f"{where} descriptor"),
                              _build(KERNELS, t["kernel"], f"{where} kernel"),
                              n_sparse=n_sparse, sparse_method=t.get("sparse_method", "cur"),
                              sparse_options=t.get("sparse_options")))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    noise_cfg = dict(config.get("noise", {}))
    _check_keys(noise_cfg, _NOISE_KEYS, "[noise]")
    for ct, over in noise_cfg.get("config_type", {}).items():
        _check_keys(over, set(KINDS), f"[noise.config_type.{ct}]")
    # no [noise] table: the noise is chosen from the data (GAP(noise=None))
    noise = NoiseModel(**noise_cfg) if "noise" in config else None
    e0 = config.get("e0", "least_squares")
    if isinstance(e0, dict):
        e0 = _int_keys(e0)
    kwargs = {k: data[k] for k in _DATA_KEYS - {"train"} if k in data}
    for key in ("jitter", "use", "random_state", "batch_atoms"):
        if key in config:
            kwargs[key] = config[key]
    baselines_cfg = config.get("baselines", [])
    if not isinstance(baselines_cfg, list):
        raise ConfigError("'baselines' must be an array of tables ([[baselines]])")
    if baselines_cfg:
        kwargs["baselines"] = [_build(BASELINES, b, f"[[baselines]] #{i + 1}")
                               for i, b in enumerate(baselines_cfg)]
    params = {"terms": terms, "noise": noise, "e0": e0, **kwargs}
    base = Path(base_dir) if base_dir is not None else None

    def resolve(p: str | Path | None) -> Path | None:
        if p is None:
            return None
        p = Path(p)
        return base / p if base is not None and not p.is_absolute() else p

    return ModelConfig(params, resolve(data.get("train")), resolve(config.get("output")))


def _drop_none(d: Mapping) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def to_config(model: Any, *, train: str | Path | None = None,
              output: str | Path | None = None) -> dict:
    """The settings of ``model`` (a GAP, fitted, loaded or not) as a config dict.

    ``GAP.from_config(to_config(m))`` builds a model with the same settings.
    A fitted or loaded model gives its fitted terms (species fixed) and, for a
    loaded one, its fitted e0 as a table of eV per species.
    """
    from ase.data import chemical_symbols

    terms = getattr(model, "terms_", None) or model.terms
    out: dict = {}
    if train is not None:
        out["data"] = {"train": str(train)}
    params = model.get_params()
    out.setdefault("data", {}).update({k: params[k] for k in KEY_NAMES})
    if output is not None:
        out["output"] = str(output)
    e0 = params["e0"]
    # a loaded model holds its fitted e0 values; refit with the method that produced them
    method = (getattr(model, "fit_info_", None) or {}).get("e0_method")
    if method and method != "given":
        e0 = method
    if isinstance(e0, dict):
        e0 = {(chemical_symbols[k] if isinstance(k, int) else str(k)): float(v)
              for k, v in e0.items()}
    out["e0"] = e0
    out["jitter"] = params["jitter"]
    out["use"] = list(params["use"])
    if params["random_state"] is not None:
        out["random_state"] = params["random_state"]
    out["batch_atoms"] = params["batch_atoms"]
    out["terms"] = []
    for t in terms:
        td = t.to_dict()
        desc = {"type": td["descriptor"]["type"], **_drop_none(td["descriptor"]["params"])}
        kern = {"type": td["kernel"]["type"], **_drop_none(td["kernel"]["params"])}
        term = {"descriptor": desc, "kernel": kern}
        n_sparse = td["n_sparse"]
        term["n_sparse"] = ({str(k): v for k, v in n_sparse.items()}
                            if isinstance(n_sparse, dict) else n_sparse)
        term["sparse_method"] = td["sparse_method"]
        if td["sparse_options"]:
            term["sparse_options"] = dict(td["sparse_options"])
        out["terms"].append(term)
    # a fitted model: the noise of its fit (learnt multipliers included), as its terms_
    noise = getattr(model, "noise_", None) or params["noise"]
    if noise is not None:  # None: no [noise] table, the noise is cross-validated
        out["noise"] = noise.to_dict()
        if not out["noise"]["config_type"]:
            del out["noise"]["config_type"]
    if params["baselines"]:
        out["baselines"] = [{"type": d["type"], **_drop_none(d["params"])}
                            for d in (b.to_dict() for b in params["baselines"])]
    return out



# ------------------------------------------------------------------ a small TOML writer
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} {v!r} to TOML")


def _toml_key(k: Any) -> str:
    k = str(k)
    return k if k and all(c.isalnum() or c in "_-" for c in k) else json.dumps(k)


def dump_toml(config: dict) -> str:
    """``config`` (the layout of :func:`to_config`) as TOML text."""
    lines = []
    tables = {k: v for k, v in config.items() if isinstance(v, dict) and k != "e0"}
    arrays = {k: v for k, v in config.items()
              if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    for k, v in config.items():
        if k not in tables and k not in arrays:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")

    def table(name: str, d: dict) -> None:
        lines.append(f"\n[{name}]")
        subs = {k: v for k, v in d.items() if isinstance(v, dict) and
                all(isinstance(x, dict) for x in v.values()) and v}
        for k, v in d.items():
            if k not in subs:
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subs.items():
            for kk, vv in v.items():
                table(f"{name}.{_toml_key(k)}.{_toml_key(kk)}", vv)

    for k, v in tables.items():
        table(_toml_key(k), v)
    for k, v in arrays.items():
        for item in v:
            lines.append(f"\n[[{_toml_key(k)}]]")
            for kk, vv in item.items():
                lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"



def load_toml(path: str | Path) -> dict:
    """Read a TOML config file (``tomllib``; ``tomli`` on Python 3.10)."""
    path = Path(path)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: tomli, a dependency there (pyproject.toml)
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading a TOML config needs Python >= 3.11 or the 'tomli' "
                              "package; or give key=value arguments") from None
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


