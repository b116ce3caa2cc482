"""UI state over a run folder, in ``param.Parameterized`` classes that tests drive without a browser.

* :class:`RunData`: the read-only data of one finished run (frame, latent, markers, graph, UMAP).
  Safe to share between sessions: nothing in it changes after loading.
* :class:`CurationState`: one curator's session: a :class:`~deepmetabin.bins.BinSet`, the selected
  contig rows, edits with a quality *preview*, undo/redo, ``curation.json``, export.
* :class:`TrainingState`: training in a worker thread; epoch events through a queue the UI drains.

Each browser session creates its own :class:`CurationState` (never a module global), so two
curators do not see each other's edits until one saves.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import param

from .._io import temp_dir_beside
from ..bins import UNBINNED, BinSet, CurationError
from ..errors import DeepMetaBinError
from ..embedding import umap_coords
from ..pipeline import Run, load_contigs

log = logging.getLogger(__name__)


class ExportError(DeepMetaBinError):
    """An export name is empty or would leave the run's export folder."""


# ------------------------------------------------------------------------------------ helpers
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_export_name(name: str) -> str:
    """A folder name made of letters, digits, ``._-`` (others become ``_``), no leading dots.

    Raises:
        ExportError: nothing usable is left (empty, only dots or separators).
    """
    cleaned = re.sub(r"_+", "_", re.sub(r"\.{2,}", "_", _UNSAFE.sub("_", str(name).strip()))).strip("._-")
    if not cleaned:
        raise ExportError(f"export name {name!r} is empty once cleaned; use letters, digits, '.', '_' or '-'")
    return cleaned[:100]


