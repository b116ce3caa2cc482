"""The app's 2-D map (deepmetabin.embedding): UMAP's compiled code cached on disk, seeded, shapes."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from deepmetabin.embedding import umap_embed


def test_warm_up_puts_umaps_compiled_functions_in_the_disk_cache(tmp_path):
    """UMAP caches only a few of its numba functions itself; deepmetabin enables it for the rest, and ``warm_up`` (run by
    ``make setup``) fills the cache, so a later process loads instead of compiling (~25 s on 2 cores)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", "from deepmetabin.embedding import warm_up; warm_up()"], env=env, check=True,
                   timeout=600)
    cached = [p for p in tmp_path.rglob("*.nbi") if p.parent.name.startswith("umap")]  # umap_<hash>/layouts....nbi
    # the layout's epoch function: UMAP compiles it without cache=True (its rdist has it, so "layouts." alone proves nothing)
    names = sorted(p.name for p in cached)
    assert any(n.startswith("layouts._optimize_layout_euclidean_single_epoch-") for n in names), names


def test_umap_embed_is_seeded_and_shaped():
    x = np.random.default_rng(1).normal(size=(120, 6)).astype(np.float32)
    a, b = umap_embed(x, seed=3), umap_embed(x, seed=3)
    assert a.shape == (120, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    line = umap_embed(x[:4])
    assert line.shape == (4, 2) and np.array_equal(line[:, 0], np.arange(4))
