"""deepmetabin: metagenome binning with a graph-regularised Gaussian-mixture VAE.

Stages are plain functions, one module each (see DESIGN.md): ``contigs`` -> ``tnf`` / ``depth`` ->
``features`` -> ``graph`` -> ``gmvae``/``train`` -> ``markers`` -> ``cluster`` -> ``quality`` -> ``bins``.
"""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os
import sys as _sys

# numba's default OpenMP threading layer, once started, left torch's own OpenMP pool ~5x slower in the
# same process (21.7 vs 4.2 s per epoch at 100k contigs, 2 threads): both runtimes' threads spin for
# the cores. numba's "workqueue" layer does not spin, and TNF / k-NN keep their speed. A layer chosen
# by the user (NUMBA_THREADING_LAYER) is respected.
if "NUMBA_THREADING_LAYER" not in _os.environ:
    _os.environ["NUMBA_THREADING_LAYER"] = "workqueue"
    if "numba" in _sys.modules:  # imported before us: its config was read already
        _sys.modules["numba"].config.THREADING_LAYER = "workqueue"

from .contigs import Contigs, read_contigs  # noqa: E402
from .errors import DeepMetaBinError  # noqa: E402

__all__ = ["Contigs", "DeepMetaBinError", "read_contigs", "__version__"]
