"""From latent means to bins: a Gaussian mixture, then constrained k-means with cannot-links on
contaminated clusters, then small clusters written as unbinned.

* :func:`gmm` fits a full-covariance Gaussian mixture with ``k`` components to the (N, d) latent
  means (on a random sample of at most ``max_fit`` rows for large N, then predicts all rows).
* :func:`split_contaminated` re-clusters each cluster whose marker-based completeness is above
  ``min_completeness`` and contamination at least ``min_contamination`` (the seed's rule: > 90 %
  and >= 5 %) into K parts (the fewest parts, from 2 up, that can satisfy every cannot-link: at least
  the largest copy number of any marker in the cluster), by k-means in which contigs that share a marker gene
  ("cannot-links", :func:`deepmetabin.markers.cannot_links`) never end in the same part. Each
  assignment step of the linked contigs is a small 0/1 linear program (``scipy.optimize.milp``,
  HiGHS): minimise the summed squared distance to the part centres subject to "every contig in one
  part" and "two linked contigs never in the same part", so the cannot-links hold by construction;
  K grows when no assignment exists. Contigs without links go to their nearest centre.
* :func:`drop_small` marks clusters smaller than ``min_bin_bp`` (default 200 kb) as unbinned (-1).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

log = logging.getLogger(__name__)


def gmm(latent: np.ndarray, k: int, *, seed: int = 0, max_fit: int = 200_000, max_iter: int = 200) -> np.ndarray:
    """(N,) int labels in [0, k) from a full-covariance Gaussian mixture on the (N, d) ``latent``.

    ``k`` is capped at N; with N > ``max_fit`` the mixture is fitted on a seeded sample of
    ``max_fit`` rows and then assigns every row.
    """
    latent = np.asarray(latent, dtype=np.float64)
    n = len(latent)
    k = int(max(1, min(k, n)))
    rng = np.random.default_rng(seed)
    fit_rows = latent if n <= max_fit else latent[rng.choice(n, size=max_fit, replace=False)]
    model = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=max_iter, random_state=seed, init_params="k-means++")
    model.fit(fit_rows)
    # assigned in chunks: sklearn holds (rows x k) float64 matrices per call (300k x 245 = 0.6 GB each)
    step = 50_000
    return np.concatenate([model.predict(latent[i:i + step]) for i in range(0, n, step)]).astype(np.int64)


def _assign_with_cannot_links(cost: np.ndarray, pairs: np.ndarray) -> np.ndarray | None:
    """Optimal assignment of c contigs to K parts (cost (c, K)) such that no linked pair shares a part.

    ``pairs``: (M, 2) positions into the rows of ``cost``. Returns (c,) parts, or None if infeasible.
    """
    c, k = cost.shape
    one_part = sp.kron(sp.eye(c), np.ones((1, k)))  # variable (i, j) at i * k + j
    constraints = [LinearConstraint(one_part, 1, 1)]
    if len(pairs):
        m = len(pairs)
        rows = np.repeat(np.arange(m * k), 2)
        part = np.tile(np.arange(k), m)
        cols = np.stack([pairs[:, 0].repeat(k) * k + part, pairs[:, 1].repeat(k) * k + part], axis=1).ravel()
        constraints.append(LinearConstraint(sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(m * k, c * k)), -np.inf, 1))
    res = milp(cost.ravel(), constraints=constraints, integrality=np.ones(c * k), bounds=Bounds(0, 1), options={"time_limit": 60})
    if res.x is None:
        return None
    return res.x.reshape(c, k).argmax(axis=1)


def constrained_kmeans(x: np.ndarray, k: int, pairs: np.ndarray, *, seed: int = 0, max_iter: int = 30) -> np.ndarray:
    """(n,) labels in [0, k') of k-means on (n, d) ``x`` in which the two rows of every cannot-link
    pair (``pairs``: (M, 2) row indices of ``x``) always end in different parts.

    If no assignment into ``k`` parts satisfies every pair, ``k`` grows by one until one does.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    rng = np.random.default_rng(seed)
    carriers = np.unique(pairs) if len(pairs) else np.zeros(0, np.int64)
    local = np.searchsorted(carriers, pairs) if len(pairs) else pairs.reshape(0, 2)
    free = np.setdiff1d(np.arange(n), carriers)
    # seeds: the endpoints of the most-linked contig's links are pairwise apart anyway
    if len(carriers):
        hub = np.bincount(pairs.ravel()).argmax()
        seeds = np.unique(np.concatenate([[hub], pairs[(pairs == hub).any(1)].ravel()]))
        centres = x[seeds[:k]]
    else:
        centres = x[rng.choice(n, size=min(k, n), replace=False)]
    while len(centres) < k:  # k-means++ for the rest
        d = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
        centres = np.vstack([centres, x[rng.choice(n, p=d / d.sum()) if d.sum() > 0 else rng.integers(n)]])
    labels = np.full(n, -1)
    for _ in range(max_iter):
        cost = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        part = _assign_with_cannot_links(cost[carriers], local) if len(carriers) else np.zeros(0, np.int64)
        while part is None:
            centres = np.vstack([centres, x[carriers[rng.integers(len(carriers))]]])
            cost = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
            part = _assign_with_cannot_links(cost[carriers], local)
        new = np.empty(n, dtype=np.int64)
        new[free] = cost[free].argmin(1)
        new[carriers] = part
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(centres)):
            if (labels == j).any():
                centres[j] = x[labels == j].mean(0)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


