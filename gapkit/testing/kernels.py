"""The descriptor-kernel battery (:func:`check_kernel`): symmetry, positive
semi-definiteness, delta scaling, gradient and Hessian contractions, parameters, copies."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .tolerances import tolerances_for

if TYPE_CHECKING:
    from gapkit.kernels.base import DescriptorKernel


#: Names of the checks :func:`check_kernel` runs, in order (pass some as ``skip``).
KERNEL_CHECKS: tuple[str, ...] = (
    "dtype", "symmetry", "positive_semidefinite", "diag", "forward", "delta_scaling",
    "delta_setter", "delta_parameter", "grad_contract", "grad_contract_linearity",
    "hessian_contract", "hessian_swap", "weighted_gradient", "force_prior_variance",
    "get_params", "copy")

Sampler = Callable[[np.random.Generator, int], torch.Tensor]
GradientSampler = Callable[[np.random.Generator, int, int], torch.Tensor]


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _close_or_message(actual: Any, expected: Any, *, rtol: float, atol: float,
                      what: str) -> str | None:
    """None when ``|actual - expected| <= atol + rtol |expected|`` everywhere (same shape,
    NaN never matches), else a message naming the worst entry and the tolerance."""
    a, e = _as_numpy(actual), _as_numpy(expected)
    if a.shape != e.shape:
        return f"{what}: shape {a.shape}, expected {e.shape}"
    if a.size == 0:
        return None
    diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    bound = atol + rtol * np.abs(e.astype(np.float64))
    outside = diff > bound
    if not outside.any():
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, diff / bound, np.where(diff > 0, np.inf, 0.0))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    index = tuple(int(i) for i in worst)
    return (f"{what}: {int(outside.sum())} of {a.size} entries outside the tolerance; "
            f"worst entry {index}: {a[worst].item()!r}, expected {e[worst].item()!r}, "
            f"|diff| = {diff[worst]:.3e} > atol {atol:.1e} + rtol {rtol:.1e} * |expected|")


def _standard_normal_gradients(rng: np.random.Generator, n_entries: int,
                               n_directions: int, n_features: int,
                               dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(rng.standard_normal((n_entries, n_directions, n_features)),
                           dtype=dtype)


class _KernelBattery:
    """State shared by the checks of one :func:`check_kernel` call."""

    def __init__(self, make_kernel: Callable[[], DescriptorKernel], sample: Sampler,
                 gradients: GradientSampler | None, seed: int,
                 tolerances: Mapping[str, float] | None):
        self.make_kernel = make_kernel
        self.rng = np.random.default_rng(seed)
        self.kernel = make_kernel()
        self.name = type(self.kernel).__name__
        self._sample = sample
        probe = sample(np.random.default_rng([seed, 1]), 2)
        if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or probe.shape[0] != 2:
            raise TypeError(f"sample(rng, n) must return a tensor of shape (n, n_features); "
                            f"sample(rng, 2) gave {type(probe).__name__} of shape "
                            f"{tuple(getattr(probe, 'shape', ()))}")
        self.dtype = probe.dtype
        self.n_features = int(probe.shape[1])
        self._gradients = gradients
        if gradients is not None:
            g = gradients(np.random.default_rng([seed, 2]), 3, 2)
            if not isinstance(g, torch.Tensor) or tuple(g.shape) != (3, 2, self.n_features):
                raise TypeError(f"gradients(rng, n_entries, n_directions) must return a tensor "
                                f"of shape (n_entries, n_directions, n_features); "
                                f"gradients(rng, 3, 2) gave {type(g).__name__} of shape "
                                f"{tuple(getattr(g, 'shape', ()))}, n_features = "
                                f"{self.n_features}")
        self.tol = dict(tolerances_for(self.dtype))
        if tolerances:
            unknown = set(tolerances) - set(self.tol)
            if unknown:
                raise KeyError(f"unknown tolerance name(s) {sorted(unknown)}; known: "
                               f"{sorted(self.tol)}")
            self.tol.update(tolerances)
        self.failures: list[str] = []

    # -- inputs ---------------------------------------------------------------------
    def sample(self, n: int) -> torch.Tensor:
        return self._sample(self.rng, n)

    def directions(self, n_entries: int, n_directions: int,
                   n_centres: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random descriptor-gradient entries ``g`` (E, r, D) and their centres (E,)."""
        if self._gradients is None:
            g = _standard_normal_gradients(self.rng, n_entries, n_directions,
                                           self.n_features, self.dtype)
        else:
            g = self._gradients(self.rng, n_entries, n_directions)
        expected = (n_entries, n_directions, self.n_features)
        if tuple(g.shape) != expected:
            raise TypeError(f"gradients(rng, {n_entries}, {n_directions}) must return shape "
                            f"{expected}, got {tuple(g.shape)}")
        centre = torch.as_tensor(self.rng.integers(0, n_centres, size=n_entries))
        return g, centre

    # -- comparisons ----------------------------------------------------------------
    def compare(self, check: str, actual: Any, expected: Any, *, rtol: str | float,
                atol: str | float = 0.0, what: str = "") -> None:
        r = self.tol[rtol] if isinstance(rtol, str) else rtol
        a = self.tol[atol] if isinstance(atol, str) else atol
        message = _close_or_message(actual, expected, rtol=r, atol=a, what=what or check)
        if message is not None:
            self.failures.append(f"check {check!r}: {message}")

    def fail(self, check: str, message: str) -> None:
        self.failures.append(f"check {check!r}: {message}")


