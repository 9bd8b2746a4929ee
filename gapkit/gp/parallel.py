"""The passes of a fit over its training frames, spread over Dask workers.

Every pass a fit makes over the data is a function of a contiguous range of frames whose
results combine exactly: the streaming QR of the DTC solve gives the R factor of its rows,
and R factors of stacked row blocks combine by one QR of the stacked factors (TSQR: the R
of ``[R_1; R_2]`` is the R of ``[A_1; A_2]``); the noise cross-validation's fold Grams,
right-hand sides and error sums add; its per-row held-out variances concatenate. So within
``with dask_passes(client):`` each pass runs as one task per partition of the frames on the
workers of ``client`` (``dask.distributed``; no scheduler of our own), and only M x M
matrices and sums come back, combined pairwise on the workers (a tree: log2 W rounds of
M^2 x 8 bytes). Without it, the passes run in this process exactly as before.

The frames go to the workers once per fit, one partition each (balanced by atoms), as a
task Dask can recompute on another worker if one dies; a worker keeps its partition's
design rows (:class:`~gapkit.gp.design.DesignCache`, a quarter of its memory limit) for the
later passes of the same fit, as one process does.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from .._threads import call_threads

__all__ = ["MEMORY_ADVICE", "DaskPasses", "Partition", "PerRow", "SendsTensors", "active",
           "dask_passes", "describe", "partition_bounds"]

_ACTIVE: ContextVar["DaskPasses | None"] = ContextVar("gapkit_dask_passes", default=None)

#: how long (s) a client waits for a scheduler address to answer before the clear error
CONNECT_TIMEOUT = 20


def active() -> "DaskPasses | None":
    """The :class:`DaskPasses` of the enclosing :func:`dask_passes`, or None (one process)."""
    return _ACTIVE.get()


def partition_bounds(n_atoms, n_parts: int) -> list[tuple[int, int]]:
    """Contiguous frame ranges ``(start, stop)``, at most ``n_parts`` (fewer with fewer
    frames), each with about the same number of atoms (the cost of a pass is about linear
    in atoms), none empty."""
    n_atoms = np.asarray(n_atoms, dtype=float)
    n_parts = max(1, min(int(n_parts), n_atoms.size))
    ends = np.cumsum(n_atoms)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n_parts) / n_parts, side="left") + 1
    edges = np.unique(np.concatenate([[0], np.clip(cuts, 1, n_atoms.size), [n_atoms.size]]))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


class _Array:
    """A CPU tensor on the wire, as the numpy array that shares its memory."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __reduce__(self):
        return (_Array, (self.array,))


def _to_wire(value):
    import torch

    if isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.is_sparse:
        try:
            return _Array(value.detach().numpy())
        except (TypeError, RuntimeError):  # a dtype numpy lacks: torch's own pickling
            return value
    if type(value) in (tuple, list):
        return type(value)(_to_wire(v) for v in value)
    if type(value) is dict:
        return {k: _to_wire(v) for k, v in value.items()}
    return value


def _from_wire(value):
    import torch

    if isinstance(value, _Array):
        array = value.array
        if not array.flags.writeable:  # read-only memory: a copy that may be written
            array = array.copy(order="K")
        return torch.from_numpy(array)
    if type(value) in (tuple, list):
        return type(value)(_from_wire(v) for v in value)
    if type(value) is dict:
        return {k: _from_wire(v) for k, v in value.items()}
    return value


#: sent before an object's arrays (see SendsTensors)
_PAD = np.zeros(8, dtype=np.uint8)


def _rebuilt(cls, _pad, state: dict):
    obj = cls.__new__(cls)
    obj.__dict__.update(_from_wire(state))  # past a frozen dataclass's __setattr__
    return obj


