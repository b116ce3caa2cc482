"""How the app holds up on a large run: load time, and the server-side re-render of a pan/zoom.

    .venv/bin/python benchmarks/bench_app_scale.py RUN [--repeat 5]

RUN is a finished run folder (e.g. of benchmarks/make_scale_data.py's data at 200k contigs). Measured
on a copy of the run's small files (the big arrays are linked, not copied), so RUN is left as it is:

* UMAP of the latent means: the seconds of the run's ``map`` stage (``deepmetabin bin`` makes it), or for a
  run without one, the app's first computation (cached in umap.npy afterwards);
* "load": what a new browser session costs the server with the UMAP cached: RunData + CurationState
  + TrainingState + every view built into Bokeh models (``views.app(...).get_root()``), which
  runs the first datashader aggregation of the map; once for the first session of the process
  (numba compiles datashader's kernels then) and once more for a further session;
* "re-render": a pan/zoom sends the new x/y range to the server; this triggers the RangeXY streams
  of the plot as Bokeh's range callback does (every stream updated, then one trigger; HoloViews
  re-aggregates with datashader and updates the Bokeh data source). Browser-side decoding of the image is not included (a ~700x560
  RGBA image, the same size whatever the number of contigs).

Prints a Markdown table (median of --repeat for the re-renders).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import timings_table  # noqa: E402


def _copy_run(src: Path, dst: Path) -> None:
    """Small files copied, big arrays hard- or sym-linked (read-only use), no exports/curation."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name in ("export", "curation.json", "train.ckpt"):
            continue
        if p.is_dir() or p.stat().st_size > 50_000_000:  # bins/*.fna and big arrays: only read
            os.symlink(p.resolve(), dst / p.name)
        else:
            (dst / p.name).write_bytes(p.read_bytes())


def _range_streams(pane) -> list:
    import holoviews as hv

    out = []
    for plot, _ in pane._plots.values():
        out += [s for s in plot.streams if isinstance(s, hv.streams.RangeXY)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    import holoviews as hv
    import panel as pn

    from deepmetabin.ui import views
    from deepmetabin.ui.state import CurationState, RunData, TrainingState

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        _copy_run(args.run, run)
        map_stage = RunData(run).manifest.get("stages", {}).get("map")
        if map_stage and map_stage.get("status") == "done":  # made by `deepmetabin bin`: the app only reads it
            rows.append((f"UMAP of the latent means: the run's map stage (fitted on {map_stage.get('fitted_on', '?'):,} "
                         "contigs, the rest placed)", map_stage["seconds"]))
        else:
            t = time.perf_counter()
            _ = RunData(run).umap
            rows.append(("UMAP of the latent means, made by the app the first time (then cached in umap.npy)",
                         time.perf_counter() - t))

        def load():
            d = RunData(run)
            state = CurationState(d)
            app = views.app(state, TrainingState(d))
            root = app.get_root()
            return d, state, app, root

        t = time.perf_counter()
        d, state, app, root = load()
        rows.append(("load: first session of a new server process (UMAP cached; includes datashader's JIT compile)",
                     time.perf_counter() - t))
        t = time.perf_counter()
        d, state, app, root = load()
        rows.append(("load: a further session (run data read again, every view built)", time.perf_counter() - t))
        n, edges = len(d.ids), d.graph.counts.get("edges", 0)
        t = time.perf_counter()
        graph = views.graph_view(state)  # a tab the app renders when it is first opened
        graph.get_root()
        rows.append(("graph tab, first opened (edges laid out, rasterised; numba compiles the line kernels)",
                     time.perf_counter() - t))
        t = time.perf_counter()
        views.graph_view(state).get_root()  # another session opening it
        rows.append(("graph tab, opened again (another session)", time.perf_counter() - t))

        panes = [("latent map", p) for p in app.select(pn.pane.HoloViews)] + [("graph", p) for p in graph.select(pn.pane.HoloViews)]
        xy = d.umap
        lo, hi = xy.min(0), xy.max(0)
        rng = np.random.default_rng(0)
        for label, pane in panes:
            streams = _range_streams(pane)
            if not streams:
                continue
            times = []
            for r in range(args.repeat):
                frac = 0.15 + 0.7 * rng.random()  # zoom to 15-85 % of the extent at a random place
                width = (hi - lo) * frac
                start = lo + (hi - lo - width) * rng.random(2)
                t = time.perf_counter()
                for s in streams:  # as Bokeh's range callback does: update every stream, then one trigger
                    s.update(x_range=(float(start[0]), float(start[0] + width[0])),
                             y_range=(float(start[1]), float(start[1] + width[1])))
                hv.streams.Stream.trigger(streams)
                times.append(time.perf_counter() - t)
            rows.append((f"re-render after pan/zoom: {label} ({len(streams)} range streams)", statistics.median(times)))
    print(timings_table(f"operation ({n:,} contigs, {edges:,} refined edges; {args.run.name})", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
