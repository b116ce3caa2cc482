"""Marker genes on the benchmark datasets: genome-count estimate, quality error vs truth, throughput.

usage: python benchmarks/bench_markers.py [--datasets small medium] [--gene-modes trained meta] [--threads 2] [--reuse]

For each dataset (shared/bench/<name>/contigs.fna.gz + truth.tsv) and gene-calling mode (``markers.GENE_MODES``:
models trained on the assembly by GC group, or Prodigal's meta mode):
  * throughput of gene calling and of the search (sc107 + checkm_bacteria, the `markers` stage default,
    then uni56 alone), wall and CPU seconds;
  * genome-count estimates (sc107, uni56; upper median as used, and alternatives) vs the true count;
  * completeness/contamination (checkm_bacteria) of bins made from the truth vs truth-based values:
      - "genome": each genome one bin;
      - "pair": genomes merged in pairs (sorted by name: 1+2, 3+4, ...);
      - "part": each genome cut to a random 40-95 % of its contigs (seed 1), to spread completeness;
      - "mix": each genome plus random contigs of the next genome worth 3-15 % of the bin bp (seed 2).
    completeness_truth = bp of the bin's main genome in the bin / bp of that genome in all contigs;
    contamination_truth (bp share, the issue's definition) = foreign bp / bin bp;
    contamination_truth (genome copies, CheckM's scale) = sum over foreign genomes of their bp in the bin /
      their bp in all contigs (a bin with two complete genomes is 100 % contaminated on this scale);
  * cannot-links (sc107): number of pairs, and the share joining two contigs of one genome (false links).
Hits are cached in benchmarks/work/ (`--reuse` skips the timed computation when the cache matches).
Prints markdown; copy it into benchmarks/RESULTS.md ("## Markers").
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deepmetabin import markers as M
from deepmetabin.contigs import read_contigs
from deepmetabin.quality import bin_quality

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(os.environ.get("DEEPMETABIN_BENCH", ROOT.parent / "shared" / "bench"))
WORK = ROOT / "benchmarks" / "work"


def read_truth(path: Path, ids: np.ndarray) -> np.ndarray:
    """(N,) genome id per contig (CAMI binning format), in the order of ``ids``."""
    rows = [l.split("\t")[:2] for l in path.read_text().splitlines() if l and not l.startswith("@")]
    return pd.Series(dict(rows)).loc[ids.astype(str)].to_numpy()


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def scenarios(genome: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Bin labels (object arrays, None = unbinned) per scenario, all derived from the truth."""
    names = sorted(set(genome))
    out = {"genome": genome.astype(object).copy()}
    pair = {g: f"{names[i - i % 2]}+{names[min(i - i % 2 + 1, len(names) - 1)]}" for i, g in enumerate(names)}
    out["pair"] = np.array([pair[g] for g in genome], dtype=object)
    rng = np.random.default_rng(1)
    part = np.full(len(genome), None, dtype=object)
    for g in names:
        rows = rng.permutation(np.flatnonzero(genome == g))
        keep = rng.uniform(0.40, 0.95)
        cum = np.cumsum(lengths[rows]) / lengths[rows].sum()
        part[rows[cum <= keep]] = g
    out["part"] = part
    rng = np.random.default_rng(2)
    mix = genome.astype(object).copy()
    for i, g in enumerate(names):
        donor = names[(i + 1) % len(names)]
        target = rng.uniform(0.03, 0.15)
        own = lengths[genome == g].sum()
        rows = rng.permutation(np.flatnonzero((genome == donor) & (mix == donor)))
        added = np.cumsum(lengths[rows])
        take = rows[added / (own + added) <= target]
        mix[take] = g
    out["mix"] = mix
    return out


