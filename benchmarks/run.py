"""Run deepmetabin and the peer binners on one benchmark dataset and append scored rows.

    .venv/bin/python benchmarks/run.py ../shared/bench/small [--tools deepmetabin metabat2 ...]
        [--threads 2] [--seeds 0 1 2] [--bams S1.bam S2.bam ...]

Each tool runs under `/usr/bin/time -v` in benchmarks/work/runs/<dataset>/<tool>-s<seed>/ (log and
time report kept there); its bins are converted to contig -> bin and scored with
deepmetabin.evaluate (the truth is read only there, after the tool finished); one row per run is
appended to benchmarks/results/<dataset>.tsv. Peers live in their own virtual environments under
benchmarks/work/envs/ (created on first use; never in the project's dependencies).
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402
from deepmetabin.evaluate import read_binning, score, score_per_sample  # noqa: E402

WORK = HERE / "work"
ENVS = WORK / "envs"
RESULTS = HERE / "results"
TOOLS = ("deepmetabin", "deepmetabin-bam", "metabat2", "metabat2-m1500", "vamb", "semibin2")
log = logging.getLogger("bench")

# Peer environments: torch first, pinned to the CPU build (an unpinned torch pulls a CUDA build).
ENV_RECIPES = {
    "vamb": [["torch==2.13.0"],
             ["vambcore==0.1.2", "numpy==1.26.4", "pycoverm==0.6.2", "networkx==3.4.2", "scikit-learn==1.6.1",
              "dadaptation==3.2", "loguru==0.7.3", "pyhmmer==0.10.15", "pyrodigal==3.6.3"],
             ["--no-deps", "vamb==5.0.4"]],
    "semibin": [["torch==2.13.0"], ["semibin==2.6.0", "pyrodigal"]],
    "amber": [["cami-amber"]],
}


def ensure_env(name: str) -> Path:
    """benchmarks/work/envs/<name> (python3.11 venv with the pinned recipe); created if missing."""
    env = ENVS / name
    if (env / "bin" / "python").exists():
        return env
    log.info("creating %s (python3.11 venv) ...", env)
    subprocess.run(["python3.11", "-m", "venv", str(env)], check=True)
    for pkgs in ENV_RECIPES[name]:
        subprocess.run([str(env / "bin" / "pip"), "install", "-q", *pkgs], check=True)
    return env


def need_programs(*names: str, hint: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise SystemExit(f"missing on PATH: {', '.join(missing)}; install with: {hint}")


def timed(cmd: list[str], rundir: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run cmd under /usr/bin/time -v; stdout+stderr -> rundir/log.txt, report -> rundir/time.txt."""
    need_programs("/usr/bin/time", hint="apt-get install -y time")
    rundir.mkdir(parents=True, exist_ok=True)
    (rundir / "command.txt").write_text(" ".join(cmd) + "\n")
    log.info("running: %s", " ".join(cmd))
    with open(rundir / "log.txt", "w") as out:
        subprocess.run(["/usr/bin/time", "-v", "-o", str(rundir / "time.txt"), *cmd], stdout=out,
                       stderr=subprocess.STDOUT, env=env)
    return peers.parse_time_v((rundir / "time.txt").read_text())


def tool_version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        text = (res.stdout + res.stderr).strip().splitlines()
        return text[-1].strip() if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def threads_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


# ---------------------------------------------------------------------------------------- per tool
def _metabat_per_sample(ds: peers.Dataset, rundir: Path, threads: int, m: int | None, separator: str,
                        env: dict[str, str]) -> tuple[dict, pd.DataFrame]:
    """MetaBAT2 once per sample of a catalogue (that sample's contigs, all depth columns), bins named
    ``<sample>:<bin>``; time report: wall and CPU seconds summed, the largest peak RSS, the worst exit."""
    times, frames = [], []
    for sample, sub in peers.split_by_sample(ds, rundir / "samples", separator).items():
        out = rundir / sample / "bins"
        out.mkdir(parents=True)
        times.append(timed(peers.metabat_command(sub, out, threads, 1, m), rundir / sample, env))
        b = peers.fasta_dir_bins(out)
        frames.append(b.assign(bin=sample + ":" + b["bin"].astype(str)))
    t = {"wall_s": sum(x["wall_s"] for x in times), "cpu_s": sum(x["cpu_s"] for x in times),
         "rss_mb": max(x["rss_mb"] for x in times), "exit": max(x["exit"] for x in times)}
    return t, pd.concat(frames, ignore_index=True)


