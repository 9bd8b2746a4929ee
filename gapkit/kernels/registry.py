"""One registry of descriptor and kernel classes, and kernels by name.

:data:`KERNELS` and :data:`DESCRIPTORS` map the class names written in model files and
configs to the classes; :func:`make_kernel` builds a kernel from a short name.
"""

from __future__ import annotations

from ..descriptors import SOAP, SymmetryFunctions, TwoBody
from .base import DescriptorKernel
from .ntk import NTKKernel
from .se import SEKernel
from .soap import SOAPKernel
from .twobody import TwoBodyKernel

__all__ = ["DESCRIPTORS", "KERNELS", "KERNEL_NAMES", "make_kernel"]

#: kernel classes by class name (model files, TOML configs)
KERNELS = {"SOAPKernel": SOAPKernel, "TwoBodyKernel": TwoBodyKernel, "NTKKernel": NTKKernel,
           "SEKernel": SEKernel}
#: descriptor classes by class name (model files, TOML configs)
DESCRIPTORS = {"SOAP": SOAP, "TwoBody": TwoBody, "SymmetryFunctions": SymmetryFunctions}
_BY_NAME = {"soap": SOAPKernel, "ntk": NTKKernel, "twobody": TwoBodyKernel, "se": SEKernel}

#: kernel names accepted by :func:`make_kernel` (and by ``Term(kernel="...")``)
KERNEL_NAMES = tuple(_BY_NAME)


def make_kernel(name: str, **kw) -> DescriptorKernel:
    """A GAP kernel by name: ``"soap"`` (:class:`SOAPKernel`), ``"ntk"`` (:class:`NTKKernel`),
    ``"twobody"`` (:class:`TwoBodyKernel`) or ``"se"`` (:class:`SEKernel`).

    ``kw`` go to the constructor, e.g. ``make_kernel("ntk", depth=3, delta=0.5)``.
    ``gapkit.Term`` calls this when given a string, so ``Term(SOAP(...), "ntk")`` fits
    a GAP with the NTK of an infinitely wide per-atom network as its kernel. A two-body
    kernel made here has no cutoff of its own: ``Term`` gives it its descriptor's.

    Raises
    ------
    ValueError
        Unknown name (the message lists the supported ones).
    """
    key = name.lower().replace("_", "").replace("-", "") if isinstance(name, str) else name
    if key not in _BY_NAME:
        raise ValueError(f"unknown kernel {name!r}; supported: {', '.join(KERNEL_NAMES)} "
                         "(or pass a kernel object)")
    return _BY_NAME[key](**kw)

