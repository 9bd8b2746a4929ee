"""Design-matrix rows: observations as linear functionals of the local energies.

For a term with kernel ``k`` and sparse points ``z_m`` the local energy of centre
``c`` is ``eps(q_c) = sum_m alpha_m k(q_c, z_m)``, so every observation row is the
same functional applied to ``k(., z_m)``:

* total energy of frame A: ``sum_{c in A} k(q_c, z_m)``;
* force on atom j along a: ``-sum_e dk(q_{c_e}, z_m)/dq . dq_{c_e}/dr_{j,a}`` over the
  gradient entries ``e`` of atom j;
* virial (a, b): ``-sum_{c in A} dk(q_c, z_m)/dq . dq_c/d epsilon_ab`` (symmetrised).

The derivative rows are GEMMs of the descriptor gradients against the sparse points
(``kernel.grad_contract``), reduced with ``index_add``; nothing is differentiated by
autograd column by column. Kernels between centres of different type are zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import env_bytes
from ..data import voigt_symmetrised
from ..descriptors.base import frame_batches, release_pool
from .observations import ENERGY, FORCES, VIRIAL

__all__ = ["DesignCache", "SparseSet", "TrainingData", "design_blocks", "design_cache",
           "design_rows", "functional_rows", "gather_rows", "gradients_for", "kmm", "type_mask",
           "usable_memory"]

#: gradient entries contracted at once (memory: entries x 3 x M floats and the entries'
#: kernel weights, entries x M), fewer where that would pass ENTRY_BYTES (M > ~2,000:
#: at M 5,000 the 1,024 entries were 164 MB of temporaries per chunk on every worker)
ENTRY_CHUNK = 1024
ENTRY_BYTES = 64 * 2**20


@dataclass
class SparseSet:
    """Sparse (inducing) points of one term: descriptor rows, their kernel types and,
    when they were chosen from training environments, the indices of those."""

    points: torch.Tensor  # (M, D); an array is converted
    types: torch.Tensor  # (M,); an array is converted
    indices: np.ndarray | None = None  # (M,) rows of the candidate environments, -1: none

    def __post_init__(self):
        if not torch.is_tensor(self.points):
            self.points = torch.as_tensor(np.asarray(self.points, dtype=np.float64))
        if not torch.is_tensor(self.types):
            self.types = torch.as_tensor(np.asarray(self.types, dtype=np.int64))
        if self.indices is not None:
            self.indices = np.asarray(self.indices, dtype=np.int64)

    @property
    def n(self) -> int:
        """Number of sparse points M."""
        return int(self.points.shape[0])

    def __iter__(self):
        # ``points, types, indices = sparse_points(...)``, as before 0.2 (numpy arrays)
        yield self.points.numpy()
        yield self.types.numpy()
        yield self.indices


def type_mask(types1: torch.Tensor, types2: torch.Tensor, dtype) -> torch.Tensor:
    return (types1[:, None] == types2[None, :]).to(dtype)


#: design rows of several-species SOAP terms read compact position gradients (issue 17);
#: False: the dense ones (for comparisons)
COMPACT_GRADIENTS = True


def functional_rows(kernel, result, sparse: SparseSet, *, energy: bool, forces: bool,
                    virial: bool, local: bool = False, unit: bool = False, compact=None):
    """Kernel functionals of one descriptor result against the sparse points.

    Parameters
    ----------
    kernel : gapkit.kernels.DescriptorKernel
    result : DescriptorResult
        With position gradients when ``forces`` and strain gradients when ``virial``.
    sparse : SparseSet
    unit : bool
        Use the unit kernel (``delta = 1``): rows then scale with ``delta^2``.
    compact : CompactGradients, optional
        The position gradients of ``result`` held compactly (``SOAP.compute_compact``;
        ``kernel`` has ``compact_grad_contract``), read instead of ``result.gradients``.

    Returns
    -------
    dict with (when asked) ``energy`` (n_frames, M), ``forces`` (n_atoms_total, 3, M),
    ``virial`` (n_frames, 6, M) in Voigt order, ``local`` (n_centres, M).
    """
    dtype = sparse.points.dtype
    q = result.torch("values", dtype=dtype)
    z = sparse.points
    types = torch.as_tensor(result.centre_types)
    mask = type_mask(types, sparse.types, dtype)
    value = kernel.unit_value if unit else kernel.value
    contract = kernel.unit_grad_contract if unit else kernel.grad_contract
    n_frames = result.n_structures
    out = {}
    structure = torch.as_tensor(result.centre_structure)
    if energy or local:
        kc = value(q, z) * mask
        if local:
            out["local"] = kc
        if energy:
            out["energy"] = torch.zeros((n_frames, z.shape[0]), dtype=dtype).index_add_(
                0, structure, kc)
    if forces and compact is not None:
        out["forces"] = _compact_forces(kernel, q, sparse, compact, types, result, unit)
    elif forces:
        g = result.torch("gradients", dtype=dtype)
        centre = torch.as_tensor(result.gradient_centre)
        atom = torch.as_tensor(result.gradient_atom_global)
        out["forces"] = _contract_by_type(contract, q, sparse, g, centre, types, atom,
                                          int(result.n_atoms.sum()), ENTRY_CHUNK)
    if virial:
        sym = voigt_symmetrised(result.torch("strain_gradients", dtype=dtype))  # (n_c, 6, D)
        out["virial"] = _contract_by_type(contract, q, sparse, sym, torch.arange(q.shape[0]),
                                          types, structure, n_frames,
                                          max(1, ENTRY_CHUNK // 2))
    return out


def _compact_forces(kernel, q, sparse: SparseSet, compact, types, result, unit: bool):
    """Force rows from :class:`~gapkit.descriptors.soap.CompactGradients`: the centres' own
    entries (dense) as :func:`_contract_by_type` does, the neighbour pairs per (centre
    type, neighbour species) by a GEMM over that species' blocks only."""
    n_atoms = int(result.n_atoms.sum())
    contract = kernel.unit_grad_contract if unit else kernel.grad_contract
    own_atom = torch.as_tensor(result.atom_offsets[result.centre_structure]
                               + result.centre_atom)
    rows = _contract_by_type(contract, q, sparse, compact.own.to(q.dtype),
                             torch.arange(q.shape[0]), types, own_atom, n_atoms, ENTRY_CHUNK)
    width = compact.x.shape[2]
    entry_types = types[compact.centre]
    for t in torch.unique(sparse.types).tolist():
        cols = torch.nonzero(sparse.types == t)[:, 0]
        z = sparse.points[cols]
        step = min(ENTRY_CHUNK, max(64, ENTRY_BYTES // (8 * (3 * width + 4 * cols.numel()))))
        block = torch.zeros((n_atoms, 3, cols.numel()), dtype=q.dtype)
        for s in range(compact.index.shape[0]):
            entries = torch.nonzero((entry_types == t) & (compact.species == s))[:, 0]
            if entries.numel() == 0:
                continue
            zx = compact.in_layout(z, s)
            for e0 in range(0, entries.numel(), step):
                e = entries[e0:e0 + step]
                block.index_add_(0, compact.atom[e], kernel.compact_grad_contract(
                    q, z, compact.x[e].to(q.dtype), zx, compact.t[e].to(q.dtype),
                    compact.centre[e], unit=unit), alpha=-1.0)
        rows[:, :, cols] += block
    return rows


def _contract_by_type(contract, q, sparse: SparseSet, g, centre, centre_types, target,
                      n_target: int, chunk: int) -> torch.Tensor:
    """``-sum_e dk(q_{centre_e}, z)/dq . g_e`` added into row ``target[e]``, shape
    (n_target, components, M). Each kernel type is contracted only against its own sparse
    points (the kernel between types is zero): with C, H and O in aspirin this does about a
    third of the work of contracting every entry against all M columns and masking."""
    m = sparse.n
    rows = torch.zeros((n_target, g.shape[1], m), dtype=q.dtype)
    entry_types = centre_types[centre]
    for t in torch.unique(sparse.types).tolist():
        cols = torch.nonzero(sparse.types == t)[:, 0]
        entries = torch.nonzero(entry_types == t)[:, 0]
        if entries.numel() == 0:
            continue
        z = sparse.points[cols]
        step = min(chunk, max(64, ENTRY_BYTES // (8 * (g.shape[1] + 1) * cols.numel())))
        block = rows if cols.numel() == m else torch.zeros((n_target, g.shape[1], cols.numel()),
                                                           dtype=q.dtype)
        for e0 in range(0, entries.numel(), step):
            e = entries[e0:e0 + step]
            block.index_add_(0, target[e], contract(q, z, g[e], centre[e]), alpha=-1.0)
        if block is not rows:
            rows[:, :, cols] = block
    return rows


def gather_rows(blocks: dict, obs, atom_offsets: np.ndarray) -> torch.Tensor:
    """Rows of ``blocks`` (from :func:`functional_rows`) in the order of ``obs``.

    ``obs.frame`` must index the frames of the result the blocks came from.
    """
    some = next(iter(blocks.values()))
    m = some.shape[-1]
    out = torch.empty((obs.n_rows, m), dtype=some.dtype)
    kinds = obs.kind
    sel = np.nonzero(kinds == ENERGY)[0]
    if sel.size:
        out[torch.as_tensor(sel)] = blocks["energy"][torch.as_tensor(obs.frame[sel])]
    sel = np.nonzero(kinds == FORCES)[0]
    if sel.size:
        atoms = atom_offsets[obs.frame[sel]] + obs.atom[sel]
        out[torch.as_tensor(sel)] = blocks["forces"][torch.as_tensor(atoms),
                                                     torch.as_tensor(obs.component[sel])]
    sel = np.nonzero(kinds == VIRIAL)[0]
    if sel.size:
        out[torch.as_tensor(sel)] = blocks["virial"][torch.as_tensor(obs.frame[sel]),
                                                     torch.as_tensor(obs.component[sel])]
    return out


def gradients_for(observations) -> set:
    """The descriptor gradients that the rows of ``observations`` need:
    ``"positions"`` for forces, ``"strain"`` for virials."""
    kinds = set(np.unique(observations.kind).tolist())
    grads = set()
    if FORCES in kinds:
        grads.add("positions")
    if VIRIAL in kinds:
        grads.add("strain")
    return grads


def design_rows(terms, sparse_sets, frames, observations, gradients=None, *,
                unit: bool = False, results: list | None = None,
                given: list | None = None, compacts: list | None = None) -> torch.Tensor:
    """The design-matrix rows ``K_NM`` of ``observations`` of ``frames`` (one block).

    Parameters
    ----------
    terms : sequence of objects with ``descriptor`` and ``kernel`` (e.g. gapkit.Term)
    sparse_sets : sequence of SparseSet, one per term
    frames : list of ase.Atoms
    observations : Observations
        Frame indices relative to ``frames``.
    gradients : set, optional
        Descriptor gradients to compute (default: what the observations need).
    unit : bool
        Unit kernels (``delta = 1``), for the hyper-parameter statistics.
    results : list, optional
        Receives each term's descriptor result (for prior variances of the same block).
    given : list, optional
        Each term's descriptor result of ``frames``, computed before (with the gradients
        the observations need): not computed again.
    compacts : list, optional
        With ``results``: receives each term's compact position gradients (or None where
        its result holds dense ones), so that the results may hold compact gradients.

    Returns
    -------
    torch.Tensor, shape (n_rows, M)
        Columns: the terms' sparse points, term after term.
    """
    if gradients is None:
        gradients = gradients_for(observations)
    kinds = set(np.unique(observations.kind).tolist())
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    out = []
    for i, (term, sparse) in enumerate(zip(terms, sparse_sets)):
        compact = None
        if (given is None and (results is None or compacts is not None)
                and compact_eligible(term, frames, gradients)):
            res, compact = term.descriptor.compute_compact(frames,
                                                           strain="strain" in gradients)
        else:
            res = _descriptors(term, frames, gradients) if given is None else given[i]
        if results is not None:
            results.append(res)
        if compacts is not None:
            compacts.append(compact)
        with torch.no_grad():
            blocks = functional_rows(term.kernel, res, sparse, energy=ENERGY in kinds,
                                     forces=FORCES in kinds, virial=VIRIAL in kinds,
                                     local=False, unit=unit, compact=compact)
        out.append(gather_rows(blocks, observations, offsets))
    return torch.cat(out, dim=1)


def compact_eligible(term, frames, gradients) -> bool:
    """Whether the term's force rows can read compact position gradients: a descriptor
    that makes them for these frames' species and a kernel that reads them."""
    from ..descriptors.base import resolve_species

    descriptor = term.descriptor
    if "positions" not in gradients or not hasattr(term.kernel, "compact_grad_contract"):
        return False
    if not hasattr(descriptor, "compact_gradients_for") or not COMPACT_GRADIENTS:
        return False
    return descriptor.compact_gradients_for(len(resolve_species(frames, descriptor.species)))


def _descriptors(term, frames, gradients):
    """The term's descriptor result of ``frames`` with the ``gradients`` asked for."""
    return term.descriptor.compute(frames, gradients=sorted(gradients) or False)


def design_blocks(terms, sparse_sets, frames, observations, gradients=None, *,
                  batch_atoms: int, unit: bool = False, progress: bool = False,
                  desc: str = "design matrix", with_results: bool = False,
                  compact_results: bool = False):
    """Stream the design matrix over blocks of about ``batch_atoms`` atoms.

    Yields ``(start, sel, block_observations, rows)``: the first frame of the block,
    the indices of its observations in ``observations``, those observations (frame
    indices relative to the block) and their rows (:func:`design_rows`). Memory is
    O(block x M). The fit, the hyper-parameter statistics, the cross-validation and the
    leave-one-out pass all iterate this one generator. ``with_results`` adds a fifth
    item, the block's descriptor results (one per term); ``compact_results`` (with it) a
    sixth, each term's compact position gradients or None (its result then holds dense
    ones).
    """
    if gradients is None:
        gradients = gradients_for(observations)
    blocks = list(frame_batches(frames, batch_atoms))
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc=desc, leave=False)
    cache = _ACTIVE.get()
    try:
        for start, stop in blocks:
            sel = np.nonzero((observations.frame >= start) & (observations.frame < stop))[0]
            if sel.size == 0:
                continue
            sub = observations.select(sel).shifted(start)
            results: list = []
            compacts: list | None = [] if compact_results else None
            # a list: frames read from a file (FrameFile) are read once per block, and the
            # cache holds the Atoms it keys on (their ids are not reused while it holds them)
            block = list(frames[start:stop])
            rows = None if cache is None else cache.get(terms, sparse_sets, block, sub,
                                                        gradients, unit)
            if rows is None:
                rows = design_rows(terms, sparse_sets, block, sub, gradients, unit=unit,
                                   results=results if with_results else None,
                                   compacts=compacts)
                if cache is not None:
                    cache.put(terms, sparse_sets, block, sub, gradients, unit, rows)
            elif with_results:  # the rows from the cache, the descriptors computed again
                for t in terms:
                    if compacts is not None and compact_eligible(t, block, gradients):
                        res, compact = t.descriptor.compute_compact(
                            block, strain="strain" in gradients)
                    else:
                        res, compact = _descriptors(t, block, gradients), None
                    results.append(res)
                    if compacts is not None:
                        compacts.append(compact)
            if not with_results:
                yield start, sel, sub, rows
            elif compacts is None:
                yield start, sel, sub, rows, results
            else:
                yield start, sel, sub, rows, results, compacts
    finally:  # the blocks' descriptor mappings, reused block after block
        release_pool()


class DesignCache:
    """Design rows kept in memory, up to ``max_bytes``, so that the later passes of one
    fit over the same frames, terms and sparse points (the noise cross-validation's passes
    after the first) read them instead of recomputing descriptors and GEMMs.

    Rows are found frame by frame: a later pass may cut the frames into other blocks (the
    predictive-variance pass reads a subset of the frames, fold by fold) and still read the
    rows of every frame it finds. A frame's key is what its rows are a function of: the
    terms (descriptor and kernel objects, and the kernel's parameters, which an optimiser
    may change in place), the sparse sets, the frame (the object: use the cache only while
    it is not modified), its observation rows, the gradients and ``unit``. The keyed
    objects are held, so no key can be reused by another object. Blocks past ``max_bytes``
    are not kept (computed each time, as without a cache). Consumers must not modify the
    rows they are given (none in gapkit does)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self._frames: dict = {}  # frame key -> (block rows, row indices in the block)
        self._held: list = []

    @staticmethod
    def _keys(terms, sparse_sets, frames, sub, gradients, unit: bool):
        """``(its rows in the block, its key)`` per frame of the block with rows."""
        kernels = tuple((id(t.descriptor), id(t.kernel), repr(t.kernel.get_params()))
                        for t in terms)
        common = (kernels, tuple(id(s.points) for s in sparse_sets),
                  tuple(sorted(gradients)), bool(unit))
        order = np.argsort(sub.frame, kind="stable")
        bounds = np.searchsorted(sub.frame[order], np.arange(len(frames) + 1))
        for k, atoms in enumerate(frames):
            idx = order[bounds[k]:bounds[k + 1]]
            if idx.size == 0:
                continue
            digest = hashlib.blake2b(digest_size=16)
            for arr in (sub.kind, sub.atom, sub.component):
                digest.update(np.ascontiguousarray(arr[idx]).tobytes())
            yield idx, (common, id(atoms), digest.hexdigest())

    def get(self, terms, sparse_sets, frames, sub, gradients, unit: bool):
        """The rows of observations ``sub`` of ``frames`` (one block), or None unless every
        frame's rows are kept. Served as kept when they are one kept block, in order."""
        found = []
        for idx, key in self._keys(terms, sparse_sets, frames, sub, gradients, unit):
            kept = self._frames.get(key)
            if kept is None:
                return None
            found.append((idx, *kept))
        self.hits += 1
        first = found[0][1]
        if all(rows is first for _, rows, _ in found) and first.shape[0] == sub.kind.size:
            at = np.concatenate([where for *_, where in found])
            if np.array_equal(at, np.arange(at.size)) and np.array_equal(
                    np.concatenate([idx for idx, *_ in found]), at):
                return first
        out = torch.empty((sub.kind.size, first.shape[1]), dtype=first.dtype)
        for idx, rows, where in found:
            out[torch.as_tensor(idx)] = rows[torch.as_tensor(where)]
        return out

    def put(self, terms, sparse_sets, frames, sub, gradients, unit: bool,
            rows: torch.Tensor) -> None:
        """Keep a block's rows if they fit in what is left of ``max_bytes``."""
        size = rows.element_size() * rows.nelement()
        if self.nbytes + size > self.max_bytes:
            return
        for idx, key in self._keys(terms, sparse_sets, frames, sub, gradients, unit):
            self._frames[key] = (rows, idx)
        self._held.append((terms, sparse_sets, frames))
        self.nbytes += size


_ACTIVE: ContextVar[DesignCache | None] = ContextVar("gapkit_design_cache", default=None)


def default_cache_bytes() -> int:
    """A quarter of the memory this process may use: the smaller of the machine's physical
    memory and the address-space limit (``ulimit -v``/``prlimit --as``), or
    ``GAPKIT_DESIGN_CACHE_GB`` (0: no cache)."""
    size = env_bytes("GAPKIT_DESIGN_CACHE_GB",
                     "the design rows a fit may keep in memory (0: none)")
    return usable_memory() // 4 if size is None else size


def usable_memory() -> int:
    """Bytes this process may use: the machine's physical memory, or less under an
    address-space limit (``ulimit -v`` / ``prlimit --as``)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 * 2**30
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit not in (resource.RLIM_INFINITY, -1):
        total = min(total, limit)
    return int(total)


@contextlib.contextmanager
def design_cache(max_bytes: int | None = None):
    """Within the block, :func:`design_blocks` keeps the rows it computes
    (:class:`DesignCache`, ``max_bytes`` default :func:`default_cache_bytes`) and serves
    them again to later passes over the same block. Nested: the outer cache serves."""
    active = _ACTIVE.get()
    if active is not None:
        yield active
        return
    cache = DesignCache(default_cache_bytes() if max_bytes is None else max_bytes)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def using_cache(cache: DesignCache):
    """Within the block, :func:`design_blocks` reads and keeps rows in ``cache`` (a Dask
    worker's cache of its partition: :mod:`gapkit.gp.parallel`)."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def kmm(terms, sparse_sets) -> torch.Tensor:
    """K_MM: the kernel between the sparse points of each term (zero between different
    kernel types), block-diagonal over terms (M x M, eV^2)."""
    blocks = []
    for term, z in zip(terms, sparse_sets):
        k = term.kernel.value(z.points, z.points) * type_mask(z.types, z.types, z.points.dtype)
        blocks.append(k.detach())
    return torch.block_diag(*blocks)


@dataclass(frozen=True)
class TrainingData:
    """The training frames of a fitted GAP as its passes see them: frames, observation
    rows (labels minus baselines and e0, with their noise) and the descriptor gradients
    those rows need."""

    frames: list
    observations: object
    gradients: frozenset
