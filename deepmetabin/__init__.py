"""deepmetabin: metagenome binning with a graph-regularised Gaussian-mixture VAE.

Stages are plain functions, one module each (see DESIGN.md): ``contigs`` -> ``tnf`` / ``depth`` ->
``features`` -> ``graph`` -> ``gmvae``/``train`` -> ``markers`` -> ``cluster`` -> ``quality`` -> ``bins``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .contigs import Contigs, read_contigs  # noqa: E402
from .errors import DeepMetaBinError  # noqa: E402

__all__ = ["Contigs", "DeepMetaBinError", "read_contigs", "__version__"]
