"""gap_fit's descriptor string, ``gap={soap ... : distance_2b ...}``, as gapkit terms.

gap_fit describes each term of the model by a descriptor name and ``key=value`` settings,
terms separated by ``:``. gapkit reads the two that QUIP users fit most:

- ``soap`` (covariance_type ``dot_product``): ``cutoff``, ``cutoff_transition_width``,
  ``n_max``, ``l_max``, ``atom_sigma``, ``central_weight``, ``zeta``, ``delta``,
  ``n_sparse``, ``sparse_method``, ``add_species``, ``n_species`` / ``species_Z``;
- ``distance_2b`` (or ``distance_Nb order=2``; covariance_type ``ard_se``): ``cutoff``,
  ``cutoff_transition_width``, ``delta``, ``theta_uniform`` (the length scale, Å),
  ``n_sparse``, ``sparse_method``, ``add_species``.

Defaults are gap_fit's where they differ from gapkit's (``cutoff_transition_width`` 0.5 Å,
``add_species=T``). With ``add_species=T`` gap_fit makes one descriptor per species (SOAP:
per central species; two-body: per species pair), each with ``n_sparse`` points; gapkit's
term covers them all, so its ``n_sparse`` is gap_fit's times the number of species (SOAP:
exactly ``n_sparse`` per species) or of species pairs (two-body: the total, split over the
pairs in proportion to their environments). :func:`resolve_per_species` does that once the
data's species are known. Settings that change what is fitted but gapkit does not have are
refused by name; an unknown key is refused with the known ones listed.
"""

from __future__ import annotations

from typing import Any

from .io import ConfigError

__all__ = ["parse_gap_string", "resolve_per_species"]

_SPARSE_METHODS = {"cur_points": "cur", "cur": "cur", "random": "random", "fps": "fps",
                   "uniform": "uniform"}
_COMMON = {"cutoff": "descriptor.cutoff", "cutoff_transition_width": "descriptor.cutoff_width",
           "delta": "kernel.delta", "n_sparse": "term.n_sparse",
           "sparse_method": "term.sparse_method", "add_species": "flag.add_species",
           "covariance_type": "check.covariance_type"}
_KEYS = {
    "soap": {**_COMMON, "n_max": "descriptor.n_max", "l_max": "descriptor.l_max",
             "atom_sigma": "descriptor.atom_sigma", "central_weight": "descriptor.central_weight",
             "zeta": "kernel.zeta", "n_species": "ignore.n_species",
             "species_z": "descriptor.species"},
    "distance_2b": {**_COMMON, "theta_uniform": "kernel.lengthscale", "order": "check.order"},
}
_COVARIANCE = {"soap": "dot_product", "distance_2b": "ard_se"}
_TYPES = {"soap": ("SOAP", "SOAPKernel"), "distance_2b": ("TwoBody", "TwoBodyKernel")}
_GAP_FIT_DEFAULT_WIDTH = 0.5  # gap_fit's cutoff_transition_width, Å


def _tokens(body: str) -> list[str]:
    """``key=value`` tokens; a value may be braced (``species_Z={1 6 8}``)."""
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch.isspace() and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
            continue
        depth += (ch == "{") - (ch == "}")
        cur += ch
    if cur:
        out.append(cur)
    return out


def _number(value: str, key: str) -> int | float:
    """A gap_fit number: an int when written as one, else a float; ConfigError naming
    ``key=value`` otherwise."""
    try:
        f = float(value)
    except ValueError:
        raise ConfigError(f"{key}={value}: expected a number") from None
    return int(f) if f.is_integer() and "." not in value and "e" not in value.lower() else f


def _bool(value: str, key: str) -> bool:
    """A gap_fit logical (T/F, true/false, 1/0, yes/no); ConfigError otherwise."""
    v = value.strip().lower()
    if v in ("t", "true", "1", "yes"):
        return True
    if v in ("f", "false", "0", "no"):
        return False
    raise ConfigError(f"{key}={value}: expected T or F")


