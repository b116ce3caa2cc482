"""Rebuild the marker HMM data of this folder from PyPI packages (run by hand, not at install time).

    pip download --no-deps semibin==2.6.0 checku==0.2.1 graphmb==0.2.6 micomplete==1.1.1 fastaai==0.1.20 -d SRC
    # checku 0.2.1 declares Python >=3.12: add `--python-version 3.12 --only-binary=:all:` for it on 3.11
    (unzip every wheel into SRC/<name>/ and untar micomplete into SRC/mic/)
    python deepmetabin/data/make_marker_data.py SRC

sc107 and uni56 are their source files byte for byte; checkm_bacteria holds profiles chosen from four
sources, re-written by pyhmmer in one format (values unchanged). Files are gzipped with mtime 0 and
level 9, so a rebuild is byte-identical. See README.md.
"""
from __future__ import annotations

import ast
import gzip
import io
import shutil
import sys
from pathlib import Path

from pyhmmer.plan7 import HMMFile

HERE = Path(__file__).resolve().parent


def records(path: Path) -> dict[str, str]:
    """HMMER3 text profiles of ``path`` keyed by accession without version (or NAME if no ACC)."""
    out: dict[str, str] = {}
    for block in path.read_text().split("//\n"):
        if not block.strip():
            continue
        tags = dict(line.split(None, 1) for line in block.splitlines() if line[:4] in ("NAME", "ACC "))
        key = tags.get("ACC", tags["NAME"]).strip().split(".")[0]
        out[key] = block.lstrip("\n") + "//\n"
    return out


def write_gz(path: Path, text: str) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode())


def main(src: Path) -> None:
    semibin = src / "semibin/SemiBin/marker.hmm"
    write_gz(HERE / "sc107.hmm.gz", semibin.read_text())
    write_gz(HERE / "uni56.hmm.gz", (src / "checku/checku/data/uni56.hmm").read_text())
    ms = src / "graphmb/graphmb/data/Bacteria.ms"
    shutil.copyfile(ms, HERE / "checkm_bacteria.ms")
    sets = ast.literal_eval(ms.read_text().splitlines()[1].split("\t")[5])
    wanted = {m.split(".")[0]: m for s in sets for m in s}
    # Prefer the exact Pfam release CheckM names (semibin, miComplete), else a newer release (FastAAI).
    sources = [
        records(semibin),
        records(src / "mic/micomplete-1.1.1/micomplete/share/Bact105.hmm"),
        records(src / "mic/micomplete-1.1.1/micomplete/share/Arch131.hmm"),
        records(src / "fastaai/fastaai/00.Libraries/01.SCG_HMMs/Bacteria_SCG.hmm"),
    ]
    chosen: list[str] = []
    for key in sorted(wanted):
        exact = [r[key] for r in sources if key in r and f"ACC   {wanted[key]}\n" in r[key]]
        any_ = [r[key] for r in sources if key in r]
        if exact or any_:
            chosen.append((exact or any_)[0])
    # The sources mix HMMER3/b and HMMER3/f records, and a HMMER file must use one format throughout:
    # pyhmmer re-writes every chosen profile as HMMER3/f (same values, same cut-offs).
    buf = io.BytesIO()
    for text in chosen:
        HMMFile(io.BytesIO(text.encode())).read().write(buf)
    write_gz(HERE / "checkm_bacteria.hmm.gz", buf.getvalue().decode())
    print(f"checkm_bacteria: {len(chosen)} of {len(wanted)} markers have a profile")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
