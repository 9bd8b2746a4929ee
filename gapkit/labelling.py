"""Labelling frames with one ASE calculator (the labeller) under gap_fit's keys, the
labeller record every frame carries and the check that a data set has one level of theory.

Used by data generation (:mod:`gapkit.generate`), active learning and the test helpers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import ase
import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from .data import LABEL_NAMES, stress_to_virial

__all__ = ["LABELLER_KEYS", "LabellingError", "check_consistent", "label", "labeller_record"]

#: Keys of ``atoms.info`` that :func:`check_consistent` compares between frames.
LABELLER_KEYS = ("labeller", "labeller_settings", "energy_property")
_PROPERTIES = LABEL_NAMES

# Labels and labeller records that must not travel from a parent structure to a perturbed copy.
_LABEL_INFO_KEYS = ("energy", "free_energy", "virial", "stress", "forces") + LABELLER_KEYS
_LABEL_ARRAY_KEYS = ("forces", "momenta")


def _fresh(atoms: ase.Atoms) -> ase.Atoms:
    """A copy without calculator, labels or labeller record (they belong to the parent)."""
    out = atoms.copy()
    out.calc = None
    for key in _LABEL_INFO_KEYS:
        out.info.pop(key, None)
    for key in _LABEL_ARRAY_KEYS:
        if key in out.arrays:
            del out.arrays[key]
    return out


class LabellingError(ValueError, RuntimeError):
    """The labeller failed on a frame; the message names the frame index and config_type.

    Subclasses both ``ValueError`` and ``RuntimeError``; the labeller's own exception is the
    ``__cause__``.
    """



def _jsonable(value: Any) -> Any:
    """JSON fallback for calculator parameters: arrays to lists, dataclasses to their
    fields, other objects to their class name (never a repr with a memory address, which
    would differ between runs)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "todict"):
        try:
            return value.todict()
        except Exception:  # any failure: fall back to the name
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # parameter records (e.g. ase's TersoffParameters): their values, by field
        return {"__class__": type(value).__name__, **{
            f.name: getattr(value, f.name) for f in dataclasses.fields(value)}}
    return f"<{type(value).__name__}>"


def labeller_record(calculator: Any) -> tuple[str, str]:
    """The labeller's class name and a JSON string of its settings.

    The settings are ``calculator.todict(skip_default=False)`` (all parameters, defaults
    included, so a change of a code's default shows), falling back to ``todict()`` and then to
    ``calculator.parameters``; keys sorted, numpy arrays as lists, other objects as
    ``"<ClassName>"``.
    """
    settings: Any = None
    todict = getattr(calculator, "todict", None)
    if callable(todict):
        try:
            settings = todict(skip_default=False)
        except TypeError:
            try:
                settings = todict()
            except Exception:
                settings = None
        except Exception:
            settings = None
    if settings is None:
        settings = dict(getattr(calculator, "parameters", None) or {})
    return type(calculator).__name__, json.dumps(_str_keys(settings), sort_keys=True,
                                                 default=_jsonable)