def _check_dtype(b: _KernelBattery) -> None:
    k = b.kernel
    q1, q2 = b.sample(3), b.sample(2)
    g, c = b.directions(3, 2, 3)
    outputs = {"value": k.value(q1, q2), "diag_value": k.diag_value(q1),
               "grad_contract": k.grad_contract(q1, q2, g, c),
               "hessian_contract": k.hessian_contract(q1, q2, g, c, g[:2], c[:2] % 2),
               "weighted_gradient": k.weighted_gradient(q1, q2, torch.ones(3, 2,
                                                                             dtype=b.dtype))}
    for name, out in outputs.items():
        if out.dtype != b.dtype:
            b.fail("dtype", f"{name} returned {out.dtype} for {b.dtype} descriptors")
    if k.raw_delta.dtype != b.dtype:
        b.fail("dtype", f"raw_delta is {k.raw_delta.dtype}, the descriptors {b.dtype}")


def _check_symmetry_and_psd(b: _KernelBattery, skip: Collection[str]) -> None:
    x = b.sample(12)
    gram = b.kernel.value(x, x).detach()
    if "symmetry" not in skip:
        b.compare("symmetry", gram, gram.T, rtol="algebra", what="value(x, x) vs its transpose")
    if "positive_semidefinite" not in skip:
        eig = torch.linalg.eigvalsh(0.5 * (gram + gram.T))
        floor = -b.tol["psd"] * float(eig.abs().max())
        if float(eig.min()) < floor:
            b.fail("positive_semidefinite",
                   f"smallest eigenvalue of value(x, x) (12 samples) is {float(eig.min()):.3e} "
                   f"< -psd {b.tol['psd']:.1e} * max|eigenvalue| = {floor:.3e}")


def _check_diag(b: _KernelBattery) -> None:
    k = b.kernel
    x = b.sample(9)
    b.compare("diag", k.diag_value(x), torch.diagonal(k.value(x, x)), rtol="algebra",
              what="diag_value(x) vs the diagonal of value(x, x)")
    b.compare("diag", k.unit_diag(x), torch.diagonal(k.unit_value(x, x)), rtol="algebra",
              what="unit_diag(x) vs the diagonal of unit_value(x, x)")


def _check_forward(b: _KernelBattery) -> None:
    k = b.kernel
    x1, x2, x3 = b.sample(6), b.sample(4), b.sample(6)
    with torch.no_grad():
        pairs = [
            ("k(x1, x2)", k(x1, x2).to_dense(), k.value(x1, x2)),
            ("k(x1)", k(x1).to_dense(), k.value(x1, x1)),
            ("k(x1, diag=True)", k(x1, diag=True), k.diag_value(x1)),
            # diag_value, not the diagonal of value: the "diag" check ties the two
            ("k(x1, x1, diag=True)", k(x1, x1, diag=True), k.diag_value(x1)),
            ("k(x1, x3, diag=True)", k(x1, x3, diag=True), torch.diagonal(k.value(x1, x3))),
        ]
    for what, got, expected in pairs:
        b.compare("forward", got, expected, rtol="algebra", what=f"{what} vs value")


