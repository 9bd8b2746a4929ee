"""How many threads the command line and the demo give torch's CPU kernels.

torch starts one thread per core it sees. On a machine whose cores are already busy (a
second fit, a benchmark, other users) those threads wait on each other: the demo fit took
6.5× the CPU time of one thread there. So the default is the number of *free* cores — the
cores this process may run on minus the 1-minute load average, at least one — and the user
can name a number (``--threads N`` or ``GAPKIT_THREADS``).
"""

from __future__ import annotations

import os

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


def set_threads(requested: int | str | None) -> int:
    """Give torch's CPU kernels :func:`resolve_threads` threads; returns the count."""
    import torch

    n = resolve_threads(requested)
    torch.set_num_threads(n)
    return n