# ------------------------------------------------------------------------------------ run data
class RunData:
    """Everything the views read from one run folder, loaded lazily and kept (read-only)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).resolve()
        self.run = Run.load(self.path)

    def reload(self) -> "RunData":
        return RunData(self.path)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.run.manifest

    @property
    def ids_hash(self) -> str:
        return self.manifest["ids_hash"]

    @cached_property
    def frame(self) -> pd.DataFrame:
        return self.run.frame

    @cached_property
    def ids(self) -> np.ndarray:
        return self.frame["contig"].astype(str).to_numpy()

    @property
    def samples(self) -> list[str]:
        return [c.split(":", 1)[1] for c in self.frame.columns if c.startswith("depth:")]

    @cached_property
    def contigs(self):
        """The :class:`~deepmetabin.contigs.Contigs` with sequences, read from the FASTA only when an
        export writes bins (the views need :attr:`table` only)."""
        return load_contigs(self.path)

    @cached_property
    def table(self):
        """Ids, lengths and GC of the contigs (a :class:`~deepmetabin.contigs.ContigTable`) for bin quality."""
        from ..contigs import ContigTable

        return ContigTable.from_frame(self.frame)

    @cached_property
    def latent(self) -> np.ndarray:
        return self.run.latent

    @cached_property
    def umap(self) -> np.ndarray:
        made = self.manifest.get("stages", {}).get("map", {}).get("params", {})  # the map stage's settings, if it ran
        return umap_coords(self.path, self.latent, self.ids_hash, **{k: made[k] for k in ("seed", "max_fit", "n_neighbors") if k in made})

    @cached_property
    def checkm(self) -> pd.DataFrame:
        return self.run.markers("checkm_bacteria")

    @cached_property
    def cannot_links(self) -> np.ndarray:
        """(M, 2) row pairs sharing an sc107 marker."""
        from ..markers import cannot_links

        return cannot_links(self.run.markers("sc107"), self.ids)

    @cached_property
    def graph(self):
        return self.run.graph

    @cached_property
    def components(self) -> np.ndarray | None:
        """(N,) most probable GMVAE component per contig (``components.npy`` of the train stage; older
        runs: from the model), or None when neither can be read."""
        saved = self.path / "components.npy"
        if saved.exists():
            comp = np.load(saved, allow_pickle=False)
            if comp.shape == (len(self.frame),):
                return comp.astype(np.int64)
        try:
            from ..train import Trained

            model = Trained.load(self.path / "model.pt", ids_hash=self.ids_hash)
            return model.predict_proba(self.run.features).argmax(1).astype(np.int64)
        except Exception as exc:  # noqa: BLE001 (the map simply lacks this colouring)
            log.warning("%s: no GMVAE components (%s)", self.path, exc)
            return None

    @cached_property
    def clusters(self) -> np.ndarray | None:
        """(N,) GMM cluster per contig before the contamination split (``clusters.npy`` of the bins stage), or
        None for runs made before it was saved."""
        saved = self.path / "clusters.npy"
        if saved.exists():
            labels = np.load(saved, allow_pickle=False)
            if labels.shape == (len(self.frame),):
                return labels.astype(np.int64)
        return None

    def base_bins(self) -> BinSet:
        return self.run.bins()

    @cached_property
    def point_frame(self) -> pd.DataFrame:
        return self.points()

    def points(self) -> pd.DataFrame:
        """One row per contig: contig, x, y (UMAP), length, log10 length, GC, log depth per sample (and log
        unique depth per sample for a run from BAMs), and the
        integer GMM cluster, GMVAE component, DBSCAN seed and propagated label (the views make them categorical)."""
        xy = self.umap
        f = self.frame
        out = pd.DataFrame({"row": np.arange(len(f)), "contig": self.ids, "x": xy[:, 0], "y": xy[:, 1],
                            "length": f["length"].to_numpy(), "log10_length": np.log10(f["length"].to_numpy()),
                            "gc": f["gc"].to_numpy(np.float64)})
        for s in self.samples:
            out[f"log_depth:{s}"] = np.log1p(f[f"depth:{s}"].to_numpy(np.float64))
        for s in self.samples:  # runs from BAMs: the depth of the uniquely placed reads (features.strain_depth)
            if f"unique:{s}" in f:
                out[f"log_unique:{s}"] = np.log1p(f[f"unique:{s}"].to_numpy(np.float64))
        if self.clusters is not None:
            out["cluster"] = self.clusters
        if self.components is not None:
            out["component"] = self.components
        if self.run.done("graph"):
            out["seed"] = self.graph.seeds
            out["label"] = self.graph.labels
        return out


# ------------------------------------------------------------------------------------ curation
def _auto_name(binset: BinSet) -> str:
    """The first free ``bin_<i>``, counting from the number of bins (as ``BinSet.split`` names them)."""
    taken = set(binset.assignment)
    i = len(taken)
    while f"bin_{i}" in taken:
        i += 1
    return f"bin_{i}"


ACTIONS = ["split", "move", "unbin", "merge", "accept"]


class CurationState(param.Parameterized):
    """One session's curation of a run: bins, selection, edits with preview, undo/redo, save, export.

    The selection is a list of contig rows (``Contigs`` order). Actions:

    * ``split``: selected contigs go to a new bin (``new_name`` or an automatic name); a selection
      inside one bin is logged as a split of that bin, one across bins as a move.
    * ``move``: selected contigs go to ``target`` (created if new).  * ``unbin``: selected contigs.
    * ``merge``: the bins in ``selected_bins`` (at least two) into the first.
    * ``accept``: each bin in ``selected_bins``.

    :meth:`preview` gives the completeness/contamination of the bins an action touches, now and after,
    without changing anything.
    """

    selection = param.List(default=[], item_type=int, doc="selected contig rows")
    selected_bins = param.List(default=[], doc="bins picked in the table")
    action = param.Selector(default="split", objects=ACTIONS)
    target = param.String(default="", doc="target bin of move")
    new_name = param.String(default="", doc="name of the bin a split creates (empty: automatic)")
    export_name = param.String(default="curated")
    message = param.String(default="")
    version = param.Integer(default=0, doc="bumped after every change of the bins")

    def __init__(self, data: RunData, *, resume_saved: bool = True, **params):
        super().__init__(**params)
        self.data = data
        self.base = data.base_bins()
        saved = data.path / "curation.json"
        self.binset = self.base.copy()
        if resume_saved and saved.exists():
            self.binset = BinSet.replay(self.base, BinSet.load_edits(saved))
            self.message = f"resumed {len(self.binset.edits)} saved edits from {saved.name}"
        self._quality: tuple[int, pd.DataFrame] | None = None

    # ---------------------------------------------------------------- selection
    def select_rows(self, rows) -> None:
        rows = np.unique(np.asarray(list(rows), dtype=np.int64))
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.data.ids)):
            raise CurationError(f"contig rows must lie in 0..{len(self.data.ids) - 1}")
        self.selection = [int(r) for r in rows]

    def select_ids(self, text_or_ids) -> None:
        """Select contigs by id (a list, or text with ids separated by commas, spaces or new lines)."""
        ids = re.split(r"[\s,;]+", text_or_ids.strip()) if isinstance(text_or_ids, str) else list(text_or_ids)
        self.select_rows(self.binset.rows([i for i in ids if i]))

    def rows_in_box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """Rows of the contigs whose UMAP point lies in the box (edges included; corners in any order)."""
        xy = self.data.umap
        xlo, xhi, ylo, yhi = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        return np.flatnonzero((xy[:, 0] >= xlo) & (xy[:, 0] <= xhi) & (xy[:, 1] >= ylo) & (xy[:, 1] <= yhi))

    def select_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Select the contigs whose UMAP point lies in the box."""
        self.select_rows(self.rows_in_box(x0, y0, x1, y1))

    def select_polygon(self, xs, ys) -> None:
        """Select the contigs whose UMAP point lies inside the polygon (lasso)."""
        from matplotlib.path import Path as MplPath

        if len(xs) < 3:
            self.select_rows([])
            return
        poly = MplPath(np.column_stack([xs, ys]))
        self.select_rows(np.flatnonzero(poly.contains_points(self.data.umap)))

    def select_bins(self, bins) -> None:
        """Pick bins (table rows) and select their contigs."""
        bins = [b for b in bins if b]
        self.selected_bins = list(bins)
        self.select_rows(np.flatnonzero(np.isin(self.binset.assignment, bins)))

    # ---------------------------------------------------------------- quality
    def labels(self, binset: BinSet | None = None) -> np.ndarray:
        a = (binset or self.binset).assignment
        return np.where(a == UNBINNED, None, a)

    def quality(self) -> pd.DataFrame:
        """Quality of every current bin (bin_quality + mean depth, accepted flag), cached per version."""
        from ..quality import bin_quality

        if self._quality is None or self._quality[0] != self.version:
            q = bin_quality(self.labels(), self.data.checkm, self.data.table)
            depth = self.data.frame[[f"depth:{s}" for s in self.data.samples]].to_numpy(np.float64).mean(1)
            mean_depth = pd.Series(depth).groupby(self.binset.assignment).mean()
            q["mean_depth"] = q["bin"].map(mean_depth).astype(float).round(2)
            q["accepted"] = q["bin"].isin(self.binset.accepted)
            q["GC"] = q["GC"].round(3)
            self._quality = (self.version, q)
        return self._quality[1]

    def conflicts(self) -> np.ndarray:
        """(N,) bool: the contig shares an sc107 marker with another contig of its bin (SCG conflict)."""
        pairs = self.data.cannot_links
        out = np.zeros(len(self.data.ids), bool)
        if len(pairs):
            a = pd.factorize(self.binset.assignment)[0]  # integer codes: compared fast over millions of pairs
            unbinned = a[np.flatnonzero(self.binset.assignment == UNBINNED)[:1]]
            same = (a[pairs[:, 0]] == a[pairs[:, 1]]) & ~np.isin(a[pairs[:, 0]], unbinned)
            out[pairs[same].ravel()] = True
        return out

    def summary(self) -> dict[str, Any]:
        q = self.quality()
        lengths = self.data.frame["length"].to_numpy()
        binned = self.binset.assignment != UNBINNED
        return {"bins": len(q), "high": int((q["tier"] == "high").sum()), "medium": int((q["tier"] == "medium").sum()),
                "binned_bp": float(lengths[binned].sum() / max(1, lengths.sum())), "edits": len(self.binset.edits),
                "accepted": len(self.binset.accepted)}

    # ---------------------------------------------------------------- actions
    def _do(self, binset: BinSet, action: str) -> dict[str, Any]:
        rows = list(self.selection)
        if action == "split":
            if not rows:
                raise CurationError("select contigs first")
            new = self.new_name.strip() or None
            held = set(binset.assignment[rows])
            if len(held) == 1 and UNBINNED not in held:
                return binset.split(held.pop(), rows, new=new)
            if new is None:
                new = _auto_name(binset)
            if (binset.assignment == new).any():
                raise CurationError(f"bin '{new}' already exists; choose another name")
            return binset.move(rows, new)
        if action == "move":
            if not rows:
                raise CurationError("select contigs first")
            return binset.move(rows, self.target.strip())
        if action == "unbin":
            if not rows:
                raise CurationError("select contigs first")
            return binset.unbin(rows)
        if action == "merge":
            return binset.merge(list(self.selected_bins))
        if action == "accept":
            if not self.selected_bins:
                raise CurationError("pick bins in the table first")
            edit = {}
            for b in self.selected_bins:
                edit = binset.accept(b)
            return edit
        raise CurationError(f"unknown action '{action}'")

    def preview(self, action: str | None = None) -> pd.DataFrame:
        """Quality of the bins ``action`` (default :attr:`action`) touches, ``now`` and ``after``; no change made.

        Raises:
            CurationError: the action is impossible with the current selection.
        """
        from ..quality import bin_quality

        action = action or self.action
        after = self.binset.copy()
        self._do(after, action)
        changed = np.flatnonzero(after.assignment != self.binset.assignment)
        touched = set(self.binset.assignment[changed]) | set(after.assignment[changed]) | set(self.selected_bins if action in ("merge", "accept") else [])
        touched.discard(UNBINNED)
        frames = []
        for when, bs in (("now", self.binset), ("after", after)):
            lab = np.where(np.isin(bs.assignment, list(touched)), bs.assignment, None)
            q = bin_quality(lab, self.data.checkm, self.data.table)
            frames.append(q.assign(when=when))
        out = pd.concat(frames, ignore_index=True)
        return out[["when", "bin", "completeness", "contamination", "tier", "n_contigs", "bp"]]

    def apply(self, action: str | None = None) -> dict[str, Any]:
        """Commit ``action`` (default :attr:`action`); returns the logged edit."""
        action = action or self.action
        edit = self._do(self.binset, action)
        if action in ("split", "merge", "unbin"):
            if action == "merge":
                self.selected_bins = [edit["into"]]
        self._changed(f"{action}: {self._describe(edit)}")
        return edit

    @staticmethod
    def _describe(edit: dict[str, Any]) -> str:
        parts = []
        for k, v in edit.items():
            if k == "op":
                continue
            if isinstance(v, list) and len(v) > 3:
                v = f"{len(v)} items"
            parts.append(f"{k}={v}")
        return ", ".join(parts)

    def _changed(self, message: str) -> None:
        self.version += 1
        self.message = message

    def undo(self) -> bool:
        ok = self.binset.undo()
        self._changed("undone" if ok else "nothing to undo")
        return ok

    def redo(self) -> bool:
        ok = self.binset.redo()
        self._changed("redone" if ok else "nothing to redo")
        return ok

    def history(self) -> pd.DataFrame:
        """The edits in effect, one row each (op and a short description)."""
        return pd.DataFrame([{"#": i + 1, "op": e["op"], "details": self._describe(e)} for i, e in enumerate(self.binset.edits)],
                            columns=["#", "op", "details"])

    # ---------------------------------------------------------------- persistence
    def save(self) -> Path:
        """Write the edit log to ``<run>/curation.json`` (replayable with ``BinSet.replay``)."""
        path = self.data.path / "curation.json"
        self.binset.save_edits(path)
        self.message = f"saved {len(self.binset.edits)} edits to {path.name}"
        return path

    def export_dir(self, name: str | None = None) -> Path:
        """``<run>/export/<sanitised name>``, guaranteed to lie inside the run's export folder."""
        root = (self.data.path / "export").resolve()
        folder = (root / safe_export_name(self.export_name if name is None else name)).resolve()
        if folder.parent != root:
            raise ExportError(f"export name {name!r} leaves {root}")
        return folder

    def export(self, name: str | None = None) -> Path:
        """Write the curated bins into ``<run>/export/<name>/``: ``bins/*.fna``, ``bins.tsv``, ``bins.cami``,
        ``unbinned.tsv``, ``quality.tsv`` and ``curation.json``. Returns the folder."""
        folder = self.export_dir(name)
        # written into a hidden sibling, then renamed into place: a failed export leaves the old one whole
        tmp = temp_dir_beside(folder)
        try:
            self.binset.write_fasta(tmp / "bins", self.data.contigs)
            self.binset.write_tsv(tmp / "bins.tsv")
            self.binset.write_cami(tmp / "bins.cami", sample_id=self.data.path.name)
            self.binset.write_unbinned(tmp / "unbinned.tsv")
            q = self.quality().drop(columns=["mean_depth", "accepted"])
            (tmp / "quality.tsv").write_text(q.to_csv(sep="\t", index=False, float_format="%.2f"))
            self.binset.save_edits(tmp / "curation.json")
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{threading.get_ident()}")
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.message = f"exported {len(q)} bins to {folder.relative_to(self.data.path)}"
        return folder


