"""Per-sample contig depth: from coordinate-sorted BAMs (or CRAMs), or from a depth table.

Depth from BAMs follows MetaBAT's ``jgi_summarize_bam_contig_depths`` (v2.15, default options), so
that ``depth_from_bams(...)[0][:, j]`` equals the ``<sample>.bam`` column of its table:

Reads
    A record is skipped if it is secondary (0x100), QC-failed (0x200), a duplicate (0x400) or
    unmapped (0x4). Supplementary alignments (0x800) are *counted*, as jgi counts them (they cover
    other read bases than the primary). There is no mapping-quality filter (jgi ``--minMapQual 0``).
Unique depth (``depth_from_bams(unique=True)``)
    The same mean, in the same pass, over the kept reads whose MAPQ is >= ``MIN_UNIQUE_MAPQ`` (1; 255,
    "not available", counts): the reads the aligner placed rather than drew among equal hits.
Identity
    Over the CIGAR: ``E`` = bases in M/= ops, ``X`` = bases in X ops, ``I``/``D`` = inserted/deleted
    bases (N, S, H, P ignored). Substitutions come from the ``NM`` tag: with an M-only CIGAR,
    ``sub = NM - I - D`` and ``E -= sub``; with =/X ops, ``sub = X`` (M bases count as exact unless
    ``NM == I + D + X + M``, then they count as substitutions; any other ``NM`` disagreement is
    resolved as in the M-only case). ``NM < I + D`` is treated as ``NM = I + D + X``; no ``NM`` tag:
    ``sub = X``. ``identity = E / (E + sub + I + D)`` in float32 and the read is kept if
    ``identity >= min_identity`` (jgi ``--percentIdentity 97``).
Coverage
    Each kept read adds 1 to every contig position under its M/=/X ops; deletions, skips and
    clips add nothing. An alignment running past the contig end is clipped as jgi does: the CIGAR
    op that crosses the end and everything after it become a soft clip (before the identity test,
    so such a read's identity counts only the bases that fit). Reads starting past the end add
    nothing.
Edges and the mean
    With ``e = min(edge, R)`` where ``R`` is the integer mean read length (``l_seq`` of every
    record read so far, skipped ones included) at the moment the contig is finished (jgi's running
    ``avgRead``): if ``L > 2e + 1`` the mean is taken over positions ``[e, L - e)``, else over the
    whole contig ``[0, L)``. If that window has ``<= 2`` positions the depth is 0. Depth is
    ``sum(coverage over window) / window length`` in reads per base (x). ``edge=0`` keeps edges
    (jgi ``--includeEdgeBases``). jgi sums in float32 and prints 6 significant digits; we sum exactly
    (int64), so values agree to ~1e-6 relative.

Engines (``depth_from_bams(engine=...)``)
    Both apply the rules above with the same numba functions (``_begin_record``: flags, sort
    check, running mean and contig switch; ``_add_read``: clipping, ``_identity`` and coverage by
    difference arrays; ``_finish_contig``: edges and mean) and give identical depths; they differ
    only in how records are read.

    * ``"numba"``: our own decoder, BAM only: BGZF blocks inflated with :mod:`zlib` (block sizes are
      checked, CRC32 is not), records decoded by a numba kernel. About 2x faster than ``"pysam"``.
      It refuses CRAMs and BAMs whose CIGARs have more than 65535 ops (stored in a ``CG`` tag).
    * ``"pysam"``: records from :class:`pysam.AlignmentFile` (htslib): BAM and CRAM, and ``CG``-tag
      CIGARs are expanded by htslib. Python copies only flag, reference, position, ``l_seq``, NM
      and the CIGAR string of each record into arrays; the rules run in numba per chunk.
    * ``"auto"`` (default): ``"numba"`` for BAMs, ``"pysam"`` for CRAMs; a BAM in which the numba
      decoder meets a ``CG``-tag CIGAR is read again with pysam (logged as a warning).

    CRAMs are decoded against ``reference=`` (default: the contigs FASTA, ``contigs.source``), plain
    or gzipped; it must hold every ``@SQ`` of the CRAM with the same length. A FASTA without its
    ``.fai`` (``.gzi`` if gzipped) is indexed in a temporary folder, never next to the user's file.
    A CRAM is not always the same data as the BAM it was made from (jgi reading it sees the same
    as we do): htslib regenerates ``NM`` for records stored without it, and CIGARs come back with
    ``=``/``X`` as ``M`` and adjacent ``M`` ops merged (which can change how an alignment running
    past the contig end is clipped).

BAM requirements and choices
    * The BAM/CRAM must be sorted by coordinate: a header ``SO`` other than ``coordinate`` is
      refused, and the record order is checked while reading (jgi refuses unsorted BAMs too).
    * No index is needed: every file is read front to back once (as jgi does), so a missing
      ``.bai``/``.crai`` is not an error.
    * Every kept contig must be a reference of the file with the same length; it may hold more
      references (e.g. contigs shorter than ``min_length``), which are read and ignored.
    * Sample name = file name without ``.bam``/``.cram``; names must be unique.

Depth tables (``read_depth_table``)
    * MetaBAT: header ``contigName contigLen totalAvgDepth <s>.bam [<s>.bam-var] ...``; sample
      = column name without ``.bam``; ``-var`` columns are ignored; ``contigLen`` is checked
      against the FASTA (within jgi's 6 printed digits).
    * VAMB / CoverM / strobealign ``--aemb``: ``contig<TAB>depth...`` with a header line
      (first column any name, then sample names) or without one (sample names from the file name:
      ``<name>`` for one column, ``<name>_1..k`` for more).
    * Rows are reordered to the ``Contigs`` order. Every kept contig must have exactly one row;
      rows for contigs the FASTA holds but that were dropped by ``min_length`` are ignored; rows
      for contigs the FASTA does not hold are an error.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np

from ._io import input_magic, write_bytes, write_text
from ._parallel import Scheduler, dask_client, run_tasks
from .contigs import Contigs
from .errors import BamError, DepthTableError, InputFileError

if TYPE_CHECKING:
    import distributed

log = logging.getLogger(__name__)

__all__ = ["depth_from_bams", "read_depth_table", "write_depth_table"]

PathLike = str | os.PathLike[str]

#: Records with any of these flags are skipped: unmapped 0x4, secondary 0x100, QC fail 0x200, duplicate 0x400.
SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400

#: A kept read counts in the *unique* depth too when its mapping quality is at least this: aligners give
#: MAPQ 0 to a read whose best hits score the same on several contigs (it was drawn at random among them);
#: 255 ("not available") counts as placed.
MIN_UNIQUE_MAPQ = 1

# ----------------------------------------------------------------------------------------------
# numba rule code, shared by both engines: record filter + running mean + contig switch
# (_begin_record), CIGAR clipping + identity + coverage of one read (_add_read), the mean over the
# edge window (_finish_contig). The engines differ only in how they get a record's fields.
# ----------------------------------------------------------------------------------------------

# state vector slots, kept between chunks of one BAM
_LAST_TID, _LAST_POS, _SIZES, _COUNT, _AVG, _KEPT, _ERR, _ERR_TID, _ERR_POS, _MAPPED = range(10)
_N_STATE = 10
_ERR_UNSORTED, _ERR_MALFORMED, _ERR_LONG_CIGAR = 1, 2, 3


@numba.njit(inline="always")
def _i32(b: np.ndarray, i: int) -> int:
    v = np.int64(b[i]) | (np.int64(b[i + 1]) << 8) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 3]) << 24)
    return v - (np.int64(1) << 32) if v >= (np.int64(1) << 31) else v


@numba.njit(inline="always")
def _u32(b: np.ndarray, i: int) -> int:
    return np.int64(b[i]) | (np.int64(b[i + 1]) << 8) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 3]) << 24)


@numba.njit(inline="always")
def _u16(b: np.ndarray, i: int) -> int:
    return np.int64(b[i]) | (np.int64(b[i + 1]) << 8)


@numba.njit(cache=True, nogil=True)
def _aux_find(b: np.ndarray, a: int, end: int, c0: int, c1: int) -> int:
    """Offset of the type byte of aux tag ``c0 c1`` in ``b[a:end]``, or -1 if absent or unreadable."""
    while a + 3 <= end:
        t0, t1, ty = b[a], b[a + 1], b[a + 2]
        if t0 == c0 and t1 == c1:
            return a + 2
        a += 3
        if ty == 65 or ty == 99 or ty == 67:  # A c C
            a += 1
        elif ty == 115 or ty == 83:  # s S
            a += 2
        elif ty == 105 or ty == 73 or ty == 102:  # i I f
            a += 4
        elif ty == 90 or ty == 72:  # Z H: NUL-terminated
            while a < end and b[a] != 0:
                a += 1
            a += 1
        elif ty == 66:  # B: subtype, int32 count, values
            if a + 5 > end:
                return -1
            sub = b[a]
            n = _i32(b, a + 1)
            size = 1 if (sub == 99 or sub == 67) else (2 if (sub == 115 or sub == 83) else 4)
            a += 5 + size * n
        else:
            return -1
    return -1


@numba.njit(cache=True, nogil=True)
def _nm_tag(b: np.ndarray, a: int, end: int) -> int:
    """Value of the integer ``NM`` aux tag in ``b[a:end]``, or -1 if absent, not an integer or unreadable."""
    t = _aux_find(b, a, end, 78, 77)  # 'NM'
    if t < 0:
        return -1
    ty = b[t]
    a = t + 1
    if ty == 99 and a + 1 <= end:  # c
        v = np.int64(b[a])
        return v - 256 if v >= 128 else v
    if ty == 67 and a + 1 <= end:  # C
        return np.int64(b[a])
    if ty == 115 and a + 2 <= end:  # s
        v = _u16(b, a)
        return v - 65536 if v >= 32768 else v
    if ty == 83 and a + 2 <= end:  # S
        return _u16(b, a)
    if (ty == 105 or ty == 73) and a + 4 <= end:  # i, I
        return _i32(b, a) if ty == 105 else _u32(b, a)
    return -1


@numba.njit(cache=True, nogil=True)
def _identity(exact: int, cmatch: int, sub: int, ins: int, dels: int, has_eqx: bool, nm: int) -> np.float32:
    """Read identity (module docstring): CIGAR base counts (``exact`` = M + =, ``cmatch`` = M,
    ``sub`` = X, I, D) corrected by the ``NM`` value (``nm < 0``: no usable NM tag)."""
    if nm >= 0:
        if nm < ins + dels:
            nm = ins + dels + sub
        if has_eqx:
            if cmatch > 0 and nm != ins + dels + sub:
                if nm == ins + dels + sub + cmatch:
                    sub += cmatch
                    exact -= cmatch
                else:
                    new_sub = nm - ins - dels
                    exact = max(exact - (new_sub - sub), 0)
                    sub = new_sub
        else:
            new_sub = nm - ins - dels
            exact = max(exact - (new_sub - sub), 0)
            sub = new_sub
    denom = exact + sub + ins + dels
    return np.float32(exact) / np.float32(denom) if denom > 0 else np.float32(0.0)


@numba.njit(cache=True, nogil=True)
def _add_read(cig_buf: np.ndarray, cig: int, n_cig: int, pos: int, length: int, nm: int,
              min_identity: np.float32, diff: np.ndarray, unique: bool) -> bool:
    """Clip, test and count one read; return True if it was kept.

    ``cig_buf[cig : cig + 4 * n_cig]`` is the CIGAR as BAM stores it (little-endian ``len << 4 | op``);
    ``pos`` (``0 <= pos < length``) its first reference base; ``nm`` the NM tag or -1. A kept read
    adds +1/-1 to the contig's difference array ``diff[0]`` at the ends of each M/=/X block, and to
    ``diff[1]`` too when ``unique`` (its mapping quality says it was placed, not drawn among equal hits).
    """
    # an alignment running past the contig end: the crossing op and the rest become a soft clip
    n_use = n_cig
    refpos = np.int64(pos)
    for k in range(n_cig):
        v = _u32(cig_buf, cig + 4 * k)
        op = v & 15
        if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
            refpos += v >> 4
            if refpos > length:
                n_use = k
                break
    exact = np.int64(0)
    cmatch = np.int64(0)
    sub = np.int64(0)
    ins = np.int64(0)
    dels = np.int64(0)
    has_eqx = False
    for k in range(n_use):
        v = _u32(cig_buf, cig + 4 * k)
        op = v & 15
        ln = v >> 4
        if op == 0:
            cmatch += ln
            exact += ln
        elif op == 7:
            has_eqx = True
            exact += ln
        elif op == 8:
            has_eqx = True
            sub += ln
        elif op == 1:
            ins += ln
        elif op == 2:
            dels += ln
    if _identity(exact, cmatch, sub, ins, dels, has_eqx, nm) < min_identity:
        return False
    refpos = np.int64(pos)
    for k in range(n_use):
        v = _u32(cig_buf, cig + 4 * k)
        op = v & 15
        ln = v >> 4
        if op == 0 or op == 7 or op == 8:
            diff[0, refpos] += 1
            diff[0, min(refpos + ln, length)] -= 1
            if unique:
                diff[1, refpos] += 1
                diff[1, min(refpos + ln, length)] -= 1
        if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
            refpos += ln
    return True


@numba.njit(cache=True, nogil=True)
def _finish_contig(diff: np.ndarray, length: int, e: int) -> float:
    """Mean coverage of one contig from its (L+1,) int32 difference array, which is then zeroed.

    Window ``[e, L-e)`` if ``L > 2e+1`` else ``[0, L)``; 0 when the window has <= 2 positions.
    """
    if length > 2 * e + 1:
        start, stop = e, length - e
    else:
        start, stop = 0, length
    run = np.int64(0)
    total = np.int64(0)
    for i in range(stop):
        run += diff[i]
        if i >= start:
            total += run
    diff[: length + 1] = 0
    n = stop - start
    if n <= 2:
        return 0.0
    return total / n


@numba.njit(cache=True, nogil=True)
def _finish_rows(diff: np.ndarray, depth: np.ndarray, tid: int, length: int, e: int) -> None:
    """``depth[r, tid]`` = :func:`_finish_contig` of ``diff[r]`` for both rows (all kept reads, the unique ones)."""
    for r in range(diff.shape[0]):
        depth[r, tid] = _finish_contig(diff[r], length, e)


@numba.njit(cache=True, nogil=True)
def _begin_record(state: np.ndarray, tid: int, pos: int, flag: int, l_seq: int, ref_lens: np.ndarray,
                  diff: np.ndarray, depth: np.ndarray, max_edge: int) -> int:
    """Account one record in ``state``: running mean read length, sort check, flag filter; finish
    the previous contig (into ``depth[0]`` from ``diff[0]``, ``depth[1]`` from ``diff[1]``) when a
    mapped read of the next one arrives.

    Returns 1 if the read is to be clipped/tested/counted (``_add_read``), 0 if it adds nothing,
    -1 on an error (code in ``state[_ERR]``).
    """
    state[_SIZES] += l_seq
    state[_COUNT] += 1
    last_tid = state[_LAST_TID]
    if tid >= 0 and (last_tid > tid or (last_tid == tid and state[_LAST_POS] > pos)):
        state[_ERR] = _ERR_UNSORTED
        state[_ERR_TID] = tid
        state[_ERR_POS] = pos
        return -1
    if flag & 0x704:  # unmapped, secondary, QC fail, duplicate
        return 0
    if tid < 0 or tid >= ref_lens.shape[0]:
        state[_ERR] = _ERR_MALFORMED
        return -1
    state[_MAPPED] += 1
    avg = state[_SIZES] // state[_COUNT]
    state[_AVG] = avg
    if tid != last_tid and last_tid >= 0:
        _finish_rows(diff, depth, last_tid, ref_lens[last_tid], min(max_edge, avg))
    state[_LAST_TID] = tid
    state[_LAST_POS] = pos
    if pos < 0 or pos >= ref_lens[tid]:
        return 0
    return 1


# ----------------------------------------------------------------------------------------------
# engine "numba": decode BAM records from inflated BGZF blocks
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _scan_records(buf: np.ndarray, end: int, ref_lens: np.ndarray, diff: np.ndarray, depth: np.ndarray,
                  state: np.ndarray, min_identity: np.float32, max_edge: int, min_mapq: int) -> int:
    """Consume whole BAM records from ``buf[:end]``; return the offset of the first incomplete one.

    ``diff`` (2, max L + 2) int32 holds the current contig's coverage differences (row 0 all kept
    reads, row 1 those with mapping quality >= ``min_mapq``); ``depth`` (2, n_refs) float64 receives
    each finished contig's mean depth of both; ``state`` (see ``_LAST_TID`` ...) carries the
    position, the running read-length mean and error codes between calls. A kept read whose CIGAR
    is a ``CG``-tag placeholder (> 65535 ops) stops the scan with ``_ERR_LONG_CIGAR``.
    """
    p = 0
    while p + 4 <= end:
        block = _i32(buf, p)
        if block < 32:
            state[_ERR] = _ERR_MALFORMED
            break
        if p + 4 + block > end:
            break
        r = p + 4
        nxt = r + block
        tid = _i32(buf, r)
        pos = _i32(buf, r + 4)
        l_name = np.int64(buf[r + 8])
        n_cig = _u16(buf, r + 12)
        flag = _u16(buf, r + 14)
        l_seq = _i32(buf, r + 16)
        go = _begin_record(state, tid, pos, flag, l_seq, ref_lens, diff, depth, max_edge)
        if go < 0:
            break
        p = nxt
        if go == 0:
            continue
        cig = r + 32 + l_name
        aux = cig + 4 * n_cig + (l_seq + 1) // 2 + l_seq
        if aux > nxt:
            state[_ERR] = _ERR_MALFORMED
            break
        # htslib's test for a CIGAR moved to the CG tag: placeholder <l_seq>S<rlen>N plus a CG tag
        if (n_cig == 2 and _u32(buf, cig) == ((l_seq << 4) | 4) and (_u32(buf, cig + 4) & 15) == 3
                and _aux_find(buf, aux, nxt, 67, 71) >= 0):
            state[_ERR] = _ERR_LONG_CIGAR
            break
        if _add_read(buf, cig, n_cig, pos, ref_lens[tid], _nm_tag(buf, aux, nxt), min_identity, diff,
                     np.int64(buf[r + 9]) >= min_mapq):
            state[_KEPT] += 1
    return p


# ----------------------------------------------------------------------------------------------
# engine "pysam": records from pysam.AlignmentFile, in chunks of arrays
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _scan_arrays(tids: np.ndarray, poss: np.ndarray, flags: np.ndarray, l_seqs: np.ndarray, nms: np.ndarray,
                 mapqs: np.ndarray, cigars: np.ndarray, ref_lens: np.ndarray, diff: np.ndarray, depth: np.ndarray,
                 state: np.ndarray, min_identity: np.float32, max_edge: int, min_mapq: int) -> None:
    """Apply the rules to ``len(tids)`` records given as arrays (``nms``: NM or -1); ``cigars``
    holds their SAM CIGAR strings (empty when not needed), each followed by ``\\n``. Stops at an
    error (``state[_ERR]``)."""
    ops = np.zeros(4 * 64, np.uint8)  # one CIGAR in BAM layout, grown as needed
    c = 0
    for i in range(tids.shape[0]):
        s = c
        while cigars[c] != 10:
            c += 1
        e = c
        c += 1
        go = _begin_record(state, tids[i], poss[i], flags[i], l_seqs[i], ref_lens, diff, depth, max_edge)
        if go < 0:
            return
        if go == 0:
            continue
        n_ops = 0
        for k in range(s, e):
            if cigars[k] > 57:
                n_ops += 1
        if 4 * n_ops > ops.shape[0]:
            ops = np.zeros(8 * n_ops, np.uint8)
        v = np.int64(0)
        j = 0
        for k in range(s, e):
            ch = cigars[k]
            if ch <= 57:
                v = v * 10 + (ch - 48)
                continue
            # M I D N S H P = X -> 0..8
            op = (0 if ch == 77 else 1 if ch == 73 else 2 if ch == 68 else 3 if ch == 78 else 4 if ch == 83
                  else 5 if ch == 72 else 6 if ch == 80 else 7 if ch == 61 else 8)
            packed = (v << 4) | op
            ops[4 * j] = packed & 255
            ops[4 * j + 1] = (packed >> 8) & 255
            ops[4 * j + 2] = (packed >> 16) & 255
            ops[4 * j + 3] = (packed >> 24) & 255
            j += 1
            v = 0
        if _add_read(ops, 0, n_ops, poss[i], ref_lens[tids[i]], nms[i], min_identity, diff, mapqs[i] >= min_mapq):
            state[_KEPT] += 1


def _warm_up() -> None:
    """Compile (or load from cache) the kernels in this process, so forked workers inherit them."""
    # a read-only buffer, as np.frombuffer(bytes) gives in _bam_depth (numba types it apart)
    _scan_records(np.frombuffer(b"", np.uint8), 0, np.zeros(1, np.int64), np.zeros((2, 2), np.int32),
                  np.zeros((2, 1), np.float64), np.zeros(_N_STATE, np.int64), np.float32(0.97), 75, MIN_UNIQUE_MAPQ)
    _finish_rows(np.zeros((2, 2), np.int32), np.zeros((2, 1), np.float64), 0, 1, 0)


def _warm_up_pysam() -> None:
    empty = np.zeros(0, np.int64)
    _scan_arrays(empty, empty, empty, empty, empty, empty, np.frombuffer(b"", np.uint8), np.zeros(1, np.int64),
                 np.zeros((2, 2), np.int32), np.zeros((2, 1), np.float64), np.zeros(_N_STATE, np.int64), np.float32(0.97),
                 75, MIN_UNIQUE_MAPQ)


# ----------------------------------------------------------------------------------------------
# BGZF reading
# ----------------------------------------------------------------------------------------------

_BGZF_HEAD = struct.Struct("<4BIBBH")  # ID1 ID2 CM FLG MTIME XFL OS XLEN


def _inflate_chunks(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Yield the decompressed BAM stream of ``path``, about 4 x ``chunk`` bytes at a time (1 MiB
    chunks keep buffers small enough for malloc to reuse, which saves page faults).

    Raises:
        BamError: a block is not BGZF, does not inflate, has the wrong size, or the file ends
            inside a block.
    """
    with open(path, "rb") as fh:
        rest = b""
        while True:
            data = fh.read(chunk)
            if not data:
                break
            raw = rest + data if rest else data
            n = len(raw)
            pos = 0
            out: list[bytes] = []
            while pos + 18 <= n:
                id1, id2, cm, flg, _, _, _, xlen = _BGZF_HEAD.unpack_from(raw, pos)
                if id1 != 31 or id2 != 139 or cm != 8 or not flg & 4:
                    raise BamError(f"{path}: byte {pos} is not the start of a BGZF block; the BAM is corrupt, re-create it with samtools")
                bsize = 0
                x, xend = pos + 12, pos + 12 + xlen
                while x + 4 <= xend:
                    slen = raw[x + 2] | (raw[x + 3] << 8)
                    if raw[x] == 66 and raw[x + 1] == 67 and slen == 2:  # 'BC'
                        bsize = (raw[x + 4] | (raw[x + 5] << 8)) + 1
                    x += 4 + slen
                if bsize == 0:
                    raise BamError(f"{path}: gzip block at byte {pos} has no BGZF block size; give a BAM written by samtools (plain gzip is not BAM)")
                if pos + bsize > n:
                    break
                isize = int.from_bytes(raw[pos + bsize - 4 : pos + bsize], "little")
                try:
                    block = zlib.decompress(raw[xend : pos + bsize - 8], -15, isize or 1)
                except zlib.error as exc:
                    raise BamError(f"{path}: BGZF block at byte {pos} does not inflate ({exc}); the BAM is corrupt, re-create it") from None
                if len(block) != isize:
                    raise BamError(f"{path}: BGZF block at byte {pos} inflates to {len(block)} bytes, expected {isize}; the BAM is corrupt, re-create it")
                out.append(block)
                pos += bsize
            rest = raw[pos:]
            yield b"".join(out)
        if rest:
            raise BamError(f"{path}: the file ends inside a BGZF block (truncated); re-create or re-copy the BAM")


