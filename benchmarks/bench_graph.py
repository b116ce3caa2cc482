"""Benchmarks of deepmetabin.graph: edge quality on real data, recall of the approximate index, scale.

usage:
  python benchmarks/bench_graph.py quality [--datasets small medium] [--ks 3 5 10] [--eps-quantiles ...]
  python benchmarks/bench_graph.py weights [--datasets small medium]
  python benchmarks/bench_graph.py recall  [--n 100000 | --dataset medium] [--ks 3 5 10] [--threads 2]
  python benchmarks/bench_graph.py scale   [--n 10000 100000] [--threads 2]   (one process per size)

quality: for each dataset (shared/bench/<name>, features built with the library, see graph_data.py)
  and each k, edge precision (share of edges whose two contigs come from the same genome; the truth
  is used only here), edges and share of contigs with >= 1 edge, before and after ``refine``.
  "species" precision counts an edge between two strains of one species as correct.
weights: k-NN edge precision for other tnf_weight / depth_weight of ``features``.
recall: recall@k of the approximate path (pynndescent) against the exact k-NN, on synthetic data.
scale: wall time and peak RSS of knn_graph + refine on synthetic features: a Gaussian mixture of 500
  clusters in 110 dimensions (centres N(0, 0.9/110) per dimension, isotropic within-cluster noise
  sd 0.03 per dimension; a hard case for an approximate index: no low-dimensional structure).
Prints markdown tables. Timings are wall-clock on whatever machine runs it (here: 2 shared cores).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deepmetabin import graph as G  # noqa: E402


# ------------------------------------------------------------------------------------------ quality
def species_of(name: str, genomes: dict[str, str]) -> str:
    return genomes.get(name, name.split("_")[0])


def strain_genomes(bench: Path, present: set[str], min_ani: float = 0.99) -> set[str]:
    """Genomes of the dataset with another genome of the dataset at estimated ANI >= ``min_ani``."""
    import pandas as pd

    sim = pd.read_csv(bench / "build" / "dev_genome_similarity.tsv", sep="\t")
    sim = sim[(sim["ani_est"] >= min_ani) & sim["a"].isin(present) & sim["b"].isin(present)]
    return set(sim["a"]) | set(sim["b"])


def score(graph, truth: np.ndarray, species: np.ndarray, strain: np.ndarray | None = None) -> dict[str, float]:
    """Edge precision (genome, species, and without strain-group contigs), edges, share of contigs with an edge."""
    i, j, _ = G.edges(graph)
    n = graph.shape[0]
    clear = ~(strain[i] | strain[j]) if strain is not None else np.ones(len(i), bool)
    return {
        "clear_precision": float((truth[i] == truth[j])[clear].mean()) if clear.any() else float("nan"),
        "clear_edges": int(clear.sum()),
        "edges": len(i),
        "precision": float((truth[i] == truth[j]).mean()) if len(i) else float("nan"),
        "species_precision": float((species[i] == species[j]).mean()) if len(i) else float("nan"),
        "with_edge": float((G.degree(graph) > 0).sum() / n),
    }


def load_scored(name: str, **weights: float):
    import pandas as pd

    import graph_data

    x, ids, truth = graph_data.load(name, **weights)
    table = pd.read_csv(graph_data.BENCH / name / "genomes.tsv", sep="\t")
    genomes = dict(zip(table["genome"], table["species"]))
    species = np.array([species_of(t, genomes) for t in truth], dtype=object)
    strains = strain_genomes(graph_data.BENCH, set(truth))
    strain = np.array([t in strains for t in truth])
    return x, truth, species, strain


def cmd_quality(args: argparse.Namespace) -> None:
    print("| dataset | k | eps quantile (eps) | min_samples | seed clusters | edges k-NN -> refined | precision k-NN -> refined | "
          "species precision k-NN -> refined | precision without strain groups k-NN -> refined | contigs with >= 1 edge k-NN -> refined |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        x, truth, species, strain = load_scored(name)
        for k in args.ks:
            g = G.knn_graph(x, k, threads=args.threads)
            b = score(g, truth, species, strain)
            for q in args.eps_quantiles:
                for ms in args.min_samples:
                    r = G.refine(g, eps_quantile=q, min_samples=ms)
                    a = score(r.graph, truth, species, strain)
                    print(
                        f"| {name} | {k} | {q} ({r.params['eps']:.3f}) | {ms} | {r.counts['seed_clusters']} | "
                        f"{b['edges']:,} -> {a['edges']:,} | {b['precision']:.3f} -> {a['precision']:.3f} | "
                        f"{b['species_precision']:.4f} -> {a['species_precision']:.4f} | "
                        f"{b['clear_precision']:.3f} -> {a['clear_precision']:.3f} | "
                        f"{b['with_edge']:.1%} -> {a['with_edge']:.1%} |",
                        flush=True,
                    )


def cmd_weights(args: argparse.Namespace) -> None:
    print("| dataset | tnf_weight / depth_weight | k | k-NN precision | species precision | refined precision (defaults) | refined with >= 1 edge |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets:
        for dw in args.depth_weights:
            x, truth, species, _ = load_scored(name, tnf_weight=round(1 - dw, 3), depth_weight=dw)
            for k in args.ks:
                g = G.knn_graph(x, k, threads=args.threads)
                b, a = score(g, truth, species), score(G.refine(g).graph, truth, species)
                print(f"| {name} | {1 - dw:.2f} / {dw:.2f} | {k} | {b['precision']:.3f} | {b['species_precision']:.4f} | "
                      f"{a['precision']:.3f} | {a['with_edge']:.1%} |", flush=True)


# ---------------------------------------------------------------------------------- synthetic data
def synthetic(n: int, dim: int = 110, clusters: int = 500, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 Gaussian mixture (see module docstring), generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=np.sqrt(0.9 / dim), size=(clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        lab = rng.integers(0, clusters, e - s)
        out[s:e] = centres[lab] + rng.normal(scale=0.03, size=(e - s, dim)).astype(np.float32)
    return out


def exact_neighbours(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(q, k) exact neighbour indices of the rows ``queries`` (themselves excluded), by float64 distances."""
    out = np.empty((len(queries), k), dtype=np.int64)
    x64 = x.astype(np.float64)
    sq = (x64**2).sum(1)
    step = max(1, (1 << 24) // len(x))
    for s in range(0, len(queries), step):
        q = queries[s : s + step]
        d2 = sq[q][:, None] - 2 * x64[q] @ x64.T + sq[None, :]
        d2[np.arange(len(q)), q] = np.inf
        part = np.argpartition(d2, k, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d2, part, 1), axis=1)
        out[s : s + step] = np.take_along_axis(part, order, 1)
    return out


