"""``st.tl.embed`` over a cohort: many slides (SpatialData objects or zarr paths) in parallel with dask."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from .._anndata import commit_outputs
from .._logging import logger
from .._parallel import map_slides
from .._validation import InputTypeError, InvalidParameterError, StmorphKeyError, _available
from ._embed import embedding_outputs

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _open(item: SpatialData | str | os.PathLike, tables_only: bool = False) -> SpatialData:
    """The SpatialData of a slide: the object itself, or read (lazily, images as dask) from a zarr path."""
    from spatialdata import SpatialData, read_zarr

    if isinstance(item, SpatialData):
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


def _table(sdata: SpatialData, table_key: str) -> AnnData:
    if table_key not in sdata.tables:
        raise StmorphKeyError(f"table {table_key!r} not found; available: {_available(list(sdata.tables.keys()))}.")
    return sdata.tables[table_key]


def slide_embedding(
    item: SpatialData | str | os.PathLike, *, table_key: str, patches_key: str, key: str, **options: Any
) -> dict[str, dict]:
    """Outputs of embedding one slide, as ``commit_outputs`` keyword arguments; the slide is not changed.

    Patches missing from the table are extracted lazily first (``extract_patches(store="lazy")``
    defaults); their outputs are returned too. The pure per-slide step of a cohort ``st.tl.embed``
    (safe to ship to a worker process).
    """
    from ..pp._patches import extract_patches, lazy_patch_params

    sdata = _open(item)
    table = _table(sdata, table_key)
    outputs: dict[str, dict] = {"obs": {}, "obsm": {}, "uns": {}}
    if patches_key not in table.obsm and lazy_patch_params(table, patches_key) is None:
        table = extract_patches(
            sdata, table_key=table_key, store="lazy", key_added=patches_key, progress=False, copy=True
        )
        params = table.uns["stmorph"]["patches"][patches_key]
        outputs["obsm"][params["centres_key"]] = table.obsm[params["centres_key"]]
        outputs["obs"]["patch_complete"] = table.obs["patch_complete"].to_numpy()
        outputs["uns"][("stmorph", "patches", patches_key)] = params
    emb, params = embedding_outputs(table, patches_key=patches_key, image=sdata, progress=False, **options)
    outputs["obsm"][key] = emb
    outputs["uns"][("stmorph", "embed", key)] = params
    return outputs


def embed_cohort(
    slides: Sequence[SpatialData | str | os.PathLike],
    *,
    key: str,
    patches_key: str,
    table_key: str,
    client: Any,
    copy: bool,
    **options: Any,
) -> list[AnnData]:
    """Embed every slide with :func:`slide_embedding` in parallel, then write into the tables (see ``st.tl.embed``)."""
    slides = list(slides)
    if not slides:
        raise InvalidParameterError("embed got an empty list of slides; pass at least one SpatialData or zarr path.")
    tables = [_table(_open(item, tables_only=True), table_key) for item in slides]  # checks every item first
    one_slide = partial(slide_embedding, table_key=table_key, patches_key=patches_key, key=key, **options)
    results = map_slides(one_slide, slides, client=client)
    tables = [t.copy() if copy else t for t in tables]
    for table, outputs in zip(tables, results):
        commit_outputs(table, **outputs)
    logger.info("embed: %d slides, %d patches → obsm[%r]", len(tables), sum(t.n_obs for t in tables), key)
    return tables
