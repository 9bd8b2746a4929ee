"""Labels of a frame (energy, forces, virial, config_type and per-frame sigmas) read from
``atoms.info``/``atoms.arrays`` or an ASE calculator under gap_fit's keys, all renameable."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import ase
import ase.io
import numpy as np
import numpy.typing as npt

from ._helpers import (
    _as_float_array,
    _check_finite,
    _frame,
    _lookup,
    _volume,
    _where_to_look,
)
from .voigt import _to_3x3

#: The label kinds, in observation-row order: the one spelling every module reads
#: (``gapkit.gp.KINDS`` is this tuple; also the names ``require`` accepts).
LABEL_NAMES = ("energy", "forces", "virial")


#: ``atoms.info`` keys read as per-configuration noise overrides (as in ``gap_fit``).
#: ``forces_sigma`` is accepted as a synonym of gap_fit's ``force_sigma``.
SIGMA_KEYS = {
    "energy_sigma": ("energy_sigma",),
    "forces_sigma": ("force_sigma", "forces_sigma"),
    "virial_sigma": ("virial_sigma",),
}


@dataclass(frozen=True, eq=False)
class Labels:
    """Reference labels of one configuration.

    Parameters
    ----------
    energy : float or None
        Total energy, eV. ``None`` when the configuration has no energy label.
    forces : ndarray of shape (n_atoms, 3) or None
        Forces, eV/Å.
    virial : ndarray of shape (3, 3) or None
        Virial, eV, GAP sign convention ``virial = -stress * volume`` (positive under
        compression).
    config_type : str
        Configuration type (``gap_fit``'s ``config_type``), ``"default"`` when absent.
    energy_sigma : float or None
        Per-configuration noise override for the energy, eV (``energy_sigma`` in extxyz).
    forces_sigma : float or None
        Per-configuration noise override for the forces, eV/Å (``force_sigma`` or
        ``forces_sigma``).
    virial_sigma : float or None
        Per-configuration noise override for the virial, eV (``virial_sigma``).

    Notes
    -----
    The arrays are stored as read-only float64 copies. Instances compare by identity
    (``eq=False``), since element-wise array comparison has no single truth value.
    """

    energy: float | None = None
    forces: npt.NDArray[np.float64] | None = None
    virial: npt.NDArray[np.float64] | None = None
    config_type: str = "default"
    energy_sigma: float | None = None
    forces_sigma: float | None = None
    virial_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.energy is not None:
            energy = float(self.energy)
            if not math.isfinite(energy):
                raise ValueError(f"energy must be finite, got {energy}")
            object.__setattr__(self, "energy", energy)
        if self.forces is not None:
            forces = np.array(self.forces, dtype=np.float64)
            if forces.ndim != 2 or forces.shape[1] != 3:
                raise ValueError(f"forces must have shape (n_atoms, 3), got {forces.shape}")
            if not np.all(np.isfinite(forces)):
                raise ValueError("forces contain NaN or inf")
            forces.setflags(write=False)
            object.__setattr__(self, "forces", forces)
        if self.virial is not None:
            virial = np.array(self.virial, dtype=np.float64)
            if virial.shape != (3, 3):
                raise ValueError(f"virial must have shape (3, 3), got {virial.shape}")
            if not np.all(np.isfinite(virial)):
                raise ValueError("virial contains NaN or inf")
            virial.setflags(write=False)
            object.__setattr__(self, "virial", virial)
        object.__setattr__(self, "config_type", str(self.config_type))
        for name in ("energy_sigma", "forces_sigma", "virial_sigma"):
            value = getattr(self, name)
            if value is not None:
                value = float(value)
                if not (math.isfinite(value) and value > 0.0):
                    raise ValueError(f"{name} must be a finite positive number, got {value}")
                object.__setattr__(self, name, value)


def _read_sigmas(atoms: ase.Atoms, frame_index: int | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, keys in SIGMA_KEYS.items():
        found = {k: atoms.info[k] for k in keys if k in atoms.info}
        if not found:
            out[name] = None
            continue
        values = {}
        for key, raw in found.items():
            value = _as_float_array(raw, what=f"{key!r}", frame_index=frame_index)
            if value.shape != () or not (np.isfinite(value) and value > 0.0):
                raise ValueError(
                    f"{_frame(frame_index)}{key!r} must be one finite positive number, got "
                    f"{raw!r}; fix it in the file or remove it to use the default noise"
                )
            values[key] = float(value)
        if len(set(values.values())) > 1:
            raise ValueError(
                f"{_frame(frame_index)}conflicting noise overrides {values}; keep only one of "
                f"{list(keys)}"
            )
        out[name] = next(iter(values.values()))
    return out


def get_labels(
    atoms: ase.Atoms,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    virial_key: str = "virial",
    stress_key: str = "stress",
    config_type_key: str = "config_type",
    frame_index: int | None = None,
) -> Labels:
    """Extract and check the reference labels of one configuration.

    Each label is looked up in ``atoms.info`` (per-configuration) or ``atoms.arrays``
    (per-atom) first, then, when the key is a standard ASE property name (``energy``,
    ``forces``, ``stress``, ...), in the results of a ``SinglePointCalculator`` attached to
    ``atoms`` (where ASE ≥ 3.23 puts them when reading extxyz). Results of any other calculator
    are predictions and are never read as labels.

    Parameters
    ----------
    atoms : ase.Atoms
        The configuration.
    energy_key : str, default "energy"
        Key of the total energy, eV.
    forces_key : str, default "forces"
        Key of the per-atom forces, eV/Å, shape (n_atoms, 3).
    virial_key : str, default "virial"
        Key of the virial, eV (GAP convention ``-stress * volume``): a 3x3 matrix, 9 numbers
        (row-major) or 6 numbers in ASE Voigt order (xx, yy, zz, yz, xz, xy).
    stress_key : str, default "stress"
        Key of the stress, eV/Å³, ASE sign (positive under tension), Voigt-6 or 3x3. Used only
        when there is no virial; the virial is then ``-stress * volume``, which needs a
        non-singular cell.
    config_type_key : str, default "config_type"
        Key of the configuration type; ``"default"`` when absent. Non-string values (extxyz
        reads ``config_type=1`` as an integer) are converted with ``str``.
    frame_index : int, optional
        Index of the configuration in its data set; named in error messages.

    Returns
    -------
    Labels
        The labels; a missing label is ``None``. Per-configuration noise overrides are read from
        ``atoms.info`` keys ``energy_sigma`` (eV), ``force_sigma`` or ``forces_sigma`` (eV/Å)
        and ``virial_sigma`` (eV), as in ``gap_fit``.

    Raises
    ------
    ValueError
        If a label has the wrong shape, is not numeric, or contains NaN or inf; if a stress
        must be converted but the cell is singular; if a noise override is not a positive
        number. The message names the frame (when ``frame_index`` is given) and the key.
    """
    where = _frame(frame_index)

    energy = None
    found = _lookup(atoms, energy_key, per_atom=False)
    if found is not None:
        raw, place = found
        value = _as_float_array(
            raw, what=f"energy ({place}[{energy_key!r}])", frame_index=frame_index
        )
        if value.shape != ():
            raise ValueError(
                f"{where}energy ({place}[{energy_key!r}]) has shape {value.shape}; expected one "
                "number (the total energy in eV); check energy_key"
            )
        _check_finite(value, what=f"energy ({place}[{energy_key!r}])", frame_index=frame_index)
        energy = float(value)

    forces = None
    found = _lookup(atoms, forces_key, per_atom=True)
    if found is None and forces_key in atoms.info:
        found = atoms.info[forces_key], "atoms.info"
    if found is not None:
        raw, place = found
        what = f"forces ({place}[{forces_key!r}])"
        forces = _as_float_array(raw, what=what, frame_index=frame_index)
        if forces.shape != (len(atoms), 3):
            raise ValueError(
                f"{where}{what} has shape {forces.shape}; expected ({len(atoms)}, 3) for "
                f"{len(atoms)} atoms; check forces_key"
            )
        _check_finite(forces, what=what, frame_index=frame_index)

    virial = None
    found = _lookup(atoms, virial_key, per_atom=False)
    if found is not None:
        raw, place = found
        what = f"virial ({place}[{virial_key!r}])"
        array = _as_float_array(raw, what=what, frame_index=frame_index)
        virial = _to_3x3(array, what=what, frame_index=frame_index)
        _check_finite(virial, what=what, frame_index=frame_index)
    else:
        found = _lookup(atoms, stress_key, per_atom=False)
        if found is not None:
            raw, place = found
            what = f"stress ({place}[{stress_key!r}])"
            array = _as_float_array(raw, what=what, frame_index=frame_index)
            stress = _to_3x3(array, what=what, frame_index=frame_index)
            _check_finite(stress, what=what, frame_index=frame_index)
            virial = -stress * _volume(atoms, what=what, frame_index=frame_index)

    config_type = atoms.info.get(config_type_key)
    config_type = "default" if config_type is None else str(config_type)

    return Labels(
        energy=energy,
        forces=forces,
        virial=virial,
        config_type=config_type,
        **_read_sigmas(atoms, frame_index),
    )


def _normalise_require(require: str | Iterable[str]) -> tuple[str, ...]:
    names = (require,) if isinstance(require, str) else tuple(require)
    unknown = [n for n in names if n not in LABEL_NAMES]
    if unknown:
        raise ValueError(
            f"require={names!r}: unknown label(s) {unknown}; choose from {LABEL_NAMES}"
        )
    return names


def _labels_of_frames(
    frames: Iterable[ase.Atoms],
    frame_numbers: Iterable[int],
    require: tuple[str, ...],
    keys: dict[str, str],
) -> list[Labels]:
    out = []
    for atoms, k in zip(frames, frame_numbers):
        labels = get_labels(atoms, frame_index=k, **keys)
        for name in require:
            if getattr(labels, name) is not None:
                continue
            if name == "virial":
                looked = (
                    f"virial_key={keys.get('virial_key', 'virial')!r} or "
                    f"stress_key={keys.get('stress_key', 'stress')!r}"
                )
                fix = "pass virial_key=... or stress_key=... naming the right field"
            else:
                looked = f"{name}_key={keys.get(f'{name}_key', name)!r}"
                fix = f"pass {name}_key=... naming the right field"
            raise ValueError(
                f"frame {k}: required {name} label not found (looked for {looked}); this frame "
                f"has {_where_to_look(atoms)}. Fix: {fix}, add the {name} to this frame, or drop "
                f"{name!r} from require"
            )
        out.append(labels)
    return out


def get_all_labels(
    frames: Iterable[ase.Atoms],
    *,
    require: str | Iterable[str] = (),
    **keys: str,
) -> list[Labels]:
    """Extract and check the labels of every configuration.

    Parameters
    ----------
    frames : iterable of ase.Atoms
        The configurations; their position in ``frames`` is the frame index named in errors.
    require : iterable of {"energy", "forces", "virial"}, default ()
        Labels every configuration must have.
    **keys : str
        Key names passed on to :func:`get_labels`: ``energy_key``, ``forces_key``,
        ``virial_key``, ``stress_key``, ``config_type_key``.

    Returns
    -------
    list of Labels
        One per configuration, in order.

    Raises
    ------
    ValueError
        If a label is malformed (see :func:`get_labels`), or a required label is missing; the
        message names the frame, the key looked for, the keys that frame does have and the fix.
    """
    if "frame_index" in keys:
        raise TypeError("get_all_labels numbers the frames itself; do not pass frame_index")
    names = _normalise_require(require)
    frames = list(frames)
    return _labels_of_frames(frames, range(len(frames)), names, keys)


#: what a key holding each label kind tends to be called (lower case)
_LOOKS_LIKE = {"energy": ("energ",), "forces": ("force", "grad"), "virial": ("virial", "stress")}
_KEY_OF = {"energy": ("energy_key", "energy"), "forces": ("forces_key", "forces"),
           "virial": ("virial_key", "virial")}


def check_label_keys(frames: Iterable[ase.Atoms], labels: list, use: Iterable[str],
                     keys: dict) -> list:
    """``labels`` (of ``frames``, read with ``keys``) unchanged, unless a label kind in
    ``use`` is in none of them while the frames carry a key that looks like one (an
    ``energy_key`` typo): then a ValueError naming the key looked for, the look-alike keys
    and the two fixes. Data that truly lack a kind (forces-only sets, molecules without
    virials) pass; no frames, or frames with no label of any kind in use, do not."""
    use = tuple(use)
    if not labels:
        raise ValueError("no frames to fit (an empty list or file)")
    for kind in ("energy", "forces", "virial"):
        if kind not in use or any(getattr(lab, kind) is not None for lab in labels):
            continue
        name, default = _KEY_OF[kind]
        key = keys.get(name, default)
        present: set = set()
        for atoms in frames:
            present |= set(atoms.info) | set(atoms.arrays)
            if atoms.calc is not None:
                present |= set(getattr(atoms.calc, "results", {}))
        like = sorted(k for k in present - {key}
                      if any(p in str(k).lower() for p in _LOOKS_LIKE[kind])
                      and not str(k).lower().endswith(("_sigma", "_property", "_weight")))
        if like:
            rest = tuple(k for k in use if k != kind)
            raise ValueError(
                f"no frame has {kind} labels under {name}={key!r}, but the frames carry "
                f"{like}: pass {name}={like[0]!r} (to GAP(...) or in the config), or, to fit "
                f"without {kind}, use={rest!r}")
    if not any(getattr(lab, kind) is not None for lab in labels for kind in use):
        wanted = ", ".join(f"{kind} under {_KEY_OF[kind][0]}="
                           f"{keys.get(_KEY_OF[kind][0], _KEY_OF[kind][1])!r}"
                           for kind in ("energy", "forces", "virial") if kind in use)
        carried = sorted({str(k) for a in frames for k in [*a.info, *a.arrays]}
                         - {"numbers", "positions"})
        raise ValueError(f"no frame carries a label to fit ({wanted}); the frames carry "
                         f"{carried or 'no other keys'}: point the key arguments at the "
                         f"labels, or label the frames (e.g. gapkit.labelling)")
    return labels
