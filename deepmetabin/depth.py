"""Per-sample contig depth: from coordinate-sorted BAMs, or from a depth table.

Depth from BAMs follows MetaBAT's ``jgi_summarize_bam_contig_depths`` (v2.15, default options), so
that ``depth_from_bams(...)[0][:, j]`` equals the ``<sample>.bam`` column of its table:

Reads
    A record is skipped if it is secondary (0x100), QC-failed (0x200), a duplicate (0x400) or
    unmapped (0x4). Supplementary alignments (0x800) are *counted*, as jgi counts them (they cover
    other read bases than the primary). There is no mapping-quality filter (jgi ``--minMapQual 0``).
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

BAM requirements and choices
    * The BAM must be sorted by coordinate: a header ``SO`` other than ``coordinate`` is refused,
      and the record order is checked while reading (jgi refuses unsorted BAMs too).
    * No index is needed: every BAM is read front to back once (as jgi does), so a missing
      ``.bai`` is not an error.
    * Every kept contig must be a BAM reference with the same length; the BAM may hold more
      references (e.g. contigs shorter than ``min_length``), which are read and ignored.
    * Sample name = BAM file name without ``.bam``; names must be unique.
    * Records are decoded by a numba kernel over BGZF blocks inflated with :mod:`zlib` (block sizes
      are checked, CRC32 is not). CIGARs with more than 65535 ops (stored in a ``CG`` tag) are read
      as their placeholder and add no depth.

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

import gzip
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numba
import numpy as np

from ._io import write_text
from .contigs import Contigs
from .errors import BamError, DepthTableError, InputFileError

log = logging.getLogger(__name__)

__all__ = ["depth_from_bams", "read_depth_table", "write_depth_table"]

PathLike = str | os.PathLike[str]

#: Records with any of these flags are skipped: unmapped 0x4, secondary 0x100, QC fail 0x200, duplicate 0x400.
SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400

# ----------------------------------------------------------------------------------------------
# numba kernel: decode BAM records, filter, and accumulate per-base coverage of the current contig
# ----------------------------------------------------------------------------------------------

# state vector slots, kept between chunks of one BAM
_LAST_TID, _LAST_POS, _SIZES, _COUNT, _AVG, _KEPT, _ERR, _ERR_TID, _ERR_POS, _MAPPED = range(10)
_N_STATE = 10
_ERR_UNSORTED, _ERR_MALFORMED = 1, 2


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
def _nm_tag(b: np.ndarray, a: int, end: int) -> int:
    """Value of the integer ``NM`` aux tag in ``b[a:end]``, or -1 if absent or unreadable."""
    while a + 3 <= end:
        t0, t1, ty = b[a], b[a + 1], b[a + 2]
        a += 3
        if t0 == 78 and t1 == 77:  # 'NM'
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
def _scan_records(buf: np.ndarray, end: int, ref_lens: np.ndarray, diff: np.ndarray, depth: np.ndarray,
                  state: np.ndarray, min_identity: np.float32, max_edge: int) -> int:
    """Consume whole BAM records from ``buf[:end]``; return the offset of the first incomplete one.

    ``diff`` (max L + 1,) int32 holds the current contig's coverage differences; ``depth`` (n_refs,)
    float64 receives each finished contig's mean depth; ``state`` (see ``_LAST_TID`` ...) carries the
    position, the running read-length mean and error codes between calls.
    """
    n_refs = ref_lens.shape[0]
    last_tid = state[_LAST_TID]
    last_pos = state[_LAST_POS]
    sizes = state[_SIZES]
    count = state[_COUNT]
    avg = state[_AVG]
    kept = state[_KEPT]
    mapped = state[_MAPPED]
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
        sizes += l_seq
        count += 1
        if tid >= 0 and (last_tid > tid or (last_tid == tid and last_pos > pos)):
            state[_ERR] = _ERR_UNSORTED
            state[_ERR_TID] = tid
            state[_ERR_POS] = pos
            break
        p = nxt
        if flag & 0x704:  # unmapped, secondary, QC fail, duplicate
            continue
        if tid < 0 or tid >= n_refs:
            state[_ERR] = _ERR_MALFORMED
            break
        mapped += 1
        avg = sizes // count
        if tid != last_tid:
            if last_tid >= 0:
                depth[last_tid] = _finish_contig(diff, ref_lens[last_tid], min(max_edge, avg))
        last_tid = tid
        last_pos = pos
        length = ref_lens[tid]
        if pos < 0 or pos >= length:
            continue
        cig = r + 32 + l_name
        aux = cig + 4 * n_cig + (l_seq + 1) // 2 + l_seq
        if aux > nxt:
            state[_ERR] = _ERR_MALFORMED
            break
        # an alignment running past the contig end: the crossing op and the rest become a soft clip
        n_use = n_cig
        refpos = np.int64(pos)
        for k in range(n_cig):
            v = _u32(buf, cig + 4 * k)
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
            v = _u32(buf, cig + 4 * k)
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
        nm = _nm_tag(buf, aux, nxt)
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
        identity = np.float32(exact) / np.float32(denom) if denom > 0 else np.float32(0.0)
        if identity < min_identity:
            continue
        kept += 1
        refpos = np.int64(pos)
        for k in range(n_use):
            v = _u32(buf, cig + 4 * k)
            op = v & 15
            ln = v >> 4
            if op == 0 or op == 7 or op == 8:
                diff[refpos] += 1
                diff[min(refpos + ln, length)] -= 1
            if op == 0 or op == 2 or op == 3 or op == 7 or op == 8:
                refpos += ln
    state[_LAST_TID] = last_tid
    state[_LAST_POS] = last_pos
    state[_SIZES] = sizes
    state[_COUNT] = count
    state[_AVG] = avg
    state[_KEPT] = kept
    state[_MAPPED] = mapped
    return p


def _warm_up() -> None:
    """Compile (or load from cache) the kernel in this process, so forked workers inherit it."""
    # a read-only buffer, as np.frombuffer(bytes) gives in _bam_depth (numba types it apart)
    _scan_records(np.frombuffer(b"", np.uint8), 0, np.zeros(1, np.int64), np.zeros(2, np.int32),
                  np.zeros(1, np.float64), np.zeros(_N_STATE, np.int64), np.float32(0.97), 75)
    _finish_contig(np.zeros(2, np.int32), 1, 0)


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


def _bam_depth(path: str, min_identity: float, edge: int) -> tuple[np.ndarray, int, int, int]:
    """Mean depth of every reference of one BAM, in header order.

    Returns:
        ``(depth, n_records, n_mapped, n_kept)``: depth (n_refs,) float64 in x; record counts.

    Raises:
        BamError: corrupt or truncated BAM, records out of coordinate order.
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
            diff = np.zeros(int(ref_lens.max(initial=0)) + 2, np.int32)
            depth = np.zeros(len(ref_lens), np.float64)
            buf = buf[start:]
        arr = np.frombuffer(buf, dtype=np.uint8)
        used = _scan_records(arr, len(arr), ref_lens, diff, depth, state, min_id, edge)
        if state[_ERR] == _ERR_UNSORTED:
            raise BamError(
                f"{bam}: records are not sorted by coordinate (a read on reference #{state[_ERR_TID]} at "
                f"position {state[_ERR_POS] + 1} comes after one further on); sort it: samtools sort -o sorted.bam {bam}"
            )
        if state[_ERR]:
            raise BamError(f"{bam}: holds a malformed record (bad size or reference id); the BAM is corrupt, re-create it")
        pending = buf[used:]
    if ref_lens is None or pending:
        raise BamError(f"{bam}: ends inside the header or a record (truncated); re-create or re-copy the BAM")
    last = int(state[_LAST_TID])
    if last >= 0:
        depth[last] = _finish_contig(diff, int(ref_lens[last]), min(edge, int(state[_AVG])))
    log.debug("%s: %d records, %d mapped, %d kept in %.1fs", bam, state[_COUNT], state[_MAPPED], state[_KEPT],
              time.perf_counter() - t0)
    return depth, int(state[_COUNT]), int(state[_MAPPED]), int(state[_KEPT])


