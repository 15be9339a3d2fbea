"""The embedding engine shared by ``st.tl.embed`` (one table) and ``st.tl.embed_cohort`` (many slides).

:func:`embedding_outputs` computes the embeddings of every patch of a table and the parameters
recorded with them, without changing the table; the public functions write them.

The options of ``embed`` travel as two small frozen objects built (and checked) once by the public
function: :class:`EncoderOptions`, what every strategy needs (the encoder and how it runs), and
:class:`SpotOptions`, what only the per-spot strategy reads (checkpoints, skipping unreadable
patches, stain normalisation). The dense strategy's own options are
:class:`~stmorph.tl._dense.DenseOptions`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import (
    InvalidParameterError,
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


def _engine(encoder: Encoder | Featurizer, options: EncoderOptions) -> tuple[Run, dict[str, Any], int]:
    """The encoder as a :data:`~stmorph.tl._embed_resume.Run` function, its parameters and the batch size."""
    workers = options.num_workers
    if isinstance(encoder, Encoder):
        from ..models import resolve_device

        dev = resolve_device(options.device)
        encoder = with_precision(encoder, options.precision, dev)
        batch = resolve_batch_size(options.batch_size, encoder, dev)
        run = partial(_embed_torch, encoder=encoder, batch_size=batch, device=dev, num_workers=workers)
        params = {"kind": "torch", "mean": list(encoder.mean), "std": list(encoder.std), "precision": encoder.precision}
        return run, {**params, "input_size": encoder.input_size, "device": str(dev)}, batch
    with_precision(encoder, options.precision, None)  # a featurizer takes only "auto"
    batch = resolve_batch_size(options.batch_size, encoder, None)
    run = partial(_embed_features, fn=encoder, name=options.model, batch_size=batch, num_workers=workers)
    return run, {"kind": "features"}, batch


@dataclass(frozen=True)
class EncoderOptions:
    """The options of :func:`~stmorph.tl.embed` that every strategy reads: the encoder and how it runs.

    Checked when built (:class:`~stmorph.errors.InvalidParameterError` naming the option);
    :func:`~stmorph.tl.embed_cohort` builds the same object with the same defaults.
    """

    model: str = "default"
    weights: str | os.PathLike | None = None
    batch_size: int | str = AUTO
    device: str = "auto"
    num_workers: int = 1
    progress: bool = True
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, str) and self.batch_size == AUTO):
            check_int(self.batch_size, "batch_size", low=1, high=MAX_BATCH_SIZE)
        check_int(self.num_workers, "num_workers", low=0)
        check_device(self.device)
        check_bool(self.progress, "progress")
        check_choice(self.precision, EMBED_PRECISIONS, "precision")

    @property
    def weights_name(self) -> str | None:
        """``weights`` as recorded: a path as a string, ``"hub"``, or ``None``."""
        if self.weights is None or self.weights == "hub":
            return self.weights
        return str(Path(self.weights))


class StrategyOptions:
    """Options that apply to one strategy; :meth:`refuse_for` names those changed from their defaults."""

    strategy: str = ""
    advice: str = ""

    def changed(self) -> list[str]:
        """The options given a value other than their default (``resume`` is shared, never counted)."""
        return [f.name for f in fields(self) if f.name != "resume" and getattr(self, f.name) != f.default]

    def refuse_for(self, strategy: str) -> None:
        """Raise when options of this strategy were given to a run of ``strategy``."""
        changed = self.changed()
        if changed:
            names = ", ".join(f"{name}=" for name in changed)
            raise InvalidParameterError(
                f"strategy={strategy!r} does not take {names} (strategy={self.strategy!r} only). {self.advice}"
            )


@dataclass(frozen=True)
class SpotOptions(StrategyOptions):
    """The options of :func:`~stmorph.tl.embed` that only the per-spot strategy reads."""

    strategy = "spot"
    advice = (
        "The dense strategy resumes from its zarr store (features_store='zarr', resume=True) and reads whole tiles."
    )

    checkpoint: str | os.PathLike | None = None
    resume: bool = False
    on_error: str = "raise"
    stain_norm: StainNormalizer | None = None
    """The normaliser, already fitted on its reference (``None``: none)."""

    def __post_init__(self) -> None:
        check_choice(self.on_error, ON_ERROR, "on_error")
        if self.checkpoint is not None:
            check_path(self.checkpoint, "checkpoint", "folder_to_write")
        check_bool(self.resume, "resume")

    @classmethod
    def build(
        cls,
        *,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        on_error: str = "raise",
        stain_norm: str | None = None,
        stain_reference: Any = None,
    ) -> SpotOptions:
        """The options from :func:`~stmorph.tl.embed`'s keywords; the stain normaliser is fitted here."""
        from ..pp import stain_normalizer

        if stain_norm is None and stain_reference is not None:
            raise InvalidParameterError("stain_reference= is used only with stain_norm='macenko' or 'reinhard'.")
        normaliser = None if stain_norm is None else stain_normalizer(stain_norm, stain_reference)
        return cls(checkpoint=checkpoint, resume=resume, on_error=on_error, stain_norm=normaliser)


def embedding_outputs(
    adata: AnnData,
    engine: EncoderOptions,
    spot: SpotOptions,
    *,
    patches_key: str,
    image: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Float32 embeddings of every patch of ``adata`` and their ``uns`` parameters; ``adata`` is not changed.

    The computing step of :func:`~stmorph.tl.embed` with the per-spot strategy; ``spot.stain_norm``
    is applied to each batch as it is read.
    """
    stain_norm = spot.stain_norm
    fetch = _patch_fetcher(adata, patches_key, image, spot.on_error)
    read = fetch if stain_norm is None else lambda idx: stain_norm(fetch(idx))
    weights = engine.weights_name
    settings = {"model": engine.model, "weights": weights or "", "patches_key": patches_key}
    if stain_norm is not None:  # part of what a checkpoint was made with
        settings["stain_norm"] = json.dumps(stain_norm.record, sort_keys=True)
    if engine.precision != "auto":
        settings["precision"] = engine.precision
    run, engine_params, batch_size = _engine(inference_encoder(engine.model, weights), engine)
    params: dict[str, Any] = {**settings, **engine_params}
    failed: dict[str, str] = {}
    if spot.checkpoint is None and spot.on_error == "raise":
        emb = run(read, adata.n_obs, engine.progress)
    else:
        if spot.checkpoint is not None:  # what the checkpoint was made from: checked when it is resumed
            settings = {**settings, **_source_fingerprint(adata, patches_key, fetch, weights)}
        emb, failed = run_batches(
            run, read, adata.obs_names, batch_size, checkpoint=spot.checkpoint, resume=spot.resume,
            on_error=spot.on_error, settings=settings, progress=engine.progress,
        )  # fmt: skip
        params["on_error"] = spot.on_error
    if stain_norm is not None:
        params["stain_norm"] = {**stain_norm.record, "n_unchanged": stain_norm.unchanged}
    emb = emb.astype(np.float32, copy=False)
    read = ~adata.obs_names.isin(list(failed))
    check_finite(emb[read], f"embeddings of encoder {engine.model!r}")
    if failed:
        params["failed"] = {"obs_names": list(failed), "errors": list(failed.values())}
    params.update(dim=int(emb.shape[1]), batch_size=int(batch_size), n_patches=len(emb))
    return emb, params