class SendsTensors:
    """Pickles the object's CPU tensors (attributes, and inside their tuples, lists and
    dicts) as numpy arrays, which pickle protocol 5 (what Dask sends with) passes out of
    band, without a copy. torch pickles a tensor's storage through ``torch.save``: an
    R-sized copy on the sender and another on the receiver, 191 MiB each for an M = 5,000
    factor, the peak of a worker that combines two (measured). Everything else in
    ``__dict__`` is pickled as usual.

    A small array goes first: Dask's TCP comm reads a message's first out-of-band buffer
    into the buffer of its header bytes, so that array's data sits at an odd offset
    (unaligned), and LAPACK's wrappers copy an unaligned array before working in it
    (measured: +191 MiB in a combine of received factors). The buffers after it are read
    into arrays of their own, aligned."""

    def __reduce__(self):
        return (_rebuilt, (type(self), _PAD, _to_wire(dict(self.__dict__))))


@dataclass
class Partition:
    """A worker's frames: ``frames[start:stop]`` of the fit's list, and the design rows it
    has computed for them (made on the worker on first use)."""

    frames: list
    start: int
    cache: object = field(default=None, repr=False)
    shared: dict = field(default_factory=dict, repr=False)  # token -> the object


    def __getstate__(self) -> dict:
        """A copy for another worker (Dask moves data to a worker that steals a task) takes
        the frames only: the cache holds rows keyed on this worker's objects, and is big."""
        return {"frames": self.frames, "start": self.start, "cache": None, "shared": {}}


def _make_partition(frames, start: int) -> Partition:
    """On the worker: its frames as a list (a FrameFile range is read here, from the file)."""
    return Partition(list(frames), int(start))


def _fingerprint(arg) -> tuple:
    """What identifies an argument sent to the workers: the object, and for terms the
    kernels' parameters, which an optimiser changes in place (the length-scale search):
    changed, the terms are sent again instead of the workers' stale copy being used."""
    items = arg if isinstance(arg, (list, tuple)) else ()
    return (id(arg), tuple(repr(x.kernel.get_params()) for x in items if hasattr(x, "kernel")))


class PerRow:
    """An argument of :meth:`DaskPasses.map` with one value per observation row (an array
    over the rows of ``obs``): each partition's task gets its own rows' values (in one
    process, pass the array itself)."""

    def __init__(self, values):
        self.values = np.asarray(values)


@dataclass
class _Shared(SendsTensors):
    """An argument every task of a pass shares (terms, sparse points, factors), sent to
    every worker once instead of once per task (boxed: Dask scatters a bare list's items
    one by one)."""

    args: tuple
    #: set for the terms and sparse sets: a worker gives every task of the fit the first
    #: object it saw under this token (Dask may hand a worker a second copy of a value)
    token: str | None = None