# ----------------------------------------------------------------------------------------------
# BAM checks and the public entry point
# ----------------------------------------------------------------------------------------------


def sample_name(path: PathLike) -> str:
    """Sample name of a BAM or table column: the file name without a trailing ``.bam``."""
    name = Path(path).name
    return name[:-4] if name.endswith(".bam") else name


def _check_bam(path: Path, contigs: Contigs) -> np.ndarray:
    """Validate one BAM against ``contigs``; return (N,) int64 BAM reference index of each contig.

    Raises:
        InputFileError: missing or a folder.
        BamError: not a BAM, not coordinate-sorted per its header, or a kept contig missing from
            its references or of another length.
    """
    import pysam

    if not path.exists():
        raise InputFileError(f"{path}: BAM file not found; check the path given with --bam")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, expected a BAM file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"CRAM":
        raise BamError(f"{path}: is a CRAM file; convert it to BAM: samtools view -b -T contigs.fna -o {path.stem}.bam {path}")
    if magic[:1] == b"@":
        raise BamError(f"{path}: is a SAM text file, not a BAM; convert and sort it: samtools sort -o {path.stem}.bam {path}")
    if magic[:2] != b"\x1f\x8b":
        raise BamError(f"{path}: is not a BAM file (no BGZF/gzip magic); give coordinate-sorted BAMs made with samtools sort")
    try:
        with gzip.open(path, "rb") as gz:
            if gz.read(4) != b"BAM\x01":
                raise BamError(f"{path}: is gzip data but not a BAM file; give coordinate-sorted BAMs made with samtools sort")
    except (OSError, EOFError, zlib.error):
        raise BamError(f"{path}: is not a readable BAM file (corrupt or truncated); re-create it with samtools sort") from None
    try:
        save = pysam.set_verbosity(0)
        try:
            with pysam.AlignmentFile(str(path), "rb", check_sq=False) as bam:
                refs, lens, text = bam.references, bam.lengths, bam.text
        finally:
            pysam.set_verbosity(save)
    except (OSError, ValueError) as exc:
        raise BamError(f"{path}: cannot be read as BAM ({exc}); re-create it with samtools sort") from None
    hd = text.split("\n", 1)[0] if text.startswith("@HD") else ""
    m = re.search(r"\tSO:(\S+)", hd)
    if m and m.group(1) != "coordinate":
        raise BamError(f"{path}: header says it is sorted by '{m.group(1)}', need 'coordinate'; sort it: samtools sort -o sorted.bam {path}")
    index = {name: i for i, name in enumerate(refs)}
    tids = np.empty(len(contigs), dtype=np.int64)
    for i, (cid, length) in enumerate(zip(contigs.ids, contigs.lengths)):
        t = index.get(cid)
        if t is None:
            n_missing = sum(c not in index for c in contigs.ids)
            raise BamError(
                f"{path}: contig '{cid}' of {contigs.source or 'the FASTA'} is not a reference of this BAM "
                f"({n_missing} of {len(contigs)} kept contigs missing); map the reads to this same assembly"
            )
        if lens[t] != length:
            raise BamError(
                f"{path}: contig '{cid}' is {lens[t]} bp in the BAM but {length} bp in {contigs.source or 'the FASTA'}; "
                "map the reads to this same assembly"
            )
        tids[i] = t
    return tids


