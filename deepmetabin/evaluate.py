"""Scores of a binning against a ground truth (only this module ever reads a truth).

Definitions (``truth``: contig -> genome for every contig of the assembly; ``bins``: contig -> bin
for the binned contigs; contigs absent from ``bins`` are unbinned):

* **F1 by contigs** (the DeepMetaBin paper): precision = for each bin the share of its contigs
  from its majority genome, averaged weighted by bin size (= majority contigs / binned contigs);
  recall = for each genome the share of its contigs in its majority bin, averaged weighted by
  genome size over *all* truth contigs (unbinned contigs count against recall); F1 = harmonic mean.
  **F1 by bp**: the same with every contig weighted by its length.
* **Genome recovery** (AMBER-style, by bp): each bin's majority genome by bp; completeness = bp of
  that genome in the bin / the genome's bp in the truth; contamination = foreign bp / bin bp.
  A genome counts once per tier if any bin reaches it: NC > 90 % / < 5 %, ``>70 %/<10 %``,
  MQ >= 50 % / < 10 %.
* **ARI** over the binned contigs (each unbinned contig excluded), and the share of bp binned.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputFileError


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    precision_bp: float
    recall_bp: float
    f1_bp: float
    nc: int
    q70_10: int
    mq: int
    ari: float
    binned_bp: float
    n_bins: int
    n_genomes: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def read_binning(path: str | os.PathLike[str], *, kind: str = "bins") -> pd.DataFrame:
    """Read a binning or a truth as DataFrame(contig, bin[, length]).

    Accepts the CAMI binning format (``@@SEQUENCEID BINID [LENGTH]``) or a two-column TSV. In a
    plain TSV the contig column is the one whose values are all unique; if both are, the order is
    VAMB's ``clustername contigname`` for ``kind="bins"`` and ``contig genome`` for ``kind="truth"``.

    Raises:
        InputFileError: missing/empty file, fewer than two columns, or a contig listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: file not found; give a bins.tsv / CAMI binning file")
    lines = path.read_text().splitlines()
    header = next((i for i, l in enumerate(lines) if l.upper().startswith("@@SEQUENCEID")), None)
    kept = [l for l in lines[(header + 1 if header is not None else 0):] if l.strip() and not l.startswith(("@", "#"))]
    if not kept:
        raise InputFileError(f"{path}: no binning rows; expected 'bin<TAB>contig' lines or the CAMI format")
    tabs = [l.count("\t") for l in kept]
    if min(tabs) < 1:
        raise InputFileError(f"{path}: a line has fewer than 2 tab-separated columns; expected 'bin<TAB>contig' or CAMI format")
    # the C parser on the kept lines (a Python split per line took seconds at 10^5-10^6 contigs)
    frame = pd.read_csv(io.StringIO("\n".join(kept)), sep="\t", header=None, names=range(max(tabs) + 1), dtype=str,
                        keep_default_na=False, quoting=csv.QUOTE_NONE, engine="c").iloc[:, :3]
    if header is not None:
        cols = [c.strip().lstrip("@").upper() for c in lines[header].split("\t")]
        frame.columns = [{"SEQUENCEID": "contig", "BINID": "bin", "LENGTH": "length"}.get(c, c) for c in cols[: frame.shape[1]]]
    else:
        first = frame.iloc[0].tolist()
        if first[:2] in (["clustername", "contigname"], ["contigname", "clustername"]) or first[0].lower() in ("contig", "bin", "contigname", "clustername", "genome"):
            names = [s.lower() for s in first[:2]]
            frame = frame.iloc[1:].reset_index(drop=True)
            contig_first = names[0] in ("contig", "contigname")
        else:
            uniq0, uniq1 = frame[0].is_unique, frame[1].is_unique
            contig_first = uniq0 and not uniq1 if uniq0 != uniq1 else kind == "truth"
        frame = frame.iloc[:, :2]
        frame.columns = ["contig", "bin"] if contig_first else ["bin", "contig"]
    frame = frame[[c for c in ("contig", "bin", "length") if c in frame.columns]].copy()
    if "length" in frame:
        frame["length"] = pd.to_numeric(frame["length"], errors="coerce")
    dup = frame["contig"].duplicated()
    if dup.any():
        raise InputFileError(f"{path}: contig '{frame['contig'][dup].iloc[0]}' is listed twice; each contig belongs to at most one bin")
    return frame.reset_index(drop=True)


