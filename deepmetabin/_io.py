"""Atomic writes and content hashes shared by every stage that writes to a run folder."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DeepMetaBinError


def ids_hash(ids: Sequence[str]) -> str:
    """SHA-256 (hex, first 16 chars) of the contig ids in order: ties an artefact to one assembly."""
    h = hashlib.sha256()
    for cid in ids:
        h.update(cid.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: the process's umask, read once at import (reading it means setting it)
_UMASK = _read_umask()


def temp_dir_beside(folder: Path) -> Path:
    """A new hidden folder beside ``folder`` (to fill, then rename onto it), with the permissions a
    plain ``mkdir`` would give (not mkdtemp's 0700, which would stay on the renamed folder)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    tmp.chmod(0o777 & ~_UMASK)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash, an exception or a full disk leaves the previous ``path`` (if any) untouched and no
    half-written file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # the permissions of a plainly written file, not mkstemp's 0600
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def input_magic(path: Path, *, kind: str, option: str) -> bytes:
    """The first 4 bytes of input file ``path``, after checking that it exists and is not a folder.

    Raises:
        InputFileError: missing file or a folder (``kind`` names the expected file, ``option`` the CLI flag).
    """
    from .errors import InputFileError

    if not path.exists():
        raise InputFileError(f"{path}: file not found; check the path given with {option}")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, expected a {kind} file")
    with open(path, "rb") as fh:
        return fh.read(4)


def write_error(path: Path, exc: OSError) -> DeepMetaBinError:
    """The one-line error for a failed write (disk full, permission, ...); earlier outputs stay intact."""
    return DeepMetaBinError(
        f"{path}: could not write ({exc.strerror or exc}); check free disk space and write permission "
        "of the output folder, then run again (earlier outputs were left intact)"
    )


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise write_error(Path(path), exc) from exc


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save one array in ``.npy`` format atomically."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes(path, buf.getvalue())


def save_parquet(path: str | os.PathLike[str], frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> None:
    """Save a DataFrame as Parquet atomically; ``metadata`` goes into the file's key/value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:
        raise write_error(Path(path), exc) from exc


def parquet_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The key/value metadata of a Parquet file (decoded), without reading its data."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"pandas")}
