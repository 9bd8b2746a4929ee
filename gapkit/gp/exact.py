"""Dense exact Gaussian process on energies, forces and virials (GPyTorch).

This is the small-data *reference* model: no sparsification, no approximation, so a
sparse GP whose sparse points are all the training environments must reproduce it.
It is meant for at most a few hundred observations (it builds the full N x N
covariance of the observations).

Model
-----
For configuration A with centres c (atoms for SOAP, ordered pairs for two-body):

.. math::

    E_A = \\sum_{i \\in A} e_0[s_i] + \\sum_{c \\in A} \\varepsilon(q_c), \\qquad
    \\varepsilon \\sim \\mathcal{GP}(0, k), \\qquad
    \\operatorname{cov}(\\varepsilon(q), \\varepsilon(q')) =
        k(q, q')\\, [t(q) = t(q')]

with ``t`` the centre type (central species for SOAP, species pair for two-body).
The offsets ``e0`` are fixed before the fit (:func:`~gapkit.gp.observations.fit_e0`)
and subtracted from the energy labels (:func:`~gapkit.gp.observations.build_observations`).

Every observation is a linear functional ``L`` of ``eps``:

* total energy of frame A: ``L eps = sum_{c in A} eps(q_c)``;
* force on atom k along a: ``L eps = -sum_e d eps/dq (q_{c_e}) . dq_{c_e}/dr_{k,a}``
  over the descriptor gradient entries ``e`` of atom k;
* virial (a, b): ``L eps = -sum_{c in A} d eps/dq (q_c) . (S_ab + S_ba)/2`` with
  ``S = dq_c/d epsilon`` the strain gradient (``W = -dE/d epsilon``, eV);
* local energy of centre c: ``L eps = eps(q_c)``.

The covariance of two functionals is ``L k L'^T``, built from the kernel's ``value``
(value-value), ``grad_contract`` (value-derivative) and ``hessian_contract``
(derivative-derivative). GPyTorch does the rest: the training "inputs" of the
:class:`gpytorch.models.ExactGP` are observation indices, its covariance module is
:class:`FunctionalKernel` (the block covariance between functionals), the likelihood
is a :class:`gpytorch.likelihoods.FixedNoiseGaussianLikelihood` with the per-row
noise ``sigma**2``, and the mean is zero. Predictions are GPyTorch's exact posterior
(Rasmussen & Williams 2006, Alg. 2.1); all computations are float64 with Cholesky
solves (GPyTorch's iterative "fast computations" are switched off).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import gpytorch
import numpy as np
import torch

from ..data import as_frames, get_all_labels, voigt_symmetrised, voigt_to_matrix
from ..kernels import DescriptorKernel
from .design import gradients_for
from .observations import (
    ENERGY,
    FORCES,
    KINDS,
    VIRIAL,
    NoiseModel,
    baseline_energies,
    build_observations,
    fit_e0,
)
from .posterior import Prediction, clip_variance

__all__ = ["Derivatives", "ExactGP", "FunctionalKernel", "Functionals",
           "functional_covariance", "functional_variance"]

_DTYPE = torch.float64
#: test functionals per GPyTorch posterior call in predict (whole frames, about this many)
_PREDICT_CHUNK = 64


def _exact_settings():
    """GPyTorch settings for exact, Cholesky-based float64 linear algebra."""
    from contextlib import ExitStack

    stack = ExitStack()
    stack.enter_context(gpytorch.settings.fast_computations(
        covar_root_decomposition=False, log_prob=False, solves=False))
    stack.enter_context(gpytorch.settings.max_cholesky_size(2**40))
    stack.enter_context(gpytorch.settings.fast_pred_var(False))
    stack.enter_context(gpytorch.settings.skip_posterior_variances(False))
    # keep the training covariance cached across posterior calls (nothing needs grads there)
    stack.enter_context(gpytorch.settings.detach_test_caches(False))
    return stack


# --------------------------------------------------------------------------------------
# Linear functionals of the local energy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Derivatives:
    """Derivative terms of some functionals: ``d eps/dq (q_{centre[e]}) . g[e, j]`` adds to
    row ``row[e, j]`` (-1: to no row).

    Attributes
    ----------
    g : Tensor of shape (n_entries, n_directions, n_features)
        Directions: ``-dq/dr`` (Å^-1 per descriptor unit, 3 directions) for forces,
        ``-(dq/d epsilon_ab + dq/d epsilon_ba)/2`` (6 Voigt directions) for virials.
    centre : Tensor of shape (n_entries,)
    row : Tensor of shape (n_entries, n_directions)
    """

    g: torch.Tensor
    centre: torch.Tensor
    row: torch.Tensor


@dataclass(frozen=True)
class Functionals:
    """A set of ``n_rows`` linear functionals of the local energy ``eps``.

    Row ``r`` is ``sum_c W[r, c] eps(q_c)`` plus the derivative terms of ``derivatives``
    that belong to row ``r``.

    Attributes
    ----------
    q : Tensor of shape (n_centres, n_features)
        Descriptors of the centres the functionals touch.
    types : Tensor of shape (n_centres,)
        Kernel type of each centre (kernels between different types are zero).
    weights : Tensor of shape (n_rows, n_centres)
        Coefficients of the values ``eps(q_c)`` (dimensionless).
    derivatives : tuple of Derivatives
        Groups of derivative terms (forces, virials).
    """

    q: torch.Tensor
    types: torch.Tensor
    weights: torch.Tensor
    derivatives: tuple

    @property
    def n_rows(self) -> int:
        return int(self.weights.shape[0])

    @classmethod
    def from_descriptor(cls, result, *, energy_rows=None, force_rows=None, virial_rows=None,
                        local_rows=None, n_rows: int) -> Functionals:
        """Functionals of the frames of one :class:`~gapkit.descriptors.DescriptorResult`.

        Each ``*_rows`` array gives the row of a functional, or -1 for none:
        ``energy_rows`` (n_structures,), ``force_rows`` (n_atoms_total, 3) indexed by
        the global atom index, ``virial_rows`` (n_structures, 6) in Voigt order,
        ``local_rows`` (n_centres,).
        """
        n_c = result.n_centres
        centres = np.arange(n_c)
        structure = np.asarray(result.centre_structure)
        weights = np.zeros((n_rows, n_c))
        for rows in (None if energy_rows is None else np.asarray(energy_rows)[structure],
                     local_rows):
            if rows is not None:
                rows = np.asarray(rows)
                keep = rows >= 0
                np.add.at(weights, (rows[keep], centres[keep]), 1.0)
        derivatives = []

        def add(g, centre, rows):
            keep = (rows >= 0).any(axis=1)
            if keep.any():
                derivatives.append(Derivatives(
                    g=torch.as_tensor(np.ascontiguousarray(g[keep]), dtype=_DTYPE),
                    centre=torch.as_tensor(centre[keep], dtype=torch.int64),
                    row=torch.as_tensor(rows[keep], dtype=torch.int64)))

        if force_rows is not None and (np.asarray(force_rows) >= 0).any():
            if result.gradients is None:
                raise ValueError("force functionals need position gradients")
            add(-np.asarray(result.gradients), np.asarray(result.gradient_centre),
                np.asarray(force_rows)[result.gradient_atom_global])
        if virial_rows is not None and (np.asarray(virial_rows) >= 0).any():
            if result.strain_gradients is None:
                raise ValueError("virial functionals need strain gradients")
            s = np.asarray(result.strain_gradients)  # (n_c, 3, 3, D)
            g = -voigt_symmetrised(s)
            add(g, centres, np.asarray(virial_rows)[structure])
        return cls(q=torch.as_tensor(np.asarray(result.values), dtype=_DTYPE),
                   types=torch.as_tensor(np.asarray(result.centre_types), dtype=torch.int64),
                   weights=torch.as_tensor(weights, dtype=_DTYPE), derivatives=tuple(derivatives))

    def concatenate(self, other: Functionals) -> Functionals:
        """The rows of ``self`` followed by those of ``other`` (centres concatenated too)."""
        n_c, n_r = self.q.shape[0], self.n_rows
        shifted = tuple(Derivatives(g=d.g, centre=d.centre + n_c,
                                    row=torch.where(d.row >= 0, d.row + n_r, d.row))
                        for d in other.derivatives)
        return Functionals(q=torch.cat([self.q, other.q]),
                           types=torch.cat([self.types, other.types]),
                           weights=torch.block_diag(self.weights, other.weights),
                           derivatives=self.derivatives + shifted)

    def _take(self, rows: torch.Tensor) -> Functionals:
        """The functionals ``rows`` (distinct), restricted to the centres they touch.

        Derivative terms of other rows point to row ``len(rows)`` (a discard row).
        """
        n = rows.shape[0]
        position = torch.full((self.n_rows + 1,), n, dtype=torch.int64)  # [-1] -> discard
        position[rows] = torch.arange(n)
        weights = self.weights[rows]
        used = weights.ne(0).any(dim=0)
        kept = []
        for d in self.derivatives:
            row = position[d.row]
            keep = (row < n).any(dim=1)
            kept.append((d.g[keep], d.centre[keep], row[keep]))
            used[d.centre[keep]] = True
        centres = torch.nonzero(used)[:, 0]
        remap = torch.full((used.shape[0],), -1, dtype=torch.int64)
        remap[centres] = torch.arange(centres.shape[0])
        derivatives = tuple(Derivatives(g=g, centre=remap[c], row=r) for g, c, r in kept
                            if g.shape[0])
        return Functionals(q=self.q[centres], types=self.types[centres],
                           weights=weights[:, centres], derivatives=derivatives)


def _block_covariance(kernel: DescriptorKernel, a: Functionals, b: Functionals) -> torch.Tensor:
    """``L_a k L_b^T`` with the type mask, for blocks made by ``_take``.

    Shape (rows of a + 1, rows of b + 1): the last row and column collect the
    derivative terms of other rows and are to be dropped.
    """
    same = (a.types[:, None] == b.types[None, :]).to(_DTYPE)  # (Ca, Cb)
    n_a, n_b = a.n_rows, b.n_rows
    out = torch.zeros((n_a + 1, n_b + 1), dtype=_DTYPE)
    # value-value: sum_cc' W_a[r, c] k(q_c, q_c') W_b[r', c']
    vv = a.weights @ (kernel.value(a.q, b.q) * same) @ b.weights.T
    out = out + torch.nn.functional.pad(vv, (0, 1, 0, 1))
    wa = torch.nn.functional.pad(a.weights, (0, 0, 0, 1))  # (n_a + 1, Ca)
    wb = torch.nn.functional.pad(b.weights, (0, 0, 0, 1))
    for db in b.derivatives:
        # value-derivative: dk(q_c, q'_f)/dq'_f . g_fj; k is symmetric, so contract its
        # first argument: grad_contract(q', q) -> (Fb, rb, Ca)
        kgv = kernel.grad_contract(b.q, a.q, db.g, db.centre) * same.T[db.centre][:, None, :]
        out = out.index_add(1, db.row.reshape(-1), wa @ kgv.reshape(-1, kgv.shape[-1]).T)
    for da in a.derivatives:
        kgv = kernel.grad_contract(a.q, b.q, da.g, da.centre) * same[da.centre][:, None, :]
        out = out.index_add(0, da.row.reshape(-1), kgv.reshape(-1, kgv.shape[-1]) @ wb.T)
        for db in b.derivatives:
            h = kernel.hessian_contract(a.q, b.q, da.g, da.centre, db.g, db.centre)
            h = h * same[da.centre][:, db.centre][:, None, :, None]  # (Fa, ra, Fb, rb)
            h = h.reshape(da.row.numel(), db.row.numel())
            rows_a = torch.zeros((n_a + 1, h.shape[1]), dtype=_DTYPE).index_add(
                0, da.row.reshape(-1), h)
            out = out.index_add(1, db.row.reshape(-1), rows_a)
    return out


def functional_covariance(kernel: DescriptorKernel, a: Functionals, rows_a: torch.Tensor,
                          b: Functionals, rows_b: torch.Tensor) -> torch.Tensor:
    """Prior covariance between rows ``rows_a`` of ``a`` and ``rows_b`` of ``b``.

    ``L_a k L_b^T`` with the type mask, shape (len(rows_a), len(rows_b)), in the
    product of the units of the two functionals (eV^2 for energy-energy, eV^2/Å for
    energy-force, eV^2/Å^2 for force-force). Rows may repeat.
    """
    ua, ia = torch.unique(rows_a, return_inverse=True)
    ub, ib = torch.unique(rows_b, return_inverse=True)
    out = _block_covariance(kernel, a._take(ua), b._take(ub))
    return out[ia][:, ib]  # drops the discard row and column


def functional_variance(kernel: DescriptorKernel, a: Functionals, rows: torch.Tensor,
                        chunk: int = 32) -> torch.Tensor:
    """Prior variances of rows ``rows`` of ``a`` (the diagonal of the covariance).

    Computed on diagonal blocks of ``chunk`` rows, so the cost is linear in ``len(rows)``.
    """
    parts = []
    for start in range(0, rows.shape[0], chunk):
        r = rows[start:start + chunk]
        parts.append(torch.diagonal(functional_covariance(kernel, a, r, a, r)))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=_DTYPE)


class FunctionalKernel(gpytorch.kernels.Kernel):
    """GPyTorch kernel between linear functionals of the local energy.

    Inputs are row indices (float tensors of shape (n, 1) holding integers) into
    :attr:`functionals`; the output is the prior covariance of those rows (see
    :func:`functional_covariance`). The wrapped descriptor kernel is a sub-module,
    so its hyper-parameters (``delta``, ...) and priors belong to the GPyTorch model.

    Parameters
    ----------
    base_kernel : DescriptorKernel
        Covariance of the local energies, eV^2.
    functionals : Functionals
        The functionals the indices refer to.
    """

    is_stationary = False

    def __init__(self, base_kernel: DescriptorKernel, functionals: Functionals):
        super().__init__()
        self.base_kernel = base_kernel
        self.functionals = functionals

    def forward(self, x1, x2, diag: bool = False, last_dim_is_batch: bool = False, **params):
        if last_dim_is_batch or x1.dim() != 2 or x2.dim() != 2:
            raise ValueError("FunctionalKernel takes un-batched (n, 1) index inputs")
        rows1 = x1[:, 0].round().to(torch.int64)
        rows2 = x2[:, 0].round().to(torch.int64)
        f = self.functionals
        if diag:
            if rows1.shape != rows2.shape:
                raise ValueError("diag=True needs inputs of the same length")
            if torch.equal(rows1, rows2):
                return functional_variance(self.base_kernel, f, rows1)
            return torch.stack([
                functional_covariance(self.base_kernel, f, r1[None], f, r2[None])[0, 0]
                for r1, r2 in zip(rows1, rows2)])
        return functional_covariance(self.base_kernel, f, rows1, f, rows2)


class _GPyTorchModel(gpytorch.models.ExactGP):
    """Zero-mean exact GP over observation indices."""

    def __init__(self, train_x, train_y, likelihood, covar_module):
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = covar_module

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------


class ExactGP:
    """Dense exact GP on total energies, forces and virials: the small-data reference.

    See the module docstring for the model. The prior covariance of the local
    energies is ``kernel`` (eV^2) between centres of the same type and zero
    otherwise; observations are energies (eV), force components (eV/Å) and virial
    components (eV), with independent Gaussian noise from ``noise``. The posterior is
    GPyTorch's exact one, computed with Cholesky solves in float64. It costs
    O(N^3) in the number of observations N: keep N to a few hundred.

    Parameters
    ----------
    descriptor : gapkit.descriptors.Descriptor
        E.g. :class:`~gapkit.SOAP`. If its ``species`` is ``None``, the fitted copy
        (:attr:`descriptor_`) fixes it to the species of the training frames, so that
        the feature layout and the centre types do not change between fit and predict.
    kernel : gapkit.kernels.DescriptorKernel
        Kernel on the descriptors, eV^2. Copied to :attr:`kernel_` by :meth:`fit`;
        change hyper-parameters on ``kernel_`` after fitting (``gp.kernel_.delta = 2.0``),
        predictions and :meth:`log_marginal_likelihood` follow.
    noise : NoiseModel, optional
        Observation noise (standard deviations; ``NoiseModel()`` when ``None``).
    e0 : {"least_squares", "isolated", "zero"} or mapping of species to eV
        Per-species energy offsets, see :func:`~gapkit.gp.observations.fit_e0`.
    use : sequence of {"energy", "forces", "virial"}
        Which labels to fit on.

    Attributes
    ----------
    descriptor_, kernel_ : the fitted copies.
    e0_ : dict of int to float
        Energy offset per atomic number, eV.
    observations_ : Observations
        The training rows (``y`` without the e0 baseline).
    model_ : gpytorch.models.ExactGP
        The GPyTorch model; ``model_.likelihood`` is the fixed-noise likelihood.
    functionals_ : Functionals
        The training observations as functionals of the local energy.

    Notes
    -----
    * The noise variances are used exactly as given: GPyTorch's default floor of
      1e-6 on fixed noise (``settings.min_fixed_noise``) is lifted. If the Cholesky
      factorisation of ``K + Sigma`` fails, GPyTorch adds jitter and warns
      (``NumericalWarning``); increase the noise instead.
    * A sparse (DTC) GP whose sparse points are all the training centres reproduces
      this posterior exactly only when it is fitted on energies: an energy row
      ``sum_c k(., q_c)`` lies in the span of the ``k(., z_m)``, but force and virial
      rows involve kernel *derivatives*, which do not, so ``Q_NN != K_NN`` for them
      and the two models differ (by design: that is the DTC approximation).
    * Cost: the N x N training covariance needs the kernel Hessian between all pairs
      of force/virial derivative entries, O(N^2) in memory; the posterior O(N^3).

    Examples
    --------
    ::

        gp = ExactGP(SOAP(n_max=3, l_max=2, cutoff=4.0), SOAPKernel(zeta=2)).fit(frames)
        pred = gp.predict(test_frames)
        pred.energy, pred.energy_variance           # eV, eV^2
        gp.kernel_.delta = 0.5                      # eV; then re-predict / re-evaluate
        gp.log_marginal_likelihood()
    """

    def __init__(self, descriptor, kernel: DescriptorKernel, *, noise: NoiseModel | None = None,
                 e0: str | Mapping = "least_squares", use: Sequence[str] = KINDS):
        if not isinstance(kernel, DescriptorKernel):
            raise TypeError(f"kernel must be a gapkit.kernels.DescriptorKernel, got "
                            f"{type(kernel).__name__}")
        noise = NoiseModel() if noise is None else noise
        if not isinstance(noise, NoiseModel):
            raise TypeError(f"noise must be a NoiseModel, got {type(noise).__name__}")
        use = (use,) if isinstance(use, str) else tuple(use)
        unknown = set(use) - set(KINDS)
        if unknown or not use:
            raise ValueError(f"use={use!r}: choose one or more of {list(KINDS)}")
        if not isinstance(e0, Mapping) and e0 not in ("least_squares", "isolated", "zero"):
            raise ValueError(f"unknown e0 {e0!r}; use 'least_squares', 'isolated', 'zero' or a "
                             "dict {symbol or Z: eV}")
        kernel.bind(descriptor)  # the descriptor owns what both need (a two-body cutoff)
        self.descriptor = descriptor
        self.kernel = kernel
        self.noise = noise
        self.e0 = e0
        self.use = use

    # -- fit ------------------------------------------------------------------
    def fit(self, frames) -> ExactGP:
        """Condition the GP on the labels of ``frames`` (ase.Atoms or a sequence).

        Labels are read with :func:`gapkit.data.get_all_labels` (energy eV, forces
        eV/Å, virial eV or stress eV/Å^3); frames without a label simply contribute
        no row of that kind. Returns ``self``.
        """
        frames = _as_frames(frames)
        labels = get_all_labels(frames)
        species = sorted({int(z) for atoms in frames for z in atoms.numbers})
        self.e0_ = fit_e0(frames, labels, method=self.e0, species=species)
        obs = build_observations(frames, labels, self.noise, self.e0_, self.use)
        descriptor = copy.copy(self.descriptor)
        if getattr(descriptor, "species", None) is None:
            descriptor.species = tuple(species)
        self.descriptor_ = descriptor
        self.kernel_ = copy.deepcopy(self.kernel).double()

        gradients = sorted(gradients_for(obs))
        result = descriptor.compute(frames, gradients=gradients)
        n = obs.n_rows
        rows = np.arange(n)
        energy_rows = np.full(len(frames), -1)
        force_rows = np.full((int(result.n_atoms.sum()), 3), -1)
        virial_rows = np.full((len(frames), 6), -1)
        e, f, v = obs.kind == ENERGY, obs.kind == FORCES, obs.kind == VIRIAL
        energy_rows[obs.frame[e]] = rows[e]
        force_rows[result.atom_offsets[obs.frame[f]] + obs.atom[f], obs.component[f]] = rows[f]
        virial_rows[obs.frame[v], obs.component[v]] = rows[v]
        self.functionals_ = Functionals.from_descriptor(
            result, energy_rows=energy_rows, force_rows=force_rows, virial_rows=virial_rows,
            n_rows=n)
        self.observations_ = obs

        train_x = torch.arange(n, dtype=_DTYPE)[:, None]
        train_y = torch.as_tensor(obs.y, dtype=_DTYPE)
        # GPyTorch rounds fixed noise variances up to 1e-6 by default; keep them exact.
        with gpytorch.settings.min_fixed_noise(double_value=0.0):
            likelihood = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(
                noise=torch.as_tensor(obs.sigma, dtype=_DTYPE) ** 2, learn_additional_noise=False)
        covar = FunctionalKernel(self.kernel_, self.functionals_)
        self.model_ = _GPyTorchModel(train_x, train_y, likelihood, covar).double()
        return self

    # -- inference --------------------------------------------------------------
    def log_marginal_likelihood(self, *, as_tensor: bool = False):
        """Log marginal likelihood of the training labels (total, not per datum).

        .. math::

            \\log p(y) = -\\tfrac12 y^T (K + \\Sigma)^{-1} y - \\tfrac12 \\log|K + \\Sigma|
                - \\tfrac{N}{2} \\log 2\\pi

        with ``y`` the training labels minus the e0 baseline (eV, eV/Å, eV), ``K`` their
        prior covariance and ``Sigma = diag(sigma^2)``: the log of a density over
        ``y`` in those units (nats). Computed as GPyTorch's
        :class:`~gpytorch.mlls.ExactMarginalLogLikelihood` times N, so log-priors of
        hyper-parameters that carry a prior (``delta_prior``, ...) are included.

        Parameters
        ----------
        as_tensor : bool
            Return a 0-d float64 tensor attached to the autograd graph of the
            hyper-parameters of :attr:`kernel_` (for gradient-based optimisation)
            instead of a float.
        """
        self._check_fitted()
        model = self.model_
        model.train()
        model.likelihood.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        with _exact_settings():
            output = model(*model.train_inputs)
            value = mll(output, model.train_targets) * self.observations_.n_rows
        return value if as_tensor else float(value.detach())

    def predict(self, frames, *, prior: bool = False) -> Prediction:
        """Posterior mean and variance of energies, forces, virials and local energies.

        Variances are those of the *latent* function, i.e. of the noise-free
        quantities: no observation noise is added. They come from GPyTorch's exact
        predictive covariance (its diagonal only); round-off below zero is clipped
        to 0 (with a warning when it is not negligible).

        Parameters
        ----------
        frames : ase.Atoms or sequence of ase.Atoms
        prior : bool
            Return the prior instead of the posterior: means are the e0 baseline for
            energies and zero otherwise, variances the prior variances ``L k L^T``.

        Returns
        -------
        Prediction
            The result type of :meth:`gapkit.GAP.predict`: ``energy`` (n_frames,) total
            energy including e0, eV; ``forces`` (n_atoms_total, 3), eV/Å; ``virial``
            (n_frames, 3, 3) ``-dE/d epsilon``, eV; ``local_energy`` (n_atoms_total,)
            per-atom energies (the sum of the latent ``eps`` of the centres an atom
            owns, plus its e0), eV; each with its ``*_variance`` (eV^2, eV^2/Å^2), and
            ``variance_form`` ``"exact"`` (``"prior"`` with ``prior=True``).
        """
        self._check_fitted()
        frames = _as_frames(frames)
        result = self.descriptor_.compute(frames, gradients=True)
        n_f, n_a = len(frames), int(result.n_atoms.sum())
        # test rows frame by frame: energy, forces (atom-major), 6 virials, local energies
        structure = np.asarray(result.centre_structure)
        atoms_per_frame = np.asarray(result.n_atoms)
        # rows per frame: energy, 3 n forces, 6 virials, n per-atom energies
        offsets = np.concatenate([[0], np.cumsum(1 + 3 * atoms_per_frame + 6
                                                  + atoms_per_frame)])
        n_test = int(offsets[-1])
        energy_rows = offsets[:-1]
        force_rows = np.concatenate([offsets[f] + 1 + np.arange(3 * n) for f, n in
                                     enumerate(atoms_per_frame)]).reshape(n_a, 3)
        virial_rows = (offsets[:-1] + 1 + 3 * atoms_per_frame)[:, None] + np.arange(6)
        # each centre adds its eps to the row of the atom that owns it
        local_rows = virial_rows[structure, 5] + 1 + np.asarray(result.centre_atom)
        atom_local_rows = np.concatenate([virial_rows[f, 5] + 1 + np.arange(n) for f, n in
                                          enumerate(atoms_per_frame)])
        test = Functionals.from_descriptor(result, energy_rows=energy_rows, force_rows=force_rows,
                                           virial_rows=virial_rows, local_rows=local_rows,
                                           n_rows=n_test)
        n_train = self.observations_.n_rows
        model = self.model_
        covar = model.covar_module
        covar.functionals = self.functionals_.concatenate(test)
        test_x = torch.arange(n_train, n_train + n_test, dtype=_DTYPE)[:, None]
        try:
            with torch.no_grad(), _exact_settings():
                prior_variance = covar(test_x, diag=True)
                if prior:
                    mean = torch.zeros(n_test, dtype=_DTYPE)
                    variance = prior_variance
                else:
                    # train() drops GPyTorch's cached solves: hyper-parameters may have changed
                    model.train()
                    model.eval()
                    # GPyTorch evaluates the full test-test covariance of each call, so ask
                    # for a few frames at a time; the training-data solves are cached.
                    means, variances = [], []
                    for start, stop in _chunks(offsets, _PREDICT_CHUNK):
                        posterior = model(test_x[start:stop])
                        means.append(posterior.mean)
                        variances.append(
                            posterior.lazy_covariance_matrix.diagonal(dim1=-1, dim2=-2))
                    mean, variance = torch.cat(means), torch.cat(variances)
                    model.train()
        finally:
            covar.functionals = self.functionals_
        mean_np = mean.numpy()
        delta = float(getattr(self.kernel_, "delta", torch.ones(())).detach().reshape(()))
        variance = clip_variance(variance.numpy(), prior_variance.numpy(), reference=delta**2,
                                 stacklevel=3)

        def part(rows, shape):
            return mean_np[rows].reshape(shape), variance[rows].reshape(shape)

        energy, energy_var = part(energy_rows, (n_f,))
        forces, forces_var = part(force_rows, (n_a, 3))
        voigt, voigt_var = part(virial_rows, (n_f, 6))
        local, local_var = part(atom_local_rows, (n_a,))
        e0_atoms = np.array([self.e0_[int(z)] for a in frames for z in a.numbers])
        form = "prior" if prior else "exact"
        return Prediction(
            energy=energy + baseline_energies(frames, self.e0_), forces=forces,
            virial=voigt_to_matrix(voigt), local_energy=local + e0_atoms,
            atom_offsets=np.concatenate([[0], np.cumsum(atoms_per_frame)]).astype(np.int64),
            energy_variance=energy_var, forces_variance=forces_var,
            virial_variance=voigt_to_matrix(voigt_var), local_energy_variance=local_var,
            variance_form={k: form for k in ("energy", "forces", "virial", "local_energy")})

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this ExactGP is not fitted yet; call fit(frames) first")

    def __repr__(self) -> str:
        return (f"ExactGP(descriptor={self.descriptor!r}, kernel={type(self.kernel).__name__}, "
                f"noise={self.noise!r}, e0={self.e0!r}, use={self.use!r})")


def _chunks(offsets: np.ndarray, size: int):
    """``(start, stop)`` row ranges of whole frames, about ``size`` rows each."""
    start = 0
    for stop in offsets[1:]:
        if stop - start >= size or stop == offsets[-1]:
            yield int(start), int(stop)
            start = stop


def _as_frames(frames) -> list:
    return as_frames(frames, require="ExactGP")

