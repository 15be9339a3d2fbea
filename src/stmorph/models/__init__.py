"""Prediction methods and image encoders: the :class:`Predictor` base, the method registry, the torch models.

``import stmorph`` does not import torch: the method registry (:class:`Predictor`,
:func:`register_method`), :func:`load`, the image-encoder builders (:func:`build_encoder`,
:func:`patches_to_tensor`) and :func:`load_state_dict_safely` are exposed here, and the torch and
LightGBM code lives in private modules imported when a model is built or loaded.

``__all__`` is the user API; the names re-exported ``as`` themselves are for ``st.tl`` (the
registries' listings, the inference encoders, the device choice, the grouped cross-validation, the
conformal calibration).
"""

from ._conformal import Calibration as Calibration
from ._conformal import calibrate_model as calibrate_model
from ._conformal import check_level as check_level
from ._conformal import interval_scores as interval_scores
from ._conformal import stored_calibration as stored_calibration
from ._cv import N_BLOCKS as N_BLOCKS
from ._cv import best_candidate as best_candidate
from ._cv import check_groups as check_groups
from ._cv import cross_predict as cross_predict
from ._cv import cross_validate as cross_validate
from ._cv import spatial_blocks as spatial_blocks
from ._encoders import Encoder, build_encoder, patches_to_tensor
from ._encoders import FeatureMap as FeatureMap
from ._encoders import Featurizer as Featurizer
from ._encoders import feature_map as feature_map
from ._encoders import inference_encoder as inference_encoder
from ._encoders import list_encoders as list_encoders
from ._encoders import register_encoder as register_encoder
from ._encoders import with_precision as with_precision
from ._ensemble import FirstColumns as FirstColumns
from ._ensemble import member_label as member_label
from ._io import load
from ._lowp import Int8Gram as Int8Gram
from ._lowp import int8_available as int8_available
from ._predictor import Predictor, register_method
from ._predictor import list_methods as list_methods
from ._predictor import make_method as make_method
from ._presets import EMBED_PRECISIONS as EMBED_PRECISIONS
from ._train import resolve_device as resolve_device
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
