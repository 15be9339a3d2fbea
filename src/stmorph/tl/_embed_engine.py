"""The embedding engine shared by ``st.tl.embed`` (one table) and ``st.tl.embed_cohort`` (many slides).

:func:`embedding_outputs` computes the embeddings of every patch of a table and the parameters
recorded with them, without changing the table; the public functions write them.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import (
    ShapeMismatchError,
    check_bool,
    check_choice,
    check_device,
    check_finite,
    check_int,
    check_path,
    get_patches,
    numeric_array,
)
from ..models import EMBED_PRECISIONS, Encoder, Featurizer, inference_encoder, patches_to_tensor, with_precision
from ._embed_resume import ON_ERROR, Fetch, Run, run_batches

if TYPE_CHECKING:
    import os

    from anndata import AnnData

    from ..pp import StainNormalizer

MAX_BATCH_SIZE = 65536
"""Largest ``batch_size`` accepted (a batch of 224-px patches this size is ~10 GB)."""
AUTO = "auto"
CPU_BATCH_SIZE = 64
"""``batch_size="auto"`` off CUDA: on 2 CPU cores EfficientNet-Lite0 runs as fast at 64 as at any larger batch."""
PROBE_BATCH = 8
"""Patches of the probe pass that measures an encoder's GPU memory per patch (``batch_size="auto"``)."""


def batch_for_memory(free_bytes: float, bytes_per_patch: float, *, fraction: float = 0.5) -> int:
    """Largest power of two of patches (8 to 1024) whose activations fill at most ``fraction`` of ``free_bytes``.

    Examples
    --------
    >>> batch_for_memory(40e9, 50e6)  # 400 patches fit in half of 40 GB: 256
    256
    """
    fits = fraction * free_bytes / max(bytes_per_patch, 1.0)
    return int(np.clip(2 ** int(np.floor(np.log2(max(fits, 1.0)))), 8, 1024))


def _cuda_bytes_per_patch(encoder: Encoder, device: Any) -> float:
    """Peak GPU memory of one forward pass of ``PROBE_BATCH`` patches, per patch."""
    import torch

    module = encoder.module.to(device).eval()
    size = encoder.input_size
    layout = torch.channels_last if encoder.channels_last else torch.contiguous_format
    x = torch.zeros(PROBE_BATCH, 3, size, size, device=device).contiguous(memory_format=layout)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        module(x)
    return (torch.cuda.max_memory_allocated(device) - base) / PROBE_BATCH


def resolve_batch_size(batch_size: int | str, encoder: Encoder | Featurizer, device: Any) -> int:
    """``batch_size``, or for ``"auto"``: :data:`CPU_BATCH_SIZE` off CUDA, else sized to the free GPU memory."""
    if not (isinstance(batch_size, str) and batch_size == AUTO):
        return int(batch_size)
    if not isinstance(encoder, Encoder) or getattr(device, "type", None) != "cuda":
        return CPU_BATCH_SIZE
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return batch_for_memory(free, _cuda_bytes_per_patch(encoder, device))


def _prefetch(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, items)``, with up to ``workers`` items prepared ahead in background threads."""
    if workers == 0:
        yield from map(fn, items)
        return
    items = iter(items)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(fn, item) for item in islice(items, workers))
        while pending:
            result = pending.popleft().result()
            for item in islice(items, 1):
                pending.append(pool.submit(fn, item))
            yield result


def _batches(n: int, batch_size: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _patch_fetcher(adata: AnnData, key: str, image: Any, on_error: str) -> Fetch:
    """``fetch(indices) -> uint8 patches``: from ``obsm[key]``, or read on demand after a lazy extraction.

    With ``on_error="skip"`` the lazy reader refuses nothing up front: unreadable windows fail when read.
    """
    from ..pp import lazy_patch_params, patch_reader

    if key not in adata.obsm and lazy_patch_params(adata, key) is not None:
        return patch_reader(adata, key, image, on_error=on_error).read
    return get_patches(adata, key).__getitem__


def _read_sample(fetch: Fetch, indices: np.ndarray) -> list[Any]:
    """The patches of ``indices`` one by one; an unreadable one is represented by its error's type."""
    out: list[Any] = []
    for i in indices:
        try:
            out.append(fetch(np.array([i])))
        except Exception as err:  # an unreadable spot: reported by the run itself (on_error)
            out.append(np.array([type(err).__name__], dtype=object))
    return out


