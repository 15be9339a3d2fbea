"""Plotting: ``st.pl`` draws what ``st.tl`` stored.

``__all__`` is the user API; the names re-exported ``as`` themselves are for the rest of stmorph (the demo).
"""

from ._atlas import enrichment, eps_heatmap, marker_panel
from ._benchmark import benchmark_encoders
from ._benchmark import rank_agreement as rank_agreement
from ._cv import cv_table
from ._eps import eps_ranking, eps_vs_score, sps_vs_score
from ._eps import min_detected_spots as min_detected_spots
from ._predict import gene_correlation
from ._spatial import spatial
from ._spatial import visium_uns as visium_uns
from ._training import training
from ._trust import trust

__all__: list[str] = [
    "benchmark_encoders",
    "cv_table",
    "enrichment",
    "eps_heatmap",
    "eps_ranking",
    "eps_vs_score",
    "gene_correlation",
    "marker_panel",
    "spatial",
    "sps_vs_score",
    "training",
    "trust",
]
