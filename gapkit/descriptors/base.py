"""The result type every descriptor returns, and the gradient bookkeeping they share."""

from __future__ import annotations

import mmap
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .._checks import atomic_number, count, is_integer
from .._threads import with_call_threads
from ..data import as_frames

__all__ = ["BatchPlan", "BatchSink", "Descriptor", "DescriptorResult", "empty_array",
           "empty_tensor", "fold_pair_gradients", "release_pool", "resolve_species"]

#: arrays at least this large have all their pages mapped when they are made
#: (:func:`empty_array`)
POPULATE_BYTES = 64 << 20
#: Linux's ``madvise`` option (5.14 on; Python's mmap may not name it) that maps every
#: page of a mapping in one call (the number means something else on other systems)
MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


#: mappings of freed large arrays kept for the next ones (their pages stay mapped, so a
#: descriptor call after another one, e.g. the next block of a fit, maps none anew), at
#: most this many bytes in all; :func:`release_pool` hands them back to the system
POOL_BYTES = 1 << 30
#: Linux's ``madvise`` option that hands a range's pages back (the range stays reserved)
MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
_pool: list = []  # (mapping, bytes of it whose pages are kept), the newest first
_pool_lock = threading.Lock()


def _recycle(buffer) -> None:
    """Keep a freed array's mapping for :func:`empty_array` (within :data:`POOL_BYTES`,
    the newest first: the oldest are handed back to the system; of one larger than all
    of it only that much is kept, the pages beyond handed back at once). It runs while
    the array still holds the mapping, so nothing here resizes it (:func:`_take` does)."""
    kept = len(buffer)
    if kept > POOL_BYTES:
        kept = POOL_BYTES - POOL_BYTES % mmap.PAGESIZE
        try:
            buffer.madvise(MADV_DONTNEED, kept, len(buffer) - kept)
        except (OSError, ValueError):
            return
    with _pool_lock:
        _pool.insert(0, (buffer, kept))
        total = 0
        for i, (_, size) in enumerate(_pool):
            total += size
            if total > POOL_BYTES:
                del _pool[i:]
                break


def _take(n_bytes: int):
    """A kept mapping for an array of ``n_bytes``, or None: the smallest of ``n_bytes``
    to twice that as it is; else one reshaped (``mremap``, which moves page tables and
    copies nothing): the smallest larger one cut to size, its tail handed back (cheaper
    than mapping pages), or else the largest one grown, only its new pages mapped. A
    fit's blocks differ in size, so most of them would miss a pool of fixed sizes and
    map every page anew."""
    with _pool_lock:
        if not _pool:
            return None
        sizes = [size for _, size in _pool]
        fits = [i for i, size in enumerate(sizes) if n_bytes <= size <= 2 * n_bytes]
        larger = [i for i, size in enumerate(sizes) if size > 2 * n_bytes]
        if fits or larger:
            pick = min(fits or larger, key=sizes.__getitem__)
        else:
            pick = max(range(len(sizes)), key=sizes.__getitem__)
        buffer, kept = _pool.pop(pick)
    size = kept if fits else n_bytes
    if len(buffer) != size:
        try:
            buffer.resize(size)
        except (OSError, ValueError, SystemError, BufferError):  # a new mapping instead
            buffer.close()
            return None
    if size > kept:  # the pages up to the kept end are mapped already
        _populate(buffer, kept - kept % mmap.PAGESIZE)
    return buffer


def _populate(buffer, start: int = 0) -> None:
    """Map the pages of ``buffer`` from ``start`` (page-aligned) to its end in one call."""
    try:
        buffer.madvise(MADV_POPULATE_WRITE, start, len(buffer) - start)
    except OSError:  # a kernel before 5.14: faulted in as they come
        pass


def release_pool() -> int:
    """Hand the mappings kept for large arrays back to the system; returns their bytes."""
    with _pool_lock:
        total = sum(size for _, size in _pool)
        _pool.clear()
    return total