def _silhouette(x: np.ndarray, parts: np.ndarray, seed: int) -> float:
    """Silhouette of ``parts`` on the rows ``x`` (on a seeded sample of <= 2,000 rows); -1 for one part."""
    if parts.max() == 0:
        return -1.0
    return float(silhouette_score(x, parts, sample_size=min(2000, len(x)), random_state=seed))


def split_contaminated(
    latent: np.ndarray,
    labels: np.ndarray,
    links: np.ndarray,
    quality: pd.DataFrame,
    *,
    min_completeness: float = 90.0,
    min_contamination: float = 5.0,
    composition: np.ndarray | None = None,
    min_composition_silhouette: float = 0.12,
    depth: np.ndarray | None = None,
    min_depth_silhouette: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """(N,) new labels after splitting contaminated clusters with cannot-links (see module docstring).

    Args:
        latent: (N, d) latent means; labels: (N,) cluster per contig (-1 = unbinned).
        links: (M, 2) cannot-link pairs of contig rows (:func:`deepmetabin.markers.cannot_links`).
        quality: DataFrame(bin, completeness, contamination) in percent, one row per label value.
        composition: (N, c) composition features (the TNF block). When given, a split is kept only
            if its parts differ in composition: silhouette of the parts on ``composition`` >=
            ``min_composition_silhouette``. Strains of one species share their TNF; on the
            development data, splitting such a cluster in the latent space gave two mixed halves
            (lower F1, no genome gained), while clusters of two species split cleanly (TNF
            silhouette 0.14-0.49 against -0.01-0.10 for strain mixtures; benchmarks/RESULTS.md).
        depth: (N, s) depth features (the log-depth block). When given, a cluster whose latent split
            fails the composition gate (strains of one species) is split again by constrained
            k-means on its depth profiles alone, and that split is kept if its parts differ in depth:
            silhouette on ``depth`` >= ``min_depth_silhouette``.
    """
    labels = np.asarray(labels).copy()
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    bad = quality[(quality["completeness"] > min_completeness) & (quality["contamination"] >= min_contamination)]
    next_label = labels.max() + 1
    for b in bad["bin"]:
        rows = np.flatnonzero(labels == int(b))
        inside = np.isin(links, rows).all(axis=1)
        if not inside.any():
            continue
        local = np.searchsorted(rows, links[inside])
        # K starts at 2 and grows to the fewest parts that satisfy every link (a marker with c copies
        # links c contigs pairwise, so K ends >= the largest copy number of any marker here)
        parts = constrained_kmeans(latent[rows], 2, local, seed=seed)
        if composition is not None and parts.max() > 0:
            sil = _silhouette(composition[rows], parts, seed)
            if sil < min_composition_silhouette:
                parts = None
                if depth is not None:
                    by_depth = constrained_kmeans(depth[rows], 2, local, seed=seed)
                    sil_d = _silhouette(depth[rows], by_depth, seed)
                    if sil_d >= min_depth_silhouette:
                        log.info("cluster %s: strains told apart by depth (depth silhouette %.3f)", b, sil_d)
                        parts = by_depth
                if parts is None:
                    log.info("cluster %s: parts share their composition (TNF silhouette %.3f), not split", b, sil)
                    continue
        for p in range(1, parts.max() + 1):
            labels[rows[parts == p]] = next_label
            next_label += 1
        log.info("split cluster %s (%d contigs) into %d parts", b, len(rows), parts.max() + 1)
    return labels


def cannot_link_violations(labels: np.ndarray, links: np.ndarray) -> int:
    """Number of cannot-link pairs whose two contigs share a bin (unbinned contigs never violate)."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    a, b = labels[links[:, 0]], labels[links[:, 1]]
    return int(((a == b) & (a >= 0)).sum())


def drop_small(labels: np.ndarray, lengths: np.ndarray, min_bin_bp: int = 200_000) -> np.ndarray:
    """Labels with clusters below ``min_bin_bp`` total bp set to -1 (unbinned), renumbered 0..B-1 by size."""
    labels = np.asarray(labels)
    out = np.full(len(labels), -1, dtype=np.int64)
    keep = labels >= 0
    if not keep.any():
        return out
    bp = np.bincount(labels[keep], weights=lengths[keep])
    big = [b for b in np.argsort(-bp, kind="stable") if bp[b] >= min_bin_bp]
    for new, b in enumerate(big):
        out[labels == b] = new
    return out
