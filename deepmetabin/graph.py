"""The refined k-NN contig graph: k nearest neighbours in feature space, pruned to same-genome edges.

Steps (each a plain function over numpy / scipy.sparse):

1. :func:`knn_graph` — the k nearest neighbours of every contig (Euclidean distance on the feature
   matrix), symmetrised (an edge i-j exists when j is among i's k nearest *or* i among j's), as a
   CSR matrix of float32 distances. Exact (blocked numpy/BLAS) up to ``EXACT_MAX`` contigs, an
   approximate NN-descent index (pynndescent) above. Memory is O(N·k): no N x N matrix is built.
2. :func:`refine` — (a) seed clusters: DBSCAN over the graph's distances (connected components of the
   edges <= ``eps`` when ``min_samples <= 2``, sklearn DBSCAN on the sparse graph otherwise);
   (b) label propagation of the seed labels along the graph to the contigs outside any seed cluster;
   (c) removal of the edges longer than ``max_distance`` and of the edges whose ends got different labels.
3. :func:`save_graph` / :func:`load_graph` — one ``.npz`` (written atomically) carrying the hash of
   the contig ids, so a graph is never used with another assembly.

Zero distances. A CSR matrix cannot tell a stored 0 from "no edge" (scipy drops explicit zeros in
many operations), so a distance below ``MIN_DISTANCE`` (the smallest normal float32, ~1.2e-38) —
in practice the 0 between two identical feature rows (duplicate contigs) — is stored as
``MIN_DISTANCE``. Every stored entry is therefore an edge and ``graph.data > 0`` always holds.
"""
from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ._io import write_bytes
from .errors import GraphError, InputFileError, RunFolderError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: stored instead of a zero distance (identical feature rows), see the module docstring
MIN_DISTANCE = np.float32(np.finfo(np.float32).tiny)
#: ``method="auto"`` searches exactly up to this many contigs, approximately above
EXACT_MAX = 50_000
#: default seed radius: ``eps`` is this quantile of the contigs' nearest-neighbour distances
#: (relative to the data, so it follows feature weights and sample count; chosen on the bench
#: datasets, see benchmarks/RESULTS.md "Graph": larger values chain genomes into few seeds)
EPS_QUANTILE = 0.05
#: default DBSCAN ``min_samples`` (the point itself counts, as in scikit-learn)
MIN_SAMPLES = 2
#: default distance cut: edges longer than this quantile of the k-NN edge distances are removed
#: (``None``: no distance cut; measured: long k-NN edges are not less precise than short ones)
MAX_DISTANCE_QUANTILE: float | None = None
#: format version of the ``.npz`` written by :func:`save_graph`
GRAPH_FORMAT = 1

# floats per block of the exact search: 16 MB of float32 distances, and argpartition's int64 indices of the
# same shape (32 MB); 1 << 24 held ~320 MB at the peak on 8.9k contigs for no speed gain
_BLOCK_ELEMS = 1 << 22
_EXACT_MARGIN = 8  # extra float32 candidates re-ranked in float64 (absorbs GEMM rounding)


