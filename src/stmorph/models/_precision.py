"""Inference precision of a torch encoder: float32, bfloat16 autocast, or int8 dynamically quantised linear layers.

:func:`~stmorph.models._encoders.with_precision` (the entry point, used by ``st.tl.embed``) picks
one of the transformations here; the fidelity and speed of each are measured in
``benchmarks/bench_precision.py`` and documented in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import copy
import warnings

import torch


class Autocast(torch.nn.Module):
    """``module`` run under :func:`torch.autocast` with ``dtype`` on its input's device; returns float32.

    Examples
    --------
    >>> lin = torch.nn.Linear(4, 2)
    >>> Autocast(lin, torch.bfloat16)(torch.ones(3, 4)).dtype
    torch.float32
    """

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.module(x).float()


def without_autocast(module: torch.nn.Module) -> torch.nn.Module:
    """``module``, or a shallow copy of it that skips its own autocast (a preset's :class:`PooledViT` on CUDA).

    The copy shares the weights; the module given is not changed.
    """
    if getattr(module, "autocast_dtype", None) is None:
        return module
    plain = copy.copy(module)
    plain.autocast_dtype = None
    return plain


def has_linear(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds a :class:`torch.nn.Linear` layer (what int8 dynamic quantisation converts)."""
    return any(isinstance(m, torch.nn.Linear) for m in module.modules())


def quantise_linear(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose linear layers compute in int8 (dynamic quantisation; CPU only).

    Weights are quantised once to int8 with one scale per output channel (one scale per tensor
    loses too much: for a randomly initialised ViT-L/16 on HER2ST patches the features' mean
    cosine to float32 fell from 0.999 to 0.975); each
    activation is quantised on the fly with the scale of its own range, multiplied in int8 with
    int32 accumulation and dequantised to float32 (:func:`torch.ao.quantization.quantize_dynamic`,
    x86/fbgemm kernels). Everything else (convolutions, attention, normalisation, activations)
    stays float32.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    >>> type(quantise_linear(net)[0]).__name__, type(net[0]).__name__
    ('Linear', 'Linear')
    >>> quantise_linear(net)[0].weight().dtype
    torch.qint8
    """
    with warnings.catch_warnings():  # eager-mode quantisation is deprecated in favour of torchao (not a dependency)
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {torch.nn.Linear: per_channel_dynamic_qconfig}
        return quantize_dynamic(copy.deepcopy(module), spec, dtype=torch.qint8)
