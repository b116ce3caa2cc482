"""The normalised feature matrix: TNF (103 columns) then log depth (one column per sample).

Normalisation (all float32, rows in ``Contigs`` order):

* TNF block: each of the 103 projected TNF columns is z-scored over the contigs (a column with
  standard deviation < 1e-6 is only centred), then the block is scaled by ``sqrt(tnf_weight / 103)``
  so that its summed variance is ``tnf_weight``.
* Depth block: ``log(depth + pseudocount)`` per sample (``pseudocount`` in the depth unit, x
  coverage; default 0.1x), centred per sample, then the whole block is scaled by one factor so that
  its summed variance is ``depth_weight``. One factor for the block (not one per sample) keeps
  log-ratios between samples, which is what separates strains with different abundance profiles.

With the default weights (0.5 / 0.5) TNF and depth contribute equally to squared Euclidean
distances, whatever the number of samples.

Strain-aware depth (:func:`strain_depth`, used when the contigs carry a unique depth, i.e. depth from
BAMs): where near-identical strains share a region, the aligner gives each read of it MAPQ 0 and puts it
on one of the strains' copies at random, so every copy reads the *mixture* of the strains' abundances and
the strains cannot be told apart by depth. The reads that cross one of the strain's own variants are
placed (MAPQ >= 1) on its copy alone: their depth, ``unique = f x own abundance`` with a share ``f``
that depends on the variant density but not on the sample, carries the strain's own profile across
samples. :func:`strain_depth` keeps each contig's level (mean log depth over samples) and takes its
profile (log depth minus that mean) from the unique reads, in proportion to how many there are:
weight ``w = B / (B + prior_bases)`` with ``B`` the contig's unique aligned bases over all samples.
A contig no other strain shares has ``unique == depth`` (unchanged); one whose copies are identical
has no unique reads (``w = 0``: unchanged). On the development data (medium, seeds 0-2, the same
reads) it raised F1 from 0.862 +- 0.008 (MetaBAT depth table) to 0.873 +- 0.010 (BAMs), F1 by bp from
0.851 to 0.878; small 0.948 -> 0.946, multi 0.964 -> 0.968 (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import numpy as np

from .contigs import Contigs
from .errors import DepthTableError
from .tnf import TNF_DIM, tnf as compute_tnf


def feature_names(samples: list[str] | tuple[str, ...]) -> list[str]:
    """Column names of :func:`features`: ``tnf0``..``tnf102`` then ``logdepth:<sample>``."""
    return [f"tnf{i}" for i in range(TNF_DIM)] + [f"logdepth:{s}" for s in samples]


def strain_depth(depth: np.ndarray, unique: np.ndarray, lengths: np.ndarray, *, pseudocount: float = 0.1,
                 prior_bases: float = 6000.0) -> np.ndarray:
    """(N, S) float64 depth (x) whose profile across samples follows the uniquely placed reads (module docstring).

    Args:
        depth: (N, S) mean depth of all kept reads (x); unique: (N, S) of those placed with MAPQ >= 1 (x).
        lengths: (N,) contig lengths (bp): ``B = sum over samples of unique x length`` (aligned bases).
        pseudocount: added before the logs, as in :func:`features`.
        prior_bases: unique bases at which the profile is half the unique reads', half the plain
            depth's (default 6000: forty 150 bp reads). Chosen on the two development datasets (3 seeds
            each, benchmarks/RESULTS.md): 1500 gave medium F1 0.874 but split small's two S. aureus
            strains into three mixed bins (0.937 against 0.948 without unique depth); 6000 medium 0.876,
            small 0.946; 30000 medium 0.871, small 0.948.

    Returns:
        ``exp(L) - pseudocount`` with ``L = mean(Lt) + w (Lu - mean(Lu)) + (1 - w) (Lt - mean(Lt))`` per
        contig (means over samples; ``Lt``, ``Lu`` the logs of depth and unique depth + pseudocount).
    """
    depth, unique = np.asarray(depth, dtype=np.float64), np.asarray(unique, dtype=np.float64)
    if depth.shape != unique.shape:
        raise ValueError(f"unique depth must be {depth.shape} like the depth, got {unique.shape}")
    unique = np.minimum(unique, depth)  # a subset of the reads; guards against rounding in a stored copy
    lt, lu = np.log(depth + pseudocount), np.log(unique + pseudocount)
    bases = (unique * np.asarray(lengths, dtype=np.float64)[:, None]).sum(axis=1, keepdims=True)
    w = bases / (bases + prior_bases)
    level = lt.mean(axis=1, keepdims=True)
    profile = w * (lu - lu.mean(axis=1, keepdims=True)) + (1 - w) * (lt - level)
    return np.maximum(np.exp(level + profile) - pseudocount, 0.0)


def _checked(values: np.ndarray, what: str, fix: str) -> np.ndarray:
    """``values``, or a DepthTableError naming ``what`` and ``fix`` when they hold NaN, infinite or negative values."""
    if not np.isfinite(values).all() or (values < 0).any():
        raise DepthTableError(f"{what} holds NaN, infinite or negative values; {fix}")
    return values


def features(
    contigs: Contigs,
    tnf: np.ndarray | None = None,
    *,
    tnf_weight: float = 0.5,
    depth_weight: float = 0.5,
    pseudocount: float = 0.1,
) -> np.ndarray:
    """(N, 103 + S) float32 feature matrix of ``contigs`` (which must carry depth).

    Args:
        contigs: contigs with a (N, S) depth matrix attached (``Contigs.with_depth``); when they also
            carry a unique depth (from BAMs), the depth block is made from :func:`strain_depth`.
        tnf: precomputed (N, 103) TNF (:func:`deepmetabin.tnf.tnf`); computed when ``None``.
        tnf_weight, depth_weight: summed variance of each block (see module docstring).
        pseudocount: added to depth (x coverage) before the log.

    Raises:
        DepthTableError: depth missing, or holding NaN / negative values.
    """
    if contigs.depth is None:
        raise DepthTableError(f"{contigs.source}: no depth attached to the contigs; give BAMs or a depth table")
    depth = _checked(contigs.depth, f"{contigs.source}: depth", "fix the depth input")
    if contigs.unique_depth is not None:
        unique = _checked(contigs.unique_depth, f"{contigs.source}: the unique depth (reads placed with MAPQ >= 1)",
                          "compute the depth from the BAMs again (deepmetabin features --force)")
        depth = strain_depth(depth, unique, contigs.lengths, pseudocount=pseudocount)
    t = compute_tnf(contigs) if tnf is None else np.asarray(tnf, dtype=np.float64)
    if t.shape != (len(contigs), TNF_DIM):
        raise ValueError(f"tnf must be ({len(contigs)}, {TNF_DIM}), got {t.shape}")
    t = t - t.mean(axis=0)
    sd = t.std(axis=0)
    t = t / np.where(sd < 1e-6, 1.0, sd)
    t *= np.sqrt(tnf_weight / TNF_DIM)

    d = np.log(depth.astype(np.float64) + pseudocount)
    d -= d.mean(axis=0)
    total_var = float(d.var(axis=0).sum())
    if total_var > 1e-12:
        d *= np.sqrt(depth_weight / total_var)
    return np.ascontiguousarray(np.hstack([t, d]), dtype=np.float32)
