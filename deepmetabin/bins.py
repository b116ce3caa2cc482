"""``BinSet``: contig -> bin assignment with curation edits, undo/redo, a replayable edit log, and writers.

Edits (each recorded as a JSON-able dict in ``BinSet.edits``):

* ``merge(bins, into=None)``: all contigs of ``bins`` go to ``into`` (default: the first of ``bins``).
* ``split(bin, contigs, new=None)``: ``contigs`` (which must be in ``bin``) move to a new bin.
* ``move(contigs, to)``: contigs go to bin ``to`` (created if new).
* ``unbin(contigs)``: contigs become unbinned.
* ``accept(bin)`` / ``rename(old, new)``.

``BinSet.replay(base, edits)`` applies a saved log onto the automatic bins and reproduces the
curated result exactly. Writers emit FASTA per bin, ``bins.tsv`` (VAMB ``clustername<TAB>contigname``),
the CAMI binning format and ``unbinned.tsv``; every write is atomic, and a bins folder is written
beside the old one and swapped in, so an existing folder is never half-overwritten.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import temp_dir_beside, write_error, write_json, write_text
from .contigs import Contigs
from .errors import DeepMetaBinError

UNBINNED = ""


class CurationError(DeepMetaBinError):
    """An edit names a bin or contig that does not exist, or is otherwise impossible."""


@dataclass
class _Change:
    edit: dict[str, Any]
    rows: np.ndarray
    before: np.ndarray
    after: np.ndarray
    accepted_before: frozenset[str]
    accepted_after: frozenset[str]


@dataclass
class BinSet:
    """Bin name per contig (``""`` = unbinned) with edit history.

    Attributes:
        ids: (N,) contig ids; assignment: (N,) object array of bin names; accepted: accepted bins.
    """

    ids: np.ndarray
    assignment: np.ndarray
    accepted: set[str] = field(default_factory=set)
    _done: list[_Change] = field(default_factory=list, repr=False)
    _undone: list[_Change] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids).astype(object)
        self.assignment = np.asarray(self.assignment).astype(object)
        self._row = {str(c): i for i, c in enumerate(self.ids)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_labels(cls, ids: Sequence[str] | np.ndarray, labels: np.ndarray, prefix: str = "bin_") -> "BinSet":
        """From (N,) integer labels (-1 = unbinned): label j becomes bin ``f"{prefix}{j}"``."""
        labels = np.asarray(labels)
        names = np.array([f"{prefix}{l}" if l >= 0 else UNBINNED for l in labels], dtype=object)
        return cls(np.asarray(ids), names)

    @classmethod
    def from_frame(cls, ids: Sequence[str] | np.ndarray, frame: pd.DataFrame) -> "BinSet":
        """From DataFrame(contig, bin) over some of ``ids`` (the others unbinned)."""
        names = pd.Series(UNBINNED, index=pd.Index(np.asarray(ids).astype(str)), dtype=object)
        names.loc[frame["contig"].astype(str).to_numpy()] = frame["bin"].astype(str).to_numpy()
        return cls(np.asarray(ids), names.to_numpy())

    def copy(self) -> "BinSet":
        return BinSet(self.ids.copy(), self.assignment.copy(), set(self.accepted))

    # ------------------------------------------------------------------ queries
    @property
    def bins(self) -> list[str]:
        """Bin names, largest first (by contig count), then by name."""
        s = pd.Series(self.assignment[self.assignment != UNBINNED])
        counts = s.value_counts()
        return sorted(counts.index, key=lambda b: (-counts[b], b))

    def members(self, bin_name: str) -> np.ndarray:
        """(n,) row indices of the contigs of ``bin_name``."""
        return np.flatnonzero(self.assignment == bin_name)

    def rows(self, contigs: Iterable[str | int]) -> np.ndarray:
        """Row indices of contigs given by id or row number."""
        out = []
        for c in contigs:
            if isinstance(c, (int, np.integer)):
                if not 0 <= c < len(self.ids):
                    raise CurationError(f"contig row {c} does not exist (0..{len(self.ids) - 1})")
                out.append(int(c))
            elif str(c) in self._row:
                out.append(self._row[str(c)])
            else:
                raise CurationError(f"contig '{c}' is not in this bin set")
        return np.unique(np.asarray(out, dtype=np.int64))

    def to_frame(self) -> pd.DataFrame:
        """DataFrame(contig, bin) of the binned contigs."""
        keep = self.assignment != UNBINNED
        return pd.DataFrame({"contig": self.ids[keep].astype(str), "bin": self.assignment[keep].astype(str)})

    def labels(self) -> np.ndarray:
        """(N,) int labels (-1 unbinned) in the order of :attr:`bins`."""
        index = {b: i for i, b in enumerate(self.bins)}
        return np.array([index.get(b, -1) for b in self.assignment], dtype=np.int64)

    def _require_bin(self, name: str) -> None:
        if name == UNBINNED or not (self.assignment == name).any():
            raise CurationError(f"bin '{name}' does not exist")

    def _new_name(self) -> str:
        taken = set(self.assignment)
        i = len(taken)
        while f"bin_{i}" in taken:
            i += 1
        return f"bin_{i}"

    # ------------------------------------------------------------------ edits
    def _apply(self, edit: dict[str, Any], rows: np.ndarray, to: np.ndarray | str, accepted: set[str]) -> dict[str, Any]:
        before = self.assignment[rows].copy()
        after = np.full(len(rows), to, dtype=object) if isinstance(to, str) else np.asarray(to, dtype=object)
        change = _Change(edit, rows, before, after, frozenset(self.accepted), frozenset(accepted))
        self.assignment[rows] = after
        self.accepted = set(accepted)
        self._done.append(change)
        self._undone.clear()
        return edit

    def merge(self, bins: Sequence[str], into: str | None = None) -> dict[str, Any]:
        if len(bins) < 2:
            raise CurationError("merge needs at least two bins")
        for b in bins:
            self._require_bin(b)
        into = into or bins[0]
        rows = np.flatnonzero(np.isin(self.assignment, list(bins)))
        return self._apply({"op": "merge", "bins": list(bins), "into": into}, rows, into, self.accepted - set(bins))

    def split(self, bin: str, contigs: Iterable[str | int], new: str | None = None) -> dict[str, Any]:  # noqa: A002 (name matches the edit log)
        self._require_bin(bin)
        rows = self.rows(contigs)
        outside = rows[self.assignment[rows] != bin]
        if len(outside):
            raise CurationError(f"contig '{self.ids[outside[0]]}' is not in bin '{bin}'")
        if not len(rows):
            raise CurationError("split needs at least one contig")
        new = new or self._new_name()
        if (self.assignment == new).any():
            raise CurationError(f"bin '{new}' already exists; choose another name")
        edit = {"op": "split", "bin": bin, "contigs": [str(self.ids[r]) for r in rows], "new": new}
        return self._apply(edit, rows, new, self.accepted - {bin})

    def move(self, contigs: Iterable[str | int], to: str) -> dict[str, Any]:
        if not to:
            raise CurationError("move needs a target bin name (use unbin to unbin contigs)")
        rows = self.rows(contigs)
        touched = set(self.assignment[rows]) | {to}
        return self._apply({"op": "move", "contigs": [str(self.ids[r]) for r in rows], "to": to}, rows, to, self.accepted - touched)

    def unbin(self, contigs: Iterable[str | int]) -> dict[str, Any]:
        rows = self.rows(contigs)
        touched = set(self.assignment[rows])
        return self._apply({"op": "unbin", "contigs": [str(self.ids[r]) for r in rows]}, rows, UNBINNED, self.accepted - touched)

    def accept(self, bin: str) -> dict[str, Any]:
        self._require_bin(bin)
        return self._apply({"op": "accept", "bin": bin}, np.zeros(0, np.int64), UNBINNED, self.accepted | {bin})

    def rename(self, old: str, new: str) -> dict[str, Any]:
        self._require_bin(old)
        if not new or (self.assignment == new).any():
            raise CurationError(f"cannot rename '{old}' to '{new}': empty or taken")
        accepted = (self.accepted - {old}) | ({new} if old in self.accepted else set())
        return self._apply({"op": "rename", "old": old, "new": new}, self.members(old), new, accepted)

    def undo(self) -> bool:
        """Revert the last edit; False when there is nothing to undo."""
        if not self._done:
            return False
        ch = self._done.pop()
        self.assignment[ch.rows] = ch.before
        self.accepted = set(ch.accepted_before)
        self._undone.append(ch)
        return True

    def redo(self) -> bool:
        """Re-apply the last undone edit; False when there is nothing to redo."""
        if not self._undone:
            return False
        ch = self._undone.pop()
        self.assignment[ch.rows] = ch.after
        self.accepted = set(ch.accepted_after)
        self._done.append(ch)
        return True

    @property
    def edits(self) -> list[dict[str, Any]]:
        """The edits in effect (undone ones excluded), in order."""
        return [c.edit for c in self._done]

    def apply_edit(self, edit: dict[str, Any]) -> dict[str, Any]:
        """Apply one logged edit dict."""
        op = edit.get("op")
        args = {k: v for k, v in edit.items() if k != "op"}
        methods = {"merge": self.merge, "split": self.split, "move": self.move, "unbin": self.unbin, "accept": self.accept, "rename": self.rename}
        if op not in methods:
            raise CurationError(f"unknown edit '{op}'")
        return methods[op](**args)

    @classmethod
    def replay(cls, base: "BinSet", edits: Iterable[dict[str, Any]]) -> "BinSet":
        """A copy of ``base`` with ``edits`` applied in order."""
        out = base.copy()
        for e in edits:
            out.apply_edit(e)
        return out

    def save_edits(self, path: str | os.PathLike[str]) -> None:
        """Write the edit log as ``curation.json`` (atomic)."""
        write_json(path, {"format": 1, "edits": self.edits})

    @staticmethod
    def load_edits(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        try:
            return json.loads(Path(path).read_text())["edits"]
        except (OSError, ValueError, KeyError) as exc:
            raise CurationError(f"{path}: not a curation log ({exc}); expected the curation.json that deepmetabin writes") from None

    # ------------------------------------------------------------------ writers
    def write_tsv(self, path: str | os.PathLike[str]) -> None:
        """``clustername<TAB>contigname`` with a header (VAMB style), binned contigs only."""
        f = self.to_frame()
        write_text(path, "clustername\tcontigname\n" + "".join(f"{b}\t{c}\n" for c, b in zip(f["contig"], f["bin"])))

    def write_cami(self, path: str | os.PathLike[str], sample_id: str = "deepmetabin") -> None:
        """CAMI binning format (``@@SEQUENCEID<TAB>BINID``), binned contigs only."""
        f = self.to_frame()
        head = f"@Version:0.9.1\n@SampleID:{sample_id}\n\n@@SEQUENCEID\tBINID\n"
        write_text(path, head + "".join(f"{c}\t{b}\n" for c, b in zip(f["contig"], f["bin"])))

    def write_unbinned(self, path: str | os.PathLike[str]) -> None:
        """One unbinned contig id per line."""
        write_text(path, "".join(f"{c}\n" for c in self.ids[self.assignment == UNBINNED]))

    def write_fasta(
        self, folder: str | os.PathLike[str], contigs: Contigs, width: int = 80, group: Callable[[str], str | None] | None = None,
        buffer_bytes: int = 16 << 20,
    ) -> list[Path]:
        """One ``<bin>.fna`` per bin into ``folder``, written in a sibling temp folder and swapped in.
        ``contigs`` may be a container without sequences (they are then read again from its FASTA).

        ``group(bin) -> subfolder`` puts each bin's file in a subfolder (multi-sample mode: one per sample).

        Raises:
            CurationError: ``contigs`` are not the contigs of this bin set.
        """
        if len(contigs) != len(self.ids) or any(a != b for a, b in zip(contigs.ids, self.ids)):
            raise CurationError("the contigs given are not those of this bin set")
        folder = Path(folder)
        tmp = temp_dir_beside(folder)
        old: Path | None = None
        try:
            files: dict[str, Path] = {}
            for b in self.bins:
                sub = tmp / _safe(group(b) or "") if group else tmp
                sub.mkdir(exist_ok=True)
                files[b] = sub / f"{_safe(b)}.fna"
                files[b].touch()
            # One pass over the contigs in order (from memory, or read again from the FASTA when the
            # container holds none: Contigs.sequences), each record appended to its bin's pending text;
            # the pending texts go to their files whenever they pass ``buffer_bytes`` together, so neither
            # the assembly nor an open file per bin is held.
            pending: dict[str, list[str]] = {}
            size = 0

            def flush() -> None:
                for b, texts in pending.items():
                    with open(files[b], "a") as fh:
                        fh.writelines(texts)
                pending.clear()

            for r, (cid, seq) in enumerate(contigs.sequences()):
                b = self.assignment[r]
                if b not in files:
                    continue  # unbinned
                text = f">{cid}\n" + "".join(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
                pending.setdefault(b, []).append(text)
                size += len(text)
                if size >= buffer_bytes:
                    flush()
                    size = 0
            flush()
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and old.exists() and not folder.exists():
                os.replace(old, folder)  # put the previous bins back
            raise write_error(folder, exc) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return sorted(folder.rglob("*.fna"))


def _safe(name: str) -> str:
    """A bin name usable as a file name (no path separators or leading dots)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".")
    return cleaned or "bin"
