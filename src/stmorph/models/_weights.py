"""Load model weights without unpickling arbitrary objects, and fit them into a module.

Checkpoints are read with :mod:`safetensors` or ``torch.load(weights_only=True)``; a checkpoint
that needs arbitrary Python objects to load is refused. :func:`load_into` reports exactly which
keys are missing, unexpected or of the wrong shape before touching the module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .._logging import logger
from .._validation import ShapeMismatchError, UnsafeCheckpointError, check_path
from ..errors import DamagedFileError

if TYPE_CHECKING:
    import torch

_WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict", "teacher")
_WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")


def _is_safetensors(path: Path) -> bool:
    """Safetensors files start with an 8-byte header length followed by a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], path)
    if not isinstance(obj, Mapping):
        raise UnsafeCheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors). "
            "Save the weights with `torch.save(model.state_dict(), path)` or safetensors."
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UnsafeCheckpointError(f"{path} holds no tensors; expected a state dict of model weights.")
    dropped = len(obj) - len(tensors)
    if dropped:
        logger.info("%s: ignored %d non-tensor entries", path, dropped)
    return tensors


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path`` on the CPU; a damaged file raises :class:`DamagedFileError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise DamagedFileError(
            f"{path} could not be read as safetensors ({err}); the file is truncated or of another format."
        ) from None


def read_torch_file(path: Path, what: str) -> object:
    """``torch.load(path, weights_only=True)`` onto the CPU, with named stmorph errors for damaged or unsafe files.

    ``what`` names the file in the messages (e.g. ``"weights file"``, ``"training checkpoint"``).

    Raises
    ------
    UnsafeCheckpointError
        Loading would unpickle Python objects other than tensors and plain values (refused).
    DamagedFileError
        The file is truncated or not a torch checkpoint.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeCheckpointError(
            f"{what} {str(path)!r} is not a plain state dict (or is damaged): loading it would unpickle arbitrary "
            "Python objects, which stmorph refuses (it can run code). Re-save only the weights, e.g. "
            "`torch.save(model.state_dict(), path)` or with safetensors."
        ) from None  # torch's own message suggests the unsafe weights_only=False: never pass it on
    except Exception as err:  # torch fails on garbage with any type (IndexError, KeyError, EOFError, ...)
        raise DamagedFileError(
            f"{what} {str(path)!r} is not a readable torch checkpoint ({type(err).__name__}: {str(err)[:120]}); "
            "the file is truncated or of another format."
        ) from None


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a plain torch checkpoint, never unpickling objects.

    Torch checkpoints are read with ``torch.load(weights_only=True)`` onto the CPU. A checkpoint
    wrapped as ``{"state_dict": ...}`` (or ``"model"``, ``"module"``, ``"model_state_dict"``,
    ``"teacher"``) is unwrapped; non-tensor entries (e.g. an epoch counter) are dropped.

    Parameters
    ----------
    path
        A ``.safetensors`` file or a torch checkpoint (``.pt``, ``.pth``, ``.bin``).

    Returns
    -------
    Mapping of parameter names to CPU tensors.

    Raises
    ------
    MissingPathError
        ``path`` does not exist (a :class:`FileNotFoundError`).
    DamagedFileError
        The file is truncated or of another format.
    UnsafeCheckpointError
        The file needs arbitrary Python objects to load (a pickled model, a custom class), or
        holds no tensors.

    Examples
    --------
    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save(torch.nn.Linear(2, 1).state_dict(), path)
    >>> sorted(load_state_dict_safely(path))
    ['bias', 'weight']
    """
    path = check_path(path, "weights", "file")
    if _is_safetensors(path):
        return read_safetensors(path)
    obj = read_torch_file(path, "weights file")
    return _unwrap(obj, path)


def _strip_prefixes(state_dict: Mapping[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (``module.`` from DataParallel, ...) shared by every key, if the module lacks it."""
    expected = set(expected)
    state = dict(state_dict)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _examples(keys: list[str], n: int = 3) -> str:
    return ", ".join(repr(k) for k in keys[:n]) + (", …" if len(keys) > n else "")


def load_into(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str,
    ignore_unexpected: tuple[str, ...] = (),
) -> None:
    """Load ``state_dict`` into ``module`` after checking that every key and shape fits.

    Parameters
    ----------
    module
        Target module.
    state_dict
        Weights to load; a prefix shared by all keys (``module.``, ``model.``) is removed when the
        module's own keys do not have it.
    what
        Name of the checkpoint and architecture, used in error messages.
    ignore_unexpected
        Key prefixes that may be present in the checkpoint but not in the module (e.g. a
        classification head ``"head."`` that the feature extractor drops).

    Raises
    ------
    ShapeMismatchError
        Keys are missing or unexpected, or shapes differ; the message gives how many of each
        and examples.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> load_into(net, {"module.weight": torch.ones(1, 2), "module.bias": torch.zeros(1)}, what="demo")
    >>> float(net.weight.sum())
    2.0
    """
    own = module.state_dict()
    state = _strip_prefixes(state_dict, own)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own and not k.startswith(ignore_unexpected)]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        first = wrong[0] if wrong else f"{(missing or unexpected)[0]} ({'missing' if missing else 'unexpected'})"
        raise ShapeMismatchError(
            f"{what}: the checkpoint does not fit the architecture; first bad tensor: {first}. "
            f"{len(missing)} missing key(s)"
            f"{' (' + _examples(missing) + ')' if missing else ''}, {len(unexpected)} unexpected key(s)"
            f"{' (' + _examples(unexpected) + ')' if unexpected else ''}, {len(wrong)} shape mismatch(es)"
            f"{' (' + _examples(wrong, 2) + ')' if wrong else ''}. Check that the weights belong to this model."
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)


_HF_DINOV2_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_DINOV2_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_QKV = ("query", "key", "value")


def _hf_block_key(rest: str) -> str | None:
    """timm name of a per-block HF Dinov2 key (``norm1.weight`` → ``norm1.weight``), None if unknown."""
    for hf, timm_name in _HF_DINOV2_BLOCK.items():
        if rest == hf or rest.startswith(hf + "."):
            return timm_name + rest[len(hf) :]
    return None


def map_hf_dinov2_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face transformers ``Dinov2Model`` state dict into timm ``VisionTransformer`` names.

    ``encoder.layer.<i>.attention.attention.{query,key,value}`` are concatenated into timm's fused
    ``blocks.<i>.attn.qkv``; ``layer_scale<j>.lambda1`` becomes ``ls<j>.gamma``;
    ``embeddings.mask_token`` (used only in pre-training) is dropped. Shapes are checked later by
    :func:`load_into`.

    Raises
    ------
    ShapeMismatchError
        A key has no timm counterpart, or a block lacks one of query/key/value.

    Examples
    --------
    >>> import torch
    >>> sorted(map_hf_dinov2_keys({"layernorm.weight": torch.ones(2), "embeddings.mask_token": torch.ones(2)}))
    ['norm.weight']
    """
    state = _strip_prefixes(state_dict, ())
    mapped: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key == "embeddings.mask_token":
            continue
        new = _HF_DINOV2_TOP.get(key)
        parts = key.split(".")
        if new is None and key.startswith("encoder.layer.") and len(parts) > 3 and parts[2].isdigit():
            rest = ".".join(parts[3:])
            if parts[3:5] == ["attention", "attention"] and len(parts) == 7 and parts[5] in _HF_QKV:
                qkv.setdefault((parts[2], parts[6]), {})[parts[5]] = tensor
                continue
            block = _hf_block_key(rest)
            new = None if block is None else f"blocks.{parts[2]}.{block}"
        if new is None:
            raise ShapeMismatchError(f"Dinov2 checkpoint: key {key!r} has no counterpart in timm's VisionTransformer.")
        mapped[new] = tensor
    import torch

    for (block, kind), parts in qkv.items():
        if set(parts) != set(_HF_QKV):
            raise ShapeMismatchError(
                f"Dinov2 checkpoint: block {block} has attention {sorted(parts)} {kind}s; "
                "expected query, key and value."
            )
        mapped[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in _HF_QKV], dim=0)
    return mapped