def truth_quality(labels: np.ndarray, genome: np.ndarray, lengths: np.ndarray) -> pd.DataFrame:
    genome_bp = pd.Series(lengths).groupby(genome).sum()
    f = pd.DataFrame({"bin": labels, "genome": genome, "bp": lengths})
    f = f[f["bin"].notna()]
    rows = []
    for b, g in f.groupby("bin"):
        per = g.groupby("genome")["bp"].sum().sort_values(ascending=False)
        main, main_bp, total = per.index[0], per.iloc[0], per.sum()
        rows.append({
            "bin": b, "comp_truth": 100 * main_bp / genome_bp[main],
            "cont_share": 100 * (total - main_bp) / total,
            "cont_copies": 100 * sum(per[x] / genome_bp[x] for x in per.index[1:]),
        })
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["small", "medium"])
    ap.add_argument("--gene-modes", nargs="+", default=list(M.GENE_MODES), choices=M.GENE_MODES)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--reuse", action="store_true", help="reuse cached hits (no timing)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    WORK.mkdir(parents=True, exist_ok=True)
    thr, est, mae, links = [], [], [], []
    for name, mode in [(d, m) for d in args.datasets for m in args.gene_modes]:
        contigs = read_contigs(BENCH / name / "contigs.fna.gz")
        genome = read_truth(BENCH / name / "truth.tsv", contigs.ids)
        cache = WORK / f"markers_{name}_{mode}.tsv"
        sets = ("sc107", "checkm_bacteria", "uni56")
        key = M.cache_key(contigs, sets, gene_mode=mode)
        hits = None
        if args.reuse and cache.exists():
            k, h = M.read_markers(cache)
            hits = h if k == key else None
        if hits is None:
            genes, gw, gc = timed(lambda: M.call_genes(contigs, threads=args.threads, mode=mode))
            h2, sw, sc = timed(lambda: M.search_markers(genes, contigs, marker_sets=sets[:2], threads=args.threads))
            h1, uw, uc = timed(lambda: M.search_markers(genes, contigs, marker_sets=sets[2:], threads=args.threads))
            hits = {**h2, **h1}
            M.write_markers(cache, hits, key)
            mbp = contigs.total_bp / 1e6
            thr.append(
                f"| {name} | {mode} | {mbp:.1f} | {len(genes):,} | {args.threads} | {gw:.0f} / {gc:.0f} | {sw:.0f} / {sc:.0f} | "
                f"{mbp / ((gw + sw) / 60):.0f} | {mbp / ((gc + sc) / 60):.0f} | {uw:.0f} / {uc:.0f} |"
            )
        n_true = len(set(genome))
        for s in ("sc107", "uni56"):
            c = M.marker_counts(hits[s]).to_numpy()
            est.append(
                f"| {name} | {mode} | {s} | {n_true} | **{M.estimate_genomes(hits[s])}** | {np.median(c):.1f} | {c.mean():.1f} | "
                f"{np.percentile(c, 75):.1f} | {np.bincount(c).argmax()} | {len(c)} |"
            )
        for s in ("sc107", "uni56"):
            row = [f"| {name} | {mode} | {s} |"]
            for split in (False, True):
                cl = M.cannot_links(hits[s], contigs, split_genes=split)
                same = (genome[cl[:, 0]] == genome[cl[:, 1]]).sum()
                row.append(f" {len(cl):,} | {same:,} ({100 * same / max(len(cl), 1):.1f} %) |")
            links.append("".join(row))
        for scen, labels in scenarios(genome, contigs.lengths).items():
            q = bin_quality(labels, hits["checkm_bacteria"], contigs).merge(truth_quality(labels, genome, contigs.lengths), on="bin")
            big = q[q["comp_truth"] > 50]
            mae.append(
                f"| {name} | {mode} | {scen} | {len(big)} | {np.abs(big.completeness - big.comp_truth).mean():.1f} | "
                f"{np.abs(big.contamination - big.cont_share).mean():.1f} | {np.abs(big.contamination - big.cont_copies).mean():.1f} | "
                f"{(big.completeness - big.comp_truth).max():+.1f} / {(big.completeness - big.comp_truth).min():+.1f} | "
                f"{(big.contamination - big.cont_copies).abs().max():.1f} |"
            )
            q.to_csv(WORK / f"quality_{name}_{mode}_{scen}.tsv", sep="\t", index=False, float_format="%.2f")
    if thr:
        print("| dataset | gene calling | Mbp | genes | threads | genes wall / CPU s | search sc107+checkm wall / CPU s | Mbp/min (wall) | Mbp/min per CPU | uni56 search wall / CPU s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        print("\n".join(thr), "\n")
    print("| dataset | gene calling | set | true genomes | estimate (upper median) | median | mean | 3rd quartile | mode | markers found |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(est), "\n")
    print("| dataset | gene calling | set | pairs | same-genome (false) pairs | with split-gene pairs | same-genome |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(links), "\n")
    print("| dataset | gene calling | bins | n (truth compl. > 50 %) | MAE completeness | MAE contamination vs bp share | MAE contamination vs genome copies | compl. error max / min | max abs contamination error (genome copies) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(mae))


if __name__ == "__main__":
    main()
