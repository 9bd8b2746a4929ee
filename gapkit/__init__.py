"""gapkit: Bayesian kernel interatomic potentials in the style of GAP.

SOAP power spectra with analytic gradients feed sparse Gaussian-process
regression on energies, forces and virials, with posterior variances.
Units: eV, Å, eV/Å, virial in eV (ASE's).

The names below are imported on first use (PEP 562), so ``import gapkit`` and
``gapkit --help`` do not pay for torch, gpytorch and every submodule.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

# public name -> the module that owns it
_NAMES = {
    "GAP": "model", "Prediction": "gp.posterior", "Term": "terms", "clone": "model",
    "GAPCalculator": "calculator", "NoiseModel": "gp.observations",
    "SOAP": "descriptors", "DescriptorResult": "descriptors",
    "SymmetryFunctions": "descriptors", "TwoBody": "descriptors",
    "SOAPKernel": "kernels", "TwoBodyKernel": "kernels", "SEKernel": "kernels",
    "NTKKernel": "kernels", "set_threads": "_threads",
}
_MODULES = ("active", "baselines", "data", "generate", "io", "kernels", "ntk", "testing", "uq")

__all__ = sorted([*_NAMES, *_MODULES, "__version__"])

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from . import active, baselines, data, generate, io, kernels, ntk, testing, uq  # noqa: F401
    from .calculator import GAPCalculator  # noqa: F401
    from .descriptors import SOAP, DescriptorResult, SymmetryFunctions, TwoBody  # noqa: F401
    from .gp.observations import NoiseModel  # noqa: F401
    from .gp.posterior import Prediction  # noqa: F401
    from .kernels import NTKKernel, SEKernel, SOAPKernel, TwoBodyKernel  # noqa: F401
    from ._threads import set_threads  # noqa: F401
    from .model import GAP, clone  # noqa: F401
    from .terms import Term  # noqa: F401


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'gapkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __all__
