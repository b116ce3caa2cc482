"""From latent means to bins: a Gaussian mixture, then constrained k-means with cannot-links on
contaminated clusters, then small clusters written as unbinned.

* :func:`gmm` fits a full-covariance Gaussian mixture with ``k`` components to the (N, d) latent
  means (on a random sample of at most ``max_fit`` rows for large N, then predicts all rows).
* :func:`split_contaminated` re-clusters each cluster whose marker-based completeness is above
  ``min_completeness`` and contamination at least ``min_contamination`` (the seed's rule: > 90 %
  and >= 5 %) into K = (maximum copy number of any marker in the cluster) parts, by k-means in which
  contigs that share a marker gene can never end in the same part ("cannot-links"). Each assignment
  step of the marker-carrying contigs is a small 0/1 linear program (``scipy.optimize.milp``,
  HiGHS): minimise the summed squared distance to the part centres subject to "every contig in one
  part" and "at most one contig per marker per part", so the cannot-links hold by construction.
  Contigs without markers go to their nearest centre.
* :func:`drop_small` marks clusters smaller than ``min_bin_bp`` (default 200 kb) as unbinned (-1).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp
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
    return model.predict(latent).astype(np.int64)


def _marker_matrix(rows: np.ndarray, hits: pd.DataFrame, row_of: dict[str, int]) -> tuple[np.ndarray, sp.csr_matrix]:
    """For the contigs at ``rows``: which carry markers (positions into ``rows``) and a (markers x those) 0/1 matrix."""
    local = {r: i for i, r in enumerate(rows)}
    h = hits[hits["contig"].map(row_of).isin(local.keys())]
    pos = h["contig"].map(row_of).map(local).to_numpy()
    carriers = np.unique(pos)
    col = {p: j for j, p in enumerate(carriers)}
    mk, mk_index = np.unique(h["marker"].to_numpy(), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(h)), (mk_index, [col[p] for p in pos])), shape=(len(mk), len(carriers)))
    m.data[:] = 1.0  # a contig with two genes of one marker still counts once
    return carriers, m


def _assign_with_cannot_links(cost: np.ndarray, marker_by_contig: sp.csr_matrix) -> np.ndarray | None:
    """Optimal assignment of c contigs to K parts (cost (c, K)) with <= 1 contig per marker per part; None if infeasible."""
    c, k = cost.shape
    n_var = c * k  # variable (i, j) at i * k + j
    one_part = sp.kron(sp.eye(c), np.ones((1, k)))
    per_marker = sp.kron(marker_by_contig, sp.eye(k))  # (markers * K, c * K)
    res = milp(
        cost.ravel(),
        constraints=[LinearConstraint(one_part, 1, 1), LinearConstraint(per_marker, -np.inf, 1)],
        integrality=np.ones(n_var), bounds=Bounds(0, 1), options={"time_limit": 60},
    )
    if res.x is None:
        return None
    return res.x.reshape(c, k).argmax(axis=1)


def constrained_kmeans(
    x: np.ndarray, k: int, marker_by_contig: sp.csr_matrix, carriers: np.ndarray, *, seed: int = 0, max_iter: int = 30
) -> np.ndarray:
    """(n,) labels in [0, k') of k-means on (n, d) ``x`` where contigs ``carriers`` (rows of x) sharing a
    marker (``marker_by_contig``: markers x carriers, 0/1) are never in one part.

    If no assignment into ``k`` parts satisfies every cannot-link (a contig set that needs more
    parts), ``k`` grows by one until one does.
    """
    n = len(x)
    rng = np.random.default_rng(seed)
    free = np.setdiff1d(np.arange(n), carriers)
    # k-means++-like seeding from the carriers of the most frequent marker: they must be apart anyway
    counts = np.asarray(marker_by_contig.sum(axis=1)).ravel()
    top = carriers[marker_by_contig[int(counts.argmax())].indices] if len(carriers) else rng.choice(n, k, replace=False)
    centres = x[top[:k]].astype(np.float64)
    while len(centres) < k:
        d = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
        centres = np.vstack([centres, x[rng.choice(n, p=d / d.sum()) if d.sum() > 0 else rng.integers(n)]])
    labels = np.full(n, -1)
    for _ in range(max_iter):
        cost = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        new = np.empty(n, dtype=np.int64)
        new[free] = cost[free].argmin(1)
        if len(carriers):
            part = _assign_with_cannot_links(cost[carriers], marker_by_contig)
            while part is None:
                k += 1
                centres = np.vstack([centres, x[carriers[rng.integers(len(carriers))]]])
                cost = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
                new[free] = cost[free].argmin(1)
                part = _assign_with_cannot_links(cost[carriers], marker_by_contig)
            new[carriers] = part
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(centres)):
            if (labels == j).any():
                centres[j] = x[labels == j].mean(0)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


def split_contaminated(
    latent: np.ndarray,
    labels: np.ndarray,
    hits: pd.DataFrame,
    quality: pd.DataFrame,
    ids: np.ndarray,
    *,
    min_completeness: float = 90.0,
    min_contamination: float = 5.0,
    seed: int = 0,
) -> np.ndarray:
    """(N,) new labels after splitting contaminated clusters with cannot-links (see module docstring).

    Args:
        latent: (N, d) latent means; labels: (N,) cluster per contig (-1 = unbinned).
        hits: marker hits, DataFrame(contig, marker, ...) of the single-copy set used for cannot-links.
        quality: DataFrame(bin, completeness, contamination) in percent, one row per label value.
        ids: (N,) contig ids (row order of ``latent``).
    """
    labels = np.asarray(labels).copy()
    row_of = {str(c): i for i, c in enumerate(ids)}
    bad = quality[(quality["completeness"] > min_completeness) & (quality["contamination"] >= min_contamination)]
    next_label = labels.max() + 1
    for b in bad["bin"]:
        rows = np.flatnonzero(labels == int(b))
        carriers, m = _marker_matrix(rows, hits, row_of)
        if not len(carriers):
            continue
        k = int(np.asarray(m.sum(axis=1)).max())
        if k < 2:
            continue
        parts = constrained_kmeans(latent[rows].astype(np.float64), k, m, carriers, seed=seed)
        for p in range(1, parts.max() + 1):
            labels[rows[parts == p]] = next_label
            next_label += 1
        log.info("split cluster %s (%d contigs) into %d parts", b, len(rows), parts.max() + 1)
    return labels


def cannot_link_violations(labels: np.ndarray, hits: pd.DataFrame, ids: np.ndarray) -> int:
    """Number of (marker, bin) pairs where two different contigs of one bin carry the same marker."""
    row_of = {str(c): i for i, c in enumerate(ids)}
    h = hits.assign(row=hits["contig"].map(row_of)).dropna(subset=["row"])
    h = h.assign(label=labels[h["row"].astype(int).to_numpy()])
    h = h[h["label"] >= 0].drop_duplicates(["marker", "row"])
    per = h.groupby(["label", "marker"])["row"].nunique()
    return int((per > 1).sum())


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
