"""Prediction methods and image encoders: the :class:`Predictor` base, the method registry, the torch models.

``import stmorph`` does not import torch: the method registry (:class:`Predictor`,
:func:`register_method`), :func:`load`, the image-encoder builders (:func:`build_encoder`,
:func:`patches_to_tensor`) and :func:`load_state_dict_safely` are exposed here, and the torch and
LightGBM code lives in private modules imported when a model is built or loaded.
"""

from ._encoders import Encoder, build_encoder, patches_to_tensor
from ._io import load
from ._predictor import Predictor, register_method
from ._weights import load_state_dict_safely

__all__: list[str] = [
    "Encoder",
    "Predictor",
    "build_encoder",
    "load",
    "load_state_dict_safely",
    "patches_to_tensor",
    "register_method",
]
