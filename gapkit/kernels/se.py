"""Squared-exponential kernel on descriptor vectors with per-feature scales."""

from __future__ import annotations

import numpy as np
import torch

from .._checks import positive
from .base import DescriptorKernel, padded_entries_by_atom

__all__ = ["SEKernel"]


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
        raw = self.get_parameter("raw_lengthscale")  # made by gpytorch
        self.raw_lengthscale = torch.nn.Parameter(raw.detach().to(torch.float64))
        self.lengthscale = torch.tensor(positive(lengthscale, "lengthscale"),
                                        dtype=torch.float64)
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
            smooth, nearly quadratic regime; much smaller ``ℓ`` makes the kernel between
            distinct environments vanish (the scan is in benchmarks/README.md).
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

