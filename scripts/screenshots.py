"""Screenshots of every view of the app into docs/screenshots/ (playwright + Debian's chromium).

    .venv/bin/python scripts/screenshots.py [--run runs/demo] [--out docs/screenshots]

Starts `panel serve app/main.py` on a free local port, box-selects part of the latent map, then
captures the Curate, Overview, Graph and Training tabs. Never runs `playwright install`.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "main.py"), "--port", str(port),
                             "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
                             "--args", "--run", str(Path(args.run).resolve())], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/main"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=60).read()
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_text("contigs selected").first.wait_for()
            canvas = page.locator(".bk-Canvas").first
            box = canvas.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * 0.15)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5, steps=8)
            page.mouse.up()
            page.get_by_text("preview of").wait_for()
            time.sleep(2)
            page.screenshot(path=str(out / "curate.png"))
            for tab, wait in (("Overview", "Curation history"), ("Graph", "show pruned edges"), ("Training", "Resume from checkpoint")):
                page.locator(".bk-tab", has_text=tab).click()
                page.get_by_text(wait).first.wait_for()
                time.sleep(3)
                page.screenshot(path=str(out / f"{tab.lower()}.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"screenshots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
