"""read_contigs and the Contigs container on small FASTA files written by the tests."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from deepmetabin.contigs import Contigs, read_contigs
from deepmetabin.errors import FastaError, InputFileError, NoContigsError


def write_fasta(path, records, width=60, gz=False):
    text = "".join(f">{cid} some description\n" + "\n".join(seq[i : i + width] for i in range(0, len(seq), width)) + "\n" for cid, seq in records)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def random_seq(rng, n):
    return "".join(rng.choice(list("ACGT"), size=n))


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip_with_length_filter(tmp_path, gz):
    rng = np.random.default_rng(1)
    recs = [("a", random_seq(rng, 1500)), ("b", random_seq(rng, 999)), ("c", random_seq(rng, 1000))]
    path = write_fasta(tmp_path / ("x.fna.gz" if gz else "x.fna"), recs, gz=gz)
    c = read_contigs(path)
    assert list(c.ids) == ["a", "c"]
    assert list(c.lengths) == [1500, 1000]
    assert c.sequence(0) == recs[0][1] and c.sequence(1) == recs[2][1]
    assert c.total_bp == 2500
    assert list(read_contigs(path, min_length=500).ids) == ["a", "b", "c"]


def test_lower_case_n_rich_and_gc(tmp_path):
    seq = "ggcc" * 100 + "N" * 600 + "aatt" * 100 + "u" * 4
    path = write_fasta(tmp_path / "x.fna", [("soft", seq)])
    c = read_contigs(path)
    assert c.sequence(0) == seq.upper().replace("U", "T")
    assert c.lengths[0] == len(seq)
    assert c.gc[0] == pytest.approx(400 / 804)
    only_n = read_contigs(write_fasta(tmp_path / "n.fna", [("n", "N" * 1200)]))
    assert only_n.gc[0] == 0.5


def test_windows_line_endings_and_blank_lines(tmp_path):
    path = tmp_path / "x.fna"
    path.write_bytes(b"\r\n>x desc\r\n" + b"ACGT" * 200 + b"\r\n\r\n" + b"TTGG" * 100 + b"\r\n")
    c = read_contigs(path)
    assert c.lengths[0] == 1200 and c.sequence(0).startswith("ACGTACGT")


def test_subset_and_frame(tmp_path):
    rng = np.random.default_rng(2)
    recs = [(f"c{i}", random_seq(rng, 1000 + 100 * i)) for i in range(5)]
    c = read_contigs(write_fasta(tmp_path / "x.fna", recs))
    c = c.with_depth(np.arange(10, dtype=np.float32).reshape(5, 2), ["S1", "S2"])
    sub = c.subset(np.array([3, 1]))
    assert list(sub.ids) == ["c3", "c1"]
    assert sub.sequence(0) == recs[3][1] and sub.sequence(1) == recs[1][1]
    assert sub.depth.tolist() == [[6, 7], [2, 3]]
    frame = c.to_frame()
    assert list(frame.columns) == ["contig", "length", "gc", "depth:S1", "depth:S2"]
    assert c.ids_hash != sub.ids_hash and c.ids_hash == read_contigs(tmp_path / "x.fna").ids_hash


# ------------------------------------------------------------------ bad input: one clear message
def _junk_gzip(path):
    with gzip.open(path, "wb") as fh:
        fh.write(os.urandom(5000))
    return path


def _bam(path):
    import pysam

    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "c1", "LN": 2000}]}
    with pysam.AlignmentFile(str(path), "wb", header=header):
        pass
    return path


def _truncated_gzip(path):
    raw = gzip.compress((">a\n" + "ACGT" * 5000 + "\n").encode())
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _w(path, text):
    path.write_text(text)
    return path


BAD = {
    "missing": (lambda p: p / "nope.fna", InputFileError, "not found"),
    "folder": (lambda p: p, InputFileError, "folder"),
    "empty": (lambda p: _w(p / "e.fna", ""), InputFileError, "empty"),
    "blank_only": (lambda p: _w(p / "e.fna", "\n\n"), InputFileError, "empty"),
    "text": (lambda p: _w(p / "t.fna", "hello world\n"), FastaError, "'>'"),
    "gzip_junk": (lambda p: _junk_gzip(p / "j.fna.gz"), (FastaError, InputFileError), "j.fna.gz"),
    "truncated_gzip": (lambda p: _truncated_gzip(p / "t.fna.gz"), InputFileError, "truncated"),
    "bam": (lambda p: _bam(p / "x.bam"), FastaError, "BAM"),
    "duplicate": (lambda p: write_fasta(p / "d.fna", [("a", "A" * 1200), ("b", "C" * 1200), ("a", "G" * 1200)]), FastaError, "duplicate contig id 'a'"),
    "protein": (lambda p: write_fasta(p / "p.faa", [("prot", "MEEPQSDPSVEPPLSQETFSDLWKLL" * 50)]), FastaError, "not a nucleotide code"),
    "no_id": (lambda p: _w(p / "n.fna", ">\nACGT\n"), FastaError, "without a contig id"),
    "too_short": (lambda p: write_fasta(p / "s.fna", [("a", "ACGT" * 100)]), NoContigsError, "min-length"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_clear_error(tmp_path, case):
    make, exc, text = BAD[case]
    path = make(tmp_path)
    with pytest.raises(exc) as info:
        read_contigs(path)
    msg = str(info.value)
    assert text in msg and str(path) in msg and "\n" not in msg


def test_from_sequences_matches_reader(tmp_path):
    rng = np.random.default_rng(3)
    recs = [("x", random_seq(rng, 1300)), ("y", random_seq(rng, 2100).lower())]
    a = read_contigs(write_fasta(tmp_path / "x.fna", recs))
    b = Contigs.from_sequences(recs)
    assert list(a.ids) == list(b.ids)
    assert np.array_equal(a.seq_buffer, b.seq_buffer) and np.array_equal(a.gc, b.gc)


@pytest.mark.parametrize("block", [7, 64, 1 << 22])
def test_block_reader_matches_line_by_line_parse_at_any_block_size(tmp_path, monkeypatch, block):
    """The reader cuts the file in blocks of whole lines: records, line breaks (LF, CRLF, blank lines,
    varying widths), headers right at a block edge and a last line without newline give the same
    contigs whatever the block size, and the same as a plain line-by-line parse."""
    import deepmetabin.contigs as C

    rng = np.random.default_rng(5)
    recs = [(f"c{i}", random_seq(rng, int(rng.integers(1000, 1400)))) for i in range(12)]
    lines: list[str] = []
    for i, (cid, seq) in enumerate(recs):
        lines.append(f">{cid} len={len(seq)}")
        width = 50 + 7 * i
        lines += [seq[j : j + width].lower() if i % 3 == 0 else seq[j : j + width] for j in range(0, len(seq), width)]
        if i % 4 == 1:
            lines.append("")
    raw = "\r\n".join(lines[:40]) + "\r\n" + "\n".join(lines[40:])  # CRLF, then LF, no final newline
    path = tmp_path / "x.fna"
    path.write_text(raw)
    monkeypatch.setattr(C, "_BLOCK", block)
    c = read_contigs(path)
    assert list(c.ids) == [cid for cid, _ in recs]
    assert [c.sequence(i) for i in range(len(c))] == [seq for _, seq in recs]


@pytest.mark.parametrize("block", [5, 1 << 22])
def test_error_line_numbers_do_not_depend_on_blocks(tmp_path, monkeypatch, block):
    import deepmetabin.contigs as C

    monkeypatch.setattr(C, "_BLOCK", block)
    dup = tmp_path / "d.fna"
    dup.write_text(">a\n" + "ACGT\n" * 300 + "\n>b\n" + "ACGT\n" * 300 + ">a x\nACGT\n")
    with pytest.raises(FastaError, match=r"lines 1 and 604"):
        read_contigs(dup)
    empty_id = tmp_path / "e.fna"
    empty_id.write_text(">a\n" + "ACGT\n" * 300 + ">  \nACGT\n")
    with pytest.raises(FastaError, match=r"line 302: header '>' without a contig id"):
        read_contigs(empty_id)
    text = tmp_path / "t.fna"
    text.write_text("\n\n  \nnot a fasta\n>a\nACGT\n")
    with pytest.raises(FastaError, match=r"line 4: expected a FASTA header"):
        read_contigs(text)


def test_release_sequences_keeps_ids_lengths_gc_and_refuses_sequences(tmp_path):
    rng = np.random.default_rng(3)
    c = read_contigs(write_fasta(tmp_path / "x.fna", [("a", random_seq(rng, 1500)), ("b", random_seq(rng, 1200))]))
    gc = c.gc.copy()
    c.release_sequences()
    assert c.seq_buffer.size == 0 and list(c.ids) == ["a", "b"] and c.total_bp == 2700 and np.array_equal(c.gc, gc)
    with pytest.raises(RuntimeError, match="released"):
        c.sequence(0)
    # every reader of the raw buffer refuses too (it would read past the empty buffer's end)
    from deepmetabin.markers import call_genes, find_marker_sets, sequences_hash
    from deepmetabin.tnf import tnf

    for read in (tnf, call_genes, find_marker_sets, sequences_hash):
        with pytest.raises(RuntimeError, match="released"):
            read(c)
