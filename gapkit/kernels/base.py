"""The base class of the descriptor kernels and the padded-entry helper they share.

Every kernel is a :class:`gpytorch.kernels.Kernel` (its hyper-parameters carry
GPyTorch constraints and optional priors) and adds operations in descriptor
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

import gpytorch
import numpy as np
import torch
from gpytorch.constraints import Positive

from .._checks import positive

__all__ = ["DescriptorKernel", "padded_entries_by_atom"]


class DescriptorKernel(gpytorch.kernels.Kernel, metaclass=abc.ABCMeta):
    """Base class: a ``delta``-scaled kernel ``delta^2 * kappa(q1, q2)``.

    Subclasses implement the unit kernel ``kappa`` and its derivatives; ``delta``
    (eV) is a positive GPyTorch parameter with an optional prior.
    """

    is_stationary = False

    def __init__(self, delta: float = 1.0, *, delta_prior=None, delta_constraint=None, **kwargs):
        super().__init__(**kwargs)
        positive(delta, "delta", "eV")
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

    # -- settings ------------------------------------------------------------
    def get_params(self) -> dict:
        """Constructor keywords (JSON-serialisable), ``delta`` (eV) included, so that
        ``type(k)(**k.get_params())`` is the same kernel. Subclasses add theirs."""
        return {"delta": float(self.delta.detach().reshape(()))}

    def bind(self, descriptor) -> "DescriptorKernel":
        """Check this kernel against the descriptor it will be used with (and take from
        it any setting the descriptor owns); returns ``self``.

        The descriptor owns its settings: a kernel never holds a second copy that could
        disagree. The base kernel needs nothing from the descriptor;
        :class:`~gapkit.kernels.TwoBodyKernel` takes its cutoff.

        Raises
        ------
        ValueError
            When the kernel's own setting contradicts the descriptor's.
        """
        return self

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


def padded_entries_by_atom(q, g, centre, atom, types, n_atoms, *,
                           target_bytes: int = 8 << 20):
    """The gradient entries of each atom, padded to a common count ``J`` per chunk of
    atoms (the largest count in the chunk: small cells beside large ones pad little).

    Yields ``(a0, a1, qa, ga, mask)`` for atoms ``a0..a1``: ``qa`` (na, J, D) the
    descriptors of the entries' centres (padding repeats a real descriptor, so that
    norms stay non-zero), ``ga`` (na, J, 3, D) the entries' gradients (zero padding),
    and ``mask`` (na, J, J) true for pairs of real entries of the same kernel type.
    The force prior variances of the kernels are batched GEMMs over these blocks.

    Each chunk is one ``index_select`` of the entries (about ``target_bytes`` of
    gradients) with the few padding slots zeroed after it: no buffer of all entries
    is written and read again (the scattered copy into a zeroed buffer of every slot
    took half the time of the SOAP force prior variance). Chunks of 8 MB stay in
    cache: 32 MB chunks cost 1.3x the time per atom on Si 1000.

    ``g`` is the dense (E, 3, D) gradients or an object whose ``flat_rows(ids)`` writes
    entries ``ids`` out, (len(ids), 3 D) (compact SOAP gradients:
    :class:`gapkit.descriptors.soap.CompactEntries`), chunk by chunk.
    """
    centre = torch.as_tensor(centre)
    atom = np.asarray(atom)
    if atom.size == 0:
        return
    d = q.shape[1]
    order = np.argsort(atom, kind="stable")
    counts = np.bincount(atom, minlength=n_atoms)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    types = torch.as_tensor(types)
    per_slot = 3 * d * q.element_size()
    # g: a dense (E, 3, D) tensor, or entries written out on demand (``flat_rows``)
    flat = g.reshape(g.shape[0], 3 * d) if isinstance(g, torch.Tensor) else None
    a0 = 0
    while a0 < n_atoms:
        # as many atoms as fit in target_bytes at the largest count among them
        a1 = min(n_atoms, a0 + max(1, int(target_bytes) // (max(int(counts[a0]), 1)
                                                             * per_slot)))
        width = max(int(counts[a0:a1].max()), 1)
        a1 = min(a1, a0 + max(1, int(target_bytes) // (width * per_slot)))
        width = max(int(counts[a0:a1].max()), 1)
        na = a1 - a0
        # slot (atom, j) reads entry order[starts[atom] + j]; a padding slot reads a real one
        valid = np.arange(width)[None, :] < counts[a0:a1, None]
        position = np.where(valid, starts[a0:a1, None] + np.arange(width)[None, :], 0)
        ids = torch.as_tensor(order[position.ravel()])
        # rows of 3 D numbers: index_select on the 2-D view is ~1.7x faster than on 3-D
        ga = flat.index_select(0, ids) if flat is not None else g.flat_rows(ids)
        pad = torch.as_tensor(np.flatnonzero(~valid.ravel()))
        if pad.numel():
            ga.index_fill_(0, pad, 0.0)
        slot_centre = centre.index_select(0, ids)
        ta = types.index_select(0, slot_centre).view(na, width)
        va = torch.as_tensor(valid)
        mask = (ta[:, :, None] == ta[:, None, :]) & va[:, :, None] & va[:, None, :]
        qa = q.index_select(0, slot_centre).view(na, width, d)
        yield a0, a1, qa, ga.view(na, width, 3, d), mask
        a0 = a1
