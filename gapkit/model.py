"""The GAP estimator: fit a sparse GP on energies, forces and virials; predict with
variances.

The pieces it stands on live one layer down: the terms (:mod:`gapkit.terms`), the
design-matrix rows (:func:`gapkit.gp.design.design_blocks`), the streaming QR
(:mod:`gapkit.gp.sparse`), the posterior formulas (:mod:`gapkit.gp.posterior`) and the
model file and config format (:mod:`gapkit.io`). ``GAP`` holds the settings and the
fitted state and runs the passes.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import io as _io
from ._checks import count
from ._compat import UNSET, renamed
from .baselines import as_baseline_list
from .baselines import evaluate as _evaluate_baselines
from .baselines import subtract as subtract_baselines
from .data import as_frames, check_label_keys, get_all_labels
from .data.structures import check_species
from .gp import observations, posterior
from .gp.design import TrainingData, design_blocks, design_cache, gradients_for
from .gp.parallel import dask_passes
from .gp.observations import KINDS, NoiseModel, baseline_energies, build_observations, fit_e0
from .gp.posterior import Prediction
from .gp.predictive import apply_predictive
from .gp.sparse import solve_dtc, warn_symmetry
from .gp.sparse_sets import term_sparse_set
from .io import FORMAT_VERSION
from .terms import Term, default_terms

__all__ = ["FORMAT_VERSION", "GAP", "Prediction", "Term", "TrainingData", "clone"]


def clone(estimator):
    """An unfitted copy of ``estimator`` with the same settings (scikit-learn's ``clone``):
    ``type(estimator)(**deepcopy(estimator.get_params()))``, for :class:`GAP` and anything
    whose ``get_params`` keys are its constructor arguments (descriptors, kernels,
    baselines). Nothing fitted is copied."""
    if not hasattr(estimator, "get_params"):
        raise TypeError(f"cannot clone {type(estimator).__name__}: it has no get_params()")
    return type(estimator)(**copy.deepcopy(estimator.get_params()))


class GAP:
    """Gaussian Approximation Potential: a sparse GP on energies, forces and virials.

    The local energy is a sum of terms (e.g. two-body + SOAP, as gap_fit's
    ``distance_2b ... : soap ...``), each ``eps_d(q) = sum_m alpha_m k_d(q, z_m)``
    over its sparse points, on top of per-species offsets ``e0`` and optional fixed
    physics baselines: ``E = sum_i e0[s_i] + sum_d sum_c eps_d(q_c) + E_baselines``.
    Fitting is the projected-process (DTC) solve of :mod:`gapkit.gp.sparse`, streamed
    over blocks of frames.

    The constructor only checks and stores its arguments (:meth:`get_params` returns
    them, :func:`clone` copies them); :meth:`fit` sets the fitted attributes, whose
    names end in ``_``: ``terms_`` (the terms with the training species fixed and
    their own copies of the kernels), ``noise_`` (the noise of the fit),
    ``sparse_sets_``, ``e0_``, ``species_``, ``alpha_``, ``R_``, ``U_``,
    ``jitter_absolute_``, ``log_marginal_likelihood_``, ``fit_info_``.
    :meth:`optimize_hyperparameters` changes ``terms_`` and ``noise_`` only: the
    ``terms`` and ``noise`` given here are never modified, and a later :meth:`fit`
    starts from them again.

    Parameters
    ----------
    terms : list of Term, optional
        Default: one SOAP term (cutoff 5 Å, width 1 Å, n_max 8, l_max 6,
        atom_sigma 0.5 Å, zeta 4, delta 1 eV, 500 CUR sparse points).
    noise : NoiseModel, optional
        Observation noise (energy eV/atom, forces eV/Å, virial eV/atom, per
        config_type and per frame, and the learnt multipliers ``scale``), used as given.
        None (the default): chosen from the data by :meth:`cross_validate_noise`,
        starting from ``NoiseModel()`` (about three fits' cost).
    e0 : "least_squares", "isolated", "zero" or dict
        Per-species energy offsets (see :func:`gapkit.gp.fit_e0`).
    jitter : float
        Added to the diagonal of K_MM, relative to its mean diagonal (the absolute
        value used is ``jitter_absolute_``).
    use : sequence of {"energy", "forces", "virial"}
        Which labels to fit (all present ones by default).
    energy_key, forces_key, virial_key, stress_key, config_type_key : str
        extxyz keys, as gap_fit's ``energy_parameter_name`` etc.
    batch_atoms : int
        Atoms per streamed block (memory vs speed).
    random_state : int
        Seed of sparse-point selection; fits are deterministic (per thread count: set_threads).
    progress : bool
        Progress bars on descriptors and design-matrix assembly.
    baselines : Baseline or list of Baseline, optional
        Physics terms (:mod:`gapkit.baselines`: core repulsion, Ewald or Coulomb
        electrostatics, a pair potential) subtracted from the labels before the fit (the
        GP learns the residual) and added back to every prediction (and so to
        :class:`GAPCalculator`). Fixed, not fitted; the variances are the GP part's.
    """

    dtype = torch.float64

    def __init__(self, terms: Sequence[Term] | None = None, *, noise: NoiseModel | None = None,
                 e0="least_squares", jitter: float = 1e-8,
                 use: Sequence[str] = KINDS,
                 energy_key: str = "energy", forces_key: str = "forces",
                 virial_key: str = "virial", stress_key: str = "stress",
                 config_type_key: str = "config_type", batch_atoms: int = 256,
                 random_state: int = 0, progress: bool = True, baselines=None):
        self.terms = list(terms) if terms is not None else default_terms()
        if not self.terms:
            raise ValueError("a GAP needs at least one term")
        for t in self.terms:
            if not isinstance(t, Term):
                raise TypeError(f"terms must be gapkit.Term objects, got {type(t).__name__}")
        self.noise = noise  # None: cross-validated in fit
        if noise is not None and not isinstance(self.noise, NoiseModel):
            raise TypeError(f"noise must be a gapkit.NoiseModel, got {type(self.noise).__name__}")
        self.e0 = e0
        if not (jitter >= 0 and math.isfinite(jitter)):
            raise ValueError(f"jitter must be >= 0, got {jitter!r}")
        self.jitter = float(jitter)
        self.use = tuple(use)
        unknown = set(self.use) - set(KINDS)
        if unknown:
            raise ValueError(f"use: unknown observation kinds {sorted(unknown)}; use some of "
                             f"{list(KINDS)}")
        self.energy_key, self.forces_key, self.virial_key = energy_key, forces_key, virial_key
        self.stress_key, self.config_type_key = stress_key, config_type_key
        self.batch_atoms = count(batch_atoms, "batch_atoms")
        self.random_state = random_state
        self.progress = progress
        self.baselines = [] if baselines is None else as_baseline_list(baselines)

    # ------------------------------------------------------------ settings
    def get_params(self, deep: bool = False) -> dict:
        """The constructor arguments, by name (scikit-learn's ``get_params``):
        ``GAP(**m.get_params())`` has the same settings as ``m``. ``deep`` is accepted
        for scikit-learn compatibility; the terms are returned as objects."""
        names = [p for p in inspect.signature(GAP.__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params) -> "GAP":
        """Set constructor arguments by name (checked as the constructor checks them);
        returns ``self``. The fitted state, if any, is kept until the next fit."""
        merged = {**self.get_params(), **params}
        unknown = set(params) - set(self.get_params())
        if unknown:
            raise ValueError(f"unknown GAP parameters {sorted(unknown)}; valid: "
                             f"{sorted(self.get_params())}")
        checked = GAP(**merged)
        for name in self.get_params():
            setattr(self, name, getattr(checked, name))
        return self

    @property
    def keys(self) -> dict:
        """The five extxyz key settings as keyword arguments of
        :func:`gapkit.data.read_extxyz` / :func:`gapkit.data.get_all_labels`."""
        return {name: getattr(self, name) for name in _io.KEY_NAMES}

    @property
    def jitter_abs_(self) -> float:
        warnings.warn("GAP.jitter_abs_ is now GAP.jitter_absolute_ (the old name goes in "
                      "gapkit 0.3)", DeprecationWarning, stacklevel=2)
        return self.jitter_absolute_

    def __repr__(self) -> str:
        return (f"GAP({len(self.terms)} term{'s' if len(self.terms) > 1 else ''}, "
                f"noise={self.noise!r}, e0={self.e0!r}"
                + (f", baselines={self.baselines!r}" if self.baselines else "") + ")")

    # ------------------------------------------------------------------ fit
    def fit(self, frames, *, client=None, n_workers: int | None = None) -> "GAP":
        """Fit on ``frames`` (list of ase.Atoms, or the path of any file ase.io reads, read
        with this model's label keys: :func:`gapkit.data.read_frames`) and return ``self``.
        Whatever energies, forces and virials frames have (and ``use`` keeps) are fitted;
        ValueError if none. The fit uses copies of the kernels and ``noise`` (``terms_``,
        ``noise_``); without ``noise`` it is chosen by cross-validation. With ``client`` (a
        dask.distributed Client or scheduler address) or ``n_workers`` (a LocalCluster here)
        the passes over the frames run on Dask workers (:mod:`gapkit.gp.parallel`), which
        read their own frames of an extxyz path (:class:`gapkit.data.FrameFile`)."""
        frames = as_frames(frames, lazy=client is not None or bool(n_workers), **self.keys)
        cpu, wall = time.process_time(), time.perf_counter()
        with dask_passes(client, n_workers, progress=self.progress):
            if self.noise is not None:
                return self._fit(frames)
            with design_cache():  # the CV's closed form makes the fit from its own pass
                self._fit(frames, solve=False).cross_validate_noise(frames)
                if self.alpha_ is None:  # too few frames to cross-validate: streaming fit
                    report = self.fit_info_["noise_cv"]
                    self._fit(frames).fit_info_["noise_cv"] = report
        self.fit_info_.update(cpu_time_s=time.process_time() - cpu,
                              wall_time_s=time.perf_counter() - wall)
        return self

    @classmethod
    def auto(cls, frames, *, budget="20min", random_state: int = 0, **settings) -> "GAP":
        """Descriptor settings chosen by cross-validation within a CPU ``budget`` (seconds
        or e.g. ``"20min"``), the winner fitted (:mod:`gapkit.auto`; ``settings``: GAP's
        other settings, for every candidate). What was tried: ``fit_info_["auto"]``."""
        from .auto import auto_fit

        template = cls(**settings)
        return auto_fit(frames, budget=budget, random_state=random_state, template=template,
                        log=print if template.progress else None)

    def _fit(self, frames, *, kernels=None, noise: NoiseModel | None = None,
             solve: bool = True) -> "GAP":
        """The fit, with ``kernels`` (one per term) and ``noise`` instead of copies of the
        user's (refits); without ``solve``, ``alpha_`` None (the noise CV's solves it)."""
        t_start, cpu_start = time.perf_counter(), time.process_time()
        for name in ("recalibration_", "predictive_"):  # calibrations belong to one fit
            self.__dict__.pop(name, None)
        labels = self._labels(frames)
        self.species_ = species = sorted({int(z) for a in frames for z in np.unique(a.numbers)})
        kernels_given = kernels
        if kernels is None:
            kernels = [copy.deepcopy(t.kernel) for t in self.terms]
        self.terms_ = [t.for_species(species, k, progress=self.progress)
                       for t, k in zip(self.terms, kernels)]
        self.noise_ = noise or self.noise or NoiseModel()
        self.e0_ = fit_e0(frames, labels, self.e0, species)
        if kernels_given is None:  # once: not again in refits
            observations.warn_implausible(frames, labels, self.noise_, self.e0_, self.terms_)
        obs = build_observations(frames, labels, self.noise_, self.e0_, self.use)
        seed = self.random_state
        self.sparse_sets_ = [term_sparse_set(term, frames, None if seed is None else seed + i)
                             for i, term in enumerate(self.terms_)]
        sol = solve_dtc(self.terms_, self.sparse_sets_, frames, obs, jitter=self.jitter,
                        batch_atoms=self.batch_atoms, progress=self.progress, solve=solve)
        self.alpha_, self.R_, self.U_ = sol.alpha, sol.R, sol.U
        self.jitter_absolute_ = sol.jitter_absolute
        self.log_marginal_likelihood_ = sol.log_marginal_likelihood
        if sol.symmetry_violations and kernels_given is None:  # once: not again in refits
            warn_symmetry(sol.symmetry_violations, stacklevel=3)
        self.fit_info_ = {
            "n_frames": len(frames), "n_observations": obs.counts(),
            "n_sparse": [s.n for s in self.sparse_sets_],
            "condition_number_R": sol.condition_number_R,
            "condition_number_kmm_jitter": sol.condition_number_kmm_jitter,
            "n_zero_rows": sol.n_zero_rows,  # exactly zero design rows, left out
            "wall_time_s": time.perf_counter() - t_start,
            "cpu_time_s": time.process_time() - cpu_start,
            "log_marginal_likelihood": self.log_marginal_likelihood_,
            # how e0 and the sparse points were chosen, for `gapkit info` and refits
            "e0_method": self.e0 if isinstance(self.e0, str) else "given",
            "random_state": self.random_state,
        }
        return self

    def _labels(self, frames):
        """The labels the GP fits: the reference labels minus the baselines."""
        labels = check_label_keys(frames, get_all_labels(frames, **self.keys), self.use, self.keys)
        return subtract_baselines(self.baselines, frames, labels)

    # ------------------------------------------------------- hyper-parameters
    def training_data(self, frames) -> TrainingData:
        """``frames`` (this model's training set) as the passes over the training data
        (:func:`~gapkit.gp.design.design_blocks`, statistics, LOO) see them."""
        self.check_fitted()
        frames = as_frames(frames)
        labels = self._labels(frames)
        obs = build_observations(frames, labels, self.noise_, self.e0_, self.use)
        return TrainingData(frames, obs, frozenset(gradients_for(obs)))

    def design_blocks(self, data: TrainingData, *, unit: bool = False, desc=None):
        """:func:`gapkit.gp.design.design_blocks` over ``data``, this model's terms."""
        return design_blocks(self.terms_, self.sparse_sets_, data.frames, data.observations,
                             set(data.gradients), batch_atoms=self.batch_atoms, unit=unit,
                             progress=bool(desc) and self.progress, desc=desc or "")

    def _statistics(self, data: TrainingData, groups=None, n_groups=None):
        from .gp.hyperopt import collect_statistics

        return collect_statistics(self.terms_, self.sparse_sets_, data.frames,
                                  data.observations, set(data.gradients),
                                  batch_atoms=self.batch_atoms, jitter=self.jitter,
                                  groups=groups, n_groups=n_groups)

    def log_marginal_likelihood(self, frames=None, *, delta=None, noise_scale=None) -> float:
        """DTC log marginal likelihood (nats) of the training data.

        Parameters
        ----------
        frames : list of ase.Atoms or path, optional
            The training frames: evaluated without refitting from the M x M statistics of
            one pass (:mod:`gapkit.gp.hyperopt`); without, the value of the fit.
        delta : sequence of float, optional
            Per-term ``delta`` (eV) (default: the current ones).
        noise_scale : sequence of 3 float, optional
            Multipliers of the energy, force and virial noise (default 1).
        """
        self.check_fitted()
        if frames is None:
            return self.log_marginal_likelihood_
        from .gp.hyperopt import lml_from_statistics

        stats = self._statistics(self.training_data(frames))
        ld = torch.log(torch.tensor(delta if delta is not None else
                                    [float(t.kernel.delta.detach()) for t in self.terms_],
                                    dtype=self.dtype))
        ls = torch.log(torch.tensor(noise_scale if noise_scale is not None else [1.0, 1.0, 1.0],
                                    dtype=self.dtype))
        with torch.no_grad():
            return float(lml_from_statistics(stats, ld, ls))

    def optimize_hyperparameters(self, frames, *, delta: bool = True, noise: bool = True,
                                 lengthscale: bool = False, max_iter: int = 100,
                                 lengthscale_bounds=None, refit: bool = True,
                                 noise_groups: str = "kind", min_frames: int = 5) -> dict:
        """Maximise the DTC log marginal likelihood over the hyper-parameters (opt-in).

        By L-BFGS on M x M statistics (no N x N matrix; :mod:`gapkit.gp.hyperopt`).
        The sparse points stay those of the last fit.

        Parameters
        ----------
        frames : list of ase.Atoms or path
            The training frames.
        delta : bool
            Optimise each term's ``delta`` (eV), in the fitted kernels (``terms_``);
            the kernels of ``terms`` are not touched.
        noise : bool
            Optimise one multiplier per observation kind (energy, forces, virial). It is
            stored as ``self.noise_.scale`` (``noise`` as given stays) and so multiplies
            every source of sigma (defaults, config_type and per-frame values): their
            ratios are kept, and the refit uses exactly the optimised noise.
        noise_groups : {"kind", "config_type"}
            ``"config_type"``: one multiplier per kind *and* config_type (stored in
            ``self.noise_.config_type_scale``), for data whose config types are labelled
            with different accuracy; a config_type with observations of a kind from
            fewer than ``min_frames`` frames shares its kind's multiplier.
        min_frames : int
            See ``noise_groups``.
        lengthscale, lengthscale_bounds : bool, (float, float)
            Also the length scale (Å) shared by the two-body (else ``SEKernel``) terms
            (:func:`gapkit.gp.hyperopt.search_lengthscale`: its bounds and search).
        max_iter, refit : int, bool
            L-BFGS iterations; refit with the optimised hyper-parameters.

        Returns
        -------
        dict
            ``log_marginal_likelihood_before``/``_after`` (and ``_refit``), ``delta``,
            ``noise`` (the new noise model as a dict), ``noise_scale`` (the multipliers
            this call found) and, with ``lengthscale``, ``lengthscale`` and
            ``lengthscale_before``; with ``noise_groups="config_type"`` also
            ``config_type_scale`` and ``noise_groups`` (the groups and their frames).
        """
        from .gp.hyperopt import (lengthscale_kernels, lml_from_statistics, optimize,
                                  search_lengthscale, split_factors)
        from .gp.hyperopt import noise_groups as group_rows

        self.check_fitted()
        if noise_groups not in ("kind", "config_type"):
            raise ValueError(f"noise_groups must be 'kind' or 'config_type', got "
                             f"{noise_groups!r}")
        data = self.training_data(frames)
        ld0 = np.log([float(t.kernel.delta.detach()) for t in self.terms_])
        groups, group_names = None, [(kind, None) for kind in KINDS]
        if noise_groups == "config_type":
            groups, group_names = group_rows(data.observations, min_frames)
        ls0 = np.zeros(len(group_names))

        def inner():
            stats = self._statistics(data, groups, len(group_names))
            with torch.no_grad():
                start = float(lml_from_statistics(stats, torch.as_tensor(ld0),
                                                  torch.as_tensor(ls0)))
            ld, ls, value = optimize(stats, ld0, ls0, fit_delta=delta, fit_noise=noise,
                                     max_iter=max_iter)
            return start, ld, ls, value

        scaled = lengthscale_kernels([t.kernel for t in self.terms_])
        theta0 = None
        if lengthscale:
            theta0, first, (_, ld, ls, value) = search_lengthscale(scaled, inner,
                                                                   lengthscale_bounds)
            start = first[0]
        else:
            start, ld, ls, value = inner()
        for t, v in zip(self.terms_, ld):
            t.kernel.delta = float(np.exp(v))
        per_group = np.exp(ls)
        factors, ct_factor = split_factors(group_names, per_group)
        # the one place the noise multipliers live: NoiseModel.sigmas applies them
        self.noise_ = self.noise_.rescaled(factors).rescaled_config_types(ct_factor)
        report = {"log_marginal_likelihood_before": start, "log_marginal_likelihood_after": value,
                  "delta": [float(np.exp(v)) for v in ld], "noise": self.noise_.to_dict(),
                  "noise_scale": factors.tolist()}
        if noise_groups == "config_type":
            report["config_type_scale"] = ct_factor
            report["noise_groups"] = [{"kind": kind, "config_type": ct,
                                       "factor": float(f)}
                                      for (kind, ct), f in zip(group_names, per_group)]
        if lengthscale:
            report["lengthscale"] = float(scaled[0].lengthscale.detach().reshape(()))
            report["lengthscale_before"] = theta0
        if refit:
            self._fit(data.frames, kernels=[t.kernel for t in self.terms_], noise=self.noise_)
            report["log_marginal_likelihood_refit"] = self.log_marginal_likelihood_
        return report

    def cross_validate_noise(self, frames, *, n_folds: int = 5, refit: bool = True,
                             **grid) -> dict:
        """Choose the energy and virial noise by K-fold cross-validation over frames
        (:mod:`gapkit.gp.cv`: folds by config_type, seeded by ``random_state``; energy x
        virial multipliers, sigma_F fixing the scale; ``grid`` overrides ``energy_factors``,
        ``virial_factors`` or adds ``force_factors``; scored by the held-out E and F MAE).
        The choice becomes ``noise_`` (``noise`` stays) and, with ``refit``, is refitted
        from the fold statistics (no pass over the data), with the calibrated predictive
        variance (``predictive_``). Returns the report (also ``fit_info_["noise_cv"]``):
        ``factors``, ``sigma_*``, ``table`` (every point tried), ``n_folds``, ``note``."""
        from .gp.cv import cross_validated_noise

        self.check_fitted()
        data = self.training_data(frames)
        report = cross_validated_noise(
            self.terms_, self.sparse_sets_, self.U_, data, self.noise_, n_folds=n_folds,
            seed=self.random_state or 0, batch_atoms=self.batch_atoms,
            progress=self.progress, jitter_absolute=self.jitter_absolute_, **grid)
        self.noise_ = self.noise_.rescaled(report["factors"])
        sol = report.pop("solution", None)  # the fit at that noise, from the fold statistics
        if refit and sol is not None:
            deferred = self.alpha_ is None  # the fit left its solve to this closed form
            self.alpha_, self.R_ = sol.alpha, sol.R
            self.log_marginal_likelihood_ = sol.log_marginal_likelihood
            self.fit_info_.update(log_marginal_likelihood=sol.log_marginal_likelihood,
                                  condition_number_R=sol.condition_number_R,
                                  **({"n_zero_rows": sol.n_zero_rows} if deferred else {}))
            if deferred and sol.symmetry_violations:
                warn_symmetry(sol.symmetry_violations, stacklevel=3)
            if any(report["predictive"].values()):  # fitted at the noise refitted with
                self.predictive_ = report["predictive"]
        self.fit_info_["noise_cv"] = report
        return report

    # -------------------------------------------------------------- predict
    def check_fitted(self) -> None:
        """Raise RuntimeError (saying what to do) unless the model is fitted or loaded."""
        if not hasattr(self, "alpha_"):
            raise RuntimeError("this GAP is not fitted yet; call fit(frames) or GAP.load(path)")

    _check_fitted = check_fitted  # the name before 0.2

    def predict(self, frames, *, forces: bool = True, virial: bool | None = None,
                return_variance: bool = True, forces_variance: str | None = "exact",
                calibrated: bool = True, variance=UNSET, force_variance=UNSET, client=None,
                n_workers: int | None = None) -> Prediction:
        """Posterior mean and variance of energies, forces, virials and local energies.

        Means: forces and virials are the exact derivatives of the predicted
        energy (the gradient of the GP mean, contracted with the descriptor
        gradients). Variances are of the latent (noise-free) quantities, from the
        fitted factors (:mod:`gapkit.gp.posterior` gives the formulas):

        * total and local energies use the DTC form
          ``var = k** - |U^-T k*|^2 + |R^-T k*|^2`` with the exact prior
          variance ``k**`` (sum of the kernel over all pairs of the frame's centres);
        * force components use, by default (``forces_variance="exact"``), the same
          DTC form with the exact ``k**`` from second kernel derivatives (batched
          over atoms; cost linear in the number of atoms), or the *projected* form
          ``|R^-T k*|^2`` (``forces_variance="projected"``: ``k**`` replaced by its
          Nyström projection ``k*^T K_MM^-1 k*``; it ignores what the sparse set cannot
          represent and is much too small on real data, though it ranks errors well;
          benchmarks/README.md has the figures), or none with ``forces_variance=None``;
        * virials use the projected form (with force variances).

        Those are the ``*_latent_variance`` fields. After the default fit (noise by
        cross-validation) the model has a predictive-variance calibration (``predictive_``,
        :mod:`gapkit.gp.predictive`): ``energy_variance``, ``forces_variance`` (exact form)
        and ``virial_variance`` are then the calibrated variances of a new label.

        Parameters
        ----------
        frames : list of ase.Atoms, ase.Atoms or path
        forces : bool
        virial : bool, optional
            Predict virials (default: when every frame is periodic in 3D).
        return_variance : bool
            Compute variances (energies and local energies; forces and virials
            unless ``forces_variance`` is None).
        forces_variance : {"exact", "projected", None}
            Which force variance (above).
        calibrated : bool (apply the model's predictive-variance calibration, if any)
        variance, force_variance
            The names of ``return_variance`` and ``forces_variance`` before 0.2
            (DeprecationWarning; removed in 0.3). Returns a :class:`Prediction`.
        client, n_workers
            Predict on Dask workers, as :meth:`fit` (partitions of the frames).
        """
        return_variance = renamed(variance, return_variance, "variance", "return_variance",
                                  "GAP.predict")
        forces_variance = renamed(force_variance, forces_variance, "force_variance",
                                  "forces_variance", "GAP.predict")
        self.check_fitted()
        if forces_variance not in ("projected", "exact", None):
            raise ValueError("forces_variance must be 'projected', 'exact' or None")
        frames = as_frames(frames, lazy=client is not None or bool(n_workers))
        check_species(frames, self.species_)
        if virial is None:
            virial = all(bool(np.all(a.pbc)) for a in frames)
        b_results = None
        if self.baselines:  # first: evaluate checks every frame before the heavy work
            b_results = _evaluate_baselines(self.baselines, frames, forces=forces, virial=virial)
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])]).astype(np.int64)
        with dask_passes(client, n_workers, progress=self.progress):
            arrays = posterior.predict_frames(
                self.terms_, self.sparse_sets_, self.alpha_, self.R_, self.U_, frames,
                batch_atoms=self.batch_atoms, forces=forces, virial=virial,
                return_variance=return_variance, forces_variance=forces_variance,
                progress=self.progress)
        energy = arrays["energy"] + baseline_energies(frames, self.e0_)
        local = arrays["local_energy"] + np.array([self.e0_[int(z)] for a in frames
                                                   for z in a.numbers])
        f_out, v_out = arrays["forces"], arrays["virial"]
        b_energy = None if b_results is None else np.array([r.energy for r in b_results])
        if b_results:  # the baselines' share, added to every mean
            energy += b_energy
            local += np.concatenate([res.energies for res in b_results])
            if forces:
                f_out += np.concatenate([res.forces for res in b_results])
            if virial:
                v_out += np.stack([res.virial for res in b_results])
        forms = {"energy": "dtc", "local_energy": "dtc"} if return_variance else {}
        if return_variance and forces_variance is not None:
            forms.update(forces="dtc" if forces_variance == "exact" else "projected",
                         virial="projected")
        apply_predictive(getattr(self, "predictive_", None) if calibrated else None,
                         arrays, forms)
        return Prediction(energy=energy, forces=f_out, virial=v_out, local_energy=local,
                          atom_offsets=offsets, variance_form=forms, baseline_energy=b_energy,
                          **{k: v for k, v in arrays.items() if k.endswith("variance")})

    # ------------------------------------------------------------- save/load
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the fitted model to ``path`` (:mod:`gapkit.io`: a zip of JSON metadata and
        .npy arrays, pickle-free); refuses to overwrite an existing file unless asked."""
        self.check_fitted()
        return _io.write_model(path, {**self.get_params(), "terms": self.terms_,
                                      "noise": self.noise_},
                               self._fitted_state(), overwrite=overwrite)

    def export(self, path, *, overwrite: bool = False) -> Path:
        """Write a metatomic model for LAMMPS, i-PI and ASE (:func:`gapkit.export.export`)."""
        from .export import export
        return export(self, path, overwrite=overwrite)

    def _fitted_state(self) -> dict:
        return {"species": self.species_, "e0": self.e0_,
                "jitter_absolute": self.jitter_absolute_, "alpha": self.alpha_, "R": self.R_,
                "U": self.U_, "sparse_sets": self.sparse_sets_, "fit_info": self.fit_info_,
                "recalibration": getattr(self, "recalibration_", None),
                "predictive": getattr(self, "predictive_", None)}

    @classmethod
    def load(cls, path) -> "GAP":
        """Read a model written by :meth:`save` (:func:`gapkit.io.read_model`); a
        corrupted, truncated or newer file raises ValueError with the reason. Loading
        never executes code from the file."""
        params, state = _io.read_model(path)
        model = cls(**{**params, "terms": [copy.copy(t) for t in params["terms"]]},
                    progress=False)
        model.terms_, model.noise_ = params["terms"], params["noise"]
        model.sparse_sets_, model.species_ = state["sparse_sets"], state["species"]
        model.e0_, model.jitter_absolute_ = state["e0"], state["jitter_absolute"]
        model.alpha_, model.R_, model.U_ = state["alpha"], state["R"], state["U"]
        model.fit_info_ = state["fit_info"]
        for name in ("recalibration", "predictive"):
            if state.get(name):
                setattr(model, name + "_", state[name])
        model.log_marginal_likelihood_ = state["fit_info"].get("log_marginal_likelihood")
        return model

    @classmethod
    def from_config(cls, config: dict, *, base_dir=None, progress: bool = True):
        """``(model, train_path, output_path)`` from a config dict (the TOML layout of
        :mod:`gapkit.cli`): an unfitted GAP, the paths (None where the config has none;
        relative to ``base_dir``). Raises :class:`gapkit.io.ConfigError` naming the key."""
        cfg = _io.from_config(config, base_dir=base_dir)
        try:
            model = cls(**cfg.params, progress=progress)
        except (TypeError, ValueError) as err:
            raise _io.ConfigError(f"the config: {err}") from None
        return model, cfg.train, cfg.output

    def to_config(self, *, train=None, output=None) -> dict:
        """The settings as a config dict (:func:`gapkit.io.to_config`)."""
        return _io.to_config(self, train=train, output=output)


warnings.filterwarnings("default", category=UserWarning, module=__name__)
