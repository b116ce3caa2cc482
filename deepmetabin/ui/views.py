"""Panel/HoloViews views: functions of the state objects in :mod:`deepmetabin.ui.state`.

Every view takes the state it shows and returns a Panel object; it changes the state only through
the state's methods, so what a browser does is what a test does.
"""
from __future__ import annotations

from typing import Any

import colorcet as cc
import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import scipy.sparse as sp
from datashader import transfer_functions as tf
from holoviews.operation.datashader import dynspread, rasterize

from ..bins import UNBINNED
from .state import CurationState, TrainingState

hv.extension("bokeh", logo=False)

HOVER_MAX = 5000  # hover markers only when fewer points than this are in view
OUTLINE_MAX = 1000  # ... and drawn (circles sized by length) when fewer than this
CATEGORICAL = ("bin", "cluster", "component", "conflict", "seed", "label")


def _categorical(values: np.ndarray | pd.Series) -> pd.Categorical:
    """Values as a categorical of strings; integer columns are factorised as integers first (converting
    10^5-10^6 integers to strings before factorising took most of a session's map set-up)."""
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        cat = pd.Categorical(values)
        return cat.rename_categories([str(c) for c in cat.categories])
    return pd.Categorical(values.astype(str))


def _color_key(cats, key: dict[str, str] | None = None) -> dict[str, str]:
    """A colour per category; categories already in ``key`` keep theirs, new ones take the next colours."""
    palette = cc.glasbey_dark
    key = dict(key or {})
    for c in cats:
        key.setdefault(c, palette[len(key) % len(palette)])
    for quiet in ("unbinned", "-1", "no"):
        if quiet in key:
            key[quiet] = "#c8c8c8"
    if "yes" in key:
        key["yes"] = "#d62728"
    return key


def map_frame(state: CurationState) -> pd.DataFrame:
    """The points of the latent map with the current bin and SCG-conflict flag; categorical columns
    (:data:`CATEGORICAL`) as ``pd.Categorical``. Built once per bins version of the session and shared by
    every view and re-render (treat it as read-only): a pan/zoom costs no O(N) table work."""
    memo = state.__dict__.get("_map_frame")
    if memo is not None and memo[0] == state.version:
        return memo[1]
    df = state.data.point_frame.copy(deep=False)  # columns are replaced, never written into
    df["bin"] = np.where(state.binset.assignment == UNBINNED, "unbinned", state.binset.assignment).astype(str)
    df["conflict"] = np.where(state.conflicts(), "yes", "no")
    for c in CATEGORICAL:
        if c in df and not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = _categorical(df[c])
    state.__dict__["_map_frame"] = (state.version, df)
    return df


def colour_options(state: CurationState) -> list[str]:
    df = map_frame(state)
    opts = [c for c in ("bin", "cluster", "component", "conflict", "gc", "log10_length") if c in df]
    return opts + [c for c in df.columns if c.startswith(("log_depth:", "log_unique:"))]


