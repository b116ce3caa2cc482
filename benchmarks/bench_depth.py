"""Benchmark depth_from_bams against MetaBAT's jgi_summarize_bam_contig_depths on the same BAMs.

jgi and each engine given with ``--engine`` run with the same thread count (jgi through
OMP_NUM_THREADS; the process is pinned to that many cores when the machine has more), interleaved
(the order rotates each repeat), ``--repeats`` times; we report min and median wall time, the ratio
of medians to jgi, and per engine and sample the Pearson r and max relative difference between our
depths and jgi's table (``--jgi-depth``, else the table jgi wrote in this run).

    .venv/bin/python benchmarks/bench_depth.py --contigs contigs.fna.gz --bams S1.bam S2.bam S3.bam \\
        --jgi-depth depth.tsv --threads 2 --engine numba pysam
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deepmetabin.contigs import read_contigs
from deepmetabin.depth import ENGINES, depth_from_bams, read_depth_table


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contigs", required=True, type=Path)
    ap.add_argument("--bams", required=True, nargs="+", type=Path)
    ap.add_argument("--jgi-depth", type=Path, help="jgi table to compare depths with (default: the one jgi writes here)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-length", type=int, default=1000)
    ap.add_argument("--engine", nargs="+", choices=ENGINES, default=["numba", "pysam"],
                    help="depth_from_bams engines to time (default: numba pysam)")
    args = ap.parse_args(argv)

    jgi = shutil.which("jgi_summarize_bam_contig_depths")
    if jgi is None:
        print("jgi_summarize_bam_contig_depths not found (apt install metabat)", file=sys.stderr)
        return 1
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > args.threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    contigs = read_contigs(args.contigs, min_length=args.min_length)
    engines = list(dict.fromkeys(args.engine))

    first: dict[str, float] = {}
    ours: dict[str, np.ndarray] = {}
    samples: list[str] = []
    for e in engines:
        t = time.perf_counter()
        ours[e], samples = depth_from_bams(args.bams, contigs, threads=args.threads, engine=e)
        first[e] = time.perf_counter() - t  # includes loading (or compiling) the numba kernels

    who_all = ["jgi", *engines]
    times: dict[str, list[float]] = {k: [] for k in who_all}
    cpu: dict[str, list[float]] = {k: [] for k in who_all}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        jgi_out = Path(tmp) / "depth.tsv"
        for rep in range(args.repeats):
            k = rep % len(who_all)
            for who in who_all[k:] + who_all[:k]:
                t = time.perf_counter()
                c0 = _cpu_seconds()
                if who == "jgi":
                    subprocess.run([jgi, "--outputDepth", str(jgi_out), *map(str, args.bams)], env=env, check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                else:
                    ours[who], samples = depth_from_bams(args.bams, contigs, threads=args.threads, engine=who)
                times[who].append(time.perf_counter() - t)
                cpu[who].append(_cpu_seconds() - c0)
        ref, ref_samples = read_depth_table(args.jgi_depth or jgi_out, contigs)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"contigs: {len(contigs)} (>= {args.min_length} bp), BAMs: {len(args.bams)} "
          f"({sum(b.stat().st_size for b in args.bams) / 1e6:.0f} MB), threads: {args.threads}, cores: {cores}, "
          f"repeats: {args.repeats}")
    for e in engines:
        print(f"first call, engine {e} (kernel load/compile included): {first[e]:.2f} s")
    for k in who_all:
        ratio = "" if k == "jgi" else f"; ratio to jgi (medians) {med[k] / med['jgi']:.2f}"
        print(f"{k:6s} wall: min {min(times[k]):.2f} s, median {med[k]:.2f} s  ({', '.join(f'{x:.2f}' for x in times[k])}); "
              f"CPU (user+sys, all processes) median {statistics.median(cpu[k]):.2f} s{ratio}")
    assert samples == ref_samples, (samples, ref_samples)
    for e in engines:
        for j, s in enumerate(samples):
            r = float(np.corrcoef(ours[e][:, j], ref[:, j])[0, 1])
            rel = float(np.max(np.abs(ours[e][:, j] - ref[:, j]) / np.maximum(ref[:, j], 1e-3)))
            print(f"engine {e}, sample {s}: Pearson r vs jgi = {r:.6f}, max relative difference = {rel:.2e}")
    for e in engines[1:]:
        same = np.array_equal(ours[e], ours[engines[0]])
        print(f"engine {e} depths {'==' if same else '!='} engine {engines[0]} depths (bitwise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