def _str_keys(value: Any) -> Any:
    """``value`` with every mapping key a string (JSON allows no others; e.g. a pair
    potential keyed by species pairs ``("Cu", "Ag")`` becomes ``"('Cu', 'Ag')"``)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_str_keys(v) for v in value]
    return value


def _normalise_properties(properties: Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """(properties, virial_explicit)."""
    if properties is None:
        return _PROPERTIES, False
    if isinstance(properties, str):
        properties = (properties,)
    names = []
    for p in properties:
        name = "virial" if p == "stress" else p
        if name not in _PROPERTIES:
            raise ValueError(
                f"properties: unknown property {p!r}; choose from "
                f"{list(_PROPERTIES) + ['stress']}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("properties is empty; give at least one of energy, forces, virial")
    return tuple(names), "virial" in names


def _check_virial_possible(atoms: ase.Atoms, properties: Sequence[str] | None) -> None:
    """Fail before any MD or generation when a virial is asked of a non-periodic structure."""
    _, virial_explicit = _normalise_properties(properties)
    if virial_explicit and not atoms.pbc.all():
        raise ValueError(
            f"properties asks for a virial but atoms is not fully periodic "
            f"(pbc={atoms.pbc.tolist()}); drop 'virial' from properties (or leave "
            "properties=None) or give the structure a periodic cell"
        )


def label(
    frames: ase.Atoms | Iterable[ase.Atoms],
    calculator: Any,
    *,
    properties: Sequence[str] | None = None,
    energy_property: str = "energy",
    progress: bool = True,
    store: str = "calculator",
) -> list[ase.Atoms]:
    """Label frames with one calculator: energy, forces and virial under gap_fit's keys.

    Each frame is copied, ``calculator`` is run on the copy, and the results are stored

    * energy (eV) and forces (eV/Å) -- and the stress (eV/Å³, ASE sign) of periodic frames --
      in a :class:`~ase.calculators.singlepoint.SinglePointCalculator` attached to the frame,
      so ``atoms.get_potential_energy()`` works and ``ase.io.write`` writes them as extxyz
      ``energy``, ``forces`` and ``stress``;
    * the virial ``-stress * volume`` (eV, 3x3, positive under compression) in
      ``atoms.info["virial"]``, for fully periodic frames only;
    * the labeller record: ``info["labeller"]`` (class name), ``info["labeller_settings"]``
      (JSON string, see :func:`labeller_record`) and ``info["energy_property"]``.

    :func:`gapkit.data.get_labels` reads these with its default keys, in memory and after an
    extxyz write/read round trip (where ASE moves energy/forces/stress into a
    ``SinglePointCalculator`` again).

    Parameters
    ----------
    frames : ase.Atoms or iterable of ase.Atoms
        Frames to label; not modified (their old labels are dropped from the copies).
    calculator : ASE calculator
        The labeller; the same object (same settings) for every frame.
    properties : sequence of {"energy", "forces", "virial"}, optional
        What to compute (``"stress"`` is a synonym of ``"virial"``). Default: all three, the
        virial only for fully periodic frames. Asking for ``"virial"`` explicitly on a frame
        that is not fully periodic is an error.
    energy_property : {"energy", "free_energy"}, default "energy"
        Which calculator energy becomes the ``energy`` label. ``"energy"`` is what
        ``get_potential_energy()`` returns; ``"free_energy"`` is the Mermin free energy of
        smeared DFT, the one the forces are the derivative of (the force-consistent choice).
    progress : bool, default True
        Show a tqdm progress bar.
    store : {"calculator", "info"}, default "calculator"
        Where energy and forces go: a ``SinglePointCalculator`` (above), or, with
        ``"info"``, ``atoms.info["energy"]`` and ``atoms.arrays["forces"]`` with no
        calculator attached (the layout of an extxyz file written by gap_fit users, and
        handy in tests that then edit a label). The virial is in ``info["virial"]``
        either way; ``"info"`` stores no stress.

    Returns
    -------
    list of ase.Atoms
        The labelled copies, in order (the input frames are never modified).

    Raises
    ------
    ValueError
        For an unknown property, or ``"virial"`` asked for a frame that is not fully periodic
        (the message names the frame).
    LabellingError
        If the calculator raises on a frame; the message names the frame index, its
        config_type and the calculator, and the original exception is the cause.
    """
    from tqdm.auto import tqdm

    if isinstance(frames, ase.Atoms):
        frames = [frames]
    frames = list(frames)
    names, virial_explicit = _normalise_properties(properties)
    if energy_property not in ("energy", "free_energy"):
        raise ValueError(
            f"energy_property must be 'energy' or 'free_energy', got {energy_property!r}"
        )
    for k, frame in enumerate(frames):
        if not isinstance(frame, ase.Atoms):
            raise ValueError(f"frame {k} is a {type(frame).__name__}, not an ase.Atoms")
        if virial_explicit and not frame.pbc.all():
            raise ValueError(
                f"frame {k} (config_type {frame.info.get('config_type', 'default')!r}) is not "
                f"fully periodic (pbc={frame.pbc.tolist()}), so it has no virial; drop 'virial' "
                "from properties (or leave properties=None) or give it a periodic cell"
            )
    if store not in ("calculator", "info"):
        raise ValueError(f"store must be 'calculator' or 'info', got {store!r}")
    name, settings = labeller_record(calculator)
    out = []
    for k, frame in enumerate(tqdm(frames, desc=f"labelling with {name}",
                                   disable=not progress, leave=False)):
        atoms = _fresh(frame)
        if "momenta" in frame.arrays:  # MD velocities are provenance, not labels: keep them
            atoms.set_momenta(frame.get_momenta(), apply_constraint=False)
        periodic = bool(atoms.pbc.all())
        results: dict[str, Any] = {}
        atoms.calc = calculator
        try:
            if "energy" in names:
                results["energy"] = float(calculator.get_property(energy_property, atoms))
            if "forces" in names:
                results["forces"] = np.array(calculator.get_property("forces", atoms),
                                             dtype=np.float64)
            if "virial" in names and periodic:
                results["stress"] = np.array(calculator.get_property("stress", atoms),
                                             dtype=np.float64)
        except Exception as err:  # re-raised with the frame named
            atoms.calc = None
            raise LabellingError(
                f"frame {k} (config_type {frame.info.get('config_type', 'default')!r}): the "
                f"labeller {name} failed: {type(err).__name__}: {err}; fix or drop this frame"
            ) from err
        atoms.calc = None
        if "stress" in results:
            atoms.info["virial"] = stress_to_virial(results["stress"], atoms.get_volume())
        if store == "info":
            if "energy" in results:
                atoms.info["energy"] = results["energy"]
            if "forces" in results:
                atoms.arrays["forces"] = results["forces"]
        else:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["labeller"] = name
        atoms.info["labeller_settings"] = settings
        atoms.info["energy_property"] = energy_property
        out.append(atoms)
    return out


def check_consistent(frames: Iterable[ase.Atoms]) -> dict[str, str]:
    """Check that every frame was labelled at one level of theory.

    Compares ``info["labeller"]``, ``info["labeller_settings"]`` and
    ``info["energy_property"]`` (as written by :func:`label`) of every frame with those of
    frame 0.

    Parameters
    ----------
    frames : iterable of ase.Atoms

    Returns
    -------
    dict
        The shared record (``labeller``, ``labeller_settings``, ``energy_property``).

    Raises
    ------
    ValueError
        If there are no frames, a frame has no labeller record, or a frame's record differs
        from frame 0's; the message names the first such frame and the differing key.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("check_consistent got no frames")
    reference: dict[str, str] | None = None
    for k, atoms in enumerate(frames):
        missing = [key for key in LABELLER_KEYS if key not in atoms.info]
        ct = atoms.info.get("config_type", "default")
        if missing:
            raise ValueError(
                f"frame {k} (config_type {ct!r}) has no labeller record {missing}; label every "
                "frame with gapkit.generate.label using one calculator"
            )
        record = {key: str(atoms.info[key]) for key in LABELLER_KEYS}
        if reference is None:
            reference = record
            continue
        for key in LABELLER_KEYS:
            if record[key] != reference[key]:
                raise ValueError(
                    f"frame {k} (config_type {ct!r}) has {key}={record[key]!r} but frame 0 has "
                    f"{reference[key]!r}: the data mixes levels of theory; relabel all frames "
                    "with one calculator (gapkit.generate.label)"
                )
    assert reference is not None
    return reference
