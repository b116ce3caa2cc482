"""Per-stage wall time and peak memory of `deepmetabin bin` runs of different sizes, and growth rates.

    .venv/bin/python benchmarks/scale_report.py RUN_100k RUN_300k ...

Each RUN is a run folder of `deepmetabin bin` on data from benchmarks/make_scale_data.py; the stage
seconds and peak RSS come from its manifest.json (``seconds``, ``peak_rss_mb``: the process's
high-water mark when the stage ended). Prints a Markdown table per stage with the growth exponent
between consecutive sizes (time ~ N^b: b = 1 is linear).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

STAGES = ("features", "graph", "markers", "train", "bins", "map")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+")
    args = p.parse_args(argv)
    rows = []
    for run in args.runs:
        m = json.loads((run / "manifest.json").read_text())
        st = m["stages"]
        rows.append((m["n_contigs"], {s: st[s] for s in STAGES if s in st}))
    rows.sort(key=lambda r: r[0])
    head = "| stage | " + " | ".join(f"{n:,} contigs: s / peak RSS MB" for n, _ in rows) + " | growth exponent b (time ~ N^b) |"
    print(head)
    print("|---|" + "---|" * (len(rows) + 1))
    for s in (*STAGES, "total"):
        cells, times = [], []
        for n, st in rows:
            if s == "total":
                sec = sum(v["seconds"] for v in st.values())
                rss = max(v.get("peak_rss_mb", 0) for v in st.values())
            elif s in st:
                sec, rss = st[s]["seconds"], st[s].get("peak_rss_mb", float("nan"))
            else:
                cells.append("–")
                times.append(None)
                continue
            cells.append(f"{sec:,.0f} / {rss:,.0f}")
            times.append((n, sec))
        pairs = [(a, b) for a, b in zip(times, times[1:]) if a and b]
        growth = ", ".join(f"{math.log(b[1] / a[1]) / math.log(b[0] / a[0]):.2f}" for a, b in pairs) or "–"
        print(f"| {s} | " + " | ".join(cells) + f" | {growth} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
