"""Voigt and virial conventions: ASE's Voigt order, matrix <-> Voigt, stress <-> virial
(``W = -stress * volume``) and the Voigt symmetrisation of strain derivatives."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ._helpers import _frame

#: ASE's Voigt order of the six components of a symmetric 3x3 tensor: xx, yy, zz, yz, xz, xy.
#: The one table every Voigt <-> matrix conversion in gapkit reads.
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def voigt_to_matrix(voigt: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Symmetric 3x3 tensors from their six components in ASE Voigt order.

    Parameters
    ----------
    voigt : array_like of shape (..., 6)
        xx, yy, zz, yz, xz, xy (see :data:`VOIGT`).

    Returns
    -------
    ndarray of shape (..., 3, 3)
    """
    w = np.asarray(voigt, dtype=np.float64)
    if w.shape[-1:] != (6,):
        raise ValueError(f"expected six Voigt components in the last axis, got shape {w.shape}")
    out = np.empty(w.shape[:-1] + (3, 3))
    for i, (a, b) in enumerate(VOIGT):
        out[..., a, b] = w[..., i]
        out[..., b, a] = w[..., i]
    return out


def matrix_to_voigt(matrix: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The six ASE-Voigt components of 3x3 tensors, symmetrised: ``(M + M^T) / 2``.

    Parameters
    ----------
    matrix : array_like of shape (..., 3, 3)

    Returns
    -------
    ndarray of shape (..., 6)
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"expected 3x3 tensors in the last two axes, got shape {m.shape}")
    sym = 0.5 * (m + np.swapaxes(m, -1, -2))
    return np.stack([sym[..., a, b] for a, b in VOIGT], axis=-1)


def _to_3x3(array: np.ndarray, *, what: str, frame_index: int | None) -> np.ndarray:
    """Interpret 9 numbers (row-major), a 3x3 matrix or ASE Voigt-6 numbers as a 3x3 tensor."""
    if array.shape == (3, 3):
        return array
    if array.shape == (9,):
        return array.reshape(3, 3)
    if array.shape == (6,):
        return voigt_to_matrix(array)
    raise ValueError(
        f"{_frame(frame_index)}{what} has shape {array.shape}; expected a 3x3 matrix, 9 numbers "
        "(row-major) or 6 numbers in ASE Voigt order (xx, yy, zz, yz, xz, xy)"
    )


def stress_to_virial(stress: npt.ArrayLike, volume: float) -> npt.NDArray[np.float64]:
    """Convert a stress to a virial: ``virial = -stress * volume``.

    Parameters
    ----------
    stress : array_like of shape (6,), (9,) or (3, 3)
        Stress, eV/Å³, ASE sign (positive under tension). Six numbers are read in ASE Voigt
        order (xx, yy, zz, yz, xz, xy).
    volume : float
        Cell volume, Å³.

    Returns
    -------
    ndarray of shape (3, 3)
        Virial, eV, GAP convention (positive under compression).
    """
    array = np.array(stress, dtype=np.float64)
    return -_to_3x3(array, what="stress", frame_index=None) * float(volume)


def virial_to_stress(virial: npt.ArrayLike, volume: float) -> npt.NDArray[np.float64]:
    """Convert a virial to an ASE stress in Voigt form: ``stress = -virial / volume``.

    Parameters
    ----------
    virial : array_like of shape (3, 3), (9,) or (6,)
        Virial, eV, GAP convention (positive under compression).
    volume : float
        Cell volume, Å³; must be positive.

    Returns
    -------
    ndarray of shape (6,)
        Stress, eV/Å³, ASE sign and Voigt order (xx, yy, zz, yz, xz, xy). The virial is
        symmetrised first.
    """
    if not volume > 0.0:
        raise ValueError(f"volume must be positive to convert a virial to a stress, got {volume}")
    w = _to_3x3(np.array(virial, dtype=np.float64), what="virial", frame_index=None)
    return -matrix_to_voigt(w) / float(volume)


def voigt_symmetrised(s: Any) -> Any:
    """The symmetric part ``(s_ab + s_ba) / 2`` of the 3 x 3 axes 1 and 2 of ``s`` (shape
    ``(n, 3, 3, ...)``, a numpy array or torch tensor) in ASE's Voigt order
    (:data:`VOIGT`: xx yy zz yz xz xy), shape ``(n, 6, ...)``: how a strain derivative
    becomes the six virial components."""
    a_idx = [a for a, _ in VOIGT]
    b_idx = [b for _, b in VOIGT]
    return 0.5 * (s[:, a_idx, b_idx] + s[:, b_idx, a_idx])
