"""``st.tl.embed_cohort``: embed many slides (SpatialData objects or zarr paths) in parallel with dask."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from .._anndata import commit_outputs, tool_record
from .._keys import Key
from .._logging import logger
from .._parallel import map_slides
from .._tables import is_spatialdata, table_of
from .._validation import InputTypeError, InvalidParameterError, check_bool, checks_keys, format_keys
from ._embed import next_sequence
from ._embed_engine import EncoderOptions, SpotOptions, embedding_outputs

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _open(item: SpatialData | str | os.PathLike, tables_only: bool = False) -> SpatialData:
    """The SpatialData of a slide: the object itself, or read (lazily, images as dask) from a zarr path."""
    from spatialdata import read_zarr

    if is_spatialdata(item):
        return item
    if isinstance(item, str | os.PathLike):
        if not tables_only:
            return read_zarr(item)
        with warnings.catch_warnings():  # the tables' regions are not read, on purpose
            warnings.filterwarnings("ignore", message="The table is annotating", category=UserWarning)
            return read_zarr(item, selection=("tables",))
    raise InputTypeError(
        f"a cohort is a list of SpatialData objects or zarr paths; found an item of type {type(item).__name__}."
    )


def _table(sdata: SpatialData, table_key: str | None) -> AnnData:
    return table_of(sdata, table_key, name="st.tl.embed_cohort")


def slide_embedding(
    item: SpatialData | str | os.PathLike, *, table_key: str | None, patches_key: str, key: str, engine: EncoderOptions
) -> dict[str, dict]:
    """Outputs of embedding one slide, as ``commit_outputs`` keyword arguments; the slide is not changed.

    Patches missing from the table are extracted lazily first (``extract_patches(store="lazy")``
    defaults); their outputs are returned too. The pure per-slide step of :func:`embed_cohort`
    (safe to ship to a worker process).
    """
    from ..pp import extract_patches, lazy_patch_params

    sdata = _open(item)
    table = _table(sdata, table_key)
    outputs: dict[str, dict] = {"obs": {}, "obsm": {}, "uns": {}}
    if patches_key not in table.obsm and lazy_patch_params(table, patches_key) is None:
        table = extract_patches(
            sdata, table_key=table_key, store="lazy", key_added=patches_key, progress=False, copy=True
        )
        params = tool_record(table, "patches", patches_key)
        outputs["obsm"][params["centres_key"]] = table.obsm[params["centres_key"]]
        outputs["obs"][Key.obs.patch_complete] = table.obs[Key.obs.patch_complete].to_numpy()
        outputs["uns"][Key.uns.tool("patches", patches_key)] = params
    emb, params = embedding_outputs(table, engine, SpotOptions(), patches_key=patches_key, image=sdata)
    outputs["obsm"][key] = emb
    outputs["uns"][Key.uns.tool("embed", key)] = {**params, "sequence": next_sequence(table)}
    return outputs


def _check_writable(slides: list, copy: bool) -> None:
    """With ``copy=False`` every slide must be an object to write into (a zarr path is only read)."""
    paths = [str(item) for item in slides if isinstance(item, str | os.PathLike)]
    if paths and not copy:
        raise InvalidParameterError(
            f"embed_cohort reads slides given as zarr paths but never writes to disk, so copy=False has nowhere to "
            f"write the embeddings of {format_keys(paths, 3)}. Pass copy=True to get the tables, or open the slides "
            "with `spatialdata.read_zarr` and pass the objects to write into their tables."
        )


@checks_keys("model", "key_added", "patches_key", "table_key")
def embed_cohort(
    slides: Sequence[SpatialData | str | os.PathLike],
    *,
    model: str = "default",
    weights: str | os.PathLike | None = None,
    batch_size: int | str = "auto",
    device: str = "auto",
    key_added: str | None = None,
    patches_key: str = "patches",
    table_key: str | None = None,
    num_workers: int = 1,
    client: Any = None,
    precision: str = "auto",
    copy: bool = False,
) -> list[AnnData] | None:
    """Embed the spot patches of many slides, in parallel with dask: :func:`embed` for a cohort.

    Each slide is embedded like :func:`embed` (same options) by a pure per-slide step; the slides
    are processed in parallel (see ``client``) and the embeddings are the same as slide after
    slide. The patches of a table without ``patches_key`` are extracted first with
    ``st.pp.extract_patches(store="lazy")`` and its defaults (extract them beforehand for other
    options), then read from the image on demand.

    Parameters
    ----------
    slides
        One item per slide: :class:`~spatialdata.SpatialData` objects and/or paths of zarr stores
        of them (read lazily, images as dask; never written to).
    model, weights, batch_size, device, key_added, patches_key, num_workers, precision
        As in :func:`embed`, with the same defaults.
    table_key
        The table of each SpatialData (``None``: each slide's only table), as in :func:`embed`.
    client
        A :class:`dask.distributed.Client` whose workers embed the slides (``client.map``);
        ``None`` embeds them in parallel on dask's local threaded scheduler.
    copy
        Return the tables with the outputs (copies of ``tables[table_key]``; for a zarr path, its
        table read into memory) and leave the slides unchanged. Needed when a slide is a zarr path.

    Returns
    -------
    ``None`` if ``copy=False`` (the outputs are written into ``tables[table_key]`` of each
    SpatialData), else the list of new tables in the order of ``slides``. Sets, in each table:

    ``obsm[key_added]`` : float32 ``(n_spots, dim)`` embeddings.
    ``uns["stmorph"]["embed"][key_added]`` : parameters, as :func:`embed`.
    ``obsm`` / ``obs["patch_complete"]`` / ``uns["stmorph"]["patches"][patches_key]`` : the lazy
    extraction, when the patches were missing.

    Raises
    ------
    InputTypeError
        An item is neither a SpatialData object nor a path.
    InvalidParameterError
        No slides, or a zarr path with ``copy=False``.
    StmorphKeyError
        A slide has no table ``table_key``.

    Examples
    --------
    >>> import stmorph as st
    >>> slides = [st.datasets.simulate(20, 5, n_planted=2, random_state=i) for i in range(2)]
    >>> st.tl.embed_cohort(slides, model="hed")
    >>> [s.tables["table"].obsm["X_hed"].shape for s in slides]
    [(20, 57), (20, 57)]
    """
    engine = EncoderOptions(
        model=model, weights=weights, batch_size=batch_size, device=device, num_workers=num_workers, progress=False,
        precision=precision,
    )  # fmt: skip
    check_bool(copy, "copy")
    slides = list(slides)
    if not slides:
        raise InvalidParameterError(
            "embed_cohort got an empty list of slides; pass at least one SpatialData or zarr path."
        )
    _check_writable(slides, copy)
    tables = [_table(_open(item, tables_only=True), table_key) for item in slides]  # checks every item first
    key = key_added or Key.obsm.embedding(model)
    one_slide = partial(slide_embedding, table_key=table_key, patches_key=patches_key, key=key, engine=engine)
    results = map_slides(one_slide, slides, client=client)
    tables = [t.copy() if copy else t for t in tables]
    for table, outputs in zip(tables, results):
        commit_outputs(table, **outputs)
    logger.info("embed_cohort: %d slides, %d patches → obsm[%r]", len(tables), sum(t.n_obs for t in tables), key)
    return tables if copy else None
