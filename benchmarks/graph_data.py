"""Load a benchmark dataset (shared/bench/<name>) as features + true genome per contig, for graph benchmarks.

Features are built with the library (read_contigs -> read_depth_table -> with_depth -> tnf -> features)
and the TNF is cached in ``$DEEPMETABIN_BENCH_CACHE`` (default ``~/.cache/deepmetabin-bench``) because
it is the slow part; the feature normalisation is redone each time so weights can be varied.
The truth (CAMI ``truth.tsv``) is used only here, to score graphs; never inside the library.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepmetabin.contigs import Contigs, read_contigs
from deepmetabin.features import features
from deepmetabin.tnf import tnf

BENCH = Path(os.environ.get("DEEPMETABIN_BENCH", Path(__file__).resolve().parents[2] / "shared" / "bench"))
if not BENCH.exists():
    BENCH = Path("/work/shared/bench")
CACHE = Path(os.environ.get("DEEPMETABIN_BENCH_CACHE", Path.home() / ".cache" / "deepmetabin-bench"))


def read_truth(path: Path, ids: np.ndarray) -> np.ndarray:
    """(N,) genome name per contig from a CAMI truth file (lines after ``@@SEQUENCEID``), in ``ids`` order."""
    genome: dict[str, str] = {}
    started = False
    for line in path.read_text().splitlines():
        if line.startswith("@@"):
            started = True
            continue
        if started and line.strip():
            cid, gid = line.split("\t")[:2]
            genome[cid] = gid
    return np.array([genome[c] for c in ids], dtype=object)


def load_contigs(name: str) -> Contigs:
    """Contigs of dataset ``name`` with depth attached (library readers only)."""
    from deepmetabin.depth import read_depth_table

    folder = BENCH / name
    contigs = read_contigs(folder / "contigs.fna.gz")
    depth, samples = read_depth_table(folder / "depth.tsv", contigs)
    return contigs.with_depth(depth, samples)


def load(name: str, *, tnf_weight: float = 0.5, depth_weight: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (N, 103+S) float32, contig ids (N,), genome per contig (N,))`` for dataset ``name``."""
    contigs = load_contigs(name)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"{name}.{contigs.ids_hash}.tnf.npy"
    if cached.exists():
        t = np.load(cached)
    else:
        t = tnf(contigs, threads=1)
        np.save(cached, t)
    x = features(contigs, t, tnf_weight=tnf_weight, depth_weight=depth_weight)
    return x, contigs.ids, read_truth(BENCH / name / "truth.tsv", contigs.ids)
