"""Depth from many BAMs is resumable per BAM: each finished BAM's column is cached in the run folder at
once, and an interrupted `deepmetabin features --bam ...` run, repeated, reads only the BAMs not yet done."""
from __future__ import annotations

import os

import numpy as np
import pytest

import deepmetabin.depth as D
from bamtools import Read, random_contigs, write_bam, write_fasta
from deepmetabin import pipeline
from deepmetabin.cli import main
from deepmetabin.contigs import read_contigs

REAL_READER = D._alignment_depth
REFS = {"k1": 3000, "k2": 2500, "k3": 1800, "k4": 1200}


def _reads(rng: np.random.Generator, n: int) -> list[Read]:
    names = list(REFS)
    out = []
    for _ in range(n):
        ref = names[rng.integers(len(names))]
        out.append(Read(ref, int(rng.integers(0, REFS[ref] - 100)), "100M", nm=int(rng.integers(0, 3)),
                        mapq=int(rng.choice([0, 60]))))
    return out


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(11)
    fasta = write_fasta(tmp_path / "contigs.fna", random_contigs(rng, REFS))
    bams = [write_bam(tmp_path / f"S{j}.bam", REFS, _reads(rng, 150 + 40 * j)) for j in range(4)]
    return fasta, bams


class Reader:
    """Stands in for ``depth._alignment_depth``: records which files are read, can stop at the k-th."""

    def __init__(self, stop_at: int | None = None, exc: type[BaseException] = KeyboardInterrupt):
        self.read: list[str] = []
        self.stop_at, self.exc = stop_at, exc

    def __call__(self, path, *args):
        if self.stop_at is not None and len(self.read) == self.stop_at:
            raise self.exc()
        self.read.append(os.path.basename(path))
        return REAL_READER(path, *args)


def test_interrupted_call_reads_only_the_bams_not_done(inputs, tmp_path, monkeypatch):
    fasta, bams = inputs
    contigs = read_contigs(fasta, min_length=1000)
    fresh, fresh_unique, samples = D.depth_from_bams(bams, contigs, unique=True)
    assert (fresh_unique < fresh).any()
    cache = tmp_path / "cache"
    first = Reader(stop_at=2)
    monkeypatch.setattr(D, "_alignment_depth", first)
    with pytest.raises(KeyboardInterrupt):
        D.depth_from_bams(bams, contigs, cache_dir=cache)
    assert first.read == ["S0.bam", "S1.bam"]
    assert sorted(p.name for p in cache.iterdir()) == ["S0.npz", "S1.npz"]  # no temp file left
    again = Reader()
    monkeypatch.setattr(D, "_alignment_depth", again)
    calls: list[tuple[int, int]] = []
    depth, unique, samples2 = D.depth_from_bams(bams, contigs, cache_dir=cache, unique=True,
                                                progress=lambda d, t: calls.append((d, t)))
    assert again.read == ["S2.bam", "S3.bam"]
    assert samples2 == samples and calls == [(2, 4), (3, 4), (4, 4)]
    np.testing.assert_array_equal(depth, fresh)
    np.testing.assert_array_equal(unique, fresh_unique)  # the cached BAMs' unique columns too
    # everything cached: nothing read, same matrix
    third = Reader()
    monkeypatch.setattr(D, "_alignment_depth", third)
    np.testing.assert_array_equal(D.depth_from_bams(bams, contigs, cache_dir=cache)[0], fresh)
    assert third.read == []


