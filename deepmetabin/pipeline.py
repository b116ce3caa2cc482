"""Stages over a run folder: each reads what earlier stages wrote, writes its artefacts atomically,
and records itself in ``manifest.json`` (see :mod:`deepmetabin.manifest`).

A notebook or the app calls the same functions the CLI calls.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ._io import file_sha256, save_npy, save_parquet
from ._parallel import Background, CoreShare, Scheduler, fix_mmap_threshold, release_memory, thread_limits
from .contigs import Contigs, ContigTable, read_contigs
from .errors import InputFileError, RunFolderError
from .manifest import load_manifest, new_manifest, record_stage, require_stage, update_manifest

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def _prepare_out(out: Path, force: bool) -> None:
    """Refuse to reuse a run folder unless ``force``; never touch it before inputs are validated."""
    if out.exists() and not out.is_dir():
        raise InputFileError(f"{out}: exists and is not a folder; choose another --out")
    if (out / "manifest.json").exists() and not force:
        raise RunFolderError(f"{out}: already holds a run (manifest.json); choose another --out or pass --force to replace it")


def features_stage(
    contigs_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bams: Sequence[str | os.PathLike[str]] | None = None,
    depth_table: str | os.PathLike[str] | None = None,
    min_length: int = 1000,
    threads: int = 1,
    force: bool = False,
    depth_progress: Progress | None = None,
    tnf_progress: Progress | None = None,
    sample_separator: str | None = None,
    scheduler: Scheduler = None,
    strain_depth: bool = True,
) -> dict[str, Any]:
    """Create run folder ``out`` with ``contigs.parquet``, ``tnf.npy`` and ``features.npy``; return the manifest.

    All inputs are read and validated before anything is written, so bad input leaves no output;
    the one exception is ``out/depth_cache/``: each BAM's depth column as soon as that BAM is read,
    so that a call interrupted (or stopped by a later bad BAM) and repeated reads only the BAMs not
    yet done (see :func:`deepmetabin.depth.depth_from_bams`); it is removed when the stage finishes.
    ``sample_separator`` (multi-split): every id must carry a sample prefix that names a BAM / depth
    column (checked before depth is computed from BAMs). ``threads`` caps every thread pool of the
    stage (BLAS, numba, processes). ``scheduler``: a Dask scheduler address (or ``distributed.Client``)
    to read the BAMs and count tetramers on (:mod:`deepmetabin._parallel`); same results.
    With BAMs, the depth of the reads placed with MAPQ >= 1 is kept too (``unique:<sample>`` columns of
    ``contigs.parquet``) and shapes the depth features (:func:`deepmetabin.features.strain_depth`);
    ``strain_depth=False`` leaves it out (features from the plain depth, as from a depth table).
    """
    out = Path(out)
    t0 = time.perf_counter()
    _prepare_out(out, force)
    with thread_limits(threads):
        return _features(contigs_path, out, bams, depth_table, min_length, threads, force, depth_progress, tnf_progress,
                         sample_separator, scheduler, t0, strain_depth)


#: Per-BAM depth columns of an unfinished features stage (inside the run folder).
DEPTH_CACHE = "depth_cache"


def _features(contigs_path: str | os.PathLike[str], out: Path, bams: Sequence[str | os.PathLike[str]] | None,
              depth_table: str | os.PathLike[str] | None, min_length: int, threads: int, force: bool,
              depth_progress: Progress | None, tnf_progress: Progress | None, sample_separator: str | None,
              scheduler: Scheduler, t0: float, strain_depth: bool = True) -> dict[str, Any]:
    from .depth import depth_from_bams, read_depth_table, sample_name
    from .features import features, feature_names
    from .tnf import tnf

    contigs = read_contigs(contigs_path, min_length=min_length)
    if (bams is None) == (depth_table is None):
        raise ValueError("give exactly one of bams or depth_table")
    if bams is not None:
        if sample_separator:
            _check_sample_columns(contigs.ids, sample_separator, [sample_name(Path(b).name) for b in bams], str(bams[0]), str(contigs_path))
        depth, unique, samples = depth_from_bams(bams, contigs, threads=threads, progress=depth_progress,
                                                 cache_dir=out / DEPTH_CACHE, scheduler=scheduler, unique=True)
        inputs: dict[str, Any] = {"bams": [{"path": str(Path(b).resolve()), "size": Path(b).stat().st_size} for b in bams]}
    else:
        depth, samples = read_depth_table(depth_table, contigs)
        unique = None  # a depth table has no mapping qualities
        if sample_separator:
            _check_sample_columns(contigs.ids, sample_separator, samples, str(depth_table), str(contigs_path))
        inputs = {"depth_table": {"path": str(Path(depth_table).resolve()), "sha256": file_sha256(depth_table)}}
    contigs = contigs.with_depth(depth, samples, unique if strain_depth else None)
    inputs["contigs"] = {"path": str(Path(contigs_path).resolve()), "sha256": file_sha256(contigs_path), "min_length": min_length}
    t = tnf(contigs, threads=threads, progress=tnf_progress, scheduler=scheduler)
    x = features(contigs, t)

    if force and out.exists():
        for stale in out.iterdir():  # a replaced run must not keep another run's artefacts
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    manifest = new_manifest(contigs.ids_hash, len(contigs), inputs)
    save_parquet(out / "contigs.parquet", contigs.to_frame(), metadata={"ids_hash": contigs.ids_hash})
    save_npy(out / "tnf.npy", t)
    save_npy(out / "features.npy", x)
    manifest = record_stage(
        out, manifest, "features",
        params={"min_length": min_length, "samples": list(samples), "feature_names": feature_names(samples),
                "strain_depth": contigs.unique_depth is not None},
        outputs={"contigs": "contigs.parquet", "tnf": "tnf.npy", "features": "features.npy"},
        seconds=time.perf_counter() - t0,
        extra={"n_bp": contigs.total_bp, "n_samples": len(samples), "n_features": int(x.shape[1])},
    )
    shutil.rmtree(out / DEPTH_CACHE, ignore_errors=True)  # the depth is in contigs.parquet now
    return manifest


def load_frame(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``contigs.parquet`` of a run (contig, length, gc, depth:<sample>... [, unique:<sample>...] ), checked
    against the manifest."""
    manifest = require_stage(run_dir, "features", "deepmetabin features")
    from ._io import parquet_metadata

    path = Path(run_dir) / "contigs.parquet"
    if parquet_metadata(path).get("ids_hash") != manifest["ids_hash"]:
        raise RunFolderError(f"{path}: belongs to other contigs than {run_dir}/manifest.json; run `deepmetabin features` again")
    return pd.read_parquet(path)