def cmd_recall(args: argparse.Namespace) -> None:
    if args.dataset:
        import graph_data

        x = graph_data.load(args.dataset)[0]
    else:
        x = synthetic(args.n)
    n = len(x)
    rng = np.random.default_rng(1)
    queries = np.sort(rng.choice(n, size=min(n, args.queries), replace=False))
    print(f"| data | N | k | NN-descent candidates | recall@k ({len(queries)} random contigs vs exact) | search s |")
    print("|---|---|---|---|---|---|")
    for k in args.ks:
        truth = exact_neighbours(x, queries, k)
        for nc in args.candidates or [G.default_candidates(k)]:
            t0 = time.perf_counter()
            ind, _ = G.knn_search(x, k, method="approx", n_candidates=nc, threads=args.threads)
            secs = time.perf_counter() - t0
            rec = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ind[queries], truth)])
            print(f"| {args.dataset or 'synthetic'} | {n:,} | {k} | {nc} | {rec:.4f} | {secs:.1f} |", flush=True)


# ----------------------------------------------------------------------------------------- scale
def cmd_scale_one(args: argparse.Namespace) -> None:
    """One size in this process (peak RSS is per process): print one JSON line."""
    x = synthetic(args.n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    g = G.knn_graph(x, args.k, method=args.method, threads=args.threads)
    t1 = time.perf_counter()
    r = G.refine(g)
    t2 = time.perf_counter()
    print(json.dumps({
        "n": args.n, "k": args.k, "method": args.method if args.method != "auto" else ("exact" if args.n <= G.EXACT_MAX else "approx"),
        "build_s": round(t1 - t0, 1), "refine_s": round(t2 - t1, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "data_rss_mb": round(rss0 / 1024),
        "edges": r.counts["edges_knn"], "edges_refined": r.counts["edges"],
    }))


def cmd_scale(args: argparse.Namespace) -> None:
    print("| N x 110 | k | path | knn_graph s | refine s | peak RSS MB (process) |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        cmd = [sys.executable, __file__, "scale-one", "--n", str(n), "--k", str(args.k), "--threads", str(args.threads), "--method", args.method]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"| {n:,} | {r['k']} | {r['method']} | {r['build_s']} | {r['refine_s']} | {r['peak_rss_mb']:,} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--datasets", nargs="+", default=["small", "medium"])
    q.add_argument("--ks", nargs="+", type=int, default=[3, 5, 10])
    q.add_argument("--eps-quantiles", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.25])
    q.add_argument("--min-samples", nargs="+", type=int, default=[2])
    q.add_argument("--threads", type=int, default=2)
    w = sub.add_parser("weights")
    w.add_argument("--datasets", nargs="+", default=["small", "medium"])
    w.add_argument("--depth-weights", nargs="+", type=float, default=[0.5, 0.7, 0.8, 0.9])
    w.add_argument("--ks", nargs="+", type=int, default=[3])
    w.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("recall")
    r.add_argument("--n", type=int, default=100_000)
    r.add_argument("--dataset", default=None, help="a shared/bench dataset instead of synthetic data")
    r.add_argument("--ks", nargs="+", type=int, default=[3, 5, 10])
    r.add_argument("--candidates", nargs="*", type=int, default=None)
    r.add_argument("--queries", type=int, default=2000)
    r.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("scale")
    s.add_argument("--n", nargs="+", type=int, default=[10_000, 100_000])
    s.add_argument("--k", type=int, default=3)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--method", default="auto")
    s1 = sub.add_parser("scale-one")
    s1.add_argument("--n", type=int, required=True)
    s1.add_argument("--k", type=int, default=3)
    s1.add_argument("--threads", type=int, default=2)
    s1.add_argument("--method", default="auto")
    args = ap.parse_args()
    {"quality": cmd_quality, "weights": cmd_weights, "recall": cmd_recall, "scale": cmd_scale, "scale-one": cmd_scale_one}[args.cmd](args)


if __name__ == "__main__":
    main()
