"""Project files a user relies on: environment.yml lists every runtime dependency, the CLI is installed."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAME = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_lists_every_runtime_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    missing = [d for d in deps if CONDA_NAME.get(_name(d), _name(d)) not in conda]
    assert not missing, f"environment.yml lacks {missing}"
    assert "python=3.11" in env["dependencies"]


def test_constraints_pin_every_runtime_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {_name(l) for l in (ROOT / "constraints.txt").read_text().splitlines() if "==" in l and not l.startswith("#")}
    assert {_name(d) for d in deps} <= pins
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_console_script_runs():
    exe = Path(sys.executable).with_name("deepmetabin")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("deepmetabin ")
