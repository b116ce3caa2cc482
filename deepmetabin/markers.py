"""Single-copy marker genes: gene calling (pyrodigal) + HMM search (pyhmmer) against shipped marker sets.

The binner uses marker hits three times: :func:`estimate_genomes` (how many genomes, sets K of a
clustering), :func:`cannot_links` (two contigs carrying the same single-copy marker should not share a
bin) and :func:`deepmetabin.quality.bin_quality` (completeness / contamination per bin).

Pipeline, all in memory:

1. genes: pyrodigal on every contig (threads; pyrodigal releases the GIL), by default with Prodigal models
   trained on the assembly's own long contigs, one per GC group (:func:`train_gene_models`), else in
   Prodigal's metagenomic mode (:data:`GENE_MODES`);
2. search: one ``pyhmmer.hmmsearch`` of all proteins against the union of the requested sets' profiles
   (a profile shared by two sets is searched once), threads over profiles;
3. per set, a hit counts when it passes the set's bit-score cut-off rule (:data:`CUTOFF_RULES`), its
   domains above the domain cut-off cover >= 40 % of the profile (union of their HMM intervals), and
   it is the best-scoring marker of its region of the protein within that set: competing profiles of one
   gene keep the best, while the separate domains of a multi-domain protein (ribosomal protein L2:
   PF00181 + PF03947; RNA polymerase beta': PF04997 + PF00623) each count, as in CheckM. A strict "one marker per protein" rule
   loses those domains: complete genomes then read about 2 points less complete.

Marker sets (data files, sources and licences: ``deepmetabin/data/README.md``):

* ``sc107`` — the 107 bacterial single-copy genes of MaxBin/SemiBin (111 Pfam + TIGRFAM profiles;
  four TIGRFAM pairs are alternative forms of one gene and count as one marker, as SemiBin does);
  trusted cut-offs (SemiBin runs ``hmmsearch --cut_tc``). For the genome count and cannot-links.
* ``uni56`` — the 56 universal (bacteria + archaea) COG profiles of CheckU; gathering cut-offs (the
  only ones they carry; CheckU uses them too).
* ``checkm_bacteria`` — the markers of CheckM's "Bacteria" lineage set (``Bacteria.ms``, 104 markers in
  58 collocated sets) that have a profile here (84); CheckM's own rule: TIGRFAM profiles at their noise
  cut-off, Pfam profiles at their gathering cut-off. For completeness / contamination.

Profiles without the cut-off a rule asks for fall back to CheckM's default e-value rule: full-sequence
E-value <= 1e-10 (E computed with Z = number of proteins searched), domains with a positive score.

Marker ids are the profile accession without version (``PF00162``, ``TIGR00019``), or the profile name
when it has no accession (``COG0013``).
"""
from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import io
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._io import write_bytes
from ._parallel import CoreShare, Scheduler, Threads, cluster_threads, dask_client, elastic_map, release_memory
from .contigs import Contigs, ContigTable
from .errors import MarkerDataError

if TYPE_CHECKING:
    import pyhmmer

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: Bump when gene calling or hit rules change: every cached ``markers.tsv`` is then recomputed.
MARKERS_FORMAT = 1
#: Columns of a hits table, one row per (protein, marker): contig id, marker id, gene id ``<contig>_<n>``,
#: full-sequence bit score, E-value, share of the profile covered (0-1), 1-based inclusive gene start/end
#: on the contig, strand (+1/-1), partial (the gene runs off a contig end), first/last profile position
#: aligned (1-based).
COLUMNS = [
    "contig", "marker", "gene", "score", "evalue", "hmm_coverage", "start", "end", "strand",
    "partial", "hmm_from", "hmm_to",
]
#: Minimum share of the profile (HMM match states) covered by the hit's domains.
MIN_HMM_COVERAGE = 0.4
#: Two partial hits of one marker whose HMM intervals overlap by at most this share of the shorter one
#: are taken for the two ends of one gene cut by contig breaks.
SPLIT_GENE_OVERLAP = 0.2
#: E-value rule for profiles without the bit-score cut-off their set's rule asks for (CheckM default).
FALLBACK_EVALUE = 1e-10
#: The sets the ``markers`` stage computes by default: genome count / cannot-links, and quality.
DEFAULT_STAGE_SETS = ("sc107", "checkm_bacteria")
#: proteins digitised and searched at a time (a block holds ~1 kB per protein; 4M proteins at 1M contigs)
SEARCH_CHUNK = 500_000

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class MarkerSet:
    """A marker HMM set shipped in ``deepmetabin/data``.

    Attributes:
        name: short name used in the API and in ``markers.tsv``.
        file: gzipped HMMER3 profile file inside :data:`DATA_DIR`.
        sha256: SHA-256 of ``file``, checked on load (a damaged install is detected, not searched).
        version: source and release of the profiles (part of the cache key).
        rule: cut-off rule, a key of :data:`CUTOFF_RULES`.
        n_markers: number of distinct markers after ``merge`` (the completeness denominator).
        merge: marker id -> marker id it counts as (alternative profiles of one gene).
        collocated: marker-set definition file (CheckM ``.ms``) inside :data:`DATA_DIR`, or ``None``.
    """

    name: str
    file: str
    sha256: str
    version: str
    rule: str
    n_markers: int
    description: str
    merge: Mapping[str, str] = field(default_factory=dict)
    collocated: str | None = None


MARKER_SETS: dict[str, MarkerSet] = {
    s.name: s
    for s in (
        MarkerSet(
            "sc107", "sc107.hmm.gz", "e3391591c2f0fb6aa219636d360f79c061b60fc707c5a6ed1fada43e5097957d",
            "semibin-2.6.0", "trusted", 107, "107 bacterial single-copy genes of MaxBin/SemiBin (Pfam + TIGRFAM)",
            merge={"TIGR00388": "TIGR00389", "TIGR00471": "TIGR00472", "TIGR00408": "TIGR00409", "TIGR02386": "TIGR02387"},
        ),
        MarkerSet(
            "uni56", "uni56.hmm.gz", "cf756e85a0622a18d8fdb13ead7b015a4ebea49a44e6da5e0cd5be2681ef0934", "checku-0.2.1", "gathering", 56,
            "56 universal bacterial + archaeal single-copy COGs (UNI56, CheckU)",
        ),
        MarkerSet(
            "checkm_bacteria", "checkm_bacteria.hmm.gz", "96e15a9bb8901e828a587463aa2a8aa03535890d87b6d09e557b68679c167cc9", "checkm-bacteria-ms+pfam27-1", "checkm", 84,
            "CheckM 'Bacteria' lineage markers (collocated sets) that have a profile here",
            collocated="checkm_bacteria.ms",
        ),
    )
}


