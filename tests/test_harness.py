"""The benchmark harness's pure parts (benchmarks/peers.py, benchmarks/report.py) on tiny files.
The harness itself (running the binners) is not part of the test suite."""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402
import report  # noqa: E402

TIME_V = """\tCommand being timed: "metabat2 -i contigs.fna.gz"
\tUser time (seconds): 2.21
\tSystem time (seconds): 0.35
\tPercent of CPU this job got: 71%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:03.58
\tMaximum resident set size (kbytes): 103660
\tExit status: 0
"""


def test_parse_time_v():
    t = peers.parse_time_v(TIME_V)
    assert t["wall_s"] == pytest.approx(63.58)
    assert t["cpu_s"] == pytest.approx(2.56)
    assert t["rss_mb"] == pytest.approx(103660 / 1024)
    assert t["exit"] == 0


def test_parse_time_v_hours_signal_and_garbage():
    text = TIME_V.replace("1:03.58", "1:02:03").replace("Exit status: 0", "Exit status: 0") + "\tCommand terminated by signal 9\n"
    t = peers.parse_time_v(text)
    assert t["wall_s"] == pytest.approx(3723)
    assert t["exit"] == -9
    assert peers.parse_time_v(TIME_V.replace("Exit status: 0", "Exit status: 3"))["exit"] == 3
    with pytest.raises(ValueError):
        peers.parse_time_v("Command exited with non-zero status 1\n")


def _fasta(path: Path, ids: list[str]) -> None:
    text = "".join(f">{i} some description\nACGT\n" for i in ids)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def test_metabat_folder_to_bins(tmp_path):
    _fasta(tmp_path / "bin.1.fa", ["c1", "c2"])
    _fasta(tmp_path / "bin.2.fa", ["c3"])
    _fasta(tmp_path / "bin.unbinned.fa", ["c4"])
    _fasta(tmp_path / "bin.tooShort.fa", ["c5"])
    (tmp_path / "notes.txt").write_text("x")
    bins = peers.fasta_dir_bins(tmp_path)
    assert bins.to_dict("records") == [{"contig": "c1", "bin": "bin.1"}, {"contig": "c2", "bin": "bin.1"},
                                       {"contig": "c3", "bin": "bin.2"}]


def test_semibin_output_bins(tmp_path):
    (tmp_path / "output_bins").mkdir()
    _fasta(tmp_path / "output_bins" / "SemiBin_0.fa.gz", ["a", "b"])
    _fasta(tmp_path / "output_bins" / "SemiBin_7.fa.gz", ["c"])
    bins = peers.semibin_bins(tmp_path)
    assert dict(zip(bins["contig"], bins["bin"])) == {"a": "SemiBin_0", "b": "SemiBin_0", "c": "SemiBin_7"}
    with pytest.raises(FileNotFoundError):
        peers.semibin_bins(tmp_path / "nothing")


def test_vamb_clusters_drop_small_bins(tmp_path):
    path = tmp_path / "vae_clusters_unsplit.tsv"
    path.write_text("clustername\tcontigname\nv1\tc1\nv1\tc2\nv2\tc3\n")
    lengths = pd.Series({"c1": 150_000, "c2": 60_000, "c3": 199_999})
    bins = peers.vamb_bins(path, lengths)
    assert bins.to_dict("records") == [{"contig": "c1", "bin": "v1"}, {"contig": "c2", "bin": "v1"}]
    assert len(peers.vamb_bins(path, lengths, min_bin_bp=0)) == 3


def test_summed_metabat_depth():
    depth = pd.DataFrame({"contigName": ["c1", "c2"], "contigLen": [1000, 2000], "totalAvgDepth": [3.0, 5.0],
                          "S1.bam": [1.0, 2.0], "S1.bam-var": [0.5, 1.0], "S2.bam": [2.0, 3.0], "S2.bam-var": [0.1, 0.2]})
    s = peers.summed_metabat_depth(depth)
    assert list(s.columns) == ["contigName", "contigLen", "totalAvgDepth", "summed.bam", "summed.bam-var"]
    assert s["summed.bam"].tolist() == [3.0, 5.0]
    assert s["summed.bam-var"].tolist() == pytest.approx([0.6, 1.2])


