"""Squared-exponential kernel on pair distances, with the descriptor's smooth cutoff."""

from __future__ import annotations

import torch

from .._checks import positive
from .base import DescriptorKernel

__all__ = ["TwoBodyKernel"]


class TwoBodyKernel(DescriptorKernel):
    """Squared-exponential kernel on pair distances with GAP's covariance cutoff.

    .. math::

        k(r, r') = \\delta^2 \\exp\\!\\left(-\\frac{(r - r')^2}{2\\theta^2}\\right)
            f_c(r) f_c(r')

    ``f_c`` is the descriptor's smooth cutoff, so a pair contributes nothing (and
    no force) as it leaves the cutoff. The cutoff belongs to the
    :class:`~gapkit.descriptors.TwoBody` descriptor: a kernel made without one
    (``TwoBodyKernel()``, ``Term(TwoBody(cutoff=4.0), "twobody")``) takes the
    descriptor's :attr:`~gapkit.descriptors.TwoBody.cutoff_fn` when a
    :class:`~gapkit.Term` binds them, and a kernel given a cutoff that differs from
    its descriptor's is refused there.

    With ``d = r - r'``, ``e = exp(-d^2 / 2 theta^2)``, ``e_1 = -d e / theta^2``,
    ``e_2 = d e / theta^2`` and ``e_12 = (1/theta^2 - d^2/theta^4) e``, the unit kernel's
    mixed second derivative (force-force covariances) has four terms:

    .. math::

        \frac{\\partial^2 \\kappa}{\\partial r \\partial r'} = e_{12} f_c f_c'
            + e_1 f_c \\dot f_c' + e_2 \\dot f_c f_c' + e \\dot f_c \\dot f_c'

    (dots: d f_c / d r), contracted with the descriptor gradients ``dr/dx`` of both pairs.

    Parameters
    ----------
    cutoff, cutoff_width : float, optional
        Only to use the kernel without a descriptor (Å); by default it takes those
        of the :class:`~gapkit.descriptors.TwoBody` descriptor of its term.
    lengthscale : float
        ``theta``, Å (GPyTorch ``lengthscale`` with its Positive constraint).
    delta : float
        Prior standard deviation of a pair energy, eV.
    """

    has_lengthscale = True

    def __init__(self, cutoff: float | None = None, cutoff_width: float | None = None,
                 lengthscale: float = 0.5, delta: float = 1.0, **kwargs):
        from ..descriptors.cutoff import CosineCutoff

        super().__init__(delta, **kwargs)
        # gpytorch creates raw_lengthscale in the default dtype (float32): keep float64
        raw = self.get_parameter("raw_lengthscale")  # made by gpytorch
        self.raw_lengthscale = torch.nn.Parameter(raw.detach().to(torch.float64))
        self.lengthscale = torch.tensor(positive(lengthscale, "lengthscale", "Å"),
                                        dtype=torch.float64)
        if cutoff is None and cutoff_width is not None:
            raise ValueError("TwoBodyKernel: cutoff_width without cutoff; pass both, or "
                             "neither to take the descriptor's")
        self._cutoff_fn = (None if cutoff is None else
                           CosineCutoff(cutoff, 1.0 if cutoff_width is None else cutoff_width))

    @property
    def cutoff_fn(self):
        """The smooth cutoff (the descriptor's once bound)."""
        if self._cutoff_fn is None:
            raise ValueError("this TwoBodyKernel has no cutoff yet: use it in a "
                             "gapkit.Term with a TwoBody descriptor (the term gives it the "
                             "descriptor's cutoff), or pass cutoff=... for use on its own")
        return self._cutoff_fn

    def bind(self, descriptor) -> "TwoBodyKernel":
        """Take the descriptor's cutoff, or check that an explicit one agrees with it."""
        from ..descriptors import TwoBody

        if not isinstance(descriptor, TwoBody):
            raise ValueError(f"TwoBodyKernel works on pair distances: pair it with a "
                             f"gapkit.TwoBody descriptor, not {type(descriptor).__name__}")
        fn = descriptor.cutoff_fn
        if self._cutoff_fn is None:
            self._cutoff_fn = fn
        elif (self._cutoff_fn.cutoff, self._cutoff_fn.width) != (fn.cutoff, fn.width):
            raise ValueError(
                f"TwoBodyKernel(cutoff={self._cutoff_fn.cutoff}, "
                f"cutoff_width={self._cutoff_fn.width}) disagrees with its descriptor "
                f"TwoBody(cutoff={fn.cutoff}, cutoff_width={fn.width}): the energy would not "
                "go smoothly to zero at the descriptor's cutoff. Leave the kernel's cutoff "
                "out (TwoBodyKernel(lengthscale=...)); it takes the descriptor's")
        return self

    def get_params(self) -> dict:
        """Constructor keywords: ``cutoff``, ``cutoff_width`` (Å; None when unbound),
        ``lengthscale`` (Å) and ``delta`` (eV)."""
        fn = self._cutoff_fn
        return {"cutoff": None if fn is None else fn.cutoff,
                "cutoff_width": None if fn is None else fn.width,
                "lengthscale": float(self.lengthscale.detach().reshape(())),
                **super().get_params()}

    def _parts(self, r1, r2):
        theta = self.lengthscale.reshape(())
        d = r1[:, None] - r2[None, :]
        e = torch.exp(-0.5 * d * d / theta**2)
        f1, df1 = self.cutoff_fn(r1)
        f2, df2 = self.cutoff_fn(r2)
        return theta, d, e, f1, df1, f2, df2

    def unit_value(self, q1, q2):
        _, _, e, f1, _, f2, _ = self._parts(q1[:, 0], q2[:, 0])
        return e * f1[:, None] * f2[None, :]

    def unit_diag(self, q):
        f, _ = self.cutoff_fn(q[:, 0])
        return f * f

    def _dk_dr1(self, r1, r2):
        theta, d, e, f1, df1, f2, _ = self._parts(r1, r2)
        return (-d / theta**2 * e * f1[:, None] + e * df1[:, None]) * f2[None, :]

    def unit_weighted_gradient(self, q1, q2, w):
        return (self._dk_dr1(q1[:, 0], q2[:, 0]) * w).sum(1, keepdim=True)

    def unit_grad_contract(self, q1, q2, g, centre):
        dk = self._dk_dr1(q1[:, 0], q2[:, 0])  # (n1, n2)
        return dk[centre][:, None, :] * g[:, :, 0:1]

    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        theta, d, e, f1, df1, f2, df2 = self._parts(q1[c1, 0], q2[c2, 0])
        t2 = theta**2
        e_r1 = -d / t2 * e
        e_r2 = d / t2 * e
        e_r1r2 = (1.0 / t2 - d * d / t2**2) * e
        h = (e_r1r2 * f1[:, None] * f2[None, :] + e_r1 * f1[:, None] * df2[None, :]
             + e_r2 * df1[:, None] * f2[None, :] + e * df1[:, None] * df2[None, :])
        return h[:, None, :, None] * g1[:, :, 0][:, :, None, None] * g2[:, :, 0][None, None, :, :]