def _source_fingerprint(adata: AnnData, key: str, fetch: Fetch, weights: str | None) -> dict[str, str]:
    """Content hashes a checkpoint must agree with: the patches (or their image windows) and the weights file.

    In-memory patches are hashed whole; lazily read ones by their window centres (or rows of their
    patch file) and parameters and the pixels of a sample of them (the image is never read whole).
    """
    from .._fingerprint import hash_arrays, hash_file, hash_value, sample_indices
    from ..pp import lazy_patch_params

    params = lazy_patch_params(adata, key) if key not in adata.obsm else None
    if params is None:
        patches = hash_arrays(get_patches(adata, key))
    else:
        keys = ("window_px", "patch_size", "level", "image_key", "image", "source", "path")
        window = {k: params.get(k) for k in keys}
        where = np.asarray(adata.obsm[params.get("centres_key") or params["rows_key"]])  # windows, or file rows
        sample = _read_sample(fetch, sample_indices(adata.n_obs))
        patches = hash_arrays(where, *sample) + hash_value(window)
    file = weights not in (None, "hub") and Path(weights).is_file()
    return {"patches_blake2b": patches, "weights_blake2b": hash_file(weights) if file else ""}


def _embed_torch(
    fetch: Fetch, n: int, progress: bool, *, encoder: Encoder, batch_size: int, device: Any, num_workers: int
) -> np.ndarray:
    """Embeddings of the ``n`` patches ``fetch`` returns, by a torch encoder on the (resolved) ``device``."""
    import torch
    from tqdm.auto import tqdm

    module = encoder.module.to(device).eval()
    out = []
    bar = tqdm(total=n, desc=f"embedding ({encoder.name})", disable=not progress, leave=False)
    with torch.inference_mode():
        prepare = lambda idx: patches_to_tensor(fetch(idx), encoder, device=device)  # noqa: E731
        for x in _prefetch(prepare, _batches(n, batch_size), num_workers):
            out.append(module(x).float().cpu().numpy())
            bar.update(len(x))
    bar.close()
    return np.concatenate(out) if out else np.empty((0, encoder.dim), np.float32)


def _embed_features(
    fetch: Fetch, n: int, progress: bool, *, fn: Featurizer, name: str, batch_size: int, num_workers: int
) -> np.ndarray:
    """Embeddings of the ``n`` patches ``fetch`` returns, by a featurizer function (no torch)."""
    from tqdm.auto import tqdm

    out = []
    bar = tqdm(total=n, desc=f"embedding ({name})", disable=not progress, leave=False)
    batches = _batches(n, batch_size)
    for idx, feats in zip(batches, _prefetch(lambda i: fn(fetch(i)), batches, num_workers)):
        feats = np.asarray(feats)
        if feats.ndim != 2 or len(feats) != len(idx):
            raise ShapeMismatchError(
                f"encoder {name!r} must return (n_patches, n_features) for a batch of {len(idx)} patches; "
                f"returned shape {feats.shape}."
            )
        out.append(numeric_array(feats, f"features returned by encoder {name!r}"))
        bar.update(len(idx))
    bar.close()
    return np.concatenate(out)


