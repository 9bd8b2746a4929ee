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

__all__ = ["real_spherical_harmonics"]


def real_spherical_harmonics(vectors: torch.Tensor, l_max: int, gradients: bool = True):
    """Y_lm(r̂) for every row of ``vectors`` (shape (n, 3), non-zero rows).

    Returns
    -------
    values : tensor of shape (n, (l_max + 1)^2)
    gradients : tensor of shape (n, 3, (l_max + 1)^2) or None
        d Y_lm / d r (Å^-1).
    """
    n = vectors.shape[0]
    r = torch.linalg.norm(vectors, dim=1)
    u = vectors / r[:, None]
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    dtype, device = vectors.dtype, vectors.device
    zeros = torch.zeros(n, dtype=dtype, device=device)
    ones = torch.ones(n, dtype=dtype, device=device)
    eye = torch.eye(3, dtype=dtype, device=device)

    # c_m + i s_m = (x + i y)^m and gradients: d/dx = m (x+iy)^{m-1}, d/dy = i m (x+iy)^{m-1}
    c, s = [ones], [zeros]
    for m in range(1, l_max + 1):
        c.append(x * c[m - 1] - y * s[m - 1])
        s.append(x * s[m - 1] + y * c[m - 1])

    n_lm = (l_max + 1) ** 2
    values = torch.empty((n, n_lm), dtype=dtype, device=device)
    grads = torch.empty((n, 3, n_lm), dtype=dtype, device=device) if gradients else None

    # Q[l][m] and dQ[l][m] (n, 3) for the current and previous two l
    Q = {}
    dQ = {}
    for l in range(l_max + 1):
        for m in range(l + 1):
            if m == l:
                q = ones * float(math.prod(range(1, 2 * m, 2)))
                dq = torch.zeros((n, 3), dtype=dtype, device=device)
            elif m == l - 1:
                q = (2 * m + 1) * z * Q[(l - 1, m)]
                dq = (2 * m + 1) * (eye[2] * Q[(l - 1, m)][:, None] + z[:, None] * dQ[(l - 1, m)])
            else:
                a, b = (2 * l - 1) / (l - m), (l + m - 1) / (l - m)
                q1, q2 = Q[(l - 1, m)], Q[(l - 2, m)]
                q = a * z * q1 - b * q2  # r^2 = 1 at u
                dq = (a * (eye[2] * q1[:, None] + z[:, None] * dQ[(l - 1, m)])
                      - b * (2.0 * u * q2[:, None] + dQ[(l - 2, m)]))
            Q[(l, m)], dQ[(l, m)] = q, dq
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
            if m == 0:
                values[:, l * l + l] = norm * q
                if gradients:
                    grads[:, :, l * l + l] = norm * dq
                continue
            norm *= math.sqrt(2.0)
            values[:, l * l + l + m] = norm * q * c[m]
            values[:, l * l + l - m] = norm * q * s[m]
            if gradients:
                # d(c_m)/dx = m c_{m-1}, d(c_m)/dy = -m s_{m-1}; d(s_m)/dx = m s_{m-1}, d(s_m)/dy = m c_{m-1}
                dc = torch.stack([m * c[m - 1], -m * s[m - 1], zeros], dim=1)
                ds = torch.stack([m * s[m - 1], m * c[m - 1], zeros], dim=1)
                grads[:, :, l * l + l + m] = norm * (dq * c[m][:, None] + q[:, None] * dc)
                grads[:, :, l * l + l - m] = norm * (dq * s[m][:, None] + q[:, None] * ds)
        for m in range(l + 1):  # keep only what the recurrence still needs
            Q.pop((l - 2, m), None)
            dQ.pop((l - 2, m), None)
    if gradients:
        degree = torch.cat([torch.full((2 * l + 1,), float(l), dtype=dtype, device=device)
                            for l in range(l_max + 1)])
        grads = (grads - degree[None, None, :] * values[:, None, :] * u[:, :, None]) / r[:, None, None]
    return values, grads
