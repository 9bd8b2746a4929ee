"""Kernels on descriptors, with the derivatives that force and virial observations need.

Every kernel here is a :class:`gpytorch.kernels.Kernel` (its hyper-parameters carry
GPyTorch constraints and optional priors) and adds three operations in descriptor
space that the GP layer contracts with descriptor gradients:

``value(q1, q2)``
    ``k(q1_i, q2_m)``, shape (n1, n2).
``grad_contract(q1, q2, g, centre)``
    ``sum_D dk(q1[centre[e]], q2_m)/dq1_D * g[e, r, D]`` for gradient entries ``e``
    with ``r`` directions each, shape (n_entries, r, n2). Force rows are this with
    ``g`` the descriptor position gradients; virial rows with the strain gradients.
``hessian_contract(q1, q2, g1, c1, g2, c2)``
    ``g1[e]^T d^2k/dq1 dq2 g2[f]``, shape (E, r1, F, r2): the force-force covariance
    (exact GP, exact force variances).

All values are in eV^2 (``delta`` is the prior standard deviation of a local
energy, eV). Kernels between centres of different type (central species, species
pair) are zero; the GP layer applies that mask, the kernels themselves do not.
"""

from __future__ import annotations

import abc
import math

import gpytorch
import numpy as np
import torch
from gpytorch.constraints import Positive

__all__ = ["DescriptorKernel", "SOAPKernel", "TwoBodyKernel"]


