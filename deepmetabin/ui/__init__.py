"""Panel components over a run folder: state classes (testable without a browser) and views.

``deepmetabin.ui.state`` holds the logic (:class:`RunData`, :class:`CurationState`,
:class:`TrainingState`; the UMAP map comes from :mod:`deepmetabin.embedding`); ``deepmetabin.ui.views`` turns them into Panel/HoloViews
objects. A notebook can use either; ``app/main.py`` assembles the views into the served app.
"""
from ..embedding import umap_coords
from .state import CurationState, RunData, TrainingState, safe_export_name

__all__ = ["CurationState", "RunData", "TrainingState", "safe_export_name", "umap_coords"]
