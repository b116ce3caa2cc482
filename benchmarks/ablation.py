"""Ablation of the seed's components on benchmark datasets: each switched off in turn, several seeds.

    .venv/bin/python benchmarks/ablation.py ../shared/bench/small ../shared/bench/medium --seeds 0 1 2
        [--variants default no-refine ...] [--threads 2]

For every dataset and seed the default pipeline (``deepmetabin.pipeline.run`` on contigs.fna.gz +
depth.tsv) runs once into benchmarks/work/ablation/<dataset>/s<seed>/default; each variant starts
from a copy of that folder, so only the stages its switch touches run again (features and markers
are shared). Scores come from ``deepmetabin.evaluate`` (the truth is read only after the binning).
One row per (dataset, variant, seed) is appended to benchmarks/results/ablation.tsv; the markdown
summary (mean +- SD over seeds, and the change against the default of the same seeds) is written
to benchmarks/ABLATION.md from everything in that file.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from run import contig_lengths  # noqa: E402

from deepmetabin.evaluate import precision_by_length, read_binning, score  # noqa: E402
from deepmetabin.manifest import load_manifest  # noqa: E402
from deepmetabin.pipeline import Config, run  # noqa: E402
from deepmetabin.train import TrainConfig  # noqa: E402

WORK = HERE / "work" / "ablation"
TABLE = HERE / "results" / "ablation.tsv"
REPORT = HERE / "ABLATION.md"
log = logging.getLogger("ablation")

# name -> (what is switched off, Config changes, TrainConfig changes)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "default": ("nothing (the shipped defaults)", {}, {}),
    "no-refine": ("graph refinement: the neighbour term uses the raw k-NN graph", {"refine": False}, {}),
    "no-neighbour": ("the neighbour (must-link) loss term: neighbour_weight = 0", {}, {"neighbour_weight": 0.0}),
    "posterior": ("the GMM: bins = argmax q(y|x) of the GMVAE", {"assign": "posterior"}, {}),
    "k-factor-1": ("the 7/8 K factor: K = the SCG genome estimate", {"k_factor": 1.0}, {}),
    "no-split": ("constrained k-means on contaminated clusters", {"split": False}, {}),
    "split-ungated": ("the TNF-composition gate of the split (every contaminated cluster split)",
                      {"min_composition_silhouette": None}, {}),
    "no-depth-split": ("splitting strain mixtures by depth (min_depth_silhouette = None)", {"min_depth_silhouette": None}, {}),
    "no-merge": ("joining fragments (< 50 % complete) to the cluster their k-NN edges point to", {"merge_fragments": False}, {}),
    "no-islands": ("moving a cluster's k-NN islands (no edge to the rest of it) to the cluster their edges point to",
                   {"move_islands": False}, {}),
    "patience-8": ("patience of early stopping: 8 epochs without improvement instead of 15 (shorter training)",
                   {}, {"patience": 8}),
    "min-improvement-0": ("early stopping's threshold: any drop of the held-out loss counts as an improvement (default: "
                          "a drop of 2 % of it)", {}, {"min_improvement": 0.0}),
    "hidden-128": ("width of the GMVAE's hidden layers: 128 instead of 256 (less compute per epoch)", {}, {"hidden": (128, 128)}),
    "nb-exact": ("neighbour sampling: the neighbour term sums over every neighbour (neighbour_samples = None)",
                 {}, {"neighbour_samples": None}),
}
# variants of earlier runs, still in the table (their rows are reported with the code version they ran on)
FORMER = {
    "min-delta-1e-3": "(when an improvement of early stopping was an absolute drop of 1e-4 of the held-out loss) an absolute "
                      "drop of 1e-3 (~2 % of it); a relative 2 % is the default since 2026-12-08",
    "nb-samples-1": "(when the default summed over every neighbour) 1 neighbour sampled by weight per contig and step; "
                    "the default since 2026-11-26",
}
COLUMNS = ["dataset", "variant", "seed", "f1", "f1_bp", "precision", "recall", "nc", "mq", "ari", "n_bins",
           "short_precision", "short_binned", "cannot_link_violations", "stage_seconds", "version", "date"]


def code_version() -> str:
    """Short commit (+dirty) of the code that runs; DMB_CODE_VERSION when run from an exported tree."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not commit:
        return os.environ.get("DMB_CODE_VERSION", "unknown")
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "deepmetabin"], capture_output=True, text=True).stdout.strip()
    return commit + ("+dirty" if dirty else "")


