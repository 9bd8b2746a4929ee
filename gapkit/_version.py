"""The one place the gapkit version is written (pyproject reads it too)."""

__version__ = "0.2.0.dev0"
