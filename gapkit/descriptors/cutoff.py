"""Smooth radial cutoff functions."""

from __future__ import annotations

import math

import torch

from .._checks import positive

__all__ = ["CosineCutoff", "OwnsCutoff"]


class CosineCutoff:
    """Shifted-cosine cutoff, as in GAP (``cutoff_transition_width``) and featomic.

    .. math::

        f_c(r) = \\begin{cases} 1 & r \\le r_c - w \\\\
            \\tfrac12\\left[1 + \\cos\\left(\\pi \\frac{r - r_c + w}{w}\\right)\\right]
                & r_c - w < r < r_c \\\\
            0 & r \\ge r_c \\end{cases}

    continuous with its first derivative, so descriptors and forces change
    continuously when a neighbour crosses the cutoff.

    Parameters
    ----------
    cutoff : float
        ``r_c``, Å.
    width : float
        ``w``, Å, with ``0 <= w <= r_c`` (``w = 0`` is a hard cutoff).
    """

    def __init__(self, cutoff: float, width: float):
        positive(cutoff, "cutoff", "Å")
        if not (0 <= width <= cutoff):
            raise ValueError(
                f"cutoff_width must satisfy 0 <= cutoff_width <= cutoff ({cutoff} Å), "
                f"got {width!r}")
        self.cutoff = float(cutoff)
        self.width = float(width)

    def __call__(self, r: torch.Tensor):
        """Values and derivatives d f_c / d r (Å^-1) at distances ``r`` (Å)."""
        inside = r < self.cutoff
        if self.width == 0:
            return inside.to(r.dtype), torch.zeros_like(r)
        t = (r - (self.cutoff - self.width)) / self.width
        in_switch = (t > 0) & inside
        arg = math.pi * t.clamp(0.0, 1.0)
        value = torch.where(in_switch, 0.5 * (1.0 + torch.cos(arg)), inside.to(r.dtype))
        deriv = torch.where(in_switch, -0.5 * math.pi / self.width * torch.sin(arg),
                            torch.zeros_like(r))
        return value, deriv


class OwnsCutoff:
    """Mixin of a descriptor whose smooth cutoff is a :class:`CosineCutoff` in
    ``self.cutoff_fn``: ``cutoff`` and ``cutoff_width`` read it, so the value is held once
    (and a kernel that needs it, such as the two-body kernel, takes ``cutoff_fn``)."""

    cutoff_fn: CosineCutoff

    @property
    def cutoff(self) -> float:
        """Radial cutoff, Å."""
        return self.cutoff_fn.cutoff

    @property
    def cutoff_width(self) -> float:
        """Width of the cutoff's smooth transition, Å."""
        return self.cutoff_fn.width
