"""Errors for bad input: each message is one line that names the file, the problem and the fix.

The CLI prints ``str(error)`` and exits with code 2; it never shows a traceback for these.
"""
from __future__ import annotations


class DeepMetaBinError(Exception):
    """Base class of every error caused by the user's input or environment."""


class InputFileError(DeepMetaBinError):
    """A file is missing, unreadable, empty or of the wrong kind."""


class FastaError(DeepMetaBinError):
    """A contigs FASTA is malformed (bad header, invalid symbols, duplicate ids, ...)."""


class NoContigsError(DeepMetaBinError):
    """No contig passed the length filter (or too few are left for binning)."""


class BamError(DeepMetaBinError):
    """A BAM file cannot be used: unsorted, unindexed, or its reference names/lengths differ from the FASTA."""


class DepthTableError(DeepMetaBinError):
    """A depth table is malformed, has missing/extra contigs, or holds NaN/negative/non-numeric values."""


class GraphError(DeepMetaBinError):
    """A contig graph cannot be built or used: too few contigs for k, NaN/inf features, a bad graph file."""


class RunFolderError(DeepMetaBinError):
    """A run folder is missing artefacts, or an artefact belongs to other contigs (hash mismatch)."""


class MarkerDataError(DeepMetaBinError):
    """The marker HMM data shipped inside the package is missing or damaged (a broken install)."""


class MarkerCacheError(DeepMetaBinError):
    """A markers file in a run folder is missing, damaged or belongs to other contigs."""


class SchedulerError(DeepMetaBinError):
    """A Dask scheduler (``--scheduler``) cannot be used: dask.distributed missing, no answer, bad workers."""
