"""Depth tables simulated for the two real genomes of tests/data (shared by the end-to-end tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepmetabin.contigs import Contigs, read_contigs
from deepmetabin.depth import write_depth_table

DATA = Path(__file__).resolve().parent / "data"
FASTA = DATA / "ssuis_hpylori.fna.gz"
#: mean coverage per sample of each genome (x); the genomes differ in abundance profile
PROFILE = {"ssuis_SC84": (12.0, 3.0, 7.0), "hpylori_ELS37": (4.0, 9.0, 2.0)}


def genomes(contigs: Contigs) -> np.ndarray:
    """(N,) genome of each contig (the test data's truth), in ``contigs`` order."""
    truth = pd.read_csv(DATA / "ssuis_hpylori.truth.tsv", sep="\t").set_index("contig")["genome"]
    return truth.loc[contigs.ids.astype(str)].to_numpy()


def simulated_depth(genome: np.ndarray, lengths: np.ndarray, profile: dict[str, tuple[float, ...]] = PROFILE,
                    seed: int = 0) -> np.ndarray:
    """(N, S) depth: 150 bp reads placed by Poisson draws at each genome's coverage per sample."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.poisson(np.array(profile[g]) * L / 150) * 150 / L for g, L in zip(genome, lengths)])


def write_simulated_table(path: Path, seed: int = 0) -> tuple[Contigs, np.ndarray]:
    """Write a MetaBAT depth table (samples S1..S3) for tests/data's contigs; return the contigs and genomes."""
    c = read_contigs(FASTA)
    g = genomes(c)
    write_depth_table(path, c, simulated_depth(g, c.lengths, seed=seed), ["S1", "S2", "S3"])
    return c, g
