"""Descriptors of atomic environments: SOAP power spectrum and two-body distances."""

from .base import DescriptorResult
from .soap import SOAP
from .twobody import TwoBody

__all__ = ["SOAP", "DescriptorResult", "TwoBody"]
