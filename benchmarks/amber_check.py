"""Cross-check deepmetabin.evaluate against AMBER (cami-amber, in its own venv
benchmarks/work/envs/amber, created on first use) on one binning.

    .venv/bin/python benchmarks/amber_check.py ../shared/bench/small \
        benchmarks/work/runs/small/deepmetabin-s0/run/bins.tsv --label deepmetabin

Writes benchmarks/results/amber_check_<dataset>_<label>.md (report.py includes it) and prints it.
AMBER names: precision/recall_weighted_{seq,bp} and f1_score_per_{seq,bp} are the numbers the paper
and deepmetabin.evaluate call precision/recall/F1; NC/MQ are counted here from AMBER's
bin_metrics.tsv (completeness = recall_bp, contamination = 1 - precision_bp, one count per genome).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402
from run import contig_lengths, ensure_env  # noqa: E402

from deepmetabin.evaluate import read_binning, score  # noqa: E402

PAIRS = [  # (label, ours, AMBER results.tsv column)
    ("precision (contigs)", "precision", "precision_weighted_seq"),
    ("recall (contigs)", "recall", "recall_weighted_seq"),
    ("F1 (contigs, the paper's)", "f1", "f1_score_per_seq"),
    ("precision (bp)", "precision_bp", "precision_weighted_bp"),
    ("recall (bp)", "recall_bp", "recall_weighted_bp"),
    ("F1 (bp)", "f1_bp", "f1_score_per_bp"),
    ("ARI (binned contigs, by contig)", "ari", "adjusted_rand_index_seq"),
    ("binned bp", "binned_bp", "percentage_of_assigned_bps"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path)
    p.add_argument("bins", type=Path, help="bins.tsv / CAMI binning file, or a folder with one FASTA per bin")
    p.add_argument("--label", default="deepmetabin")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    name = args.dataset.resolve().name
    work = HERE / "work" / "amber" / f"{name}_{args.label}"
    work.mkdir(parents=True, exist_ok=True)
    truth_path = args.dataset / "truth.tsv"
    sample = next(l.split(":", 1)[1].strip() for l in truth_path.read_text().splitlines() if l.startswith("@SampleID"))
    bins = peers.fasta_dir_bins(args.bins) if args.bins.is_dir() else read_binning(args.bins)
    cami = work / "bins.cami"
    with open(cami, "w") as handle:
        handle.write(f"@Version:0.9.1\n@SampleID:{sample}\n\n@@SEQUENCEID\tBINID\n")
        handle.writelines(f"{c}\t{b}\n" for c, b in zip(bins["contig"], bins["bin"]))
    env = ensure_env("amber")
    out = work / "amber"
    subprocess.run([str(env / "bin" / "amber.py"), "-g", str(truth_path), "-l", args.label, str(cami), "-o", str(out),
                    "--skip_gs", "--silent"], check=True)
    version = subprocess.run([str(env / "bin" / "amber.py"), "--version"], capture_output=True, text=True).stdout.strip()
    amber = pd.read_csv(out / "results.tsv", sep="\t")
    amber = amber[amber["Tool"] == args.label].iloc[-1]
    per_bin = pd.read_csv(out / "bin_metrics.tsv", sep="\t")
    ours = score(bins, read_binning(truth_path, kind="truth"), lengths=contig_lengths(args.dataset / "contigs.fna.gz")).as_dict()

    def tier(c: float, k: float) -> int:
        ok = per_bin[(per_bin["recall_bp"] > c) & (1 - per_bin["precision_bp"] < k)]
        return int(ok["genome_id"].nunique())

    lines = [f"AMBER cross-check ({version or 'cami-amber'}) of `{args.bins}` on `{name}`:", "",
             "| metric | deepmetabin.evaluate | AMBER | AMBER column | difference |", "|---|---|---|---|---|"]
    for label, mine, theirs in PAIRS:
        lines.append(f"| {label} | {ours[mine]:.6f} | {amber[theirs]:.6f} | `{theirs}` | {ours[mine] - amber[theirs]:+.1e} |")
    lines.append(f"| recall (contigs), unweighted mean over genomes | – | {amber['recall_avg_seq']:.6f} | `recall_avg_seq` | – |")
    for label, mine, c, k in (("NC genomes (>90 % / <5 %)", "nc", 0.9, 0.05), ("MQ genomes (≥50 % / <10 %)", "mq", 0.5 - 1e-12, 0.10)):
        lines.append(f"| {label} | {ours[mine]} | {tier(c, k)} | from `bin_metrics.tsv` | {ours[mine] - tier(c, k):+d} |")
    same = abs(ours["recall"] - amber["recall_weighted_seq"]) < 1e-9
    lines += ["", "AMBER's per-contig recall picks each genome's bin by bp, ours (the paper's) by contig count; "
              + ("on this binning both pick the same bins, so the numbers agree." if same else
                 "on this binning they pick different bins for some genomes, hence the difference."),
              "AMBER's `*_avg_*` numbers are unweighted means over genomes / bins, not the paper's definitions."]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"amber_check_{name}_{args.label}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
