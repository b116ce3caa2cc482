"""deepmetabin.ui state objects without a browser, on a tiny real run (two genomes, tests/data)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmetabin.bins import BinSet, CurationError
from deepmetabin.cli import main
from deepmetabin.evaluate import read_binning

from simulated import FASTA, write_simulated_table

FAST = ["--epochs", "6", "--threads", "2", "--latent", "8", "--components", "8"]


def build_tiny_run(base: Path) -> Path:
    """A finished run folder (with its UMAP cached) under ``base``, built once per test session."""
    from deepmetabin.ui.state import RunData

    run = base / "ui_tiny" / "run"
    if (run / "umap.npy").exists():
        return run
    (base / "ui_tiny").mkdir(parents=True, exist_ok=True)
    table = base / "ui_tiny" / "depth.tsv"
    write_simulated_table(table)
    assert main(["-q", "bin", "--contigs", str(FASTA), "--depth", str(table), "--out", str(run), *FAST]) == 0
    RunData(run).umap  # noqa: B018 (computes and caches umap.npy)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return build_tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, for tests that write into it."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture
def state(run_copy):
    from deepmetabin.ui.state import CurationState, RunData

    return CurationState(RunData(run_copy))


def _big_bin(state) -> str:
    return state.binset.bins[0]


def test_umap_is_cached_and_checked(run_copy):
    from deepmetabin.embedding import umap_coords
    from deepmetabin.ui.state import RunData

    d = RunData(run_copy)
    xy = d.umap
    assert xy.shape == (len(d.ids), 2) and xy.dtype == np.float32
    mtime = (run_copy / "umap.npy").stat().st_mtime_ns
    assert np.array_equal(umap_coords(run_copy, d.latent, d.ids_hash), xy)
    assert (run_copy / "umap.npy").stat().st_mtime_ns == mtime  # reused, not rewritten
    # other latent means (e.g. after retraining) or a damaged cache: recomputed
    meta = json.loads((run_copy / "umap.json").read_text())
    np.save(run_copy / "umap.npy", np.zeros((3, 2), np.float32))
    again = umap_coords(run_copy, d.latent, d.ids_hash)
    assert again.shape == xy.shape and json.loads((run_copy / "umap.json").read_text()) == meta
    assert not [p for p in run_copy.iterdir() if p.name.startswith(".umap")]  # no temp files left


def test_selection_by_box_polygon_ids_and_bins(state):
    xy = state.data.umap
    state.select_box(xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max())
    assert len(state.selection) == len(xy)
    cx, cy = np.median(xy, 0)
    state.select_box(xy[:, 0].min() - 1, xy[:, 1].min() - 1, cx, cy)
    inside = (xy[:, 0] <= cx) & (xy[:, 1] <= cy)
    assert state.selection == np.flatnonzero(inside).tolist()
    # the same box as a lasso polygon
    x0, y0 = xy.min(0) - 1
    state.select_polygon([x0, cx, cx, x0], [y0, y0, cy, cy])
    assert state.selection == np.flatnonzero(inside).tolist()
    state.select_ids(f"{state.data.ids[3]}, {state.data.ids[1]}\n")
    assert state.selection == [1, 3]
    with pytest.raises(CurationError):
        state.select_ids("no_such_contig")
    b = _big_bin(state)
    state.select_bins([b])
    assert state.selected_bins == [b] and state.selection == state.binset.members(b).tolist()


def test_split_preview_then_commit_undo_redo(state):
    b = _big_bin(state)
    members = state.binset.members(b)
    state.select_rows(members[: len(members) // 2])
    before = state.binset.assignment.copy()
    preview = state.preview("split")
    assert np.array_equal(state.binset.assignment, before)  # a preview changes nothing
    assert set(preview["when"]) == {"now", "after"}
    now = preview[preview.when == "now"]
    assert now["bin"].tolist() == [b]
    after = preview[preview.when == "after"].set_index("bin")
    assert len(after) == 2 and after["n_contigs"].sum() == len(members)
    # the preview is exactly the quality the committed edit gives
    v = state.version
    edit = state.apply("split")
    assert edit["op"] == "split" and state.version == v + 1
    q = state.quality().set_index("bin")
    for name, row in after.iterrows():
        assert q.loc[name, "completeness"] == row["completeness"] and q.loc[name, "contamination"] == row["contamination"]
    assert len(state.binset.bins) == len(set(before) - {""}) + 1
    assert state.undo() and np.array_equal(state.binset.assignment, before)
    assert state.redo() and state.binset.assignment[members[0]] == edit["new"]
    assert not state.redo()
    assert state.history()["op"].tolist() == ["split"]


def test_split_across_bins_and_unbinned_is_a_move_to_a_new_bin(state):
    bins = state.binset.bins
    rows = [int(state.binset.members(bins[0])[0])]
    if len(bins) > 1:
        rows.append(int(state.binset.members(bins[1])[0]))
    state.binset.unbin([rows[0]])  # one of them unbinned
    state.select_rows(rows)
    state.new_name = "picked"
    edit = state.apply("split")
    assert edit == {"op": "move", "contigs": sorted(state.data.ids[rows].tolist(), key=lambda c: list(state.data.ids).index(c)),
                    "to": "picked"}
    state.select_rows(rows)
    with pytest.raises(CurationError, match="already exists"):
        state.preview("split")


def test_move_unbin_merge_accept(state):
    bins = state.binset.bins
    b = bins[0]
    rows = state.binset.members(b)[:3]
    state.select_rows(rows)
    state.target = "elsewhere"
    state.apply("move")
    assert set(state.binset.assignment[rows]) == {"elsewhere"}
    state.apply("unbin")
    assert set(state.binset.assignment[rows]) == {""}
    assert "elsewhere" not in state.quality()["bin"].tolist()
    state.select_rows([])
    with pytest.raises(CurationError, match="select contigs"):
        state.preview("unbin")
    # merge two bins (make a second one when the tiny run has one bin)
    if len(state.binset.bins) < 2:
        state.select_rows(state.binset.members(b)[:5])
        state.apply("split")
    two = state.binset.bins[:2]
    state.select_bins(two)
    p = state.preview("merge")
    assert p[p.when == "after"]["bin"].tolist() == [two[0]]
    n = sum(len(state.binset.members(x)) for x in two)
    state.apply("merge")
    assert len(state.binset.members(two[0])) == n and state.selected_bins == [two[0]]
    state.apply("accept")
    assert state.binset.accepted == {two[0]}
    assert bool(state.quality().set_index("bin").loc[two[0], "accepted"])
    state.selected_bins = [two[0]]
    with pytest.raises(CurationError):
        state.apply("merge")  # one bin is not a merge


def test_conflicts_are_marker_sharing_contigs_of_one_bin(state):
    pairs = state.data.cannot_links
    flags = state.conflicts()
    a = state.binset.assignment
    expected = np.zeros(len(a), bool)
    for i, j in pairs:
        if a[i] == a[j] and a[i] != "":
            expected[[i, j]] = True
    assert np.array_equal(flags, expected)
    state.binset.unbin(np.flatnonzero(a != ""))
    assert not state.conflicts().any()


def test_save_is_replayable_and_sessions_are_separate(run_copy):
    from deepmetabin.ui.state import CurationState, RunData

    data = RunData(run_copy)
    one, two = CurationState(data), CurationState(data)
    b = one.binset.bins[0]
    one.select_rows(one.binset.members(b)[:4])
    one.apply("split")
    assert len(two.binset.edits) == 0 and len(two.binset.bins) == len(one.binset.bins) - 1  # not shared
    path = one.save()
    assert path == run_copy.resolve() / "curation.json"
    replayed = BinSet.replay(data.base_bins(), BinSet.load_edits(path))
    assert np.array_equal(replayed.assignment, one.binset.assignment)
    assert len(two.binset.edits) == 0  # an open session keeps its own state
    three = CurationState(RunData(run_copy))  # a new session resumes the saved log
    assert np.array_equal(three.binset.assignment, one.binset.assignment)
    assert CurationState(data, resume_saved=False).binset.edits == []


def test_export_writes_every_format_inside_the_run(state, run_copy):
    b = _big_bin(state)
    state.select_rows(state.binset.members(b)[:4])
    state.apply("split")
    folder = state.export("my curated/bins v1")
    assert folder == run_copy.resolve() / "export" / "my_curated_bins_v1"
    bins = read_binning(folder / "bins.tsv")
    assert sorted(bins["bin"].unique()) == sorted(state.binset.bins)
    assert sorted(p.stem for p in (folder / "bins").glob("*.fna")) == sorted(state.binset.bins)
    q = pd.read_csv(folder / "quality.tsv", sep="\t")
    assert sorted(q["bin"]) == sorted(state.binset.bins) and {"completeness", "contamination", "tier"} <= set(q.columns)
    assert (folder / "bins.cami").read_text().startswith("@Version:0.9.1")
    assert BinSet.load_edits(folder / "curation.json") == state.binset.edits
    n_fasta = sum(p.read_text().count(">") for p in (folder / "bins").glob("*.fna"))
    assert n_fasta == len(bins)


def test_a_failed_export_leaves_the_previous_one_whole(state, run_copy, monkeypatch):
    first = state.export("kept")
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    n_binned = read_binning(first / "bins.tsv").shape[0]
    state.select_rows(state.binset.members(_big_bin(state))[:3])
    state.apply("unbin")

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(state.binset, "write_cami", broken)
    with pytest.raises(OSError, match="disk full"):
        state.export("kept")
    assert {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert [p.name for p in first.parent.iterdir()] == ["kept"]  # no partial folder left beside it
    monkeypatch.undo()
    again = state.export("kept")  # a good export replaces the old one
    assert again == first and read_binning(again / "bins.tsv").shape[0] == n_binned - 3
    assert BinSet.load_edits(again / "curation.json") == state.binset.edits


@pytest.mark.parametrize("name", ["../escape", "../../etc", "/abs/path", "a/../../b", "..", "....", "x\\..\\y", "~/home"])
def test_export_names_never_leave_the_run(state, run_copy, name):
    from deepmetabin.ui.state import ExportError

    root = run_copy.resolve() / "export"
    try:
        folder = state.export_dir(name)
    except ExportError:
        return
    assert folder.parent == root and ".." not in folder.name and "/" not in folder.name
    out = state.export(name)
    assert out.parent == root
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"]  # nothing written beside the run


def test_empty_export_name_is_refused(state):
    from deepmetabin.ui.state import ExportError

    for bad in ("", "  ", "..", "///"):
        with pytest.raises(ExportError):
            state.export(bad)


def test_every_view_and_colouring_renders_to_bokeh(state):
    """Each plot a widget can ask for becomes a Bokeh model (catches bad plot options without a browser)."""
    import holoviews as hv
    import panel as pn

    from deepmetabin.ui import views
    from deepmetabin.ui.state import TrainingState

    for colour in views.colour_options(state):
        assert hv.render(views.latent_map_plot(state, colour), backend="bokeh") is not None, colour
    for colour in ("label", "seed", "bin"):
        for pruned in (False, True):
            assert hv.render(views.graph_plot(state, colour, pruned), backend="bokeh") is not None
    t = TrainingState(state.data)
    hv.render(views.loss_plot(t.losses), backend="bokeh")
    hv.render(views.loss_plot(t.losses.iloc[0:0]), backend="bokeh")
    hv.render(views.snapshot_plot(None), backend="bokeh")
    hv.render(views.snapshot_plot((np.random.default_rng(0).normal(size=(50, 8)), np.arange(50) % 3)), backend="bokeh")
    root = views.app(state, t).get_root()  # the whole layout builds
    assert root is not None
    state.select_rows([0, 1])
    state.apply("unbin")  # views follow a change of the bins
    assert hv.render(views.latent_map_plot(state, "conflict"), backend="bokeh") is not None
    pn.state.kill_all_servers()


def test_map_coloured_by_bin_redraws_after_a_split_adds_a_bin(state):
    """The colour key grows with the bins: a drawn map must redraw after a split creates one (datashader
    refused a category missing from the key, and the map froze)."""
    import holoviews as hv

    from deepmetabin.ui import views

    for plot_of in (lambda: views.latent_map_plot(state, "bin"), lambda: views.graph_plot(state, "bin")):
        plot = hv.renderer("bokeh").get_plot(plot_of())
        before = plot.current_frame
        state.select_rows(state.binset.members(_big_bin(state))[:5])
        state.new_name = ""
        state.apply("split")
        assert plot.current_frame is not None and plot.current_frame is not before
        assert len(state.quality()) == len(set(state.binset.bins))


def _train_until(t, n_epochs: int, timeout: float = 90.0) -> None:
    """Drain events like the app's periodic callback; ask to stop once ``n_epochs`` more epochs are seen."""
    start, deadline, asked = len(t.losses), time.time() + timeout, False
    while t.running and time.time() < deadline:
        t.drain()
        if len(t.losses) - start >= n_epochs and not asked:
            t.stop()
            asked = True
        time.sleep(0.05)
    t.join(10)
    t.drain()


