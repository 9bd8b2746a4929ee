"""Real spherical harmonics and their Cartesian gradients, vectorised over pairs.

Orthonormal real harmonics (``∫ Y_lm Y_l'm' dΩ = δ_ll' δ_mm'``), no Condon-Shortley
phase, column ``l^2 + l + m`` for ``m = -l..l``:

.. math::

    Y_{l0} = N_{l0} Q_l^0, \\quad
    Y_{l,\\pm m} = \\sqrt2\\, N_{lm} Q_l^m \\{\\mathrm{Re}, \\mathrm{Im}\\}(x + i y)^m,
    \\quad N_{lm} = \\sqrt{\\tfrac{2l+1}{4\\pi}\\tfrac{(l-m)!}{(l+m)!}},

where ``Q_l^m`` (homogeneous in ``z`` and ``r^2``) follows
``Q_m^m = (2m-1)!!``, ``Q_{m+1}^m = (2m+1) z Q_m^m`` and
``(l-m) Q_l^m = (2l-1) z Q_{l-1}^m - (l+m-1) r^2 Q_{l-2}^m``. These are solid
harmonics ``S_lm(r) = r^l Y_lm(r̂)``; they are evaluated at ``u = r/|r|`` and
differentiated in forward mode, and because ``S_lm`` is homogeneous of degree ``l``

.. math::

    \\frac{\\partial Y_{lm}(\\hat r)}{\\partial \\mathbf r}
        = \\frac{\\nabla S_{lm}(\\mathbf u) - l\\, S_{lm}(\\mathbf u)\\, \\mathbf u}{|\\mathbf r|}.
"""

from __future__ import annotations

import math

import torch

__all__ = ["harmonic_constants", "real_spherical_harmonics"]


def real_spherical_harmonics(vectors: torch.Tensor, l_max: int, gradients: bool = True,
                             transposed: bool = False):
    """Y_lm(r̂) for every row of ``vectors`` (shape (n, 3), non-zero rows).

    Returns
    -------
    values : tensor of shape (n, (l_max + 1)^2)
    gradients : tensor of shape (n, 3, (l_max + 1)^2) or None
        d Y_lm / d r (Å^-1).

    With ``transposed=True`` the pair axis comes last: shapes ((l_max+1)^2, n) and
    (3, (l_max+1)^2, n) (the layout the recurrences run in).
    """
    n = vectors.shape[0]
    dtype, device = vectors.dtype, vectors.device
    vt = vectors.T.contiguous()
    r = torch.sqrt((vt * vt).sum(0))
    u = vt / r  # (3, n)
    x, y, z = u[0], u[1], u[2]

    # cs[m] = c_m = Re (x+iy)^m, sn[m] = s_m = Im (x+iy)^m
    cs = torch.empty((l_max + 1, n), dtype=dtype, device=device)
    sn = torch.empty((l_max + 1, n), dtype=dtype, device=device)
    cs[0], sn[0] = 1.0, 0.0
    for m in range(1, l_max + 1):
        cs[m] = x * cs[m - 1] - y * sn[m - 1]
        sn[m] = x * sn[m - 1] + y * cs[m - 1]

    n_lm = (l_max + 1) ** 2
    values = torch.empty((n_lm, n), dtype=dtype, device=device)
    grads = torch.empty((3, n_lm, n), dtype=dtype, device=device) if gradients else None
    if gradients:
        mm = torch.arange(1, l_max + 1, dtype=dtype, device=device)[:, None]
        zero = torch.zeros((l_max, n), dtype=dtype, device=device)
        # d c_m = (m c_{m-1}, -m s_{m-1}, 0); d s_m = (m s_{m-1}, m c_{m-1}, 0); m >= 1
        dcs = torch.stack([mm * cs[:-1], -mm * sn[:-1], zero])  # (3, l_max, n)
        dsn = torch.stack([mm * sn[:-1], mm * cs[:-1], zero])

    q_prev2 = q_prev = dq_prev2 = dq_prev = None
    for l in range(l_max + 1):
        # Q_l^m for m = 0..l as rows of q (l+1, n), gradients dq (3, l+1, n)
        q = torch.empty((l + 1, n), dtype=dtype, device=device)
        q[l] = float(math.prod(range(1, 2 * l, 2)))
        if gradients:
            dq = torch.zeros((3, l + 1, n), dtype=dtype, device=device)
        if l >= 1:
            q[l - 1] = (2 * l - 1) * z * q_prev[l - 1]
            if gradients:
                dq[:, l - 1] = (2 * l - 1) * z * dq_prev[:, l - 1]
                dq[2, l - 1] += (2 * l - 1) * q_prev[l - 1]
        if l >= 2:
            m = torch.arange(l - 1, dtype=dtype, device=device)[:, None]
            a = (2 * l - 1) / (l - m)
            b = (l + m - 1) / (l - m)
            q1, q2 = q_prev[: l - 1], q_prev2[: l - 1]
            q[: l - 1] = a * z * q1 - b * q2  # r^2 = 1 at u
            if gradients:
                dq[:, : l - 1] = a * z * dq_prev[:, : l - 1] - b * dq_prev2[:, : l - 1]
                dq[2, : l - 1] += a * q1
                dq[:, : l - 1] -= (2.0 * b) * u[:, None, :] * q2
        norm = _norms(l, dtype, device)[:, None]  # (l+1, 1) including sqrt(2) for m > 0
        nq = q * norm
        # rows l^2 .. l^2+2l: m = -l..-1 (sin), 0, 1..l (cos)
        base = l * l + l
        values[base] = nq[0]
        if l >= 1:
            values[base + 1: base + l + 1] = nq[1:] * cs[1: l + 1]
            values[l * l: base] = (nq[1:] * sn[1: l + 1]).flip(0)
        if gradients:
            ndq = dq * norm
            grads[:, base] = ndq[:, 0]
            if l >= 1:
                grads[:, base + 1: base + l + 1] = ndq[:, 1:] * cs[1: l + 1] + nq[1:] * dcs[:, :l]
                grads[:, l * l: base] = (ndq[:, 1:] * sn[1: l + 1] + nq[1:] * dsn[:, :l]).flip(1)
        q_prev2, q_prev = q_prev, q
        if gradients:
            dq_prev2, dq_prev = dq_prev, dq
    if gradients:
        degree = torch.cat([torch.full((2 * l + 1,), float(l), dtype=dtype, device=device)
                            for l in range(l_max + 1)])[:, None]
        grads = (grads - degree * values * u[:, None, :]) / r
    if transposed:
        return values, grads
    return values.T, (grads.permute(2, 0, 1) if gradients else None)


def harmonic_constants(l_max: int) -> tuple[list[list[float]], list[float]]:
    """The constants of the recurrences: per ``l`` the normalisations ``N_lm`` (times √2
    for m > 0) for m = 0..l, and ``Q_l^l = (2l-1)!!``."""
    norms = [[math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m)
                        / math.factorial(l + m)) * (1.0 if m == 0 else math.sqrt(2.0))
              for m in range(l + 1)] for l in range(l_max + 1)]
    first = [float(math.prod(range(1, 2 * l, 2))) for l in range(l_max + 1)]
    return norms, first


_NORM_CACHE: dict = {}


def _norms(l: int, dtype, device) -> torch.Tensor:
    key = (l, dtype, str(device))
    if key not in _NORM_CACHE:
        _NORM_CACHE[key] = torch.tensor(harmonic_constants(l)[0][l], dtype=dtype,
                                        device=device)
    return _NORM_CACHE[key]
