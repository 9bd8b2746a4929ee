"""Forces and virials of a model against minus the derivatives of its energy."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ..data import stress_to_virial
from ._helpers import _AXES, _bare_copy
from .descriptors import _relative_error, _strained
from .tolerances import _FLOAT64

if TYPE_CHECKING:
    pass


#: frames per ``predict`` call when check_forces evaluates displaced copies
_PREDICT_BATCH = 64


def _field(result: Any, name: str) -> Any:
    if isinstance(result, Mapping):
        return result[name]
    return getattr(result, name)


class _Model:
    """Energies, forces and virials of one of the three kinds of model check_forces takes."""

    def __init__(self, model: Any):
        from ase.calculators.calculator import BaseCalculator

        self.model = model
        self.name = type(model).__name__
        if isinstance(model, BaseCalculator):
            self.kind = "calculator"
        elif callable(getattr(model, "predict", None)):
            self.kind = "predict"
            try:
                self._params = set(inspect.signature(model.predict).parameters)
            except (TypeError, ValueError):
                self._params = set()
        elif callable(model):
            self.kind = "function"
            self.name = getattr(model, "__name__", self.name)
        else:
            raise TypeError(f"check_forces needs an ASE calculator, an object with "
                            f"predict(frames) or a function atoms -> (energy, forces, "
                            f"virial), not {type(model).__name__}")

    def _predict(self, frames: list[Atoms], *, forces: bool, virial: bool) -> Any:
        """``predict`` with the keywords it has: no variances, only what is needed."""
        wanted: dict[str, Any] = {"forces": forces, "virial": virial}
        if "return_variance" in self._params:
            wanted["return_variance"] = False
        elif "variance" in self._params:
            wanted["variance"] = False
        return self.model.predict(frames, **{k: v for k, v in wanted.items()
                                             if k in self._params})

    def full(self, atoms: Atoms, virial: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy (eV), forces (n_atoms, 3) eV/Å and virial (3, 3) eV or None."""
        if self.kind == "calculator":
            frame = _bare_copy(atoms)
            frame.calc = self.model
            energy = frame.get_potential_energy()
            forces = frame.get_forces()
            w = stress_to_virial(frame.get_stress(voigt=False), frame.get_volume()) \
                if virial else None
            return float(energy), np.asarray(forces), w
        if self.kind == "predict":
            pred = self._predict([_bare_copy(atoms)], forces=True, virial=virial)
            w = _field(pred, "virial") if virial else None
            return (float(np.asarray(_field(pred, "energy")).reshape(-1)[0]),
                    np.asarray(_field(pred, "forces")),
                    None if w is None else np.asarray(w)[0])
        energy, forces, w = self.model(_bare_copy(atoms))
        return float(energy), np.asarray(forces), None if w is None else np.asarray(w)

    def energies(self, frames: list[Atoms]) -> np.ndarray:
        """Energies (eV) of many frames, batched where the model allows it."""
        if self.kind == "predict":
            out = [np.asarray(_field(self._predict(frames[i:i + _PREDICT_BATCH], forces=False,
                                                   virial=False), "energy"), dtype=float)
                   for i in range(0, len(frames), _PREDICT_BATCH)]
            return np.concatenate(out)
        if self.kind == "calculator":
            values = []
            for frame in frames:
                frame.calc = self.model
                values.append(frame.get_potential_energy())
                frame.calc = None
            return np.asarray(values, dtype=float)
        return np.asarray([float(self.model(frame)[0]) for frame in frames])


