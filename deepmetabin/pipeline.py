"""Stages over a run folder: each reads what earlier stages wrote, writes its artefacts atomically,
and records itself in ``manifest.json`` (see :mod:`deepmetabin.manifest`).

A notebook or the app calls the same functions the CLI calls.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import file_sha256, save_npy, save_parquet
from .contigs import Contigs, read_contigs
from .errors import InputFileError, RunFolderError
from .manifest import load_manifest, new_manifest, record_stage, require_stage

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
) -> dict[str, Any]:
    """Create run folder ``out`` with ``contigs.parquet``, ``tnf.npy`` and ``features.npy``; return the manifest.

    All inputs are read and validated before anything is written, so bad input leaves no output.
    """
    from .depth import depth_from_bams, read_depth_table
    from .features import features, feature_names
    from .tnf import tnf

    out = Path(out)
    t0 = time.perf_counter()
    _prepare_out(out, force)
    contigs = read_contigs(contigs_path, min_length=min_length)
    if (bams is None) == (depth_table is None):
        raise ValueError("give exactly one of bams or depth_table")
    if bams is not None:
        depth, samples = depth_from_bams(bams, contigs, threads=threads, progress=depth_progress)
        inputs: dict[str, Any] = {"bams": [{"path": str(Path(b).resolve()), "size": Path(b).stat().st_size} for b in bams]}
    else:
        depth, samples = read_depth_table(depth_table, contigs)
        inputs = {"depth_table": {"path": str(Path(depth_table).resolve()), "sha256": file_sha256(depth_table)}}
    contigs = contigs.with_depth(depth, samples)
    inputs["contigs"] = {"path": str(Path(contigs_path).resolve()), "sha256": file_sha256(contigs_path), "min_length": min_length}
    t = tnf(contigs, threads=threads, progress=tnf_progress)
    x = features(contigs, t)

    if force and out.exists():
        for stale in out.iterdir():  # a replaced run must not keep another run's artefacts
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    manifest = new_manifest(contigs.ids_hash, len(contigs), inputs)
    save_parquet(out / "contigs.parquet", contigs.to_frame(), metadata={"ids_hash": contigs.ids_hash})
    save_npy(out / "tnf.npy", t)
    save_npy(out / "features.npy", x)
    return record_stage(
        out, manifest, "features",
        params={"min_length": min_length, "samples": list(samples), "feature_names": feature_names(samples)},
        outputs={"contigs": "contigs.parquet", "tnf": "tnf.npy", "features": "features.npy"},
        seconds=time.perf_counter() - t0,
        extra={"n_bp": contigs.total_bp, "n_samples": len(samples), "n_features": int(x.shape[1])},
    )


def load_frame(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``contigs.parquet`` of a run (contig, length, gc, depth:<sample>...), checked against the manifest."""
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


def load_contigs(run_dir: str | os.PathLike[str]) -> Contigs:
    """Re-read the run's contigs (sequences included) from its input FASTA, checking the ids hash.

    Raises:
        RunFolderError: the FASTA moved, or now holds other contigs than the run was made from.
    """
    manifest = require_stage(run_dir, "features", "deepmetabin features")
    src = manifest["inputs"]["contigs"]
    if not Path(src["path"]).exists():
        raise RunFolderError(f"{run_dir}: its contigs FASTA {src['path']} is gone; restore it or run `deepmetabin features` again")
    contigs = read_contigs(src["path"], min_length=src["min_length"])
    if contigs.ids_hash != manifest["ids_hash"]:
        raise RunFolderError(f"{src['path']}: now holds other contigs than run {run_dir} was made from; run `deepmetabin features` again")
    frame = load_frame(run_dir)
    samples = load_manifest(run_dir)["stages"]["features"]["params"]["samples"]
    depth = frame[[f"depth:{s}" for s in samples]].to_numpy(np.float32)
    return contigs.with_depth(depth, samples)
