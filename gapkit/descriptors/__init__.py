"""Descriptors of atomic environments: SOAP power spectrum, two-body distances and
Behler–Parrinello symmetry functions."""

from .base import DescriptorResult
from .soap import SOAP
from .symmetry import SymmetryFunctions
from .twobody import TwoBody

__all__ = ["SOAP", "DescriptorResult", "SymmetryFunctions", "TwoBody"]
