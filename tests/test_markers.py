"""Marker genes on real genomes: hits, genome-count estimate, cannot-links, cache, data errors, CLI."""
from __future__ import annotations

import gzip
import json
import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmetabin import markers as M
from deepmetabin import pipeline
from deepmetabin.cli import _MARKER_SETS, main
from deepmetabin.contigs import Contigs
from deepmetabin.errors import MarkerCacheError, MarkerDataError, RunFolderError
from markers_data import DUP, FASTA, HPYLORI, SSUIS, concat, data


def make_contigs(seqs: dict[str, str]) -> Contigs:
    ids = np.array(list(seqs), dtype=object)
    lengths = np.array([len(s) for s in seqs.values()], dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buf = np.frombuffer("".join(seqs.values()).encode(), dtype=np.uint8).copy()
    return Contigs(ids=ids, lengths=lengths, gc=np.full(len(ids), 0.5, np.float32), seq_buffer=buf, offsets=offsets)


def few_marker_contigs(n: int = 6) -> Contigs:
    """``n`` S. suis contigs that carry sc107 markers (fast to search)."""
    d = data()
    c, hits = d.subset(SSUIS)
    ids = hits["sc107"].drop_duplicates("contig").sort_values("contig")["contig"].to_numpy()[:n]
    return c.subset(np.flatnonzero(np.isin(c.ids, ids)))


# ---------------------------------------------------------------------------------------------- hits
def test_marker_sets_load_with_their_documented_sizes():
    assert M.marker_set("sc107").n_markers == len(M.set_markers("sc107")) == 107
    assert len(M.load_profiles("sc107")) == 111  # four TIGRFAM pairs count as one gene each
    assert len(M.set_markers("uni56")) == 56
    assert len(M.set_markers("checkm_bacteria")) == 84
    sets = M.collocated_sets("checkm_bacteria")
    assert len(sets) == 51 and frozenset().union(*sets) == set(M.set_markers("checkm_bacteria"))
    assert M.collocated_sets("sc107") == [frozenset([m]) for m in M.set_markers("sc107")]
    assert set(_MARKER_SETS) == set(M.MARKER_SETS)
    with pytest.raises(ValueError, match="unknown marker set"):
        M.find_markers(few_marker_contigs(1), marker_set="bac120")


def test_checkm_rule_uses_noise_for_tigrfam_and_gathering_for_pfam():
    prof = {M.marker_id(h): h for h in M.load_profiles("checkm_bacteria")}
    assert M.CUTOFF_RULES["checkm"](prof["TIGR00019"]) == prof["TIGR00019"].cutoffs.noise
    assert M.CUTOFF_RULES["checkm"](prof["PF00162"]) == prof["PF00162"].cutoffs.gathering
    assert all(M.CUTOFF_RULES["trusted"](h) for h in M.load_profiles("sc107"))
    assert all(M.CUTOFF_RULES["gathering"](h) for h in M.load_profiles("uni56"))


def test_expected_markers_found_on_a_real_genome():
    c, hits = data().subset(SSUIS)
    sc = hits["sc107"]
    assert list(sc.columns) == M.COLUMNS
    # S. suis is a complete genome: nearly every bacterial single-copy gene, each once.
    assert sc["marker"].nunique() >= 103
    assert {"TIGR00019", "TIGR02387", "PF00276", "TIGR01009", "PF00162"} <= set(sc["marker"])
    assert sc.groupby("marker")["contig"].nunique().max() <= 2  # at most a gene cut by a contig end
    assert hits["checkm_bacteria"]["marker"].nunique() >= 78
    # Multi-domain proteins carry several Pfam markers (e.g. ribosomal protein L2).
    assert hits["checkm_bacteria"].groupby("gene").size().max() >= 2
    assert (sc["hmm_coverage"] >= M.MIN_HMM_COVERAGE).all() and (sc["hmm_coverage"] <= 1).all()
    assert sc["strand"].isin([1, -1]).all() and (sc["start"] < sc["end"]).all()
    length = pd.Series(c.lengths, index=c.ids.astype(str))
    assert (sc["end"] <= length.loc[sc["contig"]].to_numpy()).all()
    assert (sc["gene"].str.rsplit("_", n=1).str[0] == sc["contig"]).all()
    assert not sc.duplicated(["gene", "marker"]).any()


def test_hits_do_not_depend_on_threads_or_companions():
    """Meta mode calls genes per contig: a contig's hits do not depend on the others or on threads.
    (Trained mode trains on the assembly, so there they may; see the trained-mode tests.)"""
    c = few_marker_contigs(4)
    one = M.find_markers(c, marker_set="sc107", threads=1, gene_mode="meta")
    two = M.find_markers(c, marker_set="sc107", threads=2, gene_mode="meta")
    pd.testing.assert_frame_equal(one.drop(columns="evalue"), two.drop(columns="evalue"))
    more = M.find_markers(few_marker_contigs(8), marker_set="sc107", gene_mode="meta")
    expect = more[more["contig"].isin(set(c.ids))].reset_index(drop=True)
    assert len(expect) > 0
    pd.testing.assert_frame_equal(one.drop(columns="evalue"), expect.drop(columns="evalue"))


# ------------------------------------------------------------------------------ trained gene models
def test_trained_gene_models_cover_equal_bp_gc_groups(monkeypatch):
    contigs = data().contigs  # S. suis, H. pylori and a copy of S. suis: 5.8 Mbp
    models = M.train_gene_models(contigs, min_group_bp=1_000_000, max_train_bp=600_000)
    assert models is not None and len(models.training) == len(models.gc_edges) + 1 == 5
    assert (np.diff(models.gc_edges) > 0).all()
    group = models.group(contigs.gc)
    bp = np.bincount(group, weights=contigs.lengths, minlength=5)
    assert np.abs(bp - contigs.total_bp / 5).max() <= contigs.lengths.max()  # equal bp, up to one contig
    gc_of = [contigs.gc[group == g] for g in range(5)]
    assert all(a.max() <= b.min() for a, b in zip(gc_of, gc_of[1:]))  # groups are GC intervals
    assert ((models.train_bp > 0) & (models.train_bp <= 600_000 + contigs.lengths.max())).all()
    assert [t.translation_table for t in models.training] == [11] * 5
    # models pickle (a Dask task carries them) and call the same genes after the round trip
    import pickle

    rows = np.flatnonzero(group == 2)[:5]
    sub = contigs.subset(rows)
    genes = M._call_chunk(sub.seq_buffer, sub.offsets, 0, models, sub.gc)
    again = M._call_chunk(sub.seq_buffer, sub.offsets, 0, pickle.loads(pickle.dumps(models)), sub.gc)
    assert len(genes[1]) > 5 and genes[1] == again[1]
    np.testing.assert_array_equal(genes[0], again[0])
    # too little sequence to train on (pyrodigal needs 20 kbp, Prodigal asks for 100 kbp+): meta mode
    small = few_marker_contigs(2)
    assert M.train_gene_models(small) is None
    monkeypatch.setattr(M, "TRAIN_MIN_GROUP_BP", 10**12)
    pd.testing.assert_frame_equal(M.find_markers(small, gene_mode="trained"), M.find_markers(small, gene_mode="meta"))
    with pytest.raises(ValueError, match="gene mode 'single'"):
        M.call_genes(small, mode="single")


def test_trained_mode_finds_the_markers_meta_mode_finds():
    """The default mode (models trained on the assembly, ~7x faster) against Prodigal's meta mode on the
    same real genomes: the same marker genes on the same contigs, and the same completeness."""
    d = data()
    rows = d.rows(SSUIS, HPYLORI)
    c = d.contigs.subset(rows)
    meta = M.find_marker_sets(c, marker_sets=("sc107", "checkm_bacteria"), threads=2, gene_mode="meta")
    for name in ("sc107", "checkm_bacteria"):
        trained = d.hits[name][d.hits[name]["contig"].isin(set(c.ids))]
        a, b = set(zip(meta[name]["contig"], meta[name]["marker"])), set(zip(trained["contig"], trained["marker"]))
        assert len(a) > 150 and len(a & b) >= 0.97 * len(a) and len(b - a) <= 0.03 * len(a), (name, len(a), len(a & b), len(b - a))
    from deepmetabin.quality import bin_quality

    labels = d.genome[rows]
    q_meta = bin_quality(labels, meta["checkm_bacteria"], c).set_index("bin")
    trained = d.hits["checkm_bacteria"][d.hits["checkm_bacteria"]["contig"].isin(set(c.ids))]
    q_trained = bin_quality(labels, trained, c).set_index("bin")
    assert (q_trained["completeness"] - q_meta["completeness"]).abs().max() <= 2.0
    assert (q_trained["contamination"] - q_meta["contamination"]).abs().max() <= 2.0


def test_searching_proteins_in_chunks_gives_the_same_hits(monkeypatch):
    """The search digitises SEARCH_CHUNK proteins at a time (bounded memory) with E-values computed for
    all proteins, so chunked and whole searches report the same hits, E-values included."""
    c = few_marker_contigs(4)
    genes = M.call_genes(c)
    whole = M.search_markers(genes, c, marker_sets=("sc107", "checkm_bacteria"))
    monkeypatch.setattr(M, "SEARCH_CHUNK", max(1, len(genes) // 5))
    seen: list[tuple[int, int]] = []
    chunked = M.search_markers(genes, c, marker_sets=("sc107", "checkm_bacteria"), progress=lambda d, t: seen.append((d, t)))
    for name in whole:
        assert len(whole[name]) > 0
        pd.testing.assert_frame_equal(whole[name], chunked[name])
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1] and len({t for _, t in seen}) == 1


def test_identical_proteins_are_searched_once_and_each_copy_gets_the_rows():
    """Copies of a protein (strains, repeats) are searched once; every copy gets the rows its own search
    would give, E-values computed for all proteins searched."""
    c = few_marker_contigs(3)
    prots = list(M.call_genes(c, mode="meta").proteins)
    n = len(prots)
    unique, copies = M._unique_proteins(prots + prots, 10)
    assert len(unique) == len(set(prots)) and sorted(sum(copies, [])) == list(range(10, 10 + 2 * n))
    assert all(len({(prots + prots)[g - 10] for g in gs}) == 1 for gs in copies)
    twice = M._search_rows(prots + prots, 0, ("sc107",), 2 * n)["sc107"]
    once = M._search_rows(prots, 0, ("sc107",), 2 * n)["sc107"]
    assert len(once) > 0
    first = sorted(r for r in twice if r[1] < n)
    second = sorted((r[0], r[1] - n, *r[2:]) for r in twice if r[1] >= n)
    assert first == sorted(once) == second


def test_released_sequences_give_the_same_hits():
    c = few_marker_contigs(3)
    keep = M.find_marker_sets(c, marker_sets=("sc107",), gene_mode="meta")
    mine = c.subset(np.arange(len(c)))
    freed = M.find_marker_sets(mine, marker_sets=("sc107",), gene_mode="meta", release_sequences=True)
    assert mine.seq_buffer.size == 0 and c.seq_buffer.size > 0
    pd.testing.assert_frame_equal(keep["sc107"], freed["sc107"])


def test_uni56_counts_universal_markers():
    hits = M.find_markers(few_marker_contigs(6), marker_set="uni56")
    assert len(hits) > 0 and hits["marker"].str.startswith("COG").all()


def test_contigs_without_genes_or_markers_give_an_empty_table():
    rng = np.random.default_rng(0)
    c = make_contigs({
        "n_only": "N" * 5000, "poly_a": "A" * 3000, "short": "ACGTTGCA" * 20,
        "random": "".join(rng.choice(list("ACGT"), 2000)),
    })
    genes = M.call_genes(c)
    assert 2 not in set(genes.contig_row)  # too short for a gene; N or A runs are open frames without markers
    assert genes.partial[genes.contig_row == 0].all()
    hits = M.find_markers(c, marker_set="sc107")
    assert hits.empty and list(hits.columns) == M.COLUMNS
    pd.testing.assert_series_equal(hits.dtypes, M.empty_hits().dtypes)
    empty = make_contigs({})
    assert M.find_markers(empty).empty
    assert M.estimate_genomes(hits) == 0 and M.cannot_links(hits, c).shape == (0, 2)


def test_progress_reaches_the_total():
    seen: list[tuple[int, int]] = []
    M.find_markers(few_marker_contigs(2), progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1] and len({t for _, t in seen}) == 1


# ------------------------------------------------------------------------- genome count, cannot-links
def test_estimate_genomes_counts_genomes():
    d = data()
    assert M.estimate_genomes(d.subset(SSUIS)[1]["sc107"]) == 1
    assert M.estimate_genomes(d.subset(SSUIS, HPYLORI)[1]["sc107"]) == 2
    assert M.estimate_genomes(d.hits["sc107"]) == 3
    counts = M.marker_counts(d.hits["sc107"])
    assert counts.is_monotonic_increasing and counts.index.is_unique


def test_cannot_links_pair_the_copies_of_a_duplicated_genome():
    d = data()
    c, hits = d.subset(SSUIS, DUP)
    pairs = M.cannot_links(hits["sc107"], c)
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2 and len(pairs) > 30
    assert (pairs[:, 0] < pairs[:, 1]).all() and len(np.unique(pairs, axis=0)) == len(pairs)
    n = len(c) // 2
    # every link joins an original contig with a copy; each marker contig is linked to its own copy
    assert (pairs[:, 0] < n).all() and (pairs[:, 1] >= n).all()
    marker_rows = np.unique(M.contig_rows(hits["sc107"], c))
    orig = marker_rows[marker_rows < n]
    assert {(int(i), int(i) + n) for i in orig} <= set(map(tuple, pairs.tolist()))
    # the contigs ids of another order give the same pairs as a Contigs
    assert np.array_equal(M.cannot_links(hits["sc107"], list(c.ids)), pairs)


def test_cannot_links_between_genomes_and_not_within_one():
    d = data()
    c, hits = d.subset(SSUIS, HPYLORI)
    pairs = M.cannot_links(hits["sc107"], c)
    g = d.genome[d.rows(SSUIS, HPYLORI)]
    assert len(pairs) > 30 and (g[pairs[:, 0]] != g[pairs[:, 1]]).all()
    with pytest.raises(ValueError, match="not among"):
        M.cannot_links(hits["sc107"], c.ids[:10])


def test_split_genes_count_once_and_are_not_cannot_linked():
    hits = pd.DataFrame({
        "contig": list("abcdefg"), "marker": ["m1", "m1", "m2", "m2", "m3", "m4", "m4"],
        "partial": [True, True, False, False, True, True, True],
        "hmm_from": [1, 52, 1, 3, 1, 1, 5], "hmm_to": [55, 100, 98, 100, 45, 60, 70],
    })
    # m1: two ends of one gene (1-55 + 52-100); m2: two whole genes; m4: two fragments of the same part
    assert M.count_copies(hits) == {"m1": 1, "m2": 2, "m3": 1, "m4": 2}
    assert M.cannot_links(hits, list("abcdefg")).tolist() == [[2, 3], [5, 6]]
    assert M.cannot_links(hits, list("abcdefg"), split_genes=True).tolist() == [[0, 1], [2, 3], [5, 6]]
    four = pd.DataFrame({"marker": "m", "partial": True, "hmm_from": [1, 1, 50, 50], "hmm_to": [49, 49, 100, 100]})
    assert M.count_copies(four) == {"m": 2}  # a split gene in two genome copies


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60), st.integers(40, 100)), min_size=1, max_size=8))
def test_count_copies_bounds(fragments):
    hits = pd.DataFrame({
        "marker": "m", "partial": [p for p, _, _ in fragments],
        "hmm_from": [a for _, a, _ in fragments], "hmm_to": [a + b for _, a, b in fragments],
    })
    n = M.count_copies(hits)["m"]
    n_partial = sum(p for p, _, _ in fragments)
    assert len(fragments) - n_partial // 2 <= n <= len(fragments)


