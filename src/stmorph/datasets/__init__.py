"""Example data (the HER2ST sections, a planted-signal simulator) and the HEST-1k reader.

``__all__`` is the user API; the names re-exported ``as`` themselves are for the rest of stmorph (the demo).
"""

from ._her2st import her2st, her2st_adata
from ._her2st import her2st_files as her2st_files
from ._hest import read_hest
from ._simulate import simulate
from ._xenium import simulate_xenium

__all__ = ["her2st", "her2st_adata", "read_hest", "simulate", "simulate_xenium"]
