"""Tetranucleotide frequencies (TNF), projected VAMB-style to 103 dimensions.

A contig's 256 tetramer counts (one strand, windows containing N or another non-ACGT symbol are
skipped) become frequencies ``f`` (summing to 1). Frequencies obey linear constraints that carry no
information about the genome: they sum to one, a tetramer and its reverse complement are counted
alike (the strand is arbitrary), and for every trimer the tetramers starting with it are as frequent
as those ending with it (up to the sequence ends). The 103-d TNF is ``(f - 1/256) @ K`` where the
columns of ``K`` (256 x 103) are an orthonormal basis of the null space of those constraints
(computed here with :func:`scipy.linalg.null_space`; see Kislyuk et al. 2009, BMC Bioinformatics 10:316).

Properties: the TNF of a sequence equals the TNF of its reverse complement; ``tnf @ K.T + 1/256``
maps a row back to the constraint-consistent 256-d frequency vector, which sums to 1 (0 for a contig
without any ACGT tetramer, whose TNF row is all zeros).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from functools import lru_cache

import numba
import numpy as np
from scipy.linalg import null_space

from ._parallel import Scheduler, cluster_threads, dask_client, run_tasks
from .contigs import Contigs

TNF_DIM = 103
_BASES = "ACGT"
_COMP = str.maketrans("ACGT", "TGCA")

#: byte -> base code (A0 C1 G2 T3), 4 for any other symbol (N, IUPAC ambiguity codes, gaps)
CODE = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(_BASES):
    CODE[ord(_b)] = CODE[ord(_b.lower())] = _i


def tetramers() -> list[str]:
    """The 256 tetramers in index order (A=0, C=1, G=2, T=3, first base most significant)."""
    return ["".join(p) for p in itertools.product(_BASES, repeat=4)]


@lru_cache(maxsize=1)
def projection_kernel() -> np.ndarray:
    """(256, 103) float64 orthonormal basis of the null space of the TNF constraints (see module doc).

    Column signs are fixed (largest-magnitude entry positive) so the basis is reproducible.
    """
    kmers = tetramers()
    index = {k: i for i, k in enumerate(kmers)}
    rows: list[np.ndarray] = [np.ones(256)]
    for k in kmers:  # reverse complements counted alike
        rc = k.translate(_COMP)[::-1]
        if index[k] < index[rc]:
            r = np.zeros(256)
            r[index[k]], r[index[rc]] = 1, -1
            rows.append(r)
    for tri in ("".join(p) for p in itertools.product(_BASES, repeat=3)):  # prefix flow = suffix flow
        r = np.zeros(256)
        for b in _BASES:
            r[index[tri + b]] += 1
            r[index[b + tri]] -= 1
        rows.append(r)
    kernel = null_space(np.vstack(rows))
    if kernel.shape != (256, TNF_DIM):
        raise AssertionError(f"TNF null space has shape {kernel.shape}, expected (256, {TNF_DIM})")
    pivot = np.abs(kernel).argmax(axis=0)
    kernel *= np.sign(kernel[pivot, np.arange(TNF_DIM)])
    return kernel


@numba.njit(inline="always")
def _count_one(buf: np.ndarray, start: int, stop: int, code: np.ndarray, out: np.ndarray, i: int) -> None:
    kmer = 0
    run = 0
    for p in range(start, stop):
        c = code[buf[p]]
        if c > 3:
            run = 0
            continue
        kmer = ((kmer << 2) | c) & 255
        run += 1
        if run >= 4:
            out[i, kmer] += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def _count_tetramers(buf: np.ndarray, offsets: np.ndarray, code: np.ndarray, out: np.ndarray) -> None:
    for i in numba.prange(offsets.shape[0] - 1):
        _count_one(buf, offsets[i], offsets[i + 1], code, out, i)


@numba.njit(cache=True, nogil=True)
def _count_tetramers_serial(buf: np.ndarray, offsets: np.ndarray, code: np.ndarray, out: np.ndarray) -> None:
    # for Dask workers: numba's default threading layer must not run parallel loops from several threads
    for i in range(offsets.shape[0] - 1):
        _count_one(buf, offsets[i], offsets[i + 1], code, out, i)


def _chunk_counts(buf: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n, 256) uint32 counts of the n contigs ``buf[offsets[i]:offsets[i+1]]`` (a task on a Dask worker)."""
    out = np.zeros((len(offsets) - 1, 256), dtype=np.uint32)
    _count_tetramers_serial(buf, offsets, CODE, out)
    return out


