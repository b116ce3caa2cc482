"""A 2-D map of the latent means (UMAP) for the app's latent map and graph layout, cached in the run.

:func:`umap_coords` computes it once per run folder (``umap.npy`` + ``umap.json``, the key it was made
from) and returns the cached copy while the latent means stay the same. ``deepmetabin bin`` computes it
as its last stage (``map``), so the app opens a finished run without waiting for it.

Above ``max_fit`` contigs UMAP is fitted on a seeded sample of ``max_fit`` latent means and the other
contigs are placed by ``UMAP.transform`` (their nearest fitted neighbours, then a few optimisation
epochs), in chunks: fitting all 300k contigs took 9 min on 2 cores, fitting grows faster than linearly,
and a map is for looking at, not for binning (the bins come from the GMM on the latent means).
Up to ``EXACT_KNN_MAX`` rows the 15 nearest neighbours are computed exactly by scikit-learn and given
to UMAP, whose own search would compile its numba code in every new process (~60 s).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import save_npy, write_text

log = logging.getLogger(__name__)

UMAP_FILE = "umap.npy"
UMAP_META = "umap.json"
EXACT_KNN_MAX = 100_000  # up to this many rows the map's neighbours are exact (scikit-learn), above it UMAP's own
_LOCK = threading.Lock()  # two app sessions opening a fresh run compute the map once


def _array_digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def umap_key(latent: np.ndarray, ids_hash: str, *, seed: int = 0, n_neighbors: int = 15, max_fit: int = 100_000) -> dict:
    """What a cached map was made from: contigs, latent means (digest) and settings."""
    key = {"ids_hash": ids_hash, "n": int(latent.shape[0]), "latent": _array_digest(latent), "seed": seed,
           "n_neighbors": n_neighbors}
    if latent.shape[0] > max_fit:  # maps of runs below max_fit keep the key they were cached under
        key["max_fit"] = max_fit
    return key


def cached_umap(run_dir: str | os.PathLike[str], key: dict) -> np.ndarray | None:
    """The run's cached (N, 2) map if it was made from ``key``, else None."""
    run = Path(run_dir)
    try:
        meta = json.loads((run / UMAP_META).read_text())
        coords = np.load(run / UMAP_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return coords if meta == key and coords.shape == (key["n"], 2) else None


@functools.cache
def _cache_umap_compilation() -> None:
    """Let numba keep UMAP's compiled functions on disk (UMAP does not ask for it): the first map on a
    machine compiles them (~10 s of the 15 s map of a 9k-contig run), every later run loads them (map
    15 -> 6 s, same coordinates). The cache sits beside UMAP's sources, or in the user's cache folder when
    those are read-only (numba's own rule); a failure here only means compiling again. Done once per process."""
    try:
        from numba.core.registry import CPUDispatcher
        import umap.distances
        import umap.layouts
        import umap.sparse
        import umap.spectral
        import umap.umap_
        import umap.utils

        for mod in (umap.umap_, umap.layouts, umap.utils, umap.spectral, umap.sparse, umap.distances):
            for obj in list(vars(mod).values()):
                if isinstance(obj, CPUDispatcher):
                    obj.enable_caching()
    except Exception as exc:  # noqa: BLE001 - an optimisation only
        log.debug("numba caching of UMAP not enabled: %s", exc)


@functools.cache
def _release_gil_in_layout() -> None:
    """Let UMAP's layout epochs (~70 % of a map's time) release the GIL, so that the map can run in a
    thread beside another stage (``deepmetabin bin`` runs it beside the bins stage): the same numba code,
    compiled with ``nogil=True`` under its own name (its own disk-cache entry), put where UMAP looks it up
    for each fit (``umap.layouts._nb_optimize_layout_euclidean_single_epoch``). The same coordinates, bit
    for bit (tested). Any change in UMAP's internals leaves UMAP as it is. Done once per process."""
    try:
        import types

        import numba
        import umap.layouts as layouts

        if not callable(getattr(layouts, "_get_optimize_layout_euclidean_single_epoch_fn", None)):
            return  # another UMAP: its layout function is not looked up where this replaces it
        py = layouts._optimize_layout_euclidean_single_epoch
        fn = types.FunctionType(py.__code__, py.__globals__, py.__name__ + "_nogil", py.__defaults__, py.__closure__)
        fn.__qualname__ = py.__qualname__ + "_nogil"
        fn.__module__ = py.__module__
        layouts._nb_optimize_layout_euclidean_single_epoch = numba.njit(
            fn, fastmath=True, parallel=False, nogil=True, cache=True)
    except Exception as exc:  # noqa: BLE001 - an optimisation only
        log.debug("UMAP's layout keeps the GIL: %s", exc)


def load_umap() -> Any:
    """The ``umap`` module, imported with its compiled code cached on disk and its layout releasing the GIL."""
    import umap

    _cache_umap_compilation()
    _release_gil_in_layout()
    return umap


def warm_up(rows: int = 300) -> float:
    """Compile UMAP's numba code into its on-disk cache by mapping ``rows`` seeded random points; return the
    seconds it took. ``make setup`` runs it once per install, so the first real map does not pay the
    compilation (on 2 cores: the demo's map 25 s cold, 1.5 s after a warm-up; later runs load the cache)."""
    import time

    t0 = time.perf_counter()
    umap_embed(np.random.default_rng(0).normal(size=(rows, 8)).astype(np.float32))
    return time.perf_counter() - t0


def umap_embed(latent: np.ndarray, *, seed: int = 0, n_neighbors: int = 15, max_fit: int = 100_000,
               chunk: int = 50_000, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, 2) float32 UMAP of the (N, d) ``latent``: fitted on all rows up to ``max_fit``, else on a
    seeded sample of ``max_fit`` rows with the rest placed by ``transform`` in ``chunk``-row pieces.
    ``progress(rows_placed, N)`` after the fit and each chunk. Fewer than 5 rows: points on a line."""
    latent = np.asarray(latent, dtype=np.float32)
    n = latent.shape[0]
    if n < 5:  # UMAP needs a few points; a line keeps the views working on toy runs
        return np.stack([np.arange(n), np.zeros(n)], 1).astype(np.float32)
    umap = load_umap()
    fit = np.arange(n) if n <= max_fit else np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))
    k = min(n_neighbors, len(fit) - 1)
    extra = {}
    if len(fit) == n and n <= EXACT_KNN_MAX:
        # exact neighbours from scikit-learn (< 1 s at 10k rows): UMAP's own search (pynndescent) compiles
        # its numba code again in every new process, ~60 s on 2 cores, 80 % of the whole map stage of a
        # 9k-contig run. Without that index UMAP cannot ``transform``, which is only needed above max_fit.
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k).fit(latent).kneighbors(latent)  # each row first: itself, as UMAP's
        extra["precomputed_knn"] = (idx, dist, None)
    # 200 optimisation epochs: UMAP's own default above 10k rows (500 below it, for little visible gain)
    reducer = umap.UMAP(n_neighbors=k, random_state=seed, n_jobs=1, n_epochs=200, **extra)
    coords = np.empty((n, 2), dtype=np.float32)
    with warnings.catch_warnings():  # the spectral start's eigensolver notes its tolerance; the layout is fine
        warnings.filterwarnings("ignore", message="Exited (postprocessing|at iteration)", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        coords[fit] = reducer.fit_transform(latent[fit])
    if progress:
        progress(len(fit), n)
    rest = np.setdiff1d(np.arange(n), fit)
    for i in range(0, len(rest), chunk):
        rows = rest[i:i + chunk]
        coords[rows] = reducer.transform(latent[rows])
        if progress:
            progress(len(fit) + i + len(rows), n)
    return coords


def umap_coords(run_dir: str | os.PathLike[str], latent: np.ndarray, ids_hash: str, *, seed: int = 0,
                n_neighbors: int = 15, max_fit: int = 100_000,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, 2) float32 UMAP of the latent means (:func:`umap_embed`), cached as ``<run>/umap.npy`` (+ ``umap.json``).

    The cache is reused only when it was made from the same contigs (``ids_hash``), the same number
    of rows, the same latent matrix (its digest) and settings; otherwise it is recomputed and replaced
    atomically.
    """
    run = Path(run_dir)
    key = umap_key(latent, ids_hash, seed=seed, n_neighbors=n_neighbors, max_fit=max_fit)
    with _LOCK:
        coords = cached_umap(run, key)
        if coords is not None:
            return coords
        coords = umap_embed(latent, seed=seed, n_neighbors=n_neighbors, max_fit=max_fit, progress=progress)
        save_npy(run / UMAP_FILE, coords)
        write_text(run / UMAP_META, json.dumps(key))
        return coords
