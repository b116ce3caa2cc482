"""How the GMM's start centres change the bins, on fixed trained models (latent means).

    .venv/bin/python benchmarks/gmm_init.py small medium [--train-seeds 0 1 2] [--gmm-seeds 0 1 2 3 4]

Takes the default run folders that benchmarks/ablation.py left in benchmarks/work/ablation/<dataset>/s<seed>/default
(one trained model per training seed), copies each, and reruns only the bins stage (GMM -> constrained k-means
split -> small bins dropped) with every GMM seed and each way of choosing the start centres:

* ``k-means++``: k-means++ seeds, every row given to its nearest seed (scikit-learn's init_params="k-means++");
* ``kmeans-N``: the best of N seeded k-means runs (scikit-learn's default init_params="kmeans").

So the spread over GMM seeds on one latent space is the GMM's own variance, apart from training's. Rows go to
benchmarks/results/gmm_init.tsv; prints mean and SD per dataset and setting.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from functools import partial
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import deepmetabin.cluster as cluster  # noqa: E402
from deepmetabin.evaluate import read_binning, score  # noqa: E402
from deepmetabin.pipeline import bins_stage  # noqa: E402

SETTINGS = {"k-means++": {"init": "k-means++"}, "kmeans-1": {"init": "kmeans", "n_init": 1},
            "kmeans-3": {"init": "kmeans", "n_init": 3}, "kmeans-10": {"init": "kmeans", "n_init": 10}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", nargs="+", help="dataset names under ../shared/bench (small, medium)")
    p.add_argument("--bench", type=Path, default=HERE.parent.parent / "shared" / "bench")
    p.add_argument("--runs", type=Path, default=HERE / "work" / "ablation")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--gmm-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", type=Path, default=HERE / "results" / "gmm_init.tsv")
    args = p.parse_args(argv)
    original = cluster.gmm
    rows = []
    for ds in args.datasets:
        truth = read_binning(args.bench / ds / "truth.tsv", kind="truth")
        for ts in args.train_seeds:
            src = args.runs / ds / f"s{ts}" / "default"
            work = HERE / "work" / "gmm_init" / ds / f"s{ts}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(src, work)
            for name in args.settings:
                cluster.gmm = partial(original, **SETTINGS[name])  # bins_stage imports it from the module
                for gs in args.gmm_seeds:
                    bins_stage(work, seed=gs)
                    s = score(read_binning(work / "bins.tsv"), truth)
                    rows.append({"dataset": ds, "setting": name, "train_seed": ts, "gmm_seed": gs, "f1": s.f1,
                                 "f1_bp": s.f1_bp, "precision": s.precision, "recall": s.recall, "nc": s.nc, "mq": s.mq})
                    print(rows[-1], flush=True)
    cluster.gmm = original
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False, float_format="%.6g")
    summary = table.groupby(["dataset", "setting"])[["f1", "f1_bp", "precision", "nc", "mq"]].agg(["mean", "std"]).round(3)
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
