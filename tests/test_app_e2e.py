"""The served app in a real browser: `panel serve app/main.py` on the tiny run, driven by playwright + chromium.

Box-select on the latent map, split the selection into a new bin, see the bins table and quality
change, undo, redo, export, and check the exported files. Chromium comes from Debian
(`apt-get install -y chromium`, done by `make test`); never `playwright install`.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from test_ui_state import build_tiny_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000

playwright_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing; `make test` installs it (apt-get install -y chromium)")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base url, run folder): the app served on a private copy of the tiny run."""
    run = tmp_path_factory.mktemp("e2e") / "run"
    shutil.copytree(build_tiny_run(tmp_path_factory.getbasetemp()), run)
    port = _free_port()
    log = open(run.parent / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "main.py"), "--port", str(port), "--address", "127.0.0.1",
         "--allow-websocket-origin", f"127.0.0.1:{port}", "--args", "--run", str(run)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/main"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=30).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"panel serve did not start: {(run.parent / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, run
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _drag(page, box, fx0, fy0, fx1, fy1) -> None:
    x0, y0 = box["x"] + box["width"] * fx0, box["y"] + box["height"] * fy0
    x1, y1 = box["x"] + box["width"] * fx1, box["y"] + box["height"] * fy1
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


def _fill(page, css: str, text: str) -> None:
    box = page.locator(f"{css} input").first
    box.fill(text)
    box.press("Enter")


def test_select_split_undo_redo_export_in_the_browser(served, browser):
    expect = playwright_api.expect
    url, run = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, timeout=TIMEOUT_MS)
    page.get_by_text("0 contigs selected").wait_for()
    table = page.locator(".dmb-bins-table")
    expect(table.get_by_text("completeness")).to_be_visible()
    canvas = page.locator(".bk-Canvas").first
    canvas.wait_for()

    # a real box-select drag over (nearly) the whole plot frame
    _drag(page, canvas.bounding_box(), 0.1, 0.08, 0.85, 0.88)
    selected = page.get_by_text(re.compile(r"[1-9][0-9]* contigs selected"))
    selected.wait_for()
    n = int(re.match(r"(\d+)", selected.inner_text().strip()).group(1))
    page.get_by_text("preview of split").wait_for()

    # split into a new bin named "picked"; the preview then the table show its quality
    _fill(page, ".dmb-newname", "picked")
    expect(page.locator(".dmb-preview").get_by_text("picked", exact=True)).to_be_visible()
    page.get_by_role("button", name="Apply").click()
    picked = table.get_by_text("picked", exact=True)
    expect(picked).to_be_visible()
    expect(page.get_by_text(re.compile(r"(split|move): "))).to_be_visible()
    expect(page.get_by_text(re.compile(r"1 edits"))).to_be_visible()

    page.get_by_role("button", name="Undo").click()
    expect(picked).to_have_count(0)
    expect(page.get_by_text(re.compile(r"0 edits"))).to_be_visible()
    page.get_by_role("button", name="Redo").click()
    expect(picked).to_be_visible()

    _fill(page, ".dmb-exportname", "e2e run/../x")
    page.get_by_role("button", name="Export").click()
    expect(page.get_by_text(re.compile(r"exported \d+ bins"))).to_be_visible()
    folder = run / "export" / "e2e_run_x"
    bins = pd.read_csv(folder / "bins.tsv", sep="\t")
    assert (bins["clustername"] == "picked").sum() == n
    q = pd.read_csv(folder / "quality.tsv", sep="\t")
    assert "picked" in set(q["bin"]) and (folder / "bins" / "picked.fna").read_text().count(">") == n
    assert sorted(p.name for p in (run / "export").iterdir()) == ["e2e_run_x"]

    page.get_by_role("button", name="Save curation.json").click()
    expect(page.get_by_text(re.compile(r"saved 1 edits"))).to_be_visible()
    assert (run / "curation.json").exists()

    # a lasso drawn with Bokeh's lasso tool selects the points inside it: a triangle over the left part
    page.get_by_role("button", name="Clear selection").click()
    page.get_by_text("0 contigs selected").wait_for()
    page.locator(".bk-tool-icon-lasso-select").first.click()
    b = canvas.bounding_box()
    path = [(0.15, 0.1), (0.7, 0.1), (0.15, 0.85), (0.16, 0.12)]
    page.mouse.move(b["x"] + b["width"] * path[0][0], b["y"] + b["height"] * path[0][1])
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(b["x"] + b["width"] * fx, b["y"] + b["height"] * fy, steps=8)
    page.mouse.up()
    lasso = page.get_by_text(re.compile(r"[1-9][0-9]* contigs selected"))
    lasso.wait_for()
    m = int(re.match(r"(\d+)", lasso.inner_text().strip()).group(1))
    assert 0 < m < n  # a triangle over part of the frame holds fewer contigs than the box over all of it
    assert not errors, errors
    page.close()


def test_other_views_render_and_a_bad_run_is_reported(served, browser):
    url, run = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, timeout=TIMEOUT_MS)
    page.get_by_text(re.compile(r"\d+ contigs selected")).wait_for()
    page.locator(".bk-tab", has_text="Overview").click()
    page.get_by_text("Curation history").wait_for()
    page.locator(".bk-tab", has_text="Graph").click()
    page.get_by_text("show pruned edges", exact=False).wait_for()
    page.locator(".bk-tab", has_text="Training").click()
    page.get_by_role("button", name="Resume from checkpoint").wait_for()
    # a short training from scratch in the server's worker thread, its events drained into the page
    _fill(page, ".dmb-epochs", "2")
    page.get_by_role("button", name="Start (from scratch)").click()
    page.get_by_text(re.compile(r"done — epoch 2/2")).wait_for(timeout=120_000)
    page.goto(f"{url}?run={run.parent / 'no_such_run'}", timeout=TIMEOUT_MS)
    page.get_by_text("Cannot open run folder").wait_for()
    page.close()