def test_hit_rule_applies_cutoffs_coverage_and_the_evalue_fallback():
    def dom(score, h0, h1, e0, e1):
        return SimpleNamespace(score=score, env_from=e0, env_to=e1, alignment=SimpleNamespace(hmm_from=h0, hmm_to=h1))

    hit = SimpleNamespace(score=30.0, evalue=1e-12, domains=[dom(25.0, 1, 30, 5, 40), dom(10.0, 31, 100, 41, 120)])
    assert M._hit_rows(hit, (20.0, 20.0), 100) is None  # only 30 % of the profile above the domain cut-off
    assert M._hit_rows(hit, (20.0, 5.0), 100) == (30.0, 1.0, 5, 120, 1, 100)
    assert M._hit_rows(hit, (31.0, 5.0), 100) is None  # sequence score below the cut-off
    assert M._hit_rows(hit, None, 100) == (30.0, 1.0, 5, 120, 1, 100)  # e-value rule: E <= 1e-10
    assert M._hit_rows(SimpleNamespace(**{**vars(hit), "evalue": 1e-5}), None, 100) is None


# --------------------------------------------------------------------------------------------- cache
def test_cache_reuses_intact_files_and_recomputes_damaged_ones(tmp_path, monkeypatch, caplog):
    c = few_marker_contigs(3)
    path = tmp_path / "markers.tsv"
    first = M.cached_markers(c, path, marker_sets=("sc107",))
    assert len(first["sc107"]) > 0 and path.read_bytes().startswith(b"#deepmetabin-markers")
    key, back = M.read_markers(path)
    assert key == M.cache_key(c, ("sc107",))
    pd.testing.assert_frame_equal(back["sc107"], first["sc107"], check_exact=False, rtol=1e-5)

    calls = []
    real = M.find_marker_sets

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(M, "find_marker_sets", counting)
    M.cached_markers(c, path, marker_sets=("sc107",))
    assert calls == []  # intact and matching: reused
    raw = bytearray(path.read_bytes())
    raw[-5] = ord("9") if raw[-5] != ord("9") else ord("8")  # damage one digit of the body
    path.write_bytes(bytes(raw))
    with pytest.raises(MarkerCacheError, match="checksum"):
        M.read_markers(path)
    with caplog.at_level(logging.WARNING, logger="deepmetabin.markers"):
        again = M.cached_markers(c, path, marker_sets=("sc107",))
    assert calls == [1] and "checksum" in caplog.text
    pd.testing.assert_frame_equal(again["sc107"], first["sc107"])
    M.read_markers(path)  # rewritten intact
    path.write_bytes(path.read_bytes()[:100])  # truncated
    M.cached_markers(c, path, marker_sets=("sc107",))
    assert calls == [1, 1]
    # same ids, other sequences (e.g. a re-assembly): recomputed
    other = Contigs(ids=c.ids, lengths=c.lengths, gc=c.gc, seq_buffer=c.seq_buffer[::-1].copy(), offsets=c.offsets)
    M.cached_markers(other, path, marker_sets=("sc107",))
    assert calls == [1, 1, 1]
    M.cached_markers(other, path, marker_sets=("sc107", "uni56"))  # another set: recomputed
    assert calls == [1, 1, 1, 1]
    M.cached_markers(other, path, marker_sets=("sc107", "uni56"), gene_mode="meta")  # other gene calling: recomputed
    assert calls == [1, 1, 1, 1, 1]
    assert M.read_markers(path)[0]["genes"].startswith("meta:pyrodigal-")


