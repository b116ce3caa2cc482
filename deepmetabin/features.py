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
"""
from __future__ import annotations

import numpy as np

from .contigs import Contigs
from .errors import DepthTableError
from .tnf import TNF_DIM, tnf as compute_tnf


def feature_names(samples: list[str] | tuple[str, ...]) -> list[str]:
    """Column names of :func:`features`: ``tnf0``..``tnf102`` then ``logdepth:<sample>``."""
    return [f"tnf{i}" for i in range(TNF_DIM)] + [f"logdepth:{s}" for s in samples]


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
        contigs: contigs with a (N, S) depth matrix attached (``Contigs.with_depth``).
        tnf: precomputed (N, 103) TNF (:func:`deepmetabin.tnf.tnf`); computed when ``None``.
        tnf_weight, depth_weight: summed variance of each block (see module docstring).
        pseudocount: added to depth (x coverage) before the log.

    Raises:
        DepthTableError: depth missing, or holding NaN / negative values.
    """
    if contigs.depth is None:
        raise DepthTableError(f"{contigs.source}: no depth attached to the contigs; give BAMs or a depth table")
    depth = contigs.depth
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise DepthTableError(f"{contigs.source}: depth holds NaN, infinite or negative values; fix the depth input")
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