def config_for(variant: str, seed: int, threads: int) -> Config:
    _, cfg, tc = VARIANTS[variant]
    return Config(seed=seed, threads=threads, train=replace(TrainConfig(seed=seed), **tc), **cfg)


def run_variant(folder: Path, variant: str, seed: int, threads: int, resume_default: bool = False) -> tuple[Path, float]:
    """Run one variant (from a copy of the default run) -> run folder, seconds of the stages that ran."""
    base = WORK / folder.name / f"s{seed}" / "default"
    out = base.parent / variant
    if variant != "default":
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(base, out)
    ran: list[str] = []
    t0 = time.perf_counter()
    run(folder / "contigs.fna.gz", out, depth_table=folder / "depth.tsv", config=config_for(variant, seed, threads),
        # the default from scratch (code may have changed), unless asked to keep the stages whose settings did not change
        resume=True, force=variant == "default" and not resume_default,
        on_stage=lambda stage, what: ran.append(stage) if what == "start" else None)
    log.info("%s %s seed %d: ran %s in %.0f s", folder.name, variant, seed, ran or "nothing", time.perf_counter() - t0)
    return out, time.perf_counter() - t0


def score_run(out: Path, folder: Path, lengths: pd.Series) -> dict:
    bins = read_binning(out / "bins.tsv")
    truth = read_binning(folder / "truth.tsv", kind="truth")  # read only here, after the binning
    s = score(bins, truth, lengths=lengths)
    sp, sn = precision_by_length(bins, truth, lengths, max_length=2500)
    extra = load_manifest(out)["stages"]["bins"]  # record_stage puts the extra keys in the entry
    return {"f1": s.f1, "f1_bp": s.f1_bp, "precision": s.precision, "recall": s.recall, "nc": s.nc, "mq": s.mq,
            "ari": s.ari, "n_bins": s.n_bins, "short_precision": sp, "short_binned": sn,
            "cannot_link_violations": extra.get("cannot_link_violations", np.nan)}


