"""Bin quality (CheckM-style completeness / contamination, MIMAG tiers) on real genomes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmetabin import markers as M
from deepmetabin.quality import QUALITY_COLUMNS, bin_quality, checkm_scores, n50, tier
from markers_data import DUP, HPYLORI, SSUIS, data


def test_a_complete_genome_is_complete_and_clean():
    d = data()
    c, hits = d.subset(SSUIS, HPYLORI)
    labels = d.genome[d.rows(SSUIS, HPYLORI)]
    q = bin_quality(labels, hits["checkm_bacteria"], c).set_index("bin")
    assert list(q.reset_index().columns) == QUALITY_COLUMNS
    for g in (SSUIS, HPYLORI):
        assert q.loc[g, "completeness"] > 90 and q.loc[g, "contamination"] < 5 and q.loc[g, "tier"] == "high"
    assert q.loc[SSUIS, "n_contigs"] == 206 and q.loc[SSUIS, "bp"] == c.lengths[labels == SSUIS].sum()


def test_a_duplicated_genome_is_about_100_percent_contaminated():
    d = data()
    c, hits = d.subset(SSUIS, DUP)  # the genome twice, the copy's contigs renamed
    q = bin_quality(np.zeros(len(c), dtype=int), hits["checkm_bacteria"], c)
    assert len(q) == 1 and q.loc[0, "n_contigs"] == len(c)
    assert 90 <= q.loc[0, "contamination"] <= 110 and q.loc[0, "tier"] == "low"
    assert q.loc[0, "completeness"] > 90


def test_two_species_in_one_bin_are_contaminated():
    d = data()
    c, hits = d.subset(SSUIS, HPYLORI)
    q = bin_quality(["x"] * len(c), hits["checkm_bacteria"], c)
    assert q.loc[0, "bin"] == "x" and q.loc[0, "contamination"] > 80


def test_half_a_genome_is_about_half_complete():
    d = data()
    c, hits = d.subset(SSUIS)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(c))
    half = np.cumsum(c.lengths[order]) <= c.total_bp / 2
    labels = np.full(len(c), -1)
    labels[order[half]] = 7
    q = bin_quality(labels, hits["checkm_bacteria"], c)
    assert q["bin"].tolist() == [7] and 30 <= q.loc[0, "completeness"] <= 70


def test_unbinned_contigs_and_statistics():
    d = data()
    c, hits = d.subset(SSUIS)
    labels = pd.Series([None] * len(c), dtype=object)
    labels[:10] = "b"
    labels[10:12] = "a"
    q = bin_quality(labels, hits["checkm_bacteria"], c).set_index("bin")
    assert q.index.tolist() == ["a", "b"]
    lengths = c.lengths[:10]
    assert q.loc["b", "bp"] == lengths.sum() and q.loc["b", "N50"] == n50(lengths)
    assert q.loc["b", "GC"] == pytest.approx(np.average(c.gc[:10], weights=lengths))
    assert bin_quality(np.full(len(c), -1), hits["checkm_bacteria"], c).empty
    q0 = bin_quality(np.zeros(len(c), int), M.empty_hits(), c)
    assert q0.loc[0, "completeness"] == 0 and q0.loc[0, "tier"] == "low"
    with pytest.raises(ValueError, match="one bin label per contig"):
        bin_quality(np.zeros(3), hits["checkm_bacteria"], c)


def test_checkm_formula_on_a_small_example():
    sets = [frozenset("ab"), frozenset("c")]
    assert checkm_scores({"a": 1, "c": 2}, sets) == (75.0, 50.0)
    assert checkm_scores({"a": 3, "b": 1, "c": 1}, sets) == (100.0, 50.0)
    assert checkm_scores({}, sets) == (0.0, 0.0) and checkm_scores({"a": 1}, []) == (0.0, 0.0)


def test_tiers_and_n50():
    assert tier(90.5, 4.9) == "high" and tier(90.0, 1) == "medium" and tier(95, 5) == "medium"
    assert tier(50, 9.9) == "medium" and tier(49.9, 0) == "low" and tier(99, 10) == "low"
    assert n50(np.array([10, 5, 3, 2])) == 10 and n50(np.array([4, 4, 4, 4])) == 4 and n50(np.array([], int)) == 0


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 4)), st.sampled_from("abcdef"))
def test_scores_are_bounded_and_monotone(copies, extra):
    sets = [frozenset("abc"), frozenset("de"), frozenset("f")]
    comp, cont = checkm_scores(copies, sets)
    assert 0 <= comp <= 100 and cont >= 0
    more = dict(copies)
    more[extra] = more.get(extra, 0) + 1
    comp2, cont2 = checkm_scores(more, sets)
    assert comp2 >= comp and cont2 >= cont and (comp2 > comp or cont2 > cont)