def _header_end(buf: bytes) -> tuple[int, list[int]] | None:
    """Offset of the first record in a decompressed BAM stream and the reference lengths, or None if
    ``buf`` does not yet hold the whole header."""
    if len(buf) < 12:
        return None
    if buf[:4] != b"BAM\x01":
        raise ValueError("no BAM magic")
    l_text = struct.unpack_from("<i", buf, 4)[0]
    p = 8 + l_text
    if len(buf) < p + 4:
        return None
    n_ref = struct.unpack_from("<i", buf, p)[0]
    p += 4
    lens: list[int] = []
    for _ in range(n_ref):
        if len(buf) < p + 4:
            return None
        l_name = struct.unpack_from("<i", buf, p)[0]
        if len(buf) < p + 8 + l_name:
            return None
        lens.append(struct.unpack_from("<i", buf, p + 4 + l_name)[0])
        p += 8 + l_name
    return p, lens


class _LongCigarError(BamError):
    """The numba decoder met a CIGAR stored in a ``CG`` tag (more than 65535 ops)."""


def _check_state(path: Path, state: np.ndarray) -> None:
    """Raise the BamError for an error code the kernels left in ``state``."""
    if state[_ERR] == _ERR_UNSORTED:
        raise BamError(
            f"{path}: records are not sorted by coordinate (a read on reference #{state[_ERR_TID]} at "
            f"position {state[_ERR_POS] + 1} comes after one further on); sort it: samtools sort -o sorted.bam {path}"
        )
    if state[_ERR] == _ERR_LONG_CIGAR:
        raise _LongCigarError(
            f"{path}: holds CIGARs with more than 65535 operations (stored in a CG tag), which engine='numba' "
            "cannot read; use engine='pysam' or 'auto'"
        )
    if state[_ERR]:
        raise BamError(f"{path}: holds a malformed record (bad size or reference id); the file is corrupt, re-create it")


