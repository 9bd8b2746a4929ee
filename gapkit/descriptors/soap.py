"""SOAP power spectrum with analytic position and strain gradients."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from .._checks import atomic_number, is_integer, positive
from .._threads import with_call_threads
from ..neighbors import build_neighbor_list
from ._radial import RadialSpline
from ._spherical import harmonic_constants, spherical_harmonics
from .base import BatchPlan, BatchSink, Descriptor, DescriptorResult, empty_tensor
from .cutoff import CosineCutoff, OwnsCutoff

__all__ = ["SOAP"]

#: bytes of dense gradients a chunk of pairs may hold (see SOAP._compute_batch)
CHUNK_BYTES = 8 << 20
#: pairs whose radial functions and harmonics are evaluated together (see _compute_batch)
WINDOW_PAIRS = 4096


def _check_mixing(value):
    """``species_mixing`` as None, an int >= 1 or ``{Z: tuple of d floats}``."""
    if value is None:
        return None
    if is_integer(value) and not isinstance(value, bool):
        if not 1 <= int(value) <= 64:
            raise ValueError(f"species_mixing must be an integer in [1, 64] (channels), a "
                             f"mapping {{species: weights}} or None, got {value!r}")
        return int(value)
    if not isinstance(value, dict) or not value:
        raise ValueError("species_mixing must be None, an integer number of channels or a "
                         f"non-empty mapping {{species: weights}}, got {value!r}")
    rows = {}
    for key, weights in value.items():
        try:
            z = atomic_number(key)
        except ValueError as err:
            raise ValueError(f"species_mixing: {err}") from None
        row = np.asarray(weights, dtype=np.float64).reshape(-1)
        if row.size == 0 or not np.all(np.isfinite(row)):
            raise ValueError(f"species_mixing[{key!r}] must be finite weights, got {weights!r}")
        rows[z] = tuple(float(w) for w in row)
    if len({len(r) for r in rows.values()}) != 1:
        raise ValueError("species_mixing rows must all have the same number of weights "
                         f"(channels), got {dict((z, len(r)) for z, r in rows.items())}")
    return dict(sorted(rows.items()))


def random_embedding(z: int, channels: int) -> np.ndarray:
    """The fixed row of species ``z`` in ``species_mixing=channels``: a unit vector
    drawn from a generator seeded with ``z`` (one channel: a weight in [0.5, 1.5])."""
    rng = np.random.default_rng([0x50A9, int(z), int(channels)])
    if channels == 1:
        return rng.uniform(0.5, 1.5, size=1)
    row = rng.standard_normal(channels)
    return row / np.linalg.norm(row)


class _PositionGradientLayout:
    """Where each (centre, atom) gradient entry goes; entries sorted by centre, then atom.

    The centre's own atom gets ``-sum_j dq/dr_ij`` (translation invariance). Several
    periodic images of one atom (cells smaller than the cutoff) are summed into
    one entry; otherwise entries are plain copies.
    """

    def __init__(self, centres, neighbours, atom_offsets, atom_structure):
        self.n_atoms = n_atoms = atom_structure.shape[0]
        self.n_pairs = centres.shape[0]
        keys = np.concatenate([centres * n_atoms + neighbours,
                               np.arange(n_atoms) * (n_atoms + 1)])
        self.unique, inverse = np.unique(keys, return_inverse=True)
        self.copy = self.unique.shape[0] == keys.shape[0]
        self._pair_pos = torch.as_tensor(inverse[: self.n_pairs])
        self._own_pos = torch.as_tensor(inverse[self.n_pairs:])
        self.atom_offsets, self.atom_structure = atom_offsets, atom_structure

    @property
    def n_entries(self) -> int:
        return int(self.unique.shape[0])

    def allocate(self, n_features, dtype, device):
        """An array of the entries and one spare row (padded slots of a chunk are
        written there (see write), so the chunk's padded gradients go out in one
        index_copy_), bound to this layout."""
        grads = empty_tensor((self.n_entries + 1, 3, n_features), dtype, device)
        self.bind(grads, 0, self.n_entries)
        return grads

    def bind(self, grads, offset: int, spare: int) -> None:
        """Write entry ``e`` to row ``offset + e`` of ``grads`` and padding to row
        ``spare`` (outside every batch's rows)."""
        self.pair_pos = self._pair_pos.to(grads.device) + offset
        self.own_pos = self._own_pos.to(grads.device) + offset
        self.dummy = spare
        if not self.copy:
            grads[offset:offset + self.n_entries].zero_()

    def write(self, grads, p0, p1, c0, c1, slot, slot_values, totals):
        """Pair p0 + i is row ``slot[i]`` of ``slot_values`` (whose other rows go to the
        spare row); the centres c0..c1 get ``-totals``."""
        dest = torch.full((slot_values.shape[0],), self.dummy, dtype=torch.int64,
                          device=slot_values.device)
        dest[slot] = self.pair_pos[p0:p1]
        if self.copy:
            # index_copy_, not advanced indexing: 3-5x faster on the CPU
            grads.index_copy_(0, dest, slot_values)
            grads.index_copy_(0, self.own_pos[c0:c1], totals.neg_())
        else:
            grads.index_add_(0, dest, slot_values)
            grads.index_add_(0, self.own_pos[c0:c1], totals.neg_())

    def indices(self):
        gcentre = self.unique // self.n_atoms
        gatom = self.unique % self.n_atoms - self.atom_offsets[self.atom_structure[gcentre]]
        return torch.as_tensor(gcentre), torch.as_tensor(gatom)


@dataclass
class CompactGradients:
    """Position gradients of a several-species SOAP without the zeros (issue 17).

    A neighbour of species ``s`` changes only the spectrum blocks of pairs with ``s``: per
    (centre, neighbour) pair ``e``, ``x[e]`` (3, W) holds those values (``X`` of
    :meth:`SOAP._species_index`, with 1/|p| folded in; its last column is zero), raw: the
    (s, s) block of every l is the n x n matrix before its symmetrisation
    (:meth:`symmetrised` gives the symmetrised one, ``xs``), and the dense gradient of the
    normalised ``q`` is

        ``g_e = xs[e][:, index[species[e]]] - t[e][:, None] * q[centre[e]]``,

    ``t = q . dp/|p|`` (zero unnormalised). An entry is a (centre, neighbour atom): the
    periodic images of one atom within the cutoff are summed into it (both are linear in
    the pairs), as a dense result numbers its entries. The centre's own
    atom (``-sum_e g_e``) touches every block: ``own`` (n_centres, 3, F), dense. Indices are
    those of :class:`DescriptorResult` (``atom`` over all atoms of the call)."""

    x: torch.Tensor
    t: torch.Tensor
    species: torch.Tensor
    centre: torch.Tensor
    atom: torch.Tensor
    index: torch.Tensor
    own: torch.Tensor
    n_max: int

    def in_layout(self, rows: torch.Tensor, species: int, *,
                  symmetrised: bool = False) -> torch.Tensor:
        """(n, W): vectors over the features (``rows``, (n, F)) written into ``x``'s layout
        for neighbours of ``species``, zero where ``x`` holds nothing, so that
        ``x[e] @ in_layout(v, s)[i]`` is the blocks' part of ``g_e . v_i``: in the (s, s)
        block an off-diagonal feature's value at both its places and sqrt 2 times a
        diagonal one on the diagonal (``x`` is raw there). ``symmetrised``: for
        :meth:`symmetrised` pairs instead, each value at its feature's place only."""
        out = rows.new_zeros((rows.shape[0], self.x.shape[2]))
        out.index_copy_(1, self.index[species], rows)
        out[:, -1] = 0.0  # where the features absent from this species' blocks point
        return out if symmetrised else self.symmetrised(out, species)

    def symmetrised(self, x: torch.Tensor, species: int) -> torch.Tensor:
        """``x`` (..., W) of pairs with neighbours of ``species`` with the (s, s) block of
        every l symmetrised in place, as the dense gradient reads it: ``X + X^T`` off the
        diagonal, ``sqrt 2 X`` on it. Returns ``x``."""
        n = self.n_max
        k = self.index.shape[0] * n
        d = x[..., :-1].unflatten(-1, (-1, n, k))[..., species * n:(species + 1) * n]
        d.add_(d.transpose(-1, -2).clone())
        d.diagonal(dim1=-2, dim2=-1).mul_(math.sqrt(0.5))
        return x

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """(entries, 3, F): every entry's gradient written out (for tests and checks)."""
        return self._pair_rows(values, torch.arange(self.x.shape[0]))

    def _pair_rows(self, values: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """(n, 3, F): the dense gradients of pairs ``pairs``."""
        species = self.species.index_select(0, pairs)
        where = self.index.index_select(0, species)
        xs = self.x.index_select(0, pairs).to(values.dtype)
        for s in torch.unique(species).tolist():
            rows = torch.nonzero(species == s)[:, 0]
            xs.index_copy_(0, rows, self.symmetrised(xs.index_select(0, rows), s))
        out = xs.gather(2, where[:, None, :].expand(-1, 3, -1))
        # minus t q: batched outer products (3 x 1)(1 x F), added in place
        qc = values.index_select(0, self.centre.index_select(0, pairs))
        return out.baddbmm_(self.t.index_select(0, pairs).to(values.dtype)[:, :, None],
                            qc[:, None, :], alpha=-1.0)

    def atom_slots(self, values: torch.Tensor, own_atom, n_atoms: int, *,
                   target_bytes: int = 8 << 20):
        """The entries of each atom for the prior force variances, chunk by chunk, in
        ``x``'s layout (no dense gradient written out). Yields, for atoms ``atoms`` (na,) of
        one neighbour species ``s`` (atoms that are no pair's neighbour: -1):

        - ``x`` (na, J, 3, W): each atom's pairs by centre (periodic images of one atom
          summed), :meth:`symmetrised`, zero in padding and where ``index[s]`` does not
          point (so that ``x_e . x_f`` over W is ``P x_e . P x_f`` over the features; read
          them with ``in_layout(..., symmetrised=True)``);
        - ``t`` (na, J, 3);
        - ``centre`` (na, J + 1), ``valid`` (na, J + 1): the slots' centres and which are
          real, the last slot the atom's own entry (``own_atom``: each centre's atom);
        - ``own`` (na, 3, F): the own entries (zero where the atom is no centre).
        """
        n_c = own_atom.shape[0]
        width = self.x.shape[2]
        own_of = torch.full((n_atoms,), -1, dtype=torch.int64)
        own_of[own_atom] = torch.arange(n_c)
        key = self.centre * n_atoms + self.atom
        order = torch.argsort(key, stable=True)
        ukey, counts = torch.unique_consecutive(key[order], return_counts=True)
        first = torch.cumsum(counts, 0) - counts
        e_atom = ukey % n_atoms
        e_centre = ukey // n_atoms
        atom_species = torch.full((n_atoms,), -1, dtype=torch.int64)
        atom_species[e_atom] = self.species[order[first]]
        by_atom = torch.argsort(e_atom, stable=True)  # entries grouped by atom
        per_atom = torch.bincount(e_atom, minlength=n_atoms)
        start = torch.cumsum(per_atom, 0) - per_atom
        for s in torch.unique(atom_species).tolist():
            atoms_s = torch.nonzero(atom_species == s)[:, 0]
            if s < 0:
                atoms_s = atoms_s[own_of[atoms_s] >= 0]
            if atoms_s.numel() == 0:
                continue
            unused = None
            if s >= 0:
                unused = torch.ones(width, dtype=torch.bool)
                unused[self.index[s]] = False
                unused[-1] = True
                unused = torch.nonzero(unused)[:, 0]
                # the atoms with most entries first: each chunk is padded to its own
                # largest count, not the species' (small cells beside large ones)
                atoms_s = atoms_s[torch.argsort(per_atom[atoms_s], descending=True,
                                                stable=True)]
            a1 = 0
            while a1 < atoms_s.numel():
                jmax = max(int(per_atom[atoms_s[a1]]), 1) if s >= 0 else 1
                chunk = max(1, int(target_bytes) // (jmax * 3 * width * values.element_size()))
                atoms = atoms_s[a1:a1 + chunk]
                a1 += chunk
                na = atoms.numel()
                slot = torch.arange(jmax)[None, :]
                real = slot < per_atom[atoms][:, None]
                pos = torch.where(real, start[atoms][:, None] + slot, 0)
                ent = by_atom[pos] if e_atom.numel() else torch.zeros_like(pos)
                x = values.new_zeros((na * jmax, 3, width))
                t = values.new_zeros((na * jmax, 3))
                flat = torch.nonzero(real.reshape(-1))[:, 0]
                if flat.numel():
                    e = ent.reshape(-1)[flat]
                    c = counts[e]
                    if bool((c == 1).all()):
                        pairs, rows = order[first[e]], flat
                    else:  # images of one atom: their pairs summed into one entry
                        seg = torch.repeat_interleave(torch.arange(e.numel()), c)
                        off = torch.arange(seg.numel()) - (torch.cumsum(c, 0) - c)[seg]
                        pairs, rows = order[first[e][seg] + off], flat[seg]
                    x.index_add_(0, rows, self.x.index_select(0, pairs).to(values.dtype))
                    t.index_add_(0, rows, self.t.index_select(0, pairs).to(values.dtype))
                if unused is not None:
                    self.symmetrised(x, s)
                    x.index_fill_(2, unused, 0.0)
                centre = torch.cat([torch.where(real, e_centre[ent] if e_atom.numel()
                                                else ent, 0),
                                    own_of[atoms].clamp(min=0)[:, None]], 1)
                valid = torch.cat([real, (own_of[atoms] >= 0)[:, None]], 1)
                own = values.new_zeros((na, 3, values.shape[1]))
                has = torch.nonzero(own_of[atoms] >= 0)[:, 0]
                own.index_copy_(0, has, self.own.index_select(
                    0, own_of[atoms][has]).to(values.dtype))
                yield (atoms, s, x.view(na, jmax, 3, width), t.view(na, jmax, 3), centre,
                       valid, own)

    def entries(self, values: torch.Tensor, own_atom) -> "CompactEntries":
        """The gradient entries as a dense result numbers them, one per (centre, atom):
        the pairs (periodic images of one atom summed) and the own entries (``own_atom``:
        each centre's atom), written out on demand (:class:`CompactEntries`)."""
        return CompactEntries(self, values, torch.as_tensor(own_atom))


class CompactEntries:
    """The entries of :class:`CompactGradients` by (centre, atom), each a sum of its pairs
    and (the centre's own atom) its own entry: ``centre`` and ``atom`` (n_entries,), and
    ``flat_rows(ids)`` their dense gradients (len(ids), 3 F), built a few at a time from
    ``x`` and ``t`` — what the force prior variances read
    (:func:`gapkit.kernels.padded_entries_by_atom`) instead of a dense gradient array."""

    def __init__(self, compact: CompactGradients, values: torch.Tensor, own_atom: torch.Tensor):
        self.compact, self.values = compact, values
        n_pairs = compact.centre.shape[0]
        centre = torch.cat([compact.centre, torch.arange(own_atom.shape[0])])
        atom = torch.cat([compact.atom, own_atom])
        n_atoms = int(atom.max()) + 1 if atom.numel() else 1
        key = centre * n_atoms + atom
        self.order = torch.argsort(key, stable=True)
        unique, counts = torch.unique_consecutive(key[self.order], return_counts=True)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.centre, self.atom = unique // n_atoms, unique % n_atoms
        self.n_pairs = n_pairs
        self.n_features = values.shape[1]
        self.shape = (unique.shape[0], 3, self.n_features)
        self.dtype = values.dtype

    def flat_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """(len(ids), 3 F): the dense gradients of entries ``ids``."""
        counts = self.counts[ids]
        if bool((counts == 1).all()):
            return self._rows(self.order[self.starts[ids]]).view(ids.shape[0], -1)
        seg = torch.repeat_interleave(torch.arange(ids.shape[0]), counts)
        first = torch.cumsum(counts, 0) - counts
        pos = self.starts[ids][seg] + torch.arange(seg.shape[0]) - first[seg]
        out = torch.zeros((ids.shape[0], 3, self.n_features), dtype=self.dtype)
        out.index_add_(0, seg, self._rows(self.order[pos]))
        return out.view(ids.shape[0], -1)

    def _rows(self, which: torch.Tensor) -> torch.Tensor:
        """(n, 3, F): pairs (``which`` < n_pairs) and own entries (the rest), in order."""
        is_pair = which < self.n_pairs
        if bool(is_pair.all()):
            return self.compact._pair_rows(self.values, which)
        out = torch.empty((which.shape[0], 3, self.n_features), dtype=self.dtype)
        own = torch.nonzero(~is_pair)[:, 0]
        # index_copy_, not advanced indexing (several times faster on the CPU)
        out.index_copy_(0, own, self.compact.own.index_select(
            0, which.index_select(0, own) - self.n_pairs).to(self.dtype))
        pairs = torch.nonzero(is_pair)[:, 0]
        if pairs.numel():
            out.index_copy_(0, pairs, self.compact._pair_rows(
                self.values, which.index_select(0, pairs)))
        return out


class _CompactPairs:
    """Where a batch's :class:`CompactGradients` go: one entry per (centre, neighbour
    atom), the periodic images of one atom summed (a small cell has 2-3 pairs per entry).
    Entries are centre-major like the pairs, so the entries ``e0..e1`` of a chunk of
    centres are contiguous rows of ``x`` and ``t`` (views of the call's arrays);
    ``pair`` says which pair of the batch's sorted order each entry came from (one of its
    images)."""

    def __init__(self, centres_sorted, neighbours_sorted, n_centres):
        self.centres = centres_sorted
        self.neighbours = neighbours_sorted
        self.n_pairs = centres_sorted.shape[0]
        self.n_centres = n_centres
        self.key = centres_sorted.astype(np.int64) * max(n_centres, 1) + neighbours_sorted
        unique = np.unique(self.key)
        self.n_entries = int(unique.size)
        # the entries of centres before c (the first of centre c)
        self.entry_start = np.searchsorted(unique // max(n_centres, 1),
                                           np.arange(n_centres + 1))
        self.pair = np.empty(self.n_entries, dtype=np.int64)
        self.species = np.empty(self.n_entries, dtype=np.int64)
        self.x = self.t = self.own = None

    def bind(self, x, t, own) -> None:
        self.x, self.t, self.own = x, t, own

    def allocate(self, n_features, dtype, device):
        return None  # the arrays are bound before the batch runs

    def images(self, c0: int, c1: int, pair: np.ndarray):
        """For the chunk of centres c0..c1 whose pairs come in the order ``pair``: None if
        every entry has one pair, else ``(entry, centre)``: each pair's entry (0 = the
        chunk's first) and each entry's centre (0 = c0)."""
        e0, e1 = int(self.entry_start[c0]), int(self.entry_start[c1])
        if e1 - e0 == pair.shape[0]:
            return None
        unique, inverse = np.unique(self.key[pair], return_inverse=True)
        return inverse.reshape(-1), unique // max(self.n_centres, 1) - c0

    def rows(self, c0: int, c1: int, pair: np.ndarray, species: np.ndarray, *,
             summed: bool = False, images=None):
        """Where the chunk of centres c0..c1 writes its pairs, which come in the order
        ``pair`` (with neighbour ``species``): ``(x, t, finish)``. Without periodic images
        of one atom these are the entries' rows of the call's arrays and ``finish`` is
        None; else scratch rows, one per pair, that ``finish()`` sums into the entries
        (``summed``: ``x`` is the entries' rows, which the caller fills with the sums
        itself, and ``finish()`` sums ``t`` only; ``images``: :meth:`images` of the same
        arguments, if already taken)."""
        e0, e1 = int(self.entry_start[c0]), int(self.entry_start[c1])
        if e1 - e0 == pair.shape[0]:  # a pair per entry: written in place
            self.pair[e0:e1] = pair
            self.species[e0:e1] = species
            return self.x[e0:e1], self.t[e0:e1], None
        inverse = (np.unique(self.key[pair], return_inverse=True)[1].reshape(-1)
                   if images is None else images[0])
        self.pair[e0 + inverse] = pair
        self.species[e0 + inverse] = species
        if summed:
            t_pairs = torch.empty((pair.shape[0], 3), dtype=self.t.dtype, device=self.t.device)

            def finish_t() -> None:
                rows = torch.as_tensor(inverse.reshape(-1), device=self.t.device)
                self.t[e0:e1].zero_().index_add_(0, rows, t_pairs)

            return self.x[e0:e1], t_pairs, finish_t
        # scratch from the pool of mappings (base.empty_tensor): a chunk's is tens of
        # MB, mapped anew and its pages zeroed by the kernel every chunk otherwise
        x = empty_tensor((pair.shape[0],) + tuple(self.x.shape[1:]), self.x.dtype,
                         self.x.device, at_least=1 << 20)
        t = torch.empty((pair.shape[0], 3), dtype=self.t.dtype, device=self.t.device)

        def finish() -> None:
            rows = torch.as_tensor(inverse.reshape(-1), device=self.x.device)
            self.x[e0:e1].zero_().index_add_(0, rows, x)
            self.t[e0:e1].zero_().index_add_(0, rows, t)

        return x, t, finish


#: values of a chunk with at most this many padded slots (centres x species x the largest
#: count) pad every species to one count (_values_uniform)
UNIFORM_SLOTS = 2048
#: a chunk whose entries are at most this share of its pairs (periodic images of one atom)
#: sums its pairs' density gradients per entry instead of their X (_image_density): on the
#: first 40 TiAl cells (2 atoms, 0.05 entries a pair) 821 -> 649 µs/atom (best of 15,
#: featomic 570); on the LiCu cells (0.44) no gain (628 against 655 with every chunk so)
IMAGE_SHARE = 0.2


def _values_uniform(want_grad: bool, nc: int, Js: np.ndarray) -> bool:
    """Whether a chunk's slots are padded to one count for every neighbour species: for
    values of a small chunk (one molecule), where one GEMM per l instead of one per
    species and l saves more than the padding costs (one aspirin molecule 75 -> 68
    µs/atom); larger chunks keep a count per species (padded to one count, the values
    of 50 aspirin frames took 55 µs/atom against 52)."""
    return not want_grad and nc * len(Js) * int(Js.max()) <= UNIFORM_SLOTS


class SOAP(OwnsCutoff, Descriptor):
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

        p^{ab}_{nn'l}(i) = \\frac{s_{(an),(bn')}}{\\sqrt{2l+1}}
            \\sum_m c^a_{nlm}(i)\\, c^b_{n'lm}(i),

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
    species_mixing : int or mapping, optional
        Compress the element channels (Darby, Kermode & Csányi 2022; QUIP's ``Z_mix``):
        the density of channel ``κ`` is ``Σ_a W[a, κ] c^a``, so the spectrum has
        ``d n_max (d n_max + 1)/2 (l_max+1)`` features for any number of species
        instead of ``O(S²)``. An int ``d`` is a fixed random embedding: species ``Z``
        gets a unit vector in ``d`` dimensions drawn from a generator seeded with ``Z``
        (``d = 1``: a weight in [0.5, 1.5]), the same in every run and for any species
        list. A mapping ``{Z or symbol: d weights}`` gives ``W`` itself (the rows of an
        orthogonal ``W`` give the uncompressed kernel); a species it lacks is an error.
        None (the default): every species pair, no compression. With mixing the first
        two ``feature_labels`` columns are channel numbers (``channel_a``, ``channel_b``).
    """

    def __init__(self, *, cutoff: float = 5.0, cutoff_width: float = 0.5, n_max: int = 8,
                 l_max: int = 6, atom_sigma: float = 0.5, species: Sequence[int] | None = None,
                 central_weight: float = 1.0, normalize: bool = True,
                 dtype: torch.dtype = torch.float64, device=None, batch_atoms: int = 512,
                 progress: bool = False, spline_spacing: float = 1e-2,
                 species_mixing: int | dict | None = None):
        self.cutoff_fn = CosineCutoff(cutoff, cutoff_width)
        if not is_integer(n_max) or not 1 <= n_max <= 20:
            raise ValueError(f"n_max must be an integer in [1, 20], got {n_max!r}")
        if not is_integer(l_max) or not 0 <= l_max <= 20:
            raise ValueError(f"l_max must be an integer in [0, 20], got {l_max!r}")
        positive(atom_sigma, "atom_sigma", "Å")
        if not math.isfinite(central_weight):
            raise ValueError(f"central_weight must be finite, got {central_weight!r}")
        self.n_max = int(n_max)
        self.l_max = int(l_max)
        self.atom_sigma = float(atom_sigma)
        self._set_runtime(species, dtype, device, batch_atoms, progress)
        self.central_weight = float(central_weight)
        self.normalize = bool(normalize)
        self.spline_spacing = float(spline_spacing)
        self.species_mixing = _check_mixing(species_mixing)
        self.chunk_pairs = 1024
        self._spline = None
        self._layouts = {}

    # -- settings ---------------------------------------------------------
    def get_params(self) -> dict:
        """The settings as a plain dict (round-trips through ``SOAP(**params)``). With the
        species fixed (a fitted term's), an integer ``species_mixing`` is given as its
        weights, so a saved model holds W itself and never depends on how a future numpy
        draws the embedding."""
        mixing = self.species_mixing
        if isinstance(mixing, int) and self.species is not None:
            mixing = {int(z): tuple(float(w) for w in row)
                      for z, row in zip(self.species, self.mixing_matrix(self.species))}
        elif isinstance(mixing, dict):
            mixing = dict(mixing)
        return dict(cutoff=self.cutoff, cutoff_width=self.cutoff_width, n_max=self.n_max,
                    l_max=self.l_max, atom_sigma=self.atom_sigma,
                    species=None if self.species is None else list(self.species),
                    central_weight=self.central_weight, normalize=self.normalize,
                    species_mixing=mixing)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"SOAP({args})"

    def n_features(self, n_species: int | None = None) -> int:
        s = len(self.species) if n_species is None else n_species
        k = self._channels(s) * self.n_max
        return k * (k + 1) // 2 * (self.l_max + 1)

    def torchscript_tables(self) -> dict:
        """The tables a re-implementation of :meth:`compute`'s values needs, float64 on the
        CPU (what :mod:`gapkit.export` puts in a metatomic model): ``coeffs`` (n_grid, 6 C)
        and ``h``, ``n_grid`` of the quintic radial spline (C = n_max (l_max + 1));
        ``gather``, ``scale``: feature ``f`` is ``scale[f]`` times entry ``gather[f]`` of the
        concatenated per-l products ``c_l c_l^T`` (each k x k, k = channels x n_max); ``own``
        (n_max, (l_max+1)^2), the centre's own Gaussian; ``mix``: ``species_mixing``'s
        (species x d) matrix, applied to the per-species coefficients (0 x 0 without
        mixing); ``sh_norms``, ``sh_first``, the harmonics' constants
        (:func:`~gapkit.descriptors._spherical.harmonic_constants`). Needs ``species``
        fixed."""
        if self.species is None:
            raise ValueError("SOAP.torchscript_tables needs species fixed (a fitted term's)")
        spline = self._radial()
        n, L = self.n_max, self.l_max
        channels = self._channels(len(self.species))
        k = channels * n
        _, blocks = self._layout(channels)
        mix = self.mixing_matrix(self.species)
        own = torch.zeros((n, (L + 1) ** 2), dtype=torch.float64)
        own[:, 0] = (self.central_weight * spline.at_zero()[:, 0].cpu().to(torch.float64)
                     / math.sqrt(4.0 * math.pi))
        norms, first = harmonic_constants(L)
        return dict(
            coeffs=spline._coeffs.cpu().to(torch.float64).clone(), h=spline.h,
            n_grid=spline.n_grid, own=own,
            mix=(torch.zeros((0, 0), dtype=torch.float64) if mix is None
                 else torch.as_tensor(mix, dtype=torch.float64)),
            gather=torch.cat([blk["flat"].cpu() + l * k * k for l, blk in enumerate(blocks)]),
            scale=torch.cat([blk["scale"].cpu().to(torch.float64) for blk in blocks]),
            sh_norms=norms, sh_first=first)

    # -- internals ----------------------------------------------------------
    def _channels(self, n_species: int) -> int:
        """Element channels of the density: the species, or the mixing's ``d``."""
        mix = self.species_mixing
        if mix is None:
            return n_species
        return mix if isinstance(mix, int) else len(next(iter(mix.values())))

    def mixing_matrix(self, species: Sequence[int]) -> np.ndarray | None:
        """``W`` (len(species) x d) of ``species_mixing`` for these atomic numbers (None
        without mixing); a species the mapping lacks raises ValueError."""
        mix = self.species_mixing
        if mix is None:
            return None
        if isinstance(mix, int):
            return np.stack([random_embedding(z, mix) for z in species])
        missing = [int(z) for z in species if int(z) not in mix]
        if missing:
            raise ValueError(
                f"SOAP species_mixing has no weights for species {missing} (it was given "
                f"for {sorted(mix)}): add a row for each of them, or use an integer "
                "species_mixing (a fixed embedding of every element)")
        return np.array([mix[int(z)] for z in species], dtype=np.float64)

    def _radial(self) -> RadialSpline:
        if self._spline is None:
            spline = RadialSpline(self.n_max, self.l_max, self.atom_sigma, self.cutoff,
                                  self.cutoff, self.spline_spacing)
            self._spline = spline.to(self.dtype, self.device)
        return self._spline

    def _layout(self, n_species: int):
        """Feature order (l-major, then the upper triangle of (a,n) x (b,n')) and gathers."""
        if n_species in self._layouts:
            return self._layouts[n_species]
        n, L = self.n_max, self.l_max
        k = n_species * n
        alpha, beta = np.triu_indices(k)
        n_pairs = alpha.shape[0]
        labels, blocks = [], []
        for l in range(L + 1):
            labels.append(np.stack([alpha // n, beta // n, np.full(n_pairs, l), alpha % n,
                                    beta % n], axis=1))
            scale = np.where(alpha == beta, 1.0, math.sqrt(2.0)) / math.sqrt(2 * l + 1)
            pick = np.zeros((k, 2 * n_pairs))
            pick[alpha, np.arange(n_pairs)] = 1.0
            pick[beta, n_pairs + np.arange(n_pairs)] = 1.0
            blocks.append(dict(
                cols=slice(l * n_pairs, (l + 1) * n_pairs),
                flat=torch.as_tensor(alpha * k + beta, device=self.device),
                # one-hot (k, 2T): columns alpha_t then beta_t; pick_s: times the scale
                pick=torch.as_tensor(pick, dtype=self.dtype, device=self.device),
                pick_s=torch.as_tensor(pick * np.tile(scale, 2), dtype=self.dtype,
                                       device=self.device),
                scale=torch.as_tensor(scale, dtype=self.dtype, device=self.device)))
        layout = (np.concatenate(labels).astype(np.int64), blocks)
        self._layouts[n_species] = layout
        return layout

    def _species_index(self, n_species: int):
        """Per neighbour species ``s``: where each feature's position gradient sits in the
        flat (l, row, column) array of the chunk's ``X`` (see ``_species_gradients``).

        A neighbour of species ``s`` changes only block-row ``s`` of the (k x k) product
        of each l, by ``X`` (n x k): ``dP = E_s X + (E_s X)^T``. With the diagonal block
        of ``X`` symmetrised in place, feature ``(alpha <= beta)`` is ``X[alpha - lo, beta]``
        for alpha in block ``s``, ``X[beta - lo, alpha]`` for beta in it (alpha before the
        block), and zero (the spare last entry) otherwise.
        """
        key = ("species_index", n_species)
        if key in self._layouts:
            return self._layouts[key]
        n, L = self.n_max, self.l_max
        k = n_species * n
        alpha, beta = np.triu_indices(k)
        spare = (L + 1) * n * k
        index = []
        for s in range(n_species):
            lo, hi = s * n, (s + 1) * n
            in_a = (alpha >= lo) & (alpha < hi)
            in_b = ~in_a & (beta >= lo) & (beta < hi)
            per_l = np.full(alpha.shape[0], spare, dtype=np.int64)
            per_l[in_a] = (alpha[in_a] - lo) * k + beta[in_a]
            per_l[in_b] = (beta[in_b] - lo) * k + alpha[in_b]
            index.append(torch.as_tensor(np.concatenate(
                [np.where(per_l == spare, spare, per_l + l * n * k) for l in range(L + 1)]),
                device=self.device))
        self._layouts[key] = index
        return index

    def _contributors(self, n_species: int):
        """(2, F): where each feature's two contributions sit in the species' ``X`` laid
        side by side (species ``s`` at ``s * width``): a feature of block (a, b) is touched
        by neighbours of a and of b, one of the (a, a) block by a alone (its second
        pointer: the spare zero entry of species 0). So the sum over species of the
        gathered group sums is two gathers, not one per species."""
        key = ("contributors", n_species)
        if key not in self._layouts:
            index = torch.stack(self._species_index(n_species))  # (S, F)
            width = self._compact_width(n_species)
            touched = index != width - 1
            offset = (torch.arange(n_species, device=index.device) * width)[:, None]
            flat = torch.where(touched, index + offset, width - 1)
            rank = torch.cumsum(touched.to(torch.int64), 0) * touched  # 1st, 2nd or 0
            first = torch.where(rank == 1, flat, 0).sum(0)
            second = torch.where(rank == 2, flat, 0).sum(0)
            second = torch.where((rank == 2).any(0), second, width - 1)
            self._layouts[key] = torch.stack([first, second])
        return self._layouts[key]

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
        return super().compute(frames, gradients=gradients)

    def _compact_width(self, n_species: int) -> int:
        """Width of a pair's ``X`` (every l's n x k block) and its spare zero entry."""
        return (self.l_max + 1) * self.n_max * n_species * self.n_max + 1

    def compact_gradients_for(self, n_species: int) -> bool:
        """Whether :meth:`compute_compact` serves ``n_species`` species: several, without
        ``species_mixing`` (one species has no zero blocks to leave out)."""
        return n_species > 1 and self.species_mixing is None

    @with_call_threads
    def compute_compact(self, frames, *, strain: bool = False):
        """Values (and, with ``strain``, strain gradients) with the position gradients held
        as :class:`CompactGradients`: per neighbour, only the blocks of its species (with
        three species 64 % of the features, four 48 %) and the normalisation's rank-one
        term apart. The design rows of a fit read them (:func:`gapkit.gp.design.
        functional_rows`). Returns ``(result without position gradients, compact)``."""
        from ..data import as_frames
        from .base import concatenate, frame_batches, resolve_species

        frames = as_frames(frames, require="SOAP.compute_compact")
        species = resolve_species(frames, self.species)
        if not self.compact_gradients_for(len(species)):
            raise ValueError("SOAP.compute_compact needs several species and no "
                             f"species_mixing (species {list(species)}, species_mixing "
                             f"{self.species_mixing!r}); use compute(frames, gradients=...)")
        S = len(species)
        index = torch.stack(self._species_index(S))
        width = self._compact_width(S)
        n_features = self.n_features(S)
        batches = list(frame_batches(frames, self.batch_atoms))
        plans = [self._plan_batch(frames[a:b], a, species, True, strain, compact=True)
                 for a, b in batches]
        collectors = [plan.run.args[0].out for plan in plans]
        n_entries = sum(c.n_entries for c in collectors)
        n_centres = sum(c.n_centres for c in collectors)
        # both written whole, chunk after chunk: their pages mapped at once from 4 MB
        # (3-BPA's 48 MB of own entries took 15 % of the call in page faults)
        x = empty_tensor((n_entries, 3, width), self.dtype, self.device, at_least=4 << 20)
        t = torch.empty((n_entries, 3), dtype=self.dtype, device=self.device)
        own = empty_tensor((n_centres, 3, n_features), self.dtype, self.device,
                           at_least=4 << 20)
        results, species_of, centre, atom = [], [], [], []
        p0 = c0 = 0
        for plan, c in zip(plans, collectors):
            p1, c1 = p0 + c.n_entries, c0 + c.n_centres
            c.bind(x[p0:p1], t[p0:p1], own[c0:c1])
            results.append(plan.run())
            species_of.append(c.species)
            centre.append(c.centres[c.pair] + c0)  # batch atoms are its centres
            atom.append(c.neighbours[c.pair] + c0)
            p0, c0 = p1, c1
        res = concatenate(results, [a for a, _ in batches])
        compact = CompactGradients(
            x=x, t=t, species=torch.as_tensor(np.concatenate(species_of)), index=index,
            centre=torch.as_tensor(np.concatenate(centre)),
            atom=torch.as_tensor(np.concatenate(atom)), own=own, n_max=self.n_max)
        return res, compact

    def _compute_batch(self, frames, frame_offset, species, want_pos, want_strain):
        """One batch of structures in arrays of its own (see :meth:`_plan_batch`)."""
        return self._plan_batch(frames, frame_offset, species, want_pos, want_strain).run()

    def _plan_batch(self, frames, frame_offset, species, want_pos, want_strain,
                    compact: bool = False):
        """One batch of structures: a neighbour list, then chunks of centres.

        The plan knows the batch's sizes before anything is computed, so that
        :meth:`Descriptor.compute` can give every batch its part of one output array
        (``BatchPlan.run(sink)``) instead of concatenating the batches' gradients.

        Within a chunk, pairs are grouped by (centre i, neighbour species a) into
        ``J`` zero-padded slots, so every contraction over neighbours is a batched
        GEMM: ``c^a_{nlm}(i) = sum_j R_{nl}(r_ij) Y_lm(r_ij)`` is ``R^T Y`` per group,
        and the gradient contractions are GEMMs against ``c(i)``. Chunks hold about
        ``chunk_pairs`` pairs so that their working set stays in cache; every centre
        is independent, so results are written straight into the batch's arrays.
        """
        dtype, device = self.dtype, self.device
        nl = build_neighbor_list(frames, self.cutoff, frame_offset=frame_offset)
        n_species = len(species)
        mix = self.mixing_matrix(species)
        channels = self._channels(n_species)
        labels, blocks = self._layout(channels)
        n_features = labels.shape[0]
        N = nl.n_atoms

        z_to_index = np.full(max(species) + 1, -1, dtype=np.int64)
        z_to_index[list(species)] = np.arange(n_species)
        atom_sp = z_to_index[nl.numbers]
        # S groups of pairs per centre, n radial channels per group: one group per
        # species, or with mixing one group whose d n_max channels are the radial
        # functions times the neighbour's weights
        S, n_chan = (n_species, self.n_max) if mix is None else (1, channels * self.n_max)
        # sort pairs by (centre, neighbour species): centre-major, so each chunk of
        # centres owns a contiguous range of pairs
        group = nl.centers * S + (atom_sp[nl.neighbors] if mix is None else 0)
        order = np.argsort(group, kind="stable")
        group = group[order]
        centres_sorted = nl.centers[order]
        vectors = torch.as_tensor(nl.vectors[order], dtype=dtype, device=device)
        distances = torch.as_tensor(nl.distances[order], dtype=dtype, device=device)
        pair_start = np.searchsorted(centres_sorted, np.arange(N + 1))
        out = None
        if compact:
            out = _CompactPairs(centres_sorted, nl.neighbors[order], N)
        elif want_pos:
            out = _PositionGradientLayout(centres_sorted, nl.neighbors[order],
                                          nl.atom_offsets, nl.atom_structure)
        state = SimpleNamespace(
            nl=nl, species=species, want_pos=want_pos, want_strain=want_strain, mix=mix,
            channels=channels, labels=labels, blocks=blocks, atom_sp=atom_sp, group=group,
            order=order, vectors=vectors, distances=distances, pair_start=pair_start,
            out=out)
        return BatchPlan(n_centres=N, n_entries=0 if not want_pos or compact else out.n_entries,
                         n_features=n_features,
                         run=functools.partial(self._run_batch, state))

    def _run_batch(self, state, sink: BatchSink | None = None) -> DescriptorResult:
        """The values (and gradients) of a planned batch, into ``sink``'s arrays (the
        result then holds a view of its values and no gradient arrays) or its own."""
        dtype, device = self.dtype, self.device
        nl, species, out = state.nl, state.species, state.out
        want_pos, want_strain = state.want_pos, state.want_strain
        mix, channels, labels, blocks = state.mix, state.channels, state.labels, state.blocks
        atom_sp, group, order = state.atom_sp, state.group, state.order
        vectors, distances, pair_start = state.vectors, state.distances, state.pair_start
        n_species = len(species)
        n_features = labels.shape[0]
        N = nl.n_atoms
        want_grad = want_pos or want_strain
        S, n_chan = (n_species, self.n_max) if mix is None else (1, channels * self.n_max)

        strain = grads = gcentre = gatom = None
        compact = isinstance(out, _CompactPairs)
        if sink is None:
            values = torch.empty((N, n_features), dtype=dtype, device=device)
            if want_strain:
                strain = empty_tensor((N, 3, 3, n_features), dtype, device)
            if want_pos:
                grads = out.allocate(n_features, dtype, device)
        else:
            values, strain, grads = sink.values, sink.strain, sink.gradients
            if want_pos:
                out.bind(grads, sink.entry_offset, sink.spare_row)

        target = 8 * self.chunk_pairs
        if want_grad:
            # the chunk's dense position gradients (3 n_features per pair, padded) stay
            # within CHUNK_BYTES: with three species (2,100 features) 1,024 pairs were
            # 68 MB of new pages every chunk, 1.4x the CPU of 256 pairs (aspirin)
            per_pair, budget = n_features, CHUNK_BYTES
            if compact:
                # X of the neighbour's blocks, not a dense row, per pair, written straight
                # into the call's array (or pooled scratch where periodic images of one
                # atom are summed): 4x the budget, LiCu's 12-atom cells 8 % faster
                per_pair, budget = self._compact_width(n_species), 4 * CHUNK_BYTES
            target = max(16, min(self.chunk_pairs, budget // (24 * per_pair)))
        spline = self._radial()
        # the centre's own Gaussian, per centre species: its row of l = 0 coefficients
        own = torch.zeros((n_species, S * n_chan), dtype=dtype, device=device)
        at_zero = self.central_weight * spline.at_zero()[:, 0] / math.sqrt(4.0 * math.pi)
        w_pair = None
        if mix is None:
            own.view(n_species, S, n_chan)[torch.arange(S), torch.arange(S)] = at_zero
        else:
            w = torch.as_tensor(mix, dtype=dtype, device=device)
            own[:] = (w[:, :, None] * at_zero).reshape(n_species, -1)
            w_pair = w[torch.as_tensor(atom_sp[nl.neighbors[order]], device=device)]

        def pair_terms(w0, w1):
            """Cutoff, radial functions (n channels) and harmonics of pairs w0..w1."""
            d = distances[w0:w1]
            fc, dfc = self.cutoff_fn(d)
            radial, dradial = spline(d, derivative=want_grad)  # (P, n_max, L+1)
            if w_pair is not None:
                # (P, d n_max, L+1): neighbour j's radial functions times its weights
                radial, dradial = (None if t is None else
                                   (w_pair[w0:w1, :, None, None] * t[:, None]).flatten(1, 2)
                                   for t in (radial, dradial))
            ylm, dylm = spherical_harmonics(vectors[w0:w1], self.l_max, gradients=want_grad)
            return [vectors[w0:w1], d, fc, dfc, radial, dradial, ylm, dylm]

        # the per-pair terms are evaluated for windows of WINDOW_PAIRS pairs (a chunk
        # with gradients is small, and these are many small ops), not for every pair at
        # once: on 1,000 Si atoms their 100 MB of new pages took half the values' time
        window = max(WINDOW_PAIRS, target)
        w0 = w1 = 0
        terms: list = []
        c0 = 0
        while c0 < N:
            # as many centres as fit in `target` pairs (at least one)
            c1 = int(np.searchsorted(pair_start, pair_start[c0] + target, side="right")) - 1
            c1 = min(max(c1, c0 + 1), N)
            p0, p1 = int(pair_start[c0]), int(pair_start[c1])
            if p1 > w1 or not terms:
                w0, w1 = p0, max(p1, min(int(pair_start[N]), p0 + window))
                terms = pair_terms(w0, w1)
            pairs = [None if t is None else t[p0 - w0:p1 - w0] for t in terms]
            own_rows = None
            if self.central_weight != 0.0:
                own_rows = own.index_select(0, torch.as_tensor(atom_sp[c0:c1], device=device))
            self._compute_chunk(
                c0, c1, group[p0:p1] - c0 * S, pairs, own_rows, S, n_chan, blocks, values,
                want_grad, strain, out, grads, p0, p1)
            c0 = c1
        if want_pos and not compact:
            gcentre, gatom = out.indices()

        def np_(t):
            return None if t is None else t.detach().cpu().numpy()

        feature_labels = labels.copy()
        names = ("species_a", "species_b", "l", "n_a", "n_b")
        if mix is None:
            sp = np.asarray(species)
            feature_labels[:, 0] = sp[labels[:, 0]]
            feature_labels[:, 1] = sp[labels[:, 1]]
        else:
            names = ("channel_a", "channel_b", "l", "n_a", "n_b")
        return DescriptorResult(
            values=np_(values), centre_structure=nl.atom_structure.copy(),
            centre_atom=np.arange(N) - nl.atom_offsets[nl.atom_structure],
            centre_species=nl.numbers.copy(), centre_types=nl.numbers.copy(),
            n_atoms=np.diff(nl.atom_offsets), feature_labels=feature_labels,
            feature_label_names=names,
            # less the spare row; a sink's caller holds the arrays
            gradients=np_(None if grads is None or sink is not None or compact
                          else grads[:-1]),
            gradient_centre=np_(gcentre), gradient_atom=np_(gatom),
            strain_gradients=np_(None if sink is not None else strain),
            info={"descriptor": "SOAP", **self.get_params(), "species": list(species)})

    def _compute_chunk(self, c0, c1, group, pairs, own_rows, S, n, blocks, values_out,
                       want_grad, strain_out, out, grads_out, p0, p1):
        """Values (and gradients) of centres c0..c1 whose sorted pairs are given (``pairs``:
        vectors, distances, cutoff and its derivative, radial functions (``n`` channels)
        and their derivatives, harmonics and their gradients) in ``S`` groups per centre;
        ``own_rows`` (nc, S n): the centres' own Gaussians (None: no central weight)."""
        dtype, device = self.dtype, self.device
        L = self.l_max
        k = S * n
        nc = c1 - c0
        n_lm = (L + 1) ** 2
        n_features = values_out.shape[1]
        counts = np.bincount(group, minlength=nc * S)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(group.shape[0]) - starts[group]  # a pair's place in its group
        # each centre's slots: J_s for neighbour species s, side by side (a padding per
        # species, not one for all: a centre with 40 Cu and 10 Li neighbours had 80
        # slots, and LiCu's padded GEMMs 1.9x the pairs; 1.3x per species)
        Js = counts.reshape(nc, S).max(axis=0) if nc else np.zeros(S, dtype=np.int64)
        if not Js.any():
            Js[0] = 1
        uniform = S > 1 and _values_uniform(want_grad, nc, Js)
        if uniform:  # one J for all: the densities in one GEMM per l
            Js = np.full(S, Js.max())
        off = np.concatenate([[0], np.cumsum(Js)[:-1]])
        Jt = int(Js.sum())
        spans = [(int(o), int(o + j)) for o, j in zip(off, Js)]  # per species: its rows
        slot = torch.as_tensor((group // S) * Jt + off[group % S] + rank, device=device)
        n_slots = nc * Jt

        vec, dist, fc, dfc, radial, dradial, ylm, dylm = pairs

        # padded radial functions (L+1, slots, n) and harmonics (slots, lm)
        r_pad = torch.zeros((L + 1, n_slots, n), dtype=dtype, device=device)
        r_pad.index_copy_(1, slot, (fc[:, None, None] * radial).permute(2, 0, 1))
        y_pad = torch.zeros((n_slots, n_lm), dtype=dtype, device=device)
        y_pad.index_copy_(0, slot, ylm)
        y_pad3 = y_pad.view(nc, Jt, n_lm)

        coeffs = []  # per l: (nc, k, 2l+1)
        for l in range(L + 1):
            r3 = r_pad[l].view(nc, Jt, n)
            y3 = y_pad3[:, :, l * l:(l + 1) ** 2]
            if uniform:
                J = spans[0][1]
                c_l = torch.bmm(r3.reshape(nc * S, J, n).transpose(1, 2),
                                y3.reshape(nc * S, J, 2 * l + 1)).view(nc, k, 2 * l + 1)
            elif S > 1:
                c_l = torch.cat([torch.bmm(r3[:, a:b].transpose(1, 2), y3[:, a:b])
                                 for a, b in spans], dim=1)
            else:
                c_l = torch.bmm(r3.transpose(1, 2), y3)
            coeffs.append(c_l)
        if own_rows is not None:
            coeffs[0].view(nc, k).add_(own_rows)

        values = values_out[c0:c1]
        for l, blk in enumerate(blocks):
            p_l = torch.bmm(coeffs[l], coeffs[l].transpose(1, 2)).view(nc, k * k)
            torch.mul(p_l.index_select(1, blk["flat"]), blk["scale"],
                      out=values[:, blk["cols"]])
        inv = None
        if self.normalize:
            norms = torch.linalg.norm(values, dim=1)
            # an all-zero spectrum (isolated atom, central_weight = 0) stays zero
            inv = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
            values.mul_(inv[:, None])
        if not want_grad:
            return

        # with normalisation, q = p/|p| and dq = (dp - q (q.dp)) / |p|: 1/|p| goes into
        # the radial factors, the projection is one in-place update below
        rs = fc[:, None, None] * radial
        dr = dfc[:, None, None] * radial + fc[:, None, None] * dradial
        if inv is not None:
            pair_inv = inv[torch.as_tensor(group // S, device=device)][:, None, None]
            rs = rs * pair_inv
            dr = dr * pair_inv
            r_pad.index_copy_(1, slot, rs.permute(2, 0, 1))
        dr_pad = torch.zeros((L + 1, n_slots, n), dtype=dtype, device=device)
        dr_pad.index_copy_(1, slot, dr.permute(2, 0, 1))
        unit = vec / dist[:, None]
        unit_pad = torch.zeros((n_slots, 3), dtype=dtype, device=device)
        unit_pad.index_copy_(0, slot, unit)
        dy_pad = torch.zeros((n_slots, 3, n_lm), dtype=dtype, device=device)
        dy_pad.index_copy_(0, slot, dylm)
        dy_pad3 = dy_pad.view(nc, Jt * 3, n_lm)
        y_padN = y_pad.view(nc, Jt, n_lm)

        if S > 1:
            self._species_gradients(nc, S, spans, group, slot, (rs, dr, unit, vec),
                                    (r_pad, dr_pad, unit_pad, dy_pad3, y_padN), coeffs,
                                    values, inv, strain_out, out, grads_out, c0, c1, p0, p1)
            return
        pair_grad = torch.empty((n_slots, 3, n_features), dtype=dtype, device=device)
        for l, blk in enumerate(blocks):
            # d c_(n,lm)/d r_ij contracted with c_(n',lm) is
            # X[a, n, n'] = dR_n rhat_a u_n' + R_n v_(a,n') with u = sum_m Y_lm c_(n',lm)(i),
            # v = sum_m dY_lm/dr c_(n',lm)(i); feature t = (n_t <= n'_t) of the block is
            # s_t (X[n_t, n'_t] + X[n'_t, n_t]). It is built for the upper triangle only,
            # straight into its columns: the operands come out of the GEMMs already
            # gathered to the T columns (one-hot selections ``pick``, ``pick_s`` with s_t)
            T = blk["pick"].shape[1] // 2
            lm = slice(l * l, (l + 1) ** 2)
            ct = coeffs[l].transpose(1, 2) @ blk["pick"]  # (nc, 2l+1, 2T): c_(n_t), c_(n'_t)
            u = torch.bmm(y_padN[:, :, lm], ct).view(n_slots, 2 * T)
            v = torch.bmm(dy_pad3[:, :, lm], ct).view(n_slots, 3, 2 * T)
            rr = r_pad[l] @ blk["pick_s"]  # (slots, 2T): s_t R_(n_t), s_t R_(n'_t)
            dd = dr_pad[l] @ blk["pick_s"]
            w = dd[:, :T] * u[:, T:]
            w.addcmul_(dd[:, T:], u[:, :T])
            g = pair_grad[..., blk["cols"]]
            torch.mul(unit_pad[:, :, None], w[:, None, :], out=g)
            g.addcmul_(rr[:, None, :T], v[:, :, T:])
            g.addcmul_(rr[:, None, T:], v[:, :, :T])
        pair_grad = pair_grad.view(nc, Jt, 3, n_features)
        q = values
        if inv is not None:
            proj = torch.bmm(pair_grad.view(nc, Jt * 3, n_features), q[:, :, None])
            pair_grad.addcmul_(proj.view(nc, Jt, 3, 1), q[:, None, None, :], value=-1.0)
        if strain_out is not None:
            vec_pad = torch.zeros((n_slots, 3), dtype=dtype, device=device)
            vec_pad.index_copy_(0, slot, vec)
            # strain[c, a, b, f] = sum_j g[c, j, a, f] r[c, j, b]
            st = torch.bmm(vec_pad.view(nc, Jt, 3).transpose(1, 2),
                           pair_grad.reshape(nc, Jt, 3 * n_features))
            strain_out[c0:c1] = st.view(nc, 3, 3, n_features).transpose(1, 2)
        if out is not None:
            out.write(grads_out, p0, p1, c0, c1, slot, pair_grad.view(n_slots, 3, n_features),
                      pair_grad.sum(1))

    def _image_density(self, nc, images, real, padded, pair):
        """The density gradients of a chunk's entries, its pairs' summed over the periodic
        images of one atom: ``D[a, n, lm] = sum_p rhat_a dR_nl Y_lm + R_nl dY_lm/dr_a``
        (radial factors with 1/|p| as the pairs'), since X of a pair is ``D c`` per l
        (``X[a, l, n, beta] = sum_m D[a, n, lm] c[l, m, beta]``, c the centre's scaled
        coefficients). Summing D (3 n (L+1)^2 numbers a pair) instead of X (3 (L+1) n k)
        and multiplying by c once per entry, in a GEMM per l over the chunk's centres,
        saves writing and re-reading X for every image. Returns ``(D, e_max, e_slot)``:
        D (nc e_max, 3, n, lm) with each centre's entries padded to ``e_max`` slots, and
        ``e_slot`` the entries' slots (None when no centre is padded)."""
        dtype, device = self.dtype, self.device
        n, L = self.n_max, self.l_max
        n_lm = (L + 1) ** 2
        entry, e_centre = images
        _, _, _, dy_pad3, y_padN = padded
        rs, dr, unit, _ = pair  # in the pairs' (species, centre) order
        counts = np.bincount(e_centre, minlength=nc)
        e_max = max(int(counts.max()), 1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slots = e_centre * e_max + np.arange(e_centre.shape[0]) - starts[e_centre]
        e_slot = None if bool((counts == e_max).all()) else torch.as_tensor(slots,
                                                                             device=device)
        l_of = torch.repeat_interleave(torch.arange(L + 1, device=device),
                                       2 * torch.arange(L + 1, device=device) + 1)
        y = y_padN.reshape(-1, n_lm).index_select(0, real)  # (P, lm)
        dy = dy_pad3.reshape(-1, 3, n_lm).index_select(0, real)  # (P, 3, lm)
        d = torch.mul(unit[:, :, None, None], (dr[:, :, l_of] * y[:, None, :])[:, None])
        d.addcmul_(rs[:, :, l_of][:, None], dy[:, :, None, :])  # (P, 3, n, lm)
        d_e = torch.zeros((nc * e_max, 3, n, n_lm), dtype=dtype, device=device)
        d_e.index_add_(0, torch.as_tensor(slots[entry], device=device), d)
        return d_e, e_max, e_slot

    def _species_gradients(self, nc, S, spans, group, slot, pair, padded, coeffs, values, inv,
                           strain_out, out, grads_out, c0, c1, p0, p1):
        """Position (and strain) gradients of a chunk with several species.

        ``X`` of every l (n x k per pair and direction, the feature scale sqrt(2/(2l+1))
        folded into ``u`` and ``v``) is built for the real pairs only, in (species,
        centre) order, in a buffer ``xr`` with a spare zero entry last; per species one
        ``gather`` (:meth:`_species_index`) then writes every feature of its pairs
        once, zeros included, so no dense gradient array is zero-filled, padded or
        written twice. The sums over a (centre, species) group's pairs weighted by 1 and
        by the pair vector's components (the centre's own entry and the strain
        gradients, both linear in ``X``) are contractions over the group's pairs,
        batched GEMMs on the padded slots, gathered the same way from ``xs``.
        """
        dtype, device = self.dtype, self.device
        n, L = self.n_max, self.l_max
        k = S * n
        nk = n * k
        n_features = values.shape[1]
        width = self._compact_width(S)  # (L + 1) n k and the spare entry
        rs, dr, unit, vec = pair
        r_pad, dr_pad, unit_pad, dy_pad3, y_padN = padded
        Jt = spans[-1][1]  # slots per centre: J_s per species side by side
        n_slots = nc * Jt
        n_pairs = rs.shape[0]
        # the pairs in (species, centre) order (they come in (centre, species) order)
        key = (group % S) * nc + group // S
        order = np.argsort(key, kind="stable")
        bounds = np.searchsorted(key[order], np.arange(S + 1) * nc)
        order_t = torch.as_tensor(order, device=device)
        real = slot.index_select(0, order_t)
        rs, dr, unit = (t.index_select(0, order_t) for t in (rs, dr, unit))
        # weights of the group sums: 1 (own entry) and the pair vector (strain)
        W = 1 if strain_out is None else 4
        w_pad = torch.zeros((n_slots, W), dtype=dtype, device=device)
        w_pair = torch.ones((n_pairs, W), dtype=dtype, device=device)
        if W > 1:
            w_pair[:, 1:] = vec
        w_pad.index_copy_(0, slot, w_pair)
        wu_pad = (w_pad[:, :, None] * unit_pad[:, None, :]).view(n_slots, W * 3, 1)

        compact = isinstance(out, _CompactPairs)
        dens = None  # periodic images summed as density gradients (see _image_density)
        if compact:  # X is the result: written straight into the call's array
            images = out.images(c0, c1, p0 + order)
            summed = images is not None and len(images[1]) <= IMAGE_SHARE * n_pairs
            xr, t, finish = out.rows(c0, c1, p0 + order,
                                     np.repeat(np.arange(S), np.diff(bounds)), summed=summed,
                                     images=images)
            if summed:
                dens = self._image_density(nc, images, real, padded, (rs, dr, unit, None))
        else:
            xr = torch.empty((n_pairs, 3, width), dtype=dtype, device=device)
        xr[..., -1] = 0.0
        # the species side by side per (centre, weight, direction): two gathers sum them
        xs = torch.empty((nc, W, 3, S, width), dtype=dtype, device=device)
        xs[..., -1] = 0.0
        xsv = xs.permute(0, 3, 1, 2, 4)  # (nc, S, W, 3, width): the padded group order
        t_slot = weights = None
        if compact and inv is not None:
            # t = q . dp/|p| = sum X_sym Q = sum X A, Q: q in X's layout per (centre,
            # species); A: Q with the diagonal block symmetrised as X is (A = Q + Q^T off
            # its diagonal, sqrt 2 Q on it: Q is upper triangular there). Then per slot
            # t_a = sum_l rhat_a dR.(A u) + R.(A v_a): small GEMMs on the groups
            qx = values.new_zeros((nc, S, width))
            for s, index in enumerate(self._species_index(S)):
                qx[:, s].index_copy_(1, index, values)  # the spare column: any q, unused
            weights = qx[..., :-1].reshape(nc, S, L + 1, n, k)
            for s in range(S):
                d = weights[:, s, :, :, s * n:(s + 1) * n]
                d.add_(d.transpose(-1, -2).clone())
                d.diagonal(dim1=-2, dim2=-1).mul_(math.sqrt(0.5))
            t_slot = values.new_zeros((n_slots, 3))
        u_ls: list = []
        v_ls: list = []
        for l in range(L + 1):
            ct = coeffs[l].transpose(1, 2) * math.sqrt(2.0 / (2 * l + 1))
            lm = slice(l * l, (l + 1) ** 2)
            u_pad = torch.bmm(y_padN[:, :, lm], ct).view(n_slots, k)
            v_pad = torch.bmm(dy_pad3[:, :, lm], ct).view(n_slots, 3, k)
            u3, v4 = u_pad.view(nc, Jt, k), v_pad.view(nc, Jt, 3, k)
            if t_slot is not None:
                a_l = weights[:, :, l].transpose(-1, -2)  # (nc, S, k, n)
                au = torch.cat([torch.bmm(u3[:, a:b], a_l[:, s])
                                for s, (a, b) in enumerate(spans)], dim=1).view(n_slots, n)
                av = torch.cat([torch.bmm(v4[:, a:b].reshape(nc, 3 * (b - a), k), a_l[:, s])
                                for s, (a, b) in enumerate(spans)], dim=1).view(n_slots, 3, n)
                t_slot.addcmul_(unit_pad, (dr_pad[l] * au).sum(-1, keepdim=True))
                t_slot.add_((av * r_pad[l][:, None, :]).sum(-1))
            cols = slice(l * nk, (l + 1) * nk)
            if dens is None:
                u_ls.append(u_pad)
                v_ls.append(v_pad)
            else:  # the entries' X of this l: their density gradients times c
                d_e, e_max, e_slot = dens
                x_l = torch.bmm(d_e.view(nc, e_max * 3 * n, -1)[:, :, lm], ct)
                x_l = x_l.view(nc * e_max, 3, nk)
                if e_slot is not None:
                    x_l = x_l.index_select(0, e_slot)
                xr[:, :, cols] = x_l
            # sum_j w_j X_j per group: (W 3 n) x k and (W n) x (3 k) GEMMs over the slots
            a1 = (wu_pad * dr_pad[l][:, None, :]).view(nc, Jt, W * 3 * n)
            a2 = (w_pad[:, :, None] * r_pad[l][:, None, :]).view(nc, Jt, W * n)
            xg = xsv[..., cols].unflatten(-1, (n, k))  # (nc, S, W, 3, n, k)
            for s, (a, b) in enumerate(spans):  # per species: its J_s slots
                s1 = torch.bmm(a1[:, a:b].transpose(1, 2), u3[:, a:b])
                s2 = torch.bmm(a2[:, a:b].transpose(1, 2), v4[:, a:b].reshape(nc, b - a, 3 * k))
                torch.add(s1.view(nc, W, 3, n, k), s2.view(nc, W, n, 3, k).transpose(2, 3),
                          out=xg[:, s])
            for s in range(S):
                # symmetrise the diagonal block; its diagonal carries scale 1, not sqrt 2
                # (compact pairs stay raw: CompactGradients.in_layout symmetrises the
                # vectors they are contracted with instead, once per vector, not per pair)
                d = xg[:, s, ..., s * n:(s + 1) * n]
                d.add_(d.transpose(-1, -2).clone())
                d.diagonal(dim1=-2, dim2=-1).mul_(math.sqrt(0.5))
        # X[a, l, n, beta] = dR_nl rhat_a u_(l, beta) + R_nl v_(a, l, beta) per real pair,
        # every l in two ops (per l they were 16-wide inner loops, 30 % of the call)
        if dens is None:
            u = torch.stack(u_ls, 1).index_select(0, real)  # (P, L+1, k)
            v = torch.stack(v_ls, 2).index_select(0, real)  # (P, 3, L+1, k)
            x = xr[:, :, :-1].unflatten(-1, (L + 1, n, k))
            drl = dr.transpose(1, 2)  # (P, L+1, n)
            torch.mul(unit[:, :, None, None, None],
                      (drl[..., None] * u[:, :, None, :])[:, None], out=x)
            x.addcmul_(rs.transpose(1, 2)[:, None, :, :, None], v[:, :, :, None, :])
        if not compact:
            for s in range(S):
                d = x[bounds[s]:bounds[s + 1], ..., s * n:(s + 1) * n]
                d.add_(d.transpose(-1, -2).clone())
                d.diagonal(dim1=-2, dim2=-1).mul_(math.sqrt(0.5))
        grad = None if compact else torch.empty((n_pairs, 3, n_features), dtype=dtype,
                                                device=device)
        for s, index in enumerate(self._species_index(S)):
            a, b = int(bounds[s]), int(bounds[s + 1])
            # gather with a broadcast index: 2x index_select's speed along dim 1
            if b > a and not compact:
                torch.gather(xr[a:b].view(-1, width), 1,
                             index[None].expand(3 * (b - a), n_features),
                             out=grad[a:b].view(-1, n_features))
        # the group sums over the species: each feature's (one or) two contributions
        pointers = self._contributors(S)
        side = xs.view(nc * W * 3, S * width)
        total = torch.gather(side, 1, pointers[0][None].expand(side.shape[0], n_features))
        total.add_(torch.gather(side, 1, pointers[1][None].expand(side.shape[0],
                                                                   n_features)))
        total = total.view(nc, W, 3, n_features)
        if compact:
            if t_slot is None:  # unnormalised: no rank-one term
                t.zero_()
            else:
                torch.index_select(t_slot, 0, real, out=t)
            if finish is not None:  # periodic images of one atom: summed into its entry
                finish()
        if inv is not None and not compact:
            # dq = (dp - q (q . dp)) / |p|, 1/|p| already in the radial factors
            q = values
            q_pair = q.index_select(0, torch.as_tensor((group // S)[order], device=device))
            proj = torch.bmm(grad, q_pair[:, :, None])
            grad.addcmul_(proj, q_pair[:, None, :], value=-1.0)
        # the projection once, after the sum over the species (it is linear)
        if inv is not None:
            q = values
            g_t = total.view(nc, W * 3, n_features)
            g_t.addcmul_(torch.bmm(g_t, q[:, :, None]), q[:, None, :], value=-1.0)
        totals = total[:, 0]  # (nc, 3, F)
        if strain_out is not None:
            # strain[c, a, b, f] = sum_j g[c, j, a, f] r[c, j, b]; sums hold (b, a)
            strain_out[c0:c1] = total[:, 1:].transpose(1, 2)
        if compact:
            torch.neg(totals, out=out.own[c0:c1])
        elif out is not None:
            # pair i (chunk order) is row inverse[i] of grad
            inverse = torch.as_tensor(np.argsort(order), device=device)
            out.write(grads_out, p0, p1, c0, c1, inverse, grad, totals)
