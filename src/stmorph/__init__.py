"""stmorph: which genes can an H&E image predict, and what does it predict?

Use it as ``import stmorph as st``: ``st.pp`` prepares data, ``st.tl`` computes (EPS/SPS,
embeddings, predictions), ``st.pl`` draws, ``st.get`` reads stored results as tables,
``st.datasets`` loads example data; ``st.errors`` holds the exception types stmorph raises.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, errors, get, models, pl, pp, tl

try:
    __version__ = version("stmorph")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__", "datasets", "errors", "get", "models", "pl", "pp", "tl"]
