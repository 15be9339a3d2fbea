"""Image embeddings of spot patches: ``st.tl.embed`` (one table; many slides: ``st.tl.embed_cohort``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._anndata import commit_outputs, read_uns
from .._docs import doc_params
from .._keys import Key
from .._logging import logger
from .._tables import is_spatialdata, table_of
from .._validation import InputTypeError, check_bool
from ._embed_engine import check_engine_options, embedding_outputs

if TYPE_CHECKING:
    import os

    from anndata import AnnData
    from spatialdata import SpatialData


@doc_params("table_key", "progress", "copy")
def embed(
    adata: AnnData | SpatialData,
    *,
    model: str = "default",
    weights: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    key_added: str | None = None,
    patches_key: str = "patches",
    image: Any = None,
    num_workers: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    on_error: str = "raise",
    table_key: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Embed each spot's image patch with an image encoder.

    Parameters
    ----------
    adata
        Table with patches in ``obsm[patches_key]`` (from :func:`stmorph.pp.extract_patches`), or
        a SpatialData holding it (``table_key``; lazily extracted patches are then read from its
        image). For many slides use :func:`embed_cohort`.
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
        ``obsm`` key of the embeddings (default ``X_<model>``; ``X_owner_name`` for ``"hf-hub:owner/name"``) and
        ``uns["stmorph"]["embed"]`` key of the parameters.
    patches_key
        ``obsm`` key of the patches, or ``key_added`` of an ``extract_patches(store="lazy")`` run.
    image
        With lazily extracted patches: the source they are read from, batch by batch (the same
        SpatialData object, or the image array of an ``(image, coordinates)`` extraction; nothing
        for a Visium AnnData). See :func:`stmorph.pp.patch_reader`.
    num_workers
        Background threads preparing batches (reading lazy patches, scaling, resizing) while the
        encoder runs; 0 prepares them in the calling thread.
    checkpoint
        Folder where finished batches are saved as they complete (``embeddings.npy``, a float32
        memory-mapped array, and ``progress.json``), so that an interrupted run can be resumed. It
        is kept after the run; delete it when done.
    resume
        Continue the run saved in ``checkpoint``: finished batches are not recomputed. The
        checkpoint must come from the same spots (obs names), model, weights file, patches (their
        content: the pixels, or for lazy patches the window centres and a sample of windows) and
        ``batch_size``, and its files must be those it recorded (size, shape, dtype, checksums),
        else :class:`~stmorph.errors.CheckpointMismatchError` says what differs. ``False`` starts over.
    on_error
        What to do with a patch that cannot be read (corrupt or unreadable image data):
        ``"raise"`` (default) stops with the error; ``"skip"`` re-reads the failing batch spot by
        spot, gives each unreadable spot a **NaN row** (the spot is kept), warns with the spot ids,
        and records them with their errors in ``uns["stmorph"]["embed"][key_added]["failed"]``.
    {table_key}
    {progress}
    {copy}

    Returns
    -------
    ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData`. Sets:

    ``obsm[key_added]`` : float32 ``(n_spots, dim)`` embeddings.
    ``uns["stmorph"]["embed"][key_added]`` : parameters (model, weights, dim, normalisation, device;
    ``on_error`` and the ``failed`` spots' ``obs_names`` and ``errors`` when given ``checkpoint`` or ``on_error``;
    ``sequence``, the run's number on this table, by which :func:`eps` finds the latest embedding).

    Raises
    ------
    InputTypeError
        ``adata`` is a list of slides (use :func:`embed_cohort`).
    StmorphKeyError
        ``obsm[patches_key]`` is missing.
    InvalidParameterError
        Unknown encoder (the registered names are listed) or weights that do not suit it.
    FileNotFoundError
        The weights file does not exist.
    ShapeMismatchError
        The checkpoint's keys or shapes do not fit the architecture (counts of missing and
        unexpected keys are given).
    CheckpointMismatchError
        ``resume=True`` with a checkpoint of another run, or whose files are damaged.

    Examples
    --------
    >>> import stmorph as st
    >>> table = st.pp.extract_patches(st.datasets.her2st("C2"), copy=True)
    >>> st.tl.embed(table)
    >>> table.obsm["X_default"].shape
    (187, 1280)
    """
    if isinstance(adata, list | tuple):
        raise InputTypeError(
            f"embed takes one table; found a {type(adata).__name__} of {len(adata)} items. "
            "Embed many slides (SpatialData objects or zarr paths) with `st.tl.embed_cohort`."
        )
    check_engine_options(
        batch_size=batch_size, num_workers=num_workers, device=device, on_error=on_error, checkpoint=checkpoint,
        resume=resume, progress=progress,
    )  # fmt: skip
    check_bool(copy, "copy")
    if is_spatialdata(adata) and image is None:
        image = adata  # lazy patches are read from the SpatialData's image
    adata = table_of(adata, table_key, name="st.tl.embed")
    key = key_added or Key.obsm.embedding(model)
    emb, params = embedding_outputs(
        adata, model=model, weights=weights, batch_size=batch_size, device=device, patches_key=patches_key,
        image=image, num_workers=num_workers, progress=progress, checkpoint=checkpoint, resume=resume,
        on_error=on_error,
    )  # fmt: skip
    logger.info("embed: %d patches → obsm[%r] (%d-d, %s)", len(emb), key, emb.shape[1], model)
    params["sequence"] = next_sequence(adata)
    adata = adata.copy() if copy else adata
    commit_outputs(adata, obsm={key: emb}, uns={Key.uns.tool("embed", key): params})
    return adata if copy else None


def next_sequence(adata: AnnData) -> int:
    """Number of the next embedding run on ``adata``: one more than any ``sequence`` recorded so far."""
    records = read_uns(adata, Key.uns.tool("embed"), {})
    if not isinstance(records, Mapping):
        return 1
    numbers = [record.get("sequence", 0) for record in records.values() if isinstance(record, Mapping)]
    return int(max(numbers, default=0)) + 1


def latest_embedding(adata: AnnData) -> str | None:
    """The ``obsm`` key of the most recent :func:`embed` run still present in ``adata``, or ``None``.

    Runs are ordered by the ``sequence`` each records (records written before it existed count as
    older, in the order they were stored).

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((3, 2)), obsm={"X_a": np.ones((3, 4)), "X_b": np.ones((3, 4))})
    >>> adata.uns["stmorph"] = {"embed": {"X_b": {"sequence": 2}, "X_a": {"sequence": 1}}}
    >>> latest_embedding(adata)
    'X_b'
    """
    records = read_uns(adata, Key.uns.tool("embed"), {})
    if not isinstance(records, Mapping):
        return None
    present = [
        (record.get("sequence", 0) if isinstance(record, Mapping) else 0, order, key)
        for order, (key, record) in enumerate(records.items())
        if key in adata.obsm
    ]
    return max(present)[2] if present else None
