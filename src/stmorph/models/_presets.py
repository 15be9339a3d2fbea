"""Pathology foundation-model presets: architecture, input, pooling and precision from each model card.

Plain data (no torch): :mod:`stmorph.models._encoders` builds a preset with timm. ``arch`` holds the
:func:`timm.create_model` arguments for a *local* checkpoint (``model_name`` included); layer
classes are named by string (``"SwiGLUPacked"`` → ``timm.layers.SwiGLUPacked``, ``"SiLU"`` →
``torch.nn.SiLU``) so this module imports nothing heavy. ``hub_args`` are the keys of ``arch``
passed beside the ``hf-hub:`` name, exactly as the model card does (the hub config supplies the
rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# H-optimus-0/1 and H0-mini normalisation (huggingface.co/bioptimus/H-optimus-0 model card)
BIOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
BIOPTIMUS_STD = (0.211883, 0.230117, 0.177517)

POOLINGS = ("cls", "cls+mean")
"""``"cls"``: the class token; ``"cls+mean"``: class token concatenated with the mean of the patch
tokens (register tokens excluded)."""
PRECISIONS = ("fp32", "fp16", "bf16")
EMBED_PRECISIONS = ("auto", "fp32", "bf16", "int8")
"""``precision=`` of :func:`stmorph.tl.embed`: ``"auto"`` (float32 on the CPU; on CUDA a preset's model-card
autocast, :attr:`Preset.precision`), ``"fp32"``, ``"bf16"`` (bfloat16 autocast) or ``"int8"`` (dynamically
quantised linear layers, CPU only)."""


@dataclass(frozen=True)
class Preset:
    """A foundation model: how to build it, feed it and pool its output.

    Attributes
    ----------
    arch
        :func:`timm.create_model` arguments for a local checkpoint, ``model_name`` included.
    hub
        ``hf-hub:<repo>`` name for ``weights="hub"``.
    hub_args
        Keys of ``arch`` passed with the hub name (as on the model card).
    dim
        Output dimension after pooling.
    mean, std
        Normalisation of inputs scaled to ``[0, 1]``.
    pooling
        One of :data:`POOLINGS`.
    precision
        Autocast dtype on CUDA (``"fp32"``: none), one of :data:`PRECISIONS`.
    key_format
        ``"timm"``, or ``"hf_dinov2"`` for a checkpoint in Hugging Face transformers' Dinov2 naming
        (converted to timm's on loading).
    hub_file
        For a hub repository without a timm config: the weights file fetched from it.
    gated
        Access must be requested on the hub before downloading.
    licence
        Licence of the weights, as stated on the model card.
    source
        Model card the values come from.
    """

    arch: dict[str, Any]
    hub: str
    hub_args: tuple[str, ...]
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pooling: str = "cls"
    precision: str = "fp32"
    input_size: int = 224
    key_format: str = "timm"
    hub_file: str | None = None
    gated: bool = True
    licence: str = ""
    source: str = ""


UNI_ARCH: dict[str, Any] = {
    "model_name": "vit_large_patch16_224",
    "img_size": 224,
    "patch_size": 16,
    "init_values": 1e-5,
    "num_classes": 0,
    "dynamic_img_size": True,
}
"""timm arguments of UNI (Chen et al., Nat Med 2024) from its model card (huggingface.co/MahmoodLab/UNI)."""

# huggingface.co/MahmoodLab/UNI2-h model card ("timm_kwargs"), ViT-H/14 with 8 registers, 681 M parameters
UNI2_H_ARCH: dict[str, Any] = {
    "model_name": "vit_giant_patch14_224",
    "img_size": 224,
    "patch_size": 14,
    "depth": 24,
    "num_heads": 24,
    "init_values": 1e-5,
    "embed_dim": 1536,
    "mlp_ratio": 2.66667 * 2,
    "num_classes": 0,
    "no_embed_class": True,
    "mlp_layer": "SwiGLUPacked",
    "act_layer": "SiLU",
    "reg_tokens": 8,
    "dynamic_img_size": True,
}
_UNI2_HUB_ARGS = tuple(k for k in UNI2_H_ARCH if k != "model_name")

# huggingface.co/paige-ai/Virchow2 model card + its timm config.json: ViT-H/14, 4 registers, 632 M parameters;
# embedding = CLS ⊕ mean of the 256 patch tokens (tokens 1-4 are registers and are ignored)
VIRCHOW2_ARCH: dict[str, Any] = {
    "model_name": "vit_huge_patch14_224",
    "img_size": 224,
    "init_values": 1e-5,
    "num_classes": 0,
    "mlp_ratio": 5.3375,
    "reg_tokens": 4,
    "no_embed_class": True,
    "global_pool": "",
    "dynamic_img_size": True,
    "mlp_layer": "SwiGLUPacked",
    "act_layer": "SiLU",
}

# huggingface.co/bioptimus/H-optimus-0 (and -1) model cards: timm ViT-g/14 with 4 registers, 1.1 B parameters,
# 224 px at 0.5 µm/px, "we recommend using mixed precision" (torch.autocast float16)
H_OPTIMUS_ARCH: dict[str, Any] = {
    "model_name": "vit_giant_patch14_reg4_dinov2",
    "img_size": 224,
    "init_values": 1e-5,
    "dynamic_img_size": False,
    "num_classes": 0,
}

# huggingface.co/bioptimus/H0-mini model card: ViT-B/14 with 4 registers distilled from H-optimus-0,
# created with mlp_layer=SwiGLUPacked, act_layer=SiLU; CLS ⊕ mean of patch tokens (model.num_prefix_tokens on)
H0_MINI_ARCH: dict[str, Any] = {
    "model_name": "vit_base_patch14_reg4_dinov2",
    "img_size": 224,
    "init_values": 1e-5,
    "num_classes": 0,
    "global_pool": "",
    "mlp_layer": "SwiGLUPacked",
    "act_layer": "SiLU",
}

# huggingface.co/owkin/phikon-v2 model card: a transformers Dinov2Model, ViT-L/16 at 224 px (no registers),
# features = last_hidden_state[:, 0]; the same network in timm is a ViT-L/16 with layer scale
PHIKON_V2_ARCH: dict[str, Any] = {
    "model_name": "vit_large_patch16_224",
    "img_size": 224,
    "patch_size": 16,
    "init_values": 1e-5,
    "num_classes": 0,
}

# huggingface.co/prov-gigapath/prov-gigapath timm config.json (tile encoder): ViT-g/16, 1.1 B parameters
GIGAPATH_ARCH: dict[str, Any] = {
    "model_name": "vit_giant_patch14_dinov2",
    "img_size": 224,
    "in_chans": 3,
    "patch_size": 16,
    "embed_dim": 1536,
    "depth": 40,
    "num_heads": 24,
    "init_values": 1e-5,
    "mlp_ratio": 5.33334,
    "num_classes": 0,
}

PRESETS: dict[str, Preset] = {
    "uni": Preset(
        UNI_ARCH, "hf-hub:MahmoodLab/UNI", ("init_values", "dynamic_img_size", "num_classes"), 1024,
        precision="fp16",  # HEST's benchmark runs UNI under float16 autocast (mahmoodlab/HEST inference_models.py)
        licence="CC-BY-NC-ND 4.0, academic research only", source="huggingface.co/MahmoodLab/UNI",
    ),
    "uni2-h": Preset(
        UNI2_H_ARCH, "hf-hub:MahmoodLab/UNI2-h", _UNI2_HUB_ARGS, 1536,
        precision="fp16",  # the card shows fp32 inference; float16 as HEST runs the UNI family
        licence="CC-BY-NC-ND 4.0, academic research only", source="huggingface.co/MahmoodLab/UNI2-h",
    ),
    "virchow2": Preset(
        VIRCHOW2_ARCH, "hf-hub:paige-ai/Virchow2", ("mlp_layer", "act_layer"), 2560,
        pooling="cls+mean", precision="fp16",  # card: torch.autocast(device_type="cuda", dtype=torch.float16)
        licence="CC-BY-NC-ND 4.0, non-commercial", source="huggingface.co/paige-ai/Virchow2",
    ),
    "h-optimus-0": Preset(
        H_OPTIMUS_ARCH, "hf-hub:bioptimus/H-optimus-0", ("init_values", "dynamic_img_size"), 1536,
        mean=BIOPTIMUS_MEAN, std=BIOPTIMUS_STD, precision="fp16", gated=False,
        licence="Apache-2.0", source="huggingface.co/bioptimus/H-optimus-0",
    ),
    "h-optimus-1": Preset(
        H_OPTIMUS_ARCH, "hf-hub:bioptimus/H-optimus-1", ("init_values", "dynamic_img_size"), 1536,
        mean=BIOPTIMUS_MEAN, std=BIOPTIMUS_STD, precision="fp16",
        licence="CC-BY-NC-ND 4.0, non-commercial", source="huggingface.co/bioptimus/H-optimus-1",
    ),
    "h0-mini": Preset(
        H0_MINI_ARCH, "hf-hub:bioptimus/H0-mini", ("mlp_layer", "act_layer"), 1536,
        mean=BIOPTIMUS_MEAN, std=BIOPTIMUS_STD, pooling="cls+mean", precision="fp16",  # fp16 as in HEST's benchmark
        licence="CC-BY-NC-ND 4.0, non-commercial", source="huggingface.co/bioptimus/H0-mini",
    ),
    "phikon-v2": Preset(
        PHIKON_V2_ARCH, "hf-hub:owkin/phikon-v2", (), 1024, key_format="hf_dinov2",
        hub_file="model.safetensors", gated=False,
        licence="Owkin non-commercial licence", source="huggingface.co/owkin/phikon-v2",
    ),
    "prov-gigapath": Preset(
        GIGAPATH_ARCH, "hf-hub:prov-gigapath/prov-gigapath", (), 1536,
        licence="Apache-2.0 with research-only terms of access", source="huggingface.co/prov-gigapath/prov-gigapath",
    ),
}  # fmt: skip
"""Registry names of the foundation models. CONCH is absent: its vision tower (a CoCa ViT-B/16 with an
attentional pooler) only builds through its own ``conch`` package."""