def _finish(path: Path, state: np.ndarray, ref_lens: np.ndarray, diff: np.ndarray, depth: np.ndarray, edge: int,
            t0: float) -> tuple[np.ndarray, int, int, int]:
    last = int(state[_LAST_TID])
    if last >= 0:
        _finish_rows(diff, depth, last, int(ref_lens[last]), min(edge, int(state[_AVG])))
    log.debug("%s: %d records, %d mapped, %d kept in %.1fs", path, state[_COUNT], state[_MAPPED], state[_KEPT],
              time.perf_counter() - t0)
    return depth, int(state[_COUNT]), int(state[_MAPPED]), int(state[_KEPT])


def _bam_depth(path: str, min_identity: float, edge: int) -> tuple[np.ndarray, int, int, int]:
    """Engine "numba": mean depth of every reference of one BAM, in header order.

    Returns:
        ``(depth, n_records, n_mapped, n_kept)``: depth (2, n_refs) float64 in x (row 0: every kept
        read; row 1: those of them with MAPQ >= ``MIN_UNIQUE_MAPQ``); record counts.

    Raises:
        BamError: corrupt or truncated BAM, records out of coordinate order; ``_LongCigarError``
            for a CG-tag CIGAR.
    """
    t0 = time.perf_counter()
    bam = Path(path)
    state = np.zeros(_N_STATE, np.int64)
    state[_LAST_TID] = -1
    ref_lens: np.ndarray | None = None
    diff = depth = np.zeros(0)
    pending = b""
    min_id = np.float32(min_identity)
    for chunk in _inflate_chunks(bam):
        buf = pending + chunk if pending else chunk
        if ref_lens is None:
            try:
                head = _header_end(buf)
            except ValueError:
                raise BamError(f"{bam}: does not start with a BAM header; give a coordinate-sorted BAM file") from None
            if head is None:
                pending = buf
                continue
            start, lens = head
            ref_lens = np.asarray(lens, dtype=np.int64)
            diff = np.zeros((2, int(ref_lens.max(initial=0)) + 2), np.int32)
            depth = np.zeros((2, len(ref_lens)), np.float64)
            buf = buf[start:]
        arr = np.frombuffer(buf, dtype=np.uint8)
        used = _scan_records(arr, len(arr), ref_lens, diff, depth, state, min_id, edge, MIN_UNIQUE_MAPQ)
        _check_state(bam, state)
        pending = buf[used:]
    if ref_lens is None or pending:
        raise BamError(f"{bam}: ends inside the header or a record (truncated); re-create or re-copy the BAM")
    return _finish(bam, state, ref_lens, diff, depth, edge, t0)


