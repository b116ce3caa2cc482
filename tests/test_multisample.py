"""Multi-sample mode: concat, sample prefixes, per-sample cannot-links and bins, per-sample scores."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from deepmetabin.cli import main
from deepmetabin.contigs import read_contigs
from deepmetabin.depth import write_depth_table
from deepmetabin.errors import FastaError, InputFileError
from deepmetabin.evaluate import read_binning, score_per_sample
from deepmetabin.multisample import concatenate, same_sample_links, sample_of, split_labels_by_sample

from simulated import FASTA, genomes, simulated_depth



def test_sample_of_and_errors():
    assert list(sample_of(["S1C01", "S12C7", "gutC3C9"])) == ["S1", "S12", "gut"]
    assert list(sample_of(["a_k141_1", "b_k141_2"], "_")) == ["a", "b"]
    with pytest.raises(FastaError, match="'k141_1'"):
        sample_of(["S1C1", "k141_1"])
    with pytest.raises(FastaError, match="'C5'"):
        sample_of(["C5"])


def test_concat_prefixes_filters_and_validates(tmp_path):
    a, b = tmp_path / "a.fna", tmp_path / "b.fna"
    a.write_text(">x\n" + "ACGT" * 300 + "\n>short\nACGT\n")
    b.write_text(">x\n" + "GGCC" * 400 + "\n")
    out = tmp_path / "cat.fna.gz"
    assert main(["concat", str(a), str(b), "--out", str(out)]) == 0
    c = read_contigs(out, min_length=1)
    assert list(c.ids) == ["S1Cx", "S2Cx"] and c.sequence(1) == "GGCC" * 400
    with pytest.raises(InputFileError, match="unique"):
        concatenate([a, b], tmp_path / "o.fna", names=["s", "s"])
    with pytest.raises(InputFileError, match="separator"):
        concatenate([a, b], tmp_path / "o.fna", names=["sC1", "s2"])
    b.write_text("junk\n")
    assert main(["concat", str(a), str(b), "--out", str(tmp_path / "bad.fna")]) == 2
    assert not (tmp_path / "bad.fna").exists()


def test_links_and_labels_split_by_sample():
    samples = np.array(["S1", "S1", "S2", "S2"], dtype=object)
    links = np.array([[0, 1], [0, 2], [2, 3]])
    assert same_sample_links(links, samples).tolist() == [[0, 1], [2, 3]]
    labels, keys = split_labels_by_sample(np.array([0, -1, 0, 1]), samples)
    assert labels.tolist() == [0, -1, 1, 2] and keys == [(0, "S1"), (0, "S2"), (1, "S2")]


def test_score_per_sample_mean_and_pooled():
    truth = pd.DataFrame({"contig": ["S1C1", "S1C2", "S2C1", "S2C2"], "bin": ["A", "B", "A", "A"], "length": [10, 10, 10, 30]})
    bins = pd.DataFrame({"contig": ["S1C1", "S1C2", "S2C1", "S2C2"], "bin": ["S1_b0", "S1_b1", "S2_b0", "S2_b0"]})
    t = score_per_sample(bins, truth).set_index("sample")
    assert t.loc["S1", "f1"] == 1 and t.loc["S2", "f1"] == 1 and t.loc["mean", "nc"] == 1.5 and t.loc["pooled", "nc"] == 3


def test_bin_multi_split_end_to_end(tmp_path, capsys):
    """Two 'samples' assembled the same two genomes; bins must come per sample, never mixing samples."""
    both = read_contigs(FASTA)
    genome = genomes(both)
    fa = tmp_path / "one.fna"
    fa.write_text("".join(f">{cid}\n{seq}\n" for cid, seq in both.sequences()))
    cat = tmp_path / "cat.fna"
    concatenate([fa, fa], cat)
    catalogue = read_contigs(cat)
    ids = catalogue.ids
    profile = {"ssuis_SC84": (9.0, 2.0), "hpylori_ELS37": (3.0, 6.0)}
    depth = tmp_path / "depth.tsv"
    write_depth_table(depth, catalogue, simulated_depth(np.concatenate([genome, genome]), catalogue.lengths, profile, seed=1), ["S1", "S2"])
    out = tmp_path / "run"
    args = ["-q", "bin", "--contigs", str(cat), "--depth", str(depth), "--out", str(out), "--multi-split",
            "--epochs", "20", "--latent", "8", "--components", "8", "--threads", "2"]
    assert main(args) == 0
    bins = read_binning(out / "bins.tsv")
    assert (bins["bin"].str.split("_").str[0] == bins["contig"].str.split("C").str[0]).all()  # never mixes samples
    assert sorted(p.name for p in (out / "bins").iterdir()) == ["S1", "S2"]
    tdf = pd.DataFrame({"contig": ids.astype(str), "bin": np.concatenate([genome, genome]),
                        "length": np.concatenate([both.lengths, both.lengths])})
    table = score_per_sample(bins, tdf).set_index("sample")
    assert table.loc["S1", "nc"] == 2 and table.loc["S2", "nc"] == 2, table
    capsys.readouterr()
    bad = tmp_path / "bad.tsv"
    bad.write_text(depth.read_text().replace("S2.bam", "X2.bam"))
    assert main(args[:5] + [str(bad)] + args[6:7] + [str(tmp_path / "r2")] + args[8:]) == 2
    assert "sample 'S2'" in capsys.readouterr().err
