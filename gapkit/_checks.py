"""The small argument checks every layer shares: "an integer >= n, not a bool" and "a finite
number > 0", each with one message that names the argument, its unit and the value given.

Numbers may come as Python or numpy scalars, one-element arrays or torch tensors (a kernel's
``delta`` read back from a model); a bool or a string is never a number here.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = ["atomic_number", "count", "is_integer", "is_number", "positive"]


def _real(value: Any) -> float | None:
    """``value`` as one float, or None when it is not a single real number."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return None
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(arr.reshape(-1)[0]) if arr.size == 1 else None


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A single finite real number (not a bool, not a string)."""
    x = _real(value)
    return x is not None and math.isfinite(x)


def count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``: an integer, or an integral float such as the
    ``4.0`` a JSON file may hold; never a bool. ValueError naming ``name`` otherwise."""
    x = _real(value)
    if x is None or not math.isfinite(x) or x != int(x) or x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(x)


def positive(value: Any, name: str, unit: str = "", *, allow_zero: bool = False,
             what: str = "number") -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``); ValueError naming
    ``name``, ``what`` it is and its ``unit`` otherwise, e.g. "cutoff must be a finite
    number > 0 Å, got -1.0"."""
    x = _real(value)
    if x is None or not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite {what} {bound}{' ' + unit if unit else ''}, "
                         f"got {value!r}")
    return x


def atomic_number(value: Any) -> int:
    """A species as its atomic number: an integer 1 ... 118 or a chemical symbol (``"Si"``;
    ``"14"`` also reads as 14). ValueError naming the value otherwise."""
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(value, str):
        text = value.strip()
        if text in atomic_numbers and text != "X":
            return int(atomic_numbers[text])
        if text.isdigit():
            value = int(text)
        else:
            raise ValueError(f"species {value!r} is neither a chemical symbol nor an atomic "
                             "number (write e.g. 'Si' or 14)")
    x = _real(value)
    if x is None or not x.is_integer() or not 0 < x < len(chemical_symbols):
        raise ValueError(f"species {value!r} is not an atomic number 1 ... "
                         f"{len(chemical_symbols) - 1} or a chemical symbol")
    return int(x)


def env_bytes(name: str, meaning: str) -> int | None:
    """The size in environment variable ``name`` (GB, 2^30 bytes) as bytes, or None when it
    is unset; anything but a number >= 0 is an error saying what it sets (``meaning``)."""
    text = os.environ.get(name)
    if text is None:
        return None
    try:
        gb = float(text)
    except ValueError:
        gb = -1.0
    if not gb >= 0:
        raise ValueError(f"{name}={text!r} is not a size: give {meaning} in GB (a number "
                         ">= 0), or unset it")
    return int(gb * 2**30)
