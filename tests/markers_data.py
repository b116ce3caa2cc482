"""Shared real test data for test_markers.py and test_quality.py, computed once per test session.

tests/data/ssuis_hpylori.fna.gz: every contig of Streptococcus suis SC84 (206 contigs, 2.07 Mbp) and
Helicobacter pylori ELS37 (162 contigs, 1.65 Mbp) from shared/bench/small (see tests/data/README.md).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepmetabin import markers as M
from deepmetabin.contigs import Contigs, read_contigs

DATA = Path(__file__).resolve().parent / "data"
FASTA = DATA / "ssuis_hpylori.fna.gz"
SSUIS, HPYLORI, DUP = "ssuis_SC84", "hpylori_ELS37", "ssuis_SC84_copy"


def concat(*parts: Contigs, prefixes: tuple[str, ...]) -> Contigs:
    """Contigs ``parts`` one after the other, ids prefixed (so copies of a genome get new names)."""
    ids = np.concatenate([np.array([p + c for c in part.ids], dtype=object) for p, part in zip(prefixes, parts)])
    lengths = np.concatenate([p.lengths for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Contigs(
        ids=ids, lengths=lengths, gc=np.concatenate([p.gc for p in parts]),
        seq_buffer=np.concatenate([p.seq_buffer for p in parts]), offsets=offsets,
    )


@dataclass(frozen=True)
class Data:
    """Both genomes plus a renamed copy of S. suis (``copy_`` prefix), and their hits."""

    contigs: Contigs  # ssuis + hpylori + copy of ssuis, in that order
    genome: np.ndarray  # (N,) genome per contig: SSUIS, HPYLORI or DUP
    hits: dict[str, pd.DataFrame]  # sc107 and checkm_bacteria hits on ``contigs``

    def rows(self, *genomes: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.genome, genomes))

    def subset(self, *genomes: str) -> tuple[Contigs, dict[str, pd.DataFrame]]:
        """Contigs of ``genomes`` and the hits on them (gene calling and cut-offs are per contig)."""
        c = self.contigs.subset(self.rows(*genomes))
        keep = set(c.ids)
        return c, {s: h[h["contig"].isin(keep)].reset_index(drop=True) for s, h in self.hits.items()}


def truth() -> pd.Series:
    return pd.read_csv(DATA / "ssuis_hpylori.truth.tsv", sep="\t", index_col="contig")["genome"]


@functools.lru_cache(maxsize=1)
def data() -> Data:
    both = read_contigs(FASTA)
    g = truth().loc[both.ids.astype(str)].to_numpy()
    ssuis = both.subset(np.flatnonzero(g == SSUIS))
    hpylori = both.subset(np.flatnonzero(g == HPYLORI))
    contigs = concat(ssuis, hpylori, ssuis, prefixes=("", "", "copy_"))
    genome = np.array([SSUIS] * len(ssuis) + [HPYLORI] * len(hpylori) + [DUP] * len(ssuis), dtype=object)
    hits = M.find_marker_sets(contigs, marker_sets=("sc107", "checkm_bacteria"), threads=2)
    return Data(contigs, genome, hits)