class DescriptorKernel(gpytorch.kernels.Kernel, metaclass=abc.ABCMeta):
    """Base class: a ``delta``-scaled kernel ``delta^2 * kappa(q1, q2)``.

    Subclasses implement the unit kernel ``kappa`` and its derivatives; ``delta``
    (eV) is a positive GPyTorch parameter with an optional prior.
    """

    is_stationary = False

    def __init__(self, delta: float = 1.0, *, delta_prior=None, delta_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if not (delta > 0 and math.isfinite(delta)):
            raise ValueError(f"delta must be a finite number > 0 eV, got {delta!r}")
        self.register_parameter(
            "raw_delta", torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)))
        self.register_constraint("raw_delta", delta_constraint or Positive())
        if delta_prior is not None:
            # bound methods, not lambdas, so that the kernel pickles
            self.register_prior("delta_prior", delta_prior, self._delta_param,
                                self._delta_closure)
        self._set_delta(delta)

    @staticmethod
    def _delta_param(module):
        return module.delta

    @staticmethod
    def _delta_closure(module, value):
        module._set_delta(value)

    @property
    def delta(self) -> torch.Tensor:
        return self.raw_delta_constraint.transform(self.raw_delta)

    @delta.setter
    def delta(self, value) -> None:
        self._set_delta(value)

    def _set_delta(self, value) -> None:
        value = torch.as_tensor(value, dtype=self.raw_delta.dtype).reshape(1)
        self.initialize(raw_delta=self.raw_delta_constraint.inverse_transform(value))

    @property
    def variance(self) -> torch.Tensor:
        """delta^2, eV^2."""
        return self.delta.squeeze() ** 2

    # -- the unit kernel (delta = 1): what a subclass implements ------------
    @abc.abstractmethod
    def unit_value(self, q1, q2):
        """``kappa(q1_i, q2_m)``, shape (n1, n2)."""

    @abc.abstractmethod
    def unit_grad_contract(self, q1, q2, g, centre):
        """``sum_D d kappa(q1[centre[e]], q2_m)/dq1 * g[e, r, D]``, shape (E, r, n2)."""

    @abc.abstractmethod
    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        """``g1[e]^T d^2 kappa / dq1 dq2 g2[f]``, shape (E, r1, F, r2)."""

    @abc.abstractmethod
    def unit_weighted_gradient(self, q1, q2, w):
        """``sum_m w[i, m] d kappa(q1_i, q2_m)/dq1_i``, shape (n1, D)."""

    def unit_diag(self, q):
        return torch.diagonal(self.unit_value(q, q))

    def weighted_gradient(self, q1, q2, w) -> torch.Tensor:
        """``sum_m w[i, m] dk(q1_i, q2_m)/dq1_i``, shape (n1, D): the gradient of the
        GP mean ``eps(q) = sum_m alpha_m k(q, z_m)`` when ``w = alpha`` (masked),
        at the cost of two GEMMs instead of one per force component."""
        return self.variance * self.unit_weighted_gradient(q1, q2, w)

    def force_prior_variance(self, q, g, centre, atom, types, n_atoms) -> torch.Tensor:
        """Prior variance of each force component, ``(n_atoms, 3)`` (eV^2/Å^2).

        ``var F_ja = sum_{e,f in entries(j)} g_e[a]^T d^2k/dq dq' g_f[a]`` over the
        gradient entries of atom j (same-type centres only). Generic version: one
        ``hessian_contract`` per atom.
        """
        out = torch.zeros((n_atoms, 3), dtype=q.dtype)
        atom = torch.as_tensor(atom)
        order = torch.argsort(atom, stable=True)
        bounds = torch.searchsorted(atom[order], torch.arange(n_atoms + 1))
        for j in range(n_atoms):
            ent = order[bounds[j]:bounds[j + 1]]
            if ent.numel() == 0:
                continue
            c = centre[ent]
            h = self.hessian_contract(q, q, g[ent], c, g[ent], c)  # (E, 3, E, 3)
            mask = (types[c][:, None] == types[c][None, :]).to(q.dtype)
            out[j] = (torch.einsum("eafa->efa", h) * mask[:, :, None]).sum((0, 1))
        return out

    # -- delta-scaled versions --------------------------------------------
    def value(self, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
        return self.variance * self.unit_value(q1, q2)

    def grad_contract(self, q1, q2, g, centre) -> torch.Tensor:
        return self.variance * self.unit_grad_contract(q1, q2, g, centre)

    def hessian_contract(self, q1, q2, g1, c1, g2, c2) -> torch.Tensor:
        return self.variance * self.unit_hessian_contract(q1, q2, g1, c1, g2, c2)

    def diag_value(self, q: torch.Tensor) -> torch.Tensor:
        return self.variance * self.unit_diag(q)

    def forward(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch:
            raise ValueError(f"{type(self).__name__} does not support last_dim_is_batch")
        if diag:
            if x1.shape != x2.shape or not torch.equal(x1, x2):
                return self.variance * torch.stack(
                    [self.unit_value(a[None], b[None])[0, 0] for a, b in zip(x1, x2)])
            return self.diag_value(x1)
        return self.value(x1, x2)


class SOAPKernel(DescriptorKernel):
    """GAP's dot-product SOAP kernel ``k(q, q') = delta^2 (q . q')^zeta``.

    With normalised descriptors (``SOAP(normalize=True)``, the default) ``q . q'``
    is the cosine of the angle between environments, ``k(q, q) = delta^2`` is the
    prior variance of a local energy, and ``zeta`` (an integer, usually 4) raises
    the body order. Derivatives, with ``s = q1 . q2``:

    .. math::

        \\frac{\\partial k}{\\partial q_1} = \\delta^2 \\zeta s^{\\zeta-1} q_2, \\qquad
        \\frac{\\partial^2 k}{\\partial q_1 \\partial q_2} = \\delta^2 \\zeta
            \\left[(\\zeta - 1) s^{\\zeta-2} q_2 q_1^T + s^{\\zeta-1} I\\right].

    Parameters
    ----------
    zeta : int
        Exponent (>= 1).
    delta : float
        Prior standard deviation of a local energy, eV.
    delta_prior : gpytorch.priors.Prior, optional
    """

    def __init__(self, zeta: int = 4, delta: float = 1.0, **kwargs):
        if isinstance(zeta, bool) or int(zeta) != zeta or zeta < 1:
            raise ValueError(f"zeta must be an integer >= 1, got {zeta!r}")
        super().__init__(delta, **kwargs)
        self.zeta = int(zeta)

    def unit_value(self, q1, q2):
        return (q1 @ q2.T) ** self.zeta

    def unit_diag(self, q):
        return (q * q).sum(-1) ** self.zeta

    def unit_weighted_gradient(self, q1, q2, w):
        z = self.zeta
        return (z * (q1 @ q2.T) ** (z - 1) * w) @ q2

    def force_prior_variance(self, q, g, centre, atom, types, n_atoms) -> torch.Tensor:
        """Batched over atoms: the entries of each atom are padded to a common count
        and ``sum_{ef} [(zeta-1) s^(zeta-2) (g_e.q_f)(g_f.q_e) + s^(zeta-1) g_e.g_f]``
        becomes a few batched GEMMs (see :meth:`DescriptorKernel.force_prior_variance`)."""
        z = self.zeta
        out = torch.zeros((n_atoms, 3), dtype=q.dtype)
        for a0, a1, qa, ga, mask in padded_entries_by_atom(q, g, centre, atom, types, n_atoms):
            mask = mask.to(q.dtype)
            s = torch.bmm(qa, qa.transpose(1, 2))  # (na, J, J)
            w1 = z * s ** (z - 1) * mask
            w2 = z * (z - 1) * s ** (z - 2) * mask if z > 1 else None
            for a in range(3):
                gx = ga[:, :, a, :]
                gg = torch.bmm(gx, gx.transpose(1, 2))
                total = (w1 * gg).sum((1, 2))
                if w2 is not None:
                    gq = torch.bmm(gx, qa.transpose(1, 2))  # (g_e . q_f)
                    total = total + (w2 * gq * gq.transpose(1, 2)).sum((1, 2))
                out[a0:a1, a] = total
        return self.variance * out

    def unit_grad_contract(self, q1, q2, g, centre):
        z = self.zeta
        s = q1[centre] @ q2.T  # (E, n2)
        w = z * s ** (z - 1)
        proj = torch.matmul(g, q2.T)  # (E, r, n2): the GEMM of force rows
        return w[:, None, :] * proj

    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        z = self.zeta
        s = (q1 @ q2.T)[c1][:, c2]  # (E, F)
        a = torch.matmul(g1, q2[c2].T)  # (E, r1, F): g1 . q2_f
        b = torch.matmul(g2, q1[c1].T)  # (F, r2, E): g2 . q1_e
        gg = torch.einsum("erd,fsd->erfs", g1, g2)
        out = (z * s ** (z - 1))[:, None, :, None] * gg
        if z > 1:
            out = out + (z * (z - 1) * s ** (z - 2))[:, None, :, None] * (
                a[:, :, :, None] * b.permute(2, 0, 1)[:, None, :, :])
        return out


class TwoBodyKernel(DescriptorKernel):
    """Squared-exponential kernel on pair distances with GAP's covariance cutoff.

    .. math::

        k(r, r') = \\delta^2 \\exp\\!\\left(-\\frac{(r - r')^2}{2\\theta^2}\\right)
            f_c(r) f_c(r')

    ``f_c`` is the descriptor's smooth cutoff, so a pair contributes nothing (and
    no force) as it leaves the cutoff.

    Parameters
    ----------
    cutoff, cutoff_width : float
        Those of the :class:`~gapkit.descriptors.TwoBody` descriptor, Å.
    lengthscale : float
        ``theta``, Å (GPyTorch ``lengthscale`` with its Positive constraint).
    delta : float
        Prior standard deviation of a pair energy, eV.
    """

    has_lengthscale = True

    def __init__(self, cutoff: float = 5.0, cutoff_width: float = 1.0, lengthscale: float = 0.5,
                 delta: float = 1.0, **kwargs):
        from .descriptors.cutoff import CosineCutoff

        super().__init__(delta, **kwargs)
        # gpytorch creates raw_lengthscale in the default dtype (float32): keep float64
        self.raw_lengthscale = torch.nn.Parameter(self.raw_lengthscale.detach().to(torch.float64))
        if not (lengthscale > 0 and math.isfinite(lengthscale)):
            raise ValueError(f"lengthscale must be a finite number > 0 Å, got {lengthscale!r}")
        self.lengthscale = torch.tensor(float(lengthscale), dtype=torch.float64)
        self.cutoff_fn = CosineCutoff(cutoff, cutoff_width)

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


def padded_entries_by_atom(q, g, centre, atom, types, n_atoms, *, target_slots: int = 4096):
    """The gradient entries of each atom, padded to a common count ``J``, in chunks.

    Yields ``(a0, a1, qa, ga, mask)`` for atoms ``a0..a1``: ``qa`` (na, J, D) the
    descriptors of the entries' centres (padding repeats a real descriptor, so that
    norms stay non-zero), ``ga`` (na, J, 3, D) the entries' gradients (zero padding),
    and ``mask`` (na, J, J) true for pairs of real entries of the same kernel type.
    The force prior variances of the kernels are batched GEMMs over these blocks.
    """
    centre = torch.as_tensor(centre)
    atom = np.asarray(atom)
    if atom.size == 0:
        return
    d = q.shape[1]
    order = np.argsort(atom, kind="stable")
    counts = np.bincount(atom, minlength=n_atoms)
    width = max(int(counts.max()), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_atoms = atom[order]
    slot = torch.as_tensor(sorted_atoms * width + np.arange(order.size) - starts[sorted_atoms])
    order_t = torch.as_tensor(order)
    n_slots = n_atoms * width
    g_pad = torch.zeros((n_slots, 3, d), dtype=q.dtype)
    g_pad[slot] = g[order_t]
    q_pad = q[centre[order_t[:1]]].expand(n_slots, d).clone()
    q_pad[slot] = q[centre[order_t]]
    t_pad = torch.full((n_slots,), -1, dtype=torch.long)
    t_pad[slot] = torch.as_tensor(types)[centre[order_t]]
    valid = torch.zeros(n_slots, dtype=torch.bool)
    valid[slot] = True
    chunk = max(1, target_slots // width)
    for a0 in range(0, n_atoms, chunk):
        a1 = min(n_atoms, a0 + chunk)
        sl = slice(a0 * width, a1 * width)
        na = a1 - a0
        ta = t_pad[sl].view(na, width)
        va = valid[sl].view(na, width)
        mask = (ta[:, :, None] == ta[:, None, :]) & va[:, :, None] & va[:, None, :]
        yield a0, a1, q_pad[sl].view(na, width, d), g_pad[sl].view(na, width, 3, d), mask