def test_empty_hits_round_trip(tmp_path):
    path = tmp_path / "m.tsv"
    M.write_markers(path, {"sc107": M.empty_hits()}, {"sets": {"sc107": "x"}})
    _, back = M.read_markers(path)
    assert back["sc107"].empty and list(back["sc107"].columns) == M.COLUMNS


@pytest.fixture
def fresh_profiles():
    M.load_profiles.cache_clear()
    yield
    M.load_profiles.cache_clear()


def test_missing_marker_data_names_the_package_path(tmp_path, monkeypatch, fresh_profiles):
    monkeypatch.setattr(M, "DATA_DIR", tmp_path / "data")
    with pytest.raises(MarkerDataError, match=r"data[/\\]sc107\.hmm\.gz.*missing.*reinstall"):
        M.find_markers(few_marker_contigs(1))


def test_damaged_marker_data_is_detected(tmp_path, monkeypatch, fresh_profiles):
    (tmp_path / "data").mkdir()
    src = M.DATA_DIR / "sc107.hmm.gz"
    (tmp_path / "data" / "sc107.hmm.gz").write_bytes(gzip.compress(gzip.decompress(src.read_bytes())[:-1000]))
    monkeypatch.setattr(M, "DATA_DIR", tmp_path / "data")
    with pytest.raises(MarkerDataError, match="damaged"):
        M.load_profiles("sc107")


