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

__all__ = ["harmonic_constants", "harmonics_backend", "real_spherical_harmonics",
           "spherical_harmonics"]

#: "auto": sphericart where it is installed (its CPU library for CPU tensors, its torch
#: bindings elsewhere), else :func:`real_spherical_harmonics`; "gapkit": always the latter
BACKEND = "auto"


def harmonics_backend(device) -> str:
    """Which code :func:`spherical_harmonics` runs for tensors on ``device``:
    ``"sphericart"`` (its CPU library), ``"sphericart-torch"`` or ``"gapkit"``."""
    if BACKEND == "gapkit":
        return "gapkit"
    if torch.device(device).type == "cpu":
        return "sphericart" if _sphericart_cpu(0) is not None else "gapkit"
    return "sphericart-torch" if _sphericart_torch(0) is not None else "gapkit"


_CALCULATORS: dict = {}


def _calculator(kind: str, l_max: int):
    """sphericart's calculator for ``l_max`` (``kind`` "cpu": its CPU library, "torch":
    its torch bindings), made once; None where that part of sphericart is missing."""
    key = (kind, l_max)
    if key not in _CALCULATORS:
        try:
            if kind == "cpu":
                import sphericart as module
            else:
                import sphericart.torch as module
        except ImportError:
            module = None
        _CALCULATORS[key] = None if module is None else module.SphericalHarmonics(l_max)
    return _CALCULATORS[key]


def _sphericart_cpu(l_max: int):
    """sphericart's CPU calculator for ``l_max`` (None where sphericart is missing) and
    the OpenMP runtime it runs on (to give it torch's thread count, see below)."""
    calc = _calculator("cpu", l_max)  # making it loads its OpenMP runtime
    if calc is None:
        return None
    if "runtimes" not in _CALCULATORS:  # found once: threadpoolctl scans the libraries
        from threadpoolctl import ThreadpoolController

        _CALCULATORS["runtimes"] = [
            lib for lib in ThreadpoolController().lib_controllers
            if "sphericart" in lib.filepath and lib.user_api == "openmp"]
    return calc, _CALCULATORS["runtimes"]


def _sphericart_torch(l_max: int):
    return _calculator("torch", l_max)


def spherical_harmonics(vectors: torch.Tensor, l_max: int, gradients: bool = True):
    """Y_lm(r̂) and d Y_lm / d r for every row of ``vectors``, in the convention of
    :func:`real_spherical_harmonics` (same shapes), computed by sphericart where it is
    installed (:func:`harmonics_backend`).

    sphericart (Bigi et al., J. Chem. Phys. 159, 064802 (2023)) evaluates the same
    orthonormal real harmonics, same order and signs (``tests/descriptors/
    test_spherical.py`` pins this to 1e-12): on the 9,720 pairs of 216 Si atoms (l_max 6,
    values and gradients, one thread) it takes 1.1 ms where the torch recurrences take
    about 30 ms. Its CPU library runs with torch's thread count: with its OpenMP default
    (every core) it took 5x the CPU time on a machine whose other core was busy.
    """
    backend = harmonics_backend(vectors.device)
    if backend == "gapkit" or vectors.shape[0] == 0:
        return real_spherical_harmonics(vectors, l_max, gradients=gradients)
    if backend == "sphericart-torch":
        calc = _sphericart_torch(l_max)
        if gradients:
            return calc.compute_with_gradients(vectors)
        return calc.compute(vectors), None
    calc, runtimes = _sphericart_cpu(l_max)
    threads = torch.get_num_threads()
    for lib in runtimes:
        if lib.num_threads != threads:
            lib.set_num_threads(threads)
    xyz = vectors.detach().numpy()
    if gradients:
        values, grads = calc.compute_with_gradients(xyz)
        return torch.from_numpy(values), torch.from_numpy(grads)
    return torch.from_numpy(calc.compute(xyz)), None


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