def _rows() -> pd.DataFrame:
    base = dict(version="v", options="o", precision=0.9, recall=0.8, precision_bp=0.9, recall_bp=0.9, ari=0.8,
                binned_bp=0.95, n_bins=8, exit=0)
    rows = [dict(base, tool="deepmetabin", seed=s, f1=f, f1_bp=f + 0.05, nc=nc, mq=7, wall_s=100.0, cpu_s=150.0,
                 rss_mb=900.0, date=f"2026-01-01T00:00:0{s}Z") for s, f, nc in ((0, 0.80, 6), (1, 0.90, 7), (2, 0.85, 5))]
    rows.append(dict(base, tool="metabat2", seed=0, f1=0.5, f1_bp=0.6, nc=4, mq=6, wall_s=5.0, cpu_s=3.0, rss_mb=80.0, date="2026-01-01T00:00:00Z"))
    rows.append(dict(base, tool="vamb", seed=0, f1=0.85, f1_bp=0.93, nc=6, mq=7, wall_s=400.0, cpu_s=575.0, rss_mb=800.0, date="2026-01-01T00:00:00Z"))
    # an older run of the same tool and seed is superseded by the later one
    rows.append(dict(base, tool="vamb", seed=0, f1=0.10, f1_bp=0.1, nc=0, mq=0, wall_s=1.0, cpu_s=1.0, rss_mb=1.0, date="2025-01-01T00:00:00Z"))
    return pd.DataFrame(rows, columns=peers.ROW_COLUMNS)


def test_report_table_and_ratios(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _rows().to_csv(results / "small.tsv", sep="\t", index=False)
    data = report.load(results)
    s = report.summarise(data["small"]).set_index("tool")
    assert s.loc["deepmetabin", "f1"] == pytest.approx(0.85)      # mean, not the best seed
    assert s.loc["deepmetabin", "f1_sd"] == pytest.approx(0.05)
    assert s.loc["vamb", "f1"] == pytest.approx(0.85)             # the latest row of a (tool, seed)
    text = report.section(data, "results/summary.png")
    assert "| deepmetabin | 0,1,2 | 0.850 ± 0.050 |" in text
    assert "NC" in text and "6.0 (5–7)" in text
    assert "F1 contigs / best peer's (vamb): 1.000" in text
    assert "wall / metabat2's: 20.0×" in text and "wall / vamb's: 0.25×" in text
    assert "peak RSS / vamb's: 1.12×" in text


def test_report_splices_after_title_and_is_idempotent(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _rows().to_csv(results / "small.tsv", sep="\t", index=False)
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Depth from BAMs\n\nkept text\n")
    assert report.main(["--results", str(results), "--out", str(md), "--no-plot"]) == 0
    once = md.read_text()
    assert once.index(report.SECTION) < once.index("## Depth from BAMs") and "kept text" in once
    assert report.main(["--results", str(results), "--out", str(md), "--no-plot"]) == 0
    assert md.read_text() == once


def test_report_leaves_failed_tools_out_of_ratios(tmp_path):
    rows = _rows()
    rows.loc[rows["tool"] == "vamb", "exit"] = 1
    results = tmp_path / "results"
    results.mkdir()
    rows.to_csv(results / "small.tsv", sep="\t", index=False)
    text = report.section(report.load(results), "summary.png")
    assert "| vamb | 0 (1 failed) |" in text
    assert "vamb's" not in text and "best peer's (metabat2)" in text


def test_split_by_sample_keeps_every_depth_column(tmp_path):
    """A multi-sample catalogue cut into one dataset per sample: its own contigs, all samples' depths."""
    folder = tmp_path / "multi"
    folder.mkdir()
    ids = ["S1C1", "S1C2", "S2C1", "S10C1"]
    with gzip.open(folder / "contigs.fna.gz", "wt") as fh:
        fh.write("".join(f">{i} descr\nACGT\nAC\n" for i in ids))
    depth = pd.DataFrame({"contigName": ids, "contigLen": 6, "totalAvgDepth": 1.0, "S1.bam": [1.0, 2, 3, 4],
                          "S1.bam-var": 0.1, "S2.bam": [5.0, 6, 7, 8], "S2.bam-var": 0.1})
    depth.to_csv(folder / "depth.tsv", sep="\t", index=False)
    parts = peers.split_by_sample(peers.Dataset(folder), tmp_path / "out", "C")
    assert sorted(parts) == ["S1", "S10", "S2"]
    s1 = pd.read_csv(parts["S1"].depth, sep="\t")
    assert s1["contigName"].tolist() == ["S1C1", "S1C2"] and list(s1.columns) == list(depth.columns)
    with gzip.open(parts["S1"].contigs, "rt") as fh:
        assert fh.read() == ">S1C1 descr\nACGT\nAC\n>S1C2 descr\nACGT\nAC\n"
    with gzip.open(parts["S10"].contigs, "rt") as fh:
        assert fh.read().count(">") == 1
