"""Helpers for tests: write tiny real FASTA and BAM files with pysam."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam


@dataclass
class Read:
    """One alignment record; ``cigar`` is a SAM CIGAR string, ``nm`` None leaves out the NM tag."""

    ref: str
    pos: int  # 0-based leftmost position
    cigar: str
    nm: int | None = 0
    flag: int = 0
    mapq: int = 60
    name: str = ""
    seq_len: int | None = None  # None: the query length implied by the CIGAR; 0: SEQ '*'
    tags: list[tuple[str, object]] = field(default_factory=list)


def query_length(cigar: str) -> int:
    return sum(int(n) for n, op in re.findall(r"(\d+)([MIDNSHP=X])", cigar) if op in "MIS=X")


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{cid}\n{seq}\n" for cid, seq in records.items()))
    return path


def random_contigs(rng: np.random.Generator, lengths: dict[str, int]) -> dict[str, str]:
    return {cid: "".join(rng.choice(list("ACGT"), size=n)) for cid, n in lengths.items()}


def write_bam(
    path: Path,
    refs: dict[str, int],
    reads: list[Read],
    *,
    sort: bool = True,
    index: bool = True,
    so: str | None = "coordinate",
) -> Path:
    """Write ``reads`` against references ``refs`` (name -> length) to a BAM at ``path``.

    ``sort``: coordinate-sort with ``pysam.sort`` (else records stay in the given order);
    ``index``: write a ``.bai``; ``so``: the header's ``@HD SO`` value (None: no ``@HD`` line).
    """
    header: dict = {"SQ": [{"SN": n, "LN": int(ln)} for n, ln in refs.items()]}
    if so is not None:
        header["HD"] = {"VN": "1.6", "SO": so}
    names = list(refs)
    rng = np.random.default_rng(0)
    raw = path.with_name(path.name + ".unsorted.bam") if sort else path
    with pysam.AlignmentFile(str(raw), "wb", header=header) as out:
        for k, r in enumerate(reads):
            a = pysam.AlignedSegment(out.header)
            a.query_name = r.name or f"r{k}"
            n = query_length(r.cigar) if r.seq_len is None else r.seq_len
            if n:
                a.query_sequence = "".join(rng.choice(list("ACGT"), size=n))
                a.query_qualities = pysam.qualitystring_to_array("I" * n)
            a.flag = r.flag
            a.reference_id = names.index(r.ref) if r.ref != "*" else -1
            a.reference_start = r.pos
            a.mapping_quality = r.mapq
            if r.cigar != "*":
                a.cigarstring = r.cigar
            tags = list(r.tags)
            if r.nm is not None:
                tags.append(("NM", r.nm))
            a.set_tags(tags)
            out.write(a)
    if sort:
        pysam.sort("-o", str(path), str(raw))
        raw.unlink()
    if index:
        pysam.index(str(path))
    return path
