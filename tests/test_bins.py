"""BinSet edits, undo/redo, replay, and writers that round-trip."""
from __future__ import annotations

import numpy as np
import pytest

from deepmetabin.bins import BinSet, CurationError
from deepmetabin.contigs import Contigs, read_contigs
from deepmetabin.errors import FastaError
from deepmetabin.evaluate import read_binning

IDS = [f"c{i}" for i in range(10)]


def base():
    return BinSet.from_labels(IDS, np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -1]))


def test_edits_undo_redo_and_replay(tmp_path):
    b = base()
    start = b.assignment.copy()
    b.split("bin_0", ["c1", "c2"], new="new")
    b.merge(["bin_1", "bin_2"])
    b.move(["c8"], "bin_1")
    b.unbin(["c0"])
    b.accept("new")
    b.rename("bin_1", "big")
    after = b.assignment.copy()
    assert b.to_frame().set_index("contig")["bin"].to_dict() == {
        "c1": "new", "c2": "new", "c3": "big", "c4": "big", "c5": "big", "c6": "big", "c7": "big", "c8": "big"}
    assert b.accepted == {"new"}
    for _ in range(6):
        assert b.undo()
    assert not b.undo()
    assert np.array_equal(b.assignment, start) and b.accepted == set()
    for _ in range(6):
        assert b.redo()
    assert not b.redo()
    assert np.array_equal(b.assignment, after)
    b.save_edits(tmp_path / "curation.json")
    again = BinSet.replay(base(), BinSet.load_edits(tmp_path / "curation.json"))
    assert np.array_equal(again.assignment, after) and again.accepted == {"new"}


def test_undo_then_new_edit_drops_redo_and_log_skips_undone():
    b = base()
    b.merge(["bin_0", "bin_1"])
    b.undo()
    b.unbin(["c9", "c7"])
    assert not b.redo()
    assert [e["op"] for e in b.edits] == ["unbin"]


@pytest.mark.parametrize("bad", [
    lambda b: b.merge(["bin_0"]),
    lambda b: b.merge(["bin_0", "nope"]),
    lambda b: b.split("bin_0", ["c5"]),
    lambda b: b.split("bin_0", ["zz"]),
    lambda b: b.rename("bin_0", "bin_1"),
    lambda b: b.accept("nope"),
    lambda b: b.apply_edit({"op": "explode"}),
])
def test_impossible_edits_raise_and_change_nothing(bad):
    b = base()
    before = b.assignment.copy()
    with pytest.raises(CurationError):
        bad(b)
    assert np.array_equal(b.assignment, before) and not b.edits


