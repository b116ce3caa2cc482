"""GMM, constrained k-means with cannot-links, small-bin removal."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from deepmetabin.cluster import cannot_link_violations, constrained_kmeans, drop_small, gmm, split_contaminated


def blobs(n_per=100, k=3, d=4, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(k, d))
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + rng.normal(0, spread, size=(len(labels), d))), labels


def test_gmm_recovers_separated_blobs():
    x, labels = blobs()
    assert adjusted_rand_score(labels, gmm(x, 3, seed=1)) == 1.0
    assert len(set(gmm(x, 10_000))) <= len(x)  # k capped at N


def merged_cluster_with_links(seed=0, n_markers=40):
    """Two genomes merged in one cluster; every marker once per genome (a link between the two
    carriers), and the genomes overlap in the latent space."""
    rng = np.random.default_rng(seed)
    x, genome = blobs(n_per=120, k=2, d=4, spread=1.4, seed=seed)
    a = rng.choice(np.flatnonzero(genome == 0), size=n_markers)
    b = rng.choice(np.flatnonzero(genome == 1), size=n_markers)
    links = np.unique(np.sort(np.stack([a, b], 1), axis=1), axis=0)
    return x, genome, links


def test_constrained_kmeans_never_breaks_a_cannot_link():
    x, genome, links = merged_cluster_with_links()
    assert cannot_link_violations(np.zeros(len(x), int), links) == len(links)
    parts = constrained_kmeans(x, 2, links, seed=0)
    assert cannot_link_violations(parts, links) == 0
    assert adjusted_rand_score(genome, parts) > 0.5
    plain = constrained_kmeans(x, 2, np.zeros((0, 2), np.int64), seed=0)  # without links: plain k-means
    assert len(set(plain)) == 2


def test_triangle_of_links_grows_k_until_feasible():
    x, _ = blobs(n_per=20, k=1, d=2)
    links = np.array([[0, 1], [1, 2], [0, 2]])  # three contigs pairwise linked: two parts cannot hold them
    parts = constrained_kmeans(x, 2, links)
    assert len({parts[0], parts[1], parts[2]}) == 3
    assert cannot_link_violations(parts, links) == 0


def test_split_contaminated_only_touches_flagged_bins():
    x, genome, links = merged_cluster_with_links()
    labels = np.zeros(len(x), dtype=int)
    clean_rows = np.setdiff1d(np.arange(len(x)), links.ravel())[:10]
    labels[clean_rows] = 1  # a second, clean bin
    quality = pd.DataFrame({"bin": [0, 1], "completeness": [99.0, 20.0], "contamination": [95.0, 0.0]})
    new = split_contaminated(x, labels, links, quality)
    assert set(new[clean_rows]) == {1}
    assert len(set(np.delete(new, clean_rows))) == 2
    assert cannot_link_violations(new, links) == 0
    clean = quality.assign(contamination=[1.0, 0.0])
    assert np.array_equal(split_contaminated(x, labels, links, clean), labels)


def test_drop_small_unbins_and_renumbers_by_size():
    labels = np.array([0, 0, 1, 2, 2, 2, -1])
    lengths = np.array([150_000, 100_000, 50_000, 100_000, 100_000, 100_000, 5])
    assert drop_small(labels, lengths).tolist() == [1, 1, -1, 0, 0, 0, -1]


def test_split_kept_only_when_parts_differ_in_composition():
    x, genome, links = merged_cluster_with_links()
    rng = np.random.default_rng(3)
    labels = np.zeros(len(x), dtype=int)
    quality = pd.DataFrame({"bin": [0], "completeness": [99.0], "contamination": [95.0]})
    two_species = rng.normal(0, 1, size=(len(x), 10)) + 4.0 * genome[:, None]  # composition differs by genome
    strains = rng.normal(0, 1, size=(len(x), 10))  # one composition for both
    split = split_contaminated(x, labels, links, quality, composition=two_species)
    assert len(set(split)) == 2 and cannot_link_violations(split, links) == 0
    kept = split_contaminated(x, labels, links, quality, composition=strains)
    assert np.array_equal(kept, labels)


def test_strain_mixture_split_by_depth_when_depth_profiles_differ():
    x, genome, links = merged_cluster_with_links()
    rng = np.random.default_rng(4)
    labels = np.zeros(len(x), dtype=int)
    quality = pd.DataFrame({"bin": [0], "completeness": [99.0], "contamination": [95.0]})
    strains = rng.normal(0, 1, size=(len(x), 10))  # one composition for both genomes
    latent_noise = rng.normal(0, 1, size=x.shape)  # the latent space did not separate them either
    depth_apart = np.log(np.where(genome[:, None] == 0, [2.0, 10.0, 1.0], [9.0, 1.0, 4.0])) + rng.normal(0, 0.1, (len(x), 3))
    depth_same = np.log(np.full((len(x), 3), 5.0)) + rng.normal(0, 0.1, (len(x), 3))
    split = split_contaminated(latent_noise, labels, links, quality, composition=strains, depth=depth_apart,
                               min_depth_silhouette=0.5)
    assert len(set(split)) == 2 and cannot_link_violations(split, links) == 0
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(genome, split) > 0.9  # the depth split follows the genomes
    kept = split_contaminated(latent_noise, labels, links, quality, composition=strains, depth=depth_same,
                              min_depth_silhouette=0.5)
    assert np.array_equal(kept, labels)  # same depth: a strain mixture stays whole


def test_gmm_log_density_matches_sklearn():
    """The chunked torch E-step computes the same weighted log densities as scikit-learn's mixture."""
    import torch
    from sklearn.mixture import GaussianMixture

    from deepmetabin.cluster import _Mixture

    x, _ = blobs(n_per=200, k=4, d=6, spread=0.5, seed=3)
    ref = GaussianMixture(4, covariance_type="full", reg_covar=1e-4, random_state=0).fit(x)
    # sklearn's covariances already hold reg_covar: hand them over without adding it again
    mix = _Mixture(torch.tensor(ref.weights_), torch.tensor(ref.means_), torch.tensor(ref.covariances_), reg_covar=0.0)
    ours = mix.weighted_log_prob(torch.tensor(x, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours, ref._estimate_weighted_log_prob(x), rtol=1e-4, atol=1e-3)


def test_gmm_m_step_is_the_group_moments():
    """With hard responsibilities, the M-step gives each group's share, mean and covariance (+ reg)."""
    import torch

    from deepmetabin.cluster import _m_step

    x, labels = blobs(n_per=150, k=3, d=5, spread=0.7, seed=4)
    xt = torch.tensor(x - x.mean(0), dtype=torch.float32)
    weights, means, cov = _m_step(xt, lambda _i, xc: torch.nn.functional.one_hot(torch.tensor(labels[_i:_i + len(xc)]), 3).float(), 3, 0.0)
    for j in range(3):
        g = (x - x.mean(0))[labels == j]
        assert abs(float(weights[j]) - 1 / 3) < 1e-6
        np.testing.assert_allclose(means[j].numpy(), g.mean(0), atol=1e-5)
        np.testing.assert_allclose(cov[j].numpy(), np.cov(g.T, bias=True), atol=1e-4)


def test_gmm_fits_a_sample_and_reports_progress():
    """Above max_fit rows the mixture is fitted on a sample and still labels every row; progress per EM step."""
    x, labels = blobs(n_per=400, k=3, d=4, seed=5)
    calls = []
    out = gmm(x, 3, seed=0, max_fit=300, progress=lambda done, total: calls.append((done, total)))
    assert out.shape == (len(x),) and adjusted_rand_score(labels, out) == 1.0
    assert calls and calls[0] == (1, 200) and [c[0] for c in calls] == list(range(1, len(calls) + 1))
    np.testing.assert_array_equal(out, gmm(x, 3, seed=0, max_fit=300))  # seeded: same labels


# ------------------------------------------------------------------ fragments (real genomes and marker hits)
def _genome_graph(genome: np.ndarray, k: int = 3, *, seed: int = 0, cross: dict | None = None) -> sp.csr_matrix:
    """k-NN-like graph: each contig linked to ``k`` random contigs of its own group; ``cross`` maps a
    group to [(other group, probability), ...]: each edge of that group goes there with that probability."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for i, g in enumerate(genome):
        for _ in range(k):
            target, u = g, rng.random()
            for other, prob in (cross or {}).get(g, []):
                if u < prob:
                    target = other
                    break
                u -= prob
            rows.append(i)
            cols.append(rng.choice(np.flatnonzero(genome == target)))
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genome), len(genome)))


def _fragment_case():
    """S. suis cut into a marker-carrying core (cluster 0) and a marker-free part (cluster 2); H. pylori
    (cluster 1); the renamed S. suis copy (cluster 3)."""
    from markers_data import DUP, HPYLORI, SSUIS, data

    d = data()
    hits = d.hits["checkm_bacteria"]
    carriers = np.isin(d.contigs.ids, hits["contig"].unique())
    labels = np.select([d.genome == SSUIS, d.genome == HPYLORI, d.genome == DUP], [0, 1, 3]).astype(np.int64)
    ssuis = np.flatnonzero((d.genome == SSUIS) & ~carriers)
    labels[ssuis[: len(ssuis) // 2]] = 2
    return d, hits, labels


def test_a_marker_free_fragment_joins_the_genome_its_edges_point_to():
    from deepmetabin.cluster import merge_fragments
    from deepmetabin.quality import bin_quality

    d, hits, labels = _fragment_case()
    q = bin_quality(labels, hits, d.contigs).set_index("bin")
    assert q.loc[2, "completeness"] < 5 and q.loc[0, "completeness"] > 90  # the case is what it claims
    # edges follow the true genome (S. suis core and fragment are one genome to the graph)
    genome = np.where(labels == 2, 0, labels)
    out = merge_fragments(labels, _genome_graph(genome), hits, d.contigs)
    assert (out[labels == 2] == 0).all()
    assert (out[labels != 2] == labels[labels != 2]).all()  # nothing else moves
    # unbinned contigs stay unbinned, and do not count as a target
    labels_u = labels.copy()
    labels_u[labels == 0] = -1
    assert np.array_equal(merge_fragments(labels_u, _genome_graph(genome), hits, d.contigs), labels_u)


def test_a_fragment_of_another_genome_is_refused_by_its_markers():
    from deepmetabin.cluster import merge_fragments
    from deepmetabin.quality import bin_quality

    d, hits, labels = _fragment_case()
    labels[labels == 2] = 0
    # a third of the S. suis copy (with its markers) as a fragment whose edges all go to S. suis
    dup = np.flatnonzero(labels == 3)
    labels[dup[: len(dup) // 3]] = 4
    q = bin_quality(labels, hits, d.contigs).set_index("bin")
    assert 10 < q.loc[4, "completeness"] < 50
    genome = np.where(labels == 4, 0, labels)
    out = merge_fragments(labels, _genome_graph(genome), hits, d.contigs)
    assert np.array_equal(out, labels)
    # without the contamination check it would have joined
    loose = merge_fragments(labels, _genome_graph(genome), hits, d.contigs, max_added_contamination=1000)
    assert (loose[labels == 4] == 0).all()


def test_a_fragment_without_a_majority_target_or_across_groups_stays():
    from deepmetabin.cluster import merge_fragments

    d, hits, labels = _fragment_case()
    frag = labels == 2
    genome = np.where(frag, 0, labels)
    # a fragment with its own edges: 40 % of them leave, spread over three clusters (none gets half)
    g = _genome_graph(labels, cross={2: [(0, 0.15), (1, 0.15), (3, 0.1)]})
    assert np.array_equal(merge_fragments(labels, g, hits, d.contigs), labels)
    # all leaving edges go to S. suis, but they are 3 % of the fragment's edges: a separate cluster, loosely near
    g = _genome_graph(labels, cross={2: [(0, 0.03)]})
    assert np.array_equal(merge_fragments(labels, g, hits, d.contigs), labels)
    g = _genome_graph(labels, cross={2: [(0, 0.3)]})  # 30 %: it joins
    assert (merge_fragments(labels, g, hits, d.contigs)[frag] == 0).all()
    # groups: the fragment is in another sample than every other cluster -> its edges do not count
    groups = np.where(frag, "S2", "S1")
    assert np.array_equal(merge_fragments(labels, _genome_graph(genome), hits, d.contigs, groups=groups), labels)


def _island_case():
    """Half of S. suis' marker-free contigs wrongly in the H. pylori cluster (1); S. suis' core is cluster 0."""
    d, hits, labels = _fragment_case()
    island = labels == 2
    labels[island] = 1
    return d, hits, labels, island


def test_an_island_moves_to_the_cluster_its_edges_point_to():
    from deepmetabin.cluster import move_islands

    d, hits, labels, island = _island_case()
    genome = np.where(island, 0, labels)  # the graph follows the genomes: the island has no edge into H. pylori
    out = move_islands(labels, _genome_graph(genome), hits, d.contigs)
    assert (out[island] == 0).all()
    assert (out[~island] == labels[~island]).all()  # the cores stay
    # the same contigs linked to each other and (30 % of their edges) to H. pylori are no island: they stay
    g = _genome_graph(np.where(island, 2, labels), cross={2: [(1, 0.3)]})
    assert np.array_equal(move_islands(labels, g, hits, d.contigs), labels)
    # edges to unbinned contigs count in the total, not as a target: with S. suis unbinned nothing moves
    unbinned = labels.copy()
    unbinned[labels == 0] = -1
    assert np.array_equal(move_islands(unbinned, _genome_graph(genome), hits, d.contigs), unbinned)
    # across groups (samples) edges do not count
    groups = np.where(island, "S2", "S1")
    assert np.array_equal(move_islands(labels, _genome_graph(genome), hits, d.contigs, groups=groups), labels)


def test_bridges_are_the_edges_whose_removal_disconnects():
    from deepmetabin.cluster import _bridges, _undirected_edges

    # two triangles (0-1-2, 3-4-5) joined by the edge 2-3, a tail 5-6, and a square 7-8-9-10
    edges = [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (2, 3), (5, 6), (7, 8), (8, 9), (9, 10), (10, 7)]
    n = 11
    g = sp.coo_matrix((np.ones(len(edges)), tuple(np.array(edges).T)), shape=(n, n))
    a, b = _undirected_edges(g, n, None)
    br = _bridges(n, a, b, np.ones(len(a), bool))
    assert {(min(x, y), max(x, y)) for x, y in zip(a[br], b[br])} == {(2, 3), (5, 6)}
    assert br.sum() == 4  # both directions of each
    # min_side: 2-3 leaves 3 and 4 nodes on its sides, 5-6 leaves one (a pendant node)
    br = _bridges(n, a, b, np.ones(len(a), bool), min_side=2)
    assert {(min(x, y), max(x, y)) for x, y in zip(a[br], b[br])} == {(2, 3)}
    assert not _bridges(n, a, b, np.ones(len(a), bool), min_side=4).any()
    # edges left out of ``use`` are not there: without 0-1 and 1-2, the edge 2-0 is a bridge too
    use = ~np.isin(np.minimum(a, b) * n + np.maximum(a, b), [0 * n + 1, 1 * n + 2])
    br = _bridges(n, a, b, use)
    assert {(min(x, y), max(x, y)) for x, y in zip(a[br], b[br])} == {(0, 2), (2, 3), (5, 6)}


def test_an_island_tied_to_the_core_by_one_stray_edge_still_moves():
    from deepmetabin.cluster import move_islands

    d, hits, labels, island = _island_case()
    g = sp.lil_matrix(_genome_graph(np.where(island, 0, labels)))
    first_island, first_core = np.flatnonzero(island)[0], np.flatnonzero(labels == 1)[0]
    g[first_island, first_core] = 1.0  # one k-NN edge from the island into the H. pylori core
    out = move_islands(labels, g.tocsr(), hits, d.contigs)
    assert (out[island] == 0).all() and (out[~island] == labels[~island]).all()


def test_an_island_with_the_targets_markers_is_refused_and_the_core_never_moves():
    from deepmetabin.cluster import move_islands
    from deepmetabin.quality import bin_quality

    d, hits, labels = _fragment_case()
    labels[labels == 2] = 0
    # a third of the S. suis copy (with markers S. suis already has) inside H. pylori, its edges to S. suis
    dup = np.flatnonzero(labels == 3)
    moved = np.zeros(len(labels), bool)
    moved[dup[: len(dup) // 3]] = True
    labels[moved] = 1
    genome = np.where(moved, 0, labels)
    q = bin_quality(np.where(moved, 4, labels), hits, d.contigs).set_index("bin")
    assert q.loc[4, "completeness"] > 10  # the island carries markers
    before = bin_quality(labels, hits, d.contigs).set_index("bin").loc[0, "contamination"]
    out = move_islands(labels, _genome_graph(genome), hits, d.contigs)
    after = bin_quality(out, hits, d.contigs).set_index("bin").loc[0, "contamination"]
    assert after - before <= 5.0  # the bound holds for the sum of every island moved into S. suis
    carriers = np.isin(d.contigs.ids, hits["contig"].unique())
    assert (out[moved & carriers] == 1).sum() >= 0.5 * (moved & carriers).sum()  # most marker carriers refused
    loose = move_islands(labels, _genome_graph(genome), hits, d.contigs, max_added_contamination=1000)
    assert (loose[moved] == 0).all()
    # a cluster made only of contigs whose edges leave it: its largest component is its core and stays
    only = np.where(labels == 1, 0, labels)
    only[moved] = 1
    out = move_islands(only, _genome_graph(genome), hits, d.contigs, max_added_contamination=1000)
    assert (out == 1).sum() > 0


def test_gmm_survives_a_covariance_that_is_not_positive_definite():
    import torch

    from deepmetabin.cluster import _Mixture

    d = 3
    good = torch.eye(d, dtype=torch.float64)
    bad = torch.diag(torch.tensor([1.0, 0.5, -0.01], dtype=torch.float64))  # -0.01 + reg 1e-4 < 0
    m = _Mixture(torch.tensor([0.5, 0.5]), torch.zeros(2, d), torch.stack([good, bad]), reg_covar=1e-4)
    x = torch.randn(20, d)
    lp = m.weighted_log_prob(x)
    assert lp.shape == (20, 2) and torch.isfinite(lp).all()
    # the good component is untouched: its density is the standard normal's
    expected = np.log(0.5) - 0.5 * d * np.log(2 * np.pi) - 0.5 * np.log(1 + 1e-4) * d - 0.5 * (x.double() ** 2).sum(1) / (1 + 1e-4)
    assert np.allclose(lp[:, 0].double().numpy(), expected.numpy(), atol=1e-4)
    # and a fit with more components than distinct rows (tied points) ends with labels, no error
    rng = np.random.default_rng(0)
    x = np.repeat(rng.normal(size=(6, 4)), 30, axis=0).astype(np.float32)
    labels = gmm(x, 6, seed=0, init="k-means++")
    assert len(labels) == len(x) and len(np.unique(labels)) <= 6