def _engine(
    encoder: Encoder | Featurizer, model: str, batch_size: int | str, device: str, num_workers: int, precision: str
) -> tuple[Run, dict[str, Any], int]:
    """The encoder as a :data:`~stmorph.tl._embed_resume.Run` function, its parameters and the batch size."""
    if isinstance(encoder, Encoder):
        from ..models import resolve_device

        dev = resolve_device(device)
        encoder = with_precision(encoder, precision, dev)
        batch = resolve_batch_size(batch_size, encoder, dev)
        run = partial(_embed_torch, encoder=encoder, batch_size=batch, device=dev, num_workers=num_workers)
        params = {"kind": "torch", "mean": list(encoder.mean), "std": list(encoder.std), "precision": encoder.precision}
        return run, {**params, "input_size": encoder.input_size, "device": str(dev)}, batch
    with_precision(encoder, precision, None)  # a featurizer takes only "auto"
    batch = resolve_batch_size(batch_size, encoder, None)
    run = partial(_embed_features, fn=encoder, name=model, batch_size=batch, num_workers=num_workers)
    return run, {"kind": "features"}, batch


def check_engine_options(
    *,
    batch_size: int | str,
    num_workers: int,
    device: str,
    on_error: str = "raise",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    precision: str = "auto",
) -> None:
    """Raise :class:`InvalidParameterError` (naming the option) for a bad option of the embedding engine."""
    if not (isinstance(batch_size, str) and batch_size == AUTO):
        check_int(batch_size, "batch_size", low=1, high=MAX_BATCH_SIZE)
    check_int(num_workers, "num_workers", low=0)
    check_device(device)
    check_choice(on_error, ON_ERROR, "on_error")
    if checkpoint is not None:
        check_path(checkpoint, "checkpoint", "folder_to_write")
    check_bool(resume, "resume")
    check_bool(progress, "progress")
    check_choice(precision, EMBED_PRECISIONS, "precision")


def embedding_outputs(
    adata: AnnData,
    *,
    model: str,
    weights: str | os.PathLike | None,
    batch_size: int | str,
    device: str,
    patches_key: str,
    image: Any,
    num_workers: int,
    progress: bool,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    on_error: str = "raise",
    stain_norm: StainNormalizer | None = None,
    precision: str = "auto",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Float32 embeddings of every patch of ``adata`` and their ``uns`` parameters; ``adata`` is not changed.

    The computing step of :func:`~stmorph.tl.embed` (its options, same meaning, checked by the caller
    with :func:`check_engine_options`); ``stain_norm`` is applied to each batch as it is read.
    """
    fetch = _patch_fetcher(adata, patches_key, image, on_error)
    read = fetch if stain_norm is None else lambda idx: stain_norm(fetch(idx))
    weights = None if weights is None else str(Path(weights)) if weights != "hub" else "hub"
    settings = {"model": model, "weights": weights or "", "patches_key": patches_key}
    if stain_norm is not None:  # part of what a checkpoint was made with
        settings["stain_norm"] = json.dumps(stain_norm.record, sort_keys=True)
    if precision != "auto":
        settings["precision"] = precision
    encoder = inference_encoder(model, weights)
    run, engine_params, batch_size = _engine(encoder, model, batch_size, device, num_workers, precision)
    params: dict[str, Any] = {**settings, **engine_params}
    failed: dict[str, str] = {}
    if checkpoint is None and on_error == "raise":
        emb = run(read, adata.n_obs, progress)
    else:
        if checkpoint is not None:  # what the checkpoint was made from: checked when it is resumed
            settings = {**settings, **_source_fingerprint(adata, patches_key, fetch, weights)}
        emb, failed = run_batches(
            run, read, adata.obs_names, batch_size, checkpoint=checkpoint, resume=resume, on_error=on_error,
            settings=settings, progress=progress,
        )  # fmt: skip
        params["on_error"] = on_error
    if stain_norm is not None:
        params["stain_norm"] = {**stain_norm.record, "n_unchanged": stain_norm.unchanged}
    emb = emb.astype(np.float32, copy=False)
    read = ~adata.obs_names.isin(list(failed))
    check_finite(emb[read], f"embeddings of encoder {model!r}")
    if failed:
        params["failed"] = {"obs_names": list(failed), "errors": list(failed.values())}
    params.update(dim=int(emb.shape[1]), batch_size=int(batch_size), n_patches=len(emb))
    return emb, params
