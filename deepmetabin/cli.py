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
    """A ``progress(done, total)`` callback backed by a tqdm bar (rate and ETA) on stderr.

    Stages report ``progress(done, total)`` when they start; work done then (e.g. BAMs taken from a
    cache) is the bar's ``initial``, so the rate and the ETA count only the work of this run."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None:
            bar = tqdm(total=total, initial=done, desc=desc, unit=unit, unit_scale=True, leave=False, file=sys.stderr,
                       disable=None)
            return
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def _threads(value: int | None) -> int:
    return max(1, value or len(os.sched_getaffinity(0)))


def _add_scheduler(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help=f"Dask scheduler address, e.g. tcp://host:8786: {what} run as tasks on its cluster (needs "
                   "deepmetabin[dask] here and on the workers, and the input files at the same paths there; default: "
                   "everything on this machine)")


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
    src.add_argument("--bam", nargs="+", type=Path, help="coordinate-sorted BAM or CRAM files, one per sample (reads of that sample mapped to these contigs)")
    src.add_argument("--depth", type=Path, help="depth table: MetaBAT jgi_summarize_bam_contig_depths or VAMB/strobealign --aemb TSV")
    p.add_argument("--out", required=True, type=Path, help="run folder to create")
    p.add_argument("--min-length", type=int, default=1000, help="minimum contig length in bp (default 1000)")
    p.add_argument("--threads", type=int, default=None, help="worker threads/processes (default: all available cores)")
    p.add_argument("--no-strain-depth", action="store_true",
                   help="with --bam: make the depth features from the plain depth alone, without the profile of the reads placed "
                        "with MAPQ >= 1 (as from a depth table)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder's manifest and outputs")
    _add_scheduler(p, "depth per BAM and TNF per chunk of contigs")


def _run_features(args: argparse.Namespace) -> int:
    from .pipeline import features_stage

    t0 = time.perf_counter()
    with _tqdm_progress("depth", "bam", enabled=not args.quiet) as dprog, _tqdm_progress("TNF", "bp", enabled=not args.quiet) as tprog:
        manifest = features_stage(
            args.contigs, args.out, bams=args.bam, depth_table=args.depth, min_length=args.min_length,
            threads=_threads(args.threads), force=args.force, depth_progress=dprog, tnf_progress=tprog,
            scheduler=args.scheduler, strain_depth=not args.no_strain_depth,
        )
    st = manifest["stages"]["features"]
    print(
        f"features: {manifest['n_contigs']} contigs, {st['n_bp']:,} bp, {st['n_samples']} sample(s), "
        f"{st['n_features']} features{' (depth profiles from uniquely placed reads)' if st['params'].get('strain_depth') else ''} "
        f"-> {args.out} ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


# --------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score bins against a ground truth (F1, NC/MQ genomes, ARI)")
    p.add_argument("--bins", required=True, type=Path, help="bins.tsv (clustername<TAB>contigname) or CAMI binning file")
    p.add_argument("--truth", required=True, type=Path, help="truth: CAMI binning format or contig<TAB>genome TSV")
    p.add_argument("--contigs", type=Path, help="contigs FASTA, for lengths when the truth has no LENGTH column")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--multi-split", action="store_true", help="score each sample separately (ids <sample><separator>...)")
    p.add_argument("--sample-separator", default="C", help="separator after the sample name in contig ids (default C)")


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
    if args.multi_split:
        from .evaluate import score_per_sample

        if lengths is not None and ("length" not in truth or truth["length"].isna().any()):
            truth = truth.assign(length=truth["contig"].map(lengths))
        table = score_per_sample(bins, truth, args.sample_separator)
        cols = ["sample", "f1", "f1_bp", "precision", "recall", "nc", "mq", "n_genomes", "n_bins"]
        if args.json:
            print(table[cols].to_json(orient="records", indent=2))
        else:
            print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return 0
    s = score(bins, truth, lengths)
    if args.json:
        print(json.dumps(s.as_dict(), indent=2))
        return 0
    print(f"F1 (contigs)  {s.f1:.3f}   precision {s.precision:.3f}   recall {s.recall:.3f}")
    print(f"F1 (bp)       {s.f1_bp:.3f}   precision {s.precision_bp:.3f}   recall {s.recall_bp:.3f}")
    print(f"genomes       NC (>90%/<5%) {s.nc}   >70%/<10% {s.q70_10}   MQ (>=50%/<10%) {s.mq}   of {s.n_genomes}")
    print(f"bins          {s.n_bins}   ARI (binned contigs) {s.ari:.3f}   binned bp {100 * s.binned_bp:.1f}%")
    return 0


# ------------------------------------------------------------------------------------------ graph
def _add_graph(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "graph",
        help="build the refined k-NN contig graph of a run folder (graph.npz, graph_labels.tsv)",
        description="Build the k-NN graph of the run's feature matrix, refine it (DBSCAN seeds, label "
        "propagation, removal of edges between labels) and add graph.npz and graph_labels.tsv to the run folder.",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder made by `deepmetabin features`")
    p.add_argument("--k", type=int, default=3, help="neighbours per contig (default 3)")
    p.add_argument("--eps", type=float, default=None, help="seed radius in feature distance (default: from --eps-quantile)")
    p.add_argument("--eps-quantile", type=float, default=None,
                   help="seed radius as this quantile of the nearest-neighbour distances (default 0.05)")
    p.add_argument("--min-samples", type=int, default=None, help="DBSCAN min_samples for seed clusters (default 2)")
    p.add_argument("--max-distance", type=float, default=None, help="also remove edges longer than this (default: no cut)")
    p.add_argument("--method", choices=("auto", "exact", "approx"), default="auto",
                   help="k-NN search: exact up to 50,000 contigs, approximate (NN-descent) above (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the approximate index (default 0)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all available cores)")


def _run_graph(args: argparse.Namespace) -> int:
    from .pipeline import graph_stage

    t0 = time.perf_counter()
    with _tqdm_progress("k-NN", "contig", enabled=not args.quiet) as prog:
        manifest = graph_stage(
            args.run, k=args.k, eps=args.eps, eps_quantile=args.eps_quantile, min_samples=args.min_samples,
            max_distance=args.max_distance, method=args.method, seed=args.seed, threads=_threads(args.threads),
            progress=prog,
        )
    c = manifest["stages"]["graph"]["counts"]
    n = max(1, c["n_contigs"])
    print(
        f"graph: {c['n_contigs']:,} contigs, k={args.k}: {c['edges_knn']:,} edges -> {c['edges']:,} after refinement, "
        f"{c['contigs_with_edge'] / n:.1%} of contigs with an edge, {c['seed_clusters']:,} seed clusters "
        f"-> {args.run / 'graph.npz'} ({time.perf_counter() - t0:.1f} s)"
    )
    return 0


# ---------------------------------------------------------------------------------------- markers
_MARKER_SETS = ("sc107", "checkm_bacteria", "uni56")  # deepmetabin.markers.MARKER_SETS (not imported: fast start)


def _add_gene_mode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gene-mode", choices=("trained", "meta"), default="trained",  # deepmetabin.markers.GENE_MODES
                   help="trained (default): Prodigal models trained on the assembly's long contigs, one per GC group "
                   "(gene calling ~6x less CPU); meta: Prodigal's metagenomic mode (pre-trained models; use it for genomes "
                   "with another genetic code, e.g. Mycoplasma)")


def _add_markers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "markers",
        help="find single-copy marker genes on the run's contigs (markers.tsv)",
        description="Call genes (pyrodigal) on every contig of a run folder, search them "
        "with the marker HMM sets shipped in deepmetabin (pyhmmer) and write markers.tsv. Reused when the "
        "contigs and marker sets are unchanged.",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder made by `deepmetabin features`")
    p.add_argument("--sets", nargs="+", choices=_MARKER_SETS, default=list(_MARKER_SETS[:2]),
                   help="marker sets: sc107 (genome count, cannot-links), checkm_bacteria (quality), uni56 "
                   "(bacteria + archaea count) (default: sc107 checkm_bacteria)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all available cores)")
    _add_gene_mode(p)
    _add_scheduler(p, "gene calling and the HMM search per chunk of contigs")


def _run_markers(args: argparse.Namespace) -> int:
    from .pipeline import markers_stage

    t0 = time.perf_counter()
    with _tqdm_progress("markers", "bp", enabled=not args.quiet) as prog:
        manifest = markers_stage(args.run, threads=_threads(args.threads), marker_sets=args.sets, progress=prog,
                                 scheduler=args.scheduler, gene_mode=args.gene_mode)
    st = manifest["stages"]["markers"]
    found = ", ".join(f"{s}: {st['n_markers_found'][s]} markers / {n} genes" for s, n in st["n_hits"].items())
    est = st["genomes_estimate"]
    print(
        f"markers: {found}; about {est['value']} genomes ({est['set']}) -> {args.run / 'markers.tsv'} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0


# ------------------------------------------------------------------------------------------ train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the GMVAE on a run folder (model.pt, latent.npy, history.parquet)")
    p.add_argument("--run", required=True, type=Path, help="run folder with features and graph")
    _add_train_options(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's training checkpoint (train.ckpt)")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 200; early stopping on held-out loss)")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default 256)")
    p.add_argument("--latent", type=int, default=None, help="latent dimension (default 32)")
    p.add_argument("--components", type=int, default=None, help="GMVAE mixture components K (default 32)")
    p.add_argument("--neighbour-weight", type=float, default=None, help="weight of the neighbour must-link term (default 1.0; 0 = off)")
    p.add_argument("--neighbour-samples", type=int, default=None,
                   help="neighbours sampled per contig and step for the must-link term (default 1; 0 = every neighbour, exact)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same bins on CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="cores (default: all available); training's torch threads are a quarter of them, at least one, "
                        "as in `deepmetabin bin` (the model depends on the thread count)")


def _train_config(args: argparse.Namespace) -> "object":
    from .train import TrainConfig

    opts = {"epochs": args.epochs, "batch_size": args.batch_size, "latent": args.latent, "k": args.components,
            "neighbour_weight": args.neighbour_weight}
    if args.neighbour_samples is not None:
        if args.neighbour_samples < 0:
            raise DeepMetaBinError(f"--neighbour-samples must be >= 0 (0 = every neighbour), got {args.neighbour_samples}")
        opts["neighbour_samples"] = args.neighbour_samples or None
    return TrainConfig(seed=args.seed, threads=_threads(args.threads), device=args.device,
                       **{k: v for k, v in opts.items() if v is not None})


@contextmanager
def _epoch_bar(enabled: bool, epochs: int) -> Iterator[Callable[[object], None]]:
    """An epoch callback drawing a tqdm bar, created at the first epoch (after earlier stages' bars)."""
    from tqdm import tqdm

    bar = None

    def on_epoch(event) -> None:  # type: ignore[no-untyped-def]
        nonlocal bar
        if bar is None:
            bar = tqdm(total=epochs, desc="train", unit="epoch", leave=False, file=sys.stderr, disable=None if enabled else True)
        bar.set_postfix(loss=f"{event.losses['loss']:.3f}", val=f"{event.losses['val_rec']:.3f}", dev=event.device)
        bar.update(1)

    on_epoch.wants_latent = False  # type: ignore[attr-defined]  # (train: skip the latent snapshot)
    try:
        yield on_epoch
    finally:
        if bar is not None:
            bar.close()


def _run_train(args: argparse.Namespace) -> int:
    from .pipeline import train_stage

    from dataclasses import replace

    from .train import training_threads

    config = _train_config(args)
    config = replace(config, threads=training_threads(config.threads))  # as `deepmetabin bin` trains: the same model
    t0 = time.perf_counter()
    with _epoch_bar(not args.quiet, config.epochs) as on_epoch:
        manifest = train_stage(args.run, config, resume=args.resume, callbacks=[on_epoch])
    st = manifest["stages"]["train"]
    print(f"train: {st['epochs_run']} epochs (best {st['best_epoch']}) on {st['device']} -> {args.run / 'model.pt'}, "
          f"latent.npy, history.parquet ({time.perf_counter() - t0:.1f} s)")
    return 0


# ----------------------------------------------------------------------------------------- concat
def _add_concat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("concat", help="concatenate per-sample assemblies into one catalogue with sample-prefixed ids",
                       description="Write <sample><separator><id> contigs of every FASTA (samples S1, S2, ... in the "
                       "order given, or --names) into one catalogue for multi-sample binning (bin --multi-split).")
    p.add_argument("fastas", nargs="+", type=Path, help="one assembly FASTA per sample")
    p.add_argument("--out", required=True, type=Path, help="catalogue FASTA to write (.gz compresses)")
    p.add_argument("--names", nargs="+", help="sample names (default S1, S2, ...)")
    p.add_argument("--sample-separator", default="C", help="separator between sample name and contig id (default C)")
    p.add_argument("--min-length", type=int, default=1000, help="leave out contigs shorter than this (default 1000)")


def _run_concat(args: argparse.Namespace) -> int:
    from .multisample import concatenate

    table = concatenate(args.fastas, args.out, names=args.names, separator=args.sample_separator, min_length=args.min_length)
    for row in table.itertuples(index=False):
        print(f"{row.sample}: {row.contigs} contigs, {row.bp:,} bp <- {row.fasta}")
    print(f"catalogue: {int(table['contigs'].sum())} contigs -> {args.out}")
    return 0


# -------------------------------------------------------------------------------------------- bin
def _add_bin(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bin", help="run every stage: contigs + depth -> bins (FASTA, bins.tsv, CAMI, quality.tsv)",
        description="Features -> refined k-NN graph -> marker genes -> GMVAE -> GMM + constrained k-means -> bins. "
        "Each stage is cached in the run folder --out and skipped when unchanged; --resume continues a killed run.",
    )
    p.add_argument("--contigs", required=True, type=Path, help="assembly FASTA (.fna/.fa, optionally .gz)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bam", nargs="+", type=Path, help="coordinate-sorted BAM or CRAM files, one per sample")
    src.add_argument("--depth", type=Path, help="depth table: MetaBAT jgi_summarize_bam_contig_depths or VAMB/strobealign --aemb TSV")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--min-length", type=int, default=1000, help="minimum contig length in bp (default 1000)")
    p.add_argument("--min-bin-size", type=int, default=200_000, help="bins below this many bp are written as unbinned (default 200000)")
    p.add_argument("--no-split", action="store_true", help="skip the constrained k-means split of contaminated clusters")
    p.add_argument("--no-merge-fragments", action="store_true",
                   help="keep clusters below 50%% completeness apart instead of joining them to the cluster their graph edges point to")
    p.add_argument("--no-move-islands", action="store_true",
                   help="keep groups of a bin's contigs that have no k-NN edge to the rest of it in that bin, instead of "
                        "moving them to the bin their graph edges point to (never done with --multi-split)")
    p.add_argument("--no-strain-depth", action="store_true",
                   help="with --bam: make the depth features from the plain depth alone, without the profile of the reads placed "
                        "with MAPQ >= 1 (as from a depth table)")
    p.add_argument("--no-map", action="store_true",
                   help="skip the last stage, the 2-D UMAP map of the latent means for the app (the app then makes it when opened)")
    p.add_argument("--multi-split", action="store_true",
                   help="multi-sample mode: ids are <sample><separator>..., bins are split per sample (see `deepmetabin concat`)")
    p.add_argument("--sample-separator", default="C", help="separator after the sample name in contig ids (default C)")
    _add_gene_mode(p)
    _add_train_options(p)
    p.add_argument("--resume", action="store_true", help="continue or reuse an existing run folder of the same inputs")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    _add_scheduler(p, "depth per BAM, TNF and marker genes per chunk of contigs (training stays here)")


_UNITS = {"depth": "bam", "tnf": "bp", "graph": "contig", "markers": "bp", "bins": "EM step", "map": "contig"}  # what each stage's progress counts


def _run_bin(args: argparse.Namespace) -> int:
    import resource

    from .pipeline import Config, run

    threads = _threads(args.threads)
    config = Config(min_length=args.min_length, min_bin_bp=args.min_bin_size, split=not args.no_split, seed=args.seed,
                    threads=threads, train=_train_config(args), multi_split=args.sample_separator if args.multi_split else None, map=not args.no_map,
                    merge_fragments=not args.no_merge_fragments, move_islands=not args.no_move_islands,
                    gene_mode=args.gene_mode, strain_depth=not args.no_strain_depth)
    times: dict[str, float] = {}
    started: dict[str, float] = {}

    def on_stage(stage: str, what: str) -> None:
        if what == "start":
            started[stage] = time.perf_counter()
            print(f"[{stage}] ...", file=sys.stderr, flush=True)
        elif what == "done":
            times[stage] = time.perf_counter() - started[stage]
            print(f"[{stage}] done in {times[stage]:.1f} s", file=sys.stderr, flush=True)
        else:
            print(f"[{stage}] unchanged, reused", file=sys.stderr, flush=True)

    bars = []

    def progress_for(stage: str):  # type: ignore[no-untyped-def]
        cm = _tqdm_progress(stage, _UNITS.get(stage, "it"), enabled=not args.quiet)
        bars.append(cm)
        return cm.__enter__()

    t0 = time.perf_counter()
    try:
        with _epoch_bar(not args.quiet, config.train.epochs) as on_epoch:
            result = run(args.contigs, args.out, bams=args.bam, depth_table=args.depth, config=config, resume=args.resume,
                         force=args.force, device=args.device, on_stage=on_stage, progress_for=progress_for,
                         train_callbacks=[on_epoch], scheduler=args.scheduler)
    finally:
        for cm in bars:
            cm.__exit__(None, None, None)
    s = result.summary()
    st = result.manifest["stages"]["bins"]
    # this process only: the work runs in its threads, and a helper forked from it (a library's `lscpu`)
    # reports the parent's size at the fork as its own peak, so adding children's double-counted (1.9 GB on medium)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bins: {s['bins']}   high quality (>90%/<5%): {s['high']}   medium (>=50%/<10%): {s['medium']}   "
          f"binned bp: {100 * s['binned_bp']:.1f}%   K: {st['k']} ({st['k_rule']})")
    print(f"after the GMM: fragments joined {st.get('fragments_joined', 0)}, "
          f"contigs moved as graph islands {st.get('contigs_moved_as_islands', 0)}")
    stages = result.manifest["stages"]
    print("stage      seconds")
    for stage, sec in s["seconds"].items():
        beside = stages.get(stage, {}).get("beside")  # its seconds overlap that stage's (both ran in this call)
        how = "  (reused)" if stage not in times else f"  (beside {beside})" if beside in times else ""
        print(f"{stage:<10} {times.get(stage, sec or 0):8.1f}{how}")
    print(f"total      {time.perf_counter() - t0:8.1f}   peak RAM {peak:.0f} MB -> {args.out}")
    return 0


