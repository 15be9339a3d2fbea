"""Example data: the HER2ST sections and a planted-signal simulator."""

from ._her2st import her2st, her2st_adata
from ._simulate import simulate

__all__ = ["her2st", "her2st_adata", "simulate"]