def test_training_runs_in_a_thread_stops_and_resumes(run_copy):
    from deepmetabin.pipeline import Run
    from deepmetabin.ui.state import RunData, TrainingState

    t = TrainingState(RunData(run_copy), epochs=40)
    assert len(t.losses) == 6  # the run's history
    t.start(resume=False)
    with pytest.raises(RuntimeError):
        t.start()
    _train_until(t, 2)
    assert t.status == "done" and not t.running, t.status
    first = t.losses["epoch"].tolist()
    assert first[0] == 0 and 2 <= len(first) < 40 and t.total == 40 and t.device
    assert t.snapshot is not None and t.snapshot[0].shape[1] == 8 and len(t.snapshot[1]) == len(t.snapshot[0])
    assert Run.load(run_copy).done("train")
    # the bins follow the new latent space: clustered again from it, with the run's settings
    bins = Run.load(run_copy).manifest["stages"]["bins"]
    assert bins["finished"] >= Run.load(run_copy).manifest["stages"]["train"]["finished"]
    assert "bins re-clustered" in t.message and f"{bins['n_bins']} bins" in t.message
    t.start(resume=True)  # continues from the checkpoint written when it stopped
    _train_until(t, 1)
    assert t.status == "done"
    assert t.losses["epoch"].tolist()[: len(first) + 1] == first + [first[-1] + 1]


