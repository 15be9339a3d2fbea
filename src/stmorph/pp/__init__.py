"""Preprocessing: ``st.pp`` transforms data (patches, expression preparation)."""

from ._expression import prepare_expression
from ._lazy import FilePatchReader, PatchReader, patch_reader
from ._patches import extract_patches

__all__: list[str] = ["FilePatchReader", "PatchReader", "extract_patches", "patch_reader", "prepare_expression"]