def _f1_parts(table: pd.DataFrame, weight: str) -> tuple[float, float]:
    """Precision and recall from rows (genome, bin, weight) of all truth contigs (bin NaN = unbinned)."""
    binned = table.dropna(subset=["bin"])
    cross = binned.groupby(["bin", "genome"])[weight].sum()
    precision = cross.groupby(level=0).max().sum() / binned[weight].sum() if len(binned) else 0.0
    recall = cross.groupby(level=1).max().sum() / table[weight].sum()
    return float(precision), float(recall)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def genome_recovery(bins: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per bin: majority genome (by bp), completeness and contamination (fractions), bp."""
    t = truth.set_index("contig")
    genome_bp = t.groupby("bin")["length"].sum()
    b = bins.merge(truth.rename(columns={"bin": "genome"}), on="contig", how="inner")
    cross = b.groupby(["bin", "genome"])["length"].sum().reset_index()
    rows = []
    for bin_id, grp in cross.groupby("bin"):
        top = grp.loc[grp["length"].idxmax()]
        total = grp["length"].sum()
        rows.append({"bin": bin_id, "genome": top["genome"], "bp": total,
                     "completeness": top["length"] / genome_bp[top["genome"]], "contamination": 1 - top["length"] / total})
    return pd.DataFrame(rows, columns=["bin", "genome", "bp", "completeness", "contamination"])


def score(bins: pd.DataFrame, truth: pd.DataFrame, lengths: pd.Series | None = None) -> Scores:
    """Score ``bins`` (contig, bin) against ``truth`` (contig, bin[, length]); see the module docstring.

    ``lengths`` (indexed by contig) supplies contig lengths when the truth has none.
    Binned contigs that are not in the truth are ignored.
    """
    truth = truth.copy()
    if "length" not in truth or truth["length"].isna().any():
        if lengths is None:
            raise InputFileError("the truth has no LENGTH column; give the contigs FASTA (--contigs) for bp-based scores")
        truth["length"] = truth["contig"].map(lengths).astype(float)
    table = truth.rename(columns={"bin": "genome"}).merge(bins[["contig", "bin"]], on="contig", how="left")
    table["one"] = 1.0
    p, r = _f1_parts(table, "one")
    pb, rb = _f1_parts(table, "length")
    rec = genome_recovery(bins[["contig", "bin"]], truth)

    def count(c: float, k: float) -> int:
        ok = rec[(rec["completeness"] > c) & (rec["contamination"] < k)]
        return int(ok["genome"].nunique())

    binned = table.dropna(subset=["bin"])
    from sklearn.metrics import adjusted_rand_score  # here: importing sklearn takes ~2 s, and the app reads bins

    ari = float(adjusted_rand_score(binned["genome"], binned["bin"])) if len(binned) else 0.0
    return Scores(
        precision=p, recall=r, f1=_f1(p, r), precision_bp=pb, recall_bp=rb, f1_bp=_f1(pb, rb),
        nc=count(0.9, 0.05), q70_10=count(0.7, 0.10), mq=count(0.5 - 1e-12, 0.10), ari=ari,
        binned_bp=float(binned["length"].sum() / table["length"].sum()),
        n_bins=int(bins["bin"].nunique()), n_genomes=int(truth["bin"].nunique()),
    )


def precision_by_length(bins: pd.DataFrame, truth: pd.DataFrame, lengths: pd.Series, *, min_length: int = 1000,
                        max_length: int = 2500) -> tuple[float, int]:
    """(precision, n) of the binned contigs with ``min_length`` <= length < ``max_length`` bp: the share
    of them whose genome is their bin's majority genome (majority by contig count over the whole bin,
    as in the F1 by contigs), and how many such contigs are binned (precision NaN when none)."""
    b = bins[["contig", "bin"]].merge(truth[["contig", "bin"]].rename(columns={"bin": "genome"}), on="contig", how="inner")
    if b.empty:
        return float("nan"), 0
    majority = b.groupby(["bin", "genome"]).size().reset_index(name="n").sort_values("n", ascending=False) \
        .drop_duplicates("bin").set_index("bin")["genome"]
    length = b["contig"].map(lengths).to_numpy()
    short = (length >= min_length) & (length < max_length)
    if not short.any():
        return float("nan"), 0
    right = b["genome"].to_numpy()[short] == b["bin"].map(majority).to_numpy()[short]
    return float(right.mean()), int(short.sum())


def labels_to_bins(ids: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """(N,) contig ids + (N,) integer labels (-1 = unbinned) -> DataFrame(contig, bin)."""
    keep = np.asarray(labels) >= 0
    return pd.DataFrame({"contig": np.asarray(ids)[keep].astype(str), "bin": np.asarray(labels)[keep].astype(str)})


def score_per_sample(bins: pd.DataFrame, truth: pd.DataFrame, separator: str = "C") -> pd.DataFrame:
    """Multi-sample scores: one row per sample (bins and truth restricted to the contigs whose id
    starts with ``<sample><separator>``), then a ``mean`` row (the mean over samples, as the
    DeepMetaBin paper reports) and a ``pooled`` row (all samples at once, genome ids made
    per-sample, so a genome assembled in 3 samples counts as 3 genomes).
    """
    from .multisample import sample_of

    t = truth.assign(sample=sample_of(truth["contig"].to_numpy(), separator, source="truth"))
    b = bins.assign(sample=sample_of(bins["contig"].to_numpy(), separator, source="bins")) if len(bins) else bins.assign(sample=[])
    rows = []
    for s in sorted(t["sample"].unique()):
        sc = score(b[b["sample"] == s][["contig", "bin"]], t[t["sample"] == s].drop(columns="sample"))
        rows.append({"sample": s, **sc.as_dict()})
    frame = pd.DataFrame(rows)
    mean = frame.drop(columns="sample").mean().to_dict()
    pooled_truth = t.assign(bin=t["sample"] + ":" + t["bin"].astype(str)).drop(columns="sample")
    pooled = score(b[["contig", "bin"]], pooled_truth).as_dict()
    return pd.concat([frame, pd.DataFrame([{"sample": "mean", **mean}, {"sample": "pooled", **pooled}])], ignore_index=True)
