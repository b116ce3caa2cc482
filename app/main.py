"""The deepmetabin app: ``panel serve app/main.py`` (or ``panel serve app/``).

Run folder: ``?run=DIR`` in the URL, else ``--args --run DIR``, else ``runs/demo``. Every browser
session gets its own curation and training state (built in :func:`session`), so curators do not
share edits until one saves ``curation.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import panel as pn

from deepmetabin.ui.state import CurationState, RunData, TrainingState
from deepmetabin.ui import views

pn.extension("tabulator", notifications=False, sizing_mode="fixed")


def _run_dir() -> Path:
    args = pn.state.session_args.get("run") if pn.state.session_args else None
    if args:
        return Path(args[0].decode())
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run", default="runs/demo")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return Path(known.run)


def _data(path: Path) -> RunData:
    """Read-only run data, shared by the sessions of one server (curation state is not)."""
    manifest = path / "manifest.json"  # a run retrained from the app gets a new manifest: reload then
    key = f"deepmetabin-run:{path.resolve()}:{manifest.stat().st_mtime_ns if manifest.exists() else 0}"
    cache = pn.state.cache
    if key not in cache:
        cache[key] = RunData(path)
    return cache[key]


def session() -> pn.template.BaseTemplate:
    path = _run_dir()
    template = pn.template.FastListTemplate(title=f"deepmetabin — {path.name}", theme_toggle=False)
    try:
        data = _data(path)
        state = CurationState(data)
        training = TrainingState(data)
        template.main.append(views.app(state, training))
    except Exception as exc:  # noqa: BLE001 (a page that says what is wrong beats a blank one)
        template.main.append(pn.pane.Alert(f"Cannot open run folder `{path}`: {exc}", alert_type="danger"))
    return template


session().servable()
