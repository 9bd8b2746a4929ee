"""Keyword arguments renamed in 0.2: the old names keep working, with a warning, until 0.3."""

from __future__ import annotations

import warnings
from typing import Any

#: default of a renamed keyword: tells "not passed" from any value (None included)
UNSET: Any = object()


def renamed(old_value: Any, new_value: Any, old: str, new: str, where: str) -> Any:
    """``new_value``, or ``old_value`` with a DeprecationWarning when the caller used the
    old keyword ``old`` of ``where`` (e.g. ``"GAP.predict"``)."""
    if old_value is UNSET:
        return new_value
    warnings.warn(f"{where}({old}=...) is now {new}=... (the old name goes in gapkit 0.3)",
                  DeprecationWarning, stacklevel=3)
    return old_value
