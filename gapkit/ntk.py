"""Neural tangent kernels: wide networks on descriptors, analytic and finite.

A fully connected network of ``depth`` hidden layers trained by gradient descent
on a squared loss becomes, as its width grows, kernel regression with its
*neural tangent kernel* (NTK) Θ; its output at initialisation is a Gaussian
process with the *NNGP* kernel K (Jacot et al. 2018; Lee et al. 2019). For a
per-atom network summed over atoms (Behler–Parrinello), the structure-level NTK
is ``K(A, B) = sum_{i in A} sum_{j in B} Θ(q_i, q_j)`` over atoms of the same
species, which is exactly the form of a GAP kernel: a GAP and an infinitely wide
per-atom network coincide when their kernels are proportional.

The analytic kernels live in the kernel layer, :mod:`gapkit.kernels.ntk`:
:func:`~gapkit.kernels.nngp_and_ntk` (NNGP and NTK of fully connected ReLU / erf
networks, any depth, NTK or standard parameterisation, neural-tangents' conventions)
and :class:`~gapkit.kernels.NTKKernel` (that NTK as a GAP kernel on descriptors).
This module, which sits above the model layer, provides the networks and experiments:

* :func:`structure_kernel`: the atomistic NTK between structures;
* :class:`AtomicMLP`, :func:`train_network`, :func:`empirical_ntk`: the finite
  networks in torch (NTK parameterisation) and their empirical NTK;
* comparisons: :func:`ntk_width_convergence`, :func:`training_vs_kernel_regression`,
  :func:`kernel_alignment`, :func:`compare_models`.

Units: kernels on descriptors are dimensionless (a network output of 1 is 1 eV
of local energy), so Θ and K are in eV^2 once multiplied by the ``delta^2`` of
:class:`NTKKernel`; energies eV, forces eV/Å.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ._checks import positive
from .data import as_frames
from .gp.observations import NoiseModel
from .kernels import SOAPKernel
from .kernels.base import DescriptorKernel
from .kernels.ntk import (  # re-exported here for one release (they moved in 0.2)
    ACTIVATIONS,
    PARAMETERIZATIONS,
    KernelPair,
    NTKKernel,
    as_inputs,
    check_finite_descriptors,
    check_settings,
    nngp_and_ntk,
)
from .kernels.registry import KERNEL_NAMES, make_kernel
from .model import GAP, Term

DTYPE = torch.float64

__all__ = [
    "ACTIVATIONS",
    "KERNEL_NAMES",
    "PARAMETERIZATIONS",
    "AtomicMLP",
    "KernelPair",
    "NTKKernel",
    "compare_models",
    "empirical_ntk",
    "kernel_alignment",
    "make_kernel",
    "network_energies_forces",
    "nngp_and_ntk",
    "ntk_width_convergence",
    "structure_kernel",
    "train_network",
    "training_vs_kernel_regression",
]


def kernels(x1, x2=None, **kwargs) -> KernelPair:
    """Deprecated name of :func:`gapkit.kernels.nngp_and_ntk` (removed in 0.3)."""
    import warnings

    warnings.warn("gapkit.ntk.kernels is now gapkit.kernels.nngp_and_ntk; the old name goes "
                  "in gapkit 0.3", DeprecationWarning, stacklevel=2)
    return nngp_and_ntk(x1, x2, **kwargs)


def _descriptor_values(frames, descriptor, gradients=False):
    from .descriptors.base import DescriptorResult

    if isinstance(frames, DescriptorResult):
        return frames
    if descriptor is None:
        raise ValueError("pass a descriptor (e.g. gapkit.SOAP(...)) to compute from frames")
    return descriptor.compute(as_frames(frames), gradients=gradients)


def structure_kernel(frames_a, frames_b=None, descriptor=None, kernel: DescriptorKernel | None
                     = None, **kernel_kwargs) -> torch.Tensor:
    """Atomistic kernel between structures, ``K(A, B) = sum_{i in A} sum_{j in B} k(q_i, q_j)``.

    With an :class:`NTKKernel` this is the NTK of the network
    ``E(A) = sum_{i in A} f_{s_i}(q_i)`` with one infinitely wide MLP per species
    (pairs of different central species contribute 0).

    Parameters
    ----------
    frames_a, frames_b : list of ase.Atoms or DescriptorResult
        Structures, or their precomputed descriptors. ``frames_b`` defaults to ``frames_a``.
    descriptor : Descriptor, optional
        Used when frames are given (e.g. ``gapkit.SOAP(species=[...])``; fix the species
        so that both sets get the same feature layout).
    kernel : DescriptorKernel, optional
        Default ``NTKKernel(**kernel_kwargs)``.

    Returns
    -------
    torch.Tensor, shape (n_a, n_b)
        eV^2 (``delta^2`` times the unit kernel).
    """
    kernel = kernel if kernel is not None else NTKKernel(**kernel_kwargs)
    ra = _descriptor_values(frames_a, descriptor)
    rb = ra if frames_b is None else _descriptor_values(frames_b, descriptor)
    if ra.n_features != rb.n_features:
        raise ValueError(f"descriptor sizes differ between the two sets of structures "
                         f"({ra.n_features} vs {rb.n_features}); use one descriptor with fixed "
                         "species for both")
    qa, qb = ra.torch("values"), rb.torch("values")
    with torch.no_grad():
        k = kernel.value(qa, qb) * (torch.as_tensor(ra.centre_types)[:, None]
                                    == torch.as_tensor(rb.centre_types)[None, :]).to(DTYPE)
    sa = _summation(ra)
    sb = _summation(rb)
    return sa @ k @ sb.T


def _summation(res) -> torch.Tensor:
    """(n_structures, n_centres) 0/1 matrix summing centres into their structure."""
    s = torch.zeros((res.n_structures, res.n_centres), dtype=DTYPE)
    s[torch.as_tensor(res.centre_structure), torch.arange(res.n_centres)] = 1.0
    return s


# ---------------------------------------------------------------------------
# finite networks (torch), NTK parameterisation
# ---------------------------------------------------------------------------
_ACT = {"relu": torch.relu, "erf": torch.erf}


def _mlp_params(n_in, width, depth, generator):
    sizes = [n_in] + [width] * depth + [1]
    params = {}
    for layer in range(depth + 1):
        params[f"W{layer}"] = torch.randn((sizes[layer + 1], sizes[layer]), dtype=DTYPE,
                                          generator=generator)
        params[f"b{layer}"] = torch.randn((sizes[layer + 1],), dtype=DTYPE, generator=generator)
    return params


def _mlp_apply(params, x, *, depth, activation, W_std, b_std):
    """NTK parameterisation: ``h <- W_std / sqrt(n_in) W h + b_std b``, W, b ~ N(0, 1)."""
    act = _ACT[activation]
    h = x
    for layer in range(depth + 1):
        w = params[f"W{layer}"]
        h = (W_std / math.sqrt(w.shape[1])) * (h @ w.T) + b_std * params[f"b{layer}"]
        if layer < depth:
            h = act(h)
    return h[..., 0]


class AtomicMLP(torch.nn.Module):
    """Per-species fully connected networks summed over atoms (Behler–Parrinello).

    Local energy of a centre of type ``t``: ``eps = f_t(input_scale * q)`` (eV), with
    ``f_t`` a network of ``depth`` hidden layers of ``width`` units in the NTK
    parameterisation (``h <- W_std/sqrt(n_in) W h + b_std b``, all parameters drawn
    from N(0, 1)), the finite counterpart of :class:`NTKKernel` with the same
    settings: its empirical NTK tends to :func:`kernels` as ``width`` grows.

    Parameters
    ----------
    n_features : int
        Descriptor length.
    types : sequence of int
        Kernel types (central species) that get a network.
    width, depth : int
        Hidden width and number of hidden layers (> 0).
    activation, W_std, b_std, input_scale
        As in :class:`NTKKernel` (``input_scale`` default ``sqrt(n_features)``).
    centered : bool
        Output ``f(θ) - f(θ_0)`` (the network minus a frozen copy of its initial self),
        so that the untrained network predicts 0: the infinite-width limit of training
        is then the deterministic NTK regression (Hu et al. 2020 "centering").
    seed : int
        Seed of the initial parameters.
    """

    def __init__(self, n_features: int, types: Sequence[int], *, width: int, depth: int = 2,
                 activation: str = "erf", W_std: float = 1.0, b_std: float = 0.1,
                 input_scale: float | None = None, centered: bool = False, seed: int = 0):
        super().__init__()
        check_settings(depth, activation, W_std, b_std, "ntk", width)
        if b_std is None:
            raise ValueError("AtomicMLP needs a bias: b_std must be a number >= 0")
        self.n_features, self.width, self.depth = int(n_features), int(width), int(depth)
        self.activation, self.W_std, self.b_std = activation, float(W_std), float(b_std)
        self.input_scale = math.sqrt(n_features) if input_scale is None else float(input_scale)
        self.types = [int(t) for t in types]
        self.centered = bool(centered)
        gen = torch.Generator().manual_seed(int(seed))
        self.nets = torch.nn.ModuleDict()
        for t in self.types:
            p = _mlp_params(self.n_features, self.width, self.depth, gen)
            net = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in p.items()})
            self.nets[str(t)] = net
            if self.centered:
                for k, v in p.items():
                    self.register_buffer(f"init_{t}_{k}", v.clone())

    def net_output(self, t: int, x: torch.Tensor, params=None) -> torch.Tensor:
        """Output of the network of type ``t`` on inputs ``x = input_scale * q``, (n,)."""
        params = dict(self.nets[str(t)]) if params is None else params
        kw = dict(depth=self.depth, activation=self.activation, W_std=self.W_std,
                  b_std=self.b_std)
        out = _mlp_apply(params, x, **kw)
        if self.centered:
            init = {k: getattr(self, f"init_{t}_{k}") for k in params}
            out = out - _mlp_apply(init, x, **kw)
        return out

    def forward(self, q: torch.Tensor, types) -> torch.Tensor:
        """Local energies (eV) of centres with descriptors ``q`` (n, D) and ``types`` (n,)."""
        check_finite_descriptors(q, "q")
        if q.shape[-1] != self.n_features:
            raise ValueError(f"descriptor size {q.shape[-1]} != the network's {self.n_features}")
        types = torch.as_tensor(types)
        out = torch.zeros(q.shape[0], dtype=q.dtype)
        for t in torch.unique(types).tolist():
            if str(t) not in self.nets:
                raise ValueError(f"no network for centre type {t} (has {self.types})")
            sel = torch.nonzero(types == t)[:, 0]
            out = out.index_put((sel,), self.net_output(t, self.input_scale * q[sel]))
        return out


def network_energies_forces(model: AtomicMLP, result, *, forces: bool = True,
                            create_graph: bool = False):
    """Total energies (eV) and forces (eV/Å) of the summed per-atom network.

    Forces are ``F_j = -sum_e (d eps / d q_{c_e}) . (d q_{c_e} / d r_j)``: autograd of the
    local energies with respect to the descriptors (one backward pass), contracted with
    the analytic descriptor gradients of ``result``.

    Returns
    -------
    energies : torch.Tensor, shape (n_structures,)
    forces : torch.Tensor, shape (n_atoms_total, 3) or None
    """
    q = result.torch("values").clone().requires_grad_(forces)
    eps = model(q, result.centre_types)
    energies = torch.zeros(result.n_structures, dtype=DTYPE).index_add(
        0, torch.as_tensor(result.centre_structure), eps)
    if not forces:
        return energies, None
    (dq,) = torch.autograd.grad(eps.sum(), q, create_graph=create_graph)
    g = result.torch("gradients")
    centre = torch.as_tensor(result.gradient_centre)
    per_entry = torch.einsum("ead,ed->ea", g, dq[centre])
    f = torch.zeros((int(result.n_atoms.sum()), 3), dtype=DTYPE).index_add(
        0, torch.as_tensor(result.gradient_atom_global), per_entry, alpha=-1.0)
    return energies, f


def train_network(model: AtomicMLP, result, energies, forces=None, *, steps: int = 500,
                  lr: float = 1e-3, force_weight: float = 0.0) -> list[float]:
    """Full-batch gradient descent on energies (and forces); returns the loss history.

    Loss ``L = 1/(2 N) sum_A (E_A - E_A^ref)^2 + force_weight / (2 N_F) sum |F - F^ref|^2``
    (eV^2), plain gradient descent ``θ <- θ - lr dL/dθ`` (the dynamics whose
    infinite-width limit is NTK regression).

    Parameters
    ----------
    model : AtomicMLP
    result : DescriptorResult
        Descriptors of the training structures (with gradients if forces are fitted).
    energies : array_like, shape (n_structures,)
        Target energies, eV (subtract per-species offsets first).
    forces : array_like, shape (n_atoms_total, 3), optional
        Target forces, eV/Å (used when ``force_weight > 0``).
    steps : int
    lr : float
        Learning rate (1/eV^2 in these units).
    force_weight : float
        Weight of the force term, Å^2.
    """
    y = torch.as_tensor(np.asarray(energies), dtype=DTYPE)
    use_f = force_weight > 0
    if use_f and forces is None:
        raise ValueError("force_weight > 0 needs target forces")
    fy = torch.as_tensor(np.asarray(forces), dtype=DTYPE) if use_f else None
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    history = []
    for _ in range(int(steps)):
        opt.zero_grad()
        e, f = network_energies_forces(model, result, forces=use_f, create_graph=use_f)
        loss = 0.5 * ((e - y) ** 2).mean()
        if use_f:
            loss = loss + 0.5 * force_weight * ((f - fy) ** 2).mean()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history


def empirical_ntk(model: AtomicMLP, q1, q2=None, *, type: int | None = None) -> torch.Tensor:
    """Empirical NTK ``J(q1) J(q2)^T`` of one species' network (output units^2).

    ``J`` is the Jacobian of the network output with respect to all its parameters,
    computed with ``torch.func.jacrev`` vectorised over inputs by ``torch.func.vmap``.

    Parameters
    ----------
    model : AtomicMLP
    q1, q2 : array_like, shape (n1, D), (n2, D)
        Descriptors (``q2`` defaults to ``q1``).
    type : int, optional
        Which network (default: the first).
    """
    from torch.func import jacrev, vmap

    t = model.types[0] if type is None else int(type)
    q1, q2 = as_inputs(q1, q2)
    params = {k: v.detach() for k, v in model.nets[str(t)].items()}

    def f(p, x):
        return model.net_output(t, x[None, :], p)[0]

    def jac(x):
        j = vmap(jacrev(f), in_dims=(None, 0))(params, model.input_scale * x)
        return torch.cat([v.reshape(x.shape[0], -1) for v in j.values()], dim=1)

    j1 = jac(q1)
    j2 = j1 if q2 is q1 else jac(q2)
    return j1 @ j2.T


# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------
class WidthConvergence(NamedTuple):
    """Empirical NTK against the analytic one, by width.

    Attributes
    ----------
    widths : ndarray (n_widths,)
    distance_mean, distance_std : ndarray (n_widths,)
        Relative Frobenius distance ``|Θ_emp - Θ|_F / |Θ|_F`` over the seeds.
    slope : float
        Least-squares slope of log(distance_mean) against log(width) (theory: -1/2).
    """

    widths: np.ndarray
    distance_mean: np.ndarray
    distance_std: np.ndarray
    slope: float


def _loglog_slope(x, y) -> float:
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def ntk_width_convergence(q, widths: Sequence[int] = (32, 128, 512), *, seeds: int = 4,
                          depth: int = 2, activation: str = "erf", W_std: float = 1.0,
                          b_std: float = 0.1, input_scale: float | None = None
                          ) -> WidthConvergence:
    """Distance of the empirical NTK of finite :class:`AtomicMLP` networks (seeds
    ``0 .. seeds-1``) from the analytic NTK on descriptors ``q`` (n, D), by width."""
    q = as_inputs(q, None)[0]
    kern = NTKKernel(depth=depth, activation=activation, W_std=W_std, b_std=b_std,
                     input_scale=input_scale)
    with torch.no_grad():
        ref = kern.unit_value(q, q)
    means, stds = [], []
    for w in widths:
        d = []
        for seed in range(seeds):
            m = AtomicMLP(q.shape[1], [0], width=w, depth=depth, activation=activation,
                          W_std=W_std, b_std=b_std, input_scale=input_scale, seed=seed)
            emp = empirical_ntk(m, q)
            d.append(float(torch.linalg.norm(emp - ref) / torch.linalg.norm(ref)))
        means.append(np.mean(d))
        stds.append(np.std(d))
    widths = np.asarray(widths)
    return WidthConvergence(widths, np.asarray(means), np.asarray(stds),
                            _loglog_slope(widths, means))


def kernel_alignment(k1, k2, *, centered: bool = True) -> float:
    """Kernel alignment ``<K1, K2>_F / (|K1|_F |K2|_F)`` (1: proportional kernels).

    With ``centered`` (Cortes et al. 2012) both matrices are first centred,
    ``H K H`` with ``H = I - 11^T/n``, so that a constant offset does not count.
    """
    k1 = torch.as_tensor(np.asarray(k1) if not torch.is_tensor(k1) else k1, dtype=DTYPE)
    k2 = torch.as_tensor(np.asarray(k2) if not torch.is_tensor(k2) else k2, dtype=DTYPE)
    if k1.shape != k2.shape or k1.ndim != 2 or k1.shape[0] != k1.shape[1]:
        raise ValueError(f"need two square matrices of the same shape, got {tuple(k1.shape)} "
                         f"and {tuple(k2.shape)}")
    if centered:
        n = k1.shape[0]
        h = torch.eye(n, dtype=DTYPE) - 1.0 / n
        k1, k2 = h @ k1 @ h, h @ k2 @ h
    return float((k1 * k2).sum() / (torch.linalg.norm(k1) * torch.linalg.norm(k2)))


def ntk_gradient_descent_prediction(k_train, k_test_train, y, *, lr: float, steps: int):
    """Predictions of the linearised (infinite-width) centred network after ``steps`` of
    full-batch gradient descent on ``L = 1/(2N) |f(X) - y|^2``.

    ``f_k(x) = Θ_xX V diag[(1 - (1 - lr λ/N)^k) / λ] V^T y`` with ``Θ_XX = V diag(λ) V^T``
    (the ``k -> inf`` limit is kernel regression ``Θ_xX Θ_XX^-1 y``).
    """
    n = k_train.shape[0]
    lam, v = torch.linalg.eigh(k_train)
    lam = torch.clamp(lam, min=0.0)
    z = lr * lam / n
    # 1 - (1 - z)^k, accurate for small z; (1 - z) < 0 (oscillating modes) by the power
    decayed = torch.where(z < 1, -torch.expm1(steps * torch.log1p(-torch.clamp(z, max=0.5))),
                          1 - torch.pow(1 - z, steps))
    decayed = torch.where((z >= 0.5) & (z < 1), 1 - torch.pow(1 - z, steps), decayed)
    factor = torch.where(lam > 1e-14 * lam.max(), decayed / torch.where(lam > 0, lam, 1.0),
                         torch.full_like(lam, lr * steps / n))
    coef = v @ (factor * (v.T @ y))
    return k_test_train @ coef, k_train @ coef


class TrainingConvergence(NamedTuple):
    """Trained finite networks against the NTK prediction of the same training run.

    Attributes
    ----------
    widths : ndarray
    rms_difference : ndarray
        RMS over test structures and seeds of (network - NTK) energy, eV/atom.
    ntk_test_rmse, network_test_rmse : float / ndarray
        Test energy RMSE against the reference labels, eV/atom (network: by width).
    slope : float
        Log-log slope of ``rms_difference`` against width.
    lr, steps : float, int
    """

    widths: np.ndarray
    rms_difference: np.ndarray
    ntk_test_rmse: float
    network_test_rmse: np.ndarray
    slope: float
    lr: float
    steps: int


def training_vs_kernel_regression(train, y_train, test, y_test, widths=(64, 256, 1024), *,
                                  seeds: int = 2, steps: int = 200, depth: int = 2,
                                  activation: str = "erf", W_std: float = 1.0,
                                  b_std: float = 0.1) -> TrainingConvergence:
    """Train centred :class:`AtomicMLP` networks on energies by gradient descent and
    compare their test energies with the NTK gradient-descent prediction
    (:func:`ntk_gradient_descent_prediction`, same learning rate and steps).

    Parameters
    ----------
    train, test : DescriptorResult
        Descriptors of training and test structures (same feature layout).
    y_train, y_test : array_like
        Energies relative to the per-species offsets, eV.
    """
    kern = NTKKernel(depth=depth, activation=activation, W_std=W_std, b_std=b_std)
    k_tt = structure_kernel(train, train, kernel=kern).detach()
    k_st = structure_kernel(test, train, kernel=kern).detach()
    y = torch.as_tensor(np.asarray(y_train), dtype=DTYPE)
    n = y.shape[0]
    lr = float(n / torch.linalg.eigvalsh(k_tt).max())
    pred_ntk, _ = ntk_gradient_descent_prediction(k_tt, k_st, y, lr=lr, steps=steps)
    n_at = torch.as_tensor(test.n_atoms, dtype=DTYPE)
    yt = torch.as_tensor(np.asarray(y_test), dtype=DTYPE)
    types = sorted({int(t) for t in np.unique(train.centre_types)})
    diffs, rmses = [], []
    for w in widths:
        d2, r2 = [], []
        for seed in range(seeds):
            m = AtomicMLP(train.n_features, types, width=w, depth=depth, activation=activation,
                          W_std=W_std, b_std=b_std, centered=True, seed=seed)
            train_network(m, train, y, steps=steps, lr=lr)
            with torch.no_grad():
                e, _ = network_energies_forces(m, test, forces=False)
            d2.append(float((((e - pred_ntk) / n_at) ** 2).mean()))
            r2.append(float((((e - yt) / n_at) ** 2).mean()))
        diffs.append(math.sqrt(np.mean(d2)))
        rmses.append(math.sqrt(np.mean(r2)))
    widths = np.asarray(widths)
    return TrainingConvergence(widths, np.asarray(diffs),
                               float(torch.sqrt((((pred_ntk - yt) / n_at) ** 2).mean())),
                               np.asarray(rmses), _loglog_slope(widths, diffs), lr, int(steps))


class ModelComparison(NamedTuple):
    """GAP(SOAP kernel), GAP(NTK kernel) and finite networks on the same data.

    Attributes
    ----------
    alignment_environments, alignment_structures : float
        Centred alignment of the SOAP and NTK kernels between training environments,
        and between training structures (atom-pair sums).
    energy_rmse : dict
        Test energy RMSE, eV/atom, by model name.
    force_rmse : dict
        Test force-component RMSE, eV/Å, by model name (GAPs, and networks).
    fit_time_s : dict
        Wall time of each fit/training, s.
    network_lr : dict
        Learning rate each network was trained with (1/eV^2).
    force_weight : float
        Weight of the force term in the networks' loss, Å^2 (0: energies only).
    """

    alignment_environments: float
    alignment_structures: float
    energy_rmse: dict
    force_rmse: dict
    fit_time_s: dict
    network_lr: dict = {}
    force_weight: float = 0.0


def _train_stable(make_model, result, y, f, *, lr, steps, force_weight, probe=20,
                  max_halvings=12):
    """Train ``make_model()`` by full-batch GD, halving ``lr`` (and starting again from
    the same initial network) while the loss is not finite or fails to decrease over
    a ``probe``-step run, or ends the full run above its start. Returns (model, lr)."""
    for _ in range(max_halvings + 1):
        m = make_model()
        hist = train_network(m, result, y, f, steps=min(probe, steps), lr=lr,
                             force_weight=force_weight)
        ok = np.all(np.isfinite(hist)) and hist[-1] < hist[0] and max(hist) <= hist[0]
        if ok and steps > probe:
            rest = train_network(m, result, y, f, steps=steps - probe, lr=lr,
                                 force_weight=force_weight)
            ok = np.all(np.isfinite(rest)) and rest[-1] < hist[0]
        if ok:
            return m, lr
        lr = lr / 2
    raise RuntimeError(f"gradient descent did not converge even with lr = {lr:.3g}")


def compare_models(train_frames, test_frames, descriptor, *, soap_kernel=None, ntk_kernel=None,
                   n_sparse: int = 100, widths: Sequence[int] = (64, 256), steps: int = 300,
                   force_weight: float | None = None, seed: int = 0) -> ModelComparison:
    """Fit GAP with a SOAP kernel and with an NTK kernel on the same descriptor, train
    per-atom networks (NTK parameterisation, centred, full-batch gradient descent on
    energies and forces) and report test errors and kernel alignment.

    The networks minimise ``1/(2N) sum_A (E_A - E_A^ref)^2 + w/(2 N_F) sum |F - F^ref|^2``
    with, by default, the relative weight that gapkit's default noise model gives the
    GAP fits (``sigma_E = 1 meV/atom x sqrt(n)``, ``sigma_F = 50 meV/Å``):
    ``w = 3 nbar^2 (0.001 / 0.05)^2`` Å^2 with ``nbar`` the mean number of atoms per
    structure; ``force_weight=0`` trains on energies only. The learning rate starts at
    ``N / λ_max`` of the structure NTK (the energy-only stability limit of the
    infinitely wide network) and is halved while the loss does not decrease.

    ``descriptor`` should have its species fixed; energies are referenced to one
    least-squares energy per atom (eV/atom) for the networks.
    """
    import time


    soap_kernel = soap_kernel if soap_kernel is not None else SOAPKernel(zeta=4)
    ntk_kernel = ntk_kernel if ntk_kernel is not None else NTKKernel(depth=2)
    n_train = np.array([len(a) for a in train_frames])
    if force_weight is None:
        noise = NoiseModel()
        force_weight = 3 * float(n_train.mean()) ** 2 * (noise.energy / noise.forces) ** 2
    positive(force_weight, "force_weight", allow_zero=True)
    use_f = force_weight > 0
    rt = descriptor.compute(train_frames, gradients=use_f)
    rs = descriptor.compute(test_frames, gradients=True)
    q = rt.torch("values")
    mask = torch.as_tensor(rt.centre_types)[:, None] == torch.as_tensor(rt.centre_types)[None, :]
    with torch.no_grad():
        ks, kn = soap_kernel.value(q, q) * mask, ntk_kernel.value(q, q) * mask
    s = _summation(rt)
    align_env = kernel_alignment(ks, kn)
    align_str = kernel_alignment(s @ ks @ s.T, s @ kn @ s.T)
    e_ref = np.array([a.get_potential_energy() for a in test_frames])
    f_ref = np.concatenate([a.get_forces() for a in test_frames])
    n_test = np.array([len(a) for a in test_frames])
    e_rmse, f_rmse, times, lrs = {}, {}, {}, {}
    for name, kern in (("GAP(SOAP)", soap_kernel), ("GAP(NTK)", ntk_kernel)):
        t0 = time.perf_counter()
        gap = GAP([Term(descriptor, kern, n_sparse=n_sparse)], progress=False,
                  random_state=seed).fit(train_frames)
        times[name] = time.perf_counter() - t0
        p = gap.predict(test_frames, return_variance=False, virial=False)
        e_rmse[name] = float(np.sqrt(np.mean(((p.energy - e_ref) / n_test) ** 2)))
        f_rmse[name] = float(np.sqrt(np.mean((p.forces - f_ref) ** 2)))
    e_train = np.array([a.get_potential_energy() for a in train_frames])
    e0 = e_train.sum() / n_train.sum()
    y = torch.as_tensor(e_train - e0 * n_train)
    f_train = np.concatenate([a.get_forces() for a in train_frames]) if use_f else None
    k_tt = structure_kernel(rt, rt, kernel=NTKKernel(**{**ntk_kernel.get_params(), "delta": 1.0}))
    lr0 = float(len(y) / torch.linalg.eigvalsh(k_tt).max())
    types = sorted({int(t) for t in np.unique(rt.centre_types)})
    p = ntk_kernel.get_params()
    for w in widths:
        name = f"network(width={w})"

        def make(w=w):
            return AtomicMLP(rt.n_features, types, width=w, depth=p["depth"],
                             activation=p["activation"], W_std=p["W_std"], b_std=p["b_std"],
                             input_scale=p["input_scale"], centered=True, seed=seed)

        t0 = time.perf_counter()
        m, lrs[name] = _train_stable(make, rt, y, f_train, lr=lr0, steps=steps,
                                     force_weight=force_weight)
        times[name] = time.perf_counter() - t0
        e, f = network_energies_forces(m, rs, forces=True)
        e = e.detach().numpy() + e0 * n_test
        e_rmse[name] = float(np.sqrt(np.mean(((e - e_ref) / n_test) ** 2)))
        f_rmse[name] = float(np.sqrt(np.mean((f.detach().numpy() - f_ref) ** 2)))
    return ModelComparison(align_env, align_str, e_rmse, f_rmse, times, lrs, float(force_weight))
