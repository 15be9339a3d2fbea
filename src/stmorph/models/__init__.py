"""Torch models (imported lazily by ``st.tl``): encoders, projection heads, losses, training.

``import stmorph`` does not import torch: only :func:`load`, the image-encoder builders
(:func:`build_encoder`, :func:`patches_to_tensor`) and :func:`load_state_dict_safely` are exposed
here, and the torch code lives in private modules imported when a model is built or loaded.
"""

from ._encoders import Encoder, build_encoder, patches_to_tensor
from ._io import load
from ._weights import load_state_dict_safely

__all__: list[str] = ["Encoder", "build_encoder", "load", "load_state_dict_safely", "patches_to_tensor"]