# -------------------------------------------------------------------------------------------- app
def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="open the Panel app on a run folder (served on localhost)",
                       description="Serve app/main.py with `panel serve` on 127.0.0.1 for the run folder --run.")
    p.add_argument("--run", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo, made by `make demo`)")
    p.add_argument("--port", type=int, default=5006, help="port on 127.0.0.1 (default 5006)")
    p.add_argument("--show", action="store_true", help="open a browser tab")


def _run_app(args: argparse.Namespace) -> int:
    import subprocess

    from .manifest import load_manifest

    load_manifest(args.run)  # a clear error when it is not a run folder
    main_py = Path(__file__).resolve().parents[1] / "app" / "main.py"
    if not main_py.exists():
        from .errors import InputFileError

        raise InputFileError(f"{main_py}: the app is not there (it ships with a source checkout); run from the repository")
    cmd = [sys.executable, "-m", "panel", "serve", str(main_py), "--address", "127.0.0.1", "--port", str(args.port),
           "--allow-websocket-origin", f"127.0.0.1:{args.port}", "--allow-websocket-origin", f"localhost:{args.port}"]
    cmd += ["--show"] if args.show else []
    print(f"app: http://127.0.0.1:{args.port}/main  (run {args.run}; Ctrl-C stops)", flush=True)
    return subprocess.call(cmd + ["--args", "--run", str(args.run.resolve())])


COMMANDS: dict[str, tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "app": (_add_app, _run_app),
    "bin": (_add_bin, _run_bin),
    "concat": (_add_concat, _run_concat),
    "features": (_add_features, _run_features),
    "graph": (_add_graph, _run_graph),
    "evaluate": (_add_evaluate, _run_evaluate),
    "markers": (_add_markers, _run_markers),
    "train": (_add_train, _run_train),
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
        if "threads" in vars(args):
            from ._parallel import thread_limits

            with thread_limits(_threads(args.threads)):  # BLAS, numba and torch pools of every stage
                return COMMANDS[args.command][1](args)
        return COMMANDS[args.command][1](args)
    except DeepMetaBinError as exc:
        print(f"deepmetabin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepmetabin {args.command}: interrupted; outputs written so far are complete", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
