"""A large binning input built from real genomes: N contigs x S samples (contigs + MetaBAT depth + truth).

    .venv/bin/python benchmarks/make_scale_data.py --contigs 1000000 --samples 20 --out ~/scale/1m

The genomes are the real bacterial genomes of a benchmark dataset (default ../shared/bench/medium),
rebuilt from its contigs and layout.tsv. To reach N contigs, "genome variants" are made: a source
genome with 1 % random substitutions (so no two variants share contigs exactly; TNF stays that of
the source species), cut at a random offset into pieces with lognormal lengths (median 2 kb,
sigma 0.9; pieces < 1 kb dropped), which is the length profile of a real short-read assembly where
most contigs are short. Each variant gets its own abundance profile across S samples (mean
coverage log-uniform 1-30x, per-sample weight lognormal(0, 1), absent (x0.02) with probability
0.15, as ../shared/bench/README.md describes); a contig's depth in a sample is Poisson read-pair
counting noise around its genome's coverage (pairs of 2 x 150 bp). No reads or BAMs are made: at
10^6 contigs x 20 samples they would be terabytes; this tests the binner's own scaling.

Writes OUT/contigs.fna.gz (one line per sequence, gzip level 1), OUT/depth.tsv (MetaBAT format:
contigName contigLen totalAvgDepth S1.bam S1.bam-var ...), OUT/truth.tsv (CAMI), OUT/README.txt
(the command and counts). Contig ids are random (c0000001...) and contigs come in genome blocks
shuffled in chunks of 10,000, so order says little about the genome. Memory: one chunk at a time.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CHUNK = 10_000
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def source_genomes(folder: Path) -> dict[str, np.ndarray]:
    """genome id -> uint8 sequence (its records joined in layout order) from a bench dataset."""
    seqs: dict[str, str] = {}
    name, buf = None, []
    with gzip.open(folder / "contigs.fna.gz", "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if name:
                    seqs[name] = "".join(buf)
                name, buf = line[1:].split()[0], []
            else:
                buf.append(line.strip())
    if name:
        seqs[name] = "".join(buf)
    pieces: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    with open(folder / "layout.tsv") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            pieces[r["genome"]].append((r["record"], int(r["start"]), r["contig"]))
    return {g: np.frombuffer("".join(seqs[c] for _, _, c in sorted(p)).encode(), dtype=np.uint8)
            for g, p in sorted(pieces.items())}


def variant(seq: np.ndarray, rng: np.random.Generator, rate: float = 0.01) -> np.ndarray:
    out = seq.copy()
    where = np.flatnonzero(rng.random(len(seq)) < rate)
    out[where] = BASES[(np.searchsorted(BASES, out[where]) + rng.integers(1, 4, len(where))) % 4]
    return out


def cut(n: int, rng: np.random.Generator, median: float = 2000.0, sigma: float = 0.9, min_len: int = 1000) -> list[tuple[int, int]]:
    """Pieces (start, end) of a sequence of length n, from a random offset; pieces < min_len dropped."""
    pos, out = int(rng.integers(0, 5000)), []
    while pos < n:
        length = int(rng.lognormal(np.log(median), sigma))
        end = min(n, pos + length)
        if end - pos >= min_len:
            out.append((pos, end))
        pos = end
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contigs", type=int, required=True)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", type=Path, default=HERE.parent.parent / "shared" / "bench" / "medium")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    genomes = source_genomes(args.source)
    names = list(genomes)
    args.out.mkdir(parents=True, exist_ok=True)
    ids = rng.permutation(args.contigs) + 1
    samples = [f"S{i + 1}" for i in range(args.samples)]
    written, n_variants, total_bp = 0, 0, 0
    tmp = {k: args.out / f".{k}.tmp" for k in ("contigs.fna.gz", "depth.tsv", "truth.tsv")}
    with gzip.open(tmp["contigs.fna.gz"], "wb", compresslevel=1) as fa, open(tmp["depth.tsv"], "w") as dp, \
            open(tmp["truth.tsv"], "w") as tr:
        dp.write("contigName\tcontigLen\ttotalAvgDepth\t" + "\t".join(f"{s}.bam\t{s}.bam-var" for s in samples) + "\n")
        tr.write(f"@Version:0.9.1\n@SampleID:scale_{args.contigs}\n\n@@SEQUENCEID\tBINID\tLENGTH\n")
        pending: list[tuple[bytes, int, str, np.ndarray]] = []

        def flush() -> None:
            nonlocal written
            order = rng.permutation(len(pending))
            lines_fa, lines_dp, lines_tr = [], [], []
            for i in order:
                seq, length, genome, depth = pending[i]
                cid = f"c{ids[written]:07d}"
                written += 1
                lines_fa.append(b">" + cid.encode() + b"\n" + seq + b"\n")
                cols = "\t".join(f"{d:.4g}\t{d:.4g}" for d in depth)
                lines_dp.append(f"{cid}\t{length}\t{depth.sum():.4g}\t{cols}\n")
                lines_tr.append(f"{cid}\t{genome}\t{length}\n")
            fa.write(b"".join(lines_fa))
            dp.write("".join(lines_dp))
            tr.write("".join(lines_tr))
            pending.clear()

        while written + len(pending) < args.contigs:
            src = names[n_variants % len(names)]
            seq = variant(genomes[src], rng)
            genome = f"{src}_v{n_variants}"
            n_variants += 1
            mean = np.exp(rng.uniform(np.log(1), np.log(30)))
            w = rng.lognormal(0, 1, args.samples)
            w[rng.random(args.samples) < 0.15] *= 0.02
            cov = np.maximum(mean * w / w.mean(), 0.01)
            for start, end in cut(len(seq), rng):
                if written + len(pending) >= args.contigs:
                    break
                length = end - start
                depth = rng.poisson(cov * length / 300) * 300 / length
                pending.append((seq[start:end].tobytes(), length, genome, depth))
                total_bp += length
                if len(pending) >= CHUNK:
                    flush()
            print(f"\r{written + len(pending):,} contigs, {n_variants} genome variants, {total_bp / 1e9:.2f} Gbp, "
                  f"{time.time() - t0:.0f} s", end="", file=sys.stderr)
        flush()
    for name, path in tmp.items():
        os.replace(path, args.out / name)
    (args.out / "README.txt").write_text(
        f"made by: benchmarks/make_scale_data.py {' '.join(argv or sys.argv[1:])}\n"
        f"{written:,} contigs, {total_bp:,} bp, {n_variants} genome variants of {len(names)} genomes from {args.source}, "
        f"{args.samples} samples; seed {args.seed}\n")
    print(f"\nwrote {args.out}: {written:,} contigs, {total_bp / 1e9:.2f} Gbp, {n_variants} genome variants, "
          f"{time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
