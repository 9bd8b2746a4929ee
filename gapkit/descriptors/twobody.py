"""Two-body (pair distance) descriptor: the ``distance_2b`` term of GAP."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data import as_frames
from ..neighbors import build_neighbor_list
from .base import Descriptor, DescriptorResult, fold_pair_gradients
from .cutoff import CosineCutoff, OwnsCutoff

__all__ = ["TwoBody", "species_pairs"]


def species_pairs(species: Sequence[int]) -> list[tuple[int, int]]:
    """Unordered species pairs ``(a, b)``, ``a <= b``, of a species list.

    The position of a pair in this list is the ``centre_types`` code that
    :class:`TwoBody` gives to a pair of atoms of species ``a`` and ``b``.

    Parameters
    ----------
    species : sequence of int
        Atomic numbers; sorted and deduplicated first.

    Returns
    -------
    list of (int, int)
        ``[(s0, s0), (s0, s1), ..., (s0, sn), (s1, s1), ..., (sn, sn)]`` for the
        sorted species ``s0 < s1 < ... < sn``: ``n (n + 1) / 2`` pairs for ``n``
        species.

    Examples
    --------
    >>> species_pairs([6, 1])
    [(1, 1), (1, 6), (6, 6)]
    """
    sp = sorted({int(z) for z in species})
    return [(a, b) for k, a in enumerate(sp) for b in sp[k:]]


def _canonical_order(nl) -> np.ndarray:
    """Permutation sorting pairs by (structure, i) -- both in the global i --, j, S."""
    return np.lexsort((nl.shifts[:, 2], nl.shifts[:, 1], nl.shifts[:, 0],
                       nl.neighbors, nl.centers))


class TwoBody(OwnsCutoff, Descriptor):
    """Pair distances as centres: the descriptor of GAP's ``distance_2b`` term.

    Every *ordered* pair ``(i, j + S)`` of the full neighbour list with
    ``r_ij < cutoff`` is one centre, where ``j + S`` is the periodic image of atom
    ``j`` shifted by the integer cell vector ``S``. Its descriptor is the distance

    .. math::

        q_{ij} = r_{ij} = |\\mathbf r_j + \\mathbf S \\cdot \\mathbf h - \\mathbf r_i|
        \\quad (\\text{Å}),

    and its local energy is owned by atom ``i``. Each unordered pair therefore
    appears twice, once owned by each of its atoms, so the per-atom energies
    ``e_i = Σ_j ε(r_ij)`` split every pair energy evenly between the two atoms
    (``E = Σ_{i<j} 2 ε(r_ij)``, GAP's convention). A structure without any pair
    (an isolated atom, or atoms farther apart than ``cutoff``) contributes no
    centres: its two-body energy is 0.

    The smooth cutoff is **not** applied to the value: the
    :class:`~gapkit.kernels.TwoBodyKernel` of the term multiplies by
    ``f_c(r) f_c(r')`` (GAP's covariance cutoff, see
    :class:`~gapkit.descriptors.cutoff.CosineCutoff`), with this descriptor's
    :attr:`cutoff_fn`, which the term hands it. The energy is then continuous when a
    pair crosses the cutoff although the list of centres changes.

    Gradients. With ``r_ij = r_j + S h - r_i`` and ``\\hat r = r_ij / r_ij``,

    .. math::

        \\frac{\\partial r_{ij}}{\\partial \\mathbf r_j} = \\hat{\\mathbf r}_{ij},\\qquad
        \\frac{\\partial r_{ij}}{\\partial \\mathbf r_i} = -\\hat{\\mathbf r}_{ij}
        \\quad (\\text{dimensionless, Å/Å}),

    summed when ``j`` is an image of ``i`` itself (``i == j``, ``S != 0``: zero net
    position gradient, since translating an atom moves its images too). Under the
    homogeneous strain ``r -> (1 + ε) r`` of positions and cell,
    ``r_ij -> (1 + ε) r_ij`` and

    .. math::

        \\frac{\\partial r_{ij}}{\\partial \\epsilon_{ab}} = \\hat r_{ij,a}\\, r_{ij,b}
        \\quad (\\text{Å}).

    Centre order is canonical and deterministic: sorted by structure, then ``i``,
    then ``j``, then the cell shift ``S`` (lexicographically). Small displacements
    that move no pair across the cutoff keep the same centres in the same order.

    Parameters
    ----------
    cutoff : float
        Radial cutoff ``r_c``, Å (GAP's ``cutoff``). Pairs with ``r_ij < r_c`` are centres.
    cutoff_width : float
        Width ``w`` of the cosine transition of ``f_c`` below ``r_c``, Å
        (GAP's ``cutoff_transition_width``), ``0 <= w <= r_c``. Only reported in
        ``info``; the kernel applies it.
    species : sequence of int, optional
        Atomic numbers the descriptor knows; fixes the ``centre_types`` codes.
        Inferred from each ``compute`` call when None (the codes then depend on
        the species present in that call: compare ``info["species_pairs"]``).
    dtype : torch.dtype
        Floating type of the computation (float64 by default).
    device : str or torch.device, optional
        Where the computation runs ("cpu" by default).
    batch_atoms : int
        Largest number of atoms processed at once (a structure is never split).
    progress : bool
        Show a progress bar over batches.

    Raises
    ------
    ValueError
        ``cutoff`` not a finite number > 0, ``cutoff_width`` outside
        ``[0, cutoff]``, or ``batch_atoms < 1``.

    Examples
    --------
    >>> from ase.build import molecule
    >>> res = TwoBody(cutoff=3.0).compute(molecule("CH4"))
    >>> res.values.shape          # 4 C-H pairs + 6 H-H pairs, each twice
    (20, 1)
    >>> res.info["species_pairs"]
    [[1, 1], [1, 6], [6, 6]]
    """

    def __init__(self, *, cutoff: float = 5.0, cutoff_width: float = 1.0,
                 species: Sequence[int] | None = None, dtype: torch.dtype = torch.float64,
                 device=None, batch_atoms: int = 4096, progress: bool = False):
        self.cutoff_fn = CosineCutoff(cutoff, cutoff_width)
        self._set_runtime(species, dtype, device, batch_atoms, progress)

    # -- settings ---------------------------------------------------------
    def get_params(self) -> dict:
        """The settings as a plain dict (round-trips through ``TwoBody(**params)``).

        ``dtype``, ``device``, ``batch_atoms`` and ``progress`` are run-time
        choices that do not change the result, and are left out (as for SOAP).
        """
        return {"cutoff": self.cutoff, "cutoff_width": self.cutoff_width,
                "species": None if self.species is None else list(self.species)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"TwoBody({args})"

    def n_features(self, n_species: int | None = None) -> int:
        """Number of descriptor columns: always 1 (the distance)."""
        return 1

    # -- public -----------------------------------------------------------
    def compute(self, frames, *, gradients=False) -> DescriptorResult:
        """Distance of every ordered neighbour pair of ``frames``.

        Parameters
        ----------
        frames : ase.Atoms or sequence of ase.Atoms
        gradients : bool or list of {"positions", "strain"}
            ``True`` computes both. Position gradients (dimensionless) are stored
            sparsely: one entry for atom ``j`` (``+r̂_ij``) and one for atom ``i``
            (``-r̂_ij``) per centre, a single zero entry when ``j`` is an image of
            ``i``. Strain gradients (Å) per centre.

        Returns
        -------
        DescriptorResult
            ``values`` of shape (n_pairs, 1): ``r_ij`` in Å. ``centre_atom`` = ``i``
            (within its structure), ``centre_species`` = ``Z_i``, ``centre_types`` =
            index of the unordered species pair ``(min(Z_i, Z_j), max(Z_i, Z_j))``
            in ``info["species_pairs"]`` (see :func:`species_pairs`).
            ``feature_labels`` = ``[[0]]`` with names ``("distance",)``. ``info``
            holds ``descriptor``, ``species`` (the species list used, fixed or
            inferred), ``species_pairs``, ``cutoff`` and ``cutoff_width`` (Å).

        Raises
        ------
        ValueError
            No frames, unknown ``gradients`` kind, a species not in the fixed
            ``species``, or a bad structure (see
            :func:`gapkit.neighbors.build_neighbor_list`).
        """
        return super().compute(frames, gradients=gradients)

    def pairs(self, frames) -> dict:
        """The pair behind every centre, in the order of :meth:`compute`'s rows.

        Parameters
        ----------
        frames : ase.Atoms or sequence of ase.Atoms

        Returns
        -------
        dict of ndarray
            ``structure``, ``i``, ``j`` (atom indices within the structure), each
            of shape (n_pairs,), and ``shift`` (n_pairs, 3): the integer cell shift
            ``S`` of the image of ``j``, so that ``r_ij = r_j + S h - r_i``.
        """
        nl = build_neighbor_list(as_frames(frames), self.cutoff)
        order = _canonical_order(nl)
        start = nl.atom_offsets[nl.pair_structure[order]]
        return {"structure": nl.pair_structure[order], "i": nl.centers[order] - start,
                "j": nl.neighbors[order] - start, "shift": nl.shifts[order]}

    # -- internals ----------------------------------------------------------
    def _compute_batch(self, frames, frame_offset, species, want_pos, want_strain):
        dtype, device = self.dtype, self.device
        nl = build_neighbor_list(frames, self.cutoff, frame_offset=frame_offset)
        order = _canonical_order(nl)
        centers = nl.centers[order]
        neighbors = nl.neighbors[order]
        structure = nl.pair_structure[order]
        n_pairs = centers.shape[0]

        pairs = species_pairs(species)
        n_sp = len(species)
        z_to_index = np.full(max(species) + 1, -1, dtype=np.int64)
        z_to_index[list(species)] = np.arange(n_sp)
        # code of (a, b), a <= b (species indices): a * n - a (a - 1) / 2 + (b - a)
        sa = z_to_index[nl.numbers[centers]]
        sb = z_to_index[nl.numbers[neighbors]]
        lo, hi = np.minimum(sa, sb), np.maximum(sa, sb)
        types = lo * n_sp - lo * (lo - 1) // 2 + (hi - lo)

        vec = torch.as_tensor(nl.vectors[order], dtype=dtype, device=device)
        dist = torch.linalg.norm(vec, dim=1)
        values = dist[:, None]

        grads = gcentre = gatom = strain = None
        if want_pos or want_strain:
            unit = vec / dist[:, None]
            i_t = torch.as_tensor(centers, device=device)
            j_t = torch.as_tensor(neighbors, device=device)
            grads, gcentre, gatom_global, strain = fold_pair_gradients(
                unit[:, :, None], torch.arange(n_pairs, device=device), i_t, j_t, vec,
                n_pairs, nl.n_atoms, want_strain)
            if want_pos:
                offsets = torch.as_tensor(nl.atom_offsets, device=device)
                struct_t = torch.as_tensor(structure, device=device)
                gatom = gatom_global - offsets[struct_t[gcentre]]
            else:
                grads = gcentre = None

        def np_(t):
            return None if t is None else t.detach().cpu().numpy()

        atom_start = nl.atom_offsets[structure]
        return DescriptorResult(
            values=np_(values), centre_structure=structure,
            centre_atom=centers - atom_start, centre_species=nl.numbers[centers],
            centre_types=types.astype(np.int64), n_atoms=np.diff(nl.atom_offsets),
            feature_labels=np.zeros((1, 1), dtype=np.int64),
            feature_label_names=("distance",),
            gradients=np_(grads), gradient_centre=np_(gcentre), gradient_atom=np_(gatom),
            strain_gradients=np_(strain),
            info={**self.get_params(), "descriptor": "TwoBody", "species": list(species),
                  "species_pairs": [list(p) for p in pairs]})
