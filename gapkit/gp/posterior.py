"""Posterior means and variances of linear functionals of the local energies, and the
one result type that both the sparse (:class:`gapkit.GAP`) and the exact
(:class:`gapkit.gp.ExactGP`) models return.

With the fitted factors ``U^T U = K_MM`` (jitter included) and ``R^T R = K_MM +
K_MN Sigma^-1 K_NM`` (the QR of :mod:`gapkit.gp.sparse`), the DTC posterior variance of a
functional with cross-covariance row ``k*`` and prior variance ``k**`` is

    var = k** - |U^-T k*|^2 + |R^-T k*|^2                                   (DTC)

and its *projected* form keeps only the last term (``k**`` replaced by its Nyström
projection ``k*^T K_MM^-1 k*``): cheaper, it ignores what the sparse set cannot
represent. ``k**`` of a total energy sums the kernel over all pairs of the frame's
centres; of a force component it needs the kernel's second derivatives
(``force_prior_variance``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from ..data import voigt_symmetrised, voigt_to_matrix
from .design import compact_eligible, functional_rows, type_mask

__all__ = ["Prediction", "clip_variance", "derivative_means", "dtc_variance", "predict_block",
           "predict_frames", "prior_energy_variances", "prior_force_variances",
           "projected_variance"]


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
    energy_latent_variance, forces_latent_variance, virial_latent_variance
        The variances of the latent (noise-free) GP quantities, always; same shapes.
        ``energy_variance``, ``forces_variance`` and ``virial_variance`` are the same
        arrays, unless the model carries a predictive-variance calibration
        (:mod:`gapkit.gp.predictive`, the default after a fit with cross-validated
        noise): then they are the calibrated predictive variances of a new label
        (``variance_form`` ``"calibrated+noise"``), exactly 0 for a component fixed by
        symmetry.
    variance_form : dict
        Which formula each variance used: ``"dtc"`` or ``"projected"`` (sparse GP, see
        :mod:`gapkit.gp.posterior`), ``"exact"`` (dense GP), ``"calibrated+noise"`` or a
        recalibrated form.
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
    energy_latent_variance: np.ndarray | None = None
    forces_latent_variance: np.ndarray | None = None
    virial_latent_variance: np.ndarray | None = None

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per frame."""
        return np.diff(self.atom_offsets)

    @property
    def energy_per_atom(self) -> np.ndarray:
        """eV/atom."""
        return self.energy / self.n_atoms

    def frame_forces(self, k: int) -> np.ndarray:
        """Forces of frame ``k`` (n_atoms_k, 3), eV/Å."""
        if self.forces is None:
            raise ValueError("this prediction has no forces; predict with forces=True")
        return self.forces[self.atom_offsets[k]:self.atom_offsets[k + 1]]

    def as_dict(self) -> dict:
        """The arrays by name (fields that are None left out), ``variance_form`` aside."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "variance_form" and getattr(self, f.name) is not None}

    def __getitem__(self, key: str):
        # the dict that ExactGP.predict returned before 0.2
        warnings.warn("Prediction is a dataclass: use attributes (pred.energy), not "
                      "pred['energy']; item access goes in gapkit 0.3", DeprecationWarning,
                      stacklevel=2)
        return getattr(self, key)


def projected_variance(rows: torch.Tensor, r_factor: torch.Tensor) -> np.ndarray:
    """``|R^-T k*|^2`` for each row ``k*`` of ``rows`` (n, M): the projected form, eV^2."""
    if rows.shape[0] == 0:
        return np.zeros(0)
    sol = torch.linalg.solve_triangular(r_factor.T, rows.T, upper=False)  # R^T x = k*^T
    return (sol * sol).sum(0).numpy()


def dtc_variance(rows: torch.Tensor, prior: torch.Tensor, r_factor: torch.Tensor,
                 u_factor: torch.Tensor) -> np.ndarray:
    """``k** - |U^-T k*|^2 + |R^-T k*|^2`` for each row, clipped at 0 (eV^2).

    Round-off can make a variance slightly negative where the sparse set represents
    the functional exactly; a clip larger than round-off (relative to the prior) warns,
    as scikit-learn's GaussianProcessRegressor does, since it means the factors do not
    belong to the kernel (a changed hyper-parameter without a refit, say).
    """
    if rows.shape[0] == 0:
        return np.zeros(0)
    a = torch.linalg.solve_triangular(u_factor.T, rows.T, upper=False)  # U^T a = k*^T
    prior_np = prior.numpy()
    var = prior_np - (a * a).sum(0).numpy() + projected_variance(rows, r_factor)
    # the prior variance of one sparse environment's local energy: diag(K_MM) = |U e_m|^2
    reference = float((u_factor * u_factor).sum(0).max())
    return clip_variance(var, prior_np, reference=reference, stacklevel=4)


def clip_variance(variance, prior, *, reference: float = 0.0,
                  stacklevel: int = 2) -> np.ndarray:
    """Posterior variances clipped at 0 (the one policy of the sparse and the exact GP).

    Round-off makes a variance slightly negative where the data pin the quantity down (a
    force component that vanishes by symmetry, a perfect crystal's energy). A clip is
    judged against the scale of the terms whose difference gave it: the largest of the
    batch's *prior* variances and ``reference``, the prior variance of one local energy
    (delta^2 of a normalised SOAP kernel). ``reference`` matters where every prior of
    the batch vanishes by symmetry (the forces of a perfect crystal, whose priors and
    variances are both round-off, ~1e-17). Only a clip beyond 1e-8 of that scale warns
    (a UserWarning, as scikit-learn's GaussianProcessRegressor): then the factors do not
    belong to the kernel (a hyper-parameter changed without a refit, say).
    """
    variance = np.asarray(variance, dtype=float)
    scale = max(float(np.abs(np.asarray(prior, dtype=float)).max(initial=0.0)), reference)
    tol = 1e-8 * max(scale, np.finfo(float).tiny)
    if np.any(variance < -tol):
        warnings.warn(f"predicted variances below 0 (down to {float(variance.min()):.3g}, "
                      f"largest prior variance {scale:.3g}) were set to 0; the fitted factors "
                      "may not match the kernel (refit after changing hyper-parameters)",
                      UserWarning, stacklevel=stacklevel)
    return np.maximum(variance, 0.0)


#: kernel entries one block of :func:`prior_energy_variances` evaluates at once (2 MB)
PRIOR_BLOCK_ENTRIES = 1 << 18


def prior_energy_variances(terms, results, n_frames: int, n_atoms: int):
    """Exact prior variances of the total energies (n_frames,) and the per-atom energies
    (n_atoms,) of a block, summed over terms (eV^2): the kernel over all pairs of centres
    of a frame, and over the pairs of centres owned by the same atom.

    A frame's centres are taken in row blocks of about :data:`PRIOR_BLOCK_ENTRIES` kernel
    entries, each against its own and the later columns only (the kernel is symmetric:
    the blocks right of the diagonal count twice), and each block's per-atom sums against
    the columns of the atoms it owns. A two-body term has a centre per pair (8,500 in a
    104-atom Ni cell at a 6 Å cutoff): its whole N x N kernel took 4.7 CPU-s a frame in
    temporaries of 0.6 GB, the blocks 0.37 (the same sums to 1e-15)."""
    dtype = torch.float64
    e = torch.zeros(n_frames, dtype=dtype)
    loc = torch.zeros(n_atoms, dtype=dtype)
    for res, term in zip(results, terms):
        owner_np = res.atom_offsets[res.centre_structure] + res.centre_atom
        # by frame, then by owning atom: each frame and each atom a contiguous run
        order = torch.as_tensor(np.lexsort((owner_np, res.centre_structure)))
        q = res.torch("values", dtype=dtype)[order]
        types = torch.as_tensor(res.centre_types)[order]
        owner = torch.as_tensor(owner_np)[order]
        bounds = np.searchsorted(res.centre_structure[order.numpy()], np.arange(n_frames + 1))
        with torch.no_grad():
            for k in range(n_frames):
                a, b = int(bounds[k]), int(bounds[k + 1])
                if b == a:
                    continue
                step = max(1, PRIOR_BLOCK_ENTRIES // (b - a))
                for r0 in range(a, b, step):
                    r1 = min(r0 + step, b)
                    kk = (term.kernel.value(q[r0:r1], q[r0:b])
                          * type_mask(types[r0:r1], types[r0:b], dtype))
                    e[k] += kk[:, :r1 - r0].sum() + 2.0 * kk[:, r1 - r0:].sum()
                    o = owner[r0:r1]  # the atoms of this block: columns lo..hi
                    lo = a + int(torch.searchsorted(owner[a:b], o[0]))
                    hi = a + int(torch.searchsorted(owner[a:b], o[-1], right=True))
                    kl = (term.kernel.value(q[r0:r1], q[lo:hi])
                          * type_mask(types[r0:r1], types[lo:hi], dtype))
                    same = o[:, None] == owner[lo:hi][None, :]
                    loc.index_add_(0, o, (kl * same).sum(1))
    return e, loc


def prior_force_variances(terms, results, n_atoms: int, compacts=None) -> torch.Tensor:
    """Exact prior variance of each force component (n_atoms, 3), eV^2/Å^2, summed over
    terms (second kernel derivatives). ``compacts``: per term, its position gradients held
    compactly (:class:`~gapkit.descriptors.soap.CompactGradients`) or None (dense ones in
    the result); compact ones are read in their own layout by a kernel that has
    ``compact_force_prior_variance`` (:class:`~gapkit.kernels.SOAPKernel`), else written
    out a chunk of atoms at a time."""
    out = torch.zeros((n_atoms, 3), dtype=torch.float64)
    for i, (res, term) in enumerate(zip(results, terms)):
        compact = None if compacts is None else compacts[i]
        q = res.torch("values", dtype=torch.float64)
        with torch.no_grad():
            types = torch.as_tensor(res.centre_types)
            if compact is None:
                g = res.torch("gradients", dtype=torch.float64)
                centre = torch.as_tensor(res.gradient_centre)
                atom = res.gradient_atom_global
            else:
                own_atom = torch.as_tensor(res.atom_offsets[res.centre_structure]
                                           + res.centre_atom)
                if hasattr(term.kernel, "compact_force_prior_variance"):
                    out += term.kernel.compact_force_prior_variance(q, compact, own_atom,
                                                                    types, n_atoms)
                    continue
                g = compact.entries(q, own_atom)  # written out a chunk at a time
                centre, atom = g.centre, g.atom.numpy()
            out += term.kernel.force_prior_variance(q, g, centre, atom, types, n_atoms)
    return out


def derivative_means(kernel, sparse, alpha: torch.Tensor, res, forces: bool, virial: bool,
                     compact=None):
    """Forces (n_atoms, 3; eV/Å) and Voigt virials (n_frames, 6; eV) of the GP mean
    ``eps(q) = sum_m alpha_m k(q, z_m)``: ``-sum dq/dr . grad eps(q)``, one weighted
    kernel gradient per centre (two GEMMs) contracted with the descriptor gradients
    (``compact``: :class:`~gapkit.descriptors.soap.CompactGradients` instead of
    ``res.gradients``)."""
    dtype = sparse.points.dtype
    q = res.torch("values", dtype=dtype)
    with torch.no_grad():
        w = type_mask(torch.as_tensor(res.centre_types), sparse.types, dtype) * alpha
        grad = kernel.weighted_gradient(q, sparse.points, w)  # (n_c, D)
        fm = vm = None
        if forces and compact is not None:
            fm = _compact_force_means(q, grad, res, compact)
        elif forces:
            g = res.torch("gradients", dtype=dtype)
            centre = torch.as_tensor(res.gradient_centre)
            per_entry = torch.einsum("ead,ed->ea", g, grad[centre])
            fm = torch.zeros((int(res.n_atoms.sum()), 3), dtype=dtype).index_add_(
                0, torch.as_tensor(res.gradient_atom_global), per_entry, alpha=-1.0)
        if virial:
            s = res.torch("strain_gradients", dtype=dtype)
            w6 = voigt_symmetrised(torch.einsum("cabd,cd->cab", s, grad))
            vm = torch.zeros((res.n_structures, 6), dtype=dtype).index_add_(
                0, torch.as_tensor(res.centre_structure), w6, alpha=-1.0)
    return fm, vm


#: pairs of compact gradients contracted at once (their centres' gradients in X's
#: layout are a (pairs, W) temporary: 4,096 x 1,345 floats on aspirin, 44 MB)
COMPACT_PAIRS = 4096


def _compact_force_means(q, grad, res, compact) -> torch.Tensor:
    """``-sum_e g_e . grad eps(q_c)`` into each entry's atom with ``g_e = x_e[:, index_s]
    - t_e q_c``: ``x_e . gx - t_e (q_c . grad_c)`` with ``grad_c`` written into the layout
    of ``x`` (zero where ``x`` holds nothing), and the dense own entries."""
    dtype = q.dtype
    n_atoms = int(res.n_atoms.sum())
    own_atom = torch.as_tensor(res.atom_offsets[res.centre_structure] + res.centre_atom)
    fm = torch.zeros((n_atoms, 3), dtype=dtype).index_add_(
        0, own_atom, torch.einsum("cad,cd->ca", compact.own.to(dtype), grad), alpha=-1.0)
    qg = (q * grad).sum(1)  # (n_c,)
    for s in range(compact.index.shape[0]):
        pairs = torch.nonzero(compact.species == s)[:, 0]
        if pairs.numel() == 0:
            continue
        gx = compact.in_layout(grad, s)
        for p0 in range(0, pairs.numel(), COMPACT_PAIRS):
            e = pairs[p0:p0 + COMPACT_PAIRS]
            c = compact.centre[e]
            per = torch.bmm(compact.x[e].to(dtype), gx[c][:, :, None])[..., 0]
            per.addcmul_(compact.t[e].to(dtype), qg[c][:, None], value=-1.0)
            fm.index_add_(0, compact.atom[e], per, alpha=-1.0)
    return fm


def predict_block(terms, sparse_sets, alpha: torch.Tensor, r_factor: torch.Tensor,
                  u_factor: torch.Tensor, frames, *, forces: bool, virial: bool,
                  return_variance: bool, forces_variance: str | None) -> dict:
    """GP means and variances of one block of frames (the model's e0 and baselines not
    included), from the fitted weights ``alpha`` (all terms' columns) and factors.

    Energies and per-atom energies are the rows of each term (``functional_rows``)
    times ``alpha``; forces and virials the derivatives of the mean
    (:func:`derivative_means`). Variances (with ``return_variance``): the DTC form for
    energies and per-atom energies; for force components the DTC form with the exact
    prior (``forces_variance="exact"``) or the projected form (``"projected"``), none
    with None; virials the projected form (with force variances).

    Returns a dict of numpy arrays: ``energy`` (n_frames,) eV, ``local_energy``
    (n_atoms,), ``forces`` (n_atoms, 3) and ``virial`` (n_frames, 3, 3) or None, and
    ``energy_variance``, ``local_energy_variance``, ``forces_variance``,
    ``virial_variance`` (same shapes, squared units) or None.
    """
    dtype = torch.float64
    want_fvar = return_variance and forces_variance is not None
    if not frames:  # empty arrays of the shapes asked for
        return {"energy": np.zeros(0), "local_energy": np.zeros(0),
                "forces": np.zeros((0, 3)) if forces else None,
                "virial": np.zeros((0, 3, 3)) if virial else None,
                "energy_variance": np.zeros(0) if return_variance else None,
                "local_energy_variance": np.zeros(0) if return_variance else None,
                "forces_variance": np.zeros((0, 3)) if want_fvar and forces else None,
                "virial_variance": np.zeros((0, 3, 3)) if want_fvar and virial else None}
    gradients = [g for g, want in (("positions", forces), ("strain", virial)) if want]
    n_frames = len(frames)
    n_atoms = sum(len(a) for a in frames)
    alphas = torch.split(alpha, [s.n for s in sparse_sets])
    e_rows, l_rows, f_rows, v_rows, results, compacts = [], [], [], [], [], []
    f_mean = torch.zeros((n_atoms, 3), dtype=dtype)
    v_mean = torch.zeros((n_frames, 6), dtype=dtype)
    for term, sparse, a in zip(terms, sparse_sets, alphas):
        compact = None
        if forces and compact_eligible(term, frames, set(gradients)):
            res, compact = term.descriptor.compute_compact(frames, strain=virial)
        else:
            res = term.descriptor.compute(frames, gradients=gradients or False)
        results.append(res)
        compacts.append(compact)
        with torch.no_grad():
            rows = functional_rows(term.kernel, res, sparse, energy=True,
                                   forces=forces and want_fvar, virial=virial and want_fvar,
                                   local=True, compact=compact)
            owner = torch.as_tensor(res.atom_offsets[res.centre_structure] + res.centre_atom)
            l_rows.append(torch.zeros((n_atoms, sparse.n), dtype=dtype)
                          .index_add_(0, owner, rows["local"]))
            e_rows.append(rows["energy"])
            if forces and want_fvar:
                f_rows.append(rows["forces"])
            if virial and want_fvar:
                v_rows.append(rows["virial"])
            if forces or virial:
                fm, vm = derivative_means(term.kernel, sparse, a, res, forces, virial,
                                          compact)
                if forces:
                    f_mean += fm
                if virial:
                    v_mean += vm
    erow = torch.cat(e_rows, dim=1)
    lrow = torch.cat(l_rows, dim=1)
    out = {"energy": (erow @ alpha).numpy(), "local_energy": (lrow @ alpha).numpy(),
           "forces": f_mean.numpy() if forces else None,
           "virial": voigt_to_matrix(v_mean.numpy()) if virial else None,
           "energy_variance": None, "local_energy_variance": None,
           "forces_variance": None, "virial_variance": None}
    if not return_variance:
        return out
    prior_e, prior_l = prior_energy_variances(terms, results, n_frames, n_atoms)
    out["energy_variance"] = dtc_variance(erow, prior_e, r_factor, u_factor)
    out["energy_prior"] = prior_e.numpy()
    out["local_energy_variance"] = dtc_variance(lrow, prior_l, r_factor, u_factor)
    if forces and want_fvar:
        fr = torch.cat(f_rows, dim=-1)
        fr = fr.reshape(-1, fr.shape[-1])
        if forces_variance == "exact":
            prior_f = prior_force_variances(terms, results, n_atoms, compacts)
            var = dtc_variance(fr, prior_f.reshape(-1), r_factor, u_factor)
            out["forces_prior"] = prior_f.numpy()
        else:
            var = projected_variance(fr, r_factor)
        out["forces_variance"] = var.reshape(-1, 3)
    if virial and want_fvar:
        vr = torch.cat(v_rows, dim=-1)
        vr = vr.reshape(-1, vr.shape[-1])
        out["virial_variance"] = voigt_to_matrix(projected_variance(vr, r_factor).reshape(-1, 6))
        nystrom = torch.linalg.solve_triangular(u_factor.T, vr.T, upper=False)
        out["virial_prior"] = voigt_to_matrix((nystrom * nystrom).sum(0).numpy().reshape(-1, 6))
    return out


def predict_frames(terms, sparse_sets, alpha, r_factor, u_factor, frames, *,
                   batch_atoms: int, progress=None, **options) -> dict:
    """:func:`predict_block` over blocks of about ``batch_atoms`` atoms, concatenated
    (``options`` as :func:`predict_block` takes them; ``progress``: a bar over the blocks,
    or a function wrapping their list). Also ``energy_prior``, ``forces_prior`` (exact force
    variances only) and ``virial_prior`` (the Nyström prior), the prior variances that a
    predictive-variance calibration reads, when variances are computed. Within
    :func:`gapkit.gp.parallel.dask_passes`, one task per partition of the frames."""
    from ..descriptors.base import frame_batches
    from . import parallel

    passes = parallel.active()
    if passes is not None and len(frames) > 1:  # one task per partition on the workers
        futures = passes.map(_predict_pass, frames, None, terms, sparse_sets, alpha,
                             r_factor, u_factor, batch_atoms, options)
        done = passes.gather(futures)
        return {name: None if any(p[name] is None for p in done)
                else np.concatenate([p[name] for p in done]) for name in done[0]}
    blocks = list(frame_batches(frames, batch_atoms)) or [(0, 0)]  # no frames: empty
    if progress is True:
        from tqdm.auto import tqdm

        progress = partial(tqdm, desc="GAP predict", leave=False)
    parts: dict = {}
    for start, stop in (progress(blocks) if progress else blocks):
        block = predict_block(terms, sparse_sets, alpha, r_factor, u_factor,
                              frames[start:stop], **options)
        for name, value in block.items():
            parts.setdefault(name, []).append(value)
    return {name: None if any(v is None for v in values) else np.concatenate(values)
            for name, values in parts.items()}


def _predict_pass(frames, _obs, _offset, terms, sparse_sets, alpha, r_factor, u_factor,
                  batch_atoms, options) -> dict:
    """:func:`predict_frames` of one partition of the frames, on a Dask worker."""
    return predict_frames(terms, sparse_sets, alpha, r_factor, u_factor, frames,
                          batch_atoms=batch_atoms, **options)