def test_umap_of_many_contigs_fits_a_sample_and_places_the_rest(tmp_path):
    """Above max_fit rows the map is fitted on a seeded sample; every other point is placed next to
    its own cluster (transform), and the cache key records the sample size."""
    from deepmetabin.embedding import umap_coords

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 8))
    group = np.repeat(np.arange(3), 200)
    latent = (centres[group] + rng.normal(0, 0.5, size=(600, 8))).astype(np.float32)
    calls = []
    xy = umap_coords(tmp_path, latent, "ids", max_fit=150, progress=lambda done, total: calls.append((done, total)))
    assert xy.shape == (600, 2) and np.isfinite(xy).all()
    assert calls[0] == (150, 600) and calls[-1] == (600, 600)
    # each point's nearest other point on the map belongs to its own group
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (group[d.argmin(1)] == group).mean() > 0.98
    assert json.loads((tmp_path / "umap.json").read_text())["max_fit"] == 150


def test_graph_edges_drawn_are_those_in_view_and_a_uniform_sample_when_too_many():
    """A pan/zoom rasterises only the edges whose bounding box meets the view (one crossing the view with
    both ends outside included), and at most ``cap`` of them: a uniform sample, not the first edges."""
    import scipy.sparse as sp

    from deepmetabin.ui import views

    coords = np.array([[0, 0], [1, 1], [5, 5], [6, 6], [-3, 0.5], [3, 0.5]], dtype=np.float32)
    g = sp.coo_matrix((np.ones(3), ([0, 2, 4], [1, 3, 5])), shape=(6, 6)).tocsr()
    seg = views._segments(coords, g + g.T)
    assert len(seg) == 3
    rows = views.edges_in_view(seg, (-0.5, 1.5), (-0.5, 1.5))
    drawn = {tuple(r) for r in seg.iloc[rows][["x0", "x1"]].to_numpy().tolist()}
    assert drawn == {(0.0, 1.0), (-3.0, 3.0)}  # the far edge 2-3 is left out; 4-5 crosses the view
    assert len(views.edges_in_view(seg, None, None)) == 3

    rng = np.random.default_rng(1)
    n = 4000
    xy = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    xy[: n // 2, 0] += 10  # half of the edges lie in a far-away cluster
    a = np.arange(n - 1)
    big = sp.coo_matrix((np.ones(n - 1), (a, a + 1)), shape=(n, n)).tocsr()
    seg = views._segments(xy, big)
    rows = views.edges_in_view(seg, (-1, 12), (-1, 2), cap=1000)
    assert len(rows) == 1000
    far = (seg.iloc[rows]["x0"].to_numpy() > 5).mean()
    assert 0.4 < far < 0.6  # both clusters sampled in proportion, not the first rows of the matrix


def test_categorical_shading_matches_datashader():
    """The map's own drawing of categorical points gives datashader's count_cat + shade image (colour
    and alpha), on a few categories and on hundreds (a colour per bin), empty pixels transparent."""
    import datashader as ds
    from datashader import transfer_functions as tf

    from deepmetabin.ui import views

    rng = np.random.default_rng(0)
    for n_cats in (3, 300):
        n = 20_000
        df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n),
                           "bin": pd.Categorical(rng.integers(0, n_cats, n).astype(str))})
        xr_, yr_ = (-3.0, 3.0), (-2.5, 2.5)
        agg = ds.Canvas(160, 120, x_range=xr_, y_range=yr_).points(df, "x", "y", ds.count_cat("bin"))
        key = views._color_key(sorted(df["bin"].cat.categories))
        want = tf.shade(agg, color_key=key, how="eq_hist", min_alpha=60, rescale_discrete_levels=True)
        a = want.data.view(np.uint8).reshape(*want.shape, 4)
        got = views.category_image(df, "bin", key, x_range=xr_, y_range=yr_, width=160, height=120, min_alpha=60)
        b = np.stack([got.dimension_values(c, flat=False) for c in "RGBA"], axis=-1)
        seen = a[..., 3] > 0
        assert 0.05 < seen.mean() < 0.95
        np.testing.assert_array_equal(a[..., 3], b[..., 3])
        assert np.abs(a[seen, :3].astype(int) - b[seen, :3]).max() <= 1
    empty = views.category_image(df, "bin", key, x_range=(10, 11), y_range=(10, 11), width=20, height=10)
    assert empty.dimension_values("A").max() == 0  # a view with no points: transparent, no error
    line = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [0.0, 0.0, 0.0], "bin": pd.Categorical(["0", "1", "0"])})
    flat = views.category_image(line, "bin", key, x_range=views._nonzero_span((0.0, 2.0)),
                                y_range=views._nonzero_span((0.0, 0.0)), width=20, height=10)
    assert (flat.dimension_values("A") > 0).sum() == 3  # points on a line (a toy run's map) are drawn