def run_tool(tool: str, ds: peers.Dataset, seed: int, threads: int, lengths: pd.Series,
             multi_split: str | None = None) -> tuple[str, str, dict, pd.DataFrame]:
    """-> version, options, time report, bins (contig, bin). ``multi_split``: the sample separator of a
    multi-sample catalogue (deepmetabin --multi-split, VAMB -o, MetaBAT2 per sample)."""
    rundir = WORK / "runs" / ds.name / f"{tool}-s{seed}"
    if rundir.exists():
        shutil.rmtree(rundir)
    rundir.mkdir(parents=True)
    env = threads_env(threads)
    if tool.startswith("deepmetabin"):
        exe = ROOT / ".venv" / "bin" / "deepmetabin"
        bam = tool == "deepmetabin-bam"
        if bam and not ds.bams:
            raise SystemExit("deepmetabin-bam needs BAMs (--bams or S*.bam next to the dataset)")
        # the version of the code that runs: taken before the run (others may commit meanwhile)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "deepmetabin"], capture_output=True, text=True).stdout.strip()
        version = f"{tool_version([str(exe), '--version'])} ({commit}{'+dirty' if dirty else ''})"
        out = rundir / "run"
        t = timed(peers.deepmetabin_command(exe, ds, out, threads, seed, bam, multi_split), rundir, env)
        bins = read_binning(out / "bins.tsv") if t["exit"] == 0 else pd.DataFrame(columns=["contig", "bin"])
        options = f"bin {'--bam' if bam else '--depth depth.tsv'}{' --multi-split' if multi_split else ''} (defaults)"
        return version, options, t, bins
    if tool.startswith("metabat2"):
        need_programs("metabat2", hint="apt-get install -y metabat")
        m = 1500 if tool == "metabat2-m1500" else None
        version = "MetaBAT " + tool_version(["dpkg-query", "-W", "-f", "${Version}", "metabat"])
        opts = f"-a depth.tsv {'-m 1500' if m else '(default -m 2500)'} --seed 1"
        if multi_split:
            t, bins = _metabat_per_sample(ds, rundir, threads, m, multi_split, env)
            return version, opts + ", once per sample (its contigs, every sample's depth)", t, bins
        out = rundir / "bins"
        out.mkdir()
        t = timed(peers.metabat_command(ds, out, threads, 1, m), rundir, env)
        return version, opts, t, peers.fasta_dir_bins(out)
    if tool == "vamb":
        env_dir = ensure_env("vamb")
        out = rundir / "out"
        split = ["-o", multi_split] if multi_split else ["-o", ""]  # VAMB splits on "C" by itself unless told not to
        t = timed(peers.vamb_command(env_dir / "bin" / "vamb", ds, out, threads, seed) + split, rundir, env)
        clusters = out / ("vae_clusters_split.tsv" if multi_split else "vae_clusters_unsplit.tsv")
        bins = peers.vamb_bins(clusters, lengths) if t["exit"] == 0 else pd.DataFrame(columns=["contig", "bin"])
        version = tool_version([str(env_dir / "bin" / "vamb"), "--version"])
        return version, (f"bin default --abundance_tsv (abundance.tsv){' -o ' + multi_split + ' (multi-split)' if multi_split else ''}, "
                         f"clusters >= {peers.VAMB_MIN_BIN_BP // 1000} kbp"), t, bins
    if tool == "semibin2":
        if multi_split:
            raise SystemExit("semibin2 is not run on a multi-split catalogue here (its multi_easy_bin needs per-sample BAMs)")
        need_programs("bedtools", "hmmsearch", "prodigal", hint="apt-get install -y bedtools hmmer prodigal")
        env_dir = ensure_env("semibin")
        env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
        # SemiBin2's pre-trained models take one sample only: several samples' MetaBAT depths are summed
        # into one pseudo-sample (--depth-metabat2), as the bench README did for medium.
        depth = pd.read_csv(ds.depth, sep="\t")
        n = sum(1 for c in depth.columns[3:] if not c.endswith("-var"))
        summed = rundir / "depth_summed.tsv"
        peers.summed_metabat_depth(depth).to_csv(summed, sep="\t", index=False)
        out = rundir / "out"
        t = timed(peers.semibin_command(env_dir / "bin" / "SemiBin2", ds, out, threads, ["--depth-metabat2", str(summed)]), rundir, env)
        bins = peers.semibin_bins(out) if t["exit"] == 0 else pd.DataFrame(columns=["contig", "bin"])
        version = "SemiBin2 " + tool_version([str(env_dir / "bin" / "SemiBin2"), "--version"])
        opts = (f"single_easy_bin --environment global (pre-trained; self-supervised training impractical on 2 cores), "
                f"--depth-metabat2 depth.tsv{' summed over ' + str(n) + ' samples' if n > 1 else ''}")
        return version, opts, t, bins
    raise SystemExit(f"unknown tool {tool!r}; choose from {', '.join(TOOLS)}")


