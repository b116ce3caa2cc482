"""Scores on hand-computed cases; reading CAMI / VAMB / plain binning files; the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepmetabin.cli import main
from deepmetabin.errors import InputFileError
from deepmetabin.evaluate import precision_by_length, read_binning, score

TRUTH = pd.DataFrame({
    "contig": ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "c1"],
    "bin": ["A"] * 4 + ["B"] * 3 + ["C"],
    "length": [100] * 4 + [200] * 3 + [1000],
})
BINS = pd.DataFrame({"contig": ["a1", "a2", "a3", "b1", "b2", "b3", "a4"], "bin": ["1"] * 4 + ["2"] * 3})


def test_hand_computed_case():
    s = score(BINS, TRUTH)
    assert s.precision == pytest.approx(5 / 7) and s.recall == pytest.approx(5 / 8) and s.f1 == pytest.approx(2 / 3)
    assert s.precision_bp == pytest.approx(0.7) and s.recall_bp == pytest.approx(0.35)
    assert s.f1_bp == pytest.approx(2 * 0.7 * 0.35 / 1.05)
    assert (s.nc, s.mq) == (0, 0) and s.binned_bp == pytest.approx(0.5)
    assert s.n_bins == 2 and s.n_genomes == 3


def test_perfect_binning_and_tiers():
    perfect = TRUTH.rename(columns={"bin": "bin"})[["contig", "bin"]]
    s = score(perfect, TRUTH)
    assert s.f1 == 1 and s.f1_bp == 1 and s.nc == 3 and s.mq == 3 and s.ari == 1
    # genome A 75 % complete, clean -> MQ and >70/<10, not NC; B and C merged -> contaminated
    bins = pd.DataFrame({"contig": ["a1", "a2", "a3", "b1", "b2", "b3", "c1"], "bin": ["x"] * 3 + ["y"] * 4})
    s = score(bins, TRUTH)
    assert (s.nc, s.q70_10, s.mq) == (0, 1, 1)


def test_read_cami_vamb_and_plain(tmp_path):
    cami = tmp_path / "truth.tsv"
    cami.write_text("@Version:0.9.1\n@SampleID:x\n\n@@SEQUENCEID\tBINID\tLENGTH\n" + "".join(f"{c}\t{b}\t{l}\n" for c, b, l in TRUTH.itertuples(index=False)))
    t = read_binning(cami, kind="truth")
    assert t.equals(TRUTH.astype({"length": float}).astype({"length": t["length"].dtype}))
    vamb = tmp_path / "bins.tsv"
    vamb.write_text("clustername\tcontigname\n" + "".join(f"{b}\t{c}\n" for c, b in BINS.itertuples(index=False)))
    assert read_binning(vamb).sort_values("contig").reset_index(drop=True).equals(BINS.sort_values("contig").reset_index(drop=True))
    plain = tmp_path / "plain.tsv"  # contig column is the unique one, whatever its position
    plain.write_text("".join(f"{c}\t{b}\n" for c, b in BINS.itertuples(index=False)))
    assert list(read_binning(plain)["contig"]) == list(BINS["contig"])
    dup = tmp_path / "dup.tsv"
    dup.write_text("1\ta1\n2\ta1\n1\ta2\n")
    with pytest.raises(InputFileError, match="listed twice"):
        read_binning(dup)


def test_cli_evaluate(tmp_path, capsys):
    truth = tmp_path / "truth.tsv"
    truth.write_text("@@SEQUENCEID\tBINID\tLENGTH\n" + "".join(f"{c}\t{b}\t{l}\n" for c, b, l in TRUTH.itertuples(index=False)))
    bins = tmp_path / "bins.tsv"
    bins.write_text("clustername\tcontigname\n" + "".join(f"{b}\t{c}\n" for c, b in BINS.itertuples(index=False)))
    assert main(["evaluate", "--bins", str(bins), "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "F1 (contigs)" in out and "0.667" in out
    assert main(["evaluate", "--bins", str(tmp_path / "no.tsv"), "--truth", str(truth)]) == 2


def test_precision_of_short_contigs():
    # bin A: 3 contigs of g1 (one short) + 1 short of g2; bin B: 2 of g2 (one short); c7 (short) unbinned
    truth = pd.DataFrame({"contig": [f"c{i}" for i in range(1, 8)], "bin": ["g1", "g1", "g1", "g2", "g2", "g2", "g1"]})
    lengths = pd.Series({"c1": 5000, "c2": 1200, "c3": 9000, "c4": 1500, "c5": 3000, "c6": 2400, "c7": 1100})
    bins = pd.DataFrame({"contig": ["c1", "c2", "c3", "c4", "c5", "c6"], "bin": ["A", "A", "A", "A", "B", "B"]})
    p, n = precision_by_length(bins, truth, lengths, max_length=2500)
    assert n == 3 and p == pytest.approx(2 / 3)  # c2 right, c4 wrong (A is g1's), c6 right
    p, n = precision_by_length(bins, truth, lengths, min_length=10_000, max_length=20_000)
    assert n == 0 and np.isnan(p)
