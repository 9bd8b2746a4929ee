"""gapkit: Bayesian kernel interatomic potentials in the style of GAP.

SOAP power spectra with analytic gradients feed sparse Gaussian-process
regression on energies, forces and virials, with posterior variances.
Units: eV, Å, eV/Å, virial in eV (ASE's).
"""

from . import active, baselines, data, generate, ntk, testing, uq
from .calculator import GAPCalculator
from .descriptors import SOAP, DescriptorResult, SymmetryFunctions, TwoBody
from .gp import NoiseModel
from .kernels import SEKernel, SOAPKernel, TwoBodyKernel
from .model import GAP, Prediction, Term
from .ntk import NTKKernel

__version__ = "0.1.0"

__all__ = [
    "GAP",
    "SOAP",
    "DescriptorResult",
    "GAPCalculator",
    "NTKKernel",
    "NoiseModel",
    "Prediction",
    "SEKernel",
    "SOAPKernel",
    "SymmetryFunctions",
    "Term",
    "TwoBody",
    "TwoBodyKernel",
    "__version__",
    "active",
    "baselines",
    "data",
    "generate",
    "ntk",
    "testing",
    "uq",
]
