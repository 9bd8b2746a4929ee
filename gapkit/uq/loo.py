"""Data hygiene: closed-form leave-one-out residuals and leverages from the R factor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..gp.observations import ENERGY, FORCES, KINDS, Observations


@dataclass(frozen=True)
class LOOResult:
    """Closed-form leave-one-out diagnostics of a fitted sparse GAP.

    Per observation (arrays of length N, in the model's observation order: per frame
    the energy, the force components, the Voigt virials):

    Attributes
    ----------
    observations : :class:`gapkit.gp.observations.Observations`
        The rows: ``frame``, ``kind``, ``atom``, ``component`` (ints; kind 0 energy, 1
        force, 2 virial), ``y`` (label, the energy minus the e0 baseline, eV; forces
        eV/Å; virial eV) and ``sigma`` (noise standard deviation, same unit), each also
        an attribute of this result.
    residual : ndarray
        ``y - mu`` with the model fitted on all data.
    leverage : ndarray
        Hat-matrix diagonal ``h_n = |R^-T b_n|^2`` (0..1), ``b_n`` the whitened row.
    loo_residual : ndarray
        Single-observation LOO residual ``(y_n - mu_n) / (1 - h_n)``.
    frame_loo_residual : ndarray
        LOO residual of each observation when its whole frame is left out:
        ``sigma_f (I - H_ff)^-1 Sigma_f^-1/2 r_f``.
    frame_loo_z : ndarray
        That residual over its marginal predictive standard deviation (noise included,
        ``sqrt([(I - H_ff)^-1]_nn)`` in whitened units).

    Per frame (arrays of length n_frames):

    frame_leverage : ndarray
        ``trace H_ff``: how much the frame's labels determine its own fit.
    frame_chi2 : ndarray
        ``r~_f^T (I - H_ff)^-1 r~_f``: the Mahalanobis norm of the frame's LOO
        residual under the model's predictive covariance (chi-squared with ``n_f``
        degrees of freedom when the model is right).
    frame_dof : ndarray of int
        ``n_f``, observations per frame.
    frame_chi2_z : ndarray
        ``frame_chi2`` as a standard-normal equivalent of its upper tail (absolute:
        inflated for every frame when the noise model is too small).
    frame_misfit : ndarray of shape (n_frames, 3)
        Mean ``frame_loo_z^2`` per observation kind (energy, forces, virial; nan where
        absent).
    frame_score : ndarray
        How surprising the frame's worst observation kind is: for each kind, the sum of
        its ``frame_loo_z^2`` over a noise scale set by the median frame (robust to a
        globally misjudged noise level), read as a chi-squared with one degree of
        freedom per observation and turned into a standard-normal equivalent of its
        upper tail; the largest over kinds. A few units for typical frames (force
        components of one frame are correlated, so the tail is a little heavier than
        chi-squared); a bad label stands far above the rest. One energy and 3N force
        components are judged on the same scale.
    energy_loo_per_atom : ndarray
        Frame-LOO energy residual per atom (eV/atom; nan without an energy label).
    energy_loo_z : ndarray
        That residual over its predictive standard deviation.
    forces_loo_rmse : ndarray
        RMS frame-LOO force residual (eV/Å; nan without forces).
    ranking : ndarray of int
        Frame indices, most suspicious first (by ``frame_score``).
    """

    observations: Observations
    residual: np.ndarray
    leverage: np.ndarray
    loo_residual: np.ndarray
    frame_loo_residual: np.ndarray
    frame_loo_z: np.ndarray
    frame_leverage: np.ndarray
    frame_chi2: np.ndarray
    frame_dof: np.ndarray
    frame_chi2_z: np.ndarray
    frame_misfit: np.ndarray
    frame_score: np.ndarray
    energy_loo_per_atom: np.ndarray
    energy_loo_z: np.ndarray
    forces_loo_rmse: np.ndarray
    ranking: np.ndarray

    # the observation columns, by name, as before 0.2
    frame = property(lambda self: self.observations.frame)
    kind = property(lambda self: self.observations.kind)
    atom = property(lambda self: self.observations.atom)
    component = property(lambda self: self.observations.component)
    y = property(lambda self: self.observations.y)
    sigma = property(lambda self: self.observations.sigma)

    def suspicious(self, n: int = 10) -> list[dict]:
        """The ``n`` most suspicious frames, as dicts for printing."""
        return [{"frame": int(k), "score": float(self.frame_score[k]),
                 "chi2": float(self.frame_chi2[k]), "dof": int(self.frame_dof[k]),
                 "misfit_energy": float(self.frame_misfit[k, 0]),
                 "misfit_forces": float(self.frame_misfit[k, 1]),
                 "energy_loo_eV_per_atom": float(self.energy_loo_per_atom[k]),
                 "energy_loo_z": float(self.energy_loo_z[k]),
                 "forces_loo_rmse_eV_per_A": float(self.forces_loo_rmse[k]),
                 "leverage": float(self.frame_leverage[k])} for k in self.ranking[:n]]


def leave_one_out(model, frames) -> LOOResult:
    """Leave-one-out residuals and leverages of a fitted GAP, without refitting.

    With the whitened design ``B = Sigma^-1/2 K_NM`` and ``A = R^T R = K_MM + B^T B``
    (the fitted QR factor), the fit is the linear smoother ``mu~ = H y~`` with
    ``H = B A^-1 B^T``. Leaving out observation n (the sparse points, e0 and
    hyper-parameters fixed) gives ``y_n - mu_{-n} = (y_n - mu_n) / (1 - h_n)``, with
    ``h_n = |R^-T b_n|^2``; leaving out a whole frame f gives
    ``r~_{-f} = (I - H_ff)^-1 r~_f`` with ``H_ff = C_f^T C_f``, ``C_f = R^-T B_f^T``.
    Exact for the DTC model (equal to refitting without the frame); one pass over
    ``frames`` rebuilds the design rows block by block, memory O(M x block).

    Parameters
    ----------
    model : gapkit.GAP
        Fitted on exactly ``frames`` (same labels and noise model).
    frames : list of ase.Atoms or path
        The training frames.
    """
    import torch

    model.check_fitted()
    data = model.training_data(frames)
    frames, obs = data.frames, data.observations
    n_rows = obs.n_rows
    res = np.empty(n_rows)
    lev = np.empty(n_rows)
    floo = np.empty(n_rows)
    fz = np.empty(n_rows)
    n_frames = len(frames)
    f_lev = np.zeros(n_frames)
    f_chi2 = np.zeros(n_frames)
    f_dof = np.zeros(n_frames, dtype=int)
    e_z = np.full(n_frames, np.nan)
    rt = model.R_.T
    for start, sel, block, rows in model.design_blocks(data):
        with torch.no_grad():
            mu = (rows @ model.alpha_).numpy()
            sig = torch.as_tensor(block.sigma, dtype=rows.dtype)
            # C = R^-T B^T with B = Sigma^-1/2 K_NM: h_n = |C[:, n]|^2, H_ff = C_f^T C_f
            c = torch.linalg.solve_triangular(rt, (rows / sig[:, None]).T, upper=False)
        c = c.numpy()
        r = block.y - mu
        res[sel] = r
        h = (c * c).sum(0)
        lev[sel] = h
        rw = r / block.sigma
        for f in np.unique(block.frame):
            loc = np.nonzero(block.frame == f)[0]
            cf = c[:, loc]
            hff = cf.T @ cf
            ih = np.eye(loc.size) - hff
            inv = np.linalg.inv(ih)
            x = inv @ rw[loc]
            floo[sel[loc]] = x * block.sigma[loc]
            fz[sel[loc]] = x / np.sqrt(np.diagonal(inv))
            g = start + int(f)
            ie = np.nonzero(block.kind[loc] == ENERGY)[0]
            if ie.size:
                e_z[g] = x[ie[0]] / math.sqrt(inv[ie[0], ie[0]])
            f_lev[g] = float(np.trace(hff))
            f_chi2[g] = float(rw[loc] @ x)
            f_dof[g] = loc.size
    loo = res / (1.0 - lev)
    chi2_z = _chi2_to_z(f_chi2, f_dof)
    misfit = np.full((n_frames, 3), np.nan)
    for k in range(len(KINDS)):
        m = obs.kind == k
        if m.any():
            sq = np.bincount(obs.frame[m], weights=fz[m] ** 2, minlength=n_frames)
            cnt = np.bincount(obs.frame[m], minlength=n_frames)
            with np.errstate(invalid="ignore", divide="ignore"):
                misfit[:, k] = np.where(cnt > 0, sq / cnt, np.nan)
    from scipy.stats import chi2 as chi2_dist

    # per kind: the frame's sum of z^2 relative to the typical frame's, as the
    # standard-normal equivalent of its chi-squared tail with as many degrees of freedom
    # as the frame has observations of that kind, so that one energy and 3N force
    # components are judged on the same scale (a mean over 3N components is far less
    # noisy than one squared energy z)
    score = np.full(n_frames, -np.inf)
    for k in range(len(KINDS)):
        col = misfit[:, k]
        ok = ~np.isnan(col)
        if not ok.any():  # this kind is absent (e.g. no virials for molecules)
            continue
        cnt = np.bincount(obs.frame[obs.kind == k], minlength=n_frames)[ok]
        # the noise scale s^2 from the median frame: mean z^2 of a frame with n
        # observations has median chi2.median(n) / n when the model is right
        s2 = float(np.median(col[ok] / (chi2_dist.median(cnt) / cnt)))
        if s2 > 0:
            score[ok] = np.maximum(score[ok], _chi2_to_z(cnt * col[ok] / s2, cnt))
    score = np.where(score == -np.inf, 0.0, score)  # frames with no observations
    n_at = np.array([len(a) for a in frames], dtype=float)
    e_loo = np.full(n_frames, np.nan)
    f_rmse = np.full(n_frames, np.nan)
    emask = obs.kind == ENERGY
    for n in np.nonzero(emask)[0]:
        f = obs.frame[n]
        e_loo[f] = floo[n] / n_at[f]
    fmask = obs.kind == FORCES
    if fmask.any():
        sq = np.bincount(obs.frame[fmask], weights=floo[fmask] ** 2, minlength=n_frames)
        cnt = np.bincount(obs.frame[fmask], minlength=n_frames)
        with np.errstate(invalid="ignore", divide="ignore"):
            f_rmse = np.where(cnt > 0, np.sqrt(sq / np.maximum(cnt, 1)), np.nan)
    ranking = np.argsort(-score, kind="stable")
    return LOOResult(observations=obs, residual=res, leverage=lev, loo_residual=loo,
                     frame_loo_residual=floo, frame_loo_z=fz, frame_leverage=f_lev,
                     frame_chi2=f_chi2, frame_dof=f_dof, frame_chi2_z=chi2_z,
                     frame_misfit=misfit, frame_score=score, energy_loo_per_atom=e_loo,
                     energy_loo_z=e_z, forces_loo_rmse=f_rmse, ranking=ranking)


def _chi2_to_z(chi2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Standard-normal equivalent of the chi-squared upper tail, stable far in the tail."""
    from scipy.special import ndtri_exp
    from scipy.stats import chi2 as chi2_dist

    out = np.full(chi2.shape, -np.inf)
    ok = dof > 0
    with np.errstate(divide="ignore"):
        logsf = chi2_dist.logsf(chi2[ok], dof[ok])
    # beyond double precision (logsf = -inf): the leading term of the upper incomplete
    # gamma function, sf ~ (x/2)^(k/2-1) exp(-x/2) / Gamma(k/2) for x >> k
    far = ~np.isfinite(logsf)
    if far.any():
        from scipy.special import gammaln

        k = dof[ok][far].astype(float)
        x = chi2[ok][far]
        logsf[far] = (k / 2 - 1) * np.log(x / 2) - x / 2 - gammaln(k / 2)
    out[ok] = -ndtri_exp(logsf)
    return out