# ------------------------------------------------------------------------------------ training
class TrainingState(param.Parameterized):
    """Train the run's model in a worker thread; :meth:`drain` (the UI's periodic callback) reads its events.

    ``pipeline.train_stage`` runs with ``resume`` (continue from ``train.ckpt``) or afresh, with a
    callback that puts each :class:`~deepmetabin.train.EpochEvent` on a queue and ``stop=`` polling
    a flag. When it ends the run folder holds the new model and latent means, and the bins are
    clustered again from them with the run's bins settings (``pipeline.bins_stage``), so the run's
    bins always follow its latent space; a session shows them after a reload.
    """

    epochs = param.Integer(default=0, bounds=(0, None), doc="epochs to train (0: the run's setting)")
    running = param.Boolean(default=False)
    epoch = param.Integer(default=0)
    total = param.Integer(default=0)
    device = param.String(default="")
    eta = param.String(default="")
    status = param.String(default="idle")
    losses = param.DataFrame(default=pd.DataFrame(columns=["epoch", "loss", "rec", "kl_z", "kl_y", "neighbour", "val_rec"]))
    snapshot = param.Parameter(default=None, doc="(latent (n, d), components (n,)) of the last epoch")
    message = param.String(default="", doc="what the last finished training changed in the run")

    def __init__(self, data: RunData, **params):
        super().__init__(**params)
        self.data = data
        self.queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            h = data.run.history
            self.losses = h[[c for c in self.losses.columns if c in h.columns]].copy()
            self.epoch = self.total = len(h)
        except DeepMetaBinError:
            pass

    def config(self):
        from ..train import TrainConfig

        params = self.data.manifest.get("stages", {}).get("train", {}).get("params", {})
        cfg = TrainConfig.from_dict(params) if params else TrainConfig()
        return replace(cfg, epochs=self.epochs) if self.epochs else cfg

    def start(self, *, resume: bool = False) -> None:
        """Start training in a worker thread (``resume``: continue from the run's checkpoint)."""
        if self.running:
            raise RuntimeError("training is already running")
        from ..pipeline import train_stage

        self._stop.clear()
        cfg = self.config()
        self.total, self.epoch, self.status, self.running = cfg.epochs, 0, "starting", True
        if not resume:
            self.losses = self.losses.iloc[0:0]
        self._t0, self._seen = time.perf_counter(), 0

        def work() -> None:
            try:
                train_stage(self.data.path, cfg, resume=resume, callbacks=[self.queue.put], stop=self._stop.is_set)
                self.queue.put(("phase", "clustering the new latent space into bins"))
                self.queue.put(("done", self._recluster()))
            except Exception as exc:  # noqa: BLE001 (shown in the app, not raised in a thread)
                log.exception("training failed")
                self.queue.put(("error", str(exc)))

        self._thread = threading.Thread(target=work, name="deepmetabin-train", daemon=True)
        self._thread.start()

    def _recluster(self) -> str:
        """Run the bins stage again with the run's recorded settings; a line saying what it made."""
        import inspect

        from ..manifest import load_manifest
        from ..pipeline import bins_stage

        stages = load_manifest(self.data.path)["stages"]
        if stages.get("markers", {}).get("status") != "done":
            return "model trained; no markers stage in this run, bins not re-clustered"
        known = inspect.signature(bins_stage).parameters
        params = {k: v for k, v in stages.get("bins", {}).get("params", {}).items() if k in known}
        m = bins_stage(self.data.path, **params)["stages"]["bins"]
        return (f"model trained; bins re-clustered: {m.get('n_bins')} bins, {m.get('high')} high quality — "
                "reload the page to curate them")

    def stop(self) -> None:
        """Ask the worker to stop after the current epoch (a checkpoint is written; resume continues)."""
        self._stop.set()
        if self.running:
            self.status = "stopping"

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> int:
        """Apply every queued event to the parameters; returns how many were read."""
        rows, n = [], 0
        while True:
            try:
                ev = self.queue.get_nowait()
            except queue.Empty:
                break
            n += 1
            if isinstance(ev, tuple):
                kind, detail = ev
                if kind == "phase":
                    self.status = detail
                    continue
                self.running = False
                self.status = "done" if kind == "done" else f"error: {detail}"
                self.message = detail if kind == "done" and detail else ""
                continue
            rows.append({"epoch": ev.epoch, **ev.losses})
            self._seen += 1
            self.epoch, self.total, self.device = ev.epoch + 1, ev.epochs, ev.device
            per = (time.perf_counter() - self._t0) / self._seen
            self.eta = f"{per * (ev.epochs - ev.epoch - 1):.0f} s" if not ev.stopped else "stopped"
            self.status = "stopped" if ev.stopped else "training"
            if ev.latent is not None:
                self.snapshot = (ev.latent, ev.components)
        if rows:
            self.losses = pd.concat([self.losses, pd.DataFrame(rows)], ignore_index=True)
        return n
