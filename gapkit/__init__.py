"""gapkit: Bayesian kernel interatomic potentials in the style of GAP.

SOAP power spectra with analytic gradients feed sparse Gaussian-process
regression on energies, forces and virials. Units: eV, Å, eV/Å, virial in eV.
"""

from . import data, testing
from .descriptors import SOAP, DescriptorResult, TwoBody

__version__ = "0.1.0"

__all__ = ["SOAP", "DescriptorResult", "__version__", "data", "testing"]
