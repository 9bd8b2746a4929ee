"""GAP's dot-product SOAP kernel."""

from __future__ import annotations

import torch

from .._checks import count
from .base import DescriptorKernel, padded_entries_by_atom

__all__ = ["SOAPKernel"]


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
        zeta = count(zeta, "zeta")
        super().__init__(delta, **kwargs)
        self.zeta = zeta

    def get_params(self) -> dict:
        """Constructor keywords: ``zeta`` and ``delta`` (eV)."""
        return {"zeta": self.zeta, **super().get_params()}

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
        becomes a few batched GEMMs (see :meth:`DescriptorKernel.force_prior_variance`):
        ``g_e . q_f`` for the three directions in one, ``g_e . g_f`` one per direction
        on a strided view (no copy)."""
        z = self.zeta
        out = torch.zeros((n_atoms, 3), dtype=q.dtype)
        for a0, a1, qa, ga, mask in padded_entries_by_atom(q, g, centre, atom, types, n_atoms):
            na, width, d = qa.shape
            mask = mask.to(q.dtype)
            s = torch.bmm(qa, qa.transpose(1, 2))  # (na, J, J)
            w1 = z * s ** (z - 1) * mask
            w2 = z * (z - 1) * s ** (z - 2) * mask if z > 1 else None
            gq = None
            if w2 is not None:  # (g_e . q_f) for every direction: (na, J, 3, J)
                gq = torch.matmul(ga.view(na, width * 3, d), qa.transpose(1, 2))
                gq = gq.view(na, width, 3, width)
            for a in range(3):
                gx = ga[:, :, a, :]
                total = (w1 * torch.bmm(gx, gx.transpose(1, 2))).sum((1, 2))
                if gq is not None and w2 is not None:
                    ga_q = gq[:, :, a, :]
                    total = total + (w2 * ga_q * ga_q.transpose(1, 2)).sum((1, 2))
                out[a0:a1, a] = total
        return self.variance * out

    def compact_force_prior_variance(self, q, compact, own_atom, types, n_atoms):
        """:meth:`force_prior_variance` from compact gradients
        (:meth:`gapkit.descriptors.soap.CompactGradients.atom_slots`), in ``x``'s layout:
        with ``g_e = P x_e - t_e q_e`` (``P`` writes ``x``'s layout into the features,
        ``P^T v`` = ``in_layout(v)``) and the own entry ``o`` dense,

        ``g_e . q_f = x_e . P^T q_f - t_e s_ef``,
        ``g_e . g_f = x_e . x_f - t_f x_e . P^T q_f - t_e x_f . P^T q_e + t_e t_f s_ef``,
        ``o . g_f = P^T o . x_f - t_f o . q_f``,

        so the GEMMs run over the W columns of the neighbour's blocks, not all F."""
        z = self.zeta
        out = torch.zeros((n_atoms, 3), dtype=q.dtype)
        layouts: dict = {}  # the centres' q in x's layout, per species (n_c, W)
        for atoms, sp, x, t, centre, valid, own in compact.atom_slots(q, own_atom, n_atoms):
            na, jn, _, w = x.shape
            j1 = jn + 1
            qd = q[centre]  # (na, J+1, F)
            if max(sp, 0) not in layouts:
                layouts[max(sp, 0)] = compact.in_layout(q, max(sp, 0), symmetrised=True)
            qt = layouts[max(sp, 0)][centre]  # (na, J+1, W)
            ot = compact.in_layout(own.reshape(na * 3, -1), max(sp, 0),
                                   symmetrised=True).view(na, 3, w)
            ty = types[centre]
            mask = ((ty[:, :, None] == ty[:, None, :]) & valid[:, :, None]
                    & valid[:, None, :]).to(q.dtype)
            s = torch.bmm(qd, qd.transpose(1, 2))  # (na, J+1, J+1)
            w1 = z * s ** (z - 1) * mask
            w2 = z * (z - 1) * s ** (z - 2) * mask if z > 1 else None
            # x_e . P^T q_f for every direction: (na, J, 3, J+1)
            xq = torch.bmm(x.reshape(na, jn * 3, w), qt.transpose(1, 2)).view(na, jn, 3, j1)
            oq = torch.bmm(own, qd.transpose(1, 2))  # (na, 3, J+1): o . q_f
            for a in range(3):
                xa = x[:, :, a, :]  # (na, J, W)
                ta = t[:, :, a]  # (na, J)
                xqa = xq[:, :, a, :]  # (na, J, J+1)
                gq = torch.empty((na, j1, j1), dtype=q.dtype)  # g_e . q_f
                gq[:, :jn] = xqa - ta[:, :, None] * s[:, :jn]
                gq[:, jn] = oq[:, a]
                gg = torch.empty((na, j1, j1), dtype=q.dtype)  # g_e . g_f
                pp = torch.bmm(xa, xa.transpose(1, 2))
                pp -= ta[:, None, :] * xqa[:, :, :jn]
                pp -= ta[:, :, None] * xqa[:, :, :jn].transpose(1, 2)
                pp += ta[:, :, None] * ta[:, None, :] * s[:, :jn, :jn]
                gg[:, :jn, :jn] = pp
                og = (torch.bmm(xa, ot[:, a, :, None])[..., 0]
                      - ta * oq[:, a, :jn])  # (na, J): o . g_f
                gg[:, jn, :jn] = og
                gg[:, :jn, jn] = og
                gg[:, jn, jn] = (own[:, a] * own[:, a]).sum(1)
                total = (w1 * gg).sum((1, 2))
                if w2 is not None:
                    total = total + (w2 * gq * gq.transpose(1, 2)).sum((1, 2))
                out[atoms, a] += total
        return self.variance * out

    def unit_grad_contract(self, q1, q2, g, centre):
        return self._grad_contract(q1, q2, g, centre, 1.0)

    def grad_contract(self, q1, q2, g, centre):
        return self._grad_contract(q1, q2, g, centre, self.variance)

    def _grad_contract(self, q1, q2, g, centre, scale):
        """``scale * zeta s^(zeta-1) (g_e . q2)`` with ``s`` the kernel of each entry's
        centre: ``s`` once per distinct centre (not per entry: an environment has ~15
        entries, and ``s`` per entry was a third of the GEMM work), the scale folded into
        the (centres, n2) weights, and the (E, r, n2) GEMM output scaled in place."""
        z = self.zeta
        centres, inverse = torch.unique(centre, return_inverse=True)
        w = (scale * z) * (q1[centres] @ q2.T) ** (z - 1)  # (C, n2)
        proj = torch.matmul(g, q2.T)  # (E, r, n2): the GEMM of force rows
        return proj.mul_(w[inverse][:, None, :])

    def compact_grad_contract(self, q1, q2, x, zx, t, centre, *, unit: bool = False):
        """:meth:`grad_contract` (``unit``: :meth:`unit_grad_contract`) of gradients held
        compactly (:class:`gapkit.descriptors.soap.CompactGradients`): ``g_e = x_e[:,
        index] - t_e q1[centre_e]``, so ``g_e . q2 = x_e zx^T - t_e (q1[centre_e] . q2)``
        with ``zx`` the points ``q2`` written into ``x``'s layout (zero where ``x`` holds
        nothing) — a GEMM over the neighbour's blocks only."""
        z = self.zeta
        scale = 1.0 if unit else self.variance
        centres, inverse = torch.unique(centre, return_inverse=True)
        s = q1[centres] @ q2.T  # (C, n2): per centre, as _grad_contract
        w = (scale * z) * s ** (z - 1)
        proj = torch.matmul(x, zx.T).mul_(w[inverse][:, None, :])  # (E, 3, n2)
        return proj.addcmul_(t[:, :, None], (s * w)[inverse][:, None, :], value=-1.0)

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