def load_array(run_dir: str | os.PathLike[str], name: str) -> np.ndarray:
    """An ``.npy`` artefact of the features stage (``features`` or ``tnf``), shape-checked against the run."""
    manifest = require_stage(run_dir, "features", "deepmetabin features")
    arr = np.load(Path(run_dir) / f"{name}.npy", allow_pickle=False)
    if arr.shape[0] != manifest["n_contigs"]:
        raise RunFolderError(f"{run_dir}/{name}.npy: {arr.shape[0]} rows for {manifest['n_contigs']} contigs; run `deepmetabin features` again")
    return arr


def load_contigs(run_dir: str | os.PathLike[str], sequences: bool = True) -> Contigs:
    """The run's contigs with their depth: re-read from its input FASTA (sequences included), checking
    the ids hash; or, with ``sequences=False``, from ``contigs.parquet`` alone (ids, lengths, GC, depth),
    without holding the sequences (medium: 78 MB less) — :meth:`Contigs.sequences` then reads them from
    the FASTA one at a time (the bins stage writes the bins' FASTA that way).

    Raises:
        RunFolderError: the FASTA moved, or now holds other contigs than the run was made from.
    """
    manifest = require_stage(run_dir, "features", "deepmetabin features")
    src = manifest["inputs"]["contigs"]
    if not Path(src["path"]).exists():
        raise RunFolderError(f"{run_dir}: its contigs FASTA {src['path']} is gone; restore it or run `deepmetabin features` again")
    frame = load_frame(run_dir)
    samples = manifest["stages"]["features"]["params"]["samples"]
    depth = frame[[f"depth:{s}" for s in samples]].to_numpy(np.float32)
    unique_cols = [f"unique:{s}" for s in samples]
    unique = frame[unique_cols].to_numpy(np.float32) if all(c in frame for c in unique_cols) else None
    if not sequences:
        return Contigs.from_table(ContigTable.from_frame(frame), str(src["path"])).with_depth(depth, samples, unique)
    contigs = read_contigs(src["path"], min_length=src["min_length"])
    if contigs.ids_hash != manifest["ids_hash"]:
        raise RunFolderError(f"{src['path']}: now holds other contigs than run {run_dir} was made from; run `deepmetabin features` again")
    return contigs.with_depth(depth, samples, unique)


