"""Image embeddings of spot patches: ``st.tl.embed``."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import commit_outputs
from .._logging import logger
from .._validation import (
    InvalidParameterError,
    ShapeMismatchError,
    check_choice,
    check_finite,
    check_range,
    get_patches,
)
from ..models._encoders import Encoder, Featurizer, patches_to_tensor, resolve_encoder
from ._embed_resume import ON_ERROR, run_batches

if TYPE_CHECKING:
    import os

    from anndata import AnnData
    from spatialdata import SpatialData


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


def _patch_fetcher(adata: AnnData, key: str, image: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``fetch(indices) -> uint8 patches``: from ``obsm[key]``, or read on demand after a lazy extraction."""
    from ..pp._patches import lazy_patch_params, patch_reader

    if key not in adata.obsm and lazy_patch_params(adata, key) is not None:
        return patch_reader(adata, key, image).read
    return get_patches(adata, key).__getitem__


def _embed_torch(
    encoder: Encoder,
    fetch: Callable[[np.ndarray], np.ndarray],
    n: int,
    batch_size: int,
    device: str,
    num_workers: int,
    progress: bool,
) -> tuple[np.ndarray, str]:
    import torch
    from tqdm.auto import tqdm

    from ..models._train import resolve_device

    dev = resolve_device(device)
    module = encoder.module.to(dev).eval()
    out = []
    bar = tqdm(total=n, desc=f"embedding ({encoder.name})", disable=not progress, leave=False)
    with torch.inference_mode():
        prepare = lambda idx: patches_to_tensor(fetch(idx), encoder, device=dev)  # noqa: E731
        for x in _prefetch(prepare, _batches(n, batch_size), num_workers):
            out.append(module(x).float().cpu().numpy())
            bar.update(len(x))
    bar.close()
    return np.concatenate(out) if out else np.empty((0, encoder.dim), np.float32), str(dev)


def _embed_features(
    fn: Featurizer,
    name: str,
    fetch: Callable[[np.ndarray], np.ndarray],
    n: int,
    batch_size: int,
    num_workers: int,
    progress: bool,
) -> np.ndarray:
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
        out.append(feats)
        bar.update(len(idx))
    bar.close()
    return np.concatenate(out)


