"""The one table of test tolerances, keyed by dtype."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    pass




_FLOAT64: Mapping[str, float] = MappingProxyType({
    # relative: identities a few floating-point operations deep (a kernel's symmetry,
    # its diagonal, delta scaling, the GPyTorch call, a copy), |a - b| <= rtol |b|
    "algebra": 1e-12,
    # absolute floor of "algebra" for entries that are sums cancelling to ~0
    "algebra_atol": 1e-14,
    # relative: identities through a linear solve, a Cholesky factor or long sums of
    # cancelling terms (a fitted model's local energies, rotated predictions)
    "solve": 1e-9,
    # smallest accepted eigenvalue of a Gram matrix, relative to the largest |eigenvalue|
    "psd": 1e-10,
    # absolute: descriptor values under symmetry operations (assert_invariant)
    "invariance": 1e-10,
    # relative: analytic derivatives against central differences, relative to the
    # largest component (descriptors, forces) or per entry (kernels)
    "finite_difference": 1e-6,
    # absolute floor of the per-entry kernel finite-difference checks (check_kernel)
    "finite_difference_atol": 1e-9,
    # central-difference steps: descriptor gradients (Å, and dimensionless strain)
    "descriptor_step": 1e-5,
    # ... kernel derivatives (descriptor units, along the descriptor-gradient directions)
    "kernel_step": 1e-6,
    # ... energies of a model (Å, and dimensionless strain): check_forces
    "force_step": 1e-4,
})
_FLOAT32: Mapping[str, float] = MappingProxyType({
    "algebra": 1e-5,
    "algebra_atol": 1e-6,
    "solve": 1e-3,
    "psd": 1e-5,
    "invariance": 1e-5,
    "finite_difference": 5e-3,
    "finite_difference_atol": 1e-4,
    "descriptor_step": 1e-3,
    "kernel_step": 1e-3,
    "force_step": 1e-2,
})

#: Named tolerances and finite-difference steps, keyed by dtype (``torch.float64``,
#: ``numpy.dtype("float64")``, ``numpy.float64`` and the float32 equivalents; use
#: :func:`tolerances_for` to look up an array's or a tensor's). Entries (float64 / float32):
#:
#: ``"algebra"`` (1e-12 / 1e-5)
#:     rtol of identities a few floating-point operations deep;
#: ``"algebra_atol"`` (1e-14 / 1e-6)
#:     its absolute floor, for entries that cancel to about zero;
#: ``"solve"`` (1e-9 / 1e-3)
#:     rtol of identities through linear solves and long cancelling sums (fitted models);
#: ``"psd"`` (1e-10 / 1e-5)
#:     smallest accepted Gram-matrix eigenvalue, relative to the largest;
#: ``"invariance"`` (1e-10 / 1e-5)
#:     atol of descriptor values under symmetry operations;
#: ``"finite_difference"`` (1e-6 / 5e-3)
#:     rtol of analytic derivatives against central differences;
#: ``"finite_difference_atol"`` (1e-9 / 1e-4)
#:     absolute floor of the per-entry kernel derivative checks;
#: ``"descriptor_step"``, ``"kernel_step"``, ``"force_step"`` (1e-5, 1e-6, 1e-4 / 1e-3, 1e-3, 1e-2)
#:     central-difference steps of descriptor gradients (Å), kernel derivatives
#:     (descriptor units) and model energies (Å; strain is dimensionless).
#:
#: The inner mappings are read-only. Tests read their tolerances from here rather than
#: defining their own, and a test that needs a looser value says why next to it.
TOLERANCES: Mapping[Any, Mapping[str, float]] = MappingProxyType({
    torch.float64: _FLOAT64, np.dtype("float64"): _FLOAT64, np.float64: _FLOAT64,
    torch.float32: _FLOAT32, np.dtype("float32"): _FLOAT32, np.float32: _FLOAT32,
})

#: Default absolute tolerance of :func:`assert_invariant` (float64 descriptor values);
#: ``TOLERANCES[torch.float64]["invariance"]``.
INVARIANCE_ATOL = _FLOAT64["invariance"]
#: Default relative tolerance of :func:`check_gradients` (float64, central differences);
#: ``TOLERANCES[torch.float64]["finite_difference"]``.
GRADIENT_RTOL = _FLOAT64["finite_difference"]
#: Default central-difference step of :func:`check_gradients`, Å (and dimensionless for
#: strain); ``TOLERANCES[torch.float64]["descriptor_step"]``.
FINITE_DIFFERENCE_STEP = _FLOAT64["descriptor_step"]


def tolerances_for(dtype: Any) -> Mapping[str, float]:
    """The :data:`TOLERANCES` entry of a dtype, an array or a tensor.

    Parameters
    ----------
    dtype : torch.dtype, numpy dtype or type, str, numpy.ndarray or torch.Tensor
        ``torch.float64``, ``np.float32``, ``"float64"``, or an array/tensor whose
        dtype is used.

    Returns
    -------
    Mapping of str to float
        The named tolerances (read-only), see :data:`TOLERANCES`.

    Raises
    ------
    KeyError
        For a dtype other than float32 and float64 (the message lists the known ones).
    """
    if isinstance(dtype, (torch.Tensor, np.ndarray)):
        dtype = dtype.dtype
    if not isinstance(dtype, torch.dtype):
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            pass
    try:
        return TOLERANCES[dtype]
    except (KeyError, TypeError):
        raise KeyError(f"no tolerances for dtype {dtype!r}; TOLERANCES knows float64 and "
                       f"float32 (torch or numpy)") from None