def test_writers_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    contigs = Contigs.from_sequences([(c, "".join(rng.choice(list("ACGT"), size=150 + i))) for i, c in enumerate(IDS)])
    b = base()
    b.write_tsv(tmp_path / "bins.tsv")
    b.write_cami(tmp_path / "bins.cami")
    b.write_unbinned(tmp_path / "unbinned.tsv")
    for path in ("bins.tsv", "bins.cami"):
        back = BinSet.from_frame(IDS, read_binning(tmp_path / path))
        assert np.array_equal(back.assignment, b.assignment)
    assert (tmp_path / "unbinned.tsv").read_text().split() == ["c8", "c9"]
    files = b.write_fasta(tmp_path / "bins", contigs)
    assert [f.name for f in files] == ["bin_0.fna", "bin_1.fna", "bin_2.fna"]
    for f in files:
        back = read_contigs(f, min_length=1)
        for cid in back.ids:
            assert b.assignment[IDS.index(cid)] == f.stem
            assert back.sequence(list(back.ids).index(cid)) == contigs.sequence(IDS.index(cid))
    # rewriting replaces the folder whole: a bin that disappeared leaves no file behind
    b.merge(["bin_1", "bin_2"])
    assert [f.name for f in b.write_fasta(tmp_path / "bins", contigs)] == ["bin_0.fna", "bin_1.fna"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_fasta_from_a_container_without_sequences_reads_them_from_its_fasta(tmp_path):
    """The bins stage holds no sequences: ``write_fasta`` then reads the source FASTA once (short records skipped,
    lower case upper-cased as in memory) and writes the same files, whatever its buffer; a FASTA that changed since
    is refused and the previous bins stay."""
    rng = np.random.default_rng(2)
    seqs = {c: "".join(rng.choice(list("ACGTacgt"), size=300 + 37 * i)) for i, c in enumerate(IDS)}
    fasta = tmp_path / "contigs.fna"
    fasta.write_text("".join(f">{c} desc\n{s[:100]}\n{s[100:]}\n" + (f">short{c}\nACGT\n" if i % 3 == 0 else "")
                             for i, (c, s) in enumerate(seqs.items())))
    held = read_contigs(fasta, min_length=200)
    assert list(held.ids) == IDS
    b = base()
    want = {f.name: f.read_text() for f in b.write_fasta(tmp_path / "want", held)}
    held.release_sequences()
    for buffer_bytes in (1, 1000, 1 << 24):  # a flush after every record, after a few, once at the end
        got = b.write_fasta(tmp_path / "got", held, buffer_bytes=buffer_bytes)
        assert {f.name: f.read_text() for f in got} == want
    fasta.write_text(fasta.read_text().replace(seqs["c4"][:100], seqs["c4"][:90]))  # c4 is 10 bp shorter now
    b.merge(["bin_1", "bin_2"])
    with pytest.raises(FastaError, match="no longer holds contig 'c4'"):
        b.write_fasta(tmp_path / "got", held)
    assert {f.name: f.read_text() for f in sorted((tmp_path / "got").iterdir())} == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contigs.fna", "got", "want"]  # no temp folder left


def test_bin_names_are_sanitised_for_files(tmp_path):
    contigs = Contigs.from_sequences([(c, "ACGT" * 10) for c in IDS])
    b = base()
    b.rename("bin_0", "../../evil")
    files = b.write_fasta(tmp_path / "bins", contigs)
    assert all(f.parent == tmp_path / "bins" for f in files)


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_disk_full_during_export_keeps_previous_outputs(tmp_path, monkeypatch):
    from deepmetabin import _io
    from deepmetabin.errors import DeepMetaBinError

    contigs = Contigs.from_sequences([(c, "ACGT" * 10) for c in IDS])
    b = base()
    b.write_fasta(tmp_path / "bins", contigs)
    b.write_tsv(tmp_path / "bins.tsv")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    b.merge(["bin_0", "bin_1"])
    monkeypatch.setattr(_io.os, "replace", _disk_full)
    with pytest.raises(DeepMetaBinError, match="No space left on device.*intact"):
        b.write_tsv(tmp_path / "bins.tsv")
    with pytest.raises(DeepMetaBinError, match="No space left on device"):
        b.write_fasta(tmp_path / "bins", contigs)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # old bins.tsv and bins/ untouched, no temp files left


def test_failure_after_old_bins_moved_aside_puts_them_back(tmp_path, monkeypatch):
    import os as real_os

    from deepmetabin.errors import DeepMetaBinError

    contigs = Contigs.from_sequences([(c, "ACGT" * 10) for c in IDS])
    b = base()
    b.write_fasta(tmp_path / "bins", contigs)
    before = sorted(p.name for p in (tmp_path / "bins").iterdir())
    b.merge(["bin_0", "bin_1"])
    calls = []
    original = real_os.replace

    def second_call_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the swap of the new folder in, after the old one moved aside
            raise OSError(28, "No space left on device")
        return original(src, dst)

    monkeypatch.setattr(real_os, "replace", second_call_fails)
    with pytest.raises(DeepMetaBinError):
        b.write_fasta(tmp_path / "bins", contigs)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "bins").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bins"]


def test_outputs_get_the_permissions_of_plain_files(tmp_path):
    """Atomic writes go through mkstemp/mkdtemp (0600/0700); the renamed outputs must carry the usual
    umask permissions instead, so a run folder can be shared with a group."""
    import os

    from deepmetabin._io import _UMASK, temp_dir_beside, write_text

    write_text(tmp_path / "a.tsv", "x\n")
    assert (tmp_path / "a.tsv").stat().st_mode & 0o777 == 0o666 & ~_UMASK
    d = temp_dir_beside(tmp_path / "bins")
    assert d.parent == tmp_path and d.name.startswith(".bins.") and d.stat().st_mode & 0o777 == 0o777 & ~_UMASK
    assert _UMASK == os.umask(_UMASK)  # reading it at import left the process's umask as it was