def multi_score(bins: pd.DataFrame, truth: pd.DataFrame, lengths: pd.Series, separator: str) -> SimpleNamespace:
    """Scores of a multi-split binning as the paper reports them: F1, precision and recall (contigs and
    bp) averaged over samples; NC, MQ, ARI, binned bp and bins of the pooled scoring (genome-samples)."""
    per = score_per_sample(bins, truth.assign(length=truth["contig"].map(lengths)) if "length" not in truth else truth, separator)
    per = per.set_index("sample")
    mean, pooled = per.loc["mean"], per.loc["pooled"]
    keep_mean = ("f1", "f1_bp", "precision", "recall", "precision_bp", "recall_bp")
    return SimpleNamespace(**{c: (mean[c] if c in keep_mean else pooled[c]) for c in per.columns})


def contig_lengths(path: Path) -> pd.Series:
    import gzip
    lengths: dict[str, int] = {}
    name = None
    with gzip.open(path, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                name = line[1:].split()[0]
                lengths[name] = 0
            elif name is not None:
                lengths[name] += len(line.strip())
    return pd.Series(lengths)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="folder with contigs.fna.gz, depth.tsv, abundance.tsv, truth.tsv")
    p.add_argument("--tools", nargs="+", default=["deepmetabin", "metabat2", "metabat2-m1500", "vamb", "semibin2"], choices=TOOLS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds for deepmetabin (and VAMB)")
    p.add_argument("--bams", type=Path, nargs="*", default=None,
                   help="sorted, indexed BAMs (default: ~/bench-cache/<dataset>/S*.bam when present); adds deepmetabin-bam")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--multi-split", metavar="SEP", default=None,
                   help="the dataset is a multi-sample catalogue with ids <sample>SEP...: deepmetabin --multi-split, "
                        "VAMB -o SEP, MetaBAT2 once per sample; F1/precision/recall = mean over samples, NC/MQ/ARI/bins "
                        "= pooled (genome-samples)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    folder = args.dataset.resolve()
    bams = args.bams if args.bams is not None else sorted((Path.home() / "bench-cache" / folder.name).glob("S*.bam"))
    ds = peers.Dataset(folder, [b.resolve() for b in bams])
    tools = list(args.tools)
    if ds.bams and "deepmetabin" in tools and "deepmetabin-bam" not in tools:
        tools.insert(tools.index("deepmetabin") + 1, "deepmetabin-bam")
    lengths = contig_lengths(ds.contigs)
    args.results.mkdir(parents=True, exist_ok=True)
    table = args.results / f"{ds.name}.tsv"
    failed = 0
    for tool in tools:
        # several seeds for deepmetabin (depth table or BAMs: BAMs give other features); the peers once (first seed)
        seeds = args.seeds if tool in ("deepmetabin", "deepmetabin-bam") else [args.seeds[0]]
        for seed in seeds:
            version, options, t, bins = run_tool(tool, ds, seed, args.threads, lengths, args.multi_split)
            truth = read_binning(ds.folder / "truth.tsv", kind="truth")  # read only here, after the run
            s = (multi_score(bins, truth, lengths, args.multi_split) if args.multi_split else score(bins, truth, lengths=lengths)) \
                if len(bins) else None
            row = {"tool": tool, "version": version, "options": options, "seed": seed,
                   "f1": s.f1 if s else 0.0, "f1_bp": s.f1_bp if s else 0.0,
                   "precision": s.precision if s else 0.0, "recall": s.recall if s else 0.0,
                   "precision_bp": s.precision_bp if s else 0.0, "recall_bp": s.recall_bp if s else 0.0,
                   "nc": s.nc if s else 0, "mq": s.mq if s else 0, "ari": s.ari if s else 0.0,
                   "binned_bp": s.binned_bp if s else 0.0, "n_bins": s.n_bins if s else 0,
                   "wall_s": t["wall_s"], "cpu_s": t["cpu_s"], "rss_mb": t["rss_mb"], "exit": t["exit"],
                   "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            frame = pd.DataFrame([row], columns=peers.ROW_COLUMNS)
            with open(table, "a") as handle:  # several run.py may append at once
                fcntl.flock(handle, fcntl.LOCK_EX)
                frame.to_csv(handle, sep="\t", index=False, header=handle.tell() == 0, float_format="%.6g")
            failed += t["exit"] != 0
            log.info("%s seed %d: F1 %.3f / bp %.3f, NC %s, MQ %s, wall %.0f s, CPU %.0f s, %.0f MB, exit %d -> %s",
                     tool, seed, row["f1"], row["f1_bp"], row["nc"], row["mq"], t["wall_s"], t["cpu_s"], t["rss_mb"], t["exit"], table)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
