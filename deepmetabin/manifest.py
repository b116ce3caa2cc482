"""The run folder's ``manifest.json``: inputs with checksums, each stage's parameters, outputs, status.

A run folder connects the CLI, the app and notebooks. Every stage records itself here after its
outputs were written (atomically), together with the hash of the contig ids its artefacts belong to.
"""
from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import __version__
from ._io import write_json
from .errors import RunFolderError

MANIFEST = "manifest.json"

#: Held while a stage entry is read-modified-written: stages of one run may finish in parallel threads
#: (markers beside training, :func:`deepmetabin.pipeline.run`).
MANIFEST_LOCK = threading.RLock()


def manifest_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / MANIFEST


def load_manifest(run_dir: str | os.PathLike[str], *, must_exist: bool = True) -> dict[str, Any]:
    """Read ``<run_dir>/manifest.json``; ``{}`` when absent and ``must_exist`` is false.

    Raises:
        RunFolderError: the folder or its manifest is missing (when ``must_exist``), or it is not valid JSON.
    """
    path = manifest_path(run_dir)
    if not path.exists():
        if must_exist:
            raise RunFolderError(
                f"{run_dir}: not a deepmetabin run folder (no {MANIFEST}); create one with "
                "`deepmetabin features --contigs ... --out DIR` first"
            )
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: corrupt manifest ({exc}); delete the run folder and run again") from None


def new_manifest(ids_hash: str, n_contigs: int, inputs: dict[str, Any]) -> dict[str, Any]:
    """A fresh manifest for a run over contigs whose ids hash to ``ids_hash``."""
    return {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"deepmetabin": __version__, "python": platform.python_version()},
        "ids_hash": ids_hash,
        "n_contigs": n_contigs,
        "inputs": inputs,
        "stages": {},
    }


def record_stage(
    run_dir: str | os.PathLike[str],
    manifest: dict[str, Any] | None,
    stage: str,
    *,
    params: dict[str, Any],
    outputs: dict[str, str],
    seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mark ``stage`` done in ``manifest`` (outputs are paths relative to the run folder) and save it atomically.

    ``manifest=None``: the one in the run folder, read under :data:`MANIFEST_LOCK` (what a stage that may
    run beside another one passes, so neither overwrites the other's entry with a stale copy).

    Also records ``peak_rss_mb``: the largest resident memory of this process so far, and of its
    largest finished child process (depth workers), in MB (Linux ``ru_maxrss``; a process-wide
    high-water mark, so the stage that raised it is the first whose value is that high).
    """
    import resource

    entry: dict[str, Any] = {
        "status": "done",
        "params": params,
        "outputs": outputs,
        "ids_hash": None,  # set below
        "seconds": round(float(seconds), 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    if extra:
        entry.update(extra)
    def put(m: dict[str, Any]) -> None:
        entry["ids_hash"] = m["ids_hash"]
        m.setdefault("stages", {})[stage] = entry

    if manifest is None:
        return update_manifest(run_dir, put)
    with MANIFEST_LOCK:
        put(manifest)
        write_json(manifest_path(run_dir), manifest)
    return manifest


def update_manifest(run_dir: str | os.PathLike[str], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the run folder's manifest, apply ``change`` (which edits it in place) and save it atomically, all
    under :data:`MANIFEST_LOCK`, so that stages finishing in parallel threads keep each other's entries.
    Returns the saved manifest.

    Raises:
        RunFolderError: no manifest in ``run_dir`` (see :func:`load_manifest`).
    """
    with MANIFEST_LOCK:
        manifest = load_manifest(run_dir)
        change(manifest)
        write_json(manifest_path(run_dir), manifest)
    return manifest


def require_stage(run_dir: str | os.PathLike[str], stage: str, how: str) -> dict[str, Any]:
    """The manifest, after checking that ``stage`` finished and its outputs exist and match the run's contigs.

    ``how`` names the command that produces the stage (used in the error message).

    Raises:
        RunFolderError: the stage has not run, an output is missing, or it belongs to other contigs.
    """
    manifest = load_manifest(run_dir)
    entry = manifest.get("stages", {}).get(stage)
    if not entry or entry.get("status") != "done":
        raise RunFolderError(f"{run_dir}: stage '{stage}' has not run in this run folder; run `{how}` first")
    if entry.get("ids_hash") != manifest.get("ids_hash"):
        raise RunFolderError(
            f"{run_dir}: the '{stage}' outputs belong to other contigs (ids hash {entry.get('ids_hash')} != "
            f"{manifest.get('ids_hash')}); run `{how}` again"
        )
    for name, rel in entry.get("outputs", {}).items():
        if not (Path(run_dir) / rel).exists():
            raise RunFolderError(f"{run_dir}: '{rel}' ({stage} output '{name}') is missing; run `{how}` again")
    return manifest
