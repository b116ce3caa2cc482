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
    # ... and deepmetabin's copy of it that releases the GIL (what UMAP calls once deepmetabin loaded it)
    assert any(n.startswith("layouts._optimize_layout_euclidean_single_epoch_nogil-") for n in names), names


def test_umap_embed_is_seeded_and_shaped():
    x = np.random.default_rng(1).normal(size=(120, 6)).astype(np.float32)
    a, b = umap_embed(x, seed=3), umap_embed(x, seed=3)
    assert a.shape == (120, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    line = umap_embed(x[:4])
    assert line.shape == (4, 2) and np.array_equal(line[:, 0], np.arange(4))


def test_layout_releases_the_gil_and_gives_the_same_map():
    """The map runs in a thread beside the bins stage: UMAP's layout epochs, compiled again with ``nogil``, must
    give the coordinates UMAP's own compiled function gives, bit for bit."""
    import umap.layouts as layouts

    from deepmetabin.embedding import load_umap

    load_umap()
    ours = layouts._nb_optimize_layout_euclidean_single_epoch
    assert ours.targetoptions.get("nogil") is True
    assert ours.py_func.__code__ is layouts._optimize_layout_euclidean_single_epoch.__code__  # the same code
    x = np.random.default_rng(4).normal(size=(150, 5)).astype(np.float32)
    released = umap_embed(x, seed=1)
    try:
        layouts._nb_optimize_layout_euclidean_single_epoch = layouts.numba.njit(
            layouts._optimize_layout_euclidean_single_epoch, fastmath=True, parallel=False)  # UMAP's own
        held = umap_embed(x, seed=1)
    finally:
        layouts._nb_optimize_layout_euclidean_single_epoch = ours
    assert np.array_equal(released, held)
