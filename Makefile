# Two commands for a fresh clone (Python 3.11 on PATH as python3.11, see README):
#   make demo   set up .venv and run the main job on the bundled demo data
#   make test   set up .venv and run the whole test suite
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test setup clean bench-features bench-markers bench

setup: $(STAMP)

# torch first, pinned to the CPU build that lies on local disk: an unpinned torch pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	@echo "compiling UMAP's numba code once for this install (~25 s; the first map would otherwise pay it)"
	$(BIN)/python -c "from deepmetabin.embedding import warm_up; warm_up()"
	touch $@

demo: $(STAMP)
	$(BIN)/deepmetabin bin --contigs data/demo/contigs.fna.gz --depth data/demo/depth.tsv --out runs/demo --force
	@echo "--- score against the demo truth (data/demo/truth.tsv) ---"
	$(BIN)/deepmetabin evaluate --bins runs/demo/bins.tsv --truth data/demo/truth.tsv

# tests/test_app_e2e.py drives Debian's chromium through playwright (a browser download is impossible,
# so never `playwright install`); installed here when missing (needs root, as on CI).
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# Binners on one benchmark dataset (peers in their own venvs under benchmarks/work/envs/), then the
# RESULTS.md section + summary.png: make bench DATA=../shared/bench/small [BENCH_ARGS="--seeds 0 1 2"]
DATA ?= ../shared/bench/small
BENCH_ARGS ?=
$(VENV)/.bench-stamp: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	touch $@

bench: $(VENV)/.bench-stamp
	$(BIN)/python benchmarks/run.py $(DATA) $(BENCH_ARGS)
	$(BIN)/python benchmarks/report.py

bench-features: $(STAMP)
	$(BIN)/python benchmarks/bench_tnf.py

bench-markers: $(STAMP)
	$(BIN)/python benchmarks/bench_markers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
