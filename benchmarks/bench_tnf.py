"""TNF throughput (Mbp/s per core) on a real assembly; target >= 200 Mbp/s per core.

usage: python benchmarks/bench_tnf.py [FASTA ...]   (default: data/demo/contigs.fna.gz)
Prints a markdown table row per input: FASTA read time, TNF time with 1 and all threads.
"""
from __future__ import annotations

import argparse
import os
import time

from deepmetabin.contigs import read_contigs
from deepmetabin.tnf import tetramer_counts, tnf


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("fasta", nargs="*", default=["data/demo/contigs.fna.gz"])
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"| input | contigs | Mbp | read s | count Mbp/s (1 thread) | count Mbp/s ({cores} threads) | tnf+projection s (1 thread) |")
    print("|---|---|---|---|---|---|---|")
    for path in args.fasta:
        t0 = time.perf_counter()
        c = read_contigs(path)
        read_s = time.perf_counter() - t0
        tetramer_counts(c)  # JIT warm-up (cached on disk after the first run)
        one = best_of(lambda: tetramer_counts(c, threads=1))
        many = best_of(lambda: tetramer_counts(c, threads=cores))
        full = best_of(lambda: tnf(c, threads=1))
        mbp = c.total_bp / 1e6
        print(f"| {path} | {len(c)} | {mbp:.1f} | {read_s:.2f} | {mbp / one:.0f} | {mbp / many:.0f} | {full:.3f} |")


if __name__ == "__main__":
    main()
