"""The notebooks in notebooks/ run top to bottom on the demo data, and are committed without outputs.

Each notebook asserts on what it computes (notebook 1: F1 of the demo run above a floor; notebook 2:
the split removed the SCG conflicts and the replayed curation.json reproduces the bins; notebook 3:
edge precision, cannot-links, ...), so a broken library fails here. One pipeline run (notebook 1,
into a temporary folder) is shared by notebooks 2 and 3 through ``DMB_NB_RUN``; ``DMB_NB_EPOCHS``
keeps training short and ``DMB_NB_THREADS=1`` keeps the 2-core CI machine usable.

The kernel is this interpreter (``sys.executable``, the venv's python): a kernelspec written to a
temporary ``JUPYTER_PATH`` wins over any ``python3`` kernel installed for the user.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01_quickstart.ipynb", "02_curation.ipynb", "03_teaching_binning.ipynb"]
CI_ENV = {"DMB_NB_EPOCHS": "20", "DMB_NB_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
          "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory) -> Path:
    """A ``python3`` kernelspec that starts this interpreter (the venv with deepmetabin installed)."""
    spec = tmp_path_factory.mktemp("jupyter") / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (deepmetabin tests)", "language": "python",
    }))
    return spec.parents[1]


def execute(name: str, kernel_path: Path, out: Path, monkeypatch, **env: str):
    """Run notebook ``name`` top to bottom with notebooks/ as working directory; return it with outputs.

    The executed copy is written to ``out`` (never into the repository) to read when a test fails.
    """
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env={**os.environ, **CI_ENV, "DMB_NB_OUT": str(out), **env})
    finally:
        nbformat.write(nb, out / f"executed_{name}")
    text = text_of(nb)
    assert "Traceback" not in text, f"{name} printed a traceback:\n{text[-3000:]}"
    return nb


def text_of(nb) -> str:
    """All text outputs (streams, including stderr, and text/plain results) of an executed notebook."""
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", "") if o["output_type"] == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, kernel_path):
    """Notebook 1 executed once: it runs the pipeline into a temporary folder that the others reuse."""
    out = tmp_path_factory.mktemp("nb")
    with pytest.MonkeyPatch.context() as mp:
        nb = execute("01_quickstart.ipynb", kernel_path, out, mp)
    return nb, out / "demo"


def test_quickstart_runs_the_pipeline_and_scores_it(demo_run):
    nb, run = demo_run
    assert (run / "manifest.json").exists() and (run / "bins.tsv").exists()
    assert "F1 0." in text_of(nb)  # the closing check printed its scores (its asserts passed)
    assert any(o["output_type"] == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", [])), "no figure drawn"


def test_curation_splits_saves_replays_and_exports(demo_run, kernel_path, tmp_path, monkeypatch):
    _, run = demo_run
    nb = execute("02_curation.ipynb", kernel_path, tmp_path, monkeypatch, DMB_NB_RUN=str(run))
    edits = json.loads((run / "curation.json").read_text())["edits"]
    assert [e["op"] for e in edits] == ["split"]
    export = run / "export" / "notebook"
    assert (export / "bins.tsv").exists() and (export / "curation.json").exists()
    assert edits[0]["new"] in (export / "bins.tsv").read_text()
    assert (export / "bins" / f"{edits[0]['new']}.fna").exists()
    panels = [o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.holoviews_exec.v0+json" in o.get("data", {})]
    assert len(panels) >= 3, "the latent map and bins table were not shown as Panel components"


def test_teaching_notebook_runs(demo_run, kernel_path, tmp_path, monkeypatch):
    _, run = demo_run
    nb = execute("03_teaching_binning.ipynb", kernel_path, tmp_path, monkeypatch, DMB_NB_RUN=str(run))
    figures = sum(o["output_type"] == "display_data" and "image/png" in o.get("data", {})
                  for c in nb.cells for o in c.get("outputs", []))
    assert figures >= 6, f"only {figures} figures drawn"
    text = text_of(nb)
    assert "edge precision: k-NN" in text and "by constrained k-means" in text
    assert "TNF purity: short contigs" in text, "the hidden solution cells did not run"


def test_notebooks_are_all_tested_and_committed_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED
    for name in EXPECTED:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: cell {cell.id} has outputs; strip them"
            assert "ExecuteTime" not in cell.metadata and "execution" not in cell.metadata, f"{name}: cell {cell.id} metadata"
