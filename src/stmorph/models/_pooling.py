"""The torch module of a foundation-model preset: a timm ViT, its output pooling, autocast on CUDA."""

from __future__ import annotations

import torch

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class PooledViT(torch.nn.Module):
    """A timm vision transformer returning one pooled feature vector per image.

    Parameters
    ----------
    backbone
        timm ``VisionTransformer`` (any ``global_pool``; its ``forward_features`` tokens are pooled here).
    pooling
        ``"cls"``: the class token; ``"cls+mean"``: the class token concatenated with the mean of
        the patch tokens, register tokens (``backbone.num_prefix_tokens``) excluded.
    precision
        ``"fp16"`` / ``"bf16"``: in eval mode on a CUDA input the forward pass runs under
        :func:`torch.autocast` with that dtype and returns float32; ``"fp32"``: never.
        Training (``.train()``) always runs in the caller's precision.

    Examples
    --------
    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, reg_tokens=2)
    >>> PooledViT(vit, "cls+mean").eval()(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 384])
    """

    def __init__(self, backbone: torch.nn.Module, pooling: str = "cls", precision: str = "fp32") -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.autocast_dtype = AUTOCAST_DTYPES.get(precision)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(x)
        cls = tokens[:, 0]
        if self.pooling == "cls":
            return cls
        return torch.cat([cls, tokens[:, self.backbone.num_prefix_tokens :].mean(dim=1)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast_dtype is not None and x.is_cuda and not self.training:
            with torch.autocast(device_type="cuda", dtype=self.autocast_dtype):
                return self._pool(x).float()
        return self._pool(x)
