"""Example data (the HER2ST sections, a planted-signal simulator) and the HEST-1k reader."""

from ._her2st import her2st, her2st_adata
from ._hest import read_hest
from ._simulate import simulate

__all__ = ["her2st", "her2st_adata", "read_hest", "simulate"]