def test_cache_is_keyed_by_file_contigs_and_options(inputs, tmp_path, monkeypatch, caplog):
    fasta, bams = inputs
    contigs = read_contigs(fasta, min_length=1000)
    cache = tmp_path / "cache"
    D.depth_from_bams(bams, contigs, cache_dir=cache)
    reader = Reader()
    monkeypatch.setattr(D, "_alignment_depth", reader)

    st = bams[1].stat()
    os.utime(bams[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a re-made BAM (new mtime)
    D.depth_from_bams(bams, contigs, cache_dir=cache)
    assert reader.read == ["S1.bam"]

    reader.read.clear()
    D.depth_from_bams(bams, contigs, cache_dir=cache, min_identity=0.9)  # another rule: every BAM again
    assert sorted(reader.read) == ["S0.bam", "S1.bam", "S2.bam", "S3.bam"]

    reader.read.clear()
    fewer = read_contigs(fasta, min_length=2000)  # other contigs (ids hash): every BAM again
    expected = D.depth_from_bams(bams, fewer)[0]
    reader.read.clear()
    np.testing.assert_array_equal(D.depth_from_bams(bams, fewer, cache_dir=cache)[0], expected)
    assert len(reader.read) == 4

    reader.read.clear()
    (cache / "S2.npz").write_bytes(b"not a numpy file")
    D.depth_from_bams(bams, fewer, cache_dir=cache)
    assert reader.read == ["S2.bam"] and "unreadable depth cache file" in caplog.text


def test_bad_bam_keeps_the_others_done(inputs, tmp_path, monkeypatch):
    """A BAM found unusable half-way stops the call with its one-line error; the BAMs read before it stay cached."""
    fasta, bams = inputs
    contigs = read_contigs(fasta, min_length=1000)
    reads = _reads(np.random.default_rng(1), 50)
    reads.sort(key=lambda r: -r.pos)  # out of order under a 'coordinate' header: found while reading it
    write_bam(bams[2], REFS, reads, sort=False, index=False)
    with pytest.raises(D.BamError, match="S2.bam: records are not sorted"):
        D.depth_from_bams(bams, contigs, cache_dir=tmp_path / "cache")
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"S0.npz", "S1.npz"}


def test_cli_features_resumes_after_interrupt(inputs, tmp_path, monkeypatch, capsys):
    fasta, bams = inputs
    ref = tmp_path / "ref"
    base = ["-q", "features", "--contigs", str(fasta), "--bam", *map(str, bams), "--threads", "1"]
    assert main([*base, "--out", str(ref)]) == 0

    out = tmp_path / "run"
    monkeypatch.setattr(D, "_alignment_depth", Reader(stop_at=3))
    assert main([*base, "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (out / "manifest.json").exists()
    assert len(list((out / pipeline.DEPTH_CACHE).iterdir())) == 3

    again = Reader()
    monkeypatch.setattr(D, "_alignment_depth", again)
    assert main([*base, "--out", str(out)]) == 0
    assert again.read == ["S3.bam"]
    assert not (out / pipeline.DEPTH_CACHE).exists()  # removed once the depth is in contigs.parquet
    assert pipeline.load_frame(out).equals(pipeline.load_frame(ref))
    np.testing.assert_array_equal(pipeline.load_array(out, "features"), pipeline.load_array(ref, "features"))


@pytest.mark.parametrize("strain_depth", [True, False])
def test_features_stage_keeps_the_unique_depth_of_bams(inputs, tmp_path, strain_depth):
    from deepmetabin.features import features

    fasta, bams = inputs
    out = tmp_path / "run"
    pipeline.features_stage(fasta, out, bams=bams, strain_depth=strain_depth)
    contigs = read_contigs(fasta, min_length=1000)
    depth, unique, samples = D.depth_from_bams(bams, contigs, unique=True)
    frame = pipeline.load_frame(out)
    assert [c for c in frame if c.startswith("unique:")] == ([f"unique:{s}" for s in samples] if strain_depth else [])
    for seqs in (True, False):
        loaded = pipeline.load_contigs(out, sequences=seqs)
        np.testing.assert_array_equal(loaded.depth, depth)
        if strain_depth:
            np.testing.assert_array_equal(loaded.unique_depth, unique)
        else:
            assert loaded.unique_depth is None
    expected = features(contigs.with_depth(depth, samples, unique if strain_depth else None))
    np.testing.assert_allclose(pipeline.load_array(out, "features"), expected, atol=1e-6)
    assert pipeline.load_manifest(out)["stages"]["features"]["params"]["strain_depth"] is strain_depth


def test_cli_features_strain_depth_switch(inputs, tmp_path, capsys):
    fasta, bams = inputs
    base = ["features", "--contigs", str(fasta), "--bam", *map(str, bams), "--threads", "1"]
    assert main(["-q", *base, "--out", str(tmp_path / "on")]) == 0
    assert "depth profiles from uniquely placed reads" in capsys.readouterr().out
    assert main(["-q", *base, "--out", str(tmp_path / "off"), "--no-strain-depth"]) == 0
    assert "uniquely placed" not in capsys.readouterr().out
    assert any(c.startswith("unique:") for c in pipeline.load_frame(tmp_path / "on"))
    assert not any(c.startswith("unique:") for c in pipeline.load_frame(tmp_path / "off"))
    assert not np.allclose(pipeline.load_array(tmp_path / "on", "features"), pipeline.load_array(tmp_path / "off", "features"))
