"""The neural tangent kernel (and NNGP) of fully connected networks, analytic, and the
NTK as a GAP kernel on descriptors.

A fully connected network of ``depth`` hidden layers trained by gradient descent on a
squared loss becomes, as its width grows, kernel regression with its neural tangent
kernel Θ; its output at initialisation is a Gaussian process with the NNGP kernel K
(Jacot et al. 2018; Lee et al. 2019). :func:`nngp_and_ntk` gives both with the
conventions of neural-tangents; :class:`NTKKernel` is Θ on descriptors with the first
and second derivatives that force observations need. The finite networks and the
width experiments are in :mod:`gapkit.ntk`, above the model layer.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .._checks import count, positive
from .base import DescriptorKernel, padded_entries_by_atom

__all__ = ["ACTIVATIONS", "PARAMETERIZATIONS", "KernelPair", "NTKKernel", "as_inputs",
           "check_finite_descriptors", "check_settings", "nngp_and_ntk"]

#: supported activation functions
ACTIVATIONS = ("relu", "erf")
#: supported parameterisations
PARAMETERIZATIONS = ("ntk", "standard")
DTYPE = torch.float64


class KernelPair(NamedTuple):
    """Infinite-width kernels of one network.

    Attributes
    ----------
    nngp : torch.Tensor, shape (n1, n2)
        Covariance of the network outputs at initialisation (output units^2).
    ntk : torch.Tensor, shape (n1, n2)
        Neural tangent kernel ``sum_p df(x1)/dθ_p df(x2)/dθ_p`` (output units^2).
    """

    nngp: torch.Tensor
    ntk: torch.Tensor


def check_settings(depth, activation, W_std, b_std, parameterization, width):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {activation!r}; supported: "
                         f"{', '.join(ACTIVATIONS)}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unsupported parameterization {parameterization!r}; supported: "
                         f"{', '.join(PARAMETERIZATIONS)}")
    count(depth, "depth (number of hidden layers)")
    positive(W_std, "W_std")
    if b_std is not None:
        positive(b_std, "b_std", "(or None: no bias)", allow_zero=True)
    if parameterization == "standard":
        if width is None:
            raise ValueError("parameterization='standard' needs the hidden width: its NTK "
                             "grows with the width of each layer (pass width=...)")
    if width is not None:
        count(width, "width")


def as_inputs(x1, x2):
    x1 = torch.as_tensor(np.asarray(x1) if not torch.is_tensor(x1) else x1).to(DTYPE)
    x2 = x1 if x2 is None else torch.as_tensor(
        np.asarray(x2) if not torch.is_tensor(x2) else x2).to(DTYPE)
    for name, x in (("x1", x1), ("x2", x2)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (n, n_features), got shape "
                             f"{tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 have different feature sizes ({x1.shape[1]} vs "
                         f"{x2.shape[1]}): descriptors must be computed with the same settings")
    return x1, x2


def _recursion(s, a, b, d, *, depth, activation, W_std, b_std, parameterization, width):
    """NNGP and NTK from ``s = x1.x2``, ``a = |x1|^2``, ``b = |x2|^2`` (broadcastable).

    neural-tangents conventions: ``K0 = x.x'/d``, ``Θ0 = 0``; Dense (NTK param.)
    ``K <- W^2 K + b^2``, ``Θ <- K + W^2 Θ``; Dense (standard param., input width
    ``n_in``) ``Θ <- n_in K_in + W^2 Θ + 1``, ``K <- W^2 K_in + b^2``; ReLU: arc-cosine
    kernel of order 1 for K and ``Θ <- Θ (π - t) / (2π)``; erf: Williams' arcsine
    kernel and its derivative kernel. Elementwise in its inputs, so autograd of a
    sum gives elementwise partial derivatives.
    """
    w2 = W_std**2
    b2 = 0.0 if b_std is None else b_std**2
    k12, k11, k22 = s / d, a / d, b / d
    th = torch.zeros_like(k12)
    n_in = d
    for layer in range(depth + 1):
        if parameterization == "ntk":
            k12, k11, k22 = w2 * k12 + b2, w2 * k11 + b2, w2 * k22 + b2
            th = k12 + w2 * th
        else:
            th = n_in * k12 + w2 * th + (0.0 if b_std is None else 1.0)
            k12, k11, k22 = w2 * k12 + b2, w2 * k11 + b2, w2 * k22 + b2
            n_in = width
        if layer == depth:
            break
        if activation == "relu":
            norm = torch.sqrt(k11 * k22)
            c = torch.clamp(k12 / norm, -1.0, 1.0)
            t = torch.arccos(c)
            # sqrt(k11 k22 - k12^2) = norm sin t, written so that it stays finite
            sin_t = torch.sqrt(torch.clamp(1.0 - c * c, min=0.0))
            kdot = (math.pi - t) / (2 * math.pi)
            k12 = norm * (sin_t + (math.pi - t) * c) / (2 * math.pi)
            k11, k22 = k11 / 2, k22 / 2
        else:  # erf
            p11, p22 = 1 + 2 * k11, 1 + 2 * k22
            kdot = (4 / math.pi) / torch.sqrt(p11 * p22 - 4 * k12 * k12)
            k12 = (2 / math.pi) * torch.arcsin(2 * k12 / torch.sqrt(p11 * p22))
            k11 = (2 / math.pi) * torch.arcsin(2 * k11 / p11)
            k22 = (2 / math.pi) * torch.arcsin(2 * k22 / p22)
        th = th * kdot
    return k12, th


def nngp_and_ntk(x1, x2=None, *, depth: int, activation: str = "relu", W_std: float = 1.0,
            b_std: float | None = 0.0, parameterization: str = "ntk",
            width: int | None = None) -> KernelPair:
    """Analytic NNGP and NTK of a fully connected network (infinite width).

    The network is ``depth`` hidden layers ``Dense(width, W_std, b_std)`` each
    followed by ``activation``, then a readout ``Dense(1, W_std, b_std)`` with the
    same ``W_std``/``b_std`` — neural-tangents'
    ``stax.serial(*[Dense(W, W_std, b_std, parameterization=p), act()] * depth,
    Dense(1, W_std, b_std, parameterization=p))``, whose values this reproduces.

    Parameters
    ----------
    x1 : array_like or torch.Tensor, shape (n1, d)
    x2 : array_like or torch.Tensor, shape (n2, d), optional
        Defaults to ``x1``.
    depth : int
        Number of hidden layers (> 0).
    activation : {"relu", "erf"}
    W_std, b_std : float
        Weight and bias standard deviations (``b_std=None``: no bias at all; in the
        standard parameterisation a bias initialised at 0 still adds 1 to the NTK).
    parameterization : {"ntk", "standard"}
        In the NTK parameterisation the kernels do not depend on the width; in the
        standard one the NTK grows with it and ``width`` is required.
    width : int, optional
        Width of the hidden layers (standard parameterisation only).

    Returns
    -------
    KernelPair
        ``(nngp, ntk)``, float64 tensors of shape (n1, n2), in units of the
        network output squared.

    Raises
    ------
    ValueError
        Unsupported activation or parameterisation (the message lists the supported
        ones), ``depth`` or ``width`` <= 0, NaN/inf inputs, different feature sizes.
    """
    check_settings(depth, activation, W_std, b_std, parameterization, width)
    x1, x2 = as_inputs(x1, x2)
    s = x1 @ x2.T
    a = (x1 * x1).sum(1)[:, None]
    b = (x2 * x2).sum(1)[None, :]
    nngp, ntk = _recursion(s, a, b, x1.shape[1], depth=int(depth), activation=activation,
                           W_std=float(W_std), b_std=None if b_std is None else float(b_std),
                           parameterization=parameterization, width=width)
    return KernelPair(nngp, ntk)



def check_finite_descriptors(q: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(q).all()):
        raise ValueError(f"{name} contains NaN or infinite descriptor values; check the "
                         "structures (overlapping atoms?) and the descriptor settings")


class NTKKernel(DescriptorKernel):
    """NTK of a per-atom fully connected network, as a GAP kernel on descriptors.

    ``k(q, q') = delta^2 Θ(x, x')`` with ``x = input_scale * q`` and Θ the
    infinite-width NTK of :func:`nngp_and_ntk` (``depth`` hidden layers, one readout).
    A GAP with this kernel is the infinitely wide per-atom network (one network per
    species: the GP layer zeroes kernels between different central species)
    trained to convergence on the same data, with the GAP's noise as a ridge.

    Θ depends on its arguments only through ``s = q1.q2``, ``a = |q1|^2`` and
    ``b = |q2|^2``, so with ``F(s, a, b) = Θ``

    .. math::

        \\frac{\\partial Θ}{\\partial q_1} = F_s q_2 + 2 F_a q_1, \\qquad
        \\frac{\\partial^2 Θ}{\\partial q_1 \\partial q_2^T} = F_s I + F_{ss} q_2 q_1^T
            + 2 F_{sb} q_2 q_2^T + 2 F_{as} q_1 q_1^T + 4 F_{ab} q_1 q_2^T .

    The scalar partials ``F_s, F_a, F_ss, ...`` are elementwise arrays over the
    pairs, obtained by autograd of the (elementwise) recursion; the contractions
    with descriptor gradients are GEMMs, as for :class:`~gapkit.kernels.SOAPKernel`.

    Parameters
    ----------
    depth : int
        Hidden layers (> 0).
    activation : {"erf", "relu"}
        ``"erf"`` (default) gives a smooth kernel. The ReLU NTK is not differentiable
        where ``q1`` and ``q2`` coincide (the arc-cosine kernel of order 0 has a
        square-root cusp there), so force rows against a sparse point equal to a
        training environment do not exist; derivative methods raise ValueError then.
    W_std, b_std : float
        Weight and bias standard deviations of every layer.
    parameterization : {"ntk", "standard"}
    width : int, optional
        Hidden width (standard parameterisation only).
    input_scale : float, optional
        The network sees ``x = input_scale * q``; default ``sqrt(n_features)``, so that a
        unit-length (normalised SOAP) descriptor has unit mean-square feature,
        ``K0(x, x) = |x|^2 / d = 1``, as neural-tangents assumes of its inputs.
    delta : float
        Scale, eV: ``k = delta^2 Θ``.
    """

    def __init__(self, depth: int = 2, activation: str = "erf", W_std: float = 1.0,
                 b_std: float = 0.1, parameterization: str = "ntk", width: int | None = None,
                 input_scale: float | None = None, delta: float = 1.0, **kwargs):
        check_settings(depth, activation, W_std, b_std, parameterization, width)
        if input_scale is not None:
            positive(input_scale, "input_scale")
        super().__init__(delta, **kwargs)
        self.depth = int(depth)
        self.activation = activation
        self.W_std = float(W_std)
        self.b_std = None if b_std is None else float(b_std)
        self.parameterization = parameterization
        self.width = None if width is None else int(width)
        self.input_scale = None if input_scale is None else float(input_scale)

    def get_params(self) -> dict:
        """Constructor arguments (JSON-serialisable), ``delta`` included."""
        return {"depth": self.depth, "activation": self.activation, "W_std": self.W_std,
                "b_std": self.b_std, "parameterization": self.parameterization,
                "width": self.width, "input_scale": self.input_scale,
                "delta": float(self.delta.detach())}

    def _scale2(self, d: int) -> float:
        return float(d) if self.input_scale is None else self.input_scale**2

    def _theta(self, s, a, b, d):
        c = self._scale2(d)
        return _recursion(c * s, c * a, c * b, d, depth=self.depth, activation=self.activation,
                          W_std=self.W_std, b_std=self.b_std,
                          parameterization=self.parameterization, width=self.width)[1]

    def _check(self, q1, q2):
        check_finite_descriptors(q1, "q1")
        check_finite_descriptors(q2, "q2")
        if q1.shape[-1] != q2.shape[-1]:
            raise ValueError(f"descriptor sizes differ ({q1.shape[-1]} vs {q2.shape[-1]}): "
                             "compute all descriptors with the same settings")

    def _partials(self, q1, q2, second: bool = False):
        """Elementwise ``F`` and its partials over the pairs (q1_i, q2_j), each (n1, n2).

        Returns ``(F, F_s, F_a)`` or, with ``second``, also ``(F_ss, F_sb, F_as, F_ab)``.
        """
        self._check(q1, q2)
        n1, n2, d = q1.shape[0], q2.shape[0], q1.shape[1]
        q1 = q1.detach()
        q2 = q2.detach()
        s0 = q1 @ q2.T
        a0 = (q1 * q1).sum(1)[:, None].expand(n1, n2)
        b0 = (q2 * q2).sum(1)[None, :].expand(n1, n2)
        out = self._scalar_partials(s0, a0, b0, d, second)
        if not all(bool(torch.isfinite(t).all()) for t in out):
            self._raise_not_differentiable()
        return out

    def _raise_not_differentiable(self):
        raise ValueError(
            f"the {self.activation} NTK derivatives are not finite for some descriptor "
            "pairs: the ReLU NTK is not differentiable where two descriptors coincide "
            "(e.g. a sparse point equal to a training environment). Use activation='erf'.")

    def _scalar_partials(self, s0, a0, b0, d, second):
        """``F(s, a, b)`` and its partials, elementwise over tensors of any (common) shape."""
        with torch.enable_grad():
            s, a, b = (t.clone().requires_grad_(True) for t in (s0, a0, b0))
            th = self._theta(s, a, b, d)
            fs, fa = torch.autograd.grad(th.sum(), (s, a), create_graph=second)
            out = [th.detach(), fs.detach(), fa.detach()]
            if second:
                def grads(f, wrt):
                    gs = torch.autograd.grad(f.sum(), wrt, retain_graph=True, allow_unused=True)
                    return [torch.zeros_like(s0) if g is None else g.detach() for g in gs]

                fss, fsb, fas = grads(fs, (s, b, a))
                (fab,) = grads(fa, (b,))
                out += [fss, fsb, fas, fab]
        return out

    def force_prior_variance(self, q, g, centre, atom, types, n_atoms) -> torch.Tensor:
        """Prior variance of each force component, ``(n_atoms, 3)`` (eV^2/Å^2).

        Batched over atoms as :meth:`SOAPKernel.force_prior_variance
        <gapkit.kernels.SOAPKernel.force_prior_variance>`: the gradient entries of each
        atom are padded to a common count ``J`` and, for each direction ``a``,
        ``sum_{ef} g_e^T (d^2 Θ / dq_e dq_f) g_f`` (the five terms of the class
        docstring) becomes a few ``(J, J)`` batched GEMMs; the scalar partials are
        evaluated elementwise on the ``(atoms, J, J)`` pairs. Equal to the generic
        :meth:`DescriptorKernel.force_prior_variance
        <gapkit.kernels.DescriptorKernel.force_prior_variance>`.
        """
        dtype = q.dtype
        q = q.detach()
        g = g.detach()
        check_finite_descriptors(q, "q")
        out = torch.zeros((n_atoms, 3), dtype=dtype)
        d = q.shape[1]
        # padded slots repeat a real descriptor (finite partials) and are masked out
        for a0, a1, qa, ga, mask in padded_entries_by_atom(q, g, centre, atom, types, n_atoms):
            s = torch.bmm(qa, qa.transpose(1, 2))  # (na, J, J): q_e . q_f
            n2 = (qa * qa).sum(-1)
            a_, b_ = n2[:, :, None].expand_as(s), n2[:, None, :].expand_as(s)
            _, fs, _, fss, fsb, fas, fab = self._scalar_partials(s, a_, b_, d, True)
            parts = []
            for f in (fs, fss, fsb, fas, fab):
                if not bool(torch.isfinite(f[mask]).all()):
                    self._raise_not_differentiable()
                parts.append(torch.where(mask, f, torch.zeros((), dtype=dtype)))
            fs, fss, fsb, fas, fab = parts
            for a in range(3):
                gx = ga[:, :, a, :]  # (na, J, d)
                gg = torch.bmm(gx, gx.transpose(1, 2))  # g_e . g_f
                gq = torch.bmm(gx, qa.transpose(1, 2))  # g_e . q_f
                own = torch.diagonal(gq, dim1=1, dim2=2)  # g_e . q_e
                total = fs * gg + fss * gq * gq.transpose(1, 2)
                total = total + 2 * fsb * gq * own[:, None, :]
                total = total + 2 * fas * own[:, :, None] * gq.transpose(1, 2)
                total = total + 4 * fab * own[:, :, None] * own[:, None, :]
                out[a0:a1, a] = total.sum((1, 2))
        return self.variance * out

    def unit_value(self, q1, q2):
        self._check(q1, q2)
        d = q1.shape[1]
        s = q1 @ q2.T
        a = (q1 * q1).sum(1)[:, None]
        b = (q2 * q2).sum(1)[None, :]
        return self._theta(s, a, b, d)

    def unit_diag(self, q):
        check_finite_descriptors(q, "q")
        n = (q * q).sum(1)
        return self._theta(n, n, n, q.shape[1])

    def unit_weighted_gradient(self, q1, q2, w):
        _, fs, fa = self._partials(q1, q2)
        return (fs * w) @ q2 + 2 * (fa * w).sum(1, keepdim=True) * q1

    def unit_grad_contract(self, q1, q2, g, centre):
        uniq, inv = torch.unique(torch.as_tensor(centre), return_inverse=True)
        _, fs, fa = self._partials(q1[uniq], q2)
        fs, fa = fs[inv], fa[inv]  # (E, n2)
        proj = torch.matmul(g, q2.T)  # (E, r, n2)
        own = torch.einsum("erd,ed->er", g, q1[centre])  # (E, r)
        return fs[:, None, :] * proj + 2 * fa[:, None, :] * own[:, :, None]

    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        p1, p2 = q1[c1], q2[c2]
        _, fs, _, fss, fsb, fas, fab = self._partials(p1, p2, second=True)  # (E, F)
        gg = torch.einsum("erd,fsd->erfs", g1, g2)
        a = torch.matmul(g1, p2.T)  # (E, r1, F): g1 . q2
        c = torch.matmul(g2, p1.T).permute(2, 0, 1)  # (E, F, r2): g2 . q1
        b1 = torch.einsum("erd,ed->er", g1, p1)  # (E, r1): g1 . q1
        b2 = torch.einsum("fsd,fd->fs", g2, p2)  # (F, r2): g2 . q2
        out = fs[:, None, :, None] * gg
        out = out + fss[:, None, :, None] * a[:, :, :, None] * c[:, None, :, :]
        out = out + 2 * fsb[:, None, :, None] * a[:, :, :, None] * b2[None, None, :, :]
        out = out + 2 * fas[:, None, :, None] * b1[:, :, None, None] * c[:, None, :, :]
        out = out + 4 * fab[:, None, :, None] * b1[:, :, None, None] * b2[None, None, :, :]
        return out