def _cut_trusted(hmm: "pyhmmer.plan7.HMM") -> tuple[float, float] | None:
    return hmm.cutoffs.trusted


def _cut_gathering(hmm: "pyhmmer.plan7.HMM") -> tuple[float, float] | None:
    return hmm.cutoffs.gathering


def _cut_checkm(hmm: "pyhmmer.plan7.HMM") -> tuple[float, float] | None:
    # CheckM (ResultsManager.vetHit): TIGRFAM models at their noise cut-off, others gathering > trusted > noise.
    c = hmm.cutoffs
    if (hmm.accession or "").startswith("TIGR") and c.noise is not None:
        return c.noise
    return c.gathering or c.trusted or c.noise


#: Rule name -> function giving a profile's (sequence, domain) bit-score cut-offs, or None (e-value rule).
CUTOFF_RULES: dict[str, Callable[["pyhmmer.plan7.HMM"], tuple[float, float] | None]] = {
    "trusted": _cut_trusted,
    "gathering": _cut_gathering,
    "checkm": _cut_checkm,
}


def marker_id(hmm: "pyhmmer.plan7.HMM") -> str:
    """A profile's marker id: accession without version, else its name."""
    acc = hmm.accession
    return acc.split(".")[0] if acc else hmm.name


def _data_file(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_file():
        raise MarkerDataError(
            f"{path}: marker data file missing from this deepmetabin install (package data folder {DATA_DIR}); "
            "reinstall deepmetabin (`pip install --force-reinstall deepmetabin`, or `pip install -e .` in a checkout)"
        )
    return path


def marker_set(name: str) -> MarkerSet:
    """The :class:`MarkerSet` called ``name``.

    Raises:
        ValueError: unknown set name.
    """
    try:
        return MARKER_SETS[name]
    except KeyError:
        raise ValueError(f"unknown marker set {name!r}; choose one of {sorted(MARKER_SETS)}") from None


@functools.lru_cache(maxsize=None)
def load_profiles(name: str) -> tuple["pyhmmer.plan7.HMM", ...]:
    """The profile HMMs of marker set ``name``, read once per process.

    Raises:
        MarkerDataError: the data file is missing, damaged (checksum) or not a HMMER profile file.
    """
    from pyhmmer.plan7 import HMMFile

    ms = marker_set(name)
    path = _data_file(ms.file)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ms.sha256:
        raise MarkerDataError(
            f"{path}: damaged marker data (sha256 {digest[:16]}..., expected {ms.sha256[:16]}...); "
            "reinstall deepmetabin to restore its package data"
        )
    try:
        with HMMFile(io.BytesIO(gzip.decompress(data))) as fh:
            profiles = tuple(fh)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise MarkerDataError(f"{path}: cannot be read as gzipped HMMER profiles ({exc}); reinstall deepmetabin") from None
    ids = {ms.merge.get(marker_id(h), marker_id(h)) for h in profiles}
    if len(ids) != ms.n_markers:
        raise MarkerDataError(f"{path}: {len(ids)} markers, expected {ms.n_markers}; reinstall deepmetabin")
    return profiles


def set_markers(name: str) -> list[str]:
    """The marker ids of set ``name`` (after merging alternative profiles), sorted."""
    ms = marker_set(name)
    return sorted({ms.merge.get(marker_id(h), marker_id(h)) for h in load_profiles(name)})


def collocated_sets(name: str) -> list[frozenset[str]]:
    """Collocated marker sets of ``name`` for CheckM-style quality, restricted to markers with a profile.

    Sets whose markers all lack a profile are dropped (CheckM's ``MarkerSet.removeMarkers``). A set without
    a collocation file gives one singleton set per marker (every marker weighs the same).

    Raises:
        MarkerDataError: the marker-set definition file is missing or malformed.
    """
    ms = marker_set(name)
    markers = set(set_markers(name))
    if ms.collocated is None:
        return [frozenset([m]) for m in sorted(markers)]
    path = _data_file(ms.collocated)
    try:
        line = next(l for l in path.read_text().splitlines() if l and not l.startswith("#"))
        raw = ast.literal_eval(line.split("\t")[5])
    except (StopIteration, IndexError, ValueError, SyntaxError) as exc:
        raise MarkerDataError(f"{path}: not a CheckM marker-set line ({exc}); reinstall deepmetabin") from None
    out = []
    for group in raw:
        kept = frozenset(m.split(".")[0] for m in group) & markers
        if kept:
            out.append(kept)
    return out


# ------------------------------------------------------------------------------------------- genes
@dataclass(frozen=True)
class Genes:
    """Protein-coding genes of a :class:`Contigs`, in contig order then position.

    Attributes:
        contig_row: (G,) int64 row of the gene's contig in the :class:`Contigs`.
        index: (G,) int32 1-based number of the gene within its contig (Prodigal's ``<contig>_<n>``).
        start, end: (G,) int64 1-based inclusive coordinates on the contig (start < end, any strand).
        strand: (G,) int8, +1 or -1.
        partial: (G,) bool, the gene runs off an end of its contig (no start or no stop codon).
        proteins: G protein sequences (one-letter codes, no stop symbol).
    """

    contig_row: np.ndarray
    index: np.ndarray
    start: np.ndarray
    end: np.ndarray
    strand: np.ndarray
    partial: np.ndarray
    proteins: list[str]

    def __len__(self) -> int:
        return len(self.proteins)


def _chunks(lengths: np.ndarray, n_chunks: int) -> list[tuple[int, int]]:
    """Split rows 0..N into about ``n_chunks`` contiguous ranges of similar total length."""
    if len(lengths) == 0:
        return []
    cum = np.cumsum(lengths)
    bounds = np.searchsorted(cum, np.linspace(0, cum[-1], n_chunks + 1)[1:-1], side="right")
    edges = np.unique(np.concatenate([[0], bounds, [len(lengths)]]))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


#: How genes are called: ``"trained"`` — Prodigal single mode with models trained on the assembly's own
#: long contigs, one per GC group (:func:`train_gene_models`; gene calling takes ~6x less CPU than meta
#: mode, which scores each contig with every pre-trained model near its GC); ``"meta"`` — Prodigal's metagenomic mode (its
#: 50 pre-trained models; the choice for genomes with another genetic code, e.g. Mycoplasma's table 4).
GENE_MODES = ("trained", "meta")
DEFAULT_GENE_MODE = "trained"
#: trained mode: at most this many GC groups, each with at least this many bp of contigs on average
#: (fewer bp in all: meta mode), and the training set of a group capped at this many bp (its longest contigs)
TRAIN_GROUPS = 8
TRAIN_MIN_GROUP_BP = 2_000_000
TRAIN_MAX_BP = 2_000_000  # Prodigal holds ~40-50 bytes per bp while training: ~100 MB at 2 Mbp
MIN_TRAIN_BP = 20_000  # pyrodigal's own minimum


@dataclass(frozen=True)
class GeneModels:
    """Prodigal gene models trained on an assembly, one per GC group (see :func:`train_gene_models`).

    Attributes:
        gc_edges: (G - 1,) float, inner GC boundaries of the groups (a contig of GC ``g`` is in group
            ``searchsorted(gc_edges, g, side="right")``).
        training: G ``pyrodigal.TrainingInfo``, one per group (a group with less than :data:`MIN_TRAIN_BP`
            shares the model of the nearest group).
        train_bp: (G,) int, bp of each group's training contigs.
    """

    gc_edges: np.ndarray
    training: tuple[Any, ...]
    train_bp: np.ndarray

    def group(self, gc: np.ndarray) -> np.ndarray:
        """(N,) int group of contigs of GC ``gc`` ((N,) share of G+C)."""
        return np.searchsorted(self.gc_edges, np.asarray(gc, dtype=np.float64), side="right")


def train_gene_models(contigs: Contigs, *, max_groups: int | None = None,
                      min_group_bp: int | None = None, max_train_bp: int | None = None) -> GeneModels | None:
    """Train one Prodigal (single-mode, genetic code 11) model per GC group of ``contigs``.

    The contigs are cut into ``G = min(max_groups, total_bp // min_group_bp)`` groups of equal bp by GC;
    each group's model is trained on its longest contigs, up to ``max_train_bp`` (defaults, read at call
    time: :data:`TRAIN_GROUPS`, :data:`TRAIN_MIN_GROUP_BP`, :data:`TRAIN_MAX_BP`). Contigs of one GC
    share most of the codon and start statistics Prodigal learns, which is what its meta mode exploits
    too (it only tries pre-trained models near a contig's GC). Returns None when the assembly has less
    than ``min_group_bp`` in all (too little to train on; use meta mode).
    """
    import pyrodigal

    max_groups = TRAIN_GROUPS if max_groups is None else max_groups
    min_group_bp = TRAIN_MIN_GROUP_BP if min_group_bp is None else min_group_bp
    max_train_bp = TRAIN_MAX_BP if max_train_bp is None else max_train_bp
    total = int(contigs.total_bp)
    n_groups = min(int(max_groups), total // int(min_group_bp))
    if n_groups < 1:
        return None
    gc = contigs.gc.astype(np.float64)
    order = np.argsort(gc, kind="stable")
    cum = np.cumsum(contigs.lengths[order].astype(np.float64))
    cut = np.searchsorted(cum, total * np.arange(1, n_groups) / n_groups, side="left")
    edges = np.unique(gc[order[np.minimum(cut, len(order) - 1)]]) if n_groups > 1 else np.zeros(0)
    group = np.searchsorted(edges, gc, side="right")

    def train(g: int) -> tuple[Any, int]:
        rows = np.flatnonzero(group == g)
        rows = rows[np.argsort(-contigs.lengths[rows], kind="stable")]
        keep = rows[: max(1, int(np.searchsorted(np.cumsum(contigs.lengths[rows]), max_train_bp)) + 1)]
        seqs = [contigs.seq_buffer[contigs.offsets[i] : contigs.offsets[i + 1]].tobytes() for i in keep]
        bp = int(sum(map(len, seqs)))
        # pyrodigal refuses < 20 kbp; a group this small only happens beside a few huge contigs
        return (pyrodigal.GeneFinder(meta=False).train(*seqs) if bp >= MIN_TRAIN_BP else None), bp

    # one group at a time: two threads train ~1.6x faster (medium: 2 s saved) but hold twice the node memory
    trained = [train(g) for g in range(len(edges) + 1)]
    ok = [g for g, (t, _) in enumerate(trained) if t is not None]
    if not ok:
        return None
    # a group too small to train on uses the model of the nearest group in GC
    use = [t if t is not None else trained[min(ok, key=lambda o: abs(o - g))][0] for g, (t, _) in enumerate(trained)]
    log.info("gene models trained on %d GC groups (%s bp)", len(ok), ", ".join(str(b) for _, b in trained))
    return GeneModels(edges, tuple(use), np.array([b for _, b in trained], dtype=np.int64))


def _call_chunk(buf: np.ndarray, offsets: np.ndarray, row0: int, models: GeneModels | None = None,
                gc: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Genes on the contigs ``buf[offsets[i]:offsets[i+1]]`` (rows ``row0 + i``, GC ``gc[i]``): a (G, 6)
    int64 table (contig row, number in its contig, begin, end, strand, partial) and the G proteins.
    ``models``: trained models (each contig gets its GC group's), None: meta mode. Also a Dask task."""
    import pyrodigal

    if models is None:
        finders = [pyrodigal.GeneFinder(meta=True)]
        which = np.zeros(len(offsets) - 1, dtype=np.int64)
    else:
        finders = [pyrodigal.GeneFinder(training_info=t, meta=False) for t in models.training]
        which = models.group(np.asarray(gc))
    meta: list[tuple[int, int, int, int, int, int]] = []
    prots: list[str] = []
    for i in range(len(offsets) - 1):
        seq = buf[offsets[i] : offsets[i + 1]].tobytes()
        for k, gene in enumerate(finders[which[i]].find_genes(seq), start=1):
            meta.append((row0 + i, k, gene.begin, gene.end, gene.strand, gene.partial_begin or gene.partial_end))
            prots.append(gene.translate(include_stop=False))
    return np.array(meta, dtype=np.int64).reshape(-1, 6), prots


def _genes(meta: np.ndarray, proteins: list[str]) -> Genes:
    return Genes(
        contig_row=meta[:, 0], index=meta[:, 1].astype(np.int32), start=meta[:, 2], end=meta[:, 3],
        strand=meta[:, 4].astype(np.int8), partial=meta[:, 5].astype(bool), proteins=proteins,
    )


def _gene_models(contigs: Contigs, mode: str) -> GeneModels | None:
    if mode not in GENE_MODES:
        raise ValueError(f"gene mode {mode!r}: use one of {', '.join(GENE_MODES)}")
    if mode == "meta" or len(contigs) == 0:
        return None
    models = train_gene_models(contigs)
    if models is None:
        log.info("%d bp in all: too little to train gene models on; genes by Prodigal's meta mode", contigs.total_bp)
    return models


def call_genes(contigs: Contigs, *, threads: Threads = 1, progress: Progress | None = None,
               mode: str = DEFAULT_GENE_MODE) -> Genes:
    """Find genes with pyrodigal on every contig and translate them.

    ``mode``: one of :data:`GENE_MODES` (``"trained"``: models trained on the contigs by GC group, or
    meta mode when the assembly is too small to train on; ``"meta"``: Prodigal's metagenomic mode).
    ``progress(done_bp, total_bp)`` is called after each chunk of contigs. Contigs without any gene
    (short, N-only, low complexity) simply contribute none. ``threads``: a count, or a
    :class:`~deepmetabin._parallel.CoreShare` whose free cores are used as they change (same genes).

    Raises:
        ValueError: an unknown ``mode``.
    """
    if not isinstance(threads, CoreShare):
        threads = max(1, int(threads))
    contigs.require_sequences()
    models = _gene_models(contigs, mode)
    total = contigs.total_bp
    chunks = _chunks(contigs.lengths, min(len(contigs), int(threads) * 16)) if len(contigs) else []

    def work(rows: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
        a, b = rows
        return _call_chunk(contigs.seq_buffer, contigs.offsets[a : b + 1], a, models, contigs.gc[a:b])

    parts: list[tuple[np.ndarray, list[str]]] = [(np.zeros((0, 6), dtype=np.int64), [])] * len(chunks)
    done = 0
    for k, part in elastic_map(work, chunks, threads):
        parts[k] = part
        done += int(contigs.lengths[chunks[k][0] : chunks[k][1]].sum())
        if progress is not None:
            progress(done, total)
    proteins = [p for _, prots in parts for p in prots]
    log.info("%d genes on %d contigs (%d bp)", len(proteins), len(contigs), total)
    return _genes(np.concatenate([np.zeros((0, 6), dtype=np.int64)] + [m for m, _ in parts]), proteins)


# ------------------------------------------------------------------------------------------ search
def _union_profiles(names: Sequence[str]) -> tuple[list["pyhmmer.plan7.HMM"], dict[str, list[int]]]:
    """Unique profiles over the sets ``names`` and, per set, the positions of its profiles in that list."""
    unique: list[pyhmmer.plan7.HMM] = []
    seen: dict[tuple[str, int, int], int] = {}
    members: dict[str, list[int]] = {}
    for name in names:
        members[name] = []
        for hmm in load_profiles(name):
            key = (hmm.name, hmm.M, hmm.checksum or 0)
            if key not in seen:
                seen[key] = len(unique)
                unique.append(hmm)
            members[name].append(seen[key])
    return unique, members


def _hit_rows(hit: Any, cut: tuple[float, float] | None, m: int) -> tuple[float, float, int, int, int, int] | None:
    """(score, hmm_coverage, env_from, env_to, hmm_from, hmm_to) of ``hit`` when it passes the cut-offs
    and covers >= MIN_HMM_COVERAGE of the profile; env_* span its domains on the protein, hmm_* on the
    profile (1-based, inclusive)."""
    if cut is None:
        if hit.evalue > FALLBACK_EVALUE:
            return None
        dom_cut = 0.0
    else:
        if hit.score < cut[0]:
            return None
        dom_cut = cut[1]
    covered = np.zeros(m + 1, dtype=bool)
    env_from = hmm_from = 1 << 30
    env_to = hmm_to = 0
    for dom in hit.domains:
        if dom.score >= dom_cut:
            ali = dom.alignment
            covered[ali.hmm_from : ali.hmm_to + 1] = True
            env_from, env_to = min(env_from, dom.env_from), max(env_to, dom.env_to)
            hmm_from, hmm_to = min(hmm_from, ali.hmm_from), max(hmm_to, ali.hmm_to)
    coverage = covered[1:].sum() / m
    if coverage < MIN_HMM_COVERAGE:
        return None
    return float(hit.score), float(coverage), env_from, env_to, hmm_from, hmm_to


#: A hit before the per-set rules: (profile position, gene, marker, score, evalue, coverage, env_from,
#: env_to, hmm_from, hmm_to); (profile position, gene) identifies it.
_Row = tuple[Any, ...]


def _unique_proteins(proteins: Sequence[str], g0: int = 0) -> tuple[list[str], list[list[int]]]:
    """The distinct sequences of ``proteins`` (first-seen order) and, for each, the gene numbers
    ``g0 + i`` of its copies."""
    first: dict[str, int] = {}
    copies: list[list[int]] = []
    for i, p in enumerate(proteins):
        u = first.setdefault(p, len(first))
        if u == len(copies):
            copies.append([])
        copies[u].append(g0 + i)
    return list(first), copies


def _search_rows(
    proteins: Sequence[str], g0: int, marker_sets: Sequence[str], n_proteins: int, *, cpus: Threads = 1,
    progress: Progress | None = None,
) -> dict[str, list[_Row]]:
    """Search proteins ``g0, g0 + 1, ...`` (``proteins``) against the union of ``marker_sets``.

    E-values are computed for ``n_proteins`` searched sequences (Z and domZ), so a chunk of the
    proteins gives exactly the rows that searching all of them at once gives for that chunk.
    ``progress(done_profiles, total_profiles)``. Also a Dask task (with ``cpus=1``).
    """
    import pyhmmer
    from pyhmmer.easel import Alphabet, DigitalSequenceBlock, TextSequence

    profiles, members = _union_profiles(marker_sets)
    results: dict[str, list[_Row]] = {n: [] for n in marker_sets}
    if not len(proteins):
        return results
    alphabet = Alphabet.amino()
    # Identical proteins are searched once: strains and repeats share genes (medium: 28 % of the proteins
    # repeat another, 26 % of the residues); each copy gets the hit rows of its sequence. E-values stay
    # those of all ``n_proteins`` (Z), so the rows are the ones searching every copy gives.
    unique, copies = _unique_proteins(proteins, g0)
    block = DigitalSequenceBlock(
        alphabet, (TextSequence(name=str(u), sequence=p).digitize(alphabet) for u, p in enumerate(unique))
    )
    del unique
    # Which (set, marker id, cut-off) each unique profile serves.
    roles: list[list[tuple[str, str, tuple[float, float] | None]]] = [[] for _ in profiles]
    for name in marker_sets:
        ms = marker_set(name)
        rule = CUTOFF_RULES[ms.rule]
        for pos in members[name]:
            hmm = profiles[pos]
            roles[pos].append((name, ms.merge.get(marker_id(hmm), marker_id(hmm)), rule(hmm)))
    cuts = [c for r in roles for _, _, c in r]
    known = [c for c in cuts if c is not None]
    options: dict[str, Any] = {"Z": n_proteins, "domZ": n_proteins}
    if known and len(known) == len(cuts):
        # Report every hit that could pass some set's cut-off; each set's own cut-off is applied below.
        options.update(T=min(c[0] for c in known), domT=min(c[1] for c in known))
    else:
        options.update(E=10.0, domE=10.0)

    local = threading.local()

    def search(hmm: "pyhmmer.plan7.HMM") -> Any:  # one profile in this thread; the search releases the GIL
        # One pipeline per thread, reused (as hmmsearch does): a new one per profile, or a pyhmmer.hmmsearch
        # call per profile, is freed only when Python's cyclic GC happens to run, with its dynamic-programming
        # matrices: medium's RSS rose 220 MB over 60 profiles, 27 MB this way. Same hits.
        pipeline = getattr(local, "pipeline", None)
        if pipeline is None:
            pipeline = local.pipeline = pyhmmer.plan7.Pipeline(alphabet, **options)
        try:
            return pipeline.search_hmm(hmm, block)
        finally:
            pipeline.clear()

    # profiles on an elastic pool (not hmmsearch's own threads): with a CoreShare, cores handed back by a
    # stage running beside this one (training) are taken over from the next profile on
    for done, (pos, top) in enumerate(elastic_map(search, profiles, cpus if isinstance(cpus, CoreShare) else max(1, int(cpus))),
                                      start=1):
        if progress is not None:
            progress(done, len(profiles))
        hmm = profiles[pos]
        for hit in top:
            genes = copies[int(hit.name)]
            for name, mid, cut in roles[pos]:
                passed = _hit_rows(hit, cut, hmm.M)
                if passed is not None:
                    score, cov, *spans = passed
                    results[name].extend((pos, g, mid, score, float(hit.evalue), cov, *spans) for g in genes)
    return results


def _frames(rows: Mapping[str, list[_Row]], genes: Genes, contigs: Contigs) -> dict[str, pd.DataFrame]:
    """Hits tables from the rows of :func:`_search_rows`, in one order whatever the chunks were."""
    return {name: _to_frame([r[1:] for r in sorted(rs, key=lambda r: (r[0], r[1]))], genes, contigs)
            for name, rs in rows.items()}


def search_markers(
    genes: Genes,
    contigs: Contigs,
    *,
    marker_sets: Sequence[str] = DEFAULT_STAGE_SETS,
    threads: Threads = 1,
    progress: Progress | None = None,
) -> dict[str, pd.DataFrame]:
    """Search ``genes``' proteins against the union of ``marker_sets``; return one hits table per set.

    ``progress(done, total)`` is called as profiles finish, counting (protein chunk x profile) searches;
    proteins are searched :data:`SEARCH_CHUNK` at a time with E-values for all of them (same hits).

    Returns:
        set name -> hits DataFrame with :data:`COLUMNS`, sorted by contig row, gene number, marker.
    """
    for name in marker_sets:
        marker_set(name)
    n = len(genes)
    bounds = list(range(0, n, SEARCH_CHUNK)) or [0]
    n_profiles = len(_union_profiles(marker_sets)[0])
    rows: dict[str, list[_Row]] = {name: [] for name in marker_sets}
    for c, g0 in enumerate(bounds):  # one digitised block per chunk: memory O(chunk), same hits (Z = n)
        def tick(done: int, _total: int, c: int = c) -> None:
            if progress is not None:
                progress(c * n_profiles + done, len(bounds) * n_profiles)

        part = _search_rows(genes.proteins[g0 : g0 + SEARCH_CHUNK], g0, marker_sets, n, cpus=threads, progress=tick)
        for name, r in part.items():
            rows[name].extend(r)
    return _frames(rows, genes, contigs)


def _best_per_region(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep, per protein, the best-scoring marker of each region: a hit is dropped when its span on the
    protein overlaps a better hit's span by more than half of the shorter span. Competing profiles of one
    gene (paralogous families, the TIGRFAM pairs) keep the best; domains of a multi-domain protein
    (ribosomal protein L2: PF00181 + PF03947) all count."""
    raw = raw.sort_values(["g", "score", "marker"], ascending=[True, False, True], kind="stable")
    keep = np.ones(len(raw), dtype=bool)
    g, a, b = raw["g"].to_numpy(), raw["env_from"].to_numpy(), raw["env_to"].to_numpy()
    start = 0
    for i in range(1, len(raw) + 1):
        if i == len(raw) or g[i] != g[start]:
            for j in range(start + 1, i):
                for k in range(start, j):
                    if keep[k]:
                        overlap = min(b[j], b[k]) - max(a[j], a[k]) + 1
                        if overlap > 0.5 * min(b[j] - a[j] + 1, b[k] - a[k] + 1):
                            keep[j] = False
                            break
            start = i
    return raw[keep]


def _to_frame(rows: list[tuple[Any, ...]], genes: Genes, contigs: Contigs) -> pd.DataFrame:
    """Hits table from (gene, marker, score, evalue, coverage, env_from, env_to, hmm_from, hmm_to) rows."""
    if not rows:
        return empty_hits()
    raw = pd.DataFrame(
        rows, columns=["g", "marker", "score", "evalue", "hmm_coverage", "env_from", "env_to", "hmm_from", "hmm_to"]
    )
    raw = _best_per_region(raw).sort_values(["g", "marker"], kind="stable")
    g = raw["g"].to_numpy()
    rows_ = genes.contig_row[g]
    ids = contigs.ids[rows_].astype(str)
    frame = pd.DataFrame({
        "contig": ids,
        "marker": raw["marker"].to_numpy(),
        "gene": [f"{c}_{k}" for c, k in zip(ids, genes.index[g])],
        "score": raw["score"].to_numpy(np.float64),
        "evalue": raw["evalue"].to_numpy(np.float64),
        "hmm_coverage": raw["hmm_coverage"].to_numpy(np.float64),
        "start": genes.start[g],
        "end": genes.end[g],
        "strand": genes.strand[g].astype(np.int64),
        "partial": genes.partial[g],
        "hmm_from": raw["hmm_from"].to_numpy(np.int64),
        "hmm_to": raw["hmm_to"].to_numpy(np.int64),
    })
    return frame.reset_index(drop=True)


def empty_hits() -> pd.DataFrame:
    """A hits table without rows, with the :data:`COLUMNS` and their dtypes."""
    return pd.DataFrame({
        "contig": pd.Series(dtype=str), "marker": pd.Series(dtype=str), "gene": pd.Series(dtype=str),
        "score": pd.Series(dtype=np.float64), "evalue": pd.Series(dtype=np.float64),
        "hmm_coverage": pd.Series(dtype=np.float64), "start": pd.Series(dtype=np.int64),
        "end": pd.Series(dtype=np.int64), "strand": pd.Series(dtype=np.int64), "partial": pd.Series(dtype=bool),
        "hmm_from": pd.Series(dtype=np.int64), "hmm_to": pd.Series(dtype=np.int64),
    })


def _two_phase(progress: Progress | None, total_bp: int) -> tuple[Progress | None, Progress | None]:
    """Split one ``progress(done, total)`` into gene (bp) and search (profiles) halves, in bp units."""
    if progress is None:
        return None, None
    total = 2 * max(total_bp, 1)

    def genes(done: int, _total: int) -> None:
        progress(done, total)

    def search(done: int, of: int) -> None:
        progress(total // 2 + (total // 2) * done // max(of, 1), total)

    return genes, search


def find_marker_sets(
    contigs: Contigs,
    *,
    marker_sets: Sequence[str] = DEFAULT_STAGE_SETS,
    threads: Threads = 1,
    progress: Progress | None = None,
    scheduler: Scheduler = None,
    gene_mode: str = DEFAULT_GENE_MODE,
    release_sequences: bool = False,
) -> dict[str, pd.DataFrame]:
    """Call genes once and search them against several marker sets; see :func:`find_markers`.

    ``progress(done, total)`` counts in bp-equivalents: the first half is gene calling, the second the search.
    ``scheduler`` (a Dask scheduler address or ``distributed.Client``): gene calling and the search run
    per chunk of contigs as tasks on that cluster (``threads`` unused); the hits are identical.
    ``release_sequences``: free ``contigs``' sequences once the genes are called
    (:meth:`~deepmetabin.contigs.Contigs.release_sequences`), for a caller that owns them.

    Raises:
        ValueError: an unknown marker set name or gene mode.
        MarkerDataError: a marker data file is missing or damaged.
        SchedulerError: ``scheduler`` cannot be used.
    """
    for name in marker_sets:
        load_profiles(name)  # fail on missing data before minutes of gene calling
    contigs.require_sequences()
    p_genes, p_search = _two_phase(progress, contigs.total_bp)
    if p_genes is not None:
        p_genes(0, contigs.total_bp)
    if scheduler is not None:
        models = _gene_models(contigs, gene_mode)  # a few seconds here; the calling runs there
        return _find_on_cluster(contigs, tuple(marker_sets), scheduler, p_genes, p_search, models)
    genes = call_genes(contigs, threads=threads, progress=p_genes, mode=gene_mode)
    if release_sequences:
        contigs.release_sequences()
    release_memory()  # gene calling's freed buffers, before the search's own peak (medium: -75 MB)
    return search_markers(genes, contigs, marker_sets=marker_sets, threads=threads, progress=p_search)


def _n_genes(part: tuple[np.ndarray, list[str]]) -> int:
    return len(part[1])


def _search_part(part: tuple[np.ndarray, list[str]], g0: int, marker_sets: tuple[str, ...],
                 n_proteins: int) -> tuple[np.ndarray, dict[str, list[_Row]]]:
    """Dask task: the search of one chunk's genes (kept on the worker since gene calling)."""
    meta, proteins = part
    return meta, _search_rows(proteins, g0, marker_sets, n_proteins)


def _find_on_cluster(contigs: Contigs, marker_sets: tuple[str, ...], scheduler: Scheduler,
                     p_genes: Progress | None, p_search: Progress | None,
                     models: GeneModels | None) -> dict[str, pd.DataFrame]:
    """Genes per chunk of contigs on the cluster; once all are called (the E-values need the total
    protein count), the search per chunk, on the worker that holds the chunk's proteins."""
    import uuid

    import distributed

    token = uuid.uuid4().hex[:12]
    with dask_client(scheduler) as client:
        threads = cluster_threads(client)
        chunks = _chunks(contigs.lengths, min(len(contigs), 4 * threads)) if len(contigs) else []
        off = contigs.offsets
        parts: dict[int, distributed.Future] = {}
        counts: dict[int, int] = {}
        which: dict[str, int] = {}
        waiting = distributed.as_completed(loop=client.loop)
        todo = iter(enumerate(chunks))

        def submit_next() -> None:
            nxt = next(todo, None)
            if nxt is None:
                return
            k, (a, b) = nxt
            buf = client.scatter(contigs.seq_buffer[off[a] : off[b]], hash=False)
            parts[k] = client.submit(_call_chunk, buf, off[a : b + 1] - off[a], a, models, contigs.gc[a:b],
                                     key=f"deepmetabin-genes-{k}-{token}")
            n = client.submit(_n_genes, parts[k], key=f"deepmetabin-ngenes-{k}-{token}")
            which[n.key] = k
            waiting.add(n)

        try:
            for _ in range(2 * threads):  # sequences sent as chunks finish, not all at once
                submit_next()
            done_bp = 0
            for fut in waiting:
                k = which[fut.key]
                counts[k] = fut.result()
                a, b = chunks[k]
                done_bp += int(contigs.lengths[a:b].sum())
                if p_genes is not None:
                    p_genes(done_bp, contigs.total_bp)
                submit_next()
            n_proteins = sum(counts.values())
            log.info("%d genes on %d contigs (%d bp), on the Dask cluster", n_proteins, len(contigs), contigs.total_bp)
            starts = np.concatenate([[0], np.cumsum([counts[k] for k in range(len(chunks))])]).astype(int)
            searches = {client.submit(_search_part, parts[k], int(starts[k]), marker_sets, n_proteins,
                                      key=f"deepmetabin-search-{k}-{token}"): k for k in range(len(chunks))}
            metas: dict[int, np.ndarray] = {}
            rows: dict[str, list[_Row]] = {n: [] for n in marker_sets}
            for n_done, fut in enumerate(distributed.as_completed(searches, loop=client.loop), start=1):
                k = searches[fut]
                metas[k], part_rows = fut.result()
                parts.pop(k).release()
                for name, rs in part_rows.items():
                    rows[name].extend(rs)
                if p_search is not None:
                    p_search(n_done, len(chunks))
        except BaseException:
            for f in [*parts.values(), *waiting.futures]:
                f.cancel()
            raise
    meta = np.concatenate([np.zeros((0, 6), dtype=np.int64)] + [metas[k] for k in range(len(chunks))])
    return _frames(rows, _genes(meta, []), contigs)


def find_markers(
    contigs: Contigs, *, marker_set: str = "sc107", threads: Threads = 1, progress: Progress | None = None,
    scheduler: Scheduler = None, gene_mode: str = DEFAULT_GENE_MODE,
) -> pd.DataFrame:
    """Single-copy marker hits on ``contigs``: genes by pyrodigal, profiles by pyhmmer.

    Args:
        contigs: the contigs (sequences needed).
        marker_set: a key of :data:`MARKER_SETS` (``sc107``, ``uni56``, ``checkm_bacteria``).
        threads: threads for gene calling (chunks of contigs) and the search (profiles).
        progress: ``progress(done, total)`` callback, bp-equivalent units.
        scheduler: a Dask scheduler address or ``distributed.Client``: the work runs there in chunks
            (see :func:`find_marker_sets`); None: this machine.
        gene_mode: how genes are called, one of :data:`GENE_MODES` (see :func:`call_genes`).

    Returns:
        DataFrame with :data:`COLUMNS`, one row per (protein, marker) (see the module docstring for which
        hits count); empty (same columns and dtypes) when no contig carries a marker.

    Raises:
        ValueError: unknown ``marker_set`` or ``gene_mode``.
        MarkerDataError: the set's data file is missing or damaged.
    """
    return find_marker_sets(contigs, marker_sets=(marker_set,), threads=threads, progress=progress,
                            scheduler=scheduler, gene_mode=gene_mode)[marker_set]


# ------------------------------------------------------------------------------------------- cache
def sequences_hash(contigs: Contigs) -> str:
    """SHA-256 (hex, first 16) of the contigs' sequences and their boundaries."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(contigs.offsets, dtype=np.int64).tobytes())
    h.update(memoryview(np.ascontiguousarray(contigs.require_sequences())))  # no copy of the assembly
    return h.hexdigest()[:16]


def set_versions(marker_sets: Sequence[str]) -> dict[str, str]:
    """``{set name: "<version>:<data hash>"}`` of ``marker_sets`` (part of :func:`cache_key`; cheap)."""
    return {n: f"{marker_set(n).version}:{marker_set(n).sha256[:12]}" for n in marker_sets}


def cache_key(contigs: Contigs, marker_sets: Sequence[str], *, gene_mode: str = DEFAULT_GENE_MODE) -> dict[str, Any]:
    """What a cached hits file must match: contig ids and sequences, sets with versions and data hashes,
    gene-calling mode (with the pyrodigal version: its models decide which genes are found)."""
    import pyrodigal

    return {
        "format": MARKERS_FORMAT,
        "ids_hash": contigs.ids_hash,
        "seq_hash": sequences_hash(contigs),
        "sets": set_versions(marker_sets),
        "genes": f"{gene_mode}:pyrodigal-{pyrodigal.__version__}",
    }


_MAGIC = b"#deepmetabin-markers"


def write_markers(path: str | os.PathLike[str], hits: Mapping[str, pd.DataFrame], key: Mapping[str, Any]) -> None:
    """Write several sets' hits as one TSV (column ``marker_set`` first) with a checked header, atomically.

    Format: three ``#`` lines (magic and format, the JSON ``key``, SHA-256 of the body), then the body: a
    TSV with a header row. :func:`read_markers` checks the checksum, so a damaged file is detected.
    """
    parts = [h.assign(marker_set=name)[["marker_set", *COLUMNS]] for name, h in hits.items()]
    body_frame = pd.concat(parts, ignore_index=True) if parts else empty_hits().assign(marker_set="")[["marker_set", *COLUMNS]]
    body = body_frame.to_csv(sep="\t", index=False, float_format="%.6g").encode()
    head = b"%s\tformat=%d\n#key\t%s\n#sha256\t%s\n" % (
        _MAGIC, MARKERS_FORMAT, json.dumps(dict(key), sort_keys=True).encode(), hashlib.sha256(body).hexdigest().encode(),
    )
    write_bytes(path, head + body)


class _Unusable(Exception):
    """A cached markers file that cannot be used (reason in the message)."""


def read_markers(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Read a file written by :func:`write_markers`: (key, set name -> hits table).

    Raises:
        MarkerCacheError: the file is missing, truncated, edited or otherwise damaged (checksum mismatch).
    """
    from .errors import MarkerCacheError

    path = Path(path)
    try:
        return _read_markers(path)
    except FileNotFoundError:
        raise MarkerCacheError(f"{path}: no markers file; run `deepmetabin markers` first") from None
    except _Unusable as exc:
        raise MarkerCacheError(f"{path}: {exc}; delete it and run `deepmetabin markers` again") from None


def _read_markers(path: Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    data = path.read_bytes()
    lines = data.split(b"\n", 3)
    if len(lines) < 4 or not lines[0].startswith(_MAGIC) or not lines[1].startswith(b"#key\t") or not lines[2].startswith(b"#sha256\t"):
        raise _Unusable("not a deepmetabin markers file (header lines missing)")
    body = lines[3]
    if hashlib.sha256(body).hexdigest().encode() != lines[2].split(b"\t", 1)[1].strip():
        raise _Unusable("damaged markers file (checksum mismatch)")
    try:
        key = json.loads(lines[1].split(b"\t", 1)[1])
        frame = pd.read_csv(
            io.BytesIO(body), sep="\t", dtype={"marker_set": str, "contig": str, "marker": str, "gene": str},
            keep_default_na=False, na_values=[],
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise _Unusable(f"unreadable markers file ({exc})") from None
    if list(frame.columns) != ["marker_set", *COLUMNS]:
        raise _Unusable(f"unexpected columns {list(frame.columns)}")
    sets = key.get("sets", {})
    out = {}
    for name in sets:
        part = frame[frame["marker_set"] == name].drop(columns="marker_set").reset_index(drop=True)
        out[name] = part.astype({c: t for c, t in empty_hits().dtypes.items()}) if len(part) else empty_hits()
    return key, out


def cached_markers(
    contigs: Contigs,
    path: str | os.PathLike[str],
    *,
    marker_sets: Sequence[str] = DEFAULT_STAGE_SETS,
    threads: Threads = 1,
    progress: Progress | None = None,
    scheduler: Scheduler = None,
    gene_mode: str = DEFAULT_GENE_MODE,
    release_sequences: bool = False,
) -> dict[str, pd.DataFrame]:
    """:func:`find_marker_sets`, cached in the file ``path`` (e.g. ``<run>/markers.tsv``).

    The cached file is used only when its checksum is intact and its key (contig ids hash, sequences
    hash, marker sets with versions, gene mode, format) equals this call's; otherwise the hits are
    recomputed and the file is replaced atomically. A damaged file is logged as a warning, never an error.
    """
    key = cache_key(contigs, marker_sets, gene_mode=gene_mode)
    path = Path(path)
    if path.exists():
        try:
            old_key, hits = _read_markers(path)
        except _Unusable as exc:
            log.warning("%s: %s; recomputing markers", path, exc)
        else:
            if old_key == key:
                log.info("%s: cached markers match the contigs and marker sets; reusing them", path)
                return hits
            log.info("%s: cached markers are for other contigs or marker sets; recomputing", path)
    hits = find_marker_sets(contigs, marker_sets=marker_sets, threads=threads, progress=progress, scheduler=scheduler,
                            gene_mode=gene_mode, release_sequences=release_sequences)
    write_markers(path, hits, key)
    return hits


# ------------------------------------------------------------------------------- uses of the hits
def marker_counts(hits: pd.DataFrame) -> pd.Series:
    """Number of distinct contigs carrying each marker (index: marker id), sorted ascending."""
    if hits.empty:
        return pd.Series(dtype=np.int64)
    return hits.drop_duplicates(["marker", "contig"]).groupby("marker").size().sort_values(kind="stable")


def estimate_genomes(hits: pd.DataFrame) -> int:
    """Estimated number of genomes: the median number of contigs per marker, over markers found.

    As SemiBin's seed choice, the upper median (``sorted_counts[n // 2]``) of the per-marker counts of
    distinct contigs (two copies on one contig count once). 0 when there is no hit. Use ``sc107`` hits
    (bacteria) or ``uni56`` hits (bacteria + archaea).
    """
    counts = marker_counts(hits).to_numpy()
    return int(counts[len(counts) // 2]) if len(counts) else 0


def contig_rows(hits: pd.DataFrame, contigs: Contigs | ContigTable | Sequence[str]) -> np.ndarray:
    """(H,) int64 row in ``contigs`` of each hit's contig.

    Raises:
        ValueError: a hit names a contig that is not in ``contigs``.
    """
    ids = contigs.ids if isinstance(contigs, (Contigs, ContigTable)) else np.asarray(contigs, dtype=object)
    index = pd.Index(ids.astype(str))
    rows = index.get_indexer(hits["contig"].astype(str))
    if (rows < 0).any():
        bad = hits["contig"].to_numpy()[rows < 0][0]
        raise ValueError(f"marker hit on contig '{bad}' which is not among the {len(index)} contigs given")
    return rows.astype(np.int64)


def _complementary(from_a: Any, to_a: Any, from_b: Any, to_b: Any) -> Any:
    """Whether HMM intervals a and b overlap by at most :data:`SPLIT_GENE_OVERLAP` of the shorter one."""
    overlap = np.minimum(to_a, to_b) - np.maximum(from_a, from_b) + 1
    return overlap <= SPLIT_GENE_OVERLAP * (np.minimum(to_a - from_a, to_b - from_b) + 1)


def count_copies(hits: pd.DataFrame) -> dict[str, int]:
    """Copies of each marker in ``hits`` (e.g. the hits of one bin), as CheckM counts them (genes).

    Two partial genes (running off contig ends) of one marker that align to different parts of the
    profile (:func:`_complementary`) count as one copy: they are likely the two ends of one gene cut by a
    contig break (CheckM merges such a marker split over adjacent genes of one contig).
    """
    if hits.empty:
        return {}
    names, inv = np.unique(hits["marker"].astype(str).to_numpy(), return_inverse=True)
    partial = hits["partial"].to_numpy(bool)
    copies = np.bincount(inv, minlength=len(names))  # every hit a copy, less the fragments paired below
    hmm_from, hmm_to = hits["hmm_from"].to_numpy(), hits["hmm_to"].to_numpy()
    for m in np.flatnonzero(np.bincount(inv[partial], minlength=len(names)) >= 2):
        rows = np.flatnonzero((inv == m) & partial)
        frags = sorted(zip(hmm_from[rows], hmm_to[rows]))
        used = [False] * len(frags)
        for i, (a, b) in enumerate(frags):  # pair each fragment with the next complementary one
            if used[i]:
                continue
            for j in range(i + 1, len(frags)):
                if not used[j] and _complementary(a, b, *frags[j]):
                    used[j] = True
                    break
        copies[m] -= sum(used)
    return {str(n): int(c) for n, c in zip(names, copies)}


def cannot_links(hits: pd.DataFrame, contigs: Contigs | Sequence[str], *, split_genes: bool = False) -> np.ndarray:
    """Pairs of contigs that carry the same single-copy marker (so should be in different bins).

    Args:
        hits: a hits table (:data:`COLUMNS`), e.g. ``find_markers(contigs, marker_set="sc107")``.
        contigs: the :class:`Contigs` (or their ids in order) that row indices refer to.
        split_genes: also link two contigs whose only shared marker hits are partial genes that may be
            the two ends of one gene cut by contig breaks (see :func:`count_copies`); by default such
            pairs are not linked, since they most likely come from one genome.

    Returns:
        (M, 2) int64 array of contig row indices ``i < j``, unique, sorted. A marker on k contigs gives
        k(k-1)/2 pairs (about 10^4-10^5 for tens of genomes). ``scipy.sparse.coo_matrix((np.ones(M),
        pairs.T), shape=(N, N))`` turns it into a matrix.

    Raises:
        ValueError: a hit names a contig that is not in ``contigs``.
    """
    empty = np.zeros((0, 2), dtype=np.int64)
    if hits.empty:
        return empty
    frame = pd.DataFrame({
        "marker": hits["marker"].to_numpy(), "row": contig_rows(hits, contigs),
        "partial": hits["partial"].to_numpy(bool), "a": hits["hmm_from"].to_numpy(), "b": hits["hmm_to"].to_numpy(),
    })
    pairs = []
    for _, group in frame.groupby("marker", sort=False):
        if len(group) < 2:
            continue
        r, p, a, b = (group[k].to_numpy() for k in ("row", "partial", "a", "b"))
        i, j = np.triu_indices(len(r), k=1)
        ok = r[i] != r[j]
        if not split_genes:
            ok &= ~(p[i] & p[j] & _complementary(a[i], b[i], a[j], b[j]))
        pairs.append(np.stack([np.minimum(r[i], r[j])[ok], np.maximum(r[i], r[j])[ok]], axis=1))
    if not pairs:
        return empty
    both = np.concatenate(pairs).astype(np.int64)
    n = int(both.max()) + 1
    code = np.sort(both[:, 0] * n + both[:, 1])  # unique (i, j) rows, sorted: a sort of int64 codes (numpy's
    code = code[np.r_[True, code[1:] != code[:-1]]]  # row-wise and hash-based unique took seconds at 10^6 pairs)
    return np.stack([code // n, code % n], axis=1)