# ----------------------------------------------------------------------------------------------- CLI
def make_run(tmp_path, n_contigs: int = 8):
    """A run folder over a few S. suis contigs carrying markers plus one without genes."""
    c = few_marker_contigs(n_contigs)
    fasta = tmp_path / "contigs.fna"
    seqs = dict(c.sequences()) | {"no_genes": "N" * 2000}
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    depth = tmp_path / "depth.tsv"
    depth.write_text("contigName\tcontigLen\ttotalAvgDepth\tS1.bam\tS1.bam-var\n"
                     + "".join(f"{k}\t{len(v)}\t5\t5\t1\n" for k, v in seqs.items()))
    run = tmp_path / "run"
    assert main(["-q", "features", "--contigs", str(fasta), "--depth", str(depth), "--out", str(run)]) == 0
    return run, c


def test_cli_markers_writes_and_reuses_markers_tsv(tmp_path, capsys, caplog):
    run, c = make_run(tmp_path)
    assert main(["-q", "markers", "--run", str(run), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "markers: sc107:" in out and "markers.tsv" in out
    manifest = json.loads((run / "manifest.json").read_text())
    st = manifest["stages"]["markers"]
    assert st["status"] == "done" and st["outputs"] == {"markers": "markers.tsv"}
    assert set(st["params"]["marker_sets"]) == {"sc107", "checkm_bacteria"} and st["params"]["gene_mode"] == "trained"
    sc = pipeline.load_markers(run, "sc107")
    assert set(sc["contig"]) == set(c.ids) and list(sc.columns) == M.COLUMNS
    assert len(pipeline.load_markers(run, "checkm_bacteria")) > 0
    with pytest.raises(RunFolderError, match="uni56"):
        pipeline.load_markers(run, "uni56")
    before = (run / "markers.tsv").read_bytes()
    assert main(["-q", "-v", "markers", "--run", str(run)]) == 0  # reused, byte-identical
    assert (run / "markers.tsv").read_bytes() == before
    (run / "markers.tsv").write_bytes(before.replace(b"TIGR", b"TIGX", 1))
    with pytest.raises(RunFolderError, match="checksum"):
        pipeline.load_markers(run)
    assert main(["-q", "markers", "--run", str(run)]) == 0  # damaged: recomputed
    assert (run / "markers.tsv").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_cli_markers_bad_input(tmp_path, capsys):
    assert main(["-q", "markers", "--run", str(tmp_path / "nothing")]) == 2
    assert "deepmetabin features" in capsys.readouterr().err
    run, _ = make_run(tmp_path, n_contigs=1)
    shutil.move(str(tmp_path / "contigs.fna"), str(tmp_path / "moved.fna"))
    assert main(["-q", "markers", "--run", str(run)]) == 2
    assert "is gone" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["markers", "--run", str(run), "--sets", "bac120"])
    with pytest.raises(SystemExit):
        main(["markers", "--run", str(run), "--gene-mode", "single"])


def test_test_data_is_what_the_readme_says():
    d = data()
    assert FASTA.stat().st_size < 1_500_000
    assert (d.genome == SSUIS).sum() == 206 and (d.genome == HPYLORI).sum() == 162
    assert concat(d.contigs.subset(np.arange(2)), prefixes=("x_",)).ids[0] == "x_" + d.contigs.ids[0]