def test_map_colours_by_gmm_cluster_and_table_follows_the_map_selection(state):
    """The bins stage saves its GMM clusters (before splits), which the map offers as a colouring; contigs
    selected on the map tick the table rows of the bins holding them (and picking rows selects contigs)."""
    from deepmetabin.ui import views

    clusters = state.data.clusters
    assert clusters is not None and clusters.shape == (len(state.data.ids),)
    assert "cluster" in views.colour_options(state)
    frame = views.map_frame(state)
    assert frame["cluster"].nunique() == len(np.unique(clusters))
    # every bin's contigs come from GMM clusters (a split cluster gives several bins, never the reverse)
    binned = state.binset.assignment != ""
    per_bin = pd.DataFrame({"bin": state.binset.assignment[binned], "cluster": clusters[binned]})
    assert (per_bin.groupby("bin")["cluster"].nunique() == 1).all()

    table = views.bins_table(state)
    big = _big_bin(state)
    state.select_rows(state.binset.members(big)[:3])
    assert table.value.iloc[table.selection]["bin"].tolist() == [big]
    state.select_rows([])
    assert table.selection == []
    other = state.binset.bins[1]
    table.selection = [int(np.flatnonzero(table.value["bin"] == other)[0])]
    assert sorted(state.selection) == sorted(state.binset.members(other).tolist())


