"""Thread-count policy and build information (below the validated wrappers; imports nothing of ours
but the compiled module)."""
from __future__ import annotations

import numbers
import os
import sys

from . import _ext

_num_threads: int | None = None

_OPENMP = _ext.kernels().openmp_enabled()
# Whether kernels may start OpenMP teams in this process.  Not in a child forked from it: GNU
# OpenMP keeps the parent's idle team in its state, and the child's first team waits forever
# for threads that fork did not copy.  There the kernels compute on the calling thread (the
# same bits, as on any number of threads), as PyTorch's forked children do.  (Whether the
# parent's teams ran is not known here, so this holds for any child forked after the import,
# a forkserver's that preloaded fastshallow too.)  A child started by 'spawn' has its own
# OpenMP state and teams.
_teams = _OPENMP


def _after_fork_in_child() -> None:
    global _teams
    _teams = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# OpenMP's default team size for the calling thread: OMP_NUM_THREADS, else the CPUs the process
# may run on, lowered by omp_set_num_threads -- which is how threadpoolctl's
# ``threadpool_limits(n)`` limits OpenMP libraries.  Asked at every call (about 25 ns); 1 in a
# serial build.
_omp_default = _ext.kernels().max_threads

# Below this many multiply-adds (or element operations) a kernel call runs on the calling
# thread: starting an OpenMP team costs a few microseconds, more than such a call takes.  This
# holds for a count asked for (num_threads=...) and for the fused path's minibatches, whose
# count follows their measured speed (_fused.ThreadChooser).
SERIAL_WORK = 1 << 16
# The same for a call on the default count, which nothing re-times.  A call on two threads waits
# for both, and while another process holds a core it often waits a scheduler time slice for
# the descheduled one.  The per-batch Fashion-MNIST loop, whose calls are about 2,000,000
# multiply-adds, took 0.5-1.2x as long on two threads as on one on a quiet machine, but 2-7.5x
# as long beside one busy process and 3-66x beside two.  Calls this large take a millisecond or
# more, against which such a wait costs about what the second thread saves.
DEFAULT_SERIAL_WORK = 1 << 24

# The most threads a kernel will start.  Results do not depend on the thread count, so more would
# only cost memory: every OpenMP thread maps a stack, and tens of thousands of them exhaust the
# process's memory maps, which kills the interpreter instead of raising.
MAX_THREADS = 1024


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """The number of threads kernels use when `num_threads` is not given: the value of
    `set_num_threads`, else OpenMP's default in the calling thread -- ``OMP_NUM_THREADS`` as it
    was when the package was imported (OpenMP reads it then), else the cores this process may
    run on, within any limit threadpoolctl's ``threadpool_limits`` set in that thread (as
    scikit-learn's OpenMP code follows it).  1 in a serial build and in a forked child."""
    if not _teams:
        return 1
    if _num_threads is not None:
        return _num_threads
    n = _omp_default()
    return n if n <= MAX_THREADS else MAX_THREADS


def set_num_threads(n: int | None) -> None:
    """Set the default thread count of every kernel (None: back to OpenMP's default, see
    `get_num_threads`)."""
    global _num_threads
    _num_threads = None if n is None else _check_threads(n)


def _check_threads(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"num_threads must be a positive int (at most {MAX_THREADS}) or None, "
                         f"got {n!r}")
    return int(n)


def resolve_threads(num_threads: int | None, work: int | None = None,
                    default_floor: int | None = None) -> int:
    """The thread count for one kernel call doing about `work` operations (None: plenty): one
    below SERIAL_WORK for a `num_threads` given, below `default_floor` (None:
    DEFAULT_SERIAL_WORK) for the default."""
    if num_threads is None:
        floor = DEFAULT_SERIAL_WORK if default_floor is None else default_floor
        if work is not None and work < floor:  # before asking OpenMP: the book's hot path
            return 1
        n = get_num_threads()
    else:
        n, floor = _check_threads(num_threads), SERIAL_WORK
        if not _teams:
            n = 1
    return 1 if work is not None and work < floor else n


def show_config(file=None) -> None:
    """Print the version, the compiler, whether OpenMP is on and how many threads kernels use,
    to `file` (default: standard output)."""
    from ._version import __version__

    k = _ext.kernels()
    out = file or sys.stdout
    print(f"fastshallow {__version__}", file=out)
    print(f"  python:      {sys.version.split()[0]}", file=out)
    print(f"  compiler:    {k.compiler()}", file=out)
    print(f"  openmp:      {'on' if k.openmp_enabled() else 'off (serial build)'}", file=out)
    print(f"  simd:        {k.isa()}", file=out)
    print(f"  threads:     {get_num_threads()}", file=out)
    print(f"  extension:   {k.__file__}", file=out)