def depth_from_bams(
    bam_paths: Sequence[PathLike],
    contigs: Contigs,
    *,
    threads: int = 1,
    min_identity: float = 0.97,
    edge: int = 75,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Mean read depth of every contig in every BAM (MetaBAT rule, see the module docstring).

    Args:
        bam_paths: S coordinate-sorted BAMs of reads mapped to the assembly ``contigs`` came from.
        contigs: the kept contigs; rows of the result follow their order.
        threads: BAMs read in parallel (processes); each BAM uses one core.
        min_identity: minimum read identity in [0, 1] (jgi ``--percentIdentity`` / 100).
        edge: bases left out at each contig end, capped by the mean read length (0 keeps all).
        progress: called as ``progress(done, S)`` each time a BAM is finished.

    Returns:
        ``(depth, samples)``: depth (N, S) float32 in reads per base (x); S sample names (BAM file
        names without ``.bam``).

    Raises:
        InputFileError: a BAM is missing.
        BamError: no BAMs, duplicate sample names, not a BAM, unsorted, corrupt/truncated, or a kept
            contig missing from a BAM's references or of another length.
    """
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
                f"{p}: sample name '{s}' is also the name of {seen[s]} (sample = file name without .bam); "
                "give each sample's BAM a distinct file name, and each BAM only once"
            )
        seen[s] = p
    tids = [_check_bam(p, contigs) for p in paths]
    _warm_up()
    t0 = time.perf_counter()
    depth = np.zeros((len(contigs), len(paths)), dtype=np.float32)

    def done(j: int, result: tuple[np.ndarray, int, int, int], n_done: int) -> None:
        per_ref, n_rec, n_mapped, n_kept = result
        depth[:, j] = per_ref[tids[j]]
        log.info("%s: %d records, %d mapped, %d kept (identity >= %.2f)", paths[j], n_rec, n_mapped, n_kept, min_identity)
        if progress is not None:
            progress(n_done, len(paths))

    workers = max(1, min(int(threads), len(paths)))
    if workers == 1:
        for j, p in enumerate(paths):
            done(j, _bam_depth(str(p), min_identity, edge), j + 1)
    else:
        # largest first, so the last BAM to start is a small one
        order = sorted(range(len(paths)), key=lambda j: -paths[j].stat().st_size)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_bam_depth, str(paths[j]), min_identity, edge): j for j in order}
            try:
                for n_done, fut in enumerate(as_completed(futures), start=1):
                    done(futures[fut], fut.result(), n_done)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    log.info("depth of %d contigs in %d BAMs in %.1fs", len(contigs), len(paths), time.perf_counter() - t0)
    return depth, samples


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
