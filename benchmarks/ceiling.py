"""How well can the features separate each dataset's strains at all? An accuracy ceiling for binning.

usage: python benchmarks/ceiling.py [--datasets small medium] [--neighbours 15] [--folds 5]

With the dataset's BAMs in ``~/bench-cache/<dataset>/S*.bam`` (``shared/bench/build/make_bams.sh``), the
blocks ``strain depth`` and ``strain depth+TNF`` are added: the depth block deepmetabin makes from BAMs,
whose profile across samples follows the reads placed with MAPQ >= 1 (:func:`deepmetabin.features.strain_depth`).

Strains of one species share their composition (TNF) and, where reads map equally well to two strains,
share their depth too (the aligner places such a read on one of them at random, so each strain gets the
mean of both coverages). No binner can separate what its features do not. This script measures it with
the truth (benchmarks only, never the library):

1. Separability: within each species with >= 2 genomes in the dataset, a supervised k-nearest-neighbour
   classifier (``--neighbours``, cross-validated over ``--folds`` folds) predicts each contig's genome from
   the features deepmetabin trains on (``graph_data.load``: the log-depth block, the TNF block, both).
   Its share of correctly placed bp is an optimistic reference for an unsupervised binner, which has no
   labels; per genome: the share of its bp placed on it, from depth alone.
2. Reference binnings, scored by ``deepmetabin.evaluate.score`` like the harness scores binners:
   ``truth`` (1.0), ``species merged`` (every species one bin: a binner that separates no strain but
   makes no other error), ``supervised depth`` / ``supervised depth+TNF`` (strain contigs placed by the
   cross-validated classifier of 1, every other contig in its genome's bin), and the latter with the species
   whose strains it places < ``MERGE_BELOW`` correctly (by bp) merged into one bin each.

Prints markdown tables.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graph_data import BENCH, load  # noqa: E402

from deepmetabin.evaluate import read_binning, score  # noqa: E402
from deepmetabin.tnf import TNF_DIM  # noqa: E402


MERGE_BELOW = 0.9  # depth bp share under which a species' strains count as inseparable (reference binning 4)


def cv_predict(x: np.ndarray, y: np.ndarray, neighbours: int, folds: int, seed: int = 0) -> np.ndarray:
    """(n,) genome predicted for each row by a k-NN classifier trained on the other folds."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(KNeighborsClassifier(n_neighbors=neighbours), x, y, cv=cv)


def strain_block(name: str, ids: np.ndarray) -> np.ndarray | None:
    """(N, S) depth block of the features deepmetabin makes from the dataset's BAMs (unique depth
    included), rows in ``ids`` order; None without BAMs in ``~/bench-cache/<name>``."""
    from deepmetabin.contigs import read_contigs
    from deepmetabin.depth import depth_from_bams
    from deepmetabin.features import features

    bams = sorted((Path.home() / "bench-cache" / name).glob("S*.bam"))
    if not bams:
        return None
    contigs = read_contigs(BENCH / name / "contigs.fna.gz")
    if not np.array_equal(contigs.ids, ids):
        raise SystemExit(f"{name}: contig order differs from graph_data.load's")
    depth, unique, samples = depth_from_bams(bams, contigs, threads=2, unique=True)
    x = features(contigs.with_depth(depth, samples, unique), np.zeros((len(contigs), TNF_DIM)))
    return x[:, TNF_DIM:]


def ceiling(name: str, neighbours: int, folds: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(separability per species, depth recall per genome, reference binnings' scores) of dataset ``name``."""
    x, ids, genome = load(name)
    strain = strain_block(name, ids)
    truth = read_binning(BENCH / name / "truth.tsv", kind="truth")
    length = truth.set_index("contig")["length"].reindex(ids).to_numpy(dtype=float)
    species = pd.read_csv(BENCH / name / "genomes.tsv", sep="\t", index_col="genome")["species"]
    sp = np.array([species[g] for g in genome], dtype=object)
    blocks = {"depth": x[:, TNF_DIM:], "TNF": x[:, :TNF_DIM], "depth+TNF": x}
    if strain is not None:
        blocks.update({"strain depth": strain, "strain depth+TNF": np.hstack([x[:, :TNF_DIM], strain])})
    predicted = {b: genome.copy() for b in blocks}
    rows, per_genome = [], []
    for s in sorted(set(species[species.duplicated(keep=False)])):
        sel = np.flatnonzero(sp == s)
        row = {"dataset": name, "species": s, "genomes": len(set(genome[sel])), "contigs": len(sel),
               "chance bp": float(pd.Series(length[sel]).groupby(genome[sel]).sum().max() / length[sel].sum())}
        for b, feats in blocks.items():
            p = cv_predict(feats[sel], genome[sel], neighbours, folds)
            predicted[b][sel] = p
            row[f"{b} bp"] = float(length[sel][p == genome[sel]].sum() / length[sel].sum())
            if b == "depth":
                for g in sorted(set(genome[sel])):
                    mine = genome[sel] == g
                    per_genome.append({"dataset": name, "genome": g,
                                       "placed on it (bp)": float(length[sel][mine & (p == g)].sum() / length[sel][mine].sum())})
        rows.append(row)
    refs = {"truth": genome, "species merged": sp}
    refs.update({f"supervised {b}": predicted[b] for b in blocks if "depth" in b})
    # a binner that knows which strains it cannot tell apart: species below MERGE_BELOW merged, the rest supervised
    hard = {r["species"] for r in rows if r["depth bp"] < MERGE_BELOW}
    refs[f"supervised depth, species < {MERGE_BELOW:g} merged"] = np.where(np.isin(sp, list(hard)), sp, predicted["depth"])
    scored = []
    for label, assignment in refs.items():
        sc = score(pd.DataFrame({"contig": ids, "bin": assignment}), truth)
        scored.append({"dataset": name, "binning": label, "F1 contigs": sc.f1, "F1 bp": sc.f1_bp,
                       "precision": sc.precision, "recall": sc.recall, "NC": sc.nc, "bins": sc.n_bins})
    return pd.DataFrame(rows), pd.DataFrame(per_genome), pd.DataFrame(scored)


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of ``frame`` (floats with 3 decimals)."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["small", "medium"])
    ap.add_argument("--neighbours", type=int, default=15)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    parts = [ceiling(d, args.neighbours, args.folds) for d in args.datasets]
    for i, title in enumerate(("Separability of each species' strains (share of bp on the right genome; "
                               f"{args.neighbours}-NN, {args.folds}-fold cross-validated)",
                               "Per genome, from depth alone", "Reference binnings")):
        print(f"\n{title}\n")
        print(markdown(pd.concat([p[i] for p in parts])))


if __name__ == "__main__":
    main()
