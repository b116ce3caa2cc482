"""From latent means to bins: a Gaussian mixture, then constrained k-means with cannot-links on
contaminated clusters, then small clusters written as unbinned.

* :func:`gmm` fits a full-covariance Gaussian mixture with ``k`` components to the (N, d) latent
  means (on a random sample of at most ``max_fit`` rows for large N, then predicts all rows); EM in
  torch over row chunks, so memory stays O(chunk x K) and a GPU is used when present.
* :func:`split_contaminated` re-clusters each cluster whose marker-based completeness is above
  ``min_completeness`` and contamination at least ``min_contamination`` (the seed's rule: > 90 %
  and >= 5 %) into K parts (the fewest parts, from 2 up, that can satisfy every cannot-link: at least
  the largest copy number of any marker in the cluster), by k-means in which contigs that share a marker gene
  ("cannot-links", :func:`deepmetabin.markers.cannot_links`) never end in the same part. Each
  assignment step of the linked contigs is a small 0/1 linear program (``scipy.optimize.milp``,
  HiGHS): minimise the summed squared distance to the part centres subject to "every contig in one
  part" and "two linked contigs never in the same part", so the cannot-links hold by construction;
  K grows when no assignment exists. Contigs without links go to their nearest centre.
* :func:`merge_fragments` joins each "fragment" (a cluster below ``max_completeness`` by markers: not
  even a medium-quality genome) to the cluster that receives the majority of its k-NN graph edges,
  unless that adds marker contamination (see its docstring: why genomes break into such fragments).
* :func:`move_islands` moves each island of a cluster (a group of its contigs with no k-NN edge to
  the rest of it) to the cluster its edges point to, unless that adds marker contamination.
* :func:`drop_small` marks clusters smaller than ``min_bin_bp`` (default 200 kb) as unbinned (-1).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp
from sklearn.metrics import silhouette_score

if TYPE_CHECKING:
    import torch

    from .contigs import Contigs, ContigTable

log = logging.getLogger(__name__)


class _Mixture:
    """A full-covariance Gaussian mixture held as torch tensors (weights (K,), means (K, d), the
    Cholesky factors of the precisions (d, K*d), as sklearn's ``precisions_cholesky_``)."""

    def __init__(self, weights, means, covariances, reg_covar: float) -> None:  # type: ignore[no-untyped-def]
        import torch

        k, d = means.shape
        cov = covariances.double() + reg_covar * torch.eye(d, dtype=torch.float64, device=means.device)
        chol, info = torch.linalg.cholesky_ex(cov)  # (K, d, d) lower, cov = L L^T
        if bool((info != 0).any()):
            # a component on fewer than d + 1 distinct rows (or float cancellation in E[xx] - mu mu^T) can
            # leave a covariance not positive definite even with reg_covar added; scikit-learn stops there.
            # Its eigenvalues are raised to reg_covar instead (the nearest such matrix in Frobenius norm).
            bad = torch.nonzero(info).flatten()
            vals, vecs = torch.linalg.eigh(cov[bad])
            cov[bad] = (vecs * vals.clamp_min(reg_covar)[:, None, :]) @ vecs.transpose(1, 2)
            cov[bad] = 0.5 * (cov[bad] + cov[bad].transpose(1, 2))
            chol = torch.linalg.cholesky(cov)
            log.info("GMM: %d of %d covariances not positive definite; eigenvalues raised to %g", len(bad), k, reg_covar)
        eye = torch.eye(d, dtype=torch.float64, device=means.device).expand(k, d, d)
        prec_chol = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(1, 2)  # (K, d, d): P with P P^T = cov^-1
        self.k, self.d = k, d
        self.log_weights = torch.log(weights.double().clamp_min(1e-300)).float()
        # log N(x | mu_k, cov_k) = -d/2 log 2pi + log det P_k - |x P_k - mu_k P_k|^2 / 2
        self.log_norm = (-0.5 * d * np.log(2 * np.pi) + torch.log(torch.diagonal(prec_chol, dim1=1, dim2=2)).sum(1)).float()
        self.proj = prec_chol.permute(1, 0, 2).reshape(d, k * d).float()  # x @ proj = [x P_1 | ... | x P_K]
        self.shift = torch.einsum("kd,kde->ke", means.double(), prec_chol).float()  # (K, d) mu_k P_k

    def weighted_log_prob(self, x):  # type: ignore[no-untyped-def]
        """(c, K) log w_k + log N(x_i | mu_k, cov_k) for the rows of the (c, d) float32 tensor ``x``."""
        import torch

        y = torch.addmm(self.shift.view(1, -1), x, self.proj, beta=-1).square_()  # (c, K*d): (x P_k - mu_k P_k)^2
        return self.log_weights + self.log_norm - 0.5 * y.view(len(x), self.k, self.d).sum(-1)


def _chunk_rows(k: int, d: int, device: "torch.device") -> int:
    """Rows per chunk: the (rows, K*d) float32 intermediate of an E-step is kept within the CPU's cache
    (~4 MB; 5x faster than 64 MB chunks at K=100, d=32) or at ~256 MB on a GPU."""
    budget = 1 << 26 if device.type == "cuda" else 1 << 20
    return int(max(64, budget // max(1, k * d)))


def _m_step(x, resp_of_chunk, k: int, reg_covar: float):  # type: ignore[no-untyped-def]
    """Weights (K,), means (K, d) and covariances (K, d, d) from responsibilities, accumulated over
    row chunks in float64: ``resp_of_chunk(i, xc)`` gives the (c, K) responsibilities of chunk ``xc``."""
    import torch

    n, d = x.shape
    nk = torch.zeros(k, dtype=torch.float64, device=x.device)
    sx = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    sxx = torch.zeros(k, d * d, dtype=torch.float64, device=x.device)
    step = _chunk_rows(k, d, x.device)
    for i in range(0, n, step):
        xc = x[i:i + step]
        r = resp_of_chunk(i, xc)
        nk += r.sum(0).double()
        sx += (r.T @ xc).double()
        sxx += (r.T @ (xc[:, :, None] * xc[:, None, :]).reshape(len(xc), d * d)).double()
    nk = nk + 10 * torch.finfo(torch.float32).eps
    means = sx / nk[:, None]
    cov = sxx.view(k, d, d) / nk[:, None, None] - means[:, :, None] * means[:, None, :]
    cov = 0.5 * (cov + cov.transpose(1, 2))
    return nk / nk.sum(), means, cov


def gmm(latent: np.ndarray, k: int, *, seed: int = 0, max_fit: int = 200_000, max_iter: int = 200, tol: float = 1e-3,
        reg_covar: float = 1e-4, device: str | None = None, progress: Callable[[int, int], None] | None = None,
        init: str = "kmeans", n_init: int | None = None) -> np.ndarray:
    """(N,) int labels in [0, k) from a full-covariance Gaussian mixture on the (N, d) ``latent``.

    ``k`` is capped at N; with N > ``max_fit`` the mixture is fitted on a seeded sample of
    ``max_fit`` rows and then assigns every row. EM as scikit-learn's ``GaussianMixture`` (each row
    first given to its nearest start centre; ``reg_covar`` added to every covariance; stops when the
    mean log-likelihood per row changes by < ``tol``). Start centres (``init``): ``"kmeans"`` (the
    default, as scikit-learn's): the best of ``n_init`` seeded k-means runs (None: 10, or 3 when
    rows x K > 2e7); ``"k-means++"``: k-means++ seeds alone, whose F1 varied 3x more with the seed and
    was 0.016-0.021 lower on the development data (benchmarks/ABLATION.md). EM in torch: float32
    matrix products over row chunks with float64 sums, so memory is O(chunk x K x d + K x d^2)
    (never N x K), all threads are used, and a GPU when present (``device``: None = cuda if
    available). ``progress(iteration, max_iter)`` after each EM step.
    """
    import torch
    from sklearn.cluster import kmeans_plusplus

    from .train import pick_device

    latent = np.asarray(latent, dtype=np.float32)
    n, d = latent.shape
    k = int(max(1, min(k, n)))
    rng = np.random.default_rng(seed)
    fit_rows = latent if n <= max_fit else latent[np.sort(rng.choice(n, size=max_fit, replace=False))]
    offset = fit_rows.mean(0)  # centred: the float32 second moments then lose no precision
    centred = fit_rows - offset
    dev = pick_device(device or "auto")
    x = torch.from_numpy(centred).to(dev)
    if init == "kmeans":
        from sklearn.cluster import KMeans

        if n_init is None:  # 10 starts; 3 on big fits (200k rows x 800 components: ~1 min on 2 cores)
            n_init = 10 if len(fit_rows) * k <= 20_000_000 else 3
        seeds = KMeans(k, n_init=n_init, random_state=seed).fit(centred).cluster_centers_
    elif init == "k-means++":
        seeds, _ = kmeans_plusplus(centred, k, random_state=seed)
    else:
        raise ValueError(f"init must be 'kmeans' or 'k-means++', got {init!r}")
    seeds_t = torch.from_numpy(np.ascontiguousarray(seeds, dtype=np.float32)).to(dev)

    def nearest_seed(_i: int, xc):  # type: ignore[no-untyped-def]
        return torch.nn.functional.one_hot(torch.cdist(xc, seeds_t).argmin(1), k).float()

    mixture = _Mixture(*_m_step(x, nearest_seed, k, reg_covar), reg_covar)
    lower = -np.inf
    for it in range(1, max_iter + 1):
        total = [0.0]

        def posterior(_i: int, xc):  # type: ignore[no-untyped-def]
            wlp = mixture.weighted_log_prob(xc)
            norm = torch.logsumexp(wlp, 1, keepdim=True)
            total[0] += float(norm.double().sum())
            return torch.exp(wlp - norm)

        weights, means, cov = _m_step(x, posterior, k, reg_covar)
        mixture = _Mixture(weights, means, cov, reg_covar)
        if progress is not None:
            progress(it, max_iter)
        change, lower = total[0] / len(x) - lower, total[0] / len(x)
        if abs(change) < tol:
            break
    else:
        log.warning("GMM (K=%d) did not converge in %d EM steps; using the last one", k, max_iter)
    log.info("GMM: K=%d on %d rows, %d EM steps, mean log-likelihood %.4f", k, len(x), it, lower)
    step = _chunk_rows(k, d, dev)
    out = np.empty(n, dtype=np.int64)
    for i in range(0, n, step):
        xc = torch.from_numpy(latent[i:i + step] - offset).to(dev)
        out[i:i + step] = mixture.weighted_log_prob(xc).argmax(1).cpu().numpy()
    return out


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
    # the links inside each cluster, grouped once by cluster (a split relabels only its own cluster's rows)
    la, lb = labels[links[:, 0]], labels[links[:, 1]]
    same = links[(la == lb) & (la >= 0)]
    order = np.argsort(labels[same[:, 0]], kind="stable")
    same, same_label = same[order], labels[same[order, 0]]
    for b in bad["bin"]:
        rows = np.flatnonzero(labels == int(b))
        inside = same[np.searchsorted(same_label, int(b), "left"):np.searchsorted(same_label, int(b), "right")]
        if not len(inside):
            continue
        local = np.searchsorted(rows, inside)
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


def merge_fragments(
    labels: np.ndarray,
    graph: sp.spmatrix,
    hits: pd.DataFrame,
    contigs: "Contigs | ContigTable",
    *,
    max_completeness: float = 50.0,
    min_edge_share: float = 0.5,
    min_edge_fraction: float = 0.05,
    max_added_contamination: float = 5.0,
    groups: np.ndarray | None = None,
    marker_set: str = "checkm_bacteria",
) -> np.ndarray:
    """(N,) labels in which fragment clusters are joined to the genome cluster their graph edges point to.

    Why: strains of one species share most of their sequence, so reads of every strain map to the
    shared regions and those contigs carry a mixed depth, while a strain's own regions carry its own
    depth. The GMM then may give a genome two clusters: the shared part (with the single-copy markers,
    which lie in the conserved core) and its strain-specific part (no markers, completeness ~0 %). Left
    apart, the second is a bin no user can place and the genome loses that share of its contigs.

    A cluster F is a fragment when its marker completeness is below ``max_completeness`` (default 50 %,
    MIMAG's floor for a medium-quality genome). F joins cluster P when (1) P receives at least
    ``min_edge_share`` of F's k-NN edges that leave F (unbinned ends count in the total, not as a target)
    and at least ``min_edge_fraction`` of all of F's edges (inside ones included), (2) P itself is not a
    fragment, and (3) P with F is at most ``max_added_contamination`` percentage points more contaminated
    than P (default 5, MIMAG's high-quality limit): a fragment of another genome brings copies of markers
    P already has. Condition (1b) is for marker-free fragments, which (3) cannot judge: on the
    development runs (k = 3), a cluster of one genome sent at most 3.8 % of its edges to a cluster of
    another genome, a genome's strain-specific part 10-15 % to its shared part. Fragments are taken in order of edge share (most
    decided first); passes repeat until none joins, edges recounted each pass (a fragment whose edges
    pointed to another fragment may join that one's genome cluster in the next pass).

    Args:
        labels: (N,) cluster per contig row, -1 = unbinned (left as it is).
        graph: (N, N) k-NN graph of the contigs (any values; an edge is a stored entry, either direction).
        hits: marker hits of ``marker_set`` (:func:`deepmetabin.markers.find_markers`) on ``contigs``.
        groups: (N,) group per contig (the sample in multi-sample mode): edges between groups are not counted,
            so a fragment only joins a cluster of its own group.
    """
    from .markers import collocated_sets, contig_rows, count_copies
    from .quality import bin_quality, checkm_scores

    labels = np.asarray(labels, dtype=np.int64).copy()
    a, b = _undirected_edges(graph, len(labels), groups)
    quality = bin_quality(labels, hits, contigs, marker_set=marker_set)
    completeness = np.full(max(int(labels.max()) + 1, 1), 100.0)  # index = label; a label without contigs never fragments
    contamination = np.zeros(len(completeness))
    completeness[quality["bin"].to_numpy(np.int64)] = quality["completeness"].to_numpy(np.float64)
    contamination[quality["bin"].to_numpy(np.int64)] = quality["contamination"].to_numpy(np.float64)
    sets = collocated_sets(marker_set)
    hit_rows = contig_rows(hits, contigs) if len(hits) else np.zeros(0, np.int64)
    while True:
        la, lb = labels[a], labels[b]
        out = (la != lb) & (la >= 0)
        fa, fb = la[out], lb[out]
        frag = completeness[fa] < max_completeness
        fa, fb = fa[frag], fb[frag]
        if not len(fa):
            return labels
        total = pd.Series(fa).value_counts()
        degree = np.bincount(la[la >= 0], minlength=len(completeness))  # edge ends of each cluster, inside ones too
        to = pd.DataFrame({"f": fa, "p": fb})
        to = to[to["p"] >= 0].value_counts().rename("n").reset_index()
        to = to.sort_values("n", ascending=False, kind="stable").drop_duplicates("f")
        to["share"] = to["n"].to_numpy() / total.reindex(to["f"]).to_numpy()
        to["fraction"] = to["n"].to_numpy() / degree[to["f"].to_numpy(np.int64)]
        joined = False
        for f, p, share, fraction in to.sort_values(["share", "f"], ascending=[False, True])[["f", "p", "share", "fraction"]].itertuples(index=False):
            f, p = int(f), int(p)
            if share < min_edge_share or fraction < min_edge_fraction or completeness[p] < max_completeness or not (labels == f).any():
                continue
            union = np.isin(labels[hit_rows], (f, p))
            comp, cont = checkm_scores(count_copies(hits[union]), sets)
            if cont - contamination[p] > max_added_contamination:
                log.info("fragment %d not joined to cluster %d: contamination %.1f -> %.1f %%", f, p, contamination[p], cont)
                continue
            log.info("fragment %d (%d contigs, completeness %.1f %%) joined to cluster %d (%.0f %% of its outgoing edges, "
                     "%.0f %% of all)", f, int((labels == f).sum()), completeness[f], p, 100 * share, 100 * fraction)
            labels[labels == f] = p
            completeness[p], contamination[p] = comp, cont
            joined = True
        if not joined:
            return labels


def _undirected_edges(graph: sp.spmatrix, n: int, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Both directions of every edge of ``graph`` once, self-loops and (with ``groups``) edges between groups dropped."""
    g = sp.coo_matrix(graph)
    a, b = np.concatenate([g.row, g.col]).astype(np.int64), np.concatenate([g.col, g.row]).astype(np.int64)
    keep = a != b
    if groups is not None:
        groups = np.asarray(groups)
        keep &= groups[a] == groups[b]
    code = np.unique(a[keep] * n + b[keep])
    return code // n, code % n


def _bridges(n: int, a: np.ndarray, b: np.ndarray, use: np.ndarray, min_side: int = 1) -> np.ndarray:
    """(E,) bool: which edges (a[e], b[e]) are bridges (their removal disconnects their component) of the
    undirected graph on ``n`` nodes made of the edges where ``use`` is True, counting only bridges that
    leave at least ``min_side`` nodes on either side. Both directions of every edge are listed (as
    :func:`_undirected_edges` gives them); both are marked. Tarjan's low-link algorithm, iterative (no
    recursion limit), O(n + E)."""
    ua, ub = a[use], b[use]
    order = np.argsort(ua, kind="stable")
    ua, ub = ua[order], ub[order]
    ptr = np.searchsorted(ua, np.arange(n + 1)).tolist()
    ub = ub.tolist()  # Python lists: this loop is scalar work
    disc = [-1] * n  # discovery time
    low = [0] * n  # earliest discovery time reachable through one back edge
    size = [1] * n  # nodes in each node's DFS subtree
    found: list[tuple[int, int, int, int]] = []  # (parent, child, child's subtree size, DFS root)
    comp_size: dict[int, int] = {}
    t = 0
    for s0 in range(n):
        if disc[s0] >= 0 or ptr[s0] == ptr[s0 + 1]:
            continue
        disc[s0] = low[s0] = t
        t += 1
        stack = [(s0, -1, ptr[s0])]  # (node, its parent, next adjacency position)
        while stack:
            v, parent, i = stack[-1]
            if i < ptr[v + 1]:
                stack[-1] = (v, parent, i + 1)
                w = ub[i]
                if w == parent:
                    continue
                if disc[w] < 0:
                    disc[w] = low[w] = t
                    t += 1
                    stack.append((w, v, ptr[w]))
                else:
                    low[v] = min(low[v], disc[w])
            else:
                stack.pop()
                if stack:
                    p = stack[-1][0]
                    low[p] = min(low[p], low[v])
                    size[p] += size[v]
                    if low[v] > disc[p]:
                        found.append((p, v, size[v], s0))
        comp_size[s0] = size[s0]
    bridge_pairs = {(min(p, v), max(p, v)) for p, v, sub, root in found if min(sub, comp_size[root] - sub) >= min_side}
    if not bridge_pairs:
        return np.zeros(len(a), bool)
    code = np.array([x * n + y for x, y in bridge_pairs], dtype=np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return np.isin(lo * n + hi, code) & use


def move_islands(
    labels: np.ndarray,
    graph: sp.spmatrix,
    hits: pd.DataFrame,
    contigs: "Contigs | ContigTable",
    *,
    min_edge_share: float = 0.5,
    max_island_share: float = 0.5,
    max_added_contamination: float = 5.0,
    groups: np.ndarray | None = None,
    marker_set: str = "checkm_bacteria",
    max_passes: int = 50,
    min_bridged: int = 3,
) -> np.ndarray:
    """(N,) labels in which the graph islands of each cluster move to the cluster their edges point to.

    Why: the GMM has fewer components than genomes (K = 7/8 of the estimate), so a small group of
    contigs whose own genome has no component of its own — typically the strain-specific part of a
    genome whose shared part sits in a mixed strain cluster — is absorbed by whichever component is
    nearest in the latent space, often another species (S. aureus contigs in an H. pylori bin). The
    k-NN graph does not follow: such a group is an island of the cluster (no k-NN edge to the rest of
    it) whose edges leave to its own genome's cluster. On the development runs 98-99 % of the wrong
    k-NN edges joined strains of one species, so the graph is the better judge of where an island goes.

    For every cluster, the connected components of the k-NN graph restricted to its contigs are found
    (once no island moves that way, also those of that subgraph less its bridges that leave at least
    ``min_bridged`` contigs on both sides: a single stray edge between two genomes must not tie an
    island to the core); the largest by bp is the cluster's core and stays. Any
    other component I (an island) with less than ``max_island_share`` of the cluster's bp moves to
    cluster P when P receives at least ``min_edge_share`` of the edges that leave I (edges to its own
    cluster, e.g. a bridge, and to unbinned contigs count in the total) and P with I is at most
    ``max_added_contamination`` percentage points more contaminated than P was before any island moved
    (an island of another genome with markers P already has stays; the bound is on the sum, so many
    single-contig islands cannot creep past it). Passes repeat, with edges recounted, until nothing
    moves (at most ``max_passes``); within a pass an island whose edges reach a contig that already moved
    waits for the next pass (its counts are stale).

    Args:
        labels: (N,) cluster per contig row, -1 = unbinned (left as it is, never a target).
        graph: (N, N) k-NN graph of the contigs (any values; an edge is a stored entry, either direction).
        hits: marker hits of ``marker_set`` (:func:`deepmetabin.markers.find_markers`) on ``contigs``.
        groups: (N,) group per contig (the sample in multi-sample mode): edges between groups are not
            counted, so an island only moves to a cluster of its own group.

    Returns:
        (N,) int64 labels (same label values; a cluster never disappears, its core stays).
    """
    from scipy.sparse.csgraph import connected_components

    from .markers import collocated_sets, contig_rows, count_copies
    from .quality import checkm_scores

    labels = np.asarray(labels, dtype=np.int64).copy()
    n = len(labels)
    a, b = _undirected_edges(graph, n, groups)
    lengths = np.asarray(contigs.lengths, dtype=np.float64)
    sets = collocated_sets(marker_set)
    hit_rows = contig_rows(hits, contigs) if len(hits) else np.zeros(0, np.int64)
    base: dict[int, float] = {}  # contamination of each target before any island moved

    def contamination(mask: np.ndarray) -> float:
        return checkm_scores(count_copies(hits[mask]), sets)[1]

    cut = False
    for _ in range(max_passes):
        # components of the graph with only the edges inside a cluster; once no island moves that way, also
        # without the bridges that leave >= min_bridged contigs on both sides (one stray edge between two
        # genomes must not tie an island to a core; pendant contigs stay where they are)
        inside = (labels[a] == labels[b]) & (labels[a] >= 0)
        if cut:
            inside &= ~_bridges(n, a, b, inside, min_side=min_bridged)
        adj = sp.coo_matrix((np.ones(int(inside.sum()), np.int8), (a[inside], b[inside])), shape=(n, n))
        _, comp = connected_components(adj, directed=False)
        comp_bp = np.bincount(comp, weights=lengths)
        clustered = labels >= 0
        frame = pd.DataFrame({"label": labels[clustered], "comp": comp[clustered]}).drop_duplicates("comp")
        frame["bp"] = comp_bp[frame["comp"].to_numpy()]
        cluster_bp = frame.groupby("label")["bp"].transform("sum")
        core = frame.loc[frame.groupby("label")["bp"].idxmax(), "comp"]
        islands = frame[~frame["comp"].isin(core) & (frame["bp"] < max_island_share * cluster_bp)]
        if islands.empty:
            if cut:
                return labels
            cut = True
            continue
        is_island = np.zeros(comp.max() + 1, bool)
        is_island[islands["comp"].to_numpy()] = True
        leave = is_island[comp[a]] & (comp[a] != comp[b])
        edges = pd.DataFrame({"comp": comp[a[leave]], "to": labels[b[leave]]})
        ends = pd.Series(b[leave]).groupby(edges["comp"].to_numpy()).agg(np.array)  # the rows each island's edges reach
        total = edges["comp"].value_counts()
        to = edges[edges["to"] >= 0].value_counts().rename("n").reset_index()
        to = to.sort_values("n", ascending=False, kind="stable").drop_duplicates("comp")
        to["share"] = to["n"].to_numpy() / total.reindex(to["comp"]).to_numpy()
        to = to[to["share"] >= min_edge_share].sort_values(["share", "comp"], ascending=[False, True])
        moved = 0
        now = np.zeros(n, bool)  # rows moved in this pass: the edge counts of islands that reach them are stale
        for c, p in to[["comp", "to"]].itertuples(index=False):
            rows = np.flatnonzero(comp == c)
            src = int(labels[rows[0]])
            if src == p or now[ends[c]].any():
                continue
            in_island = np.isin(hit_rows, rows)
            if in_island.any():
                in_p = labels[hit_rows] == p
                if p not in base:
                    base[p] = contamination(in_p)
                if contamination(in_p | in_island) - base[p] > max_added_contamination:
                    continue
            labels[rows] = p
            now[rows] = True
            moved += 1
        log.info("islands moved: %d%s", moved, " (bridges cut)" if cut else "")
        if not moved:
            if cut:
                break
            cut = True
        else:
            cut = False
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
