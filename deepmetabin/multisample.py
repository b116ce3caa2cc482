"""Multi-sample mode ("multi-split", as VAMB and the DeepMetaBin paper run it).

Each sample is assembled on its own; the per-sample assemblies are concatenated into one catalogue
whose contig ids carry the sample name and a separator (``S1C000001``, ``S1_k141_7``); every
sample's reads are mapped to the whole catalogue; one model is trained over all contigs and all depth
columns; the final clusters are split by sample (``S1_bin_12``) so that each sample gets its own bins.

* :func:`sample_of` reads the sample of every contig id (the text before the first separator).
* :func:`concatenate` writes such a catalogue from one FASTA per sample (what ``deepmetabin concat``
  does; ids become ``<sample><separator><original id>``).
* Cannot-links only join contigs of the same sample (:func:`same_sample_links`): two copies of one
  genome assembled in two samples are not a conflict.
* The genome count that sets K is the largest per-sample estimate (:func:`per_sample_estimates`):
  a genome assembled in several samples is counted once per sample by markers over the catalogue.
"""
from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_path
from .contigs import read_contigs
from .errors import FastaError, InputFileError


def sample_of(ids: Sequence[str] | np.ndarray, separator: str = "C", *, source: str = "contigs") -> np.ndarray:
    """(N,) sample name per contig id: the text before the first ``separator``.

    Raises:
        FastaError: an id has no separator or nothing before it (names the first such id).
    """
    if not separator:
        raise ValueError("separator must not be empty")
    out = np.empty(len(ids), dtype=object)
    for i, cid in enumerate(ids):
        cid = str(cid)
        pos = cid.find(separator)
        if pos <= 0:
            raise FastaError(
                f"{source}: contig id '{cid}' has no sample prefix before separator '{separator}'; "
                "give ids like S1C000001 (use `deepmetabin concat` to build the catalogue) or set --sample-separator"
            )
        out[i] = cid[:pos]
    return out


def concatenate(
    fastas: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    separator: str = "C",
    min_length: int = 1000,
) -> pd.DataFrame:
    """Write the catalogue of per-sample assemblies ``fastas`` to ``out`` (gzip if it ends in .gz).

    Contig ids become ``<name><separator><id>``; sample names default to S1, S2, ... in the order
    given. Contigs shorter than ``min_length`` are left out. Returns DataFrame(sample, fasta,
    contigs, bp). The file is written atomically.

    Raises:
        InputFileError / FastaError: as :func:`deepmetabin.contigs.read_contigs`, or duplicate names.
    """
    names = list(names) if names else [f"S{i + 1}" for i in range(len(fastas))]
    if len(names) != len(fastas):
        raise InputFileError(f"{len(names)} sample names for {len(fastas)} FASTA files; give one name per file")
    if len(set(names)) != len(names):
        raise InputFileError(f"sample names must be unique, got {names}")
    for n in names:
        if separator in n:
            raise InputFileError(f"sample name '{n}' contains the separator '{separator}'; choose other names or --sample-separator")
    parts = [read_contigs(f, min_length=min_length) for f in fastas]  # all validated before writing
    out = Path(out)
    rows = []
    with atomic_path(out) as tmp:
        opener = gzip.open if out.suffix == ".gz" else open
        with opener(tmp, "wt") as fh:  # type: ignore[operator]
            for name, fasta, c in zip(names, fastas, parts):
                for i, cid in enumerate(c.ids):
                    seq = c.sequence(i)
                    fh.write(f">{name}{separator}{cid}\n")
                    fh.writelines(seq[j : j + 80] + "\n" for j in range(0, len(seq), 80))
                rows.append({"sample": name, "fasta": str(fasta), "contigs": len(c), "bp": c.total_bp})
    return pd.DataFrame(rows)


def same_sample_links(links: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """The cannot-link pairs (M, 2) whose two contigs come from the same sample."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    return links[samples[links[:, 0]] == samples[links[:, 1]]]


def per_sample_estimates(hits: pd.DataFrame, ids: np.ndarray, samples: np.ndarray) -> dict[str, int]:
    """Genome-count estimate (:func:`deepmetabin.markers.estimate_genomes`) of each sample's contigs."""
    from .markers import estimate_genomes

    sample_by_id = pd.Series(samples, index=pd.Index(np.asarray(ids).astype(str)))
    hs = hits.assign(sample=hits["contig"].astype(str).map(sample_by_id).to_numpy())
    return {str(s): estimate_genomes(hs[hs["sample"] == s]) for s in pd.unique(samples)}


def split_labels_by_sample(labels: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(N,) labels of (cluster, sample) pairs (-1 stays -1) and the (cluster, sample) of each new label."""
    labels = np.asarray(labels)
    keys = pd.Series(list(zip(labels, samples)))
    codes, uniques = pd.factorize(keys)
    out = np.where(labels >= 0, codes, -1).astype(np.int64)
    used = sorted({int(c) for c in out[out >= 0]})
    remap = {c: i for i, c in enumerate(used)}
    out = np.array([remap.get(int(c), -1) for c in out], dtype=np.int64)
    return out, [tuple(uniques[c]) for c in used]  # type: ignore[misc]
