"""Timings of the app's state operations on a finished run (default runs/demo, `make demo` makes it).

    .venv/bin/python benchmarks/bench_app.py [RUN] [--repeat 5]

What a curator waits for: opening a run, the UMAP (computed once, then read from umap.npy), the
bins table (bin_quality over all bins), a split preview (bin_quality over the touched bins only),
committing an edit, undo, and exporting. Works on a copy of the run, so the run is left as it was.
Prints a Markdown table (seconds, median of --repeat where repeated).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _time(fn, repeat: int = 1) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def timings_table(title: str, rows: list[tuple[str, float]]) -> str:
    """A Markdown table of (operation, seconds) rows under the header ``title``."""
    return "\n".join([f"| {title} | seconds |", "|---|---|", *(f"| {name} | {sec:.3f} |" for name, sec in rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="runs/demo")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    from deepmetabin.ui.state import CurationState, RunData

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("export", "curation.json", "train.ckpt"))
        (run / "umap.npy").unlink(missing_ok=True)
        rows = []
        data = RunData(run)
        rows.append(("open run (frame, markers, contigs, bins)", _time(lambda: CurationState(data))))
        rows.append(("UMAP, first time (incl. numba compile)", _time(lambda: data.umap)))
        rows.append(("UMAP from umap.npy cache", _time(lambda: RunData(run).umap, args.repeat)))
        state = CurationState(data)
        rows.append(("bins table: quality of all bins", _time(lambda: (setattr(state, "version", state.version + 1), state.quality()),
                                                               args.repeat)))
        big = state.binset.bins[0]
        state.select_rows(state.binset.members(big)[: len(state.binset.members(big)) // 2])
        rows.append(("preview of a split (touched bins only)", _time(lambda: state.preview("split"), args.repeat)))
        rows.append(("box select", _time(lambda: state.select_box(-5, -5, 5, 5), args.repeat)))
        state.select_rows(state.binset.members(big)[:10])
        rows.append(("apply split + undo", _time(lambda: (state.apply("split"), state.undo()), args.repeat)))
        state.apply("split")
        rows.append(("export (FASTA, tsv, CAMI, quality)", _time(lambda: state.export("bench"))))
    print(timings_table(f"operation ({len(data.ids)} contigs, {Path(args.run).name})", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
