"""The GAP model: fit a sparse GP on energies, forces and virials; predict with variances."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import get_all_labels
from .descriptors import SOAP, SymmetryFunctions, TwoBody
from .gp.design import SparseSet, functional_rows, gather_rows, type_mask
from .gp.observations import VOIGT, NoiseModel, baseline_energies, build_observations, fit_e0
from .gp.sparse import IncrementalQR, cholesky_upper, dtc_log_marginal_likelihood
from .kernels import SEKernel, SOAPKernel, TwoBodyKernel
from .ntk import NTKKernel

__all__ = ["GAP", "Term", "Prediction", "FORMAT_VERSION"]

#: newest version of the model file format that :meth:`GAP.save` writes and
#: :meth:`GAP.load` reads. Version 2 adds physics baselines (``"baselines"``); a model
#: without them is written as version 1, which older gapkit versions still read.
FORMAT_VERSION = 2
_FORMAT = "gapkit.model"
_DESCRIPTORS = {"SOAP": SOAP, "TwoBody": TwoBody, "SymmetryFunctions": SymmetryFunctions}
_KERNELS = {"SOAPKernel": SOAPKernel, "TwoBodyKernel": TwoBodyKernel, "NTKKernel": NTKKernel,
            "SEKernel": SEKernel}


@dataclass
class Term:
    """One additive term of the local energy: a descriptor, its kernel, its sparse points.

    Parameters
    ----------
    descriptor : SOAP or TwoBody
    kernel : SOAPKernel, TwoBodyKernel, NTKKernel or str
        A kernel object, or a name for one with default settings: ``"soap"``,
        ``"ntk"`` or ``"twobody"`` (see :func:`gapkit.ntk.make_kernel`).
    n_sparse : int, dict or "all"
        Number of sparse points (or ``{type: count}``); split over kernel types
        (central species for SOAP, species pairs for two-body) in proportion to
        their number of environments. ``"all"``: every distinct training
        environment (the exact-GP limit; for small data).
    sparse_method : {"cur", "fps", "random", "uniform"}
        How sparse points are chosen ("uniform": an even grid, for two-body).
    sparse_options : dict, optional
        Passed to :func:`gapkit.gp.sparsify.sparse_points`. For "cur" the default
        is ``cur_mode="sample"``: rows drawn with probability proportional to their
        leverage (seeded by ``GAP(random_state=...)``), as gap_fit's ``cur_points``.
        On the Zuo Si benchmark it gave test force MAEs of 0.0687-0.069 eV/Å over two
        seeds against 0.0718 for the deterministic top-leverage rows
        (``cur_mode="deterministic"``), which over-select outlying environments.
    """

    descriptor: object
    kernel: object
    n_sparse: int | dict | str = 500
    sparse_method: str = "cur"
    sparse_options: dict | None = None
    sparse_: SparseSet | None = field(default=None, repr=False)

    def __post_init__(self):
        # a kernel by name ("soap", "ntk", "twobody"), with default settings
        if isinstance(self.kernel, str):
            from .ntk import make_kernel  # lazy, as the NTK layer may import the model

            self.kernel = make_kernel(self.kernel)

    def to_dict(self) -> dict:
        kernel = self.kernel
        # the raw (unconstrained) scalar parameters, so that a loaded model is bit-identical
        raw = {name: float(p.detach().reshape(()))
               for name, p in kernel.named_parameters() if p.numel() == 1}
        if hasattr(kernel, "get_params"):  # NTKKernel, SEKernel: constructor keywords
            kparams = dict(kernel.get_params())
            kparams["delta"] = float(kernel.delta.detach().reshape(()))
        else:
            kparams = {"delta": float(kernel.delta.detach())}
        if isinstance(kernel, SOAPKernel):
            kparams["zeta"] = kernel.zeta
        if isinstance(kernel, TwoBodyKernel):
            kparams.update(cutoff=kernel.cutoff_fn.cutoff, cutoff_width=kernel.cutoff_fn.width,
                           lengthscale=float(kernel.lengthscale.detach().reshape(())))
        return {"descriptor": {"type": type(self.descriptor).__name__,
                               "params": self.descriptor.get_params()},
                "kernel": {"type": type(kernel).__name__, "params": kparams, "raw": raw},
                "n_sparse": self.n_sparse, "sparse_method": self.sparse_method,
                "sparse_options": self.sparse_options}


@dataclass
class Prediction:
    """Posterior predictions for a list of frames (numpy arrays, ASE units).

    Attributes
    ----------
    energy, energy_variance : (n_frames,)
        Total energy (eV) and its posterior variance (eV^2).
    forces, forces_variance : (n_atoms_total, 3)
        Forces (eV/Å) and the variance of each component (eV^2/Å^2).
    virial, virial_variance : (n_frames, 3, 3)
        Virial ``-dE/d epsilon`` (eV) and its variance (eV^2), or None.
    local_energy, local_energy_variance : (n_atoms_total,)
        Per-atom energies (eV, e0 included) and their variances (eV^2).
    atom_offsets : (n_frames + 1,)
        Start of each frame in the per-atom arrays.
    variance_form : dict
        Which formula each variance used ("dtc" or "projected"; see GAP.predict).
    baseline_energy : (n_frames,) or None
        The part of ``energy`` from the model's physics baselines (eV; included in
        ``energy``, ``forces``, ``virial`` and ``local_energy``); None without baselines.
    """

    energy: np.ndarray
    forces: np.ndarray | None
    virial: np.ndarray | None
    local_energy: np.ndarray
    atom_offsets: np.ndarray
    energy_variance: np.ndarray | None = None
    forces_variance: np.ndarray | None = None
    virial_variance: np.ndarray | None = None
    local_energy_variance: np.ndarray | None = None
    variance_form: dict = field(default_factory=dict)
    baseline_energy: np.ndarray | None = None

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.atom_offsets)

    @property
    def energy_per_atom(self) -> np.ndarray:
        """eV/atom."""
        return self.energy / self.n_atoms

    def frame_forces(self, k: int) -> np.ndarray:
        return self.forces[self.atom_offsets[k]:self.atom_offsets[k + 1]]


def _default_terms() -> list[Term]:
    return [Term(SOAP(cutoff=5.0, cutoff_width=1.0, n_max=8, l_max=6, atom_sigma=0.5),
                 SOAPKernel(zeta=4, delta=1.0), n_sparse=500, sparse_method="cur")]


class GAP:
    """Gaussian Approximation Potential: a sparse GP on energies, forces and virials.

    The local energy is a sum of terms (e.g. two-body + SOAP, as gap_fit's
    ``distance_2b ... : soap ...``), each ``eps_d(q) = sum_m alpha_m k_d(q, z_m)``
    over its sparse points, on top of per-species offsets ``e0`` and optional fixed
    physics baselines: ``E = sum_i e0[s_i] + sum_d sum_c eps_d(q_c) + E_baselines``.
    Fitting is the projected-process (DTC) solve of :mod:`gapkit.gp.sparse`, streamed
    over blocks of frames.

    Parameters
    ----------
    terms : list of Term, optional
        Default: one SOAP term (cutoff 5 Å, width 1 Å, n_max 8, l_max 6,
        atom_sigma 0.5 Å, zeta 4, delta 1 eV, 500 CUR sparse points).
    noise : NoiseModel
        Observation noise (energy eV/atom, forces eV/Å, virial eV/atom, per
        config_type and per frame).
    e0 : "least_squares", "isolated", "zero" or dict
        Per-species energy offsets (see :func:`gapkit.gp.fit_e0`).
    jitter : float
        Added to the diagonal of K_MM, relative to its mean diagonal.
    use : sequence of {"energy", "forces", "virial"}
        Which labels to fit (all present ones by default).
    energy_key, forces_key, virial_key, stress_key, config_type_key : str
        extxyz keys, as gap_fit's ``energy_parameter_name`` etc.
    batch_atoms : int
        Atoms per streamed block (memory vs speed).
    random_state : int
        Seed of sparse-point selection; fits are deterministic.
    progress : bool
        Progress bars on descriptors and design-matrix assembly.
    baselines : Baseline or list of Baseline, optional
        Physics terms (:mod:`gapkit.baselines`: core repulsion, Ewald or Coulomb
        electrostatics, a pair potential) whose energies, forces and virials are
        subtracted from the labels before the fit, so that the GP learns the
        residual, and added back to every prediction (and so to
        :class:`GAPCalculator`). Their parameters are fixed, not fitted; the
        posterior variances are those of the GP part.
    """

    def __init__(self, terms: Sequence[Term] | None = None, *, noise: NoiseModel | None = None,
                 e0="least_squares", jitter: float = 1e-8,
                 use: Sequence[str] = ("energy", "forces", "virial"),
                 energy_key: str = "energy", forces_key: str = "forces",
                 virial_key: str = "virial", stress_key: str = "stress",
                 config_type_key: str = "config_type", batch_atoms: int = 256,
                 random_state: int = 0, progress: bool = True, baselines=None):
        self.terms = list(terms) if terms is not None else _default_terms()
        if not self.terms:
            raise ValueError("a GAP needs at least one term")
        for t in self.terms:
            if not isinstance(t, Term):
                raise TypeError(f"terms must be gapkit.Term objects, got {type(t).__name__}")
        self.noise = noise if noise is not None else NoiseModel()
        self.e0 = e0
        if not (jitter >= 0 and math.isfinite(jitter)):
            raise ValueError(f"jitter must be >= 0, got {jitter!r}")
        self.jitter = float(jitter)
        self.use = tuple(use)
        self.keys = dict(energy_key=energy_key, forces_key=forces_key, virial_key=virial_key,
                         stress_key=stress_key, config_type_key=config_type_key)
        self.batch_atoms = int(batch_atoms)
        self.random_state = random_state
        self.progress = progress
        self.baselines = _as_baselines(baselines)
        self.dtype = torch.float64

    # ------------------------------------------------------------------ fit
    def _progress(self, iterable, desc, total=None):
        if not self.progress:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False)

    def _blocks(self, frames):
        start, count = 0, 0
        for k, atoms in enumerate(frames):
            if count and count + len(atoms) > self.batch_atoms:
                yield start, k
                start, count = k, 0
            count += len(atoms)
        if start < len(frames):
            yield start, len(frames)

    def fit(self, frames) -> "GAP":
        """Fit on ``frames`` (list of ase.Atoms, or an extxyz path) and return ``self``.

        Frames may lack some labels: whatever energies, forces and virials are
        present (and in ``use``) are fitted. Raises ValueError if nothing is.
        """
        from .gp.sparsify import sparse_points

        t_start = time.perf_counter()
        cpu_start = time.process_time()
        frames = self._read(frames)
        self.__dict__.pop("recalibration_", None)  # a recalibration belongs to one fit
        labels = self._labels(frames)
        species = sorted({int(z) for a in frames for z in np.unique(a.numbers)})
        self.species_ = species
        self.terms_ = [self._fixed_term(t, species) for t in self.terms]
        self.e0_ = fit_e0(frames, labels, self.e0, species)
        obs = build_observations(frames, labels, self.noise, self.e0_, self.use)
        kinds = set(np.unique(obs.kind).tolist())
        grads = {"positions"} if 1 in kinds else set()
        if 2 in kinds:
            grads.add("strain")

        # sparse points: descriptor values of every environment
        for i, term in enumerate(self.terms_):
            res = term.descriptor.compute(frames)
            n_sparse = term.n_sparse
            if n_sparse == "all":
                types_, counts = np.unique(res.centre_types, return_counts=True)
                n_sparse = {int(t): int(c) for t, c in zip(types_, counts)}
            elif isinstance(n_sparse, str):
                raise ValueError(f"n_sparse must be an int, a dict or 'all', got {n_sparse!r}")
            with warnings.catch_warnings():
                if term.n_sparse == "all":  # duplicates are dropped, silently here
                    warnings.simplefilter("ignore", UserWarning)
                options = dict(term.sparse_options or {})
                if term.sparse_method == "cur":
                    options.setdefault("cur_mode", "sample")
                points, types, _ = sparse_points(
                    res.values, n_sparse, method=term.sparse_method, types=res.centre_types,
                    random_state=None if self.random_state is None else self.random_state + i,
                    **options)
            term.sparse_ = SparseSet(torch.as_tensor(points, dtype=self.dtype),
                                     torch.as_tensor(types))
        kmm = self._kmm()
        u, self.jitter_abs_ = cholesky_upper(kmm, self.jitter)

        qr = IncrementalQR(u)
        for _, _, block_obs, rows in self._design_blocks(frames, obs, grads,
                                                         desc="GAP design matrix"):
            qr.add(rows, torch.as_tensor(block_obs.y), torch.as_tensor(block_obs.sigma))
        r, b, resid = qr.finish()
        self.alpha_ = torch.linalg.solve_triangular(r, b[:, None], upper=True)[:, 0]
        self.R_, self.U_ = r, u
        self.log_marginal_likelihood_ = dtc_log_marginal_likelihood(
            r, u, resid, qr.sum_log_sigma, qr.n_rows)
        sv = torch.linalg.svdvals(r)
        svu = torch.linalg.svdvals(u)
        self.fit_info_ = {
            "n_frames": len(frames), "n_observations": obs.counts(),
            "n_sparse": [t.sparse_.n for t in self.terms_],
            # what the triangular solves see: cond(R), and cond(K_MM + jitter) = cond(U)^2
            "condition_number_R": float(sv[0] / sv[-1]),
            "condition_number_kmm_jitter": float((svu[0] / svu[-1]) ** 2),
            "wall_time_s": time.perf_counter() - t_start,
            "cpu_time_s": time.process_time() - cpu_start,
            "log_marginal_likelihood": self.log_marginal_likelihood_,
            # how e0 and the sparse points were chosen, for `gapkit info` and refits
            "e0_method": self.e0 if isinstance(self.e0, str) else "given",
            "random_state": self.random_state,
        }
        return self

    def _read(self, frames):
        from ase import Atoms

        if isinstance(frames, (str, Path)):
            from .data import read_extxyz

            return read_extxyz(frames)
        if isinstance(frames, Atoms):
            return [frames]
        return list(frames)

    def _labels(self, frames):
        """The labels the GP fits: the reference labels minus the baselines."""
        labels = get_all_labels(frames, **self.keys)
        if not self.baselines:
            return labels
        from .baselines import evaluate

        out = []
        results = evaluate(self.baselines, frames,
                           forces=any(lab.forces is not None for lab in labels),
                           virial=any(lab.virial is not None for lab in labels))
        for lab, res in zip(labels, results):
            out.append(dataclasses.replace(
                lab,
                energy=None if lab.energy is None else lab.energy - res.energy,
                forces=None if lab.forces is None else lab.forces - res.forces,
                virial=None if lab.virial is None else lab.virial - res.virial))
        return out

    def _fixed_term(self, term: Term, species) -> Term:
        """A copy of ``term`` whose descriptor knows the training species."""
        desc = term.descriptor
        params = desc.get_params()
        if params.get("species") is None:
            params["species"] = list(species)
        else:
            missing = sorted(set(species) - set(params["species"]))
            if missing:
                raise ValueError(f"the training data contains species {missing} that the "
                                 f"descriptor's fixed species {params['species']} lacks")
        new_desc = type(desc)(**params)
        new_desc.progress = bool(self.progress)  # a bar only when a call spans several batches
        return Term(new_desc, term.kernel, term.n_sparse, term.sparse_method,
                    term.sparse_options)

    def _kmm(self) -> torch.Tensor:
        blocks = []
        for term in self.terms_:
            z = term.sparse_
            k = term.kernel.value(z.points, z.points) * type_mask(z.types, z.types, self.dtype)
            blocks.append(k.detach())
        return torch.block_diag(*blocks)

    def _term_rows(self, frames, gradients, *, energy, forces, virial, local, unit=False):
        """Per-term functional rows for ``frames`` (one block)."""
        out = []
        for term in self.terms_:
            res = term.descriptor.compute(frames, gradients=sorted(gradients) or False)
            with torch.no_grad():
                out.append((res, functional_rows(term.kernel, res, term.sparse_, energy=energy,
                                                 forces=forces, virial=virial, local=local,
                                                 unit=unit)))
        return out

    def _design_blocks(self, frames, obs, gradients, *, unit: bool = False, desc=None):
        """Yield ``(start, sel, block_obs, rows)`` over blocks of frames: the first frame
        of the block, the indices of its observations in ``obs``, those observations
        (frame indices relative to the block) and their design-matrix rows."""
        blocks = list(self._blocks(frames))
        if desc:
            blocks = self._progress(blocks, desc)
        for start, stop in blocks:
            sel = np.nonzero((obs.frame >= start) & (obs.frame < stop))[0]
            if sel.size == 0:
                continue
            sub = obs.select(sel)
            sub = type(sub)(sub.frame - start, sub.kind, sub.atom, sub.component, sub.y,
                            sub.sigma)
            yield start, sel, sub, self._rows(frames[start:stop], sub, gradients, unit=unit)

    def _rows(self, frames, obs, gradients, unit: bool = False) -> torch.Tensor:
        kinds = set(np.unique(obs.kind).tolist())
        per_term = self._term_rows(frames, gradients, energy=0 in kinds, forces=1 in kinds,
                                   virial=2 in kinds, local=False, unit=unit)
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
        return torch.cat([gather_rows(blocks, obs, offsets) for _, blocks in per_term], dim=1)

    # ------------------------------------------------------- hyper-parameters
    def _training_setup(self, frames):
        frames = self._read(frames)
        labels = self._labels(frames)
        obs = build_observations(frames, labels, self.noise, self.e0_, self.use)
        kinds = set(np.unique(obs.kind).tolist())
        grads = {"positions"} if 1 in kinds else set()
        if 2 in kinds:
            grads.add("strain")
        return frames, obs, grads

    def log_marginal_likelihood(self, frames=None, *, delta=None, noise_scale=None) -> float:
        """DTC log marginal likelihood (nats) of the training data.

        Without arguments: the value at the fitted hyper-parameters (from the QR
        factors). With ``frames`` and per-term ``delta`` (eV) and/or
        ``noise_scale`` (multipliers of the energy, force and virial noise), it is
        evaluated from M x M statistics of one pass over ``frames`` (see
        :mod:`gapkit.gp.hyperopt`) without refitting.
        """
        self._check_fitted()
        if frames is None:
            return self.log_marginal_likelihood_
        from .gp.hyperopt import collect_statistics, lml_from_statistics

        frames, obs, grads = self._training_setup(frames)
        stats = collect_statistics(self, frames, obs, grads)
        ld = torch.log(torch.tensor(delta if delta is not None else
                                    [float(t.kernel.delta.detach()) for t in self.terms_],
                                    dtype=self.dtype))
        ls = torch.log(torch.tensor(noise_scale if noise_scale is not None else [1.0, 1.0, 1.0],
                                    dtype=self.dtype))
        with torch.no_grad():
            return float(lml_from_statistics(stats, ld, ls))

    def optimize_hyperparameters(self, frames, *, delta: bool = True, noise: bool = True,
                                 lengthscale: bool = False, max_iter: int = 100,
                                 lengthscale_bounds=None, refit: bool = True) -> dict:
        """Maximise the DTC log marginal likelihood over the hyper-parameters (opt-in).

        Optimises each term's ``delta`` (eV) and one multiplier per observation
        kind on the noise model (``energy``, ``forces``, ``virial``: config_type
        and per-frame ratios are kept), by L-BFGS on M x M statistics (no N x N
        matrix); with ``lengthscale=True`` also the length scale of the two-body
        terms (Å; ``lengthscale_bounds`` default (0.05, 5)) or, without them, of the
        ``SEKernel`` terms (default bounds: a factor 10 either side of the current
        value), one value shared by those terms, by a bounded scalar search in its
        logarithm with one pass over the data per evaluation.
        The sparse points stay those of the last fit. Updates the kernels and
        ``self.noise``, refits when ``refit`` and returns a report with the
        likelihood before and after.
        """
        from dataclasses import replace

        from scipy.optimize import minimize_scalar

        from .gp.hyperopt import collect_statistics, lml_from_statistics, optimize

        self._check_fitted()
        frames, obs, grads = self._training_setup(frames)
        ld0 = np.log([float(t.kernel.delta.detach()) for t in self.terms_])
        ls0 = np.zeros(3)

        def inner():
            stats = collect_statistics(self, frames, obs, grads)
            with torch.no_grad():
                start = float(lml_from_statistics(stats, torch.as_tensor(ld0),
                                                  torch.as_tensor(ls0)))
            ld, ls, value = optimize(stats, ld0, ls0, fit_delta=delta, fit_noise=noise,
                                     max_iter=max_iter)
            return start, ld, ls, value

        two_body = [t for t in self.terms_ if isinstance(t.kernel, TwoBodyKernel)]
        if not two_body:  # the squared-exponential kernels of e.g. symmetry functions
            two_body = [t for t in self.terms_ if isinstance(t.kernel, SEKernel)]
        theta0 = None
        if lengthscale:
            if not two_body:
                raise ValueError("lengthscale=True needs a term with a TwoBodyKernel or an "
                                 "SEKernel")
            theta0 = float(two_body[0].kernel.lengthscale.detach().reshape(()))
            if lengthscale_bounds is None:
                lengthscale_bounds = ((0.05, 5.0) if isinstance(two_body[0].kernel,
                                                                TwoBodyKernel)
                                      else (theta0 / 10, theta0 * 10))
            cache = {}

            def objective(log_theta):
                for t in two_body:
                    t.kernel.lengthscale = torch.tensor(math.exp(log_theta), dtype=self.dtype)
                cache[log_theta] = inner()
                return -cache[log_theta][3]

            first = objective(math.log(theta0))
            res = minimize_scalar(objective, bounds=tuple(np.log(lengthscale_bounds)),
                                  method="bounded", options={"xatol": 1e-2, "maxiter": 20})
            best = res.x if -res.fun > -first else math.log(theta0)
            for t in two_body:
                t.kernel.lengthscale = torch.tensor(math.exp(best), dtype=self.dtype)
            start = cache[math.log(theta0)][0]
            _, ld, ls, value = cache[best]
        else:
            start, ld, ls, value = inner()
        for t, v in zip(self.terms_, ld):
            t.kernel.delta = float(np.exp(v))
        for t_user, t in zip(self.terms, self.terms_):
            t_user.kernel = t.kernel
        scale = np.exp(ls)
        cfg = {ct: {k: v * scale[("energy", "forces", "virial").index(k)] for k, v in over.items()}
               for ct, over in self.noise.config_type.items()}
        self.noise = replace(self.noise, energy=self.noise.energy * scale[0],
                             forces=self.noise.forces * scale[1],
                             virial=self.noise.virial * scale[2], config_type=cfg)
        report = {"log_marginal_likelihood_before": start, "log_marginal_likelihood_after": value,
                  "delta": [float(np.exp(v)) for v in ld], "noise": self.noise.to_dict(),
                  "noise_scale": scale.tolist()}
        if lengthscale:
            report["lengthscale"] = float(two_body[0].kernel.lengthscale.detach().reshape(()))
            report["lengthscale_before"] = theta0
        if refit:
            self.fit(frames)
            report["log_marginal_likelihood_refit"] = self.log_marginal_likelihood_
        return report

    # -------------------------------------------------------------- predict
    def _check_fitted(self):
        if not hasattr(self, "alpha_"):
            raise RuntimeError("this GAP is not fitted yet; call fit(frames) or GAP.load(path)")

    def predict(self, frames, *, forces: bool = True, virial: bool | None = None,
                variance: bool = True, force_variance: str | None = "exact") -> Prediction:
        """Posterior mean and variance of energies, forces, virials and local energies.

        Means: forces and virials are the exact derivatives of the predicted
        energy (the gradient of the GP mean, contracted with the descriptor
        gradients). Variances are of the latent (noise-free) quantities, from the
        fitted R factor:

        * total and local energies use the DTC form
          ``var = k** - |U^-T k*|^2 + |R^-T k*|^2`` with the exact prior
          variance ``k**`` (sum of the kernel over all pairs of the frame's centres);
        * force components use, by default (``force_variance="exact"``), the same
          DTC form with the exact ``k**`` from second kernel derivatives (batched
          over atoms; cost linear in the number of atoms, about 1.2-1.5x the
          projected form), or the *projected* form ``|R^-T k*|^2``
          (``force_variance="projected"``: ``k**`` replaced by its Nyström
          projection ``k*^T K_MM^-1 k*``; it ignores what the sparse set cannot
          represent and is typically 30-200x too small on real data, though it ranks
          errors well), or none with ``force_variance=None``;
        * virials use the projected form (with force variances).

        Parameters
        ----------
        frames : list of ase.Atoms
        forces : bool
            Predict forces.
        virial : bool, optional
            Predict virials (default: when every frame is periodic in 3D).
        variance : bool
            Compute variances (energies and local energies; forces and virials
            unless ``force_variance`` is None).
        force_variance : {"exact", "projected", None}
        """
        self._check_fitted()
        if force_variance not in ("projected", "exact", None):
            raise ValueError("force_variance must be 'projected', 'exact' or None")
        frames = self._read(frames)
        self._check_species(frames)
        if virial is None:
            virial = all(bool(np.all(a.pbc)) for a in frames)
        b_results = None
        if self.baselines:  # first: evaluate checks every frame before the heavy work
            from .baselines import evaluate

            b_results = evaluate(self.baselines, frames, forces=forces, virial=virial)
        want_fvar = variance and force_variance is not None
        gradients = set()
        if forces:
            gradients.add("positions")
        if virial:
            gradients.add("strain")
        n_frames = len(frames)
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])]).astype(np.int64)
        energy = np.empty(n_frames)
        local = np.empty(offsets[-1])
        f_out = np.empty((offsets[-1], 3)) if forces else None
        v_out = np.empty((n_frames, 3, 3)) if virial else None
        e_var = np.empty(n_frames) if variance else None
        l_var = np.empty(offsets[-1]) if variance else None
        f_var = np.empty((offsets[-1], 3)) if (want_fvar and forces) else None
        v_var = np.empty((n_frames, 3, 3)) if (want_fvar and virial) else None
        base = baseline_energies(frames, self.e0_)
        e0_atoms = np.array([self.e0_[int(z)] for a in frames for z in a.numbers])
        alphas = torch.split(self.alpha_, [t.sparse_.n for t in self.terms_])
        blocks = list(self._blocks(frames))
        for start, stop in self._progress(blocks, "GAP predict", total=len(blocks)):
            sub = frames[start:stop]
            a0, a1 = offsets[start], offsets[stop]
            n_sub = a1 - a0
            e_rows, l_rows, f_rows, v_rows, results = [], [], [], [], []
            f_mean = torch.zeros((n_sub, 3), dtype=self.dtype)
            v_mean = torch.zeros((stop - start, 6), dtype=self.dtype)
            for term, alpha in zip(self.terms_, alphas):
                res = term.descriptor.compute(sub, gradients=sorted(gradients) or False)
                results.append(res)
                with torch.no_grad():
                    rows = functional_rows(term.kernel, res, term.sparse_, energy=True,
                                           forces=forces and want_fvar,
                                           virial=virial and want_fvar, local=True)
                    owner = torch.as_tensor(res.atom_offsets[res.centre_structure]
                                            + res.centre_atom)
                    l_rows.append(torch.zeros((n_sub, term.sparse_.n), dtype=self.dtype)
                                  .index_add_(0, owner, rows["local"]))
                    e_rows.append(rows["energy"])
                    if forces and want_fvar:
                        f_rows.append(rows["forces"])
                    if virial and want_fvar:
                        v_rows.append(rows["virial"])
                    if forces or virial:
                        fm, vm = self._derivative_means(term, alpha, res, forces, virial)
                        if forces:
                            f_mean += fm
                        if virial:
                            v_mean += vm
            erow = torch.cat(e_rows, dim=1)
            lrow = torch.cat(l_rows, dim=1)
            energy[start:stop] = (erow @ self.alpha_).numpy() + base[start:stop]
            local[a0:a1] = (lrow @ self.alpha_).numpy() + e0_atoms[a0:a1]
            if forces:
                f_out[a0:a1] = f_mean.numpy()
            if virial:
                v_out[start:stop] = _voigt_to_matrix(v_mean.numpy())
            if not variance:
                continue
            per_term = list(zip(results, [None] * len(results)))
            prior_e, prior_l = self._prior_energy_variances(per_term, stop - start, n_sub)
            e_var[start:stop] = self._dtc_variance(erow, prior_e)
            l_var[a0:a1] = self._dtc_variance(lrow, prior_l)
            if forces and want_fvar:
                fr = torch.cat(f_rows, dim=-1)
                fr = fr.reshape(-1, fr.shape[-1])
                if force_variance == "exact":
                    prior_f = self._prior_force_variances(per_term, n_sub)
                    f_var[a0:a1] = self._dtc_variance(fr, prior_f.reshape(-1)).reshape(-1, 3)
                else:
                    f_var[a0:a1] = self._projected_variance(fr).reshape(-1, 3)
            if virial and want_fvar:
                vr = torch.cat(v_rows, dim=-1)
                vr = vr.reshape(-1, vr.shape[-1])
                v_var[start:stop] = _voigt_to_matrix(
                    self._projected_variance(vr).reshape(-1, 6))
        b_energy = None
        if b_results is not None:
            b_energy = np.empty(n_frames)
            for k, res in enumerate(b_results):
                a0, a1 = offsets[k], offsets[k + 1]
                b_energy[k] = res.energy
                energy[k] += res.energy
                local[a0:a1] += res.energies
                if forces:
                    f_out[a0:a1] += res.forces
                if virial:
                    v_out[k] += res.virial
        forms = {}
        if variance:
            forms = {"energy": "dtc", "local_energy": "dtc"}
            if want_fvar:
                forms["forces"] = "dtc" if force_variance == "exact" else "projected"
                forms["virial"] = "projected"
        return Prediction(energy=energy, forces=f_out, virial=v_out, local_energy=local,
                          atom_offsets=offsets, energy_variance=e_var, forces_variance=f_var,
                          virial_variance=v_var, local_energy_variance=l_var,
                          variance_form=forms, baseline_energy=b_energy)

    def _derivative_means(self, term, alpha, res, forces, virial):
        """Forces and Voigt virials of the GP mean: -sum dq/dr . grad eps(q)."""
        q = res.torch("values", dtype=self.dtype)
        z = term.sparse_
        with torch.no_grad():
            w = type_mask(torch.as_tensor(res.centre_types), z.types, self.dtype) * alpha
            grad = term.kernel.weighted_gradient(q, z.points, w)  # (n_c, D)
            fm = vm = None
            if forces:
                g = res.torch("gradients", dtype=self.dtype)
                centre = torch.as_tensor(res.gradient_centre)
                per_entry = torch.einsum("ead,ed->ea", g, grad[centre])
                fm = torch.zeros((int(res.n_atoms.sum()), 3), dtype=self.dtype).index_add_(
                    0, torch.as_tensor(res.gradient_atom_global), per_entry, alpha=-1.0)
            if virial:
                s = res.torch("strain_gradients", dtype=self.dtype)
                w9 = torch.einsum("cabd,cd->cab", s, grad)
                a_idx = [a for a, _ in VOIGT]
                b_idx = [b for _, b in VOIGT]
                w6 = 0.5 * (w9[:, a_idx, b_idx] + w9[:, b_idx, a_idx])
                vm = torch.zeros((res.n_structures, 6), dtype=self.dtype).index_add_(
                    0, torch.as_tensor(res.centre_structure), w6, alpha=-1.0)
        return fm, vm

    def _check_species(self, frames):
        from ase.data import chemical_symbols

        known = set(self.species_)
        for k, atoms in enumerate(frames):
            unknown = sorted(set(np.unique(atoms.numbers).tolist()) - known)
            if unknown:
                names = ", ".join(chemical_symbols[z] for z in unknown)
                raise ValueError(
                    f"frame {k}: species {names} were not in the training data "
                    f"({', '.join(chemical_symbols[z] for z in self.species_)}); this model "
                    "cannot predict them. Refit with data that contains them.")

    def _projected_variance(self, rows: torch.Tensor) -> np.ndarray:
        """|R^-T k*|^2 for each row k* of ``rows`` (n, M)."""
        if rows.shape[0] == 0:
            return np.zeros(0)
        sol = torch.linalg.solve_triangular(self.R_.T, rows.T, upper=False)
        return (sol * sol).sum(0).numpy()

    def _dtc_variance(self, rows: torch.Tensor, prior: torch.Tensor) -> np.ndarray:
        """k** - |U^-T k*|^2 + |R^-T k*|^2, clipped at 0."""
        if rows.shape[0] == 0:
            return np.zeros(0)
        a = torch.linalg.solve_triangular(self.U_.T, rows.T, upper=False)
        var = prior.numpy() - (a * a).sum(0).numpy() + self._projected_variance(rows)
        return np.maximum(var, 0.0)

    def _prior_energy_variances(self, per_term, n_frames, n_atoms):
        """Exact prior variances of total energies and per-atom energies of a block."""
        e = torch.zeros(n_frames, dtype=self.dtype)
        loc = torch.zeros(n_atoms, dtype=self.dtype)
        for (res, _), term in zip(per_term, self.terms_):
            q = res.torch("values", dtype=self.dtype)
            types = torch.as_tensor(res.centre_types)
            owner = torch.as_tensor(res.atom_offsets[res.centre_structure] + res.centre_atom)
            structure = torch.as_tensor(res.centre_structure)
            with torch.no_grad():
                for k in range(n_frames):
                    idx = torch.nonzero(structure == k)[:, 0]
                    if idx.numel() == 0:
                        continue
                    kk = term.kernel.value(q[idx], q[idx]) * type_mask(types[idx], types[idx],
                                                                       self.dtype)
                    e[k] += kk.sum()
                    same = owner[idx][:, None] == owner[idx][None, :]
                    loc.index_add_(0, owner[idx], (kk * same).sum(1))
        return e, loc

    def _prior_force_variances(self, per_term, n_atoms):
        """Exact prior variance of each force component (second kernel derivatives)."""
        out = torch.zeros((n_atoms, 3), dtype=self.dtype)
        for (res, _), term in zip(per_term, self.terms_):
            with torch.no_grad():
                out += term.kernel.force_prior_variance(
                    res.torch("values", dtype=self.dtype),
                    res.torch("gradients", dtype=self.dtype),
                    torch.as_tensor(res.gradient_centre), res.gradient_atom_global,
                    torch.as_tensor(res.centre_types), n_atoms)
        return out

    # ------------------------------------------------------------- save/load
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the fitted model to ``path`` (a zip of JSON metadata and .npy arrays).

        The format (documented in the README) is pickle-free: loading never runs
        code from the file. Refuses to overwrite an existing file unless asked.
        """
        self._check_fitted()
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        from . import __version__

        meta = {
            "format": _FORMAT, "format_version": 2 if self.baselines else 1,
            "gapkit_version": __version__,
            "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom",
                      "virial": "eV"},
            "terms": [t.to_dict() for t in self.terms_],
            "noise": self.noise.to_dict(), "e0": {str(z): v for z, v in self.e0_.items()},
            "jitter": self.jitter, "jitter_absolute": self.jitter_abs_,
            "species": list(self.species_), "use": list(self.use), "keys": self.keys,
            "fit_info": self.fit_info_,
        }
        if getattr(self, "recalibration_", None):  # variance recalibration (gapkit.uq)
            meta["recalibration"] = self.recalibration_
        if self.baselines:
            meta["baselines"] = [b.to_dict() for b in self.baselines]
        arrays = {"alpha": self.alpha_.numpy(), "R": self.R_.numpy(), "U": self.U_.numpy()}
        for i, t in enumerate(self.terms_):
            arrays[f"term{i}_points"] = t.sparse_.points.numpy()
            arrays[f"term{i}_types"] = t.sparse_.types.numpy()
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("metadata.json", json.dumps(meta, indent=1))
            for name, arr in arrays.items():
                import io

                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
                zf.writestr(f"{name}.npy", buf.getvalue())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "GAP":
        """Read a model written by :meth:`save`; a corrupted, truncated or newer file
        raises ValueError with the reason. Only JSON and .npy arrays (without
        pickles) are read: loading never executes code from the file."""
        import io
        import zlib

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no model file at {path}")
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("metadata.json"))
                if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                    raise ValueError(f"{path} is not a gapkit model file")
                version = meta.get("format_version")
                if not isinstance(version, int) or version > FORMAT_VERSION:
                    raise ValueError(
                        f"{path} was written in model format {version}, newer than this "
                        f"gapkit understands ({FORMAT_VERSION}); upgrade gapkit")
                arrays = {n[:-4]: np.load(io.BytesIO(zf.read(n)), allow_pickle=False)
                          for n in zf.namelist() if n.endswith(".npy")}
            terms = []
            for i, td in enumerate(meta["terms"]):
                desc = _DESCRIPTORS[td["descriptor"]["type"]](**td["descriptor"]["params"])
                kernel = _KERNELS[td["kernel"]["type"]](**td["kernel"]["params"])
                for name, value in td["kernel"].get("raw", {}).items():
                    getattr(kernel, name).data.fill_(float(value))
                term = Term(desc, kernel, td["n_sparse"], td["sparse_method"],
                            td.get("sparse_options"))
                term.sparse_ = SparseSet(torch.as_tensor(arrays[f"term{i}_points"]),
                                         torch.as_tensor(arrays[f"term{i}_types"]))
                terms.append(term)
            for name in ("alpha", "R", "U"):
                if name not in arrays:
                    raise KeyError(f"array {name!r}")
            for key in ("noise", "e0", "jitter", "jitter_absolute", "species", "use", "keys",
                        "fit_info"):
                if key not in meta:
                    raise KeyError(f"metadata key {key!r}")
            baselines = None
            if meta.get("baselines"):
                from .baselines import from_dict

                baselines = [from_dict(d) for d in meta["baselines"]]
        except ValueError as err:
            if str(err).startswith(str(path)):
                raise
            raise ValueError(f"{path} is not a readable gapkit model file: {err}") from err
        except (zipfile.BadZipFile, KeyError, TypeError, json.JSONDecodeError, EOFError,
                OSError, zlib.error, RuntimeError,
                NotImplementedError) as err:  # zipfile: a corrupted compression-method field
            raise ValueError(f"{path} is not a readable gapkit model file "
                             f"(truncated or corrupted? missing {err})"
                             if isinstance(err, KeyError) else
                             f"{path} is not a readable gapkit model file "
                             f"(truncated or corrupted?): {err}") from err
        nd = meta["noise"]
        model = cls([copy.copy(t) for t in terms], noise=NoiseModel(**nd),
                    e0={int(z): v for z, v in meta["e0"].items()}, jitter=meta["jitter"],
                    use=meta["use"], progress=False, baselines=baselines,
                    random_state=meta["fit_info"].get("random_state", 0), **meta["keys"])
        model.terms_ = terms
        model.species_ = meta["species"]
        model.e0_ = {int(z): float(v) for z, v in meta["e0"].items()}
        model.jitter_abs_ = meta["jitter_absolute"]
        model.alpha_ = torch.as_tensor(arrays["alpha"])
        model.R_ = torch.as_tensor(arrays["R"])
        model.U_ = torch.as_tensor(arrays["U"])
        model.fit_info_ = meta["fit_info"]
        if meta.get("recalibration"):
            model.recalibration_ = meta["recalibration"]
        model.log_marginal_likelihood_ = meta["fit_info"].get("log_marginal_likelihood")
        m = sum(t.sparse_.n for t in terms)
        if model.alpha_.shape != (m,) or model.R_.shape != (m, m) or model.U_.shape != (m, m):
            raise ValueError(f"{path}: inconsistent array shapes (corrupted file?)")
        return model


def _as_baselines(baselines) -> list:
    """``baselines`` as a checked list of :class:`gapkit.baselines.Baseline`."""
    if baselines is None:
        return []
    from .baselines import _as_list

    return _as_list(baselines)


def _voigt_to_matrix(w: np.ndarray) -> np.ndarray:
    out = np.empty(w.shape[:-1] + (3, 3))
    for i, (a, b) in enumerate(VOIGT):
        out[..., a, b] = w[..., i]
        out[..., b, a] = w[..., i]
    return out


warnings.filterwarnings("default", category=UserWarning, module=__name__)
