"""Descriptors of atomic environments: SOAP power spectrum and two-body distances."""

from .base import DescriptorResult
from .soap import SOAP

__all__ = ["DescriptorResult", "SOAP"]
