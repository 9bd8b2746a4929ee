"""SOAP power spectrum with analytic position and strain gradients."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .base import DescriptorResult, concatenate, fold_pair_gradients, resolve_species
from ._radial import RadialSpline
from ._spherical import real_spherical_harmonics
from .cutoff import CosineCutoff
from ..neighbors import build_neighbor_list

__all__ = ["SOAP"]

_GRADIENT_KINDS = ("positions", "strain")


def _parse_gradients(gradients) -> tuple[bool, bool]:
    if gradients is True:
        return True, True
    if gradients is False or gradients is None:
        return False, False
    if isinstance(gradients, str):
        gradients = [gradients]
    unknown = set(gradients) - set(_GRADIENT_KINDS)
    if unknown:
        raise ValueError(f"unknown gradients {sorted(unknown)}; use True, False or a subset of "
                         f"{list(_GRADIENT_KINDS)}")
    return "positions" in gradients, "strain" in gradients


def _batches(frames, max_atoms: int):
    start, count = 0, 0
    for k, atoms in enumerate(frames):
        if count and count + len(atoms) > max_atoms:
            yield start, k
            start, count = k, 0
        count += len(atoms)
    if start < len(frames):
        yield start, len(frames)


class SOAP:
    """Smooth Overlap of Atomic Positions: the power spectrum of the neighbour density.

    For centre ``i`` the density of neighbours of species ``a`` is a sum of
    normalised Gaussians (width ``atom_sigma``) times the smooth cutoff ``f_c``;
    expanding it on orthonormal GTO radial functions ``R_n`` and real spherical
    harmonics gives

    .. math::

        c^a_{nlm}(i) = \\sum_{j \\in a} f_c(r_{ij})\\, I_{nl}(r_{ij})\\, Y_{lm}(\\hat r_{ij})
            + w_0\\, \\delta_{a s_i} I_{n0}(0)\\, Y_{00},

    (``w_0`` = ``central_weight``: the centre's own Gaussian) and the power spectrum

    .. math::

        p^{ab}_{nn'l}(i) = \\frac{s_{(an),(bn')}}{\\sqrt{2l+1}} \\sum_m c^a_{nlm}(i)\\, c^b_{n'lm}(i),

    kept for the unique pairs ``(a,n) <= (b,n')`` only, with
    ``s = √2`` off the diagonal and 1 on it, so that ``p·p'`` equals the dot product
    of the full (redundant) spectra: the kernel is the same as with all pairs.
    ``p`` is invariant to rotations, inversion, translations, permutations of like
    atoms and the choice of periodic images. With ``normalize=True`` the result
    is ``q = p/|p|``; a centre with ``p = 0`` (an isolated atom when
    ``central_weight = 0``) gets ``q = 0`` and zero gradients, never NaN.

    Conventions: the Gaussian is normalised as ``(πσ²)^{-3/4} e^{-r²/2σ²}``, ``R_n``
    is featomic's orthonormal GTO basis on [0, ∞) with radius = ``cutoff``, ``Y_lm``
    are orthonormal; featomic's ``SoapPowerSpectrum`` with the same settings is
    reproduced exactly by :meth:`to_featomic_layout` (see the README).

    Parameters
    ----------
    cutoff : float
        Radial cutoff ``r_c``, Å.
    cutoff_width : float
        Width of the cosine transition to zero below ``r_c``, Å (GAP's
        ``cutoff_transition_width``).
    n_max : int
        Number of radial basis functions (GAP's ``n_max``; featomic's ``max_radial + 1``).
    l_max : int
        Largest angular momentum (inclusive).
    atom_sigma : float
        Width of the Gaussian on each neighbour, Å.
    species : sequence of int, optional
        Atomic numbers the descriptor knows (fixes the feature layout). Inferred
        from each ``compute`` call when None.
    central_weight : float
        Weight of the centre's own Gaussian in its density.
    normalize : bool
        Return unit-length vectors (the GAP default).
    dtype : torch.dtype
        Floating type of the computation (float64 by default).
    device : str or torch.device, optional
        Where the computation runs ("cpu" by default).
    batch_atoms : int
        Number of atoms processed at once (memory vs overhead).
    progress : bool
        Show a progress bar over batches.
    spline_spacing : float
        Grid spacing of the tabulated radial integrals, Å.
    """

    def __init__(self, *, cutoff: float = 5.0, cutoff_width: float = 0.5, n_max: int = 8,
                 l_max: int = 6, atom_sigma: float = 0.5, species: Sequence[int] | None = None,
                 central_weight: float = 1.0, normalize: bool = True,
                 dtype: torch.dtype = torch.float64, device=None, batch_atoms: int = 512,
                 progress: bool = False, spline_spacing: float = 1e-2):
        self.cutoff_fn = CosineCutoff(cutoff, cutoff_width)
        if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or not 1 <= n_max <= 20:
            raise ValueError(f"n_max must be an integer in [1, 20], got {n_max!r}")
        if isinstance(l_max, bool) or not isinstance(l_max, (int, np.integer)) or not 0 <= l_max <= 20:
            raise ValueError(f"l_max must be an integer in [0, 20], got {l_max!r}")
        if not (atom_sigma > 0 and math.isfinite(atom_sigma)):
            raise ValueError(f"atom_sigma must be a finite number > 0 Å, got {atom_sigma!r}")
        if not math.isfinite(central_weight):
            raise ValueError(f"central_weight must be finite, got {central_weight!r}")
        self.cutoff = float(cutoff)
        self.cutoff_width = float(cutoff_width)
        self.n_max = int(n_max)
        self.l_max = int(l_max)
        self.atom_sigma = float(atom_sigma)
        self.species = None if species is None else resolve_species([], species)
        self.central_weight = float(central_weight)
        self.normalize = bool(normalize)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.batch_atoms = int(batch_atoms)
        self.progress = bool(progress)
        self.spline_spacing = float(spline_spacing)
        self._spline = None
        self._layouts = {}

    # -- settings ---------------------------------------------------------
    def get_params(self) -> dict:
        """The settings as a plain dict (round-trips through ``SOAP(**params)``)."""
        return dict(cutoff=self.cutoff, cutoff_width=self.cutoff_width, n_max=self.n_max,
                    l_max=self.l_max, atom_sigma=self.atom_sigma,
                    species=None if self.species is None else list(self.species),
                    central_weight=self.central_weight, normalize=self.normalize)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"SOAP({args})"

    def n_features(self, n_species: int | None = None) -> int:
        s = len(self.species) if n_species is None else n_species
        k = s * self.n_max
        return k * (k + 1) // 2 * (self.l_max + 1)

    # -- internals ----------------------------------------------------------
    def _radial(self) -> RadialSpline:
        if self._spline is None:
            self._spline = RadialSpline(self.n_max, self.l_max, self.atom_sigma, self.cutoff,
                                        self.cutoff, self.spline_spacing).to(self.dtype, self.device)
        return self._spline

    def _layout(self, n_species: int):
        """Feature order and the gather indices of each l block."""
        if n_species in self._layouts:
            return self._layouts[n_species]
        n, L = self.n_max, self.l_max
        k = n_species * n
        labels, per_l = [], {l: [] for l in range(L + 1)}
        col = 0
        for a in range(n_species):
            for b in range(a, n_species):
                for l in range(L + 1):
                    for n1 in range(n):
                        for n2 in range(n1 if a == b else 0, n):
                            alpha, beta = a * n + n1, b * n + n2
                            labels.append((a, b, l, n1, n2))
                            per_l[l].append((col, alpha, beta))
                            col += 1
        blocks = []
        for l in range(L + 1):
            cols, alpha, beta = (np.array(v) for v in zip(*per_l[l]))
            scale = np.where(alpha == beta, 1.0, math.sqrt(2.0)) / math.sqrt(2 * l + 1)
            blocks.append(dict(
                cols=torch.as_tensor(cols, device=self.device),
                flat=torch.as_tensor(alpha * k + beta, device=self.device),
                # gradient gathers: X[p, :, n_alpha, beta] and X[p, :, n_beta, alpha]
                g1=torch.as_tensor((alpha % n) * k + beta, device=self.device),
                g2=torch.as_tensor((beta % n) * k + alpha, device=self.device),
                s1=torch.as_tensor(alpha // n, device=self.device),
                s2=torch.as_tensor(beta // n, device=self.device),
                scale=torch.as_tensor(scale, dtype=self.dtype, device=self.device)))
        layout = (np.array(labels, dtype=np.int64), blocks)
        self._layouts[n_species] = layout
        return layout

    # -- public -----------------------------------------------------------
    def compute(self, frames, *, gradients=False) -> DescriptorResult:
        """Power spectrum of every atom of ``frames``.

        Parameters
        ----------
        frames : ase.Atoms or sequence of ase.Atoms
        gradients : bool or list of {"positions", "strain"}
            ``True`` computes both. Position gradients are stored sparsely per
            (centre, atom) pair, the centre's own atom included; strain gradients
            per centre (for virials).

        Returns
        -------
        DescriptorResult
            ``values`` of shape (n_atoms_total, n_features); ``feature_labels``
            columns (species_a, species_b, l, n_a, n_b) where species are atomic
            numbers.
        """
        from ase import Atoms

        if isinstance(frames, Atoms):
            frames = [frames]
        frames = list(frames)
        species = resolve_species(frames, self.species)
        want_pos, want_strain = _parse_gradients(gradients)
        results, offsets = [], []
        batches = list(_batches(frames, self.batch_atoms))
        iterator = batches
        if self.progress and len(batches) > 1:
            from tqdm.auto import tqdm

            iterator = tqdm(batches, desc="SOAP", unit="batch")
        for start, stop in iterator:
            results.append(self._compute_batch(frames[start:stop], start, species,
                                               want_pos, want_strain))
            offsets.append(start)
        if not results:
            raise ValueError("no frames given to SOAP.compute")
        return concatenate(results, offsets)

    def _compute_batch(self, frames, frame_offset, species, want_pos, want_strain):
        dtype, device = self.dtype, self.device
        nl = build_neighbor_list(frames, self.cutoff, frame_offset=frame_offset)
        n_species = len(species)
        n, L = self.n_max, self.l_max
        k = n_species * n
        n_lm = (L + 1) ** 2
        labels, blocks = self._layout(n_species)
        n_features = labels.shape[0]
        n_atoms = nl.n_atoms

        z_to_index = np.full(max(species) + 1, -1, dtype=np.int64)
        z_to_index[list(species)] = np.arange(n_species)
        atom_sp = torch.as_tensor(z_to_index[nl.numbers], device=device)
        centre = torch.as_tensor(nl.centers, device=device)
        neigh = torch.as_tensor(nl.neighbors, device=device)
        vec = torch.as_tensor(nl.vectors, dtype=dtype, device=device)
        dist = torch.as_tensor(nl.distances, dtype=dtype, device=device)
        neigh_sp = atom_sp[neigh]

        spline = self._radial()
        fc, dfc = self.cutoff_fn(dist)
        radial, dradial = spline(dist, derivative=want_pos or want_strain)
        l_of_lm = torch.as_tensor(np.repeat(np.arange(L + 1), 2 * np.arange(L + 1) + 1),
                                  device=device)
        ylm, dylm = real_spherical_harmonics(vec, L, gradients=want_pos or want_strain)
        r_lm = (fc[:, None, None] * radial)[:, :, l_of_lm]  # (P, n, lm)
        contrib = r_lm * ylm[:, None, :]

        coeffs = torch.zeros((n_atoms * n_species, n, n_lm), dtype=dtype, device=device)
        coeffs.index_add_(0, centre * n_species + neigh_sp, contrib)
        coeffs = coeffs.view(n_atoms, k, n_lm)
        if self.central_weight != 0.0:
            own = self.central_weight * spline.at_zero()[:, 0] / math.sqrt(4.0 * math.pi)
            rows = torch.arange(n_atoms, device=device)
            coeffs.view(n_atoms, n_species, n, n_lm)[rows, atom_sp, :, 0] += own

        values = torch.empty((n_atoms, n_features), dtype=dtype, device=device)
        for l, blk in enumerate(blocks):
            c_l = coeffs[:, :, l * l:(l + 1) ** 2]
            p_l = torch.bmm(c_l, c_l.transpose(1, 2)).reshape(n_atoms, k * k)
            values[:, blk["cols"]] = p_l[:, blk["flat"]] * blk["scale"]

        norms = None
        if self.normalize:
            norms = torch.linalg.norm(values, dim=1)
            safe = torch.where(norms > 0, norms, torch.ones_like(norms))
            values = values / safe[:, None]

        grads = gcentre = gatom = strain = None
        if want_pos or want_strain:
            unit = vec / dist[:, None]
            dr_lm = (dfc[:, None, None] * radial + fc[:, None, None] * dradial)[:, :, l_of_lm]
            # d contrib / d r_ij: (P, 3, n, lm)
            dcontrib = (unit[:, :, None, None] * (dr_lm * ylm[:, None, :])[:, None]
                        + r_lm[:, None] * dylm[:, :, None, :])
            n_pairs = vec.shape[0]
            pair_grad = torch.empty((n_pairs, 3, n_features), dtype=dtype, device=device)
            single = n_species == 1
            for l, blk in enumerate(blocks):
                sl = slice(l * l, (l + 1) ** 2)
                d_l = dcontrib[:, :, :, sl].reshape(n_pairs, 3 * n, 2 * l + 1)
                c_i = coeffs[centre, :, sl]  # (P, k, 2l+1)
                x = torch.bmm(d_l, c_i.transpose(1, 2)).reshape(n_pairs, 3, n * k)
                g = x[:, :, blk["g1"]]
                h = x[:, :, blk["g2"]]
                if not single:
                    g = g * (blk["s1"][None, :] == neigh_sp[:, None])[:, None, :]
                    h = h * (blk["s2"][None, :] == neigh_sp[:, None])[:, None, :]
                pair_grad[:, :, blk["cols"]] = (g + h) * blk["scale"]
            if self.normalize:
                q = values[centre]  # (P, F)
                inv = torch.where(norms > 0, 1.0 / safe, torch.zeros_like(norms))[centre]
                proj = torch.einsum("paf,pf->pa", pair_grad, q)
                pair_grad = (pair_grad - proj[:, :, None] * q[:, None, :]) * inv[:, None, None]
            grads, gcentre, gatom_global, strain = fold_pair_gradients(
                pair_grad, centre, torch.arange(n_atoms, device=device), neigh, vec,
                n_atoms, n_atoms, want_strain)
            offsets = torch.as_tensor(nl.atom_offsets, device=device)
            gatom = gatom_global - offsets[torch.as_tensor(nl.atom_structure, device=device)[gcentre]]
            if not want_pos:
                grads = gcentre = gatom = None

        def np_(t):
            return None if t is None else t.detach().cpu().numpy()

        feature_labels = labels.copy()
        sp = np.asarray(species)
        feature_labels[:, 0] = sp[labels[:, 0]]
        feature_labels[:, 1] = sp[labels[:, 1]]
        return DescriptorResult(
            values=np_(values), centre_structure=nl.atom_structure.copy(),
            centre_atom=np.arange(n_atoms) - nl.atom_offsets[nl.atom_structure],
            centre_species=nl.numbers.copy(), centre_types=nl.numbers.copy(),
            n_atoms=np.diff(nl.atom_offsets), feature_labels=feature_labels,
            feature_label_names=("species_a", "species_b", "l", "n_a", "n_b"),
            gradients=np_(grads), gradient_centre=np_(gcentre), gradient_atom=np_(gatom),
            strain_gradients=np_(strain),
            info={"descriptor": "SOAP", "species": list(species), **self.get_params()})
