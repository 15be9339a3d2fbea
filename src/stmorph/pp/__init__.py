"""Preprocessing: ``st.pp`` transforms data (patches, expression preparation)."""

from ._expression import prepare_expression
from ._patches import extract_patches

__all__: list[str] = ["extract_patches", "prepare_expression"]