def _everything(k: DescriptorKernel, q1: torch.Tensor, q2: torch.Tensor, g1: torch.Tensor,
                c1: torch.Tensor, g2: torch.Tensor, c2: torch.Tensor,
                w: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {"value": k.value(q1, q2), "diag_value": k.diag_value(q1),
                "grad_contract": k.grad_contract(q1, q2, g1, c1),
                "hessian_contract": k.hessian_contract(q1, q2, g1, c1, g2, c2),
                "weighted_gradient": k.weighted_gradient(q1, q2, w),
                "forward": k(q1, q2).to_dense()}


def _battery_inputs(b: _KernelBattery) -> tuple[torch.Tensor, ...]:
    q1, q2 = b.sample(5), b.sample(4)
    g1, c1 = b.directions(3, 2, 5)
    g2, c2 = b.directions(3, 2, 4)
    w = torch.as_tensor(b.rng.standard_normal((5, 4)), dtype=b.dtype)
    return q1, q2, g1, c1, g2, c2, w


def _check_delta_scaling(b: _KernelBattery) -> None:
    k = b.kernel
    q1, q2, g1, c1, g2, c2, w = _battery_inputs(b)
    with torch.no_grad():
        variance = float(k.delta.detach().reshape(())) ** 2
        pairs = [
            ("value", "unit_value", k.value(q1, q2), k.unit_value(q1, q2)),
            ("diag_value", "unit_diag", k.diag_value(q1), k.unit_diag(q1)),
            ("grad_contract", "unit_grad_contract", k.grad_contract(q1, q2, g1, c1),
             k.unit_grad_contract(q1, q2, g1, c1)),
            ("hessian_contract", "unit_hessian_contract",
             k.hessian_contract(q1, q2, g1, c1, g2, c2),
             k.unit_hessian_contract(q1, q2, g1, c1, g2, c2)),
            ("weighted_gradient", "unit_weighted_gradient", k.weighted_gradient(q1, q2, w),
             k.unit_weighted_gradient(q1, q2, w)),
        ]
    for name, unit_name, scaled, unit in pairs:
        b.compare("delta_scaling", scaled, variance * unit, rtol="algebra",
                  what=f"{name} vs delta^2 * {unit_name}")


def _check_delta_setter(b: _KernelBattery) -> None:
    k = b.make_kernel()
    inputs = _battery_inputs(b)
    d0 = float(k.delta.detach().reshape(()))
    before = _everything(k, *inputs)
    k.delta = 2.0 * d0
    b.compare("delta_setter", k.delta.detach().reshape(()),
              torch.tensor(2.0 * d0, dtype=torch.float64),
              rtol="algebra", what="delta after setting it to twice its value")
    after = _everything(k, *inputs)
    for name, value in before.items():
        b.compare("delta_setter", after[name], 4.0 * value, rtol="algebra",
                  what=f"{name} after doubling delta vs 4 x before")


def _check_delta_parameter(b: _KernelBattery) -> None:
    k = b.make_kernel()
    raw = getattr(k, "raw_delta", None)
    if not isinstance(raw, torch.nn.Parameter) or "raw_delta" not in dict(k.named_parameters()):
        b.fail("delta_parameter", "raw_delta is not a registered torch.nn.Parameter")
        return
    delta = k.delta
    if not bool(torch.all(delta > 0)):
        b.fail("delta_parameter", f"delta = {delta.tolist()} is not positive")
    b.compare("delta_parameter", delta, k.raw_delta_constraint.transform(raw), rtol="algebra",
              what="delta vs raw_delta_constraint.transform(raw_delta)")
    x = b.sample(4)
    k.zero_grad()
    total = k.value(x, x).sum()
    if not total.requires_grad:
        b.fail("delta_parameter", "value(x, x) does not depend on raw_delta through autograd "
                                  "(no grad_fn): delta cannot be learned")
        return
    total.backward()
    grad = raw.grad
    if grad is None or not bool(torch.isfinite(grad).all()) or not bool((grad != 0).any()):
        b.fail("delta_parameter", f"value(x, x).sum().backward() gives raw_delta.grad = "
                                  f"{None if grad is None else grad.tolist()}; expected a "
                                  f"finite non-zero gradient")


def _check_grad_contract(b: _KernelBattery, skip: Collection[str]) -> None:
    k, h = b.kernel, b.tol["kernel_step"]
    q1, q2 = b.sample(5), b.sample(4)
    g, centre = b.directions(7, 2, 5)
    with torch.no_grad():
        analytic = k.grad_contract(q1, q2, g, centre)
        if "grad_contract" not in skip:
            fd = torch.empty((7, 2, 4), dtype=b.dtype)
            for e in range(7):
                for r in range(2):
                    plus, minus = q1.clone(), q1.clone()
                    plus[centre[e]] += h * g[e, r]
                    minus[centre[e]] -= h * g[e, r]
                    fd[e, r] = (k.value(plus, q2) - k.value(minus, q2))[centre[e]] / (2 * h)
            b.compare("grad_contract", analytic, fd, rtol="finite_difference",
                      atol="finite_difference_atol",
                      what=f"grad_contract vs central differences of value (step {h:g})")
        if "grad_contract_linearity" not in skip:
            g3, c3 = b.directions(4, 3, 5)
            combined = g3[:, :1] + 2.5 * g3[:, 1:2]
            lhs = k.grad_contract(q1, q2, combined, c3)
            rhs = (k.grad_contract(q1, q2, g3[:, :1], c3)
                   + 2.5 * k.grad_contract(q1, q2, g3[:, 1:2], c3))
            b.compare("grad_contract_linearity", lhs, rhs, rtol="algebra", atol="algebra_atol",
                      what="grad_contract(g1 + 2.5 g2) vs grad_contract(g1) + 2.5 "
                           "grad_contract(g2)")


def _check_hessian_contract(b: _KernelBattery, skip: Collection[str]) -> None:
    k, h = b.kernel, b.tol["kernel_step"]
    q1, q2 = b.sample(5), b.sample(4)
    g1, c1 = b.directions(6, 2, 5)
    g2, c2 = b.directions(5, 3, 4)
    with torch.no_grad():
        analytic = k.hessian_contract(q1, q2, g1, c1, g2, c2)
        if "hessian_contract" not in skip:
            fd = torch.empty((6, 2, 5, 3), dtype=b.dtype)
            for f in range(5):
                for s in range(3):
                    plus, minus = q2.clone(), q2.clone()
                    plus[c2[f]] += h * g2[f, s]
                    minus[c2[f]] -= h * g2[f, s]
                    diff = k.grad_contract(q1, plus, g1, c1) - k.grad_contract(q1, minus, g1, c1)
                    fd[:, :, f, s] = diff[:, :, c2[f]] / (2 * h)
            b.compare("hessian_contract", analytic, fd, rtol="finite_difference",
                      atol="finite_difference_atol",
                      what=f"hessian_contract vs central differences of grad_contract in its "
                           f"second argument (step {h:g})")
        if "hessian_swap" not in skip:
            swapped = k.hessian_contract(q2, q1, g2, c2, g1, c1).permute(2, 3, 0, 1)
            b.compare("hessian_swap", analytic, swapped, rtol="algebra", atol="algebra_atol",
                      what="hessian_contract(q1, q2, g1, c1, g2, c2) vs the swapped call, "
                           "transposed")


def _check_weighted_gradient(b: _KernelBattery) -> None:
    k, h = b.kernel, b.tol["kernel_step"]
    q1, q2 = b.sample(5), b.sample(4)
    w = torch.as_tensor(b.rng.standard_normal((5, 4)), dtype=b.dtype)
    with torch.no_grad():
        analytic = k.weighted_gradient(q1, q2, w)
        fd = torch.empty((5, b.n_features), dtype=b.dtype)
        for i in range(5):
            for d in range(b.n_features):
                plus, minus = q1.clone(), q1.clone()
                plus[i, d] += h
                minus[i, d] -= h
                fd[i, d] = ((k.value(plus, q2) - k.value(minus, q2))[i] * w[i]).sum() / (2 * h)
        b.compare("weighted_gradient", analytic, fd, rtol="finite_difference",
                  atol="finite_difference_atol",
                  what=f"weighted_gradient vs central differences of sum_m w[i, m] value(q1, "
                       f"q2)[i, m] (step {h:g})")
        eye = torch.eye(b.n_features, dtype=b.dtype).repeat(5, 1, 1)
        via_contract = (k.grad_contract(q1, q2, eye, torch.arange(5)) * w[:, None, :]).sum(-1)
        b.compare("weighted_gradient", analytic, via_contract, rtol="algebra",
                  atol="algebra_atol",
                  what="weighted_gradient vs grad_contract with unit directions, weighted")


def _synthetic_layout(b: _KernelBattery) -> tuple[Any, ...]:
    """Descriptor values and sparse position gradients of a made-up 5-atom structure:
    7 centres of 2 types; each centre has an entry for the atom that owns it and for two
    other atoms."""
    n_atoms, n_centres = 5, 7
    owner = b.rng.integers(0, n_atoms, size=n_centres)
    types = torch.as_tensor(b.rng.integers(0, 2, size=n_centres))
    centre_list, atom_list = [], []
    for c in range(n_centres):
        others = b.rng.choice(np.delete(np.arange(n_atoms), owner[c]), size=2, replace=False)
        for j in (owner[c], *others):
            centre_list.append(c)
            atom_list.append(int(j))
    q = b.sample(n_centres)
    g, _ = b.directions(len(centre_list), 3, n_centres)
    return (q, g, torch.as_tensor(centre_list), np.asarray(atom_list, dtype=np.int64), types,
            n_atoms)


def _check_force_prior_variance(b: _KernelBattery) -> None:
    from gapkit.kernels.base import DescriptorKernel

    k = b.kernel
    args = _synthetic_layout(b)
    with torch.no_grad():
        fast = k.force_prior_variance(*args)
        generic = DescriptorKernel.force_prior_variance(k, *args)
    b.compare("force_prior_variance", fast, generic, rtol="algebra", atol="algebra_atol",
              what=f"{b.name}.force_prior_variance vs DescriptorKernel.force_prior_variance "
                   f"(one hessian_contract per atom)")
    low = float(fast.min()) if fast.numel() else 0.0
    if low < -b.tol["algebra"] * float(fast.abs().max()):
        b.fail("force_prior_variance", f"a prior force variance is negative: {low:.3e}")


def _params_close(a: Any, e: Any, rtol: float, path: str = "get_params()") -> str | None:
    if isinstance(e, Mapping):
        if not isinstance(a, Mapping) or set(a) != set(e):
            return f"{path}: keys {sorted(a) if isinstance(a, Mapping) else a!r}, " \
                   f"expected {sorted(e)}"
        for key in e:
            message = _params_close(a[key], e[key], rtol, f"{path}[{key!r}]")
            if message:
                return message
        return None
    if isinstance(e, (list, tuple)) and not isinstance(a, str):
        return _close_or_message(np.asarray(a, dtype=float), np.asarray(e, dtype=float),
                                 rtol=rtol, atol=0.0, what=path)
    if isinstance(e, float) and isinstance(a, (int, float)) and not isinstance(a, bool):
        return _close_or_message(np.asarray(a), np.asarray(e), rtol=rtol, atol=0.0, what=path)
    return None if a == e else f"{path}: {a!r}, expected {e!r}"


def _check_get_params(b: _KernelBattery) -> None:
    k = b.kernel
    params = k.get_params()
    try:
        params = json.loads(json.dumps(params))
    except (TypeError, ValueError) as err:
        b.fail("get_params", f"get_params() is not JSON-serialisable: {err}")
        return
    clone = type(k)(**params)  # an exception is reported as a failure of "get_params"
    message = _params_close(clone.get_params(), params, b.tol["algebra"])
    if message:
        b.fail("get_params", f"{b.name}(**get_params()).get_params() differs: {message}")
    inputs = _battery_inputs(b)
    expected, got = _everything(k, *inputs), _everything(clone, *inputs)
    for name, value in expected.items():
        b.compare("get_params", got[name], value, rtol="algebra",
                  what=f"{name} of {b.name}(**get_params()) vs the original")


def _check_copy(b: _KernelBattery) -> None:
    k = b.make_kernel()
    inputs = _battery_inputs(b)
    expected = _everything(k, *inputs)
    d0 = float(k.delta.detach().reshape(()))
    for how, clone in (("pickle", pickle.loads(pickle.dumps(k))), ("deepcopy", copy.deepcopy(k))):
        got = _everything(clone, *inputs)
        for name, value in expected.items():
            if not torch.equal(got[name], value):
                b.compare("copy", got[name], value, rtol=0.0,
                          what=f"{name} of a {how} copy (must be bit-identical)")
        clone.delta = 3.0 * d0
        if float(k.delta.detach().reshape(())) != d0:
            b.fail("copy", f"setting delta on a {how} copy changed the original's delta")


def check_kernel(
    make_kernel: Callable[[], DescriptorKernel],
    sample: Sampler,
    *,
    gradients: GradientSampler | None = None,
    skip: Collection[str] = (),
    seed: int = 0,
    tolerances: Mapping[str, float] | None = None,
) -> None:
    """Run the battery of checks every descriptor kernel must pass.

    After gpytorch's ``BaseKernelTestCase`` and scikit-learn's parametrised kernel
    tests. The kernel is a :class:`gapkit.kernels.DescriptorKernel`: ``k = delta^2
    kappa(q, q')`` (eV^2) with ``delta`` (eV) a positive GPyTorch parameter and
    the unit kernel ``kappa`` and its derivatives given by the subclass. The checks
    (:data:`KERNEL_CHECKS`), on random descriptors drawn by ``sample``:

    ``"dtype"``
        every operation returns the descriptors' dtype, and so is ``raw_delta``;
    ``"symmetry"``, ``"positive_semidefinite"``
        ``value(x, x)`` of 12 samples is symmetric, and its smallest eigenvalue is not
        below ``-psd * max|eigenvalue|``;
    ``"diag"``
        ``diag_value`` (``unit_diag``) equals the diagonal of ``value`` (``unit_value``);
    ``"forward"``
        the GPyTorch call ``k(x1, x2)``, ``k(x1)`` and ``k(x1, x2, diag=True)`` agree with
        ``value``;
    ``"delta_scaling"``
        ``value``, ``diag_value``, ``grad_contract``, ``hessian_contract`` and
        ``weighted_gradient`` are ``delta^2`` times their ``unit_*`` versions;
    ``"delta_setter"``
        setting ``k.delta`` to twice its value multiplies all of them by 4;
    ``"delta_parameter"``
        ``raw_delta`` is a registered parameter, ``delta`` its constrained value (> 0),
        and gradients flow from ``value`` to it;
    ``"grad_contract"``
        against central differences of ``value`` along each gradient direction:
        :math:`\\sum_D \\partial k/\\partial q_{1D}\\, g_D \\approx
        [k(q_1 + h g, q_2) - k(q_1 - h g, q_2)] / 2h`;
    ``"grad_contract_linearity"``
        ``grad_contract`` is linear in the directions;
    ``"hessian_contract"``
        against central differences of ``grad_contract`` in its second argument;
    ``"hessian_swap"``
        swapping the two sides transposes ``hessian_contract``;
    ``"weighted_gradient"``
        against central differences of :math:`\\sum_m w_{im} k(q_{1i}, q_{2m})` in every
        feature, and against ``grad_contract`` with unit directions;
    ``"force_prior_variance"``
        the kernel's ``force_prior_variance`` (often a batched fast path) against the
        generic per-atom ``hessian_contract`` loop of ``DescriptorKernel``, on a made-up
        5-atom structure with 7 centres of 2 types; and it is not negative;
    ``"get_params"``
        ``get_params()`` is JSON-serialisable and ``type(k)(**k.get_params())`` gives the
        same parameters and the same values and derivatives;
    ``"copy"``
        pickle and deepcopy copies give bit-identical results and are independent.

    Parameters
    ----------
    make_kernel : callable () -> DescriptorKernel
        Returns a fresh kernel each call (some checks change ``delta``).
    sample : callable (numpy.random.Generator, int) -> torch.Tensor
        ``sample(rng, n)`` draws ``n`` descriptor vectors, shape ``(n, n_features)``, in
        the domain the kernel is meant for (unit vectors for the dot-product SOAP
        kernel, pair distances in Å for the two-body kernel). Two draws should not
        coincide: some kernels are not differentiable at coincident points. The dtype
        of the tensor selects the tolerances (:func:`tolerances_for`).
    gradients : callable (numpy.random.Generator, int, int) -> torch.Tensor, optional
        ``gradients(rng, n_entries, n_directions)`` draws descriptor-gradient entries
        ``g`` of shape ``(n_entries, n_directions, n_features)`` (descriptor units per Å).
        Default: standard normal numbers; give features of very different magnitudes
        directions of their own scale.
    skip : collection of str, default ()
        Names from :data:`KERNEL_CHECKS` not to run (say why at the call site).
    seed : int, default 0
        Seed of every random draw.
    tolerances : mapping of str to float, optional
        Overrides of entries of :data:`TOLERANCES` (the descriptors' dtype); unknown
        names raise ``KeyError``.

    Raises
    ------
    AssertionError
        If any check fails. The message lists every failing check by name, with the
        quantity compared, the worst entry (index, both values, their difference) and
        the tolerance. An exception the kernel raises during a check (a ``ValueError``
        where it is not differentiable, say) counts as a failure of that check, and the
        first one is chained to the AssertionError.
    ValueError
        For an unknown name in ``skip``.
    TypeError
        If ``sample`` or ``gradients`` return arrays of the wrong shape.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from gapkit import SOAPKernel
    >>> def unit_vectors(rng, n):
    ...     q = rng.normal(size=(n, 7))
    ...     return torch.as_tensor(q / np.linalg.norm(q, axis=1, keepdims=True))
    >>> check_kernel(lambda: SOAPKernel(zeta=4, delta=1.3), unit_vectors)
    """
    __tracebackhide__ = True
    unknown = set(skip) - set(KERNEL_CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)} in skip; choose from "
                         f"{list(KERNEL_CHECKS)}")
    b = _KernelBattery(make_kernel, sample, gradients, seed, tolerances)

    errors: list[Exception] = []

    def run(names: tuple[str, ...], check: Callable[[], None]) -> None:
        """Run ``check`` unless all its ``names`` are skipped; an exception it raises is
        reported as a failure of its first check (the first one chains the AssertionError)."""
        if set(names) <= set(skip):
            return
        try:
            check()
        except Exception as err:  # noqa: BLE001 - reported with the check's name
            errors.append(err)
            b.fail(names[0], f"raised {type(err).__name__}: {err}")

    run(("dtype",), lambda: _check_dtype(b))
    run(("symmetry", "positive_semidefinite"), lambda: _check_symmetry_and_psd(b, skip))
    run(("diag",), lambda: _check_diag(b))
    run(("forward",), lambda: _check_forward(b))
    run(("delta_scaling",), lambda: _check_delta_scaling(b))
    run(("delta_setter",), lambda: _check_delta_setter(b))
    run(("delta_parameter",), lambda: _check_delta_parameter(b))
    run(("grad_contract", "grad_contract_linearity"), lambda: _check_grad_contract(b, skip))
    run(("hessian_contract", "hessian_swap"), lambda: _check_hessian_contract(b, skip))
    run(("weighted_gradient",), lambda: _check_weighted_gradient(b))
    run(("force_prior_variance",), lambda: _check_force_prior_variance(b))
    run(("get_params",), lambda: _check_get_params(b))
    run(("copy",), lambda: _check_copy(b))
    if b.failures:
        raise AssertionError(
            f"{b.name} (from make_kernel()) fails {len(b.failures)} check(s) of "
            f"gapkit.testing.check_kernel (seed={seed}):\n  " + "\n  ".join(b.failures)
        ) from (errors[0] if errors else None)