def test_zoomed_in_contigs_get_hover_circles_sized_by_length(state, monkeypatch):
    """Zoomed in (few contigs in view) the map and graph draw each contig as a circle sized by its length
    with a hover tooltip; zoomed out (more than HOVER_MAX in view), none."""
    import holoviews as hv

    from deepmetabin.ui import views

    xy = state.data.umap
    lo, hi = xy.min(0), xy.max(0)
    hover = views._hover_layer(state, hv.Points([])).callback.callable
    whole = hover(x_range=(lo[0], hi[0]), y_range=(lo[1], hi[1]))
    assert len(whole) == len(xy) <= views.HOVER_MAX
    sizes, lengths = whole.dimension_values("size"), whole.dimension_values("length")
    order = np.argsort(lengths, kind="stable")
    assert np.all(np.diff(sizes[order]) >= 0) and sizes.min() >= 3 and sizes.max() <= 12
    assert sizes[lengths <= 1_000].max(initial=3) <= 3 and sizes[lengths >= 100_000].min(initial=9) >= 9
    monkeypatch.setattr(views, "HOVER_MAX", len(xy) // 4)
    assert len(hover(x_range=(lo[0], hi[0]), y_range=(lo[1], hi[1]))) == 0
    corner = hover(x_range=(lo[0], lo[0] + (hi[0] - lo[0]) / 3), y_range=(lo[1], lo[1] + (hi[1] - lo[1]) / 3))
    inside = ((xy[:, 0] <= lo[0] + (hi[0] - lo[0]) / 3) & (xy[:, 1] <= lo[1] + (hi[1] - lo[1]) / 3)).sum()
    assert len(corner) == (inside if inside <= len(xy) // 4 else 0)


def test_a_run_from_bams_offers_its_unique_depth_as_colours(run_copy):
    """contigs.parquet of a run from BAMs holds unique:<sample> columns: the map can be coloured by them."""
    import holoviews as hv

    from deepmetabin._io import parquet_metadata, save_parquet
    from deepmetabin.ui import views
    from deepmetabin.ui.state import CurationState, RunData

    path = run_copy / "contigs.parquet"
    frame = pd.read_parquet(path)
    samples = [c.split(":", 1)[1] for c in frame if c.startswith("depth:")]
    for s in samples:
        frame[f"unique:{s}"] = frame[f"depth:{s}"] * 0.5
    save_parquet(path, frame, metadata=parquet_metadata(path))
    state = CurationState(RunData(run_copy))
    options = views.colour_options(state)
    assert [o for o in options if o.startswith("log_unique:")] == [f"log_unique:{s}" for s in samples]
    points = state.data.points()
    np.testing.assert_allclose(points[f"log_unique:{samples[0]}"], np.log1p(frame[f"depth:{samples[0]}"] * 0.5))
    assert hv.render(views.latent_map_plot(state, f"log_unique:{samples[0]}"), backend="bokeh") is not None
