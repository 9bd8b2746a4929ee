"""Observations of a GAP: total energies, force components and virials, with their noise.

Each observation is one row of the design matrix: a linear functional of the local
energies. Rows are ordered frame by frame: the energy, then the forces (atom-major,
x y z), then the six virial components in ASE's Voigt order (xx, yy, zz, yz, xz, xy).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .._checks import positive
from ..data import LABEL_NAMES, VOIGT, Labels, get_all_labels

__all__ = ["ENERGY", "FORCES", "KINDS", "VIRIAL", "VOIGT", "NoiseModel", "Observations",
           "build_observations", "fit_e0", "warn_implausible"]

#: observation kinds: ``Observations.kind`` holds these codes, ``KINDS[code]`` their names
ENERGY, FORCES, VIRIAL = 0, 1, 2
KINDS = LABEL_NAMES  # one spelling of the label kinds, in row order: gapkit.data's


def _check_per_kind(values: Mapping[str, float], where: str) -> None:
    """``values`` maps kinds to finite numbers > 0; ValueError naming ``where`` otherwise."""
    unknown = set(values) - set(KINDS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; use {list(KINDS)}")
    for name, value in values.items():
        positive(value, f"{where}[{name!r}]")


@dataclass(frozen=True)
class NoiseModel:
    """Observation noise (standard deviations), as gap_fit's ``default_sigma``.

    Parameters
    ----------
    energy : float
        Energy noise, eV per atom when ``per_atom`` (the default; a frame of ``N``
        atoms gets ``energy * sqrt(N)`` eV), else eV per frame.
    forces : float
        Noise of each force component, eV/Å.
    virial : float
        Virial noise, eV per atom when ``per_atom`` (scaled by ``sqrt(N)``), else eV.
    per_atom : bool
        gap_fit's ``sigma_per_atom``.
    config_type : mapping of str to mapping
        Overrides per ``config_type``, e.g. ``{"Surface": {"energy": 0.005}}``
        (gap_fit's ``config_type_sigma``); keys ``energy``, ``forces``, ``virial``.
    scale : mapping of str to float
        A multiplier per kind (``energy``, ``forces``, ``virial``; 1 when absent)
        applied to *every* source of sigma: the defaults above, the ``config_type``
        overrides and the per-frame values. This is what
        :meth:`gapkit.GAP.optimize_hyperparameters` learns, so that the ratios the
        user gave (between config types, between frames) are kept and the refit uses
        exactly the noise that was optimised.
    config_type_scale : mapping of str to mapping
        Further multipliers per ``config_type`` and kind, e.g. ``{"Surface": {"energy":
        2.1}}`` (what ``optimize_hyperparameters(noise_groups="config_type")`` learns),
        applied on top of ``scale`` to every sigma of that config_type, per-frame values
        included.

    Per-frame values in ``atoms.info`` (``energy_sigma``, ``force_sigma``,
    ``virial_sigma``, as gap_fit reads them) override the defaults and the
    ``config_type`` values, with the same per-atom interpretation; ``scale`` then
    multiplies whichever was chosen. :meth:`sigmas` is the one place that does this.
    """

    energy: float = 0.001
    forces: float = 0.05
    virial: float = 0.01
    per_atom: bool = True
    config_type: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    scale: Mapping[str, float] = field(default_factory=dict)
    config_type_scale: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self):
        for name in KINDS:
            value = getattr(self, name)
            positive(value, f"NoiseModel.{name}")
        _check_per_kind(self.scale, "NoiseModel.scale")
        for field_name in ("config_type", "config_type_scale"):
            for ct, over in getattr(self, field_name).items():
                _check_per_kind(over, f"NoiseModel.{field_name}[{ct!r}]")

    def kind_scale(self, kind: str, config_type: str | None = None) -> float:
        """The multiplier of ``kind`` (``"energy"``, ``"forces"`` or ``"virial"``), for
        ``config_type`` when given (``scale`` times ``config_type_scale``)."""
        over = self.config_type_scale.get(config_type, {}) if config_type is not None else {}
        return float(self.scale.get(kind, 1.0)) * float(over.get(kind, 1.0))

    def sigma(self, kind: str, config_type: str | None = None) -> float:
        """The sigma of ``kind`` for a frame without a per-frame value: the
        ``config_type`` override or the default, times :attr:`scale` (eV/atom or eV
        for energies and virials, as ``per_atom`` says; eV/Å for forces)."""
        if kind not in KINDS:
            raise ValueError(f"unknown observation kind {kind!r}; use {list(KINDS)}")
        over = self.config_type.get(config_type, {}) if config_type is not None else {}
        value = over.get(kind, getattr(self, kind))
        return float(value) * self.kind_scale(kind, config_type)

    def sigmas(self, labels: Labels, n_atoms: int) -> tuple[float, float, float]:
        """(energy eV, force eV/Å, virial eV) standard deviations for one frame.

        Per-frame value, else ``config_type`` override, else default; times
        :attr:`scale`; times ``sqrt(n_atoms)`` for energies and virials when
        ``per_atom``."""
        over = self.config_type.get(labels.config_type, {})
        e = labels.energy_sigma or over.get("energy", self.energy)
        f = labels.forces_sigma or over.get("forces", self.forces)
        v = labels.virial_sigma or over.get("virial", self.virial)
        ct = labels.config_type
        e, f, v = (x * self.kind_scale(k, ct) for x, k in zip((e, f, v), KINDS))
        if self.per_atom:
            root_n = float(np.sqrt(n_atoms))
            e, v = e * root_n, v * root_n
        return float(e), float(f), float(v)

    def rescaled(self, factors) -> "NoiseModel":
        """A copy whose :attr:`scale` is multiplied by ``factors`` (energy, forces,
        virial)."""
        from dataclasses import replace

        new = {k: self.kind_scale(k) * float(f) for k, f in zip(KINDS, factors)}
        return replace(self, scale={k: v for k, v in new.items() if v != 1.0})

    def rescaled_config_types(self, factors: Mapping[str, Mapping[str, float]]) -> "NoiseModel":
        """A copy whose ``config_type_scale`` is multiplied by ``factors``
        (``{config_type: {kind: factor}}``)."""
        from dataclasses import replace

        new = {ct: dict(over) for ct, over in self.config_type_scale.items()}
        for ct, over in factors.items():
            for kind, f in over.items():
                new.setdefault(ct, {})[kind] = new.get(ct, {}).get(kind, 1.0) * float(f)
        new = {ct: {k: v for k, v in over.items() if v != 1.0} for ct, over in new.items()}
        return replace(self, config_type_scale={ct: o for ct, o in new.items() if o})

    def to_dict(self) -> dict:
        out = {"energy": self.energy, "forces": self.forces, "virial": self.virial,
               "per_atom": self.per_atom,
               "config_type": {k: dict(v) for k, v in self.config_type.items()}}
        if self.scale:  # written only when set, so that older readers load the rest
            out["scale"] = {k: float(v) for k, v in self.scale.items()}
        if self.config_type_scale:
            out["config_type_scale"] = {ct: {k: float(v) for k, v in over.items()}
                                        for ct, over in self.config_type_scale.items()}
        return out


@dataclass(frozen=True)
class Observations:
    """Flat list of observations of a set of frames.

    Attributes (all ndarray of shape (n_rows,))
    ----------
    frame : frame index; kind : :data:`ENERGY`, :data:`FORCES` or :data:`VIRIAL`; atom : atom index
    within the frame (forces) or -1; component : x/y/z (0-2) for forces, Voigt
    index (0-5) for virials, -1 for energies; y : the label, minus the e0
    baseline for energies (eV, eV/Å, eV); sigma : noise standard deviation;
    config_type : the frame's config_type (str, object array; ``"default"`` when the
    frame has none or the rows were made without it), so that the noise can be grouped
    without reading the frames again.
    """

    frame: np.ndarray
    kind: np.ndarray
    atom: np.ndarray
    component: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    config_type: np.ndarray | None = None

    def __post_init__(self):
        if self.config_type is None:  # rows built without one (before 0.2): "default"
            object.__setattr__(self, "config_type",
                               np.full(self.y.shape[0], "default", dtype=object))

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])

    def select(self, rows) -> "Observations":
        return Observations(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))

    def counts(self) -> dict:
        return {name: int((self.kind == i).sum()) for i, name in enumerate(KINDS)}

    def shifted(self, frame_offset: int) -> "Observations":
        """The same rows with ``frame_offset`` subtracted from the frame indices."""
        return dataclasses.replace(self, frame=self.frame - frame_offset)


def baseline_energies(frames, e0: Mapping[int, float]) -> np.ndarray:
    """Sum of e0 over the atoms of each frame, eV."""
    out = np.empty(len(frames))
    for k, atoms in enumerate(frames):
        try:
            out[k] = sum(e0[int(z)] for z in atoms.numbers)
        except KeyError as err:
            from ase.data import chemical_symbols

            z = int(err.args[0])
            raise ValueError(f"frame {k}: no e0 for species {chemical_symbols[z]} (Z={z}); "
                             "give it in e0={...} or fit e0 on data that contains it") from None
    return out


def build_observations(frames: Sequence, labels: Sequence[Labels], noise: NoiseModel,
                       e0: Mapping[int, float], use: Sequence[str] = KINDS) -> Observations:
    """The observation rows of ``frames`` that have labels, in row order (see module)."""
    use = tuple(use)
    unknown = set(use) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown observation kinds {sorted(unknown)}; use {list(KINDS)}")
    base = baseline_energies(frames, e0)
    names = [f.name for f in dataclasses.fields(Observations)]
    cols: dict[str, list] = {f: [] for f in names}

    def add(frame, kind, atom, comp, y, sigma):
        n = len(y)
        cols["config_type"].append(np.full(n, labels[frame].config_type, dtype=object))
        cols["frame"].append(np.full(n, frame))
        cols["kind"].append(np.full(n, kind))
        cols["atom"].append(np.asarray(atom))
        cols["component"].append(np.asarray(comp))
        cols["y"].append(np.asarray(y, dtype=np.float64))
        cols["sigma"].append(np.full(n, sigma))

    for k, (atoms, lab) in enumerate(zip(frames, labels)):
        n = len(atoms)
        se, sf, sv = noise.sigmas(lab, n)
        if "energy" in use and lab.energy is not None:
            add(k, ENERGY, [-1], [-1], [lab.energy - base[k]], se)
        if "forces" in use and lab.forces is not None:
            add(k, FORCES, np.repeat(np.arange(n), 3), np.tile(np.arange(3), n),
                np.asarray(lab.forces).reshape(-1), sf)
        if "virial" in use and lab.virial is not None:
            w = np.asarray(lab.virial)
            add(k, VIRIAL, np.full(6, -1), np.arange(6), [w[a, b] for a, b in VOIGT], sv)
    if not cols["y"]:
        raise ValueError(f"none of the {len(frames)} frames has a {'/'.join(use)} label to fit; "
                         "check the energy_key/forces_key/virial_key names")
    return Observations(*(np.concatenate(cols[f]) for f in names))


def fit_e0(frames: Sequence, labels: Sequence[Labels] | None = None, method="least_squares",
           species: Sequence[int] | None = None) -> dict[int, float]:
    """Per-species energy offsets e0 (eV), the baseline the GP is fitted on top of.

    Parameters
    ----------
    method : {"least_squares", "isolated", "zero"} or mapping
        ``"least_squares"``: minimise sum_A (E_A - sum_s n_As e0_s)^2 over frames
        with energies (per-atom average for one species); ``"isolated"``: the
        energies of single-atom frames (isolated atoms, as gap_fit's
        ``e0_method=isolated``); ``"zero"``; or a mapping ``{Z or symbol: eV}``.
    """
    from ase.data import atomic_numbers, chemical_symbols

    if labels is None:
        labels = get_all_labels(frames)
    if species is None:
        species = sorted({int(z) for a in frames for z in a.numbers})
    species = [int(z) for z in species]
    if isinstance(method, Mapping):
        e0 = {}
        for key, value in method.items():
            z = atomic_numbers[key] if isinstance(key, str) else int(key)
            e0[z] = float(value)
        missing = [chemical_symbols[z] for z in species if z not in e0]
        if missing:
            raise ValueError(f"e0 given for {sorted(chemical_symbols[z] for z in e0)} but the "
                             f"data also contains {missing}; add them to e0")
        return e0
    if method == "zero":
        return {z: 0.0 for z in species}
    if method == "isolated":
        e0 = {}
        for atoms, lab in zip(frames, labels):
            if len(atoms) == 1 and lab.energy is not None:
                e0[int(atoms.numbers[0])] = float(lab.energy)
        missing = [chemical_symbols[z] for z in species if z not in e0]
        if missing:
            raise ValueError(f"e0='isolated' needs a single-atom frame with an energy for every "
                             f"species; none for {missing}. Add isolated-atom frames or use "
                             "e0='least_squares'")
        return e0
    if method != "least_squares":
        raise ValueError(f"unknown e0 method {method!r}; use 'least_squares', 'isolated', "
                         "'zero' or a dict {symbol: eV}")
    rows = [(a, lab.energy) for a, lab in zip(frames, labels) if lab.energy is not None]
    if not rows:
        raise ValueError("e0='least_squares' needs frames with energies; with forces only, "
                         "give e0 as a dict {symbol: eV} (e.g. isolated-atom energies) or "
                         "e0='zero'")
    index = {z: i for i, z in enumerate(species)}
    comp = np.zeros((len(rows), len(species)))
    for r, (atoms, _) in enumerate(rows):
        for z in atoms.numbers:
            comp[r, index[int(z)]] += 1
    energies = np.array([e for _, e in rows])
    sol, _, rank, _ = np.linalg.lstsq(comp, energies, rcond=None)
    if rank < len(species):
        # not identifiable (e.g. every frame has the molecule's composition): the minimum-norm
        # solution would put e0_H = -616 eV for rMD17 ethanol. Start from the mean energy per
        # atom for every species and take the least-squares part the data do determine.
        mean = float(energies.sum() / comp.sum())
        dev, *_ = np.linalg.lstsq(comp, energies - mean * comp.sum(1), rcond=None)
        sol = mean + dev
        names = ", ".join(chemical_symbols[z] for z in species)
        warnings.warn(f"e0='least_squares': the compositions of the {len(rows)} frames with "
                      f"energies do not determine a separate e0 for each of {names} (rank "
                      f"{rank} of {len(species)}); e0 starts from the mean energy per atom, "
                      f"{mean:.4f} eV, for every species. Give e0 as isolated-atom energies "
                      "to fix it", UserWarning, stacklevel=3)
    return {z: float(sol[i]) for z, i in index.items()}


#: plausibility limits of :func:`warn_implausible`
MIN_DISTANCE = 0.5  # Å: closer atoms are not a physical configuration
MAX_ENERGY_SPREAD = 10.0  # eV/atom: DFT energies per atom (after e0) vary less than this
MAX_CUTOFF = 12.0  # Å: the cost grows with the cube of the cutoff


def warn_implausible(frames, labels, noise, e0: dict, terms=(), *, stacklevel: int = 3) -> list:
    """UserWarnings for inputs that fit without error but are probably not what the user
    meant, each with the number that triggered it and how to silence it: a noise
    ``config_type`` that matches no frame (a typo), atoms closer than :data:`MIN_DISTANCE`,
    energies per atom (after ``e0``) spread over more than :data:`MAX_ENERGY_SPREAD`
    (another unit?), a descriptor cutoff above :data:`MAX_CUTOFF`. Returns the messages.
    ``stacklevel`` 3: the warnings point at the caller of ``GAP.fit``."""
    from ase.neighborlist import neighbor_list

    out = []
    present = {str(lab.config_type) for lab in labels}
    named = set(noise.config_type) | set(noise.config_type_scale)
    typo = sorted(str(c) for c in named if str(c) not in present)
    if typo:
        out.append(f"the noise names config_type {typo}, which no training frame has (they "
                   f"have {sorted(present)}): a typo? Those sigmas are not used")
    close = []
    for k, atoms in enumerate(frames):
        d = neighbor_list("d", atoms, MIN_DISTANCE) if len(atoms) > 1 else np.zeros(0)
        if d.size:
            close.append((k, float(d.min())))
    if close:
        k, d = min(close, key=lambda c: c[1])
        out.append(f"{len(close)} training frames have atoms closer than {MIN_DISTANCE} Å "
                   f"(frame {k}: {d:.3g} Å): not a physical configuration; check the "
                   "positions' unit (bohr? fractional?) or drop those frames")
    per_atom = [(lab.energy - sum(e0.get(int(z), 0.0) for z in atoms.numbers)) / len(atoms)
                for atoms, lab in zip(frames, labels) if lab.energy is not None]
    if len(per_atom) > 1 and float(np.std(per_atom)) > MAX_ENERGY_SPREAD:
        out.append(f"the energies per atom (after e0) spread by {np.std(per_atom):.3g} eV/atom "
                   f"between frames (DFT data: under {MAX_ENERGY_SPREAD:g}); are they in eV "
                   "(not meV, kJ/mol or hartree)? Convert them, or pass energy_key to the "
                   "right key")
    for term in terms:
        cutoff = getattr(term.descriptor, "cutoff", None)
        if cutoff is not None and cutoff > MAX_CUTOFF:
            out.append(f"a descriptor cutoff of {cutoff:g} Å (above {MAX_CUTOFF:g} Å): the cost "
                       "grows with its cube (SOAP n_max 8, l_max 6 with gradients at "
                       "50 Å: 59 CPU-s and 1.3 GB for 63 Si atoms); local environments rarely "
                       "need more than 6-8 Å")
    for message in out:
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
    return out
