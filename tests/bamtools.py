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


_OTHER = {"A": "C", "C": "G", "G": "T", "T": "A"}


def true_sequence(r: Read, ref_seq: str, rng: np.random.Generator) -> str:
    """A query sequence for ``r`` that agrees with ``ref_seq`` as its CIGAR and NM say: M/= copy
    the reference, X differ from it, I/S are random, and ``NM - I - D - X`` more M bases differ
    (so NM is what htslib computes, as CRAM needs). Reference bases past the end are random."""
    seq: list[str] = []
    m_slots: list[int] = []
    ref_pos = r.pos
    ins = dels = mism = 0
    for n_s, op in re.findall(r"(\d+)([MIDNSHP=X])", r.cigar):
        n = int(n_s)
        if op in "M=X":
            for k in range(n):
                base = ref_seq[ref_pos + k] if ref_pos + k < len(ref_seq) else str(rng.choice(list("ACGT")))
                if op == "M":
                    m_slots.append(len(seq))
                seq.append(_OTHER[base] if op == "X" else base)
            mism += n if op == "X" else 0
            ref_pos += n
        elif op in "IS":
            seq.extend(rng.choice(list("ACGT"), size=n))
            ins += n if op == "I" else 0
        elif op in "DN":
            ref_pos += n
            dels += n if op == "D" else 0
    extra = 0 if r.nm is None else r.nm - ins - dels - mism
    for i in rng.choice(m_slots, size=max(0, min(extra, len(m_slots))), replace=False):
        seq[i] = _OTHER[seq[i]]
    return "".join(seq)


def write_bam(
    path: Path,
    refs: dict[str, int],
    reads: list[Read],
    *,
    sort: bool = True,
    index: bool = True,
    so: str | None = "coordinate",
    reference: dict[str, str] | None = None,
) -> Path:
    """Write ``reads`` against references ``refs`` (name -> length) to a BAM at ``path``.

    ``sort``: coordinate-sort with ``pysam.sort`` (else records stay in the given order);
    ``index``: write a ``.bai``; ``so``: the header's ``@HD SO`` value (None: no ``@HD`` line);
    ``reference``: contig sequences to derive read sequences from (``true_sequence``), else random.
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
                if reference is not None and r.ref != "*" and r.cigar != "*" and r.seq_len is None:
                    a.query_sequence = true_sequence(r, reference[r.ref], rng)
                else:
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


def bam_to_cram(bam: Path, cram: Path, fasta: Path) -> Path:
    """Copy the records of ``bam``, in their order, to a CRAM at ``cram`` encoded against ``fasta``."""
    with pysam.AlignmentFile(str(bam), "rb") as src, \
            pysam.AlignmentFile(str(cram), "wc", header=src.header, reference_filename=str(fasta)) as out:
        for a in src.fetch(until_eof=True):
            out.write(a)
    return cram
