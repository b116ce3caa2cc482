"""GMM, constrained k-means with cannot-links, small-bin removal."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from deepmetabin.cluster import cannot_link_violations, constrained_kmeans, drop_small, gmm, split_contaminated, _marker_matrix


def blobs(n_per=100, k=3, d=4, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(k, d))
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + rng.normal(0, spread, size=(len(labels), d))), labels


def test_gmm_recovers_separated_blobs():
    x, labels = blobs()
    assert adjusted_rand_score(labels, gmm(x, 3, seed=1)) == 1.0
    assert len(set(gmm(x, 10_000))) <= len(x)  # k capped at N


def merged_cluster_with_markers(seed=0, n_markers=40):
    """Two genomes merged in one cluster; every marker once per genome, plus noise in the latent."""
    rng = np.random.default_rng(seed)
    x, genome = blobs(n_per=120, k=2, d=4, spread=1.4, seed=seed)  # overlapping
    ids = np.array([f"c{i}" for i in range(len(x))])
    rows = []
    for m in range(n_markers):
        for g in (0, 1):
            rows.append((ids[rng.choice(np.flatnonzero(genome == g))], f"M{m}"))
    hits = pd.DataFrame(rows, columns=["contig", "marker"]).drop_duplicates()
    return x, genome, ids, hits


def test_constrained_kmeans_never_breaks_a_cannot_link():
    x, genome, ids, hits = merged_cluster_with_markers()
    row_of = {c: i for i, c in enumerate(ids)}
    carriers, m = _marker_matrix(np.arange(len(x)), hits, row_of)
    parts = constrained_kmeans(x, 2, m, carriers, seed=0)
    assert cannot_link_violations(parts, hits, ids) == 0
    assert cannot_link_violations(np.zeros(len(x), int), hits, ids) > 0  # the merged cluster violated them
    assert adjusted_rand_score(genome, parts) > 0.5


def test_three_copies_on_one_contig_set_grows_k_until_feasible():
    x, _ = blobs(n_per=20, k=1, d=2)
    ids = np.array([f"c{i}" for i in range(len(x))])
    # contigs 0,1,2 pairwise share markers (a triangle): two parts cannot separate them
    hits = pd.DataFrame({"contig": ["c0", "c1", "c1", "c2", "c2", "c0"], "marker": ["A", "A", "B", "B", "C", "C"]})
    carriers, m = _marker_matrix(np.arange(len(x)), hits, {c: i for i, c in enumerate(ids)})
    parts = constrained_kmeans(x, 2, m, carriers)
    assert len({parts[0], parts[1], parts[2]}) == 3
    assert cannot_link_violations(parts, hits, ids) == 0


def test_split_contaminated_only_touches_flagged_bins():
    x, genome, ids, hits = merged_cluster_with_markers()
    labels = np.zeros(len(x), dtype=int)
    labels[:10] = 1  # a second, clean bin
    quality = pd.DataFrame({"bin": [0, 1], "completeness": [99.0, 20.0], "contamination": [95.0, 0.0]})
    new = split_contaminated(x, labels, hits, quality, ids)
    assert set(new[:10]) == {1}
    assert len(set(new[10:])) == 2
    assert cannot_link_violations(np.where(labels == 1, -1, new), hits, ids) == 0
    clean = quality.assign(contamination=[1.0, 0.0])
    assert np.array_equal(split_contaminated(x, labels, hits, clean, ids), labels)


def test_drop_small_unbins_and_renumbers_by_size():
    labels = np.array([0, 0, 1, 2, 2, 2, -1])
    lengths = np.array([150_000, 100_000, 50_000, 100_000, 100_000, 100_000, 5])
    assert drop_small(labels, lengths).tolist() == [1, 1, -1, 0, 0, 0, -1]