def embedding_outputs(
    adata: AnnData,
    *,
    model: str,
    weights: str | os.PathLike | None,
    batch_size: int,
    device: str,
    patches_key: str,
    image: Any,
    num_workers: int,
    progress: bool,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    on_error: str = "raise",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Float32 embeddings of every patch of ``adata`` and their ``uns`` parameters; ``adata`` is not changed.

    The computing step of :func:`embed` (its options, same meaning).
    """
    fetch = _patch_fetcher(adata, patches_key, image)
    n = adata.n_obs
    check_range(batch_size, "batch_size", low=1, inclusive=True)
    check_range(num_workers, "num_workers", low=0, inclusive=True)
    check_choice(on_error, ON_ERROR, "on_error")
    weights = None if weights is None else str(Path(weights)) if weights != "hub" else "hub"
    encoder = resolve_encoder(model, weights)
    params: dict[str, Any] = {"model": model, "weights": weights or "", "patches_key": patches_key}
    if isinstance(encoder, Encoder):

        def run(fetch_: Callable[[np.ndarray], np.ndarray], n_: int, progress_: bool) -> np.ndarray:
            emb_, params["device"] = _embed_torch(encoder, fetch_, n_, batch_size, device, num_workers, progress_)
            return emb_

        params.update(kind="torch", mean=list(encoder.mean), std=list(encoder.std), input_size=encoder.input_size)
    else:

        def run(fetch_: Callable[[np.ndarray], np.ndarray], n_: int, progress_: bool) -> np.ndarray:
            return _embed_features(encoder, model, fetch_, n_, batch_size, num_workers, progress_)

        params.update(kind="features")
    failed: dict[str, str] = {}
    if checkpoint is None and on_error == "raise":
        emb = run(fetch, n, progress)
    else:
        settings = {"model": model, "weights": weights or "", "patches_key": patches_key}
        emb, failed = run_batches(
            run, fetch, adata.obs_names, batch_size, checkpoint=checkpoint, resume=resume, on_error=on_error,
            settings=settings, progress=progress,
        )  # fmt: skip
        params["on_error"] = on_error
    emb = emb.astype(np.float32, copy=False)
    read = ~adata.obs_names.isin(list(failed))
    check_finite(emb[read], f"embeddings of encoder {model!r}")
    if failed:
        params["failed"] = {"obs_names": list(failed), "errors": list(failed.values())}
    params.update(dim=int(emb.shape[1]), batch_size=int(batch_size), n_patches=len(emb))
    return emb, params


def embed(
    adata: AnnData | Sequence[SpatialData | str | os.PathLike],
    *,
    model: str = "default",
    weights: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    key_added: str | None = None,
    patches_key: str = "patches",
    image: Any = None,
    num_workers: int = 0,
    table_key: str = "table",
    client: Any = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    on_error: str = "raise",
    progress: bool = True,
    copy: bool = False,
) -> AnnData | list[AnnData] | None:
    """Embed each spot's image patch with an image encoder.

    Parameters
    ----------
    adata
        Table with patches in ``obsm[patches_key]`` (from :func:`stmorph.pp.extract_patches`), or a
        cohort: a list of :class:`~spatialdata.SpatialData` objects and/or zarr paths of them, one
        per slide. The slides are embedded in parallel with dask (see ``client``); the patches of a
        table without ``patches_key`` are extracted first with ``extract_patches(store="lazy")``
        and its defaults (extract them beforehand for other options), then read from the image on
        demand. A list returns the list of tables written to (``tables[table_key]`` of each
        SpatialData, in place unless ``copy``; for a zarr path, its table read into memory — nothing
        is written to disk).
    model
        Encoder name: ``"default"`` (EfficientNet-Lite0, ImageNet weights shipped with the package,
        1280-d), ``"hed"`` (stain and texture statistics, 57-d, no torch), ``"uni"`` (UNI ViT-L/16,
        1024-d, needs ``weights``), ``"resnet50"``, ``"densenet121"``, any timm architecture name
        (needs ``weights``), or a name added with :func:`register_encoder`. See
        :func:`list_encoders`.
    weights
        Local weights file (safetensors or a torch state dict; pickled objects are refused), or
        ``"hub"`` to download with timm (needs internet; UNI needs granted access). Not used by
        ``"default"`` and ``"hed"``.
    batch_size
        Patches per forward pass.
    device
        Torch device; ``"auto"`` uses CUDA when available. On the CPU results are deterministic.
    key_added
        ``obsm`` key of the embeddings (default ``f"X_{model}"``) and
        ``uns["stmorph"]["embed"]`` key of the parameters.
    patches_key
        ``obsm`` key of the patches, or ``key_added`` of an ``extract_patches(store="lazy")`` run.
    image
        With lazily extracted patches: the source they are read from, batch by batch (the same
        SpatialData object, or the image array of an ``(image, coordinates)`` extraction; nothing
        for a Visium AnnData). See :func:`stmorph.pp._patches.patch_reader`.
    num_workers
        Background threads preparing batches (reading lazy patches, scaling, resizing) while the
        encoder runs; 0 prepares them in the calling thread.
    table_key
        With a cohort: the table of each SpatialData.
    client
        With a cohort: a :class:`dask.distributed.Client` whose workers embed the slides
        (``client.map``); ``None`` embeds them in parallel on dask's local threaded scheduler.
        The embeddings are the same as slide after slide.
    checkpoint
        Folder where finished batches are saved as they complete (``embeddings.npy``, a float32
        memory-mapped array, and ``progress.json``), so that an interrupted run can be resumed. It
        is kept after the run; delete it when done. One table only.
    resume
        Continue the run saved in ``checkpoint``: finished batches are not recomputed. The
        checkpoint must come from the same spots (obs names), model, weights, patches and
        ``batch_size``, else an error says what differs. ``False`` starts over.
    on_error
        What to do with a patch that cannot be read (corrupt or unreadable image data):
        ``"raise"`` (default) stops with the error; ``"skip"`` re-reads the failing batch spot by
        spot, gives each unreadable spot a **NaN row** (the spot is kept), warns with the spot ids,
        and records them with their errors in ``uns["stmorph"]["embed"][key_added]["failed"]``.
    progress
        Show a progress bar.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData`; for a cohort, the list of
    tables. Sets:

    ``obsm[key_added]`` : float32 ``(n_spots, dim)`` embeddings.
    ``uns["stmorph"]["embed"][key_added]`` : parameters (model, weights, dim, normalisation, device;
    ``on_error`` and the ``failed`` spots' ``obs_names`` and ``errors`` when given ``checkpoint`` or ``on_error``).

    Raises
    ------
    StmorphKeyError
        ``obsm[patches_key]`` is missing.
    InvalidParameterError
        Unknown encoder (the registered names are listed) or weights that do not suit it.
    FileNotFoundError
        The weights file does not exist.
    ShapeMismatchError
        The checkpoint's keys or shapes do not fit the architecture (counts of missing and
        unexpected keys are given).

    Examples
    --------
    >>> import stmorph as st
    >>> table = st.pp.extract_patches(st.datasets.her2st("C2"))
    >>> st.tl.embed(table)
    >>> table.obsm["X_default"].shape
    (187, 1280)
    """
    if isinstance(adata, list | tuple):
        from ._cohort import embed_cohort

        if checkpoint is not None or resume or on_error != "raise":
            raise InvalidParameterError(
                "checkpoint=, resume= and on_error= apply to one table; embed the slides one by one to use them."
            )

        options = {"model": model, "weights": weights, "batch_size": batch_size, "device": device}
        return embed_cohort(
            adata, key=key_added or f"X_{model}", patches_key=patches_key, table_key=table_key,
            num_workers=num_workers, client=client, copy=copy, **options,
        )  # fmt: skip
    if client is not None:
        raise InvalidParameterError("`client=` is for a list of slides (SpatialData objects or zarr paths); "
                                    "pass a list, or leave `client` out for one table.")  # fmt: skip
    key = key_added or f"X_{model}"
    emb, params = embedding_outputs(
        adata, model=model, weights=weights, batch_size=batch_size, device=device, patches_key=patches_key,
        image=image, num_workers=num_workers, progress=progress, checkpoint=checkpoint, resume=resume,
        on_error=on_error,
    )  # fmt: skip
    logger.info("embed: %d patches → obsm[%r] (%d-d, %s)", len(emb), key, emb.shape[1], model)
    adata = adata.copy() if copy else adata
    commit_outputs(adata, obsm={key: emb}, uns={("stmorph", "embed", key): params})
    return adata if copy else None
