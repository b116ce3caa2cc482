"""Where parallel work runs: thread caps for this process (``--threads``) and an optional Dask cluster
(``--scheduler ADDRESS``) for the embarrassingly parallel stages (depth per BAM, TNF and marker genes
per chunk of contigs).

dask.distributed is optional (``pip install 'deepmetabin[dask]'``): it is imported only when a
scheduler is given. Tasks sent to a cluster are module-level functions of deepmetabin, so the workers
need the same deepmetabin installed; files they read (BAMs, a CRAM reference) must be at the same path
on them (a shared file system). Results come back to this process, which writes the run folder.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .errors import SchedulerError

if TYPE_CHECKING:
    import distributed

log = logging.getLogger(__name__)

#: A scheduler address (``tcp://host:8786``), a connected ``distributed.Client``, or None (this machine).
Scheduler = Union[str, "distributed.Client", None]

#: Seconds to wait for a scheduler to answer before giving up.
CONNECT_TIMEOUT = 10


@contextlib.contextmanager
def thread_limits(threads: int) -> Iterator[None]:
    """Cap the threads of BLAS/OpenMP pools (threadpoolctl), numba's parallel loops and, when it is
    already imported, torch at ``threads`` inside the block; the previous settings come back after it."""
    import numba
    from threadpoolctl import threadpool_limits

    n = max(1, int(threads))
    prev_numba = numba.get_num_threads()
    torch = sys.modules.get("torch")
    prev_torch = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        numba.set_num_threads(prev_numba)
        if torch is not None and prev_torch is not None:
            torch.set_num_threads(prev_torch)


class Background:
    """``fn()`` in a daemon thread: :meth:`join` waits and re-raises what it raised, :attr:`failed` tells
    whether it already did (a daemon, so Ctrl-C or an error in the main thread does not wait for it)."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._error: BaseException | None = None
        self._result: Any = None

        def body() -> None:
            try:
                self._result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the joining thread
                self._error = exc

        self._thread = threading.Thread(target=body, name=name, daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def join(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


class CoreShare:
    """The cores of a run, shared by stages that run at once.

    A stage that must keep a fixed thread count (training: torch's results depend on it) :meth:`hold` s
    its cores for as long as it runs; an elastic stage (the markers search) is given the share itself as
    its ``threads`` and asks :meth:`free` before each piece of work, so it takes the held cores over the
    moment they are handed back. ``int(share)`` is the total (an upper bound for pool sizes).
    """

    def __init__(self, total: int) -> None:
        self.total = max(1, int(total))
        self._held = 0
        self._lock = threading.Lock()

    def __int__(self) -> int:
        return self.total

    def free(self) -> int:
        """Cores not held now (at least 1)."""
        with self._lock:
            return max(1, self.total - self._held)

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        """Hold ``n`` cores inside the block."""
        with self._lock:
            self._held += n
        try:
            yield
        finally:
            with self._lock:
                self._held -= n


#: A thread count, or a :class:`CoreShare` whose free cores are asked before each piece of work.
Threads = Union[int, CoreShare]


def elastic_map(fn: Callable[[Any], Any], items: Iterable[Any], threads: Threads) -> Iterator[tuple[int, Any]]:
    """``fn(item)`` for each of ``items`` on worker threads; yield ``(i, result)`` as they finish (any order).

    At most ``threads`` run at once; with a :class:`CoreShare`, at most its :meth:`~CoreShare.free` cores,
    asked before each item, so the pool grows and shrinks as other stages hold and release cores. ``fn``
    must release the GIL for the threads to help (pyrodigal, pyhmmer and numpy do). One thread: in the
    calling thread, in order. An error in ``fn`` stops the workers and is raised here.
    """
    total = int(threads)
    allowed: Callable[[], int] = threads.free if isinstance(threads, CoreShare) else (lambda: total)
    if total <= 1:
        yield from enumerate(map(fn, items))
        return
    import queue

    todo = enumerate(items)
    cond = threading.Condition()
    done: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
    state = {"running": 0, "stop": False}

    def worker() -> None:
        while True:
            with cond:
                while not state["stop"] and state["running"] >= allowed():
                    cond.wait(0.2)  # a CoreShare does not notify: poll
                nxt = None if state["stop"] else next(todo, None)
                if nxt is None:
                    break
                state["running"] += 1
            i, item = nxt
            try:
                done.put((i, fn(item), None))
            except BaseException as exc:  # noqa: BLE001 - raised in the consuming thread
                done.put((i, None, exc))
            finally:
                with cond:
                    state["running"] -= 1
                    cond.notify_all()
        done.put((-1, None, None))  # this worker has finished

    workers = [threading.Thread(target=worker, name=f"deepmetabin-pool-{w}", daemon=True) for w in range(total)]
    for w in workers:
        w.start()
    live = len(workers)
    try:
        while live:
            i, result, error = done.get()
            if i < 0:
                live -= 1
            elif error is not None:
                raise error
            else:
                yield i, result
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        for w in workers:
            w.join()


def release_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op
    elsewhere). Between stages: freed memory otherwise stays in malloc's arenas (one per thread that
    allocated: the markers search, gene calling and torch pools), and the next stage's peak comes on top
    of it (measured on medium: 922 -> 715 MB resident after training, run peak 1006 -> 926 MB)."""
    import gc

    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``, every arena); no-op elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


#: Blocks of at least this many bytes get their own memory mapping, handed back to the system when freed
#: (:func:`fix_mmap_threshold`).
MMAP_THRESHOLD = 4 << 20


@functools.cache
def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` for this process (``mallopt(M_MMAP_THRESHOLD)``);
    True when set. glibc raises its threshold each time a mapped block is freed (up to 32 MB), after which
    numpy arrays of up to that size come from the threads' heaps, whose freed pages stay with the process:
    on 2 cores `deepmetabin bin` peaked at 782 -> 681 MB on small and 804 -> 742 MB on medium with it fixed,
    in the same time (thresholds of 0.5, 1 and 4 MB gave the same peaks; 128 kB cost 10 % more time in
    mmap/munmap). Not set where the user set ``MALLOC_MMAP_THRESHOLD_`` or outside glibc. Once per process."""
    import ctypes
    import platform

    if "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(-3, MMAP_THRESHOLD))  # -3: M_MMAP_THRESHOLD (malloc.h)
    except (OSError, AttributeError):
        return False


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where this process has none (looked up once)."""
    import ctypes

    try:  # the symbols this process already has (glibc's on Linux): ctypes.util.find_library would run
        # ldconfig in a child process, whose peak RSS Linux reports as this process's size at the fork
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def dask_client(scheduler: Scheduler) -> Iterator["distributed.Client"]:
    """A ``distributed.Client`` for ``scheduler``: connected here and closed after the block for an
    address, used as it is (and left open) for a Client.

    Raises:
        SchedulerError: dask.distributed is not installed; nothing answers at the address; a worker
            lacks deepmetabin.
    """
    try:
        import distributed
    except ImportError:
        raise SchedulerError(
            f"--scheduler {scheduler}: needs the dask.distributed package, which is not installed; "
            "install it with pip install 'deepmetabin[dask]', or leave out --scheduler to run on this machine"
        ) from None
    if isinstance(scheduler, distributed.Client):
        _check_workers(scheduler, str(scheduler.scheduler.address))
        yield scheduler
        return
    address = str(scheduler)
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, ValueError, TypeError, TimeoutError) as exc:
        raise SchedulerError(
            f"--scheduler {address}: cannot reach a Dask scheduler there ({_one_line(exc)}); start one (dask scheduler, "
            "or a dask-jobqueue cluster, see README) and pass its address as tcp://HOST:8786, or leave out "
            "--scheduler to run on this machine"
        ) from None
    try:
        _check_workers(client, address)
        yield client
    finally:
        client.close()


def _check_workers(client: "distributed.Client", address: str) -> None:
    """Every worker must import deepmetabin (tasks are its functions); none yet is only logged."""
    from . import __version__

    workers = client.get_versions(packages=["deepmetabin"]).get("workers", {})
    if not workers:
        log.warning("%s: the Dask cluster has no worker yet; tasks wait until one joins", address)
    for name, info in workers.items():
        theirs = (info.get("packages") or {}).get("deepmetabin")
        if theirs is None:
            raise SchedulerError(
                f"--scheduler {address}: worker {name} cannot import deepmetabin; install deepmetabin {__version__} "
                "in the workers' Python environment"
            )
        if theirs != __version__:
            log.warning("%s: worker %s has deepmetabin %s, this process %s", address, name, theirs, __version__)
    log.info("%s: Dask cluster with %d worker(s), %d thread(s)", address, len(workers), cluster_threads(client))


def cluster_threads(client: "distributed.Client") -> int:
    """Worker threads in the cluster now (at least 1)."""
    return max(1, sum(client.nthreads().values()))


def run_tasks(
    client: "distributed.Client",
    fn: Callable[..., Any],
    tasks: Iterable[tuple[Any, ...]],
    *,
    window: int,
    name: str,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(*args)`` for each ``args`` of ``tasks`` on the cluster; yield ``(i, result)`` as they finish.

    At most ``window`` tasks are in flight, so ``tasks`` (a generator) is consumed as results come back
    and big inputs are not all held by the cluster at once. NumPy arrays among the arguments are
    scattered to the workers first (not embedded in the task graph). An error in a task cancels the
    others and is raised here (a deepmetabin error as it was raised on the worker).
    """
    import distributed

    token = uuid.uuid4().hex[:12]
    it = enumerate(tasks)
    live: dict[str, tuple[int, Any]] = {}  # key -> (task number, future)
    pending = distributed.as_completed(loop=client.loop)

    def submit_next() -> bool:
        nxt = next(it, None)
        if nxt is None:
            return False
        i, args = nxt
        args = tuple(client.scatter(a, hash=False) if isinstance(a, np.ndarray) else a for a in args)
        fut = client.submit(fn, *args, key=f"deepmetabin-{name}-{i}-{token}", pure=False)
        live[fut.key] = (i, fut)
        pending.add(fut)
        return True

    try:
        for _ in range(max(1, window)):
            if not submit_next():
                break
        for fut in pending:
            result = fut.result()
            i, _ = live.pop(fut.key)
            fut.release()
            yield i, result
            submit_next()
    except BaseException:
        for _, other in live.values():
            other.cancel()
        raise
