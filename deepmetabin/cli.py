"""The ``deepmetabin`` command: a thin layer over the library (parse, call, print, exit code).

Every subcommand is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args) -> int`` registered in
``COMMANDS``. Errors for bad input (:class:`DeepMetaBinError`) print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import __version__
from .errors import DeepMetaBinError

log = logging.getLogger("deepmetabin")


@contextmanager
def _tqdm_progress(desc: str, unit: str = "it", enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback backed by a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, file=sys.stderr)
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def _threads(value: int | None) -> int:
    return max(1, value or len(os.sched_getaffinity(0)))


# --------------------------------------------------------------------------------------- features
def _add_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="read contigs + depth, compute TNF and the feature matrix into a run folder",
        description="Read contigs (FASTA, plain or .gz) and per-sample depth (sorted+indexed BAMs, or a depth "
        "table), compute TNF and the normalised feature matrix, and write them into the run folder --out.",
    )
    p.add_argument("--contigs", required=True, type=Path, help="assembly FASTA (.fna/.fa, optionally .gz)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bam", nargs="+", type=Path, help="sorted, indexed BAM files, one per sample")
    src.add_argument("--depth", type=Path, help="depth table: MetaBAT jgi_summarize_bam_contig_depths or VAMB/strobealign --aemb TSV")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    p.add_argument("--min-length", type=int, default=1000, help="minimum contig length in bp (default 1000)")
    p.add_argument("--threads", type=int, default=None, help="worker threads/processes (default: all available cores)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder's manifest and outputs")


def _run_features(args: argparse.Namespace) -> int:
    from .pipeline import features_stage

    t0 = time.perf_counter()
    with _tqdm_progress("depth", "bam", enabled=not args.quiet) as dprog, _tqdm_progress("TNF", "bp", enabled=not args.quiet) as tprog:
        manifest = features_stage(
            args.contigs, args.out, bams=args.bam, depth_table=args.depth, min_length=args.min_length,
            threads=_threads(args.threads), force=args.force, depth_progress=dprog, tnf_progress=tprog,
        )
    st = manifest["stages"]["features"]
    print(
        f"features: {manifest['n_contigs']} contigs, {st['n_bp']:,} bp, {st['n_samples']} sample(s), "
        f"{st['n_features']} features -> {args.out} ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


# --------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score bins against a ground truth (F1, NC/MQ genomes, ARI)")
    p.add_argument("--bins", required=True, type=Path, help="bins.tsv (clustername<TAB>contigname) or CAMI binning file")
    p.add_argument("--truth", required=True, type=Path, help="truth: CAMI binning format or contig<TAB>genome TSV")
    p.add_argument("--contigs", type=Path, help="contigs FASTA, for lengths when the truth has no LENGTH column")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")


def _run_evaluate(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from .evaluate import read_binning, score

    truth = read_binning(args.truth, kind="truth")
    bins = read_binning(args.bins, kind="bins")
    lengths = None
    if args.contigs is not None:
        from .contigs import read_contigs

        c = read_contigs(args.contigs, min_length=0)
        lengths = pd.Series(c.lengths, index=c.ids.astype(str))
    s = score(bins, truth, lengths)
    if args.json:
        print(json.dumps(s.as_dict(), indent=2))
        return 0
    print(f"F1 (contigs)  {s.f1:.3f}   precision {s.precision:.3f}   recall {s.recall:.3f}")
    print(f"F1 (bp)       {s.f1_bp:.3f}   precision {s.precision_bp:.3f}   recall {s.recall_bp:.3f}")
    print(f"genomes       NC (>90%/<5%) {s.nc}   >70%/<10% {s.q70_10}   MQ (>=50%/<10%) {s.mq}   of {s.n_genomes}")
    print(f"bins          {s.n_bins}   ARI (binned contigs) {s.ari:.3f}   binned bp {100 * s.binned_bp:.1f}%")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "features": (_add_features, _run_features),
    "evaluate": (_add_evaluate, _run_evaluate),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepmetabin", description="Metagenome binning with a graph-regularised GMVAE.")
    parser.add_argument("--version", action="version", version=f"deepmetabin {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command][1](args)
    except DeepMetaBinError as exc:
        print(f"deepmetabin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepmetabin {args.command}: interrupted; outputs written so far are complete", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())