def _pysam_depth(path: str, min_identity: float, edge: int, reference: str | None = None, io_threads: int = 1,
                 chunk: int = 1 << 16) -> tuple[np.ndarray, int, int, int]:
    """Engine "pysam": as :func:`_bam_depth`, reading records of a BAM or CRAM (``reference``: its
    FASTA) with :class:`pysam.AlignmentFile` (``io_threads`` htslib threads). Python only copies five
    fields, NM and the CIGAR string of each record into arrays; ``_scan_arrays`` applies the rules."""
    import pysam

    t0 = time.perf_counter()
    aln = Path(path)
    with open(aln, "rb") as fh:
        mode = "rc" if fh.read(4) == b"CRAM" else "rb"
    state = np.zeros(_N_STATE, np.int64)
    state[_LAST_TID] = -1
    min_id = np.float32(min_identity)
    save = pysam.set_verbosity(0)
    try:
        try:
            f = pysam.AlignmentFile(path, mode, check_sq=False, reference_filename=reference, threads=max(1, io_threads))
        except (OSError, ValueError) as exc:
            raise BamError(f"{aln}: cannot be read ({exc}); re-create it with samtools sort") from None
        with f:
            ref_lens = np.asarray(f.lengths, dtype=np.int64)
            diff = np.zeros((2, int(ref_lens.max(initial=0)) + 2), np.int32)
            depth = np.zeros((2, len(ref_lens)), np.float64)
            records = iter(f)
            while True:
                tids, poss, flags, l_seqs, nms, mapqs = (array("q") for _ in range(6))
                cigars: list[str] = []
                add_tid, add_pos, add_flag, add_len = tids.append, poss.append, flags.append, l_seqs.append
                add_nm, add_mapq, add_cigar = nms.append, mapqs.append, cigars.append
                try:
                    for r in itertools.islice(records, chunk):
                        flag = r.flag
                        add_tid(r.reference_id)
                        add_pos(r.reference_start)
                        add_flag(flag)
                        add_len(r.query_length)
                        add_mapq(r.mapping_quality)
                        if flag & SKIP_FLAGS:
                            add_nm(-1)
                            add_cigar("")
                            continue
                        try:
                            add_nm(r.get_tag("NM"))
                        except (KeyError, TypeError, OverflowError):  # none, or not an integer
                            add_nm(-1)
                        add_cigar(r.cigarstring or "")
                except (OSError, ValueError) as exc:
                    raise BamError(f"{aln}: cannot be read to the end ({exc}); the file is truncated or corrupt, "
                                   "re-create or re-copy it") from None
                if not tids:
                    break
                _scan_arrays(np.frombuffer(tids, np.int64), np.frombuffer(poss, np.int64), np.frombuffer(flags, np.int64),
                             np.frombuffer(l_seqs, np.int64), np.frombuffer(nms, np.int64), np.frombuffer(mapqs, np.int64),
                             np.frombuffer(("\n".join(cigars) + "\n").encode(), np.uint8),
                             ref_lens, diff, depth, state, min_id, edge, MIN_UNIQUE_MAPQ)
                _check_state(aln, state)
    finally:
        pysam.set_verbosity(save)
    return _finish(aln, state, ref_lens, diff, depth, edge, t0)


