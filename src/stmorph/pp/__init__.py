"""Preprocessing: ``st.pp`` transforms data (patches, expression preparation).

``__all__`` is the user API; the names re-exported ``as`` themselves are for the rest of stmorph
(``tl`` reads lazy patches and stain-normalises through them).
"""

from ._expression import prepare_expression
from ._lazy import FilePatchReader, PatchReader, patch_reader
from ._lazy import lazy_patch_params as lazy_patch_params
from ._patches import extract_patches
from ._stain import StainNormalizer as StainNormalizer
from ._stain import stain_normalizer as stain_normalizer
from ._windows import read_patches as read_patches
from ._xenium import he_placement as he_placement
from ._xenium import is_xenium as is_xenium
from ._xenium import pseudo_spots

__all__: list[str] = [
    "FilePatchReader",
    "PatchReader",
    "extract_patches",
    "patch_reader",
    "prepare_expression",
    "pseudo_spots",
]
