"""stmorph: which genes can an H&E image predict, and what does it predict?

Use it as ``import stmorph as st``: ``st.pp`` prepares data, ``st.tl`` computes (EPS/SPS,
embeddings, predictions), ``st.pl`` draws, ``st.datasets`` loads example data.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, models, pl, pp, tl

try:
    __version__ = version("stmorph")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__", "datasets", "models", "pl", "pp", "tl"]
