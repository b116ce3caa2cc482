"""deepmetabin.graph: k-NN correctness, refinement on hand-built graphs, save/load, bad input, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmetabin import graph as G
from deepmetabin.errors import DeepMetaBinError, GraphError, InputFileError, RunFolderError


def blobs(n: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    return (c[rng.integers(0, centres, n)] + rng.normal(scale=0.3, size=(n, dim))).astype(np.float32)


def brute(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    ind = np.argsort(d, axis=1, kind="stable")[:, :k]
    return ind, np.take_along_axis(d, ind, 1)


def check_graph(g: sp.csr_matrix, n: int, k: int) -> None:
    assert isinstance(g, sp.csr_matrix) and g.shape == (n, n) and g.dtype == np.float32
    assert (g != g.T).nnz == 0, "not symmetric"
    assert not g.diagonal().any(), "self-loop"
    assert (g.data > 0).all()
    assert (G.degree(g) >= k).all()


# ------------------------------------------------------------------------------------------ k-NN
def test_exact_knn_equals_brute_force():
    x = blobs(400, 12, 6)
    ind, dist = G.knn_search(x, 5, method="exact")
    bind, bdist = brute(x, 5)
    assert np.array_equal(ind, bind)
    assert np.allclose(dist, bdist, rtol=1e-9)
    g = G.knn_graph(x, 5, method="exact")
    check_graph(g, 400, 5)
    rows = np.repeat(np.arange(400), 5)
    assert np.allclose(np.asarray(g[rows, bind.ravel()]).ravel(), bdist.ravel(), rtol=1e-6)
    assert G.n_edges(g) == len(G.edges(g)[0])


def test_exact_knn_blocks_and_smallest_n(monkeypatch):
    x = blobs(300, 5, 4, seed=3)
    monkeypatch.setattr(G, "_BLOCK_ELEMS", 300 * 7)  # 7 rows per block: block edges are exercised
    assert np.array_equal(G.knn_search(x, 3, method="exact")[0], brute(x, 3)[0])
    tiny = x[:5]  # N = k + 1: everyone is everyone's neighbour
    g = G.knn_graph(tiny, 4)
    check_graph(g, 5, 4)
    assert g.nnz == 20


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_knn_graph_is_symmetric_without_self_loops(n, dim, k, seed):
    k = min(k, n - 1)
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    check_graph(G.knn_graph(x, k), n, k)


def test_approximate_path_recall_and_determinism():
    x = blobs(3000, 20, 30, seed=1)
    exact, _ = G.knn_search(x, 5, method="exact")
    a1, d1 = G.knn_search(x, 5, method="approx", seed=7)
    recall = np.mean([len(np.intersect1d(p, q)) / 5 for p, q in zip(a1, exact)])
    assert recall >= 0.99
    bx = x.astype(np.float64)
    assert np.allclose(d1, np.linalg.norm(bx[a1] - bx[:, None, :], axis=2))  # distances are exact
    assert (a1 != np.arange(3000)[:, None]).all()
    a2, _ = G.knn_search(x, 5, method="approx", seed=7)
    assert np.array_equal(a1, a2)
    check_graph(G.knn_graph(x, 5, method="approx", seed=7), 3000, 5)


def test_approximate_path_on_few_contigs_searches_exactly():
    x = blobs(60, 4, 3)
    assert np.array_equal(G.knn_search(x, 3, method="approx")[0], brute(x, 3)[0])


def test_exact_graph_is_deterministic_and_reports_progress():
    x = blobs(500, 8, 5)
    calls = []
    g1 = G.knn_graph(x, 3, progress=lambda d, t: calls.append((d, t)))
    g2 = G.knn_graph(x, 3)
    assert (g1 != g2).nnz == 0 and calls[-1] == (500, 500)


def test_duplicate_rows_are_joined_with_min_distance():
    x = blobs(50, 4, 3)
    x[10] = x[20] = x[30] = x[5]  # four identical contigs
    g = G.knn_graph(x, 3)
    check_graph(g, 50, 3)
    dup = [5, 10, 20, 30]
    sub = g[dup][:, dup].toarray()
    assert (sub[~np.eye(4, dtype=bool)] == G.MIN_DISTANCE).all()  # stored, distinct from "no edge"


@pytest.mark.parametrize(
    "x, k, match",
    [
        (np.zeros((3, 4), np.float32), 3, "at least k \\+ 1 = 4 contigs"),
        (np.zeros((1, 4), np.float32), 1, "at least k \\+ 1 = 2 contigs, got 1"),
        (np.zeros((0, 4), np.float32), 3, "got 0"),
        (np.zeros(5, np.float32), 1, "2-d"),
        (np.zeros((5, 2), np.float32), 0, "k \\(neighbours per contig\\) must be an integer >= 1"),
    ],
)
def test_bad_knn_input(x, k, match):
    with pytest.raises(GraphError, match=match):
        G.knn_graph(x, k)


def test_nan_rows_are_named():
    x = blobs(20, 3, 2)
    x[4, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(GraphError, match="2 contig\\(s\\).*c4, c7") as err:
        G.knn_graph(x, 3, ids=[f"c{i}" for i in range(20)])
    assert isinstance(err.value, DeepMetaBinError)
    with pytest.raises(GraphError, match="method"):
        G.knn_graph(blobs(20, 3, 2), 3, method="fast")


# ---------------------------------------------------------------------------------------- refine
def graph_from_edges(n: int, edges: list[tuple[int, int, float]]) -> sp.csr_matrix:
    i, j, d = (np.array(v) for v in zip(*edges))
    a = sp.csr_matrix((np.r_[d, d].astype(np.float32), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    return a


def two_groups() -> sp.csr_matrix:
    """Two 5-cliques (short edges), one long bridge 4-5, and a chain 0 - 10 - 11 of long edges."""
    e = [(a, b, 0.1) for a in range(5) for b in range(a + 1, 5)]
    e += [(a, b, 0.12) for a in range(5, 10) for b in range(a + 1, 10)]
    e += [(4, 5, 0.5), (0, 10, 0.6), (10, 11, 0.7)]
    return graph_from_edges(12, e)


def test_refine_cuts_the_bridge_and_propagates():
    r = G.refine(two_groups(), eps=0.2)
    assert list(r.seeds) == [0] * 5 + [1] * 5 + [-1, -1]
    assert list(r.labels) == [0] * 5 + [1] * 5 + [0, 0]  # 10 and 11 reached (two rounds)
    assert r.graph[4, 5] == 0 and r.graph[5, 4] == 0  # the bridge is cut
    assert r.graph[0, 10] > 0 and r.graph[10, 11] > 0
    check_graph(r.graph, 12, 1)
    c = r.counts
    assert c["edges_knn"] == 23 and c["edges"] == 22 and c["seed_clusters"] == 2
    assert c["seeded_contigs"] == 10 and c["labelled_contigs"] == 12 and c["propagation_rounds"] == 2
    assert c["contigs_with_edge"] == 12 and r.params["eps"] == 0.2
    assert "23 k-NN edges -> 22" in r.summary()
    assert (r.knn != two_groups()).nnz == 0


def test_unrefined_keeps_every_edge_and_round_trips(tmp_path):
    r = G.unrefined(two_groups())
    assert (r.graph != two_groups()).nnz == 0 and r.graph[4, 5] > 0  # the bridge stays
    assert (r.labels == -1).all() and (r.seeds == -1).all()
    assert r.counts["edges"] == r.counts["edges_knn"] == 23 and r.params == {"refine": False}
    G.save_graph(tmp_path / "g.npz", r, ids_hash="h")
    back = G.load_graph(tmp_path / "g.npz", ids_hash="h")
    assert (back.graph != r.graph).nnz == 0 and back.counts == r.counts


def test_refine_distance_cut_and_unlabelled_edges():
    r = G.refine(two_groups(), eps=0.2, max_distance=0.65)
    assert r.labels[11] == -1 and r.labels[10] == 0  # 10-11 is longer than the cut: 11 is never reached
    assert r.graph[10, 11] == 0 and r.counts["edges_after_distance_cut"] == 22
    assert r.counts["contigs_with_edge"] == 11
    # without any seed every edge joins two unlabelled contigs: dropped unless keep_unlabelled
    assert G.refine(two_groups(), eps=0.01).counts["edges"] == 0
    assert G.refine(two_groups(), eps=0.01, keep_unlabelled=True).counts["edges"] == 23


def test_propagation_takes_the_majority_label_then_the_nearest():
    # 0,1 seeded A (cluster 0); 2,3 seeded B; 4 unlabelled: two A neighbours far, one B neighbour near
    g = graph_from_edges(6, [(0, 1, 0.1), (2, 3, 0.1), (4, 0, 0.5), (4, 1, 0.5), (4, 2, 0.3), (5, 3, 0.4), (5, 1, 0.4)])
    seeds = G.seed_clusters(g.tocsr(), 0.2, 2)
    labels, rounds = G.propagate(g.tocsr(), seeds)
    assert labels[4] == 0 and rounds == 1
    assert labels[5] == 0  # tie on votes and summed distance: smaller label
    r = G.refine(g, eps=0.2)
    assert r.graph[4, 2] == 0 and r.graph[4, 0] > 0


def test_dbscan_seeds_with_min_samples():
    # star: centre 0 with 3 close leaves (core with min_samples=4), plus a close pair 5-6 (not core)
    g = graph_from_edges(7, [(0, 1, 0.1), (0, 2, 0.1), (0, 3, 0.1), (3, 4, 0.9), (5, 6, 0.1), (4, 5, 0.9)]).tocsr()
    assert list(G.seed_clusters(g, 0.2, 4)) == [0, 0, 0, 0, -1, -1, -1]
    assert list(G.seed_clusters(g, 0.2, 2)) == [0, 0, 0, 0, -1, 1, 1]
    assert list(G.seed_clusters(g, 0.2, 1)) == [0, 0, 0, 0, 1, 2, 2]
    from sklearn.cluster import DBSCAN  # the components shortcut equals DBSCAN where it is used

    close = G._keep(g, g.data <= 0.2)
    ref = DBSCAN(eps=0.2, min_samples=2, metric="precomputed").fit(close).labels_
    assert list(ref) == list(G.seed_clusters(g, 0.2, 2))


def test_refine_default_eps_is_a_quantile_and_deterministic():
    x = blobs(600, 10, 6, seed=5)
    g = G.knn_graph(x, 3)
    r1, r2 = G.refine(g), G.refine(g)
    nearest = np.array([g.data[g.indptr[i]:g.indptr[i + 1]].min() for i in range(600)])
    assert r1.params["eps"] == pytest.approx(np.quantile(nearest, G.EPS_QUANTILE))
    assert (r1.graph != r2.graph).nnz == 0 and np.array_equal(r1.labels, r2.labels)
    check_graph(r1.graph, 600, 0)
    assert r1.counts["edges"] <= r1.counts["edges_knn"]


@pytest.mark.parametrize(
    "graph, kw, match",
    [
        (sp.csr_matrix(np.array([[0, 1.0], [2.0, 0]], np.float32)), {}, "not symmetric"),
        (sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0]], np.float32)), {}, "self-loops"),
        (sp.csr_matrix(np.array([[0, -1.0], [-1.0, 0]], np.float32)), {}, "> 0"),
        (np.ones((2, 2)), {}, "scipy.sparse"),
        (two_groups(), {"eps": 0}, "eps must be > 0"),
        (two_groups(), {"eps_quantile": 1.5}, "eps_quantile"),
        (two_groups(), {"min_samples": 0}, "min_samples"),
        (two_groups(), {"max_distance": -1}, "max_distance"),
    ],
)
def test_bad_refine_input(graph, kw, match):
    with pytest.raises(GraphError, match=match):
        G.refine(graph, **kw)


# ----------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_checks_ids_hash(tmp_path):
    r = G.refine(two_groups(), eps=0.2)
    path = tmp_path / "graph.npz"
    G.save_graph(path, r, ids_hash="abc123")
    assert [p.name for p in tmp_path.iterdir()] == ["graph.npz"]  # no temp file left
    back = G.load_graph(path, ids_hash="abc123")
    assert back.ids_hash == "abc123"
    assert (back.graph != r.graph).nnz == 0 and (back.knn != r.knn).nnz == 0
    assert np.array_equal(back.seeds, r.seeds) and np.array_equal(back.labels, r.labels)
    assert back.counts == r.counts and back.params == r.params
    with pytest.raises(RunFolderError, match="other contigs"):
        G.load_graph(path, ids_hash="other")
    with pytest.raises(InputFileError, match="not found"):
        G.load_graph(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(GraphError, match="not a readable graph"):
        G.load_graph(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(GraphError, match="not a deepmetabin graph"):
        G.load_graph(tmp_path / "other.npz")


# ------------------------------------------------------------------------------------------- CLI
def make_run(tmp_path, n=12):
    """A tiny run folder made by `deepmetabin features` from random contigs and a MetaBAT depth table."""
    from deepmetabin.cli import main

    rng = np.random.default_rng(0)
    seqs = {f"c{i}": "".join(rng.choice(list("ACGT"), size=int(rng.integers(1000, 3000)))) for i in range(n)}
    fasta = tmp_path / "contigs.fna"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in seqs.items()))
    depth = rng.gamma(2, 4, size=(n, 2)).round(3)
    lines = ["contigName\tcontigLen\ttotalAvgDepth\tS1.bam\tS1.bam-var\tS2.bam\tS2.bam-var"]
    for (cid, seq), row in zip(seqs.items(), depth):
        lines.append(f"{cid}\t{len(seq)}\t{row.sum():.3f}\t{row[0]}\t1.0\t{row[1]}\t1.0")
    table = tmp_path / "depth.tsv"
    table.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    assert main(["-q", "features", "--contigs", str(fasta), "--depth", str(table), "--out", str(run)]) == 0
    return run


def test_cli_graph_adds_graph_to_run_folder(tmp_path, capsys):
    import pandas as pd

    from deepmetabin import pipeline
    from deepmetabin.cli import main

    run = make_run(tmp_path)
    capsys.readouterr()
    assert main(["-q", "graph", "--run", str(run), "--k", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("graph: 12 contigs, k=3:") and len(out.splitlines()) == 1
    manifest = json.loads((run / "manifest.json").read_text())
    st = manifest["stages"]["graph"]
    assert st["status"] == "done" and st["params"]["k"] == 3 and st["counts"]["n_contigs"] == 12
    assert st["outputs"] == {"graph": "graph.npz", "labels": "graph_labels.tsv"}
    r = pipeline.load_run_graph(run)
    assert r.ids_hash == manifest["ids_hash"] and r.graph.shape == (12, 12)
    check_graph(r.knn, 12, 3)
    labels = pd.read_csv(run / "graph_labels.tsv", sep="\t")
    assert list(labels.columns) == ["contig", "seed", "label", "degree_knn", "degree"]
    assert list(labels["contig"]) == [f"c{i}" for i in range(12)]
    assert np.array_equal(labels["label"], r.labels)
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_cli_graph_bad_input(tmp_path, capsys):
    from deepmetabin.cli import main

    run = make_run(tmp_path, n=4)
    capsys.readouterr()
    assert main(["-q", "graph", "--run", str(run), "--k", "5"]) == 2
    err = capsys.readouterr().err
    assert "at least k + 1 = 6 contigs, got 4" in err and "Traceback" not in err
    assert not (run / "graph.npz").exists()
    assert main(["-q", "graph", "--run", str(tmp_path / "nowhere")]) == 2
    assert "not a deepmetabin run folder" in capsys.readouterr().err