def _central_differences(model: _Model, atoms: Atoms, step: float,
                         virial: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """-dE/dr (n_atoms, 3) and -dE/d eps (3, 3) by central differences of step ``step``."""
    frames = []
    for j in range(len(atoms)):
        for a in range(3):
            for sign in (1.0, -1.0):
                frame = _bare_copy(atoms)
                frame.positions[j, a] += sign * step
                frames.append(frame)
    if virial:
        for a in range(3):
            for b in range(3):
                for sign in (1.0, -1.0):
                    eps = np.zeros((3, 3))
                    eps[a, b] = sign * step
                    frames.append(_strained(atoms, np.eye(3) + eps))
    energies = model.energies(frames)
    n = 6 * len(atoms)
    forces = -(energies[:n:2] - energies[1:n:2]).reshape(len(atoms), 3) / (2 * step)
    w = -(energies[n::2] - energies[n + 1::2]).reshape(3, 3) / (2 * step) if virial else None
    return forces, w


def check_forces(
    model_or_calc: Any,
    atoms: Atoms,
    *,
    step: float = _FLOAT64["force_step"],
    rtol: float = _FLOAT64["finite_difference"],
    atol: float = 0.0,
    virial: bool | None = None,
    extrapolate: bool = False,
) -> dict[str, float]:
    """Check forces (and the virial) against central differences of the energy.

    .. math::

        F_{ja} = -\\frac{\\partial E}{\\partial r_{ja}} \\approx
            -\\frac{E(r_{ja} + h) - E(r_{ja} - h)}{2h}, \\qquad
        W_{ab} = -\\frac{\\partial E}{\\partial \\epsilon_{ab}}

    for every atom and direction, and, for the virial, every component of the
    homogeneous deformation ``positions @ (I + eps).T`` (and ``cell @ (I + eps).T`` when
    any axis is periodic), the nine components independent (not symmetrised; an
    energy invariant under rotations has a symmetric virial, and the antisymmetric
    differences must vanish). The virial is ASE's: ``W = -stress * volume`` (eV). The
    check costs ``6 n_atoms (+ 18)`` energy evaluations, twice that with
    ``extrapolate``. The error of each quantity is

    .. math::

        \\max |X_\\text{analytic} - X_\\text{numerical}|\\, /\\,
            \\max |X_\\text{numerical}|

    (relative to the largest component, like ASE's ``gradient_test``), and it passes
    when ``max |diff| <= atol + rtol * max |X_numerical|``.

    Parameters
    ----------
    model_or_calc : ASE calculator, model with ``predict``, or callable
        * an ASE calculator: it is attached to copies of ``atoms``; forces from
          ``get_forces``, the virial from ``-get_stress(voigt=False) * volume``;
        * an object with ``predict(frames, ...)`` (:class:`gapkit.GAP`,
          :class:`gapkit.gp.ExactGP`) whose result has ``energy`` (n_frames,),
          ``forces`` (n_atoms, 3) and ``virial`` (n_frames, 3, 3) (attributes or keys);
          ``forces=``, ``virial=`` and ``return_variance=False`` are passed when its
          signature has them, and displaced copies are predicted in batches;
        * a function ``atoms -> (energy, forces, virial or None)`` (eV, eV/Å, eV).
    atoms : ase.Atoms
        The structure. Copies are displaced; its calculator and constraints are ignored.
    step : float, default ``TOLERANCES[float64]["force_step"]`` (1e-4)
        Central-difference step, Å (dimensionless for strain).
    rtol : float, default ``TOLERANCES[float64]["finite_difference"]`` (1e-6)
        Largest accepted error relative to the largest numerical component.
    atol : float, default 0
        Accepted absolute error on top (eV/Å for forces, eV for the virial): needed
        when the forces vanish by symmetry.
    virial : bool or None, default None
        Also check the virial. None: when ``atoms`` is periodic along all three axes.
        True on a non-periodic structure deforms the positions only (the model must
        then return a virial).
    extrapolate : bool, default False
        Richardson extrapolation ``(4 D(h) - D(2h)) / 3`` of the central differences,
        which removes their O(h^2) error. Strain derivatives of the energy have large
        third derivatives (a unit strain moves atoms by a whole cell), so plain
        differences may leave ~1e-6 of the virial at h = 1e-4.

    Returns
    -------
    dict
        The measured relative errors, ``{"forces": float}`` and ``"virial"`` when
        checked.

    Raises
    ------
    AssertionError
        If an error exceeds the tolerance (the message names the worst atom, its
        species and direction, or the worst virial component, with both values), or if
        the model returns forces or a virial of the wrong shape, or no virial when one is
        checked.
    TypeError
        If ``model_or_calc`` is none of the three kinds.
    """
    __tracebackhide__ = True
    model = _Model(model_or_calc)
    check_virial = bool(np.all(atoms.pbc)) if virial is None else bool(virial)
    energy, forces, w = model.full(atoms, check_virial)
    if forces.shape != (len(atoms), 3):
        raise AssertionError(f"{model.name} returned forces of shape {forces.shape} for "
                             f"{len(atoms)} atoms; expected ({len(atoms)}, 3)")
    if check_virial and (w is None or np.shape(w) != (3, 3)):
        raise AssertionError(f"{model.name} returned virial "
                             f"{None if w is None else np.shape(w)} where a (3, 3) virial "
                             f"(eV) was to be checked; pass virial=False to skip it")
    numerical_f, numerical_w = _central_differences(model, atoms, step, check_virial)
    if extrapolate:
        coarse_f, coarse_w = _central_differences(model, atoms, 2 * step, check_virial)
        numerical_f = (4 * numerical_f - coarse_f) / 3
        if numerical_w is not None and coarse_w is not None:
            numerical_w = (4 * numerical_w - coarse_w) / 3
    how = f"central differences, step {step:g}" + (", Richardson-extrapolated"
                                                    if extrapolate else "")
    symbols = atoms.get_chemical_symbols()
    errors: dict[str, float] = {}
    failures = []

    error, worst, scale = _relative_error(forces, numerical_f)
    errors["forces"] = error
    diff = float(np.abs(forces - numerical_f).max(initial=0.0))
    if not diff <= atol + rtol * scale:
        j, a = (int(x) for x in worst)
        failures.append(
            f"forces: max |F - F_numerical| = {diff:.3e} eV/Å > atol {atol:.1e} + rtol "
            f"{rtol:.1e} * max|F_numerical| ({scale:.3e} eV/Å); relative error {error:.3e}\n"
            f"    worst: atom {j} ({symbols[j]}), direction {_AXES[a]}: analytic "
            f"{float(forces[j, a])!r}, numerical {float(numerical_f[j, a])!r} ({how} Å)")
    if check_virial and w is not None and numerical_w is not None:
        w = np.asarray(w, dtype=float)
        error, worst, scale = _relative_error(w, numerical_w)
        errors["virial"] = error
        diff = float(np.abs(w - numerical_w).max())
        if not diff <= atol + rtol * scale:
            a, c = (int(x) for x in worst)
            failures.append(
                f"virial: max |W - W_numerical| = {diff:.3e} eV > atol {atol:.1e} + rtol "
                f"{rtol:.1e} * max|W_numerical| ({scale:.3e} eV); relative error "
                f"{error:.3e}\n    worst: component {_AXES[a]}{_AXES[c]}: analytic "
                f"{float(w[a, c])!r}, numerical {float(numerical_w[a, c])!r} ({how}; "
                f"W = -dE/d eps for r -> (1 + eps) r, eps not symmetrised; "
                f"W = -stress * volume)")
    if failures:
        raise AssertionError(
            f"{model.name}: forces/virial are not minus the derivatives of its energy "
            f"(E = {energy!r} eV, {len(atoms)} atoms):\n" + "\n".join(failures))
    return errors