def _worker_cache_bytes() -> int:
    from .design import default_cache_bytes

    budget = default_cache_bytes()
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ImportError, ValueError, AttributeError):  # not on a worker
        limit = None
    return int(min(budget, limit // 4)) if limit else budget


#: what to lower when a partition's pass runs out of memory
MEMORY_ADVICE = ("give the workers more memory (dask worker --memory-limit; a LocalCluster's "
                 "memory_limit), use more workers (smaller partitions), or lower batch_atoms "
                 "(design rows per block) or the number of sparse points (M)")


def describe(bounds: tuple[int, int], n_atoms: int | None = None) -> str:
    """``frames a-b of the fit`` (and its atoms): how errors name a partition."""
    atoms = "" if n_atoms is None else f", {n_atoms} atoms"
    return f"frames {bounds[0]}-{bounds[1] - 1} of the fit{atoms}"


def _allocation_failed(exc: BaseException) -> bool:
    """A MemoryError, or torch's allocator failing (a RuntimeError)."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def _run(fn, part: Partition, obs, cache: bool, *shared: _Shared):
    """One pass on one partition; with ``cache``, with the worker's design rows of that
    partition. Out of memory: a MemoryError naming the partition and what to lower."""
    from . import design

    args = (part.frames, obs, part.start,
            *(box.args[0] if box.token is None else part.shared.setdefault(box.token,
                                                                             box.args[0])
              for box in shared))
    try:
        if not cache:
            return fn(*args)
        if part.cache is None:
            part.cache = design.DesignCache(_worker_cache_bytes())
        with design.using_cache(part.cache):  # type: ignore[arg-type]
            return fn(*args)
    except (MemoryError, RuntimeError) as exc:
        if not _allocation_failed(exc):
            raise
        part.cache = None  # give back what the rows held
        where = describe((part.start, part.start + len(part.frames)),
                         sum(len(a) for a in part.frames))
        raise MemoryError(f"a Dask worker ran out of memory in {fn.__name__} on the partition "
                          f"of {where} ({exc}); {MEMORY_ADVICE}") from None


class DaskPasses:
    """Runs passes over frames on the workers of a ``dask.distributed`` client: one
    partition of the frames per worker (``partitions_per_worker`` more for finer load
    balance)."""

    def __init__(self, client, *, partitions_per_worker: int = 1, progress: bool = False):
        self.client = client
        self.partitions_per_worker = int(partitions_per_worker)
        #: a progress bar over the partitions of each pass as the workers finish them
        self.progress = bool(progress)
        self._owner: dict = {}  # task key -> (its pass, its partition's index)
        self._key: tuple | None = None
        self._frames: list | None = None
        self.bounds: list[tuple[int, int]] = []
        self._parts: list = []
        self._held: dict = {}  # _fingerprint -> (argument, its future on the workers)
        self._atoms: list[int] = []  # atoms per partition
        self.tasks = 0

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def partitions(self, frames) -> list[tuple[int, int]]:
        """Send ``frames`` to the workers (once per list of frames; the same frames again
        reuse what is there) and return the partitions' frame ranges."""
        # a FrameFile (frames read from a file when used) says what it is; a list, its Atoms
        key = getattr(frames, "partition_key", None) or tuple(map(id, frames))
        if key != self._key:
            n = max(1, self.n_workers) * self.partitions_per_worker
            if len(frames) < n:
                warnings.warn(f"{len(frames)} frames for {n} Dask partitions: "
                              f"{len(frames)} partitions (one frame each); the other workers "
                              "stay idle", UserWarning, stacklevel=4)
            sizes = getattr(frames, "n_atoms", None)  # a FrameFile's, from its index
            sizes = np.asarray([len(a) for a in frames] if sizes is None else sizes)
            self.bounds = partition_bounds(sizes, n)
            self._atoms = [int(sizes[a:b].sum()) for a, b in self.bounds]
            # partition p on worker p (round robin): left to itself the scheduler may put
            # them all on the first worker, and every later task follows its data there
            # (seen: 2 workers, both partitions on one). Elsewhere if that worker dies.
            workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
            self._parts = [self.client.submit(_make_partition, frames[a:b], a, pure=False,
                                              workers=[workers[p % len(workers)]],
                                              allow_other_workers=True)
                           for p, (a, b) in enumerate(self.bounds)]
            self._owner.update({f.key: ("reading the frames", p)
                                for p, f in enumerate(self._parts)})
            self._key, self._frames = key, frames  # held: the ids stay those of these frames
        return self.bounds

    def rows(self, obs) -> list[np.ndarray]:
        """The indices of each partition's observation rows in ``obs``."""
        return [np.nonzero((obs.frame >= a) & (obs.frame < b))[0] for a, b in self.bounds]

    def map(self, fn, frames, obs, *args) -> list:
        """Futures of ``fn(frames_p, obs_p, start_p, *args)`` for every partition ``p``
        (``obs_p``: its rows of the observations ``obs``, frame indices relative to
        ``start_p``; None without ``obs``)."""
        from .design import _ACTIVE as driver_cache

        self.partitions(frames)
        shared = self._share([a for a in args if not isinstance(a, PerRow)])
        cache = driver_cache.get() is not None  # as here: the CV's passes, not a single one
        futures = []
        rows = self.rows(obs) if obs is not None else [None] * len(self.bounds)
        where = self.client.who_has(self._parts)
        for (a, _), part, r in zip(self.bounds, self._parts, rows):
            sub = None if obs is None else obs.select(r).shifted(a)
            holder = list(where.get(part.key, ()))  # there if it can (its cache)
            pin = {"workers": holder, "allow_other_workers": True} if holder else {}
            it = iter(shared)
            boxes = [_Shared((arg.values[r],)) if isinstance(arg, PerRow) else next(it)
                     for arg in args]
            futures.append(self.client.submit(_run, fn, part, sub, cache, *boxes,
                                              pure=False, **pin))
        self._owner.update({f.key: (fn.__name__, p) for p, f in enumerate(futures)})
        self.tasks += len(futures)
        return futures

    def _share(self, args) -> list:
        """A future per argument on every worker. An argument sent for an earlier pass of
        the fit (the same object) is not sent again and stays the same object on the
        workers, which the design-row cache keys on (terms, sparse points); the others
        sent before are released."""
        held, self._held = self._held, {}
        for arg in args:
            token = uuid.uuid4().hex if isinstance(arg, (list, tuple)) else None
            key = _fingerprint(arg)
            self._held[key] = held.get(key) or (arg, self._scatter(_Shared((arg,), token)))
        for key, (_, future) in held.items():
            if key not in self._held and not isinstance(held[key][0], (list, tuple)):
                future.release()
            elif key not in self._held:
                self._held[key] = held[key]  # terms and sparse sets: kept for the fit
        return [self._held[_fingerprint(arg)][1] for arg in args]

    def _scatter(self, value, attempts: int = 3):
        """``value`` on every worker; tried again if a worker goes away meanwhile (the
        others keep their copies; a restarted worker fetches one when it needs it)."""
        for attempt in range(attempts):
            try:
                return self.client.scatter(value, broadcast=True, hash=False)
            except OSError:  # CommClosedError: a worker died during the transfer
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)

    def gather(self, futures) -> list:
        """The results of a pass's futures (from :meth:`map`), in partition order."""
        with self._explained():
            self._watch(futures)
            return self.client.gather(futures, direct=self._direct())

    def reduce(self, combine, futures):
        """``combine`` the futures' results pairwise on the workers (a binary tree, in
        partition order) and return the one result."""
        level = list(futures)
        while len(level) > 1:
            nxt = [self.client.submit(combine, level[i], level[i + 1], pure=False)
                   for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        with self._explained():
            self._watch(futures)
            return self.client.gather(level[0], direct=self._direct())

    def _direct(self) -> bool:
        """Gather from the workers themselves (Dask falls back to the scheduler for what
        fails): through the scheduler a worker serialises a result into one in-band
        frame, an R-sized copy (measured: +191 MiB at M 5,000, the peak of the worker
        that made the last combine). ``Client(direct_to_workers=False)`` keeps Dask's
        route, for workers this process cannot reach."""
        direct = getattr(self.client, "direct_to_workers", None)
        return True if direct is None else bool(direct)

    def _watch(self, futures) -> None:
        """With :attr:`progress`, a bar over the pass's partitions as workers finish them."""
        if not self.progress or not futures:
            return
        from distributed import as_completed
        from tqdm.auto import tqdm

        from dask.utils import key_split

        name = self._owner.get(futures[0].key, (key_split(futures[0].key),))[0].strip("_")
        with tqdm(total=len(futures), desc=f"{name} on {self.n_workers} Dask workers",
                  unit="partition", leave=False) as bar:
            for _ in as_completed(futures):
                bar.update()

    @contextlib.contextmanager
    def _explained(self):
        """A task that killed its workers (Dask's KilledWorker: most often the operating
        system or the nanny ending a worker out of memory) as a MemoryError naming the
        partition and what to lower."""
        from distributed.scheduler import KilledWorker

        try:
            yield
        except KilledWorker as exc:
            name, p = self._owner.get(exc.task, ("a pass", None))
            where = ("an unknown partition" if p is None or p >= len(self.bounds) else
                     f"the partition of {describe(self.bounds[p], self._atoms[p])}")
            raise MemoryError(
                f"Dask workers died running {name.strip('_')} on {where} ({exc}; most often "
                f"out of memory: the worker's log says). {MEMORY_ADVICE}") from exc

    def close(self) -> None:
        """Release the partitions on the workers."""
        for f in self._parts + [future for _, future in self._held.values()]:
            f.release()
        self._parts, self._key, self._frames, self._held = [], None, None, {}
        self._owner = {}


#: glibc ``mallopt`` parameters and the values a worker gets: Dask starts workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which turns off glibc's adaptive mmap threshold, so every
#: tensor over 128 kB is a fresh mmap whose pages fault in on first touch (measured: a
#: worker took 2x the CPU of one process for the same passes). These are the adaptive
#: scheme's ceiling (32 MB) and the trim threshold it pairs with it (twice that).
MALLOPT = {-3: 32 * 2**20, -1: 64 * 2**20}  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library through ctypes where it is glibc (has ``mallopt``), else None (found
    once: ``find_library`` runs ldconfig)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - not glibc (musl, macOS): None
    except (OSError, AttributeError):
        return None
    return libc


def _tune_malloc() -> bool:
    """Apply :data:`MALLOPT` in this process (a worker); False where there is no glibc."""
    import ctypes

    libc = _glibc()
    return libc is not None and all(libc.mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1
                                    for k, v in MALLOPT.items())


def trim_heap() -> bool:
    """Give the free pages inside the C heap back to the system (glibc's ``malloc_trim``,
    about 10 µs when there is nothing to give back); False where there is no
    glibc. A descriptor pass leaves its freed chunks (each under the mmap threshold)
    resident: measured on 1,000 Cu frames (192k atoms), 207 MiB stayed after its values
    were freed, on which the QR pass then stacked R and its blocks."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) in (0, 1)


def _check_workers(client) -> None:
    """A clear error when a worker cannot run gapkit or runs another version of it."""
    from .._version import __version__

    def version():
        try:
            from gapkit._version import __version__ as v
        except ImportError as exc:  # pragma: no cover - runs on a worker
            return f"not importable ({exc})"
        return v

    found = client.run(version)
    other = {addr: v for addr, v in found.items() if v != __version__}
    if other:
        raise ImportError(
            f"Dask workers run another gapkit than this process ({__version__}): "
            + ", ".join(f"{a}: {v}" for a, v in sorted(other.items()))
            + ". Install the same gapkit version on every worker")


@contextlib.contextmanager
def dask_passes(client=None, n_workers: int | None = None, *, progress: bool = False):
    """Within the block, the passes of a fit run on Dask workers: those of ``client`` (a
    ``distributed.Client`` or a scheduler address, e.g. ``"tcp://host:8786"``), or of a
    ``LocalCluster`` of ``n_workers`` single-threaded processes started here and closed
    at the end (a path ending ``.json`` is a scheduler file, as ``dask-mpi
    --scheduler-file`` writes). Neither: the block runs in this process, as without it.
    Yields the
    :class:`DaskPasses` (None without workers); ``progress``: a bar per pass over the
    partitions the workers have finished."""
    if client is None and n_workers is None:
        with call_threads():
            yield None
        return
    if client is not None and n_workers is not None:
        raise ValueError("give client= (a Dask client or scheduler address) or n_workers= "
                         "(a LocalCluster started here), not both")
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError("distributed fits need dask.distributed: pip install "
                          "'gapkit[distributed]' (or dask[distributed])") from exc
    with contextlib.ExitStack() as stack:
        stack.enter_context(call_threads())
        if n_workers is not None:
            from .._checks import count

            n = count(n_workers, "n_workers")
            cluster = stack.enter_context(LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        elif isinstance(client, str):
            address = client
            # a scheduler file (dask-mpi --scheduler-file, dask scheduler --scheduler-file)
            where = ({"scheduler_file": address} if address.endswith(".json")
                     else {"address": address})
            if "scheduler_file" in where and not os.path.isfile(address):
                raise FileNotFoundError(f"{address}: no such scheduler file; start the "
                                        "scheduler with --scheduler-file there, or give its "
                                        "address (tcp://host:8786)")
            try:
                client = stack.enter_context(Client(**where, timeout=CONNECT_TIMEOUT))
            except (OSError, TimeoutError) as exc:
                raise ConnectionError(
                    f"no Dask scheduler answered at {address!r} within {CONNECT_TIMEOUT} s "
                    f"({exc}). Start one (dask scheduler; dask worker {address}) or check "
                    "the address") from exc
        _check_workers(client)
        client.run(_tune_malloc)
        passes = DaskPasses(client, progress=progress)
        token = _ACTIVE.set(passes)
        try:
            yield passes
        finally:
            _ACTIVE.reset(token)
            passes.close()