def _alignment_depth(path: str, is_cram: bool, engine: str, reference: str | None, min_identity: float, edge: int,
                     io_threads: int) -> tuple[np.ndarray, int, int, int, str]:
    """One BAM/CRAM with the engine chosen (module docstring); the last item names the engine used."""
    if engine == "pysam" or is_cram:
        return (*_pysam_depth(path, min_identity, edge, reference, io_threads), "pysam")
    try:
        return (*_bam_depth(path, min_identity, edge), "numba")
    except _LongCigarError:
        if engine == "numba":
            raise
    return (*_pysam_depth(path, min_identity, edge, reference, io_threads), "pysam (fallback: CG-tag CIGARs)")


# ----------------------------------------------------------------------------------------------
# BAM checks and the public entry point
# ----------------------------------------------------------------------------------------------


def sample_name(path: PathLike) -> str:
    """Sample name of a BAM/CRAM or table column: the file name without a trailing ``.bam``/``.cram``."""
    name = Path(path).name
    for ext in (".bam", ".cram"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _check_bam(path: Path, contigs: Contigs) -> tuple[np.ndarray, bool]:
    """Validate one BAM or CRAM against ``contigs``; return (N,) int64 reference index of each
    contig, and whether the file is a CRAM.

    Raises:
        InputFileError: missing or a folder.
        BamError: not a BAM/CRAM, not coordinate-sorted per its header, or a kept contig missing from
            its references or of another length.
    """
    import pysam

    magic = input_magic(path, kind="BAM", option="--bam")
    is_cram = magic == b"CRAM"
    if magic[:1] == b"@":
        raise BamError(f"{path}: is a SAM text file, not a BAM; convert and sort it: samtools sort -o {path.stem}.bam {path}")
    if not is_cram:
        if magic[:2] != b"\x1f\x8b":
            raise BamError(f"{path}: is not a BAM or CRAM file (no BGZF/gzip or CRAM magic); give coordinate-sorted BAMs made with samtools sort")
        try:
            with gzip.open(path, "rb") as gz:
                if gz.read(4) != b"BAM\x01":
                    raise BamError(f"{path}: is gzip data but not a BAM file; give coordinate-sorted BAMs made with samtools sort")
        except (OSError, EOFError, zlib.error):
            raise BamError(f"{path}: is not a readable BAM file (corrupt or truncated); re-create it with samtools sort") from None
    kind = "CRAM" if is_cram else "BAM"
    try:
        save = pysam.set_verbosity(0)
        try:
            with pysam.AlignmentFile(str(path), "rc" if is_cram else "rb", check_sq=False) as bam:
                refs, lens, text = bam.references, bam.lengths, bam.text
        finally:
            pysam.set_verbosity(save)
    except (OSError, ValueError) as exc:
        raise BamError(f"{path}: cannot be read as {kind} ({exc}); re-create it with samtools sort") from None
    hd = text.split("\n", 1)[0] if text.startswith("@HD") else ""
    m = re.search(r"\tSO:(\S+)", hd)
    if m and m.group(1) != "coordinate":
        raise BamError(f"{path}: header says it is sorted by '{m.group(1)}', need 'coordinate'; sort it: samtools sort -o sorted.{kind.lower()} {path}")
    index = {name: i for i, name in enumerate(refs)}
    tids = np.empty(len(contigs), dtype=np.int64)
    for i, (cid, length) in enumerate(zip(contigs.ids, contigs.lengths)):
        t = index.get(cid)
        if t is None:
            n_missing = sum(c not in index for c in contigs.ids)
            raise BamError(
                f"{path}: contig '{cid}' of {contigs.source or 'the FASTA'} is not a reference of this {kind} "
                f"({n_missing} of {len(contigs)} kept contigs missing); map the reads to this same assembly"
            )
        if lens[t] != length:
            raise BamError(
                f"{path}: contig '{cid}' is {lens[t]} bp in the {kind} but {length} bp in {contigs.source or 'the FASTA'}; "
                "map the reads to this same assembly"
            )
        tids[i] = t
    return tids, is_cram


def _cram_reference(given: PathLike | None, contigs: Contigs, crams: list[Path], tmp: Callable[[], Path]) -> str:
    """Path of a FASTA htslib can decode ``crams`` with (``given``, else the contigs FASTA).

    A FASTA without its ``.fai`` (and ``.gzi`` when gzipped) is linked or, when gzipped, inflated
    into the folder ``tmp()``, so htslib can index it there; the user's folder is never written.

    Raises:
        BamError: no reference, or a CRAM reference missing from it or of another length.
        InputFileError: the FASTA cannot be read.
    """
    import pysam

    src = str(given) if given is not None else contigs.source
    if not src or not Path(src).is_file():
        raise BamError(
            f"{crams[0]}: is a CRAM file, which needs the FASTA it was made with"
            + (f"; {src} is not a file" if src else "")
            + "; pass it as reference= (the contigs FASTA is used by default)"
        )
    ref = Path(src)
    with open(ref, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if not Path(f"{ref}.fai").exists() or (gzipped and not Path(f"{ref}.gzi").exists()):
        target = tmp() / "reference.fa"
        try:
            if gzipped:
                with gzip.open(ref, "rb") as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
            else:
                target.symlink_to(ref.resolve())
        except (OSError, EOFError, zlib.error) as exc:
            raise InputFileError(f"{src}: cannot be read as the reference FASTA of the CRAMs ({exc}); check the file") from None
        ref = target
    save = pysam.set_verbosity(0)
    try:
        with pysam.FastaFile(str(ref)) as fa:
            known = dict(zip(fa.references, fa.lengths))
        for cram in crams:
            with pysam.AlignmentFile(str(cram), "rc", check_sq=False) as f:
                refs, lens = f.references, f.lengths
            for name, length in zip(refs, lens):
                if known.get(name) != length:
                    where = "is missing from" if name not in known else f"is {known[name]} bp in"
                    raise BamError(
                        f"{cram}: reference '{name}' ({length} bp) {where} {src}; pass the FASTA the CRAM was made "
                        "with as reference="
                    )
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{src}: cannot be read as the reference FASTA of the CRAMs ({exc}); check the file") from None
    finally:
        pysam.set_verbosity(save)
    return str(ref)


ENGINES = ("auto", "numba", "pysam")


def depth_from_bams(
    bam_paths: Sequence[PathLike],
    contigs: Contigs,
    *,
    threads: int = 1,
    min_identity: float = 0.97,
    edge: int = 75,
    progress: Callable[[int, int], None] | None = None,
    engine: str = "auto",
    reference: PathLike | None = None,
    cache_dir: PathLike | None = None,
    scheduler: Scheduler = None,
    unique: bool = False,
) -> tuple[np.ndarray, list[str]] | tuple[np.ndarray, np.ndarray, list[str]]:
    """Mean read depth of every contig in every BAM or CRAM (MetaBAT rule, see the module docstring).

    Args:
        bam_paths: S coordinate-sorted BAMs (or CRAMs) of reads mapped to the assembly ``contigs``
            came from.
        contigs: the kept contigs; rows of the result follow their order.
        threads: files read in parallel (processes); each uses one core (engine "pysam" gives a
            file the cores left over as htslib threads).
        min_identity: minimum read identity in [0, 1] (jgi ``--percentIdentity`` / 100).
        edge: bases left out at each contig end, capped by the mean read length (0 keeps all).
        progress: called as ``progress(done, S)`` at the start (``done``: files taken from the cache)
            and each time a file is finished.
        engine: ``"numba"`` (own BAM decoder, fastest; BAM only), ``"pysam"`` (htslib through
            pysam; BAM and CRAM), or ``"auto"``: numba for BAMs, pysam for CRAMs and for a BAM with
            CIGARs in ``CG`` tags (logged). All give the same depths.
        reference: FASTA to decode CRAMs with (plain or gzipped; default: ``contigs.source``, the
            contigs FASTA); it must hold every reference of the CRAMs. Unused for BAMs.
        cache_dir: folder for one file per finished BAM (``<sample>.npz``: its depth column, keyed
            by the file's name, size and mtime, the contig ids hash and ``min_identity``/``edge``),
            written atomically as soon as the file is done. Matching files found there are used
            instead of reading their BAM again, so an interrupted call, repeated, reads only the
            BAMs not yet done. None: no cache.
        scheduler: a Dask scheduler address (``tcp://host:8786``) or ``distributed.Client``: each
            file is read by a task on that cluster (``threads`` is then unused); the workers must
            see the files (and the CRAM reference) at the same paths. None: this machine.
        unique: also return the *unique* depth: the same mean over the reads of the same rule whose
            mapping quality is >= ``MIN_UNIQUE_MAPQ`` (1), i.e. without the reads the aligner drew at
            random among equally good hits (MAPQ 0). Where near-identical strains share a region,
            such reads of every strain land on all their copies, so the plain depth of the region is
            the strains' mixture while the unique depth keeps the reads that carry one strain's own
            variants (see :func:`deepmetabin.features.strain_depth`). Computed in the same pass.

    Returns:
        ``(depth, samples)``: depth (N, S) float32 in reads per base (x); S sample names (file
        names without ``.bam``/``.cram``). With ``unique``: ``(depth, unique_depth, samples)``,
        unique_depth (N, S) float32 in x, <= depth.

    Raises:
        InputFileError: a file is missing; the CRAM reference cannot be read.
        BamError: no files, duplicate sample names, not a BAM/CRAM, unsorted, corrupt/truncated, a
            kept contig missing from a file's references or of another length; a CRAM with
            ``engine="numba"`` or without a usable reference; a CG-tag CIGAR with ``engine="numba"``;
            a file a Dask worker cannot open.
        SchedulerError: ``scheduler`` cannot be used (see :func:`deepmetabin._parallel.dask_client`).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    paths = [Path(p) for p in bam_paths]
    if not paths:
        raise BamError("no BAM files given; pass one coordinate-sorted BAM per sample")
    if not 0.0 <= min_identity <= 1.0:
        raise ValueError(f"min_identity must be in [0, 1], got {min_identity}")
    if edge < 0:
        raise ValueError(f"edge must be >= 0, got {edge}")
    samples = [sample_name(p) for p in paths]
    seen: dict[str, Path] = {}
    for p, s in zip(paths, samples):
        if s in seen:
            raise BamError(
                f"{p}: sample name '{s}' is also the name of {seen[s]} (sample = file name without .bam/.cram); "
                "give each sample's BAM a distinct file name, and each BAM only once"
            )
        seen[s] = p
    checked = [_check_bam(p, contigs) for p in paths]
    tids = [t for t, _ in checked]
    is_cram = [c for _, c in checked]
    crams = [p for p, c in zip(paths, is_cram) if c]
    if crams and engine == "numba":
        raise BamError(f"{crams[0]}: is a CRAM file, which engine='numba' cannot read; use engine='pysam' or 'auto'")
    cache = _DepthCache(Path(cache_dir), contigs, min_identity, edge) if cache_dir is not None else None
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(dask_client(scheduler)) if scheduler is not None else None
        ref = None
        if crams:
            # workers need the indexed copy too: beside the cache (the run folder) rather than in this machine's /tmp
            tmp_parent = Path(cache_dir) if client is not None and cache_dir is not None else None

            def tmp() -> Path:
                if tmp_parent is not None:
                    tmp_parent.mkdir(parents=True, exist_ok=True)
                return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deepmetabin-ref-", dir=tmp_parent)))

            ref = _cram_reference(reference, contigs, crams, tmp)
        if client is None:
            _warm_up()
            if engine == "pysam" or crams:
                _warm_up_pysam()
        depth, unique_depth, samples = _run(paths, samples, tids, is_cram, engine, ref, contigs, threads, min_identity,
                                            edge, progress, cache, client)
    return (depth, unique_depth, samples) if unique else (depth, samples)


class _DepthCache:
    """One ``<sample>.npz`` per finished BAM in ``folder``: its (N,) float32 depth and unique-depth columns
    and the JSON key they were made under (file name, size and mtime; contig ids hash; rule options).
    Written atomically."""

    FORMAT = 2  # 2: with the unique-depth column

    def __init__(self, folder: Path, contigs: Contigs, min_identity: float, edge: int) -> None:
        self.folder = folder
        self.n = len(contigs)
        self.common = {"format": self.FORMAT, "ids_hash": contigs.ids_hash, "n_contigs": self.n,
                       "min_identity": float(min_identity), "edge": int(edge), "min_unique_mapq": MIN_UNIQUE_MAPQ}

    def _key(self, path: Path) -> str:
        st = path.stat()
        return json.dumps({**self.common, "file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
                          sort_keys=True)

    def _file(self, path: Path) -> Path:
        return self.folder / f"{sample_name(path)}.npz"

    def load(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached (depth, unique depth) columns of ``path``, or None (no file, another key, or an
        unreadable file: logged)."""
        f = self._file(path)
        if not f.is_file():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                if str(z["key"]) != self._key(path):
                    log.info("%s: made from another version of %s or other contigs/options; reading it again", f, path)
                    return None
                column, unique = np.asarray(z["depth"]), np.asarray(z["unique"])
        except (OSError, ValueError, KeyError, zlib.error, EOFError) as exc:
            log.warning("%s: unreadable depth cache file (%s); reading %s again", f, exc, path)
            return None
        if any(c.shape != (self.n,) or c.dtype != np.float32 or not np.isfinite(c).all() for c in (column, unique)):
            log.warning("%s: damaged depth cache file; reading %s again", f, path)
            return None
        return column, unique

    def save(self, path: Path, column: np.ndarray, unique: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, depth=np.ascontiguousarray(column, dtype=np.float32),
                 unique=np.ascontiguousarray(unique, dtype=np.float32), key=np.array(self._key(path)))
        write_bytes(self._file(path), buf.getvalue())


def _run(paths: list[Path], samples: list[str], tids: list[np.ndarray], is_cram: list[bool], engine: str,
         reference: str | None, contigs: Contigs, threads: int, min_identity: float, edge: int,
         progress: Callable[[int, int], None] | None, cache: _DepthCache | None = None,
         client: "distributed.Client | None" = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read every file not in ``cache`` (in worker processes when ``threads > 1``, or as tasks on the
    Dask ``client``'s cluster) and gather the depth matrix; each finished file is cached at once."""
    t0 = time.perf_counter()
    depth = np.zeros((len(contigs), len(paths)), dtype=np.float32)
    unique = np.zeros_like(depth)
    todo = list(range(len(paths)))
    if cache is not None:
        cached = {j: c for j in todo if (c := cache.load(paths[j])) is not None}
        for j, (column, unique_column) in cached.items():
            depth[:, j], unique[:, j] = column, unique_column
        todo = [j for j in todo if j not in cached]
        if cached:
            log.info("depth of %d of %d files reused from %s", len(cached), len(paths), cache.folder)
    n_done = len(paths) - len(todo)
    if progress is not None:
        progress(n_done, len(paths))  # files done before this call (cache) are not counted in the rate

    def done(j: int, result: tuple[np.ndarray, int, int, int, str]) -> None:
        nonlocal n_done
        per_ref, n_rec, n_mapped, n_kept, used = result
        depth[:, j] = per_ref[0, tids[j]]
        unique[:, j] = per_ref[1, tids[j]]
        if cache is not None:
            cache.save(paths[j], depth[:, j], unique[:, j])
        n_done += 1
        if "fallback" in used:
            log.warning("%s: holds CIGARs with more than 65535 operations (CG tag); read it with pysam instead of "
                        "the numba decoder", paths[j])
        log.info("%s: %d records, %d mapped, %d kept (identity >= %.2f), engine %s", paths[j], n_rec, n_mapped, n_kept,
                 min_identity, used)
        if progress is not None:
            progress(n_done, len(paths))

    # largest first, so the last file to start is a small one
    order = sorted(todo, key=lambda j: -paths[j].stat().st_size)
    if client is not None:
        _run_on_cluster(client, paths, is_cram, engine, reference, min_identity, edge, order, done)
    elif todo:
        workers = max(1, min(int(threads), len(todo)))
        io_threads = max(1, int(threads) // workers)
        args = {j: (str(paths[j]), is_cram[j], engine, reference, min_identity, edge, io_threads) for j in todo}
        if workers == 1:
            for j in todo:
                done(j, _alignment_depth(*args[j]))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_alignment_depth, *args[j]): j for j in order}
                try:
                    for fut in as_completed(futures):
                        done(futures[fut], fut.result())
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    log.info("depth of %d contigs in %d files in %.1fs", len(contigs), len(paths), time.perf_counter() - t0)
    return depth, unique, samples


def _run_on_cluster(client: "distributed.Client", paths: list[Path], is_cram: list[bool], engine: str,
                    reference: str | None, min_identity: float, edge: int, order: list[int],
                    done: Callable[[int, tuple[np.ndarray, int, int, int, str]], None]) -> None:
    """One task per file on the Dask cluster (absolute paths: the workers must see the same files)."""
    ref = str(Path(reference).resolve()) if reference is not None else None
    tasks = ((str(paths[j].resolve()), is_cram[j], engine, ref, min_identity, edge, 1) for j in order)
    try:
        for k, result in run_tasks(client, _alignment_depth, tasks, window=len(order), name="depth"):
            done(order[k], result)
    except OSError as exc:
        where = getattr(exc, "filename", None) or "a BAM"
        raise BamError(
            f"{where}: a Dask worker cannot read it ({exc.strerror or exc}); the BAMs (and a CRAM reference) must be "
            "on a file system the workers share, at the same path"
        ) from None


# ----------------------------------------------------------------------------------------------
# depth tables
# ----------------------------------------------------------------------------------------------

_HEADER_WORDS = {"contigname", "contig", "contigs", "contig_name", "contigid", "contig_id", "name", "id", "seqname", "sequence"}


def _read_text(path: Path) -> str:
    """The text of a plain or gzipped file; clear errors for missing, binary or corrupt files."""
    if not path.exists():
        raise InputFileError(f"{path}: depth table not found; check the path given with --depth")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, expected a depth table (TSV)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputFileError(f"{path}: cannot be read ({exc}); the file is truncated or corrupt, re-create it") from None
    if raw[:4] == b"BAM\x01":
        raise DepthTableError(f"{path}: is a BAM file, not a depth table; pass BAMs with --bam")
    if b"\x00" in raw[:4096]:
        raise DepthTableError(f"{path}: is binary data, not a depth table; give a MetaBAT/VAMB tab-separated depth table")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise DepthTableError(f"{path}: is not UTF-8 text; give a MetaBAT/VAMB tab-separated depth table") from None


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _fasta_ids(path: Path) -> set[str] | None:
    """All record ids of a (gzipped) FASTA, or None if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as fh:
            return {line[1:].split(maxsplit=1)[0].decode() for line in fh if line[:1] == b">" and line[1:].strip()}
    except (OSError, EOFError, zlib.error, UnicodeDecodeError):
        return None


def read_depth_table(path: PathLike, contigs: Contigs) -> tuple[np.ndarray, list[str]]:
    """Read a MetaBAT or VAMB/strobealign-aemb depth table (format detected; see module docstring).

    Returns:
        ``(depth, samples)``: (N, S) float32 depth in ``contigs`` order and the S sample names.

    Raises:
        InputFileError: the file is missing, a folder or unreadable.
        DepthTableError: empty; not text; wrong column count (line named); value not a number,
            NaN/inf or negative (line and column named); duplicate contig rows; duplicate sample
            names; a kept contig missing (first named); a row for a contig not in the FASTA;
            a MetaBAT ``contigLen`` that differs from the FASTA.
    """
    path = Path(path)
    lines = _read_text(path).splitlines()
    rows = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise DepthTableError(f"{path}: the depth table is empty; give a MetaBAT (jgi_summarize_bam_contig_depths) or VAMB/aemb table")
    head_no, head_line = rows[0]
    first = head_line.split("\t")
    if len(first) < 2:
        raise DepthTableError(
            f"{path}: line {head_no}: found 1 column, expected tab-separated columns 'contig<TAB>depth...'; "
            "is the table tab-separated?"
        )
    id_set = set(contigs.ids)
    length_col: int | None = None
    if first[:3] == ["contigName", "contigLen", "totalAvgDepth"]:
        fmt = "MetaBAT"
        length_col = 1
        names = first[3:]
        cols, samples = [], []
        for k, name in enumerate(names):
            if name.endswith("-var") and k > 0 and name[:-4] == names[k - 1]:
                continue
            cols.append(3 + k)
            samples.append(sample_name(name))
        data = rows[1:]
    elif any(not _is_float(f) for f in first[1:]) or (first[0].lstrip("#").lower() in _HEADER_WORDS and first[0] not in id_set):
        fmt = "VAMB"
        cols = list(range(1, len(first)))
        samples = first[1:]
        data = rows[1:]
    else:
        fmt = "header-less"
        stem = re.sub(r"(\.(tsv|txt|tab))?(\.gz)?$", "", path.name)
        cols = list(range(1, len(first)))
        samples = [stem] if len(cols) == 1 else [f"{stem}_{k}" for k in range(1, len(cols) + 1)]
        data = rows
    if not samples:
        raise DepthTableError(f"{path}: line {head_no}: the {fmt} header names no sample column; give a table with one depth column per sample")
    dup = next((s for k, s in enumerate(samples) if s in samples[:k]), None)
    if dup is not None:
        raise DepthTableError(f"{path}: line {head_no}: sample '{dup}' appears twice in the header; give each sample column a distinct name")
    if not data:
        raise DepthTableError(f"{path}: the {fmt} depth table has a header but no rows; re-create it")
    ncol = len(first)
    ids: list[str] = []
    fields: list[list[str]] = []
    row_of: dict[str, int] = {}
    for n, line in data:
        f = line.split("\t")
        if len(f) != ncol:
            raise DepthTableError(
                f"{path}: line {n}: found {len(f)} tab-separated columns, expected {ncol} as in line {head_no}; "
                "fix or re-create the table"
            )
        cid = f[0].strip()
        if cid in row_of:
            raise DepthTableError(
                f"{path}: line {n}: contig '{cid}' already has a row (line {data[row_of[cid]][0]}); "
                "each contig must appear once, remove the duplicate rows"
            )
        row_of[cid] = len(ids)
        ids.append(cid)
        fields.append(f)
    col_names = first if fmt != "header-less" else ["contig"] + samples

    def parse(c: int) -> np.ndarray:
        strings = [f[c] for f in fields]
        try:
            values = np.array(strings, dtype=np.float64)
        except ValueError:
            bad = next(k for k, s in enumerate(strings) if not _is_float(s))
            raise DepthTableError(
                f"{path}: line {data[bad][0]}, column '{col_names[c]}': '{strings[bad]}' is not a number; fix or re-create the table"
            ) from None
        wrong = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if len(wrong):
            k = int(wrong[0])
            raise DepthTableError(
                f"{path}: line {data[k][0]}, column '{col_names[c]}': depth {strings[k]} is not a finite number >= 0; "
                "fix or re-create the table"
            )
        return values

    values = np.column_stack([parse(c) for c in cols])
    missing = [cid for cid in contigs.ids if cid not in row_of]
    if missing:
        raise DepthTableError(
            f"{path}: contig '{missing[0]}' of {contigs.source or 'the FASTA'} has no row ({len(missing)} of {len(contigs)} "
            "kept contigs missing); the table must be made from reads mapped to this same assembly"
        )
    extra = [cid for cid in ids if cid not in id_set]
    if extra:
        known = _fasta_ids(Path(contigs.source)) if contigs.source else None
        if known is None:
            log.warning("%s: %d rows for contigs not kept (e.g. '%s') ignored; cannot re-read the FASTA to check them",
                        path, len(extra), extra[0])
        else:
            unknown = next((cid for cid in extra if cid not in known), None)
            if unknown is not None:
                raise DepthTableError(
                    f"{path}: line {data[row_of[unknown]][0]}: contig '{unknown}' is not in {contigs.source}; "
                    "the table must be made from reads mapped to this same assembly"
                )
            log.info("%s: %d rows for contigs shorter than the length filter ignored", path, len(extra))
    order = np.fromiter((row_of[cid] for cid in contigs.ids), dtype=np.int64, count=len(contigs))
    if length_col is not None:
        table_len = parse(length_col)[order]
        bad = np.flatnonzero(np.abs(table_len - contigs.lengths) > 5e-6 * contigs.lengths + 0.5)
        if len(bad):
            i = int(bad[0])
            raise DepthTableError(
                f"{path}: line {data[order[i]][0]}: contig '{contigs.ids[i]}' has contigLen {fields[order[i]][length_col]} "
                f"but is {contigs.lengths[i]} bp in {contigs.source or 'the FASTA'}; the table is for another assembly"
            )
    log.info("%s: %s depth table, %d samples, %d rows", path, fmt, len(samples), len(ids))
    return np.ascontiguousarray(values[order], dtype=np.float32), list(samples)


def write_depth_table(
    path: PathLike,
    contigs_or_ids: Contigs | Sequence[str],
    depth: np.ndarray,
    samples: Sequence[str],
    *,
    fmt: str = "metabat",
    lengths: Sequence[int] | np.ndarray | None = None,
) -> None:
    """Write a (N, S) depth matrix as a tab-separated table, atomically.

    ``fmt="metabat"``: ``contigName contigLen totalAvgDepth <s>.bam ...`` (jgi's layout without
    ``-var`` columns, as with ``--noIntraDepthVariance``; totalAvgDepth = sum over samples); needs
    lengths: from a ``Contigs`` or the ``lengths`` argument. ``fmt="vamb"``: ``contigname <s> ...``.
    Values are written with 9 significant digits, so float32 depths read back exactly.
    """
    if isinstance(contigs_or_ids, Contigs):
        ids = [str(c) for c in contigs_or_ids.ids]
        if lengths is None:
            lengths = contigs_or_ids.lengths
    else:
        ids = [str(c) for c in contigs_or_ids]
    depth = np.asarray(depth, dtype=np.float32)
    samples = [str(s) for s in samples]
    if depth.shape != (len(ids), len(samples)):
        raise ValueError(f"depth must be ({len(ids)}, {len(samples)}), got {depth.shape}")
    vals = [["%.9g" % v for v in row] for row in depth.tolist()]
    if fmt == "metabat":
        if lengths is None:
            raise ValueError("fmt='metabat' needs contig lengths: pass a Contigs or lengths=")
        total = depth.astype(np.float64).sum(axis=1)
        out = ["\t".join(["contigName", "contigLen", "totalAvgDepth", *(f"{s}.bam" for s in samples)])]
        out += [f"{c}\t{int(n)}\t{t:.9g}\t" + "\t".join(v) for c, n, t, v in zip(ids, lengths, total, vals)]
    elif fmt == "vamb":
        out = ["\t".join(["contigname", *samples])]
        out += [f"{c}\t" + "\t".join(v) for c, v in zip(ids, vals)]
    else:
        raise ValueError(f"fmt must be 'metabat' or 'vamb', got {fmt!r}")
    write_text(path, "\n".join(out) + "\n")
