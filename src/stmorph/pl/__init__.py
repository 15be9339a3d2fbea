"""Plotting: ``st.pl`` draws what ``st.tl`` stored."""

from ._cv import cv_table
from ._eps import eps_ranking, eps_vs_score, sps_vs_score
from ._predict import gene_correlation
from ._spatial import spatial
from ._training import training
from ._trust import trust

__all__: list[str] = [
    "cv_table",
    "eps_ranking",
    "eps_vs_score",
    "gene_correlation",
    "spatial",
    "sps_vs_score",
    "training",
    "trust",
]