def empty_array(shape, dtype=np.float64, *, at_least: int | None = None) -> np.ndarray:
    """An uninitialised numpy array; when it is large (descriptor gradients reach
    gigabytes) its pages are mapped in one call (``MADV_POPULATE_WRITE``), not faulted
    in one by one as they are first written, and when it is freed its mapping is kept
    for the next large array (up to :data:`POOL_BYTES`; :func:`release_pool`).

    Measured here (2026-12-07, 20 3-BPA frames' 0.84 GB of gradients between other
    calls' arrays, system CPU per atom): 500 µs mapped at once on 4 kB pages, 550-850
    faulted one by one, 1,200-1,700 on transparent huge pages faulted one by one and
    1,200-4,800 mapped at once (with ``madvise`` huge pages the kernel compacts memory
    to find them, which costs more than it saves once memory is fragmented; alone they
    had been 3x cheaper, so they were used before). Where the option is missing (not
    Linux, a kernel before 5.14) the pages are faulted in as they come. ``at_least``: the
    size from which this is done (an array written whole at once can take a smaller one;
    default :data:`POPULATE_BYTES`).
    """
    at_least = POPULATE_BYTES if at_least is None else at_least
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    n_bytes = count * dtype.itemsize
    if n_bytes < max(at_least, 1) or not sys.platform.startswith("linux"):
        return np.empty(shape, dtype=dtype)  # (an empty mmap is an error)
    buffer = _take(n_bytes)
    if buffer is None:
        buffer = mmap.mmap(-1, n_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        _populate(buffer)
    flat = np.frombuffer(buffer, dtype=dtype, count=count)
    # every view of it (numpy's, reshaped included, and torch.from_numpy's) keeps `flat`
    # alive (numpy's views name the array whose base is the mapping): once it is gone,
    # nothing reads the mapping any more
    weakref.finalize(flat, _recycle, buffer).atexit = False
    return flat.reshape(shape)


def empty_tensor(shape, dtype: torch.dtype, device: torch.device, *,
                 at_least: int | None = None) -> torch.Tensor:
    """``torch.empty``, through :func:`empty_array` (pages mapped at once) for float64 on
    the CPU."""
    if device.type == "cpu" and dtype == torch.float64:
        return torch.from_numpy(empty_array(shape, at_least=at_least))
    return torch.empty(shape, dtype=dtype, device=device)


@dataclass(frozen=True)
class DescriptorResult:
    """Descriptor values of many centres, with optional gradients.

    A *centre* is what carries one local energy: an atom for SOAP, an ordered pair
    of atoms for the two-body descriptor. All arrays are numpy (float64 unless
    stated); :meth:`torch` gives torch views.

    Attributes
    ----------
    values : ndarray of shape (n_centres, n_features)
        Descriptor of each centre.
    centre_structure : ndarray of shape (n_centres,)
        Index (into the frames passed to ``compute``) of the structure of each centre.
    centre_atom : ndarray of shape (n_centres,)
        Index, within its structure, of the atom the centre's local energy belongs to.
    centre_species : ndarray of shape (n_centres,)
        Atomic number of that atom.
    centre_types : ndarray of shape (n_centres,)
        Kernel type of the centre: kernels between centres of different type are
        zero (the central species for SOAP, the species pair for two-body).
    n_atoms : ndarray of shape (n_structures,)
        Number of atoms of each structure.
    feature_labels : ndarray of shape (n_features, len(feature_label_names))
        Integer labels of each feature column.
    feature_label_names : tuple of str
        Names of the label columns.
    gradients : ndarray of shape (n_gradients, 3, n_features) or None
        ``gradients[g, a] = d values[gradient_centre[g]] / d r[gradient_atom[g], a]``
        (Å^-1 per unit of the descriptor). Sparse: one entry for every (centre,
        atom) pair with a non-zero derivative, the centre's own atom included; the
        periodic images of an atom are summed into the entry of the atom.
    gradient_centre : ndarray of shape (n_gradients,)
        Row of ``values`` the gradient entry belongs to.
    gradient_atom : ndarray of shape (n_gradients,)
        Atom index, within the centre's structure, that is displaced.
    strain_gradients : ndarray of shape (n_centres, 3, 3, n_features) or None
        ``d values / d epsilon_ab`` for the homogeneous deformation
        ``r -> (1 + epsilon) r`` of positions and cell. The virial of an energy
        ``E = sum_i e(q_i)`` is ``W = -dE/d epsilon`` (eV).
    """

    values: np.ndarray
    centre_structure: np.ndarray
    centre_atom: np.ndarray
    centre_species: np.ndarray
    centre_types: np.ndarray
    n_atoms: np.ndarray
    feature_labels: np.ndarray
    feature_label_names: tuple
    gradients: np.ndarray | None = None
    gradient_centre: np.ndarray | None = None
    gradient_atom: np.ndarray | None = None
    strain_gradients: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_centres(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def atom_offsets(self) -> np.ndarray:
        """Start of each structure in a concatenation of all atoms, shape (n_structures + 1,)."""
        return np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)

    @property
    def gradient_atom_global(self) -> np.ndarray:
        """``gradient_atom`` as an index into the concatenation of all structures' atoms."""
        if self.gradient_atom is None:
            raise ValueError("this result has no gradients; compute with gradients=True")
        return self.atom_offsets[self.centre_structure[self.gradient_centre]] + self.gradient_atom

    def structure(self, k: int) -> DescriptorResult:
        """The part of this result that belongs to structure ``k`` (structure index 0)."""
        sel = np.nonzero(self.centre_structure == k)[0]
        remap = -np.ones(self.n_centres, dtype=np.int64)
        remap[sel] = np.arange(sel.size)
        grads = gcentre = gatom = None
        if self.gradients is not None:
            gsel = np.nonzero(self.centre_structure[self.gradient_centre] == k)[0]
            grads = self.gradients[gsel]
            gcentre = remap[self.gradient_centre[gsel]]
            gatom = self.gradient_atom[gsel]
        return DescriptorResult(
            values=self.values[sel], centre_structure=np.zeros(sel.size, dtype=np.int64),
            centre_atom=self.centre_atom[sel], centre_species=self.centre_species[sel],
            centre_types=self.centre_types[sel], n_atoms=self.n_atoms[k:k + 1],
            feature_labels=self.feature_labels, feature_label_names=self.feature_label_names,
            gradients=grads, gradient_centre=gcentre, gradient_atom=gatom,
            strain_gradients=None if self.strain_gradients is None else self.strain_gradients[sel],
            info=dict(self.info))

    def torch(self, name: str, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """Attribute ``name`` as a torch tensor (zero-copy on CPU for float64)."""
        arr = getattr(self, name)
        if arr is None:
            raise ValueError(f"{name} was not computed; pass gradients=True to compute()")
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.is_floating_point():
            t = t.to(dtype=dtype)
        return t.to(device=device) if device is not None else t


def concatenate(results: Sequence[DescriptorResult], structure_offsets: Sequence[int],
                **arrays) -> DescriptorResult:
    """Concatenate results of consecutive batches of structures into one; ``arrays``
    (``values``, ``gradients``, ``strain_gradients``) given whole are used as they are."""
    if len(results) == 1 and structure_offsets[0] == 0 and not arrays:
        return results[0]
    first = results[0]
    centre_offsets = np.cumsum([0] + [r.n_centres for r in results[:-1]])

    def cat(name, shift=None):
        if name in arrays:
            return arrays[name]
        parts = [getattr(r, name) for r in results]
        if parts[0] is None:
            return None
        if shift is not None:
            parts = [p + s for p, s in zip(parts, shift)]
        out = empty_array((sum(p.shape[0] for p in parts), *parts[0].shape[1:]),
                          np.result_type(*parts))
        return np.concatenate(parts, out=out)

    return DescriptorResult(
        values=cat("values"),
        centre_structure=cat("centre_structure", structure_offsets),
        centre_atom=cat("centre_atom"), centre_species=cat("centre_species"),
        centre_types=cat("centre_types"), n_atoms=cat("n_atoms"),
        feature_labels=first.feature_labels, feature_label_names=first.feature_label_names,
        gradients=cat("gradients"), gradient_centre=cat("gradient_centre", centre_offsets),
        gradient_atom=cat("gradient_atom"), strain_gradients=cat("strain_gradients"),
        info=dict(first.info))


@dataclass(frozen=True)
class BatchSink:
    """A batch's part of the output arrays :meth:`Descriptor.compute` allocated once:
    its rows of ``values`` and ``strain`` (views), and the whole ``gradients`` array,
    whose rows ``entry_offset`` onward are the batch's entries and whose last row
    (``spare_row``) takes what is written for padding."""

    values: torch.Tensor
    strain: torch.Tensor | None
    gradients: torch.Tensor | None
    entry_offset: int
    spare_row: int


@dataclass(frozen=True)
class BatchPlan:
    """A batch whose neighbour list is built and whose sizes are known: ``run(sink)``
    computes it, into ``sink``'s arrays or (``sink=None``) arrays of its own."""

    n_centres: int
    n_entries: int  # position-gradient entries (0 without them)
    n_features: int
    run: Callable[..., DescriptorResult]


def fold_pair_gradients(
    pair_gradients: torch.Tensor,
    pair_centre: torch.Tensor,
    centre_atom_global: torch.Tensor,
    pair_neighbor_atom: torch.Tensor,
    pair_vectors: torch.Tensor,
    n_centres: int,
    n_atoms_total: int,
    strain: bool,
    total: torch.Tensor | None = None,
):
    """Turn derivatives with respect to pair vectors into position and strain gradients.

    A centre ``c`` (owned by atom ``i``) depends on positions only through its pair
    vectors ``r_ij = r_j + S h - r_i``. With ``g_p = d q_c / d r_ij`` for pair ``p``:

    .. math::

        \\frac{\\partial q_c}{\\partial \\mathbf r_k} = \\sum_{p:\\, j_p = k} g_p
            - \\delta_{ik} \\sum_p g_p ,\\qquad
        \\frac{\\partial q_c}{\\partial \\epsilon_{ab}} = \\sum_p g_{p,a}\\, r_{ij,b}.

    Parameters
    ----------
    pair_gradients : tensor of shape (n_pairs, 3, n_features)
    pair_centre : tensor of shape (n_pairs,)
        Row of the centre the pair belongs to.
    centre_atom_global : tensor of shape (n_centres,)
        Global atom index of the atom that owns each centre.
    pair_neighbor_atom : tensor of shape (n_pairs,)
        Global atom index of the neighbour (periodic images folded onto the atom).
    pair_vectors : tensor of shape (n_pairs, 3)
    n_centres, n_atoms_total : int
    strain : bool
        Also return the strain gradient.
    total : tensor of shape (n_centres, 3, n_features), optional
        ``sum_p g_p`` per centre, when the caller already has it.

    Returns
    -------
    gradients : tensor (n_gradients, 3, n_features)
    gradient_centre, gradient_atom_global : tensor (n_gradients,)
        Sorted by centre, then atom. Every centre has an entry for its own atom.
    strain_gradients : tensor (n_centres, 3, 3, n_features) or None
    """
    n_features = pair_gradients.shape[-1]
    device = pair_gradients.device
    if total is None:
        total = torch.zeros((n_centres, 3, n_features), dtype=pair_gradients.dtype, device=device)
        total.index_add_(0, pair_centre, pair_gradients)
    rows = torch.arange(n_centres, device=device)
    keys = torch.cat([pair_centre * n_atoms_total + pair_neighbor_atom,
                      rows * n_atoms_total + centre_atom_global])
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    gradients = torch.zeros((unique.shape[0], 3, n_features), dtype=pair_gradients.dtype,
                            device=device)
    gradients.index_add_(0, inverse, torch.cat([pair_gradients, -total]))
    strain_gradients = None
    if strain:
        strain_gradients = torch.zeros((n_centres, 3, 3, n_features),
                                       dtype=pair_gradients.dtype, device=device)
        strain_gradients.index_add_(
            0, pair_centre, pair_gradients[:, :, None, :] * pair_vectors[:, None, :, None])
    return gradients, unique // n_atoms_total, unique % n_atoms_total, strain_gradients


def resolve_species(frames, species, frame_offset: int = 0) -> tuple[int, ...]:
    """The sorted species list (atomic numbers): the fixed one (chemical symbols or atomic
    numbers, checked against ``frames``) or inferred."""
    present = sorted({int(z) for atoms in frames for z in np.unique(atoms.numbers)})
    if species is None:
        if not present:
            raise ValueError("no atoms in the frames; cannot infer species")
        return tuple(present)
    if isinstance(species, (str, int)) or not hasattr(species, "__iter__"):
        raise ValueError(f"species must be a list of chemical symbols or atomic numbers "
                         f"(e.g. ['H', 'C'] or [1, 6]), got {species!r}")
    fixed = tuple(sorted({atomic_number(z) for z in species}))
    for k, atoms in enumerate(frames):
        unknown = sorted(set(np.unique(atoms.numbers).tolist()) - set(fixed))
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            raise ValueError(
                f"frame {k + frame_offset}: species {names} not in the descriptor's fixed "
                f"species {list(fixed)}; add them to species=[...] or leave species=None "
                "to infer it from the data")
    return fixed


_GRADIENT_KINDS = ("positions", "strain")


def parse_gradients(gradients) -> tuple[bool, bool]:
    """``(positions, strain)`` flags from ``True``/``False`` or a list of kinds."""
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


def frame_batches(frames, max_atoms: int):
    """Consecutive ``(start, stop)`` ranges of frames holding about ``max_atoms`` atoms."""
    start, count = 0, 0
    for k, atoms in enumerate(frames):
        if count and count + len(atoms) > max_atoms:
            yield start, k
            start, count = k, 0
        count += len(atoms)
    if start < len(frames):
        yield start, len(frames)


class Descriptor:
    """Shared driver: batches of frames -> ``_compute_batch`` -> one result.

    Subclasses set ``species``, ``batch_atoms``, ``progress`` and implement
    ``_compute_batch(frames, frame_offset, species, want_pos, want_strain)``.
    """

    name = "descriptor"

    def _set_runtime(self, species, dtype, device, batch_atoms, progress) -> None:
        """Check and store the settings every descriptor shares (species list, dtype,
        device, batch size, progress bar)."""
        if not is_integer(batch_atoms):  # an int, not 512.0
            raise ValueError(f"batch_atoms must be an integer >= 1, got {batch_atoms!r}")
        count(batch_atoms, "batch_atoms")
        self.species = None if species is None else resolve_species([], species)
        if self.species is not None and not self.species:
            raise ValueError("species must list at least one atomic number, or be None "
                             "to infer it from the data")
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.batch_atoms = int(batch_atoms)
        self.progress = bool(progress)

    @with_call_threads
    def compute(self, frames, *, gradients=False) -> DescriptorResult:
        """Descriptors of ``frames`` (ase.Atoms or a sequence), optionally with gradients.

        ``gradients`` is ``True`` (positions and strain), ``False``, or a subset of
        ``["positions", "strain"]``. Frames are processed in batches of about
        ``batch_atoms`` atoms, with a progress bar when ``progress`` is set, on the
        threads :func:`gapkit.set_threads` chose (the free cores by default).
        """
        frames = as_frames(frames, require=f"{type(self).__name__}.compute")
        want_pos, want_strain = parse_gradients(gradients)
        species = resolve_species(frames, self.species)
        batches = list(frame_batches(frames, self.batch_atoms))
        iterator = batches
        if self.progress and len(batches) > 1:
            from tqdm.auto import tqdm

            iterator = tqdm(batches, desc=type(self).__name__, unit="batch")
        if (want_pos or want_strain) and len(batches) > 1 and hasattr(self, "_plan_batch"):
            return self._compute_planned(frames, batches, iterator, species, want_pos,
                                         want_strain)
        results, offsets = [], []
        for start, stop in iterator:
            results.append(self._compute_batch(frames[start:stop], start, species,
                                               want_pos, want_strain))
            offsets.append(start)
        return concatenate(results, offsets)

    def _compute_planned(self, frames, batches, iterator, species, want_pos, want_strain):
        """Gradients of several batches written straight into one array each: the
        batches are planned first (neighbour lists: their sizes), so no batch's
        gradients are copied again (concatenating them cost as much as computing them:
        a second array of gigabytes, first touched)."""
        plans = [self._plan_batch(frames[start:stop], start, species, want_pos, want_strain)
                 for start, stop in batches]
        n_centres = sum(p.n_centres for p in plans)
        n_entries = sum(p.n_entries for p in plans)
        n_features = plans[0].n_features
        values = torch.empty((n_centres, n_features), dtype=self.dtype, device=self.device)
        strain = grads = None
        if want_strain:
            strain = empty_tensor((n_centres, 3, 3, n_features), self.dtype, self.device)
        if want_pos:
            grads = empty_tensor((n_entries + 1, 3, n_features), self.dtype, self.device)
        results = []
        c0 = e0 = 0
        for k, _ in enumerate(iterator):
            plan, plans[k] = plans[k], None  # a batch's neighbour list goes once it is done
            c1 = c0 + plan.n_centres
            results.append(plan.run(BatchSink(
                values=values[c0:c1], strain=None if strain is None else strain[c0:c1],
                gradients=grads, entry_offset=e0, spare_row=n_entries)))
            c0, e0 = c1, e0 + plan.n_entries

        def np_(t):
            return None if t is None else t.detach().cpu().numpy()

        return concatenate(results, [start for start, _ in batches], values=np_(values),
                           gradients=np_(None if grads is None else grads[:-1]),
                           strain_gradients=np_(strain))