def _chunk_bounds(offsets: np.ndarray, chunk_bp: int) -> Iterator[tuple[int, int]]:
    """Contiguous row ranges of about ``chunk_bp`` bases each (at least one contig)."""
    n = len(offsets) - 1
    start = 0
    while start < n:
        stop = int(np.searchsorted(offsets, offsets[start] + chunk_bp, side="right"))
        stop = min(n, max(stop, start + 1))
        yield start, stop
        start = stop


def tetramer_counts(
    contigs: Contigs, *, threads: int = 1, progress: Callable[[int, int], None] | None = None, chunk_bp: int = 64_000_000,
    scheduler: Scheduler = None,
) -> np.ndarray:
    """(N, 256) uint32 tetramer counts per contig (one strand; windows with non-ACGT symbols skipped).

    Work is split into chunks of about ``chunk_bp`` bases; ``progress(done_bp, total_bp)`` at the start
    and after each.
    ``scheduler`` (a Dask scheduler address or ``distributed.Client``): each chunk is counted by a task
    on that cluster (its sequences are sent there; ``threads`` is unused); the counts are identical.

    Raises:
        SchedulerError: ``scheduler`` cannot be used.
    """
    n = len(contigs)
    out = np.zeros((n, 256), dtype=np.uint32)
    total = int(contigs.offsets[-1])
    offsets, buf = contigs.offsets, contigs.require_sequences()
    if progress is not None:
        progress(0, total)
    if scheduler is not None:
        bounds = list(_chunk_bounds(offsets, chunk_bp))
        tasks = ((buf[offsets[a] : offsets[b]], offsets[a : b + 1] - offsets[a]) for a, b in bounds)
        done_bp = 0
        with dask_client(scheduler) as client:
            for k, counts in run_tasks(client, _chunk_counts, tasks, window=2 * cluster_threads(client), name="tnf"):
                a, b = bounds[k]
                out[a:b] = counts
                done_bp += int(offsets[b] - offsets[a])
                if progress is not None:
                    progress(done_bp, total)
        return out
    prev = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        for start, stop in _chunk_bounds(offsets, chunk_bp):
            _count_tetramers(buf, offsets[start : stop + 1], CODE, out[start:stop])
            if progress is not None:
                progress(int(offsets[stop]), total)
    finally:
        numba.set_num_threads(prev)
    return out


def project(counts: np.ndarray, *, threads: int | None = None, chunk: int = 65_536) -> np.ndarray:
    """(N, 256) tetramer counts -> (N, 103) float32 projected TNF (rows without tetramers -> zeros).

    ``threads``: BLAS threads for the product (None: as set for the process). Done in ``chunk``-row
    pieces: the float64 frequencies of all rows at once would be 2 GB per million contigs."""
    from threadpoolctl import threadpool_limits

    kernel = projection_kernel()
    out = np.empty((len(counts), TNF_DIM), dtype=np.float32)
    with threadpool_limits(limits=None if threads is None else max(1, int(threads)), user_api="blas"):
        for i in range(0, len(counts), chunk):
            c = np.asarray(counts[i:i + chunk], dtype=np.float64)
            sums = c.sum(axis=1, keepdims=True)
            freq = np.divide(c, sums, out=np.full_like(c, 1 / 256), where=sums > 0)
            freq -= 1 / 256
            out[i:i + chunk] = freq @ kernel
    return out


def tnf(contigs: Contigs, *, threads: int = 1, progress: Callable[[int, int], None] | None = None,
        scheduler: Scheduler = None) -> np.ndarray:
    """(N, 103) float32 projected tetranucleotide frequencies of every contig, in ``contigs`` order.

    ``threads``: numba threads for the counts and BLAS threads for the projection. ``scheduler``:
    counts computed on a Dask cluster (see :func:`tetramer_counts`), projected here; same result."""
    return project(tetramer_counts(contigs, threads=threads, progress=progress, scheduler=scheduler), threads=threads)