def graph_stage(
    run_dir: str | os.PathLike[str],
    *,
    k: int = 3,
    eps: float | None = None,
    eps_quantile: float | None = None,
    min_samples: int | None = None,
    max_distance: float | None = None,
    method: str = "auto",
    seed: int = 0,
    threads: int = 1,
    refine: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Add ``graph.npz`` (refined k-NN graph, see :mod:`deepmetabin.graph`) and ``graph_labels.tsv``
    (contig, seed cluster, propagated label, k-NN and refined degree) to a run folder; return the manifest.

    ``None`` options take the defaults of :func:`deepmetabin.graph.refine`; ``refine=False`` keeps
    the whole k-NN graph (:func:`deepmetabin.graph.unrefined`, for ablations).
    """
    from ._io import write_text
    from . import graph as G

    t0 = time.perf_counter()
    manifest = require_stage(run_dir, "features", "deepmetabin features")
    x = load_array(run_dir, "features")
    ids = load_frame(run_dir)["contig"].to_numpy()
    knn = G.knn_graph(x, k, method=method, seed=seed, threads=threads, ids=ids, progress=progress)
    opts: dict[str, Any] = {"eps": eps, "max_distance": max_distance}
    if eps_quantile is not None:
        opts["eps_quantile"] = eps_quantile
    if min_samples is not None:
        opts["min_samples"] = min_samples
    refined = G.refine(knn, **opts) if refine else G.unrefined(knn)
    G.save_graph(Path(run_dir) / "graph.npz", refined, ids_hash=manifest["ids_hash"])
    labels = pd.DataFrame({
        "contig": ids, "seed": refined.seeds, "label": refined.labels,
        "degree_knn": G.degree(knn), "degree": G.degree(refined.graph),
    })
    write_text(Path(run_dir) / "graph_labels.tsv", labels.to_csv(sep="\t", index=False))
    return record_stage(
        run_dir, manifest, "graph",
        params={"k": k, "method": method, "seed": seed, **refined.params},
        outputs={"graph": "graph.npz", "labels": "graph_labels.tsv"},
        seconds=time.perf_counter() - t0,
        extra={"counts": refined.counts},
    )


def load_run_graph(run_dir: str | os.PathLike[str]) -> Any:
    """The run's refined graph (a :class:`deepmetabin.graph.Refined`), checked against the run's contigs."""
    from .graph import load_graph

    manifest = require_stage(run_dir, "graph", "deepmetabin graph --run DIR")
    return load_graph(Path(run_dir) / "graph.npz", ids_hash=manifest["ids_hash"])


def markers_stage(
    run_dir: str | os.PathLike[str],
    *,
    threads: int | CoreShare = 1,
    marker_sets: Sequence[str] | None = None,
    progress: Progress | None = None,
    scheduler: Scheduler = None,
    gene_mode: str = "trained",
) -> dict[str, Any]:
    """Add ``markers.tsv`` (single-copy marker hits, :mod:`deepmetabin.markers`) to a run folder.

    Hits are reused when ``markers.tsv`` is intact and was made from the same contig sequences and
    marker set versions and gene mode; a damaged file is recomputed. ``marker_sets`` default: ``sc107``
    (genome count, cannot-links) and ``checkm_bacteria`` (completeness / contamination). ``gene_mode``: one of
    :data:`deepmetabin.markers.GENE_MODES` (genes by models trained on the contigs, or Prodigal's meta mode). ``scheduler``: a Dask
    scheduler address (or ``distributed.Client``) to call genes and search them on, per chunk of
    contigs; same hits.
    """
    from .markers import DEFAULT_STAGE_SETS, cached_markers, estimate_genomes, set_versions

    t0 = time.perf_counter()
    sets = tuple(marker_sets or DEFAULT_STAGE_SETS)
    contigs = load_contigs(run_dir)
    # no thread_limits here: gene calling and the search size their own pools by ``threads``, and this
    # stage may run beside training, whose torch pool a process-wide cap would change
    hits = cached_markers(contigs, Path(run_dir) / "markers.tsv", marker_sets=sets, threads=threads, progress=progress,
                          scheduler=scheduler, gene_mode=gene_mode, release_sequences=True)  # ours: the search needs only ids
    del contigs
    count_set = "sc107" if "sc107" in hits else sets[0]
    return record_stage(
        run_dir, None, "markers",
        params={"marker_sets": set_versions(sets), "gene_mode": gene_mode},
        outputs={"markers": "markers.tsv"},
        seconds=time.perf_counter() - t0,
        extra={
            "n_hits": {s: len(h) for s, h in hits.items()},
            "n_markers_found": {s: int(h["marker"].nunique()) for s, h in hits.items()},
            "genomes_estimate": {"set": count_set, "value": estimate_genomes(hits[count_set])},
        },
    )


def load_markers(run_dir: str | os.PathLike[str], marker_set: str = "sc107") -> pd.DataFrame:
    """The run's hits table of ``marker_set`` (:data:`deepmetabin.markers.COLUMNS`), checked against the run.

    Raises:
        RunFolderError: the markers stage has not run, its file is damaged, belongs to other contigs, or
            lacks ``marker_set``.
    """
    from .errors import MarkerCacheError
    from .markers import read_markers

    manifest = require_stage(run_dir, "markers", "deepmetabin markers --run DIR")
    path = Path(run_dir) / "markers.tsv"
    try:
        key, hits = read_markers(path)
    except MarkerCacheError as exc:
        raise RunFolderError(str(exc)) from None
    if key.get("ids_hash") != manifest["ids_hash"]:
        raise RunFolderError(f"{path}: belongs to other contigs than {run_dir}/manifest.json; run `deepmetabin markers --run DIR` again")
    if marker_set not in hits:
        raise RunFolderError(
            f"{path}: has no '{marker_set}' hits (it has {sorted(hits)}); run `deepmetabin markers --run DIR --sets {marker_set}`"
        )
    return hits[marker_set]


# ------------------------------------------------------------------------------------ training
def train_stage(
    run_dir: str | os.PathLike[str],
    config: Any = None,
    *,
    resume: bool = True,
    callbacks: Sequence[Callable[[Any], None]] = (),
    stop: Callable[[], bool] | None = None,
    restart_on_mismatch: bool = False,
) -> dict[str, Any]:
    """Train the GMVAE on the run's features and refined graph; write ``model.pt``, ``latent.npy``
    (N x d float32 latent means), ``components.npy`` ((N,) int32 most probable GMVAE component) and
    ``history.parquet`` (one row per epoch); return the manifest.

    A checkpoint ``train.ckpt`` is written every ``config.checkpoint_every`` epochs; with ``resume``
    a killed run continues from it (same settings, features and graph required; otherwise an error,
    or with ``restart_on_mismatch`` a fresh start).
    """
    from .train import TrainConfig, train

    config = config or TrainConfig()
    t0 = time.perf_counter()
    manifest = require_stage(run_dir, "graph", "deepmetabin graph --run DIR")
    x = load_array(run_dir, "features")
    graph = load_run_graph(run_dir).graph
    run = Path(run_dir)
    trained = train(x, graph, config, callbacks=callbacks, checkpoint=run / "train.ckpt", resume=resume,
                    ids_hash=manifest["ids_hash"], stop=stop,
                    restart_on_mismatch=restart_on_mismatch)
    trained.save(run / "model.pt")
    latent, proba = trained.encode(x)
    save_npy(run / "latent.npy", latent)
    save_npy(run / "components.npy", proba.argmax(1).astype(np.int32))  # most probable GMVAE component (the app's colouring)
    save_parquet(run / "history.parquet", trained.history, metadata={"ids_hash": manifest["ids_hash"]})
    from dataclasses import asdict

    return record_stage(
        run_dir, None, "train",
        params=json_safe(asdict(config)),
        outputs={"model": "model.pt", "latent": "latent.npy", "components": "components.npy", "history": "history.parquet"},
        seconds=time.perf_counter() - t0,
        extra={"epochs_run": int(len(trained.history)), "best_epoch": int(trained.best_epoch), "device": trained.device,
               "bandwidth": float(trained.extra["bandwidth"])},
    )


def json_safe(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python numbers, recursively (for manifest.json)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ------------------------------------------------------------------------ clustering + export
def bins_stage(
    run_dir: str | os.PathLike[str],
    *,
    k_factor: float = 7 / 8,
    split: bool = True,
    min_completeness: float = 90.0,
    min_contamination: float = 5.0,
    min_bin_bp: int = 200_000,
    seed: int = 0,
    multi_split: str | None = None,
    min_composition_silhouette: float | None = 0.12,
    assign: str = "gmm",
    min_depth_silhouette: float | None = 0.5,
    merge_fragments: bool = True,
    move_islands: bool = True,
    progress: Progress | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Cluster the latent means into bins and write them; return the manifest.

    K = round(``k_factor`` x the genome count estimated from ``sc107`` markers). Without any marker
    hit, K = the number of GMVAE components that hold the most probable component of at least 1 %
    of the contigs (a warning is logged). Then: GMM -> split of contaminated clusters with
    cannot-links (``split``; a split is kept only when its parts differ in TNF composition, silhouette
    >= ``min_composition_silhouette``, None = always keep; a cluster that fails it is split by depth
    alone when ``min_depth_silhouette`` is set, there are >= 2 samples and its parts' depth silhouette
    reaches it) -> fragments (clusters below 50 % completeness) joined to the cluster their k-NN graph
    edges point to unless that adds contamination (``merge_fragments``,
    :func:`deepmetabin.cluster.merge_fragments`) -> islands (groups of a cluster's contigs without a k-NN
    edge to the rest of it) moved to the cluster their edges point to unless that adds contamination
    (``move_islands``, :func:`deepmetabin.cluster.move_islands`; not with ``multi_split``, whose per-sample
    graph is too sparse) -> clusters < ``min_bin_bp`` unbinned. Writes ``bins.tsv``,
    ``bins.cami``, ``unbinned.tsv``, ``quality.tsv`` and ``bins/<bin>.fna``.

    ``multi_split`` (a separator such as ``"C"``): contig ids are ``<sample><separator>...``; K comes
    from the largest per-sample genome estimate, clusters are split by sample before the
    contamination split, cannot-links join contigs of one sample only, and bins are named
    ``<sample>_bin_<j>`` and written to ``bins/<sample>/`` (see :mod:`deepmetabin.multisample`).

    ``assign="posterior"`` (for ablations) replaces the GMM by the GMVAE's own most probable
    component argmax q(y|x) (K is then the model's component count, not the marker estimate).

    ``progress(step, max_steps)`` after each EM step of the GMM; ``device``: where the GMM runs
    ("auto" = CUDA when present).
    """
    if assign not in ("gmm", "posterior"):
        raise ValueError(f"assign must be 'gmm' or 'posterior', got {assign!r}")
    from .bins import BinSet
    from .cluster import cannot_link_violations, drop_small, gmm, split_contaminated
    from .markers import cannot_links, estimate_genomes
    from .quality import bin_quality

    t0 = time.perf_counter()
    require_stage(run_dir, "train", "deepmetabin train --run DIR")
    manifest = require_stage(run_dir, "markers", "deepmetabin markers --run DIR")
    run = Path(run_dir)
    latent = np.load(run / "latent.npy")
    contigs = load_contigs(run_dir, sequences=False)  # the bins' FASTA reads them one at a time
    sc, checkm = load_markers(run_dir, "sc107"), load_markers(run_dir, "checkm_bacteria")
    samples = None
    if multi_split:
        from .multisample import per_sample_estimates, sample_of

        samples = sample_of(contigs.ids, multi_split, source=str(contigs.source))
        per_sample = per_sample_estimates(sc, contigs.ids, samples)
        estimate = max(per_sample.values())
        est_rule = f"{estimate} genomes (largest per-sample sc107 estimate of {len(per_sample)} samples)"
    else:
        estimate = estimate_genomes(sc)
        est_rule = f"{estimate} genomes from sc107 markers"
    if estimate > 0:
        k, k_rule = max(1, int(round(k_factor * estimate))), f"round({k_factor:.3g} x {est_rule})"
    else:
        from .train import Trained

        proba = Trained.load(run / "model.pt", ids_hash=manifest["ids_hash"]).predict_proba(load_array(run_dir, "features"))
        share = np.bincount(proba.argmax(1), minlength=proba.shape[1]) / len(proba)
        k, k_rule = max(1, int((share >= 0.01).sum())), "no marker genes found: GMVAE components holding >= 1% of contigs"
        log.warning("%s: no single-copy marker gene found; K = %d (%s)", run_dir, k, k_rule)
    if assign == "gmm":
        from .train import pick_device

        labels = gmm(latent, k, seed=seed, progress=progress, device=str(pick_device(device)))
    else:
        from .train import Trained

        model = Trained.load(run / "model.pt", ids_hash=manifest["ids_hash"])
        _, labels = np.unique(model.predict_proba(load_array(run_dir, "features")).argmax(1), return_inverse=True)
        k, k_rule = int(labels.max()) + 1, "argmax q(y|x) of the GMVAE (no GMM)"
    n_clusters = int(labels.max()) + 1
    save_npy(run / "clusters.npy", labels.astype(np.int32))  # the GMM clusters before splits (the app's colouring)
    links = cannot_links(sc, contigs)
    if samples is not None:
        from .multisample import same_sample_links, split_labels_by_sample

        labels, _ = split_labels_by_sample(labels, samples)
        links = same_sample_links(links, samples)
    quality = bin_quality(labels, checkm, contigs)
    if split:
        from .tnf import TNF_DIM

        feats = load_array(run_dir, "features")
        composition = feats[:, :TNF_DIM] if min_composition_silhouette is not None else None
        # two samples at least: in one dimension, halving a single genome's depth noise already scores a
        # silhouette near 0.5, so one column cannot tell strains from noise
        depth = feats[:, TNF_DIM:] if min_depth_silhouette is not None and feats.shape[1] - TNF_DIM >= 2 else None
        labels = split_contaminated(latent, labels, links, quality, min_completeness=min_completeness,
                                    min_contamination=min_contamination, composition=composition,
                                    min_composition_silhouette=min_composition_silhouette or 0.0, depth=depth,
                                    min_depth_silhouette=min_depth_silhouette or 0.0, seed=seed)
    fragments_joined = islands_moved = 0
    if merge_fragments or move_islands:
        refined = load_run_graph(run_dir)
        knn = refined.knn if refined.knn is not None else refined.graph
    if merge_fragments:
        from .cluster import merge_fragments as join_fragments

        before = len(np.unique(labels[labels >= 0]))
        labels = join_fragments(labels, knn, checkm, contigs, groups=samples)
        fragments_joined = before - len(np.unique(labels[labels >= 0]))
    if move_islands and samples is not None:
        # measured on the multi dataset: 67 % of the k-NN edges join a contig to its copy in another sample's
        # assembly and are dropped, leaving 1.8 edges per contig (none for 28 %): islands there are noise
        # (F1 0.976 -> 0.964, NC 23 -> 20 with them)
        log.info("islands not moved: with --multi-split too few k-NN edges stay inside a sample")
    elif move_islands:
        from .cluster import move_islands as move

        before_labels = labels
        labels = move(labels, knn, checkm, contigs, groups=samples)
        islands_moved = int((labels != before_labels).sum())
    labels = drop_small(labels, contigs.lengths, min_bin_bp)
    binset = BinSet.from_labels(contigs.ids, labels)
    group = None
    if samples is not None:
        names = np.array([f"{smp}_bin_{l}" if l >= 0 else "" for smp, l in zip(samples, labels)], dtype=object)
        binset = BinSet(contigs.ids, names)
        sample_by_bin = {n: smp for n, smp in zip(names, samples) if n}
        group = sample_by_bin.get
    named = np.where(binset.assignment == "", None, binset.assignment)
    quality = bin_quality(named, checkm, contigs)
    # the FASTA first: it reads the sequences again, and a FASTA changed since the features stage stops
    # the stage before any of its other outputs is replaced
    binset.write_fasta(run / "bins", contigs, group=group)
    binset.write_tsv(run / "bins.tsv")
    binset.write_cami(run / "bins.cami", sample_id=run.name)
    binset.write_unbinned(run / "unbinned.tsv")
    from ._io import write_text

    write_text(run / "quality.tsv", quality.to_csv(sep="\t", index=False, float_format="%.2f"))
    binned_bp = float(contigs.lengths[labels >= 0].sum() / contigs.total_bp)
    return record_stage(
        run_dir, None, "bins",
        params={"k_factor": k_factor, "split": split, "min_completeness": min_completeness,
                "min_contamination": min_contamination, "min_bin_bp": min_bin_bp, "seed": seed, "multi_split": multi_split,
                "min_composition_silhouette": min_composition_silhouette, "assign": assign,
                "min_depth_silhouette": min_depth_silhouette, "merge_fragments": merge_fragments, "move_islands": move_islands},
        outputs={"bins": "bins.tsv", "cami": "bins.cami", "unbinned": "unbinned.tsv", "quality": "quality.tsv", "fasta": "bins",
                 "clusters": "clusters.npy"},
        seconds=time.perf_counter() - t0,
        extra={"k": k, "k_rule": k_rule, "gmm_init": "best of k-means runs (cluster.gmm default)" if assign == "gmm" else None,
               "genomes_estimate": int(estimate), "gmm_clusters": n_clusters, "fragments_joined": fragments_joined,
               "contigs_moved_as_islands": islands_moved,
               "n_bins": len(binset.bins), "high": int((quality["tier"] == "high").sum()),
               "medium": int((quality["tier"] == "medium").sum()), "binned_bp": binned_bp,
               "cannot_link_violations": cannot_link_violations(labels, links)},
    )


# ------------------------------------------------------------------------------------ 2-D map
def map_stage(run_dir: str | os.PathLike[str], *, seed: int = 0, max_fit: int = 100_000,
              progress: Progress | None = None) -> dict[str, Any]:
    """Add ``umap.npy`` ((N, 2) float32 UMAP of the latent means, :mod:`deepmetabin.embedding`) and
    ``umap.json`` to a trained run: the app's latent map and graph layout, made once here so the app
    opens the run at once. ``progress(contigs_placed, N)``."""
    from .embedding import umap_coords

    t0 = time.perf_counter()
    manifest = require_stage(run_dir, "train", "deepmetabin train --run DIR")
    latent = np.load(Path(run_dir) / "latent.npy")
    umap_coords(run_dir, latent, manifest["ids_hash"], seed=seed, max_fit=max_fit, progress=progress)
    return record_stage(run_dir, None, "map", params={"seed": seed, "max_fit": max_fit, "n_neighbors": 15},
                        outputs={"umap": "umap.npy", "key": "umap.json"}, seconds=time.perf_counter() - t0,
                        extra={"fitted_on": int(min(max_fit, len(latent)))})


# ------------------------------------------------------------------------------ whole pipeline
@dataclass
class Config:
    """Settings of a whole ``deepmetabin bin`` run (each stage's part is compared to decide reuse)."""

    min_length: int = 1000
    k: int = 3
    train: Any = None  # TrainConfig; None = defaults
    k_factor: float = 7 / 8
    split: bool = True
    min_completeness: float = 90.0
    min_contamination: float = 5.0
    min_bin_bp: int = 200_000
    seed: int = 0
    threads: int = 1
    multi_split: str | None = None  # sample separator of the contig ids in multi-sample mode
    min_composition_silhouette: float | None = 0.12  # keep a split only if its parts differ in TNF
    refine: bool = True  # False: train on the unrefined k-NN graph (ablation)
    assign: str = "gmm"  # "posterior": argmax q(y|x) instead of the GMM (ablation)
    # a strain mixture (split fails the TNF gate) is split by depth alone when its parts' depth silhouette
    # reaches this (None = never): medium F1 +0.004, NC 9.0 -> 9.7 over 3 seeds, small unchanged (ABLATION.md)
    min_depth_silhouette: float | None = 0.5
    merge_fragments: bool = True  # join marker-poor clusters to the cluster their k-NN edges point to (cluster.merge_fragments)
    # move a cluster's k-NN islands to the cluster their edges point to (cluster.move_islands): 3 seeds,
    # small F1 0.942 -> 0.948, NC 6.3 -> 7.0; medium F1 0.852 -> 0.866 (benchmarks/ABLATION.md, no-islands)
    move_islands: bool = True
    gene_mode: str = "trained"  # markers.GENE_MODES: Prodigal models trained on the contigs by GC group, or "meta"
    map: bool = True  # the app's 2-D UMAP of the latent means, as the last stage (False: the app makes it)
    # with BAMs, shape the depth features by the uniquely placed reads (features.strain_depth); False: plain depth
    strain_depth: bool = True

    def stage_requests(self) -> dict[str, dict[str, Any]]:
        from dataclasses import asdict

        from .train import TrainConfig

        tc = self.train or TrainConfig(seed=self.seed)
        return {
            "features": {"min_length": self.min_length, **({} if self.strain_depth else {"strain_depth": False})},
            "graph": {"k": self.k, "seed": self.seed, **({} if self.refine else {"refine": False})},
            "markers": {"gene_mode": self.gene_mode},
            "train": json_safe({k: v for k, v in asdict(tc).items() if k not in ("threads", "device")}),
            "bins": {"k_factor": self.k_factor, "split": self.split, "min_completeness": self.min_completeness,
                     "min_contamination": self.min_contamination, "min_bin_bp": self.min_bin_bp, "seed": self.seed,
                     "multi_split": self.multi_split, "min_composition_silhouette": self.min_composition_silhouette,
                     **({} if self.assign == "gmm" else {"assign": self.assign}),
                     "min_depth_silhouette": self.min_depth_silhouette, "merge_fragments": self.merge_fragments,
                     "move_islands": self.move_islands},
            "map": {"seed": self.seed, "max_fit": 100_000, "n_neighbors": 15},
        }


STAGES = ("features", "graph", "markers", "train", "bins", "map")
_UPSTREAM = {"features": (), "graph": ("features",), "markers": ("features",), "train": ("graph",), "bins": ("graph", "train", "markers"),
             "map": ("train",)}


def _inputs_signature(contigs: str | os.PathLike[str], bams: Sequence[str | os.PathLike[str]] | None,
                      depth_table: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Checksums (sizes and times for BAMs) of the inputs; a missing file reads as None (its stage reports it)."""
    def sha(p: str | os.PathLike[str] | None) -> str | None:
        return file_sha256(p) if p is not None and Path(p).is_file() else None

    sig: dict[str, Any] = {"contigs": sha(contigs)}
    if bams:
        sig["bams"] = [{"name": Path(b).name, "size": Path(b).stat().st_size, "mtime": int(Path(b).stat().st_mtime)}
                       if Path(b).is_file() else None for b in bams]
    else:
        sig["depth_table"] = sha(depth_table)
    return sig


def _check_sample_columns(ids: np.ndarray, separator: str, columns: Sequence[str], source: str, fasta: str) -> None:
    """Multi-split needs sample-prefixed ids and one depth column (BAM) named after every sample."""
    from .multisample import sample_of

    samples = sample_of(ids, separator, source=fasta)
    for s_ in pd.unique(samples):
        if s_ not in columns:
            first = ids[np.flatnonzero(samples == s_)[0]]
            what = f"BAM named {s_}.bam" if source.endswith((".bam", ".cram")) else f"depth column for sample {s_}"
            raise RunFolderError(
                f"{source}: sample '{s_}' (contig {first}) has no {what}; give one BAM per "
                f"sample, named after the sample (have: {', '.join(columns)})"
            )


def run(
    contigs: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    bams: Sequence[str | os.PathLike[str]] | None = None,
    depth_table: str | os.PathLike[str] | None = None,
    config: Config | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    on_stage: Callable[[str, str], None] | None = None,
    progress_for: Callable[[str], Any] | None = None,
    train_callbacks: Sequence[Callable[[Any], None]] = (),
    scheduler: Scheduler = None,
) -> "Run":
    """Run every stage (features -> graph -> markers -> train -> bins) into run folder ``out``.

    A stage is skipped when it already finished with the same settings and none of its upstream
    stages ran again; a killed run continues where it stopped (training from its checkpoint) when
    called again with ``resume=True``. An ``out`` that holds a run of other inputs is refused
    unless ``force``.

    Args:
        on_stage: called ``(stage, "start" | "skip" | "done")``.
        progress_for: ``stage -> progress(done, total)`` callback factory (e.g. tqdm bars).
        train_callbacks: epoch callbacks of the training loop.
        scheduler: a Dask scheduler address (``tcp://host:8786``) or ``distributed.Client``: depth per
            BAM, TNF and marker genes per chunk run on that cluster (same results); the rest, training
            included, runs here. ``config.threads`` caps this process's thread pools in every stage.
    """
    fix_mmap_threshold()  # large arrays handed back when freed (the run's peak RSS: -60 to -100 MB)
    from .markers import DEFAULT_STAGE_SETS
    from .train import TrainConfig, training_threads

    config = config or Config()
    out = Path(out)
    requests = config.stage_requests()
    signature = _inputs_signature(contigs, bams, depth_table)
    manifest = load_manifest(out, must_exist=False)
    if manifest and not force:
        same = manifest.get("signature") == signature
        if not same:
            raise RunFolderError(f"{out}: already holds a run of other inputs or settings; choose another --out or pass --force to replace it")
        if not resume:
            raise RunFolderError(f"{out}: already holds a run of these inputs; pass --resume to continue or reuse it, or --force to start over")
    rerun: set[str] = set()

    def note(stage: str, what: str) -> None:
        if on_stage:
            on_stage(stage, what)

    def needed(stage: str) -> bool:
        st = load_manifest(out, must_exist=False).get("stages", {}).get(stage) if out.exists() else None
        return (force and stage == "features") or not st or st.get("status") != "done" or st.get("request") != requests[stage] \
            or any(u in rerun for u in _UPSTREAM[stage])

    def mark(stage: str, beside: str | None) -> None:
        def change(m: dict[str, Any]) -> None:
            m["stages"][stage]["request"] = requests[stage]
            if beside:  # read by the CLI's summary (the stage's seconds overlap the other stage's)
                m["stages"][stage]["beside"] = beside
            if stage == "features":
                m["signature"] = signature

        update_manifest(out, change)
        rerun.add(stage)

    prog = progress_for or (lambda stage: None)
    tc = replace(config.train or TrainConfig(seed=config.seed), device=device, threads=config.threads)

    def run_stage(stage: str, abort: Background | None = None, threads: int | CoreShare = config.threads,
                  beside: str | None = None) -> None:
        note(stage, "start")
        if stage == "features":
            features_stage(contigs, out, bams=bams, depth_table=depth_table, min_length=config.min_length,
                           threads=config.threads, force=True, depth_progress=prog("depth"), tnf_progress=prog("tnf"),
                           sample_separator=config.multi_split, scheduler=scheduler, strain_depth=config.strain_depth)
        elif stage == "graph":
            graph_stage(out, k=config.k, seed=config.seed, threads=config.threads, refine=config.refine, progress=prog("graph"))
        elif stage == "markers":
            markers_stage(out, threads=threads, marker_sets=DEFAULT_STAGE_SETS, progress=prog("markers"),
                          scheduler=scheduler, gene_mode=config.gene_mode)
        elif stage == "train":
            # a checkpoint continues only the same training (a killed run); new inputs or settings start over
            def check(_event: Any) -> None:  # ends training, unrecorded, once the stage beside it failed
                if abort is not None and abort.failed:
                    raise _Aborted

            check.wants_latent = False  # type: ignore[attr-defined]
            train_stage(out, replace(tc, threads=train_threads), resume=True, callbacks=[*train_callbacks, check],
                        restart_on_mismatch=True)
        elif stage == "bins":
            bins_stage(out, k_factor=config.k_factor, split=config.split, min_completeness=config.min_completeness,
                       min_contamination=config.min_contamination, min_bin_bp=config.min_bin_bp, seed=config.seed,
                       multi_split=config.multi_split, min_composition_silhouette=config.min_composition_silhouette,
                       assign=config.assign, min_depth_silhouette=config.min_depth_silhouette,
                       merge_fragments=config.merge_fragments, move_islands=config.move_islands, progress=prog("bins"),
                       device=device)
        else:
            map_stage(out, seed=config.seed, max_fit=requests["map"]["max_fit"], progress=prog("map"))
        mark(stage, beside)
        release_memory()
        note(stage, "done")

    train_threads = training_threads(config.threads)  # the same with or without the markers beside (same model)
    markers: Background | None = None  # the markers stage, when it runs beside training
    mapper: Background | None = None  # the map stage, when it runs beside the bins stage
    cores = CoreShare(config.threads)
    with thread_limits(config.threads), contextlib.ExitStack() as held:  # held: the cores training holds
        for stage in STAGES:
            if stage == "map" and not config.map:
                continue
            if stage == "bins" and markers is not None:
                held.close()
                markers.join()
                markers = None
            if not needed(stage):
                note(stage, "skip")
                continue
            if stage == "markers" and config.threads >= 2 and needed("train"):
                # Markers beside training. Training holds a quarter of the cores, at least one (a fixed torch
                # thread count: its results depend on it); the markers use the others, and its too once it ends: gene
                # calling and the search ask the CoreShare before each chunk / profile. Both at full speed
                # (3 threads on 2 cores slowed epochs 1.1 -> 1.8 s on medium) and no core idles at the end.
                held.enter_context(cores.hold(train_threads))
                markers = Background(lambda: run_stage("markers", threads=cores, beside="train"), name="deepmetabin-markers")
                continue
            if stage == "bins" and config.map and config.threads >= 2 and needed("map"):
                # The map beside the bins stage: both need only the latent means and use one core each (the
                # map's layout epochs release the GIL: embedding._release_gil_in_layout); on medium the run's
                # single-core tail went 9.9 -> ~6 s.
                _import_tail()
                with thread_limits(max(1, config.threads // 2)):  # half the cores each (set here: pools are process-wide)
                    mapper = Background(lambda: run_stage("map", beside="bins"), name="deepmetabin-map")
                    try:
                        run_stage("bins")
                    except Exception:
                        with contextlib.suppress(Exception):  # the bins stage's error is the one to report
                            mapper.join()
                        raise
                    mapper.join()
                continue
            if stage == "map" and mapper is not None:
                continue  # ran beside the bins stage
            if stage == "train" and markers is not None:
                try:
                    run_stage("train", abort=markers)
                except _Aborted:
                    markers.join()  # raises the markers stage's error
                    raise
                finally:
                    held.close()
                continue
            run_stage(stage)
    return Run.load(out)


def _import_tail() -> None:
    """Import what the bins and map stages use, here, before they run in two threads: a package imported
    by two threads at once can meet itself half-initialised (scikit-learn did: ImportError 'clone')."""
    from . import cluster  # noqa: F401 - scikit-learn, scipy.optimize
    from .embedding import load_umap

    load_umap()


class _Aborted(Exception):
    """Training ended because the markers stage running beside it failed."""


@dataclass
class Run:
    """A finished (or partial) run folder, for notebooks and the app: ``Run.load(path)``."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Run":
        return cls(Path(path), load_manifest(path))

    def done(self, stage: str) -> bool:
        return self.manifest.get("stages", {}).get(stage, {}).get("status") == "done"

    @property
    def frame(self) -> pd.DataFrame:
        return load_frame(self.path)

    @property
    def features(self) -> np.ndarray:
        return load_array(self.path, "features")

    @property
    def latent(self) -> np.ndarray:
        require_stage(self.path, "train", "deepmetabin train --run DIR")
        return np.load(self.path / "latent.npy")

    @property
    def history(self) -> pd.DataFrame:
        require_stage(self.path, "train", "deepmetabin train --run DIR")
        return pd.read_parquet(self.path / "history.parquet")

    @property
    def graph(self) -> Any:
        return load_run_graph(self.path)

    def markers(self, marker_set: str = "sc107") -> pd.DataFrame:
        return load_markers(self.path, marker_set)

    @property
    def quality(self) -> pd.DataFrame:
        require_stage(self.path, "bins", "deepmetabin bin")
        return pd.read_csv(self.path / "quality.tsv", sep="\t")

    def bins(self) -> Any:
        """The automatic bins as a :class:`deepmetabin.bins.BinSet`."""
        from .bins import BinSet
        from .evaluate import read_binning

        require_stage(self.path, "bins", "deepmetabin bin")
        return BinSet.from_frame(self.frame["contig"].to_numpy(), read_binning(self.path / "bins.tsv"))

    def summary(self) -> dict[str, Any]:
        """Bins, HQ/MQ counts, binned bp share and seconds per stage."""
        st = self.manifest.get("stages", {})
        b = st.get("bins", {})
        return {"bins": b.get("n_bins"), "high": b.get("high"), "medium": b.get("medium"), "binned_bp": b.get("binned_bp"),
                "seconds": {s: st[s].get("seconds") for s in STAGES if s in st}}