def report(table: pd.DataFrame) -> str:
    """Markdown: per dataset, mean +- SD per variant over seeds and the paired change against default."""
    lines = ["# Ablation of the seed's components", "",
             "Generated by `benchmarks/ablation.py` from `benchmarks/results/ablation.tsv`; do not edit by hand. Each variant",
             "switches one component off and keeps every other default; all variants of a seed share the same features,",
             "markers (and graph/model where the switch does not touch them). Mean ± SD over seeds; Δ = mean paired",
             "difference against `default` of the same seeds and the same code version (negative = the component",
             "helps; the defaults changed between versions, listed below each table). Short = contigs of",
             "1–2.5 kb: precision of the binned ones (their genome is their bin's majority genome).", "",
             "| variant | what is off |", "|---|---|"]
    lines += [f"| {name} | {what} |" for name, (what, _, _) in VARIANTS.items()]
    lines += [f"| {name} | {what} |" for name, what in FORMER.items() if name in set(table["variant"])]
    # rows of every code version are kept; each variant shows its latest version, compared with the
    # default of that same version (the default changed between runs)
    latest = table.assign(version=table["version"].astype(str)).sort_values("date") \
        .drop_duplicates(["dataset", "variant", "seed", "version"], keep="last")
    for ds, grp in latest.groupby("dataset", sort=False):
        lines += ["", f"## {ds}", "", "| variant | code | seeds | F1 contigs | Δ F1 | F1 bp | Δ F1 bp | NC | Δ NC | MQ | ARI | "
                  "short precision (n) | bins |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for variant in [*VARIANTS, *FORMER]:
            rows = grp[grp["variant"] == variant]
            if rows.empty:
                continue
            version = rows["version"].iloc[-1]
            v = rows[rows["version"] == version].set_index("seed")
            base = grp[(grp["variant"] == "default") & (grp["version"] == version)].set_index("seed")
            paired = v.index.intersection(base.index)

            def ms(col: str, fmt: str = ".3f") -> str:
                x = v[col].astype(float)
                return f"{x.mean():{fmt}} ± {x.std(ddof=1):{fmt}}" if len(x) > 1 else f"{x.mean():{fmt}}"

            def delta(col: str, fmt: str = "+.3f") -> str:
                if variant == "default" or not len(paired):
                    return "–"
                return f"{(v.loc[paired, col].astype(float) - base.loc[paired, col].astype(float)).mean():{fmt}}"

            nc = v["nc"].astype(int)
            lines.append(
                f"| {variant} | {version} | {','.join(map(str, sorted(v.index)))} | {ms('f1')} | {delta('f1')} | {ms('f1_bp')} | "
                f"{delta('f1_bp')} | {nc.mean():.1f} ({nc.min()}–{nc.max()}) | {delta('nc', '+.1f')} | {v['mq'].mean():.1f} | "
                f"{ms('ari')} | {v['short_precision'].mean():.3f} ({v['short_binned'].mean():.0f}) | {v['n_bins'].mean():.1f} |")
        defaults = grp[grp["variant"] == "default"]
        if defaults["version"].nunique() > 1:
            lines += ["", "The default of each code version (Δ of a variant is against the default of its own version):", ""]
            for version, d in defaults.groupby("version", sort=False):
                lines.append(f"- `{version}`: F1 {d['f1'].mean():.3f}, F1 bp {d['f1_bp'].mean():.3f}, NC {d['nc'].mean():.1f} "
                             f"(seeds {','.join(map(str, sorted(d['seed'])))})")
    lines += gmm_init_section()
    return "\n".join(lines) + "\n"


def gmm_init_section(path: Path | None = None) -> list[str]:
    """Markdown of benchmarks/gmm_init.py's table (the GMM's start centres on fixed models), if it exists."""
    path = path or TABLE.parent / "gmm_init.tsv"
    if not path.exists():
        return []
    t = pd.read_csv(path, sep="\t")
    lines = ["", "## GMM start centres (`benchmarks/gmm_init.py`)", "",
             "The bins stage alone rerun on the trained models of the `default` rows above (one per training seed), with",
             "each GMM seed: so the spread is the GMM's own, on one latent space. Mean ± SD over training x GMM seeds.", "",
             "| dataset | start centres | runs | F1 contigs | F1 bp | precision | NC | MQ |", "|---|---|---|---|---|---|---|---|"]
    for (ds, setting), g in t.groupby(["dataset", "setting"], sort=False):
        def ms(col: str) -> str:
            return f"{g[col].mean():.3f} ± {g[col].std(ddof=1):.3f}"
        lines.append(f"| {ds} | {setting} | {len(g)} | {ms('f1')} | {ms('f1_bp')} | {ms('precision')} | "
                     f"{g['nc'].mean():.1f} ({g['nc'].min()}–{g['nc'].max()}) | {g['mq'].mean():.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("datasets", type=Path, nargs="*", help="folders with contigs.fna.gz, depth.tsv, truth.tsv")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume-default", action="store_true",
                   help="rerun only the default's stages whose settings changed (when the code change is in those stages only)")
    p.add_argument("--report-only", action="store_true", help="only rewrite ABLATION.md from the table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    variants = ["default"] + [v for v in args.variants if v != "default"]  # the others copy its folder
    if not args.report_only:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        for folder in (d.resolve() for d in args.datasets):
            lengths = contig_lengths(folder / "contigs.fna.gz")
            for seed in args.seeds:
                for variant in variants:
                    version = code_version()
                    out, secs = run_variant(folder, variant, seed, args.threads, args.resume_default)
                    row = {"dataset": folder.name, "variant": variant, "seed": seed, **score_run(out, folder, lengths),
                           "stage_seconds": round(secs, 1), "version": version,
                           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
                    pd.DataFrame([row], columns=COLUMNS).to_csv(TABLE, sep="\t", index=False, mode="a",
                                                                header=not TABLE.exists(), float_format="%.6g")
                    log.info("%s %s seed %d: F1 %.3f bp %.3f NC %d MQ %d short precision %.3f (%d)", folder.name, variant,
                             seed, row["f1"], row["f1_bp"], row["nc"], row["mq"], row["short_precision"], row["short_binned"])
    if TABLE.exists():
        REPORT.write_text(report(pd.read_csv(TABLE, sep="\t")))
        log.info("wrote %s", REPORT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