def category_image(df: pd.DataFrame, colour: str, key: dict[str, str], *, x_range: tuple[float, float],
                   y_range: tuple[float, float], width: int, height: int, min_alpha: float = 60) -> hv.RGB:
    """The points of ``df`` (x, y, categorical ``colour``) drawn into a width x height RGBA image: a
    pixel's colour is the mean colour of its points (``key``: category -> colour), its alpha grows with
    its point count (equalised histogram from ``min_alpha``) — what ``datashade`` with ``count_cat``
    draws. Aggregated as one sum per colour channel plus a count instead of one count per category:
    with a category per bin or per graph label (hundreds), the per-category aggregate was a
    H x W x C array (600 MB at 477 labels) and most of a re-render."""
    codes = df[colour].cat.codes.to_numpy()
    palette = np.array([tf.rgb(key[str(c)]) for c in df[colour].cat.categories] or [(0, 0, 0)], dtype=np.float32)
    rgb = palette[np.maximum(codes, 0)]
    frame = pd.DataFrame({"x": df["x"].to_numpy(), "y": df["y"].to_numpy(), "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2]})
    canvas = ds.Canvas(plot_width=int(width), plot_height=int(height), x_range=tuple(x_range), y_range=tuple(y_range))
    agg = canvas.points(frame, "x", "y", agg=ds.summary(n=ds.count(), r=ds.sum("r"), g=ds.sum("g"), b=ds.sum("b")))
    n = agg["n"].data
    with np.errstate(divide="ignore", invalid="ignore"):
        channels = [np.where(n > 0, agg[c].data / n, 0).astype(np.uint8) for c in ("r", "g", "b")]
    alpha = tf._interpolate_alpha(n, n, np.zeros(n.shape, dtype=bool), "eq_hist", 255, None, min_alpha, True)
    return hv.RGB((agg.coords["x"].to_numpy(), agg.coords["y"].to_numpy(), *channels, alpha), vdims=list("RGBA"))


def _nonzero_span(r: tuple[float, float]) -> tuple[float, float]:
    """``r``, widened by 0.5 on each side when it has no width (datashader divides by the span)."""
    lo, hi = float(r[0]), float(r[1])
    return (lo - 0.5, hi + 0.5) if not hi - lo > 1e-12 else (lo, hi)


def _categorical_layer(state: CurationState, colour: str, cats: list[str], frame_of, *, width: int, height: int,
                       min_alpha: float = 60, max_legend: int = 25) -> tuple[hv.DynamicMap, hv.DynamicMap | None]:
    """(image, legend): points of ``frame_of()`` drawn by :func:`category_image` for the current view and
    plot size, redrawn after every edit; the colour key grows with the categories (a split adds a bin;
    existing ones keep their colours); a legend (None above ``max_legend`` categories) to overlay last,
    so that the selection tools and streams stay on the image."""
    key = _color_key(cats)

    def current_key() -> dict[str, str]:
        key.update(_color_key(sorted(map(str, frame_of()[colour].cat.categories)), key))
        return key

    w0, h0 = max(1, width - 80), max(1, height - 60)  # the frame inside axes and title, until Bokeh reports it

    def image(x_range=None, y_range=None, width=None, height=None, scale=1.0, version: int = 0) -> hv.RGB:
        df = frame_of()
        if x_range is None or y_range is None or None in (*x_range, *y_range):
            x_range = (float(df["x"].min()), float(df["x"].max()))
            y_range = (float(df["y"].min()), float(df["y"].max()))
        x_range, y_range = _nonzero_span(x_range), _nonzero_span(y_range)  # e.g. a toy run's points on a line
        w, h = max(1, int(width or w0)), max(1, int(height or h0))
        return category_image(df, colour, current_key(), x_range=x_range, y_range=y_range, width=w, height=h,
                              min_alpha=min_alpha)

    streams = [hv.streams.RangeXY(), hv.streams.PlotSize(), hv.streams.Params(state, ["version"])]
    shaded = dynspread(hv.DynamicMap(image, streams=streams), threshold=0.6, max_px=4)
    if len(cats) > max_legend:
        return shaded, None

    def legend(version: int = 0) -> hv.NdOverlay:
        k = current_key()
        present = sorted(map(str, frame_of()[colour].cat.categories))
        return hv.NdOverlay({c: hv.Points([(np.nan, np.nan)], label=c).opts(color=k[c], size=8) for c in present})

    return shaded, hv.DynamicMap(legend, streams=[hv.streams.Params(state, ["version"])])


def _shade(element: hv.DynamicMap, colour: str, cats: list[str] | None, state: CurationState, *, width: int = 720,
           height: int = 560, max_legend: int = 25) -> tuple[hv.DynamicMap, hv.DynamicMap | None]:
    """(image, legend or None) of the map's points coloured by ``colour``: categorical columns by
    :func:`_categorical_layer`, numeric ones as the mean per pixel of ``element``'s points (viridis)."""
    if colour in CATEGORICAL:
        return _categorical_layer(state, colour, cats or [], lambda: map_frame(state), width=width, height=height,
                                  max_legend=max_legend)
    return dynspread(rasterize(element, aggregator=ds.mean(colour)), threshold=0.6, max_px=4).opts(
        cmap="viridis", colorbar=True, clabel=colour), None


def _selected_layer(state: CurationState) -> hv.DynamicMap:
    """The selected contigs as black crosses, redrawn when the selection changes."""
    def chosen(selection: list[int]) -> hv.Points:
        df = map_frame(state).iloc[selection]
        return hv.Points(df, ["x", "y"], ["contig", "bin"]).opts(color="black", marker="x", size=4, alpha=0.6,
                                                                 tools=[])

    return hv.DynamicMap(chosen, streams=[hv.streams.Params(state, ["selection"])])


def _hover_layer(state: CurationState, source) -> hv.DynamicMap:
    """Zoomed in (fewer than :data:`HOVER_MAX` contigs in view): each contig a hover target, a circle sized by
    its length (1 kb: 3 px, 10 kb: 6, 100 kb+: 9-12), its outline drawn below :data:`OUTLINE_MAX` contigs in
    view; zoomed out: nothing."""
    def hover(x_range=None, y_range=None, version: int = 0) -> hv.Points:
        df = map_frame(state)
        vd = ["contig", "bin", "length", "gc"] + (["component"] if "component" in df else [])
        if x_range is not None and y_range is not None and None not in (*x_range, *y_range):  # rows in view
            rows = state.rows_in_box(x_range[0], y_range[0], x_range[1], y_range[1])
        else:
            rows = np.arange(len(df))
        df = df.iloc[rows[:0] if len(rows) > HOVER_MAX else rows][["x", "y", *vd]]
        df = df.assign(size=np.clip(3 * (np.log10(np.maximum(df["length"].to_numpy(), 1)) - 3) + 3, 3, 12))
        outline = 0.5 if len(df) <= OUTLINE_MAX else 0.0  # circles drawn once few enough not to hide the colours
        return hv.Points(df, ["x", "y"], [*vd, "size"]).opts(
            size="size", fill_color=None, fill_alpha=0, selection_fill_alpha=0, nonselection_fill_alpha=0,
            line_color="#333333", line_width=0.6, line_alpha=outline, selection_line_alpha=outline,
            nonselection_line_alpha=outline, tools=["hover"], hover_tooltips=[(c, f"@{{{c}}}") for c in vd])

    return hv.DynamicMap(hover, streams=[hv.streams.RangeXY(source=source), hv.streams.Params(state, ["version"])])


# ----------------------------------------------------------------------------------- latent map
def latent_map_plot(state: CurationState, colour: str = "bin", *, width: int = 720, height: int = 560) -> hv.Overlay:
    """The map itself: datashaded UMAP points coloured by ``colour``, the selection drawn on top, hover
    markers when fewer than :data:`HOVER_MAX` points are in view; box/lasso select call the state."""
    def points(version: int = 0) -> hv.Points:
        df = map_frame(state)
        return hv.Points(df, kdims=["x", "y"], vdims=[c for c in df.columns if c not in ("x", "y")])

    cats = sorted(map(str, map_frame(state)[colour].unique())) if colour in CATEGORICAL else None
    dmap = hv.DynamicMap(points, streams=[hv.streams.Params(state, ["version"])])
    shaded, legend = _shade(dmap, colour, cats, state, width=width, height=height)
    shaded = shaded.opts(
        width=width, height=height, tools=["box_select", "lasso_select"], active_tools=["box_select", "wheel_zoom"],
        xlabel="UMAP 1", ylabel="UMAP 2", padding=0.05, title=f"latent map ({len(state.data.ids)} contigs) — colour: {colour}")
    bounds = hv.streams.BoundsXY(source=shaded)
    lasso = hv.streams.Lasso(source=shaded)
    bounds.add_subscriber(lambda bounds: bounds is not None and state.select_box(*bounds))
    lasso.add_subscriber(lambda geometry: geometry is not None and state.select_polygon(geometry[:, 0], geometry[:, 1]))

    sel, hov = _selected_layer(state), _hover_layer(state, shaded)
    layers = shaded * hov * sel if legend is None else shaded * hov * sel * legend
    return layers.opts(toolbar="above", legend_position="right")


def latent_map(state: CurationState, *, width: int = 720, height: int = 560) -> pn.viewable.Viewable:
    """The latent map with its colour chooser."""
    colour = pn.widgets.Select(name="colour by", options=colour_options(state), value="bin", width=200)
    plot = pn.bind(latent_map_plot, state, colour, width=width, height=height)
    return pn.Column(colour, pn.pane.HoloViews(plot, linked_axes=False), name="Latent map")


# ----------------------------------------------------------------------------------- bins table
BIN_COLUMNS = ["bin", "completeness", "contamination", "tier", "n_contigs", "bp", "N50", "GC", "mean_depth", "accepted"]


def bins_table(state: CurationState, *, height: int = 320) -> pn.widgets.Tabulator:
    """One row per bin, sortable; picking rows selects their contigs (and the bins merge/accept use);
    contigs selected elsewhere (map, graph, ids) tick the rows of the bins that hold them."""
    table = pn.widgets.Tabulator(state.quality()[BIN_COLUMNS], selectable="checkbox", show_index=False, disabled=True,
                                 height=height, sizing_mode="stretch_width", name="Bins",
                                 css_classes=["dmb-bins-table"])
    busy = {"flag": False}

    def on_select(event) -> None:
        if busy["flag"]:
            return
        names = table.value.iloc[event.new]["bin"].tolist() if len(event.new) else []
        state.select_bins(names)

    def on_version(event) -> None:
        busy["flag"] = True
        try:
            table.value = state.quality()[BIN_COLUMNS]
            keep = [i for i, b in enumerate(table.value["bin"]) if b in state.selected_bins]
            table.selection = keep
        finally:
            busy["flag"] = False

    def on_contigs(event) -> None:  # the reverse: contigs picked on the map tick the bins that hold them
        if busy["flag"]:
            return
        held = set(state.binset.assignment[np.asarray(event.new, dtype=np.int64)]) - {UNBINNED}
        busy["flag"] = True
        try:
            table.selection = [i for i, b in enumerate(table.value["bin"]) if b in held]
        finally:
            busy["flag"] = False

    table.param.watch(on_select, "selection")
    state.param.watch(on_version, "version")
    state.param.watch(on_contigs, "selection")
    return table


# ----------------------------------------------------------------------------------- curation
def curation_panel(state: CurationState) -> pn.viewable.Viewable:
    """Action, preview of its effect on quality, apply, undo/redo, save, export, select by id."""
    action = pn.widgets.RadioButtonGroup.from_param(state.param.action, name="action", button_type="light")
    new_name = pn.widgets.TextInput.from_param(state.param.new_name, name="new bin name (split; empty = automatic)",
                                          css_classes=["dmb-newname"])
    target = pn.widgets.TextInput.from_param(state.param.target, name="target bin (move)", css_classes=["dmb-target"])
    apply = pn.widgets.Button(name="Apply", button_type="primary", css_classes=["dmb-apply"])
    undo = pn.widgets.Button(name="Undo", css_classes=["dmb-undo"])
    redo = pn.widgets.Button(name="Redo", css_classes=["dmb-redo"])
    save = pn.widgets.Button(name="Save curation.json", css_classes=["dmb-save"])
    export_name = pn.widgets.TextInput.from_param(state.param.export_name, name="export name", css_classes=["dmb-exportname"])
    export = pn.widgets.Button(name="Export", button_type="success", css_classes=["dmb-export"])
    ids = pn.widgets.TextAreaInput(name="select contigs by id (comma/space separated)", height=70,
                                   css_classes=["dmb-ids"])
    select_ids = pn.widgets.Button(name="Select ids", css_classes=["dmb-select-ids"])
    clear = pn.widgets.Button(name="Clear selection")

    def guard(fn):
        def run(_event=None) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 (shown to the curator)
                state.message = f"error: {exc}"
        return run

    apply.on_click(guard(lambda: state.apply()))
    undo.on_click(guard(state.undo))
    redo.on_click(guard(state.redo))
    save.on_click(guard(state.save))
    export.on_click(guard(lambda: state.export()))
    select_ids.on_click(guard(lambda: state.select_ids(ids.value)))
    clear.on_click(guard(lambda: state.select_rows([])))

    def preview(selection, selected_bins, action, target, new_name, version):
        try:
            frame = state.preview()
        except Exception as exc:  # noqa: BLE001
            return pn.pane.Markdown(f"*preview:* {exc}", css_classes=["dmb-preview"])
        return pn.Column(pn.pane.Markdown(f"**preview of {action}** (quality now / after)"),
                         pn.pane.DataFrame(frame, index=False, sizing_mode="stretch_width"), css_classes=["dmb-preview"])

    def selection_info(selection, selected_bins):
        held = pd.Series(state.binset.assignment[selection]).replace(UNBINNED, "unbinned").value_counts()
        where = ", ".join(f"{b}: {n}" for b, n in held.items()) if len(held) else "—"
        return pn.pane.Markdown(f"**{len(selection)} contigs selected** ({where}); bins picked: {', '.join(selected_bins) or '—'}",
                                css_classes=["dmb-selection"])

    def summary(version):
        s = state.summary()
        return pn.pane.Markdown(f"**{s['bins']} bins**, {s['high']} high / {s['medium']} medium quality, "
                                f"{100 * s['binned_bp']:.1f}% of bp binned, {s['edits']} edits, {s['accepted']} accepted",
                                css_classes=["dmb-summary"])

    p = state.param
    return pn.Column(
        pn.bind(summary, p.version),
        pn.bind(selection_info, p.selection, p.selected_bins),
        action, pn.Row(new_name, target),
        pn.bind(preview, p.selection, p.selected_bins, p.action, p.target, p.new_name, p.version),
        pn.Row(apply, undo, redo),
        pn.pane.Markdown(pn.bind(lambda m: f"`{m}`" if m else "", p.message), css_classes=["dmb-message"]),
        pn.Row(save, export_name, export),
        ids, pn.Row(select_ids, clear),
        name="Curate", width=460,
    )


# ----------------------------------------------------------------------------------- overview
def overview(state: CurationState) -> pn.viewable.Viewable:
    """Inputs, stage status, summary of the automatic and curated bins, curation history."""
    m = state.data.manifest
    inputs = m.get("inputs", {})
    lines = ["### Run", f"`{state.data.path}` — {m.get('n_contigs')} contigs, ids hash `{m.get('ids_hash')}`", "", "### Inputs"]
    for k, v in inputs.items():
        items = v if isinstance(v, list) else [v]
        lines += [f"- **{k}**: " + ", ".join(f"`{i.get('path', i)}`" for i in items)]
    stages = pd.DataFrame([{"stage": s, "status": st.get("status"), "seconds": st.get("seconds"), "finished": st.get("finished")}
                           for s, st in m.get("stages", {}).items()])
    auto = state.data.run.summary()

    def curated(version):
        s = state.summary()
        return pn.pane.Markdown(
            f"### Bins\nautomatic: **{auto['bins']}** bins, {auto['high']} high / {auto['medium']} medium, "
            f"{100 * (auto['binned_bp'] or 0):.1f}% bp binned  \n"
            f"curated: **{s['bins']}** bins, {s['high']} high / {s['medium']} medium, {100 * s['binned_bp']:.1f}% bp binned, "
            f"{s['edits']} edits")

    return pn.Column(pn.pane.Markdown("\n".join(lines)), pn.pane.Markdown("### Stages"),
                     pn.pane.DataFrame(stages, index=False), pn.bind(curated, state.param.version),
                     pn.pane.Markdown("### Curation history"),
                     pn.bind(lambda version: pn.pane.DataFrame(state.history(), index=False), state.param.version),
                     name="Overview")


# ----------------------------------------------------------------------------------- graph
EDGE_DRAW_MAX = 150_000  # edges rasterised per re-render at most: beyond, a fixed random subset of those in view


def _segments(coords: np.ndarray, g: sp.spmatrix, seed: int = 0) -> pd.DataFrame:
    """One row per edge of the upper triangle of ``g``: (x0, y0, x1, y1) on ``coords`` (n x 2), rows in a
    fixed random order, so the first m rows of any subset are a uniform sample of it."""
    u = sp.triu(g, k=1).tocoo()
    order = np.random.default_rng(seed).permutation(u.nnz)
    r, c = u.row[order], u.col[order]
    return pd.DataFrame({"x0": coords[r, 0], "y0": coords[r, 1], "x1": coords[c, 0], "y1": coords[c, 1]})


def edges_in_view(seg: pd.DataFrame, x_range: tuple[float, float] | None, y_range: tuple[float, float] | None,
                  cap: int = EDGE_DRAW_MAX) -> np.ndarray:
    """Rows of ``seg`` (from :func:`_segments`) whose bounding box meets the view, at most ``cap`` of them.

    Rasterising costs time per edge, so a re-render draws only the edges it can see; when more than ``cap``
    are in view (zoomed out on a large run) it draws the first ``cap`` — a uniform random sample, as the rows
    are shuffled — which the equalised-histogram colouring shows as the same density picture. Zoomed in,
    every edge in view is drawn. Ranges None: the whole extent."""
    if x_range is None or y_range is None or None in (*x_range, *y_range):
        rows = np.arange(len(seg))
    else:
        x0, y0, x1, y1 = (seg[c].to_numpy() for c in ("x0", "y0", "x1", "y1"))
        inside = ((np.maximum(x0, x1) >= x_range[0]) & (np.minimum(x0, x1) <= x_range[1])
                  & (np.maximum(y0, y1) >= y_range[0]) & (np.minimum(y0, y1) <= y_range[1]))
        rows = np.flatnonzero(inside)
    return rows[:cap]


def graph_edges(state: CurationState) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(kept, pruned) edge segments on the UMAP layout; pruned = k-NN edges the refinement cut (None: no k-NN kept)."""
    cache = state.data.__dict__.setdefault("_graph_edges", {})
    if not cache:
        refined, coords = state.data.graph, state.data.umap
        cache["kept"] = _segments(coords, refined.graph)
        cache["pruned"] = None
        if refined.knn is not None:
            k = sp.triu(refined.knn, k=1).astype(bool).astype(np.int8)
            r = sp.triu(refined.graph, k=1).astype(bool).astype(np.int8)
            diff = (k - r).tocoo()
            cut = diff.data > 0
            cache["pruned"] = _segments(coords, sp.coo_matrix((np.ones(int(cut.sum())), (diff.row[cut], diff.col[cut])),
                                                              shape=k.shape))
    return cache["kept"], cache["pruned"]


def _edge_layer(seg: pd.DataFrame, cmap: list[str]):
    """Rasterised edges that re-draw only what is in view (:func:`edges_in_view`) on each pan/zoom."""
    def visible(x_range=None, y_range=None) -> hv.Segments:
        return hv.Segments(seg.iloc[edges_in_view(seg, x_range, y_range)], ["x0", "y0", "x1", "y1"])

    dmap = hv.DynamicMap(visible, streams=[hv.streams.RangeXY()])
    return rasterize(dmap, aggregator=ds.count()).opts(cmap=cmap, cnorm="eq_hist", alpha=0.8)


def graph_plot(state: CurationState, colour: str = "label", show_pruned: bool = False, *, width: int = 720,
               height: int = 560) -> hv.Overlay:
    """Rasterized refined edges (and pruned ones in red), nodes datashaded by seed / label / bin, the
    selection and, zoomed in, hover circles sized by length (as on the latent map). Zoomed out on a run of
    more than :data:`EDGE_DRAW_MAX` edges, a uniform sample of the edges in view is drawn."""
    kept, pruned = graph_edges(state)
    layers = _edge_layer(kept, ["#bbbbbb", "#333333"])
    if show_pruned and pruned is not None and len(pruned):
        layers = layers * _edge_layer(pruned, ["#f4a582", "#b2182b"])

    def nodes(version: int = 0) -> hv.Points:
        return hv.Points(map_frame(state)[["x", "y", colour]], ["x", "y"], [colour])

    cats = sorted(map(str, map_frame(state)[colour].unique()))
    pts, legend = _shade(hv.DynamicMap(nodes, streams=[hv.streams.Params(state, ["version"])]), colour, cats, state,
                         width=width, height=height, max_legend=12)
    c = state.data.graph.counts
    sampled = f" (zoomed out: {EDGE_DRAW_MAX:,} of them drawn)" if len(kept) > EDGE_DRAW_MAX else ""
    layers = layers * pts * _hover_layer(state, pts) * _selected_layer(state)
    layers = layers if legend is None else layers * legend
    return layers.opts(width=width, height=height, xlabel="UMAP 1", ylabel="UMAP 2", padding=0.05, legend_position="right",
                       title=f"refined graph: {c.get('edges', '?')} edges kept of {c.get('edges_knn', '?')}{sampled}")


def graph_view(state: CurationState, *, width: int = 720, height: int = 560) -> pn.viewable.Viewable:
    """The refined k-NN graph on the UMAP layout with its node colouring and pruned-edge toggle."""
    _, pruned = graph_edges(state)
    colour = pn.widgets.Select(name="nodes by", options=["label", "seed", "bin"], value="label", width=160)
    show_pruned = pn.widgets.Checkbox(name=f"show pruned edges ({0 if pruned is None else len(pruned)})", value=False)
    plot = pn.bind(graph_plot, state, colour, show_pruned, width=width, height=height)
    return pn.Column(pn.Row(colour, show_pruned), pn.pane.HoloViews(plot), name="Graph")


# ----------------------------------------------------------------------------------- training
def loss_plot(frame: pd.DataFrame) -> hv.Element:
    """Losses per term over epochs."""
    terms = [c for c in ("loss", "rec", "kl_z", "kl_y", "neighbour", "val_rec") if c in frame]
    if frame.empty:
        return hv.Curve([]).opts(width=560, height=300, title="losses (no epochs yet)")
    curves = [hv.Curve(frame, "epoch", t, label=t).opts(tools=["hover"]) for t in terms]
    return hv.Overlay(curves).opts(width=560, height=300, title="losses per term", legend_position="right")


def snapshot_plot(snap) -> hv.Points:
    """The latent snapshot of the last epoch (PCA to 2-d), coloured by component."""
    if snap is None:
        return hv.Points([]).opts(width=420, height=300, title="latent snapshot (after the first epoch)")
    latent, comp = snap
    z = latent - latent.mean(0)
    xy = z @ np.linalg.svd(z, full_matrices=False)[2][:2].T if z.shape[1] > 2 else z
    df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "component": np.asarray(comp).astype(str)})
    return hv.Points(df, ["x", "y"], ["component"]).opts(color="component", cmap="Category20", size=3, width=420,
                                                         height=300, title="latent snapshot (PCA) by component",
                                                         show_legend=False)


def training_view(state: TrainingState, *, period_ms: int = 500) -> pn.viewable.Viewable:
    """Start / resume / stop training; losses per term and the latent snapshot update live."""
    epochs = pn.widgets.IntInput.from_param(state.param.epochs, name="epochs (0 = run's setting)", width=180,
                                         css_classes=["dmb-epochs"])
    start = pn.widgets.Button(name="Start (from scratch)", button_type="primary")
    resume = pn.widgets.Button(name="Resume from checkpoint")
    stop = pn.widgets.Button(name="Stop", button_type="danger")

    def guard(fn):
        def run(_event=None):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                state.status = f"error: {exc}"
        return run

    start.on_click(guard(lambda: state.start(resume=False)))
    resume.on_click(guard(lambda: state.start(resume=True)))
    stop.on_click(guard(state.stop))
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.add_periodic_callback(state.drain, period=period_ms)

    def status(status, epoch, total, device, eta, message):
        note = f"  \n{message}" if status == "done" and message else ""
        return pn.pane.Markdown(f"**{status}** — epoch {epoch}/{total} on `{device or '?'}`, ETA {eta or '?'}{note}")

    p = state.param
    return pn.Column(pn.Row(epochs, start, resume, stop),
                     pn.bind(status, p.status, p.epoch, p.total, p.device, p.eta, p.message),
                     pn.Row(pn.pane.HoloViews(pn.bind(loss_plot, p.losses)), pn.pane.HoloViews(pn.bind(snapshot_plot, p.snapshot))),
                     name="Training")


def app(state: CurationState, training: TrainingState | None = None) -> pn.viewable.Viewable:
    """The whole app for one session: map + curation side by side, then tabs with the other views."""
    tabs: list[Any] = [("Curate", pn.Row(latent_map(state), pn.Column(curation_panel(state), bins_table(state, height=280)))),
                       ("Overview", overview(state))]
    if state.data.run.done("graph"):
        tabs.append(("Graph", graph_view(state)))
    if training is not None:
        tabs.append(("Training", training_view(training)))
    return pn.Tabs(*tabs, dynamic=True, sizing_mode="stretch_width")
