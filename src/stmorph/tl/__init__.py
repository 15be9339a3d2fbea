"""Tools: ``st.tl`` computes results (embeddings, image graph, EPS/SPS, predictions, metrics).

``__all__`` is the user API; the names re-exported ``as`` themselves are for the rest of stmorph (the CLI
and the demo).
"""

from ..models import list_encoders, list_methods, register_encoder, register_method
from ._atlas import PAPER_MARKERS as PAPER_MARKERS
from ._atlas import enrich_predictable, predictable_genes
from ._atlas import eps_tables as eps_tables
from ._atlas import score_table as score_table
from ._atlas import slice_groups as slice_groups
from ._auto import AUTO as AUTO
from ._auto import DEFAULT_CANDIDATES as DEFAULT_CANDIDATES
from ._benchmark import benchmark_encoders
from ._benchmark import stored_benchmark as stored_benchmark
from ._cohort import embed_cohort
from ._embed import embed
from ._eps import eps, sps
from ._evaluate import evaluate
from ._genes import reference_hvgs
from ._graph import image_graph
from ._predict import predict

__all__: list[str] = [
    "benchmark_encoders",
    "embed",
    "embed_cohort",
    "enrich_predictable",
    "eps",
    "evaluate",
    "image_graph",
    "list_encoders",
    "list_methods",
    "predict",
    "predictable_genes",
    "reference_hvgs",
    "register_encoder",
    "register_method",
    "sps",
]
