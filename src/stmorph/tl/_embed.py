"""Image embeddings of spot patches: ``st.tl.embed`` (one table; many slides: ``st.tl.embed_cohort``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._anndata import commit_outputs, read_uns
from .._docs import doc_params
from .._keys import Key
from .._logging import logger
from .._tables import is_spatialdata, table_of
from .._validation import InputTypeError, InvalidParameterError, check_bool, checks_keys
from ._dense import DenseOptions, choose_strategy, dense_embedding_outputs
from ._embed_engine import EncoderOptions, SpotOptions, embedding_outputs

if TYPE_CHECKING:
    import os

    from anndata import AnnData
    from spatialdata import SpatialData


@doc_params("table_key", "progress", "copy")
@checks_keys("model", "key_added", "patches_key", "table_key")
def embed(
    adata: AnnData | SpatialData,
    *,
    model: str = "default",
    weights: str | os.PathLike | None = None,
    batch_size: int | str = "auto",
    device: str = "auto",
    key_added: str | None = None,
    patches_key: str = "patches",
    image: Any = None,
    num_workers: int = 1,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    on_error: str = "raise",
    table_key: str | None = None,
    progress: bool = True,
    strategy: str = "spot",
    tile_size: int = 1792,
    halo: int = 128,
    features_store: str = "memory",
    features_path: str | os.PathLike | None = None,
    stain_norm: str | None = None,
    stain_reference: Any = None,
    precision: str = "auto",
    copy: bool = False,
) -> AnnData | None:
    """Embed each spot's image patch with an image encoder.

    The options come in three groups: the encoder and how it runs (``model`` to ``num_workers``,
    ``progress``, ``precision``; every strategy), the per-spot strategy's (``checkpoint``, ``on_error``,
    ``stain_norm``, ``stain_reference``) and the dense strategy's (``tile_size``, ``halo``,
    ``features_store``, ``features_path``); ``resume`` continues either strategy's saved run. An
    option of the strategy not run is refused rather than ignored.

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
        Patches per forward pass. ``"auto"`` (default): 64 on the CPU (and for featurizers such as
        ``"hed"``); on CUDA the largest power of two from 8 to 1024 whose activations, measured on a
        probe pass of 8 patches, fill at most half the free GPU memory. The batch used is recorded;
        to resume a checkpoint on another GPU, pass that number.
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
        encoder runs (default one: reading and decoding release the GIL, so the next batch is ready
        when the encoder finishes); 0 prepares them in the calling thread. The result does not depend on it.
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
    strategy
        ``"spot"`` (default): one encoder pass per spot's patch. ``"dense"``, for bin grids such as
        Visium HD's: one pass per overlapping image tile at ``target_mpp``, each bin getting the mean
        of the feature map under its window (needs a ``store="lazy"`` extraction and a CNN encoder
        whose embedding is the mean of its map, e.g. ``"default"``; see the embedding method page for
        how its features compare). ``"auto"``: dense when the lazily extracted spots are closer than
        half their window (e.g. Visium HD bins), per spot otherwise (Visium, ST, patches in ``obsm``).
    tile_size, halo
        Dense strategy: side of the tiles fed to the encoder and the margin on each side whose
        features are only context, in pixels at ``target_mpp`` (multiples of the encoder's stride;
        ``halo`` at least half the window).
    features_store
        Dense strategy: ``"memory"`` holds the features in ``obsm``; ``"zarr"`` writes them to a zarr
        array (``features_path``, default ``<store>.<key_added>.zarr`` beside the SpatialData zarr
        store) and puts a dask array reading it in ``obsm``. A zarr run records its finished
        chunks: ``resume=True`` continues it. (Not to be confused with
        :func:`~stmorph.pp.extract_patches`' ``store``, where the patches are kept.)
    features_path
        Folder of the zarr array for ``features_store="zarr"``.
    stain_norm
        Stain normalisation of each patch as it is read, before the encoder (per-spot strategy):
        ``None`` (default, none), ``"macenko"`` (Macenko et al., ISBI 2009) or ``"reinhard"``
        (Reinhard et al. 2001), by the ``torchstain`` package (numpy backend; ``pip install torchstain``).
        A patch whose stains cannot be estimated (blank glass) is embedded unchanged and counted.
    stain_reference
        uint8 RGB reference the normaliser is fitted on: ``(n, P, P, 3)`` patches (e.g. well-stained
        patches of a reference slide, the same for every slide of a cohort) or an ``(H, W, 3)`` image.
        Default, Macenko only: torchstain's published reference stain matrix.
    precision
        Arithmetic of a torch encoder (per-spot strategy): ``"auto"`` (default: float32 on the CPU; on
        CUDA a foundation-model preset autocasts to its model card's dtype), ``"fp32"``, ``"bf16"``
        (bfloat16 autocast; fast only on hardware with native bfloat16) or ``"int8"`` (the linear
        layers dynamically quantised; CPU only, for transformers such as ``"uni"``; a CNN such as
        ``"default"`` has none). The features stay float32; their cosine to float32 features and the
        speed-up on a CPU are measured in the benchmarks page. Recorded in ``uns``.
    {copy}

    Returns
    -------
    ``None`` if ``copy=False``, else a new :class:`~anndata.AnnData`. Sets:

    ``obsm[key_added]`` : float32 ``(n_spots, dim)`` embeddings (a dask array over the zarr array with
    ``features_store="zarr"``).
    ``uns["stmorph"]["embed"][key_added]`` : parameters (model, weights, dim, normalisation, device, precision;
    with ``stain_norm``, a ``stain_norm`` record: method, library version, reference and its fitted
    parameters, ``n_unchanged`` patches;
    ``on_error`` and the ``failed`` spots' ``obs_names`` and ``errors`` when given ``checkpoint`` or ``on_error``;
    ``sequence``, the run's number on this table, by which :func:`eps` finds the latest embedding).

    Raises
    ------
    InputTypeError
        ``adata`` is a list of slides (use :func:`embed_cohort`).
    StmorphKeyError
        ``obsm[patches_key]`` is missing (dense strategy: no ``store="lazy"`` extraction).
    InvalidParameterError
        Unknown encoder (the registered names are listed) or weights that do not suit it; with
        ``strategy="dense"``: bins of mixed sizes, a tile smaller than the window, an encoder without
        a spatial feature map, a read-only or too small ``features_path``, or ``checkpoint`` /
        ``on_error`` given (a dense run resumes from its zarr store); unknown ``stain_norm``, Reinhard without
        ``stain_reference``, ``stain_reference`` without ``stain_norm``, ``stain_norm`` with
        ``strategy="dense"``, or a reference without stains; an unknown ``precision``, ``"int8"`` off
        the CPU or for an encoder without linear layers, a precision other than ``"auto"`` for
        ``"hed"`` or with ``strategy="dense"``.
    FileNotFoundError
        The weights file does not exist.
    ShapeMismatchError
        The checkpoint's keys or shapes do not fit the architecture (counts of missing and
        unexpected keys are given).
    CheckpointMismatchError
        ``resume=True`` with a checkpoint of another run, or whose files are damaged.
    OutOfImageError
        Dense strategy: bins lie outside the image.

    Examples
    --------
    >>> import stmorph as st
    >>> table = st.pp.extract_patches(st.datasets.simulate(50, 10), copy=True)
    >>> st.tl.embed(table)
    >>> table.obsm["X_default"].shape
    (50, 1280)

    A ViT at int8 on the CPU (here a small timm ViT with random weights, registered for the example):

    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    >>> st.tl.register_encoder("tiny_vit", vit, overwrite=True)
    >>> st.tl.embed(table, model="tiny_vit", precision="int8", device="cpu")
    >>> table.uns["stmorph"]["embed"]["X_tiny_vit"]["precision"]
    'int8'
    """
    if isinstance(adata, list | tuple):
        raise InputTypeError(
            f"embed takes one table; found a {type(adata).__name__} of {len(adata)} items. "
            "Embed many slides (SpatialData objects or zarr paths) with `st.tl.embed_cohort`."
        )
    engine = EncoderOptions(
        model=model, weights=weights, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress,
        precision=precision,
    )  # fmt: skip
    dense = DenseOptions(
        tile_size=tile_size, halo=halo, features_store=features_store, features_path=features_path, resume=resume
    )
    spot = SpotOptions.build(
        checkpoint=checkpoint, resume=resume, on_error=on_error, stain_norm=stain_norm, stain_reference=stain_reference
    )
    check_bool(copy, "copy")
    if is_spatialdata(adata) and image is None:
        image = adata  # lazy patches are read from the SpatialData's image
    adata = table_of(adata, table_key, name="st.tl.embed")
    key = key_added or Key.obsm.embedding(model)
    if choose_strategy(adata, patches_key, strategy) == "dense":
        spot.refuse_for("dense")
        if precision != "auto":
            raise InvalidParameterError("strategy='dense' computes in float32; precision= is for strategy='spot'.")
        emb, params = dense_embedding_outputs(adata, engine, dense, key=key, patches_key=patches_key, image=image)
    else:
        dense.refuse_for("spot")
        emb, params = embedding_outputs(adata, engine, spot, patches_key=patches_key, image=image)
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
