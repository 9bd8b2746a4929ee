"""How many threads gapkit's numerics use: the command line, the demo and every call.

torch starts one thread per core it sees. On a machine whose cores are already busy (a
second fit, a benchmark, other users) those threads wait on each other: the demo fit took
6.5× the CPU time of one thread there, and SOAP gradients of 50 aspirin frames 2.5× the wall
time. So the default is the number of *free* cores — the cores this process may run on
minus the work of other processes, at least one — and the user can name a number
(:func:`set_threads`, ``--threads N`` or ``GAPKIT_THREADS``).

The command line takes the free cores once, from the 1-minute load average. Library calls
(:meth:`gapkit.GAP.fit`, :meth:`~gapkit.GAP.predict`, ``Descriptor.compute`` and so the
ASE calculator) look again at each call (:func:`call_threads`): the CPU time other
processes used since the last look (``/proc/stat`` less this process's own, so a long fit
does not count itself as load), never more threads than torch has.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

#: environment variable naming a thread count for the CLI and the demo
ENV = "GAPKIT_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def free_cores() -> int:
    """Usable cores minus the 1-minute load average (rounded), at least 1."""
    n = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return n
    return max(1, min(n, n - round(load)))


#: shortest interval (s) over which the other processes' CPU time is measured: the
#: kernel counts it in ticks of 10 ms
MIN_INTERVAL = 0.5

_LOOK = threading.Lock()
_last: dict = {}  # the last look: time, CPU ticks of all cores and of this process, cores


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of every core, ticks of this process) from /proc, None elsewhere."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
        with open("/proc/self/stat", "rb") as f:
            own = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait
    busy = sum(int(x) for x in fields[:8]) - int(fields[3]) - int(fields[4])
    return busy, int(own[11]) + int(own[12])  # utime, stime


def other_load() -> float | None:
    """Cores' worth of CPU time that other processes used since the previous look (at least
    ``MIN_INTERVAL`` ago; until then the previous answer), or None without ``/proc`` or
    before a second look. Unlike the 1-minute load average, this process's own threads
    are not counted."""
    now = time.monotonic()
    with _LOOK:
        if "time" in _last and now - _last["time"] < MIN_INTERVAL:
            return _last.get("load")  # without reading /proc: an MD step's calls are many
        ticks = _cpu_ticks()
        if ticks is None:
            return None
        load = None
        if "time" in _last:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            others = (ticks[0] - _last["busy"]) - (ticks[1] - _last["own"])
            load = max(0.0, others / hz / (now - _last["time"]))
        _last.update(time=now, busy=ticks[0], own=ticks[1],
                     load=load if load is not None else _last.get("load"))
        return _last["load"]


def free_cores_now() -> int:
    """Usable cores minus :func:`other_load` (rounded), at least 1; the first look in a
    process (nothing to compare with yet) and systems without ``/proc`` use
    :func:`free_cores`."""
    load = other_load()
    if load is None:
        return free_cores()
    n = usable_cores()
    return max(1, min(n, n - round(load)))


#: what set_threads chose: "auto" (the free cores at each call) or a count; unset: the
#: environment's GAPKIT_THREADS, else "auto"
_setting: dict = {}


def _current_setting() -> int | str:
    if "value" not in _setting:
        env = os.environ.get(ENV, "").strip()
        _setting["value"] = resolve_threads("auto") if env and env != "auto" else "auto"
    return _setting["value"]


def call_threads() -> contextlib.AbstractContextManager:
    """A context in which torch runs gapkit's numerics on the threads :func:`set_threads`
    chose: the count it was given, or ("auto", the default) the free cores now
    (:func:`free_cores_now`), at most torch's own count; torch's count is restored after."""
    import torch

    setting = _current_setting()
    before = torch.get_num_threads()
    n = setting if isinstance(setting, int) else min(before, free_cores_now())
    if n == before:
        return contextlib.nullcontext()
    return _with_torch_threads(n, before)


@contextlib.contextmanager
def _with_torch_threads(n: int, before: int):
    import torch

    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def with_call_threads(fn):
    """Decorator: ``fn`` runs in :func:`call_threads`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with call_threads():
            return fn(*args, **kwargs)
    return wrapper


def resolve_threads(requested: int | str | None) -> int:
    """The thread count for ``requested``: a positive int (or its string), or ``None`` /
    ``"auto"`` for ``GAPKIT_THREADS`` when set, else :func:`free_cores`."""
    if requested is None or requested == "auto":
        env = os.environ.get(ENV, "").strip()
        if not env or env == "auto":
            return free_cores()
        requested, source = env, ENV
    else:
        source = "--threads"
    try:
        n = int(requested)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"{source} must be a positive whole number of threads or 'auto', "
                         f"got {requested!r}")
    return n


def set_threads(requested: int | str | None = "auto") -> int:
    """How many CPU threads gapkit uses: a positive count, or ``"auto"``/None (the default)
    for ``GAPKIT_THREADS`` when set, else the free cores at each fit, predict and
    descriptor call (:func:`call_threads`; torch's count is set to every usable core, the
    most a call then takes). Returns the count a call would use now.

    ``gapkit.set_threads(4)`` runs every call on 4 threads, busy machine or not."""
    import torch

    env = os.environ.get(ENV, "").strip()
    if (requested is None or requested == "auto") and env in ("", "auto"):
        _setting["value"] = "auto"
        torch.set_num_threads(usable_cores())
        return free_cores_now()
    n = resolve_threads(requested)
    _setting["value"] = n
    torch.set_num_threads(n)
    return n


def snapshot():
    """A function that puts back torch's thread count and :func:`set_threads`'s choice as
    they are now (``gapkit.cli.main`` may run inside a program)."""
    import torch

    before, setting = torch.get_num_threads(), dict(_setting)

    def restore() -> None:
        torch.set_num_threads(before)
        _setting.clear()
        _setting.update(setting)
    return restore


other_load()  # the first look: a call's first decision then covers the time since import
