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

__all__ = ["DescriptorKernel", "SEKernel", "SOAPKernel", "TwoBodyKernel"]


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


class SEKernel(DescriptorKernel):
    """Squared-exponential kernel on descriptor vectors with fixed per-feature scales.

    .. math::

        k(q, q') = \\delta^2 \\exp\\!\\left(-\\frac{1}{2\\ell^2}
            \\sum_D \\frac{(q_D - q'_D)^2}{s_D^2}\\right)

    For descriptors whose features have very different magnitudes (Behler–Parrinello
    :class:`~gapkit.descriptors.SymmetryFunctions`: radial sums of order 1-10 next to
    ``ζ = 16`` angular terms of order 1e-3), where SOAP's normalised dot product would
    be dominated by the few largest features. ``s`` is a fixed (not learned) vector,
    usually the standard deviation of each feature over the training environments
    (:meth:`fit_scales`, :meth:`with_scales_from`); ``ℓ`` (dimensionless, in units of
    ``s``) is a learnable GPyTorch ``lengthscale`` with a Positive constraint (and an
    optional ``lengthscale_prior``). ``k(q, q) = δ²`` is the prior variance of a local
    energy. Generic: it works on any descriptor, SOAP included.

    With ``x = q / (s ℓ)``, ``d = x_1 - x_2`` and ``κ = k/δ²`` the derivatives are

    .. math::

        \\frac{\\partial κ}{\\partial q_1} = -κ\\, \\frac{d}{s \\ell}, \\qquad
        \\frac{\\partial^2 κ}{\\partial q_1 \\partial q_2^T} =
            κ\\, \\mathrm{diag}\\!\\left(\\frac{1}{s\\ell}\\right)(I - d\\, d^T)\\,
            \\mathrm{diag}\\!\\left(\\frac{1}{s\\ell}\\right),

    so the contractions with descriptor gradients ``g`` are GEMMs of ``g / (s ℓ)``
    against ``x``. Squared distances are formed as ``|x1|² + |x2|² - 2 x1·x2`` (one GEMM)
    after subtracting the mean of ``x2`` from both sides, which keeps the cancellation
    error at the level of the spread of the data rather than of its magnitude.

    Parameters
    ----------
    lengthscale : float
        ``ℓ`` (> 0), in units of the scales: with std scales and ``D`` roughly
        independent features, two unrelated environments are ``sqrt(2D)`` apart, so
        values of order ``sqrt(D)`` keep the kernel from vanishing between them.
    delta : float
        Prior standard deviation of a local energy, eV.
    scales : array-like of shape (n_features,), optional
        Per-feature scales ``s`` (> 0, in the descriptor's units); None for all ones.
        Stored as a buffer (moves with ``.to()``, saved in ``state_dict``).
    delta_prior, lengthscale_prior : gpytorch.priors.Prior, optional

    Raises
    ------
    ValueError
        Non-positive or non-finite ``lengthscale``, ``delta`` or ``scales``; and, when
        called, descriptors whose width differs from ``len(scales)``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from gapkit.descriptors import SymmetryFunctions
    >>> atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    >>> atoms.rattle(0.1, seed=0)
    >>> res = SymmetryFunctions(cutoff=4.0).compute(atoms)
    >>> kernel = SEKernel.with_scales_from(res, delta=0.5)  # lengthscale from the data
    >>> kernel.get_params()["scales"] is not None
    True
    """

    has_lengthscale = True

    def __init__(self, lengthscale: float = 1.0, delta: float = 1.0, scales=None, **kwargs):
        super().__init__(delta, **kwargs)
        # gpytorch creates raw_lengthscale in the default dtype (float32): keep float64
        self.raw_lengthscale = torch.nn.Parameter(self.raw_lengthscale.detach().to(torch.float64))
        if isinstance(lengthscale, bool) or not (lengthscale > 0 and math.isfinite(lengthscale)):
            raise ValueError(f"lengthscale must be a finite number > 0, got {lengthscale!r}")
        self.lengthscale = torch.tensor(float(lengthscale), dtype=torch.float64)
        if scales is not None:
            scales = torch.as_tensor(np.asarray(scales, dtype=np.float64)).reshape(-1).clone()
            if scales.numel() == 0 or not bool(torch.isfinite(scales).all()) \
                    or not bool((scales > 0).all()):
                raise ValueError("scales must be a non-empty vector of finite numbers > 0 "
                                 "(one per descriptor feature); use SEKernel.fit_scales to "
                                 "get them from training descriptors")
        self.register_buffer("scales", scales)

    # -- scales ---------------------------------------------------------------------
    @staticmethod
    def fit_scales(values, *, rtol: float = 1e-8) -> np.ndarray:
        """Per-feature standard deviations of descriptor ``values``, for ``scales``.

        Parameters
        ----------
        values : DescriptorResult or array-like of shape (n_centres, n_features)
            Training environments (a result's ``values`` are used).
        rtol : float
            Features whose standard deviation is at most ``rtol`` times the largest
            absolute descriptor value (constant over the data up to rounding, e.g. the
            block of a species pair that never occurs) get the median of the other
            standard deviations instead, so that a new environment that differs in
            them is neither ignored nor infinitely far away.

        Returns
        -------
        ndarray of shape (n_features,)
            Scales > 0, in the descriptor's units.

        Raises
        ------
        ValueError
            Fewer than two environments, non-finite values, or all features constant.
        """
        q = np.asarray(getattr(values, "values", values), dtype=np.float64)
        if q.ndim != 2 or q.shape[0] < 2:
            raise ValueError(f"need a (n_centres >= 2, n_features) array of descriptors, got "
                             f"shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError("descriptor values contain NaN or infinity")
        std = q.std(axis=0)
        valid = std > rtol * np.abs(q).max()
        if not valid.any():
            raise ValueError("every feature is constant over these environments; cannot "
                             "set scales from them (give more diverse data or scales=None)")
        return np.where(valid, std, np.median(std[valid]))

    @classmethod
    def with_scales_from(cls, values, *, lengthscale: float | None = None,
                         lengthscale_factor: float = 3.0, max_points: int = 1000,
                         **kwargs) -> "SEKernel":
        """A kernel with ``scales = fit_scales(values)`` and, unless given, a lengthscale
        from the data.

        Parameters
        ----------
        values : DescriptorResult or array-like of shape (n_centres, n_features)
            Training environments. With a DescriptorResult, only pairs of centres of
            the same ``centre_types`` enter the median below.
        lengthscale : float, optional
            ``ℓ``; default ``lengthscale_factor`` times the median distance between
            the scaled environments ``q / s`` (over at most ``max_points`` evenly
            spaced rows; deterministic). A few median distances puts the kernel in its
            smooth, nearly quadratic regime: on 20 frames of the bundled Si data with
            the default :class:`~gapkit.descriptors.SymmetryFunctions`, held-out force
            errors were within 10% of the best over a scan of ℓ from 1 to 48, while
            ``ℓ = 1`` was 6x worse (the kernel between distinct environments vanishes).
        lengthscale_factor : float
            Multiple of the median distance for the default ``ℓ``.
        max_points : int
            Rows used for the median.
        **kwargs
            ``delta``, priors, ... for the constructor.

        Returns
        -------
        SEKernel
        """
        scales = cls.fit_scales(values)
        if lengthscale is None:
            q = np.asarray(getattr(values, "values", values), dtype=np.float64) / scales
            types = getattr(values, "centre_types", None)
            rows = np.unique(np.linspace(0, q.shape[0] - 1, min(max_points, q.shape[0]))
                             .round().astype(np.int64))
            x = q[rows]
            sq = (x * x).sum(1)
            d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
            keep = np.triu(np.ones(d2.shape, dtype=bool), 1)
            if types is not None:
                t = np.asarray(types)[rows]
                keep &= t[:, None] == t[None, :]
            dist = np.sqrt(np.clip(d2[keep], 0.0, None))
            dist = dist[dist > 0]
            if dist.size == 0:
                raise ValueError("cannot choose a lengthscale: the environments are all "
                                 "identical; pass lengthscale=...")
            lengthscale = float(lengthscale_factor * np.median(dist))
        return cls(lengthscale=lengthscale, scales=scales, **kwargs)

    def get_params(self) -> dict:
        """Constructor arguments (JSON-serialisable): ``lengthscale``, ``delta``, ``scales``."""
        return {"lengthscale": float(self.lengthscale.detach().reshape(())),
                "delta": float(self.delta.detach().reshape(())),
                "scales": None if self.scales is None else self.scales.tolist()}

    # -- helpers --------------------------------------------------------------------
    def _inverse_scale(self, q: torch.Tensor) -> torch.Tensor:
        """``1 / (s ℓ)``, shape (D,) or () without scales."""
        inv = 1.0 / self.lengthscale.reshape(()).to(q.dtype)
        if self.scales is None:
            return inv
        if q.shape[-1] != self.scales.numel():
            raise ValueError(f"descriptors have {q.shape[-1]} features but the kernel has "
                             f"{self.scales.numel()} scales; fit the scales on descriptors "
                             "of the same settings and species")
        return inv / self.scales.to(q.dtype)

    def _scaled(self, q1, q2):
        """``x1, x2 = q / (s ℓ)`` shifted by the mean of ``x2``, and ``1/(s ℓ)``."""
        inv = self._inverse_scale(q1)
        self._inverse_scale(q2)
        x1, x2 = q1 * inv, q2 * inv
        centre = x2.mean(0).detach() if x2.shape[0] else 0.0
        return x1 - centre, x2 - centre, inv

    @staticmethod
    def _kappa(x1, x2):
        d2 = (x1 * x1).sum(-1)[:, None] + (x2 * x2).sum(-1)[None, :] - 2.0 * (x1 @ x2.T)
        return torch.exp(-0.5 * d2.clamp(min=0.0))

    # -- the unit kernel ------------------------------------------------------------
    def unit_value(self, q1, q2):
        x1, x2, _ = self._scaled(q1, q2)
        return self._kappa(x1, x2)

    def unit_diag(self, q):
        self._inverse_scale(q)
        return torch.ones(q.shape[0], dtype=q.dtype, device=q.device)

    def unit_weighted_gradient(self, q1, q2, w):
        x1, x2, inv = self._scaled(q1, q2)
        wk = w * self._kappa(x1, x2)  # (n1, n2)
        return -(wk.sum(1, keepdim=True) * x1 - wk @ x2) * inv

    def unit_grad_contract(self, q1, q2, g, centre):
        x1, x2, inv = self._scaled(q1, q2)
        xc = x1[centre]  # (E, D)
        kc = self._kappa(xc, x2)  # (E, n2)
        gs = g * inv  # (E, r, D)
        a = (gs * xc[:, None, :]).sum(-1)  # g~ . x1
        b = torch.matmul(gs, x2.T)  # (E, r, n2): g~ . x2, the GEMM of force rows
        return -kc[:, None, :] * (a[:, :, None] - b)

    def unit_hessian_contract(self, q1, q2, g1, c1, g2, c2):
        x1, x2, inv = self._scaled(q1, q2)
        xa, xb = x1[c1], x2[c2]  # (E, D), (F, D)
        k = self._kappa(xa, xb)  # (E, F)
        ga, gb = g1 * inv, g2 * inv
        # A[e, r, f] = g~1_er . (x1_e - x2_f);  B[e, f, s] = g~2_fs . (x1_e - x2_f)
        a = (ga * xa[:, None, :]).sum(-1)[:, :, None] - torch.matmul(ga, xb.T)
        b = torch.matmul(gb, xa.T).permute(2, 0, 1) - (gb * xb[:, None, :]).sum(-1)[None]
        gg = torch.einsum("erd,fsd->erfs", ga, gb)
        return k[:, None, :, None] * (gg - a[:, :, :, None] * b[:, None, :, :])

    def force_prior_variance(self, q, g, centre, atom, types, n_atoms) -> torch.Tensor:
        """Batched over atoms (see :meth:`DescriptorKernel.force_prior_variance`): for
        the padded entries ``e, f`` of an atom, with ``G_ef = g~_e . x_f``,
        ``sum_ef κ_ef [g~_e . g~_f - (G_ee - G_ef)(G_fe - G_ff)]`` per direction."""
        out = torch.zeros((n_atoms, 3), dtype=q.dtype)
        inv = self._inverse_scale(q)
        shift = (q * inv).mean(0) if q.shape[0] else 0.0
        for a0, a1, qa, ga, mask in padded_entries_by_atom(q, g, centre, atom, types, n_atoms):
            xa = qa * inv - shift  # (na, J, D)
            sq = (xa * xa).sum(-1)
            d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * torch.bmm(xa, xa.transpose(1, 2))
            k = torch.exp(-0.5 * d2.clamp(min=0.0)) * mask.to(q.dtype)
            for c in range(3):
                gx = ga[:, :, c, :] * inv  # (na, J, D)
                gg = torch.bmm(gx, gx.transpose(1, 2))
                big_g = torch.bmm(gx, xa.transpose(1, 2))  # G[e, f] = g~_e . x_f
                diag = torch.diagonal(big_g, dim1=1, dim2=2)
                a = diag[:, :, None] - big_g  # g~_e . (x_e - x_f)
                b = big_g.transpose(1, 2) - diag[:, None, :]  # g~_f . (x_e - x_f)
                out[a0:a1, c] = (k * (gg - a * b)).sum((1, 2))
        return self.variance * out


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
