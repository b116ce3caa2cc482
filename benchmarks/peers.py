"""Pure parts of the binning harness (no tool is run here): parse `/usr/bin/time -v`, turn each
binner's output into a contig -> bin frame, and build the command lines. `run.py` runs them;
`tests/test_harness.py` tests this module on tiny files.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# VAMB's documentation writes bins with `--minfasta 200000`; deepmetabin's --min-bin-size default is
# the same 200 kbp. The harness drops VAMB clusters below it (the clusters file keeps them all).
VAMB_MIN_BIN_BP = 200_000

ROW_COLUMNS = [
    "tool", "version", "options", "seed", "f1", "f1_bp", "precision", "recall", "precision_bp", "recall_bp",
    "nc", "mq", "ari", "binned_bp", "n_bins", "wall_s", "cpu_s", "rss_mb", "exit", "date",
]


# ------------------------------------------------------------------------------- /usr/bin/time -v
def _clock(text: str) -> float:
    """'1:02:03.5' / '2:03.45' / '0.51' -> seconds."""
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_time_v(text: str) -> dict[str, float]:
    """GNU time's `-v` report -> wall_s, user_s, sys_s, cpu_s, rss_mb (max RSS of the largest
    process, KiB -> MiB) and exit (the command's exit status; -signal when it was killed).

    Raises:
        ValueError: the text has no `Elapsed (wall clock) time` line (not a `time -v` report).
    """
    def grab(label: str) -> str | None:
        m = re.search(rf"^\s*{re.escape(label)}[^:\n]*:\s*(.+)$", text, re.M)
        return m.group(1).strip() if m else None

    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*(\S+)", text)
    if wall is None:
        raise ValueError("not a `/usr/bin/time -v` report: no 'Elapsed (wall clock) time' line")
    user, sys_ = float(grab("User time") or 0), float(grab("System time") or 0)
    rss_kb = float(grab("Maximum resident set size") or 0)
    status = grab("Exit status")
    sig = re.search(r"Command terminated by signal (\d+)", text)
    exit_code = -int(sig.group(1)) if sig else int(status) if status is not None else -1
    return {"wall_s": _clock(wall.group(1)), "user_s": user, "sys_s": sys_, "cpu_s": user + sys_,
            "rss_mb": rss_kb / 1024, "exit": exit_code}


# ------------------------------------------------------------------------------ outputs -> frames
_FASTA_SUFFIXES = (".fa", ".fna", ".fasta", ".fa.gz", ".fna.gz", ".fasta.gz")


def _fasta_ids(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        return [line[1:].split()[0] for line in handle if line.startswith(">")]


def _bin_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(_FASTA_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def fasta_dir_bins(folder: Path, prefix: str = "") -> pd.DataFrame:
    """One FASTA per bin (MetaBAT2 `bin.N.fa`, SemiBin2 `output_bins/*.fa.gz`) -> DataFrame(contig, bin).
    Files named like MetaBAT's `*.unbinned.fa` / `*lowDepth*` / `*tooShort*` are not bins and are skipped."""
    rows = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or not path.name.startswith(prefix) or not path.name.endswith(_FASTA_SUFFIXES):
            continue
        if any(tag in path.name for tag in ("unbinned", "lowDepth", "tooShort")):
            continue
        rows += [(contig, _bin_name(path)) for contig in _fasta_ids(path)]
    return pd.DataFrame(rows, columns=["contig", "bin"])


def vamb_bins(clusters_tsv: Path, lengths: pd.Series, min_bin_bp: int = VAMB_MIN_BIN_BP) -> pd.DataFrame:
    """VAMB `vae_clusters_*.tsv` (`clustername contigname`, header) -> DataFrame(contig, bin), keeping
    clusters of >= min_bin_bp bp (lengths: contig -> bp); smaller clusters count as unbinned."""
    frame = pd.read_csv(clusters_tsv, sep="\t", dtype=str)
    frame.columns = ["bin", "contig"] + list(frame.columns[2:])
    frame = frame[["contig", "bin"]]
    size = frame["contig"].map(lengths).fillna(0).groupby(frame["bin"]).transform("sum")
    return frame[size >= min_bin_bp].reset_index(drop=True)


def semibin_bins(outdir: Path) -> pd.DataFrame:
    """SemiBin2 output folder -> DataFrame(contig, bin): `contig_bins.tsv` lists every contig with a
    cluster, so the bins actually written (`output_bins/`, which SemiBin2 filters by size) decide."""
    outdir = Path(outdir)
    for name in ("output_bins", "output_recluster_bins"):
        if (outdir / name).is_dir():
            return fasta_dir_bins(outdir / name)
    raise FileNotFoundError(f"{outdir}: no output_bins/ folder; did SemiBin2 finish? see its log")


def summed_metabat_depth(depth: pd.DataFrame) -> pd.DataFrame:
    """MetaBAT depth table (contigName contigLen totalAvgDepth S.bam S.bam-var ...) -> the same format
    with one pseudo-sample: depth summed over samples, variance summed (samples independent). This is
    what SemiBin2's pre-trained models accept (`--depth-metabat2`, single sample only)."""
    samples = [c for c in depth.columns[3:] if not str(c).endswith("-var")]
    total = depth[samples].sum(axis=1)
    var = depth[[f"{c}-var" for c in samples]].sum(axis=1)
    return pd.DataFrame({"contigName": depth.iloc[:, 0], "contigLen": depth.iloc[:, 1], "totalAvgDepth": total,
                         "summed.bam": total, "summed.bam-var": var})


# -------------------------------------------------------------------------------------- the tools
@dataclass
class Dataset:
    folder: Path
    bams: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.resolve().name

    @property
    def contigs(self) -> Path:
        return self.folder / "contigs.fna.gz"

    @property
    def depth(self) -> Path:
        return self.folder / "depth.tsv"

    @property
    def abundance(self) -> Path:
        return self.folder / "abundance.tsv"


def metabat_command(ds: Dataset, out: Path, threads: int, seed: int, min_contig: int | None) -> list[str]:
    cmd = ["metabat2", "-i", str(ds.contigs), "-a", str(ds.depth), "-o", str(out / "bin"), "-t", str(threads),
           "--seed", str(seed)]
    return cmd + (["-m", str(min_contig)] if min_contig else [])


def split_by_sample(ds: Dataset, out: Path, separator: str) -> dict[str, Dataset]:
    """One dataset per sample of a multi-sample catalogue (ids ``<sample><separator>...``): that sample's
    contigs (``out/<sample>/contigs.fna.gz``) with their rows of the depth table, every sample's depth
    column kept (how MetaBAT2 is run per sample on cross-mapped depths)."""
    import gzip

    depth = pd.read_csv(ds.depth, sep="\t")
    samples = depth["contigName"].astype(str).str.split(separator, n=1).str[0]
    out_sets: dict[str, Dataset] = {}
    handles = {}
    for sample in sorted(samples.unique()):
        folder = out / sample
        folder.mkdir(parents=True, exist_ok=True)
        depth[samples == sample].to_csv(folder / "depth.tsv", sep="\t", index=False)
        handles[sample] = gzip.open(folder / "contigs.fna.gz", "wt", compresslevel=1)
        out_sets[sample] = Dataset(folder)
    current = None
    with gzip.open(ds.contigs, "rt") as fasta:
        for line in fasta:
            if line.startswith(">"):
                current = handles.get(line[1:].split()[0].split(separator, 1)[0])
            if current is not None:
                current.write(line)
    for h in handles.values():
        h.close()
    return out_sets


def vamb_command(vamb: Path, ds: Dataset, out: Path, threads: int, seed: int) -> list[str]:
    # out must not exist: VAMB refuses an existing --outdir.
    return [str(vamb), "bin", "default", "--outdir", str(out), "--fasta", str(ds.contigs),
            "--abundance_tsv", str(ds.abundance), "-p", str(threads), "--seed", str(seed)]


def semibin_command(semibin: Path, ds: Dataset, out: Path, threads: int, depth_args: list[str]) -> list[str]:
    return [str(semibin), "single_easy_bin", "--environment", "global", "-i", str(ds.contigs), *depth_args,
            "-o", str(out), "-t", str(threads)]


def deepmetabin_command(exe: Path, ds: Dataset, out: Path, threads: int, seed: int, bam: bool,
                        multi_split: str | None = None) -> list[str]:
    src = ["--bam", *map(str, ds.bams)] if bam else ["--depth", str(ds.depth)]
    multi = ["--multi-split", "--sample-separator", multi_split] if multi_split else []
    return [str(exe), "-q", "bin", "--contigs", str(ds.contigs), *src, "--out", str(out),
            "--threads", str(threads), "--seed", str(seed), "--force", *multi]
