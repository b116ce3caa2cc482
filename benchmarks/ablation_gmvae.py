"""Ablation of the GMVAE's neighbour (must-link) term, and training cost.

For each dataset and seed: features (library), refined k-NN graph (library defaults), GMVAE trained
with the default config and with ``neighbour_weight=0``; the latent means are clustered by a plain
GMM with K = the TRUE genome count (this isolates the latent space's quality from the K estimate:
the truth is used only here, to score, never to choose anything in the library). Prints a markdown
table (ARI, F1 by contigs of the GMM clusters, epochs, seconds per epoch, total training seconds).

usage: python benchmarks/ablation_gmvae.py small medium --seeds 0 1 2 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_data import BENCH, load  # noqa: E402

from deepmetabin.cluster import gmm  # noqa: E402
from deepmetabin.evaluate import labels_to_bins, score  # noqa: E402
from deepmetabin.graph import knn_graph, refine  # noqa: E402
from deepmetabin.train import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", nargs="+", type=float, default=[1.0, 0.0], help="neighbour_weight values to compare")
    args = ap.parse_args()
    print("| dataset | neighbour_weight | seed | ARI (GMM, K=true) | F1 contigs | epochs | s/epoch | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        x, ids, genome = load(name)
        k_true = len(set(genome))
        refined = refine(knn_graph(x, 3, threads=args.threads))
        truth = pd.DataFrame({"contig": ids.astype(str), "bin": genome.astype(str)})
        lengths = pd.read_csv(BENCH / name / "depth.tsv", sep="\t", usecols=[0, 1]).set_index("contigName")["contigLen"]
        for w in args.weights:
            for seed in args.seeds:
                t0 = time.perf_counter()
                m = train(x, refined.graph, TrainConfig(seed=seed, neighbour_weight=w, threads=args.threads))
                secs = time.perf_counter() - t0
                labels = gmm(m.transform(x), k_true, seed=seed)
                s = score(labels_to_bins(ids, labels), truth, lengths)
                ep = len(m.history)
                print(f"| {name} | {w:g} | {seed} | {adjusted_rand_score(genome, labels):.3f} | {s.f1:.3f} | {ep} | "
                      f"{m.history['seconds'].median():.2f} | {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
