"""Regenerate the "## Binning accuracy and cost (harness)" section of benchmarks/RESULTS.md and
benchmarks/results/summary.png from benchmarks/results/<dataset>.tsv (written by run.py).

    .venv/bin/python benchmarks/report.py [--results benchmarks/results] [--out benchmarks/RESULTS.md]

Per tool and dataset the latest row of each seed counts, among the rows of the tool's newest version
(rows of an older version of the code are not averaged with new ones); several seeds are reported as mean ± SD
(and min–max for NC/MQ), never the best seed. The section is put right after the title; the other
sections of RESULTS.md are kept as they are.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SECTION = "## Binning accuracy and cost (harness)"
OURS = ("deepmetabin", "deepmetabin-bam")
DATASET_ORDER = ("small", "medium", "multi")


def load(results: Path) -> dict[str, pd.DataFrame]:
    """results/<dataset>.tsv -> {dataset: rows}, only the latest row per (tool, seed) of each tool's newest version."""
    out = {}
    files = sorted(results.glob("*.tsv"), key=lambda p: (DATASET_ORDER.index(p.stem) if p.stem in DATASET_ORDER else 99, p.stem))
    for path in files:
        rows = pd.read_csv(path, sep="\t", dtype={"tool": str, "options": str, "version": str})
        if not {"tool", "version", "seed", "date"} <= set(rows.columns):
            continue  # another table in results/ (ablation.tsv, gmm_init.tsv), not a run.py one
        rows = rows.sort_values("date", kind="stable")
        newest = rows.groupby("tool")["version"].transform("last")
        rows = rows[rows["version"] == newest].drop_duplicates(["tool", "seed"], keep="last")
        out[path.stem] = rows
    return out


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per tool: mean/SD over its seeds (successful runs only; failed runs listed with exit)."""
    lines = []
    for tool, grp in rows.groupby("tool", sort=False):
        ok = grp[grp["exit"] == 0]
        use = ok if len(ok) else grp
        line = {"tool": tool, "version": " / ".join(dict.fromkeys(use["version"].astype(str))), "options": use["options"].iloc[-1],
                "seeds": ",".join(str(s) for s in sorted(use["seed"])), "n": len(use), "n_ok": len(ok), "failed": int((grp["exit"] != 0).sum())}
        for col in ("f1", "f1_bp", "precision", "recall", "nc", "mq", "ari", "binned_bp", "n_bins", "wall_s", "cpu_s", "rss_mb"):
            line[col] = use[col].mean()
            line[col + "_sd"] = use[col].std(ddof=1) if len(use) > 1 else 0.0
            line[col + "_min"], line[col + "_max"] = use[col].min(), use[col].max()
        lines.append(line)
    order = {t: i for i, t in enumerate(("deepmetabin", "deepmetabin-bam", "metabat2", "metabat2-m1500", "vamb", "semibin2"))}
    frame = pd.DataFrame(lines)
    return frame.sort_values("tool", key=lambda s: s.map(lambda t: order.get(t, 99))).reset_index(drop=True)


def _num(line: pd.Series, col: str, fmt: str) -> str:
    value = format(line[col], fmt)
    return f"{value} ± {format(line[col + '_sd'], fmt)}" if line["n"] > 1 else value


def _count(line: pd.Series, col: str) -> str:
    if line["n"] > 1 and line[col + "_min"] != line[col + "_max"]:
        return f"{line[col]:.1f} ({line[col + '_min']:.0f}–{line[col + '_max']:.0f})"
    return f"{line[col]:.0f}"


def table(summary: pd.DataFrame) -> list[str]:
    out = ["| tool | seeds | F1 contigs | F1 bp | precision | recall | NC | MQ | ARI | bins | binned bp | wall s | CPU s | peak RSS MB | version; options |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, l in summary.iterrows():
        fail = f" ({l['failed']} failed)" if l["failed"] else ""
        out.append(f"| {l['tool']} | {l['seeds']}{fail} | {_num(l, 'f1', '.3f')} | {_num(l, 'f1_bp', '.3f')} | "
                   f"{_num(l, 'precision', '.3f')} | {_num(l, 'recall', '.3f')} | {_count(l, 'nc')} | {_count(l, 'mq')} | "
                   f"{_num(l, 'ari', '.3f')} | {_count(l, 'n_bins')} | {100 * l['binned_bp']:.1f} % | {_num(l, 'wall_s', '.0f')} | "
                   f"{_num(l, 'cpu_s', '.0f')} | {_num(l, 'rss_mb', '.0f')} | {l['version']}; {l['options']} |")
    return out


def ratios(summary: pd.DataFrame) -> list[str]:
    """Our F1 / best peer's, our wall / MetaBAT2's and VAMB's, our RAM / VAMB's (successful runs)."""
    ok = summary[summary["n_ok"] > 0].set_index("tool")
    peers = ok[~ok.index.isin(OURS)]
    lines = []
    for ours in [t for t in OURS if t in ok.index]:
        o = ok.loc[ours]
        parts = []
        if len(peers):
            for col, name in (("f1", "F1 contigs"), ("f1_bp", "F1 bp")):
                best = peers[col].idxmax()
                parts.append(f"{name} / best peer's ({best}): {o[col] / peers.loc[best, col]:.3f}")
        for peer in ("metabat2", "metabat2-m1500", "vamb"):
            if peer in ok.index:
                r = o["wall_s"] / ok.loc[peer, "wall_s"]
                parts.append(f"wall / {peer}'s: {r:.2f}×" if r < 1 else f"wall / {peer}'s: {r:.1f}×")
        for peer in ("vamb",):
            if peer in ok.index:
                parts.append(f"CPU / {peer}'s: {o['cpu_s'] / ok.loc[peer, 'cpu_s']:.2f}×")
                parts.append(f"peak RSS / {peer}'s: {o['rss_mb'] / ok.loc[peer, 'rss_mb']:.2f}×")
        lines.append(f"- **{ours}** (mean over seeds {o['seeds']}): " + "; ".join(parts))
    return lines


def plot(summaries: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(summaries)
    fig, axes = plt.subplots(2, n, figsize=(5.5 * n, 7), squeeze=False)
    for j, (name, s) in enumerate(summaries.items()):
        x = range(len(s))
        ax = axes[0][j]
        w = 0.4
        ax.bar([i - w / 2 for i in x], s["f1"], w, yerr=s["f1_sd"], label="F1 contigs", capsize=3)
        ax.bar([i + w / 2 for i in x], s["f1_bp"], w, yerr=s["f1_bp_sd"], label="F1 bp", capsize=3)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: F1 (mean ± SD over seeds)")
        ax.set_xticks(list(x), s["tool"], rotation=30, ha="right")
        ax.legend(loc="lower right")
        ax = axes[1][j]
        ax.bar([i - w / 2 for i in x], s["nc"], w, yerr=s["nc_sd"], label="NC (>90 %/<5 %)", capsize=3)
        ax.bar([i + w / 2 for i in x], s["mq"], w, yerr=s["mq_sd"], label="MQ (≥50 %/<10 %)", capsize=3)
        ax.set_title(f"{name}: genomes recovered")
        ax.set_xticks(list(x), s["tool"], rotation=30, ha="right")
        ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def section(data: dict[str, pd.DataFrame], png: str, results: Path | None = None) -> str:
    lines = [SECTION, "",
             "Generated by `make bench DATA=<dataset folder>` (`benchmarks/run.py`, then `benchmarks/report.py`) from",
             "`benchmarks/results/<dataset>.tsv`; do not edit by hand. Each tool ran under `/usr/bin/time -v` with 2 threads",
             "on the 2-core VM shared with other jobs (wall times are noisy; CPU s = user + sys; peak RSS = largest",
             "process). Scores: `deepmetabin.evaluate` over all truth contigs (F1 contigs = the paper's definition,",
             "unbinned contigs count against recall; NC > 90 % complete / < 5 % contaminated, MQ ≥ 50 % / < 10 %, by bp).",
             "Several seeds: mean ± SD (NC/MQ: mean and min–max), not the best seed. SemiBin2 uses its pre-trained",
             "`global` model (its self-supervised training is impractical on 2 cores) and accepts one sample only, so",
             "the samples' MetaBAT depths are summed into one. VAMB clusters < 200 kbp count as unbinned (the",
             "`--minfasta 200000` of its documentation; deepmetabin's `--min-bin-size` default is the same).", ""]
    notes = results / "NOTES.md" if results else None
    if notes is not None and notes.exists():  # hand-written conditions of the runs (load, what was not run)
        lines += [notes.read_text().rstrip(), ""]
    for name, rows in data.items():
        s = summarise(rows)
        lines += [f"### {name}", ""] + table(s) + [""] + ratios(s) + [""]
        for check in sorted(results.glob(f"amber_check_{name}_*.md")) if results else []:
            lines += [check.read_text().rstrip(), f"(`benchmarks/amber_check.py`, {check.name})", ""]
    lines += [f"![F1 and NC per tool]({png})", ""]
    return "\n".join(lines)


def splice(text: str, new: str) -> str:
    """Put `new` right after the title line, replacing an earlier copy of the section."""
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + (text[nxt + 1:] if nxt >= 0 else "")
    head, sep, rest = text.partition("\n")
    rest = rest.lstrip("\n")
    return f"{head}\n\n{new.rstrip()}\n\n{rest}" if sep else f"{head}\n\n{new.rstrip()}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    data = load(args.results)
    if not data:
        raise SystemExit(f"{args.results}: no <dataset>.tsv; run benchmarks/run.py first")
    png = args.results / "summary.png"
    if not args.no_plot:
        plot({k: summarise(v) for k, v in data.items()}, png)
    rel = Path(png).resolve().relative_to(args.out.resolve().parent) if png.resolve().is_relative_to(args.out.resolve().parent) else png
    text = args.out.read_text() if args.out.exists() else "# Benchmark results\n"
    new = splice(text, section(data, str(rel), args.results))
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({SECTION}) and {png if not args.no_plot else '(no plot)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