# ------------------------------------------------------------------------------------------ k-NN
def _check_features(x: np.ndarray, k: int, ids: Sequence[str] | None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise GraphError(f"features must be a 2-d (contigs x features) matrix, got shape {x.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise GraphError(f"k (neighbours per contig) must be an integer >= 1, got {k!r}")
    n = x.shape[0]
    if n < k + 1:
        raise GraphError(
            f"a {k}-NN graph needs at least k + 1 = {k + 1} contigs, got {n}; lower --k or give "
            "more contigs (lower --min-length)"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        names = [str(ids[i]) if ids is not None else f"row {i}" for i in rows[:5]]
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        raise GraphError(
            f"{len(rows)} contig(s) have NaN or infinite features ({', '.join(names)}{more}); "
            "fix or drop them and compute the features again"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def _rerank(x: np.ndarray, rows: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of each row's candidates, by float64 distance, ties broken by index.

    ``cand`` (b, c) int64 holds candidate columns (``-1`` = none, or the row itself: both ignored).
    Returns ((b, k) int64 indices, (b, k) float64 distances).
    """
    diff = x[np.maximum(cand, 0)].astype(np.float64) - x[rows].astype(np.float64)[:, None, :]
    dist = np.sqrt(np.einsum("bcd,bcd->bc", diff, diff))
    dist[(cand < 0) | (cand == rows[:, None])] = np.inf
    order = np.lexsort((cand, dist), axis=-1)[:, :k]
    return np.take_along_axis(cand, order, 1), np.take_along_axis(dist, order, 1)


def _exact_knn(x: np.ndarray, k: int, threads: int, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Blocked brute force: float32 GEMM for candidates, float64 re-ranking of the best ``k + 8``."""
    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32)
    n_cand = min(n - 1, k + _EXACT_MARGIN)
    block = max(1, min(n, _BLOCK_ELEMS // n))
    ind = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float64)
    with threadpool_limits(limits=threads):
        for start in range(0, n, block):
            stop = min(n, start + block)
            rows = np.arange(start, stop)
            d2 = x[start:stop] @ x.T
            d2 *= -2
            d2 += sq[start:stop, None]
            d2 += sq[None, :]
            d2[rows - start, rows] = np.inf  # never its own neighbour, even among duplicates
            cand = np.argpartition(d2, n_cand - 1, axis=1)[:, :n_cand] if n_cand < n - 1 else np.argsort(d2, axis=1)[:, : n - 1]
            ind[start:stop], dist[start:stop] = _rerank(x, rows, cand, k)
            if progress is not None:
                progress(stop, n)
    return ind, dist


def _approx_knn(x: np.ndarray, k: int, seed: int, threads: int, n_candidates: int | None,
                progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """NN-descent (pynndescent) with ``n_candidates`` neighbours, re-ranked exactly to the best k."""
    from pynndescent import NNDescent

    n = x.shape[0]
    n_nb = max(k + 1, n_candidates if n_candidates is not None else default_candidates(k))
    if n <= 2 * (n_nb + 1):  # an index over so few rows would hold nearly all of them: search exactly
        log.info("approximate search asked for %d contigs with %d candidates each: searching exactly", n, n_nb)
        return _exact_knn(x, k, threads, progress)
    if progress is not None:
        progress(0, n)
    import numba

    index = NNDescent(  # n_jobs goes to numba.set_num_threads, which refuses more than numba's pool
        x, n_neighbors=n_nb + 1, metric="euclidean", random_state=seed, n_jobs=min(threads, numba.config.NUMBA_NUM_THREADS),
        low_memory=True, compressed=True, verbose=False,
    )
    cand, _ = index.neighbor_graph
    del index
    cand = cand.astype(np.int64)
    ind = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float64)
    step = max(1, _BLOCK_ELEMS // (cand.shape[1] * x.shape[1]))
    for start in range(0, n, step):
        stop = min(n, start + step)
        ind[start:stop], dist[start:stop] = _rerank(x, np.arange(start, stop), cand[start:stop], k)
    missing = ~np.isfinite(dist)
    if missing.any():  # NN-descent left a row with fewer than k neighbours: never seen, but never silent
        raise GraphError(f"the approximate index found fewer than {k} neighbours for {int(missing.any(axis=1).sum())} contig(s); use method='exact'")
    if progress is not None:
        progress(n, n)
    return ind, dist


def default_candidates(k: int) -> int:
    """Neighbours kept per contig by NN-descent before exact re-ranking to k (chosen for recall@k >= 0.99)."""
    return max(48, 4 * k)


def knn_search(
    x: np.ndarray,
    k: int = 3,
    *,
    method: str = "auto",
    seed: int = 0,
    threads: int = 1,
    n_candidates: int | None = None,
    ids: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of ``x`` (directed), excluding the row itself.

    Args:
        x: (N, D) feature matrix (float32; other dtypes are converted).
        k: neighbours per contig.
        method: ``"exact"`` (blocked brute force), ``"approx"`` (NN-descent) or ``"auto"``
            (exact when ``N <= EXACT_MAX``). ``"approx"`` searches exactly when N is at most twice
            the candidates per contig.
        seed: seed of the approximate index (the exact search has no randomness).
        threads: BLAS threads (exact) or numba threads (approximate).
        n_candidates: neighbours NN-descent keeps before exact re-ranking (default
            :func:`default_candidates`); more is slower and closer to exact.
        ids: contig ids, only used to name bad rows in error messages.
        progress: ``progress(done_rows, N)``.

    Returns:
        ``(indices, distances)``: (N, k) int64 column indices sorted by increasing distance (ties by
        index) and (N, k) float64 Euclidean distances (in feature units). Exact distances either way:
        only the choice of neighbours is approximate.

    Raises:
        GraphError: ``x`` is not 2-d, has NaN/inf rows, has fewer than ``k + 1`` rows, or ``k < 1``.
    """
    x = _check_features(x, k, ids)
    if method not in ("auto", "exact", "approx"):
        raise GraphError(f"method must be 'auto', 'exact' or 'approx', got {method!r}")
    if method == "auto":
        method = "exact" if x.shape[0] <= EXACT_MAX else "approx"
    threads = max(1, int(threads))
    log.info("k-NN search: %d contigs x %d features, k=%d, %s, %d thread(s)", x.shape[0], x.shape[1], k, method, threads)
    if method == "exact":
        return _exact_knn(x, k, threads, progress)
    return _approx_knn(x, k, seed, threads, n_candidates, progress)


def symmetrize(indices: np.ndarray, distances: np.ndarray) -> sp.csr_matrix:
    """(N, N) symmetric CSR graph (float32 distances) from directed (N, k) neighbour lists.

    An undirected edge exists where either end lists the other. Distances below ``MIN_DISTANCE``
    (zero: identical rows) are stored as ``MIN_DISTANCE``. Indices are sorted within each row.
    """
    n, k = indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    d = np.maximum(distances.ravel().astype(np.float32), MIN_DISTANCE)
    a = sp.csr_matrix((d, (rows, indices.ravel())), shape=(n, n))
    g = a.maximum(a.T).tocsr()  # both directions carry the same (float64-computed) distance
    g.sum_duplicates()
    g.sort_indices()
    return sp.csr_matrix((g.data.astype(np.float32), g.indices.astype(np.int32), g.indptr.astype(np.int64)), shape=(n, n))


def knn_graph(
    x: np.ndarray,
    k: int = 3,
    *,
    method: str = "auto",
    seed: int = 0,
    threads: int = 1,
    n_candidates: int | None = None,
    ids: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> sp.csr_matrix:
    """Symmetric k-NN graph of the rows of ``x``: (N, N) CSR, float32 Euclidean distances, no self-loops.

    Every contig has at least ``k`` edges (more where it is another contig's neighbour). Identical
    rows are joined with distance ``MIN_DISTANCE`` (see the module docstring). Options as in
    :func:`knn_search`; memory O(N·k) plus one block of the exact search (~50 MB) or the NN-descent
    index (~N·(D + 2·n_candidates)·4 bytes).

    Raises:
        GraphError: bad features or ``k`` (see :func:`knn_search`).
    """
    ind, dist = knn_search(x, k, method=method, seed=seed, threads=threads, n_candidates=n_candidates, ids=ids, progress=progress)
    g = symmetrize(ind, dist)
    n_zero = int((g.data <= MIN_DISTANCE).sum()) // 2
    if n_zero:
        log.warning("%d k-NN edge(s) join contigs with identical features (stored as distance %g)", n_zero, MIN_DISTANCE)
    return g


def edges(graph: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each undirected edge once: ``(i, j, distance)`` with ``i < j`` (three (E,) arrays)."""
    coo = sp.triu(graph, k=1, format="coo")
    return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data


def n_edges(graph: sp.spmatrix) -> int:
    """Number of undirected edges of a symmetric graph without self-loops."""
    return int(graph.nnz // 2)


def degree(graph: sp.csr_matrix) -> np.ndarray:
    """(N,) int64 number of edges per contig."""
    return np.diff(graph.indptr).astype(np.int64)


# ---------------------------------------------------------------------------------------- refine
@dataclass(frozen=True, eq=False)
class Refined:
    """A refined graph and what each refinement step did.

    Attributes:
        graph: (N, N) CSR float32 distances, symmetric: the k-NN graph without the cut edges.
        seeds: (N,) int32 seed cluster per contig (DBSCAN), ``-1`` = not in a seed cluster.
        labels: (N,) int32 label per contig after propagation, ``-1`` = not reached from any seed.
        counts: numbers per step: ``n_contigs``, ``edges_knn``, ``contigs_with_edge_knn``,
            ``seed_clusters``, ``seeded_contigs``, ``labelled_contigs``, ``propagation_rounds``,
            ``edges_after_distance_cut``, ``edges_after_label_cut`` (= ``edges``), ``contigs_with_edge``.
        params: the parameters used, with ``eps`` and ``max_distance`` resolved to distances.
        knn: the unrefined (N, N) k-NN graph, or ``None``.
        ids_hash: hash of the contig ids the graph belongs to (set by :func:`load_graph`), or ``""``.
    """

    graph: sp.csr_matrix
    seeds: np.ndarray
    labels: np.ndarray
    counts: dict[str, Any]
    params: dict[str, Any]
    knn: sp.csr_matrix | None = None
    ids_hash: str = ""

    @property
    def n_contigs(self) -> int:
        return int(self.graph.shape[0])

    def summary(self) -> str:
        """One line: edges and contigs with an edge before and after refinement."""
        c = self.counts
        n = max(1, c["n_contigs"])
        return (
            f"{c['n_contigs']:,} contigs: {c['edges_knn']:,} k-NN edges -> {c['edges']:,} after refinement; "
            f"contigs with >= 1 edge {c['contigs_with_edge_knn'] / n:.1%} -> {c['contigs_with_edge'] / n:.1%}; "
            f"{c['seed_clusters']:,} seed clusters ({c['seeded_contigs'] / n:.1%} of contigs), "
            f"{c['labelled_contigs'] / n:.1%} labelled"
        )


def _check_graph(graph: sp.spmatrix) -> sp.csr_matrix:
    if not sp.issparse(graph) or graph.ndim != 2 or graph.shape[0] != graph.shape[1]:
        raise GraphError(f"graph must be a square scipy.sparse matrix, got {type(graph).__name__} {getattr(graph, 'shape', '')}")
    g = sp.csr_matrix(graph, dtype=np.float32)
    g.sum_duplicates()
    g.sort_indices()
    if g.nnz and (not np.isfinite(g.data).all() or (g.data <= 0).any()):
        raise GraphError("graph distances must be finite and > 0 (zero distances are stored as MIN_DISTANCE); build it with knn_graph")
    if g.diagonal().any():
        raise GraphError("graph has self-loops; build it with knn_graph")
    if (g != g.T).nnz:
        raise GraphError("graph is not symmetric; build it with knn_graph or symmetrize()")
    return g


def _keep(g: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """The graph with only the stored entries where ``mask`` (aligned with ``g.data``) is true."""
    rows = np.repeat(np.arange(g.shape[0]), np.diff(g.indptr))
    indptr = np.zeros(g.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[mask], minlength=g.shape[0]), out=indptr[1:])
    return sp.csr_matrix((g.data[mask], g.indices[mask], indptr), shape=g.shape)


def nn_distance_quantile(graph: sp.csr_matrix, q: float) -> float:
    """The ``q`` quantile of the contigs' nearest-neighbour distances (contigs without edges skipped)."""
    g = sp.csr_matrix(graph)
    has = np.diff(g.indptr) > 0
    if not has.any():
        return 0.0
    nearest = np.minimum.reduceat(g.data, g.indptr[:-1][has]) if g.nnz else np.zeros(0)
    return float(np.quantile(nearest, q))


def seed_clusters(graph: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """(N,) int32 DBSCAN labels over the graph's distances (``-1`` = noise), numbered 0.. by first contig.

    Only the graph's edges are neighbourhoods (a precomputed sparse neighbourhood); the contig itself
    counts towards ``min_samples`` as in scikit-learn. With ``min_samples <= 2`` this equals the
    connected components of the edges ``<= eps`` (computed so; for ``min_samples == 1`` isolated
    contigs are their own clusters, for 2 they are noise); otherwise ``sklearn.cluster.DBSCAN``.
    """
    n = graph.shape[0]
    close = _keep(graph, graph.data <= eps)
    if min_samples <= 2:
        _, comp = connected_components(close, directed=False)
        if min_samples == 2:
            comp = np.where(np.diff(close.indptr) > 0, comp, -1)
    else:
        from sklearn.cluster import DBSCAN

        comp = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(close).labels_
    out = np.full(n, -1, dtype=np.int32)
    hit = comp >= 0
    if hit.any():
        _, first = np.unique(comp[hit], return_index=True)  # renumber by each cluster's first contig
        rank = np.empty(len(first), dtype=np.int32)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first), dtype=np.int32)
        out[hit] = rank[np.unique(comp[hit], return_inverse=True)[1]]
    return out


def propagate(graph: sp.csr_matrix, seeds: np.ndarray, *, max_iter: int = 1000,
              progress: Progress | None = None) -> tuple[np.ndarray, int]:
    """Spread seed labels along the graph to the unlabelled (``-1``) contigs; seeds never change.

    Synchronous rounds: every unlabelled contig with labelled neighbours takes the label held by
    most of them, ties broken by the smaller summed distance, then the smaller label. Stops when a
    round labels nothing (at most ``max_iter`` rounds); contigs in parts of the graph without any seed
    stay ``-1``. Deterministic; O(edges) per round.

    Returns:
        ((N,) int32 labels, number of rounds that labelled something).
    """
    labels = np.asarray(seeds, dtype=np.int32).copy()
    rows = np.repeat(np.arange(graph.shape[0], dtype=np.int64), np.diff(graph.indptr))
    cols, dist = graph.indices.astype(np.int64), graph.data.astype(np.float64)
    rounds = 0
    for it in range(max_iter):
        m = (labels[rows] < 0) & (labels[cols] >= 0)
        if not m.any():
            break
        r, lab, d = rows[m], labels[cols[m]], dist[m]
        o = np.lexsort((lab, r))
        r, lab, d = r[o], lab[o], d[o]
        start = np.flatnonzero(np.r_[True, (r[1:] != r[:-1]) | (lab[1:] != lab[:-1])])
        votes = np.diff(np.r_[start, len(r)])
        total = np.add.reduceat(d, start)
        gr, gl = r[start], lab[start]
        best = np.lexsort((gl, total, -votes, gr))
        best = best[np.r_[True, gr[best][1:] != gr[best][:-1]]]
        labels[gr[best]] = gl[best]
        rounds = it + 1
        if progress is not None:
            progress(int((labels >= 0).sum()), len(labels))
    return labels, rounds


def refine(
    graph: sp.spmatrix,
    *,
    eps: float | None = None,
    eps_quantile: float = EPS_QUANTILE,
    min_samples: int = MIN_SAMPLES,
    max_distance: float | None = None,
    max_distance_quantile: float | None = MAX_DISTANCE_QUANTILE,
    keep_unlabelled: bool = False,
    max_iter: int = 1000,
    progress: Progress | None = None,
) -> Refined:
    """Prune a k-NN graph to edges that join contigs of the same (putative) genome.

    (a) Seed clusters by DBSCAN over the graph (:func:`seed_clusters`) with radius ``eps``;
    (b) the edges longer than ``max_distance`` are removed; (c) the seed labels are propagated along
    the remaining edges (:func:`propagate`); (d) the edges whose ends got different labels are
    removed, as are edges between two unlabelled contigs unless ``keep_unlabelled``.

    Args:
        graph: (N, N) symmetric CSR of distances (> 0) without self-loops, from :func:`knn_graph`.
        eps: seed radius in distance units; default: the ``eps_quantile`` quantile of the contigs'
            nearest-neighbour distances (with ``min_samples=2`` about that share of contigs are seeded).
        min_samples: DBSCAN core-point threshold, the contig itself included.
        max_distance: remove edges longer than this; default: the ``max_distance_quantile`` quantile
            of the graph's edge distances, or no cut when that is ``None``.
        keep_unlabelled: keep edges between contigs that no seed label reached.
        max_iter: cap on propagation rounds.
        progress: ``progress(labelled_contigs, N)`` after each propagation round.

    Returns:
        :class:`Refined` (pruned graph, seeds, labels, counts, resolved params, input graph).

    Raises:
        GraphError: the graph is not square/symmetric, has self-loops or distances <= 0, or
            ``eps``/``eps_quantile``/``min_samples``/``max_distance`` are out of range.
    """
    g = _check_graph(graph)
    n = g.shape[0]
    if not 0 < eps_quantile <= 1:
        raise GraphError(f"eps_quantile must be in (0, 1], got {eps_quantile}")
    if max_distance_quantile is not None and not 0 < max_distance_quantile <= 1:
        raise GraphError(f"max_distance_quantile must be in (0, 1], got {max_distance_quantile}")
    if eps is not None and not eps > 0:
        raise GraphError(f"eps must be > 0, got {eps}")
    if max_distance is not None and not max_distance > 0:
        raise GraphError(f"max_distance must be > 0, got {max_distance}")
    if isinstance(min_samples, bool) or int(min_samples) != min_samples or min_samples < 1:
        raise GraphError(f"min_samples must be an integer >= 1, got {min_samples!r}")
    eps_used = float(eps) if eps is not None else nn_distance_quantile(g, eps_quantile)
    if max_distance is not None:
        cut = float(max_distance)
    elif max_distance_quantile is not None and g.nnz:
        cut = float(np.quantile(g.data, max_distance_quantile))
    else:
        cut = float("inf")

    seeds = seed_clusters(g, eps_used, int(min_samples))
    short = _keep(g, g.data <= cut)
    labels, rounds = propagate(short, seeds, max_iter=max_iter, progress=progress)
    rows = np.repeat(np.arange(n), np.diff(short.indptr))
    li, lj = labels[rows], labels[short.indices]
    same = (li == lj) & ((li >= 0) | keep_unlabelled)
    pruned = _keep(short, same)

    counts: dict[str, Any] = {
        "n_contigs": int(n),
        "edges_knn": n_edges(g),
        "contigs_with_edge_knn": int((degree(g) > 0).sum()),
        "seed_clusters": int(seeds.max() + 1) if n else 0,
        "seeded_contigs": int((seeds >= 0).sum()),
        "labelled_contigs": int((labels >= 0).sum()),
        "propagation_rounds": int(rounds),
        "edges_after_distance_cut": n_edges(short),
        "edges_after_label_cut": n_edges(pruned),
        "edges": n_edges(pruned),
        "contigs_with_edge": int((degree(pruned) > 0).sum()),
    }
    params = {
        "eps": eps_used, "eps_quantile": None if eps is not None else eps_quantile, "min_samples": int(min_samples),
        "max_distance": None if cut == float("inf") else cut,
        "max_distance_quantile": None if max_distance is not None else max_distance_quantile,
        "keep_unlabelled": bool(keep_unlabelled),
    }
    log.info("refine: eps=%.4g, max_distance=%s: %s", eps_used, params["max_distance"], counts)
    return Refined(graph=pruned, seeds=seeds, labels=labels, counts=counts, params=params, knn=g)


def unrefined(graph: sp.spmatrix) -> Refined:
    """The k-NN graph as a :class:`Refined` with no edge removed (refinement switched off, for ablations):
    every contig unseeded and unlabelled (-1), counts with the same keys as :func:`refine`'s."""
    g = _check_graph(graph)
    n = g.shape[0]
    edges, with_edge = n_edges(g), int((degree(g) > 0).sum())
    counts: dict[str, Any] = {
        "n_contigs": int(n), "edges_knn": edges, "contigs_with_edge_knn": with_edge, "seed_clusters": 0,
        "seeded_contigs": 0, "labelled_contigs": 0, "propagation_rounds": 0, "edges_after_distance_cut": edges,
        "edges_after_label_cut": edges, "edges": edges, "contigs_with_edge": with_edge,
    }
    none = np.full(n, -1, dtype=np.int32)
    return Refined(graph=g, seeds=none, labels=none.copy(), counts=counts, params={"refine": False}, knn=g)


# ----------------------------------------------------------------------------------- save / load
def _csr_arrays(prefix: str, g: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {f"{prefix}_data": g.data.astype(np.float32), f"{prefix}_indices": g.indices.astype(np.int32),
            f"{prefix}_indptr": g.indptr.astype(np.int64)}


def save_graph(path: str | os.PathLike[str], refined: Refined, *, ids_hash: str) -> None:
    """Write ``refined`` (pruned and k-NN graphs, seeds, labels, counts, params) to one ``.npz``, atomically.

    ``ids_hash`` is the hash of the contig ids (``Contigs.ids_hash``) the graph's rows follow;
    :func:`load_graph` checks it.
    """
    arrays: dict[str, np.ndarray] = {
        "format": np.array(GRAPH_FORMAT), "ids_hash": np.array(ids_hash), "n": np.array(refined.n_contigs),
        "seeds": refined.seeds.astype(np.int32), "labels": refined.labels.astype(np.int32),
        "counts": np.array(json.dumps(refined.counts)), "params": np.array(json.dumps(refined.params)),
        **_csr_arrays("graph", refined.graph),
    }
    if refined.knn is not None:
        arrays.update(_csr_arrays("knn", refined.knn))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(path, buf.getvalue())


def load_graph(path: str | os.PathLike[str], *, ids_hash: str | None = None) -> Refined:
    """Read a graph written by :func:`save_graph`; with ``ids_hash``, check it belongs to those contigs.

    Raises:
        InputFileError: the file does not exist.
        GraphError: the file is not a deepmetabin graph (or is corrupt, or of another format version).
        RunFolderError: ``ids_hash`` is given and differs from the one stored in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: graph file not found; build it with `deepmetabin graph --run DIR`")
    try:
        with np.load(path, allow_pickle=False) as z:
            f = {name: z[name] for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GraphError(f"{path}: not a readable graph file ({exc}); build it again with `deepmetabin graph`") from None
    need = {"format", "ids_hash", "n", "seeds", "labels", "counts", "params", "graph_data", "graph_indices", "graph_indptr"}
    if not need <= f.keys():
        raise GraphError(f"{path}: not a deepmetabin graph (missing {sorted(need - f.keys())}); build it again with `deepmetabin graph`")
    if int(f["format"]) != GRAPH_FORMAT:
        raise GraphError(f"{path}: graph format {int(f['format'])}, this version reads {GRAPH_FORMAT}; build it again with `deepmetabin graph`")
    stored = str(f["ids_hash"])
    if ids_hash is not None and stored != ids_hash:
        raise RunFolderError(
            f"{path}: the graph belongs to other contigs (ids hash {stored}, expected {ids_hash}); "
            "build it again with `deepmetabin graph`"
        )
    n = int(f["n"])

    def csr(prefix: str) -> sp.csr_matrix:
        return sp.csr_matrix((f[f"{prefix}_data"], f[f"{prefix}_indices"], f[f"{prefix}_indptr"]), shape=(n, n))

    return Refined(
        graph=csr("graph"), seeds=f["seeds"], labels=f["labels"], counts=json.loads(str(f["counts"])),
        params=json.loads(str(f["params"])), knn=csr("knn") if "knn_data" in f else None, ids_hash=stored,
    )