def _one_term(text: str, index: int) -> tuple[dict, bool]:
    tokens = _tokens(text)
    if not tokens:
        raise ConfigError(f"gap={{...}} term {index + 1} is empty")
    name, settings = tokens[0].lower(), tokens[1:]
    if name == "distance_nb":
        name = "distance_2b"  # with order=2, checked below
        if not any(t.lower().startswith("order=") for t in settings):
            raise ConfigError(f"gap={{...}} term {index + 1}: distance_Nb needs order=2")
    where = f"gap={{...}} term {index + 1} ({name})"
    if name not in _KEYS:
        raise ConfigError(f"gap={{...}} term {index + 1}: descriptor {tokens[0]!r} is not one "
                         f"gapkit reads; use soap or distance_2b (or a TOML config for "
                         "symmetry functions)")
    term: dict[str, Any] = {"descriptor": {"type": _TYPES[name][0]},
                            "kernel": {"type": _TYPES[name][1]}}
    if name == "distance_2b":
        term["descriptor"]["cutoff_width"] = _GAP_FIT_DEFAULT_WIDTH
    per_species = True
    for token in settings:
        if "=" not in token:
            raise ConfigError(f"{where}: expected key=value, got {token!r}")
        key, value = token.split("=", 1)
        target = _KEYS[name].get(key.lower())
        if target is None:
            raise ConfigError(f"{where}: {key!r} is not a setting gapkit reads; known: "
                             f"{', '.join(sorted(_KEYS[name]))}")
        section, _, field = target.partition(".")
        if section == "descriptor" and field == "species":
            term["descriptor"]["species"] = [int(_number(v, f"{where} {key}")) for v in
                                             value.strip("{}").replace(",", " ").split()]
        elif section in ("descriptor", "kernel"):
            term[section][field] = _number(value, f"{where} {key}")
        elif field == "sparse_method":
            if value.lower() not in _SPARSE_METHODS:
                raise ConfigError(f"{where}: sparse_method={value}; use one of "
                                 f"{', '.join(_SPARSE_METHODS)}")
            term["sparse_method"] = _SPARSE_METHODS[value.lower()]
        elif field == "n_sparse":
            term["n_sparse"] = int(_number(value, f"{where} n_sparse"))
        elif field == "add_species":
            per_species = _bool(value, f"{where} {key}")
        elif field == "covariance_type" and value.lower() != _COVARIANCE[name]:
            raise ConfigError(f"{where}: covariance_type={value}; gapkit's {name} term has "
                             f"{_COVARIANCE[name]}")
        elif field == "order" and value.strip() != "2":
            raise ConfigError(f"{where}: order={value}; gapkit reads two-body terms (order=2)")
    return term, per_species


def parse_gap_string(value: str) -> tuple[list[dict], list[bool]]:
    """``gap={...}`` as config terms (the ``[[terms]]`` layout) and, per term, whether its
    ``n_sparse`` counts per species (gap_fit's ``add_species=T``)."""
    text = value.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not text.strip():
        raise ConfigError("gap={} is empty; describe at least one term, e.g. "
                         "gap={soap cutoff=5 n_max=8 l_max=6 atom_sigma=0.5 zeta=4 n_sparse=500}")
    parsed = [_one_term(part, i) for i, part in enumerate(text.split(":"))]
    return [t for t, _ in parsed], [p for _, p in parsed]


def resolve_per_species(model, per_species: list[bool], species) -> None:
    """Turn gap_fit's per-species ``n_sparse`` of the flagged terms of ``model`` into
    gapkit's: SOAP ``{Z: n_sparse}`` for each species, two-body ``n_sparse`` times the
    number of species pairs."""
    from .descriptors import SOAP

    species = sorted({int(z) for z in species})
    for term, flag in zip(model.terms, per_species):
        if not flag or not isinstance(term.n_sparse, int):
            continue
        if isinstance(term.descriptor, SOAP):
            fixed = term.descriptor.species
            term.n_sparse = {z: term.n_sparse for z in (fixed or species)}
        else:
            n = len(term.descriptor.species or species)
            term.n_sparse = term.n_sparse * (n * (n + 1) // 2)
