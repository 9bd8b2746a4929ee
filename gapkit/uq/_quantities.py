"""Quantities the uncertainty diagnostics assess (energy per atom, force
components), their units and the shared input checks."""

from __future__ import annotations

import numpy as np

#: quantities understood by :func:`calibration_report`, with their units
QUANTITIES = {"energy_per_atom": "eV/atom", "forces": "eV/Å"}
# the Prediction field each quantity's variance comes from (its ``variance_form`` key)
_FIELD = {"energy_per_atom": "energy", "forces": "forces"}


def _quantity(name: str) -> str:
    """``name`` checked; the pre-0.2 ``"energy"`` (per atom) warns and maps to
    ``"energy_per_atom"``."""
    if name == "energy":
        import warnings

        warnings.warn('the uq quantity "energy" (per atom) is now "energy_per_atom"; the old '
                      "name goes in gapkit 0.3", DeprecationWarning, stacklevel=3)
        return "energy_per_atom"
    if name not in QUANTITIES:
        raise ValueError(f"unknown quantity {name!r}; use one of {list(QUANTITIES)}")
    return name


class _ByQuantity(dict):
    """A dict keyed by quantity that still answers the pre-0.2 key ``"energy"``."""

    def __missing__(self, key):
        if key == "energy" and "energy_per_atom" in self:
            return self[_quantity(key)]
        raise KeyError(key)

    def __contains__(self, key):
        return dict.__contains__(self, key) or (key == "energy"
                                                and dict.__contains__(self, "energy_per_atom"))
#: default central-interval levels of the coverage curve
DEFAULT_LEVELS = np.linspace(0.01, 0.99, 99)


def _check_arrays(errors, variance, *, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Flatten and validate errors and variances (same shape, variances finite and > 0)."""
    if variance is None:
        raise ValueError(f"{what or 'the prediction'} has no variances; predict with "
                         "return_variance=True (and forces_variance='projected' or 'exact' "
                         "for forces)")
    e = np.asarray(errors, dtype=float)
    v = np.asarray(variance, dtype=float)
    if e.shape != v.shape:
        raise ValueError(f"{what + ': ' if what else ''}errors have shape {e.shape} but "
                         f"variances have shape {v.shape}")
    e, v = e.ravel(), v.ravel()
    if e.size == 0:
        raise ValueError(f"{what + ': ' if what else ''}no values to assess")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"{what + ': ' if what else ''}errors contain NaN or inf")
    bad = ~(np.isfinite(v) & (v > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{what + ': ' if what else ''}{int(bad.sum())} of {v.size} variances are zero, "
            f"negative or not finite (e.g. index {i}: {v[i]!r}); z-scores and likelihoods "
            "would be infinite. Add the observation noise (include_noise=True) or drop them")
    return e, v
