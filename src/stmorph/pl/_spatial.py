"""Measured and predicted expression side by side on the H&E image (built on :func:`scanpy.pl.spatial`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import dataset_info
from .._keys import Key
from .._tables import is_spatialdata, table_of
from .._validation import (
    check_bool,
    check_choice,
    check_int,
    check_mapping,
    check_range,
    checks_keys,
    get_coordinates,
    get_genes,
    get_matrix,
)
from ..errors import InvalidParameterError, StmorphKeyError
from ..pp import he_placement, is_xenium
from . import _utils

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

MAX_IMAGE_SIDE = 20000
DEFAULT_IMAGE_KEY = "he"
"""Largest ``max_image_side`` in pixels (the background image is held in memory)."""


def _image_array(element: Any) -> Any:
    """Full-resolution ``(c, y, x)`` DataArray of a SpatialData image (the finest level of a pyramid)."""
    if hasattr(element, "children") and "scale0" in element.children:
        return next(iter(element["scale0"].ds.data_vars.values()))
    return element


def _reduce(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Block-average a ``(y, x, 3)`` image by an integer factor to longest side ≤ ``max_side``; returns 1/factor."""
    from PIL import Image

    step = max(1, int(np.ceil(max(rgb.shape[:2]) / max_side)))
    if rgb.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(rgb.dtype, np.floating) and rgb.max() <= 1.0 else 1.0
        rgb = np.clip(np.rint(rgb * scale), 0, 255).astype(np.uint8)
    small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).reduce(step)) if step > 1 else rgb
    return small, 1.0 / step


def _downscaled_image(element: Any, max_side: int) -> tuple[np.ndarray, float]:
    """The SpatialData image as a ``(y, x, 3)`` uint8 array with longest side ≤ ``max_side``, and its scale."""
    image = _image_array(element)
    return _reduce(np.asarray(image.transpose("y", "x", "c").values), max_side)


def _spot_diameter(sdata: SpatialData, table: AnnData, coords: np.ndarray) -> float:
    """Spot diameter in full-resolution pixels: the annotated shapes' radius, else half the spot pitch."""
    from scipy.spatial import cKDTree

    region = table.uns.get("spatialdata_attrs", {}).get("region")
    region = region[0] if isinstance(region, list | tuple | np.ndarray) and len(region) else region
    shapes = sdata.shapes.get(region) if isinstance(region, str) else None
    if shapes is not None and "radius" in shapes.columns:
        return 2.0 * float(np.median(shapes["radius"]))
    dist, _ = cKDTree(coords).query(coords, k=2)
    return 0.5 * float(np.median(dist[:, 1]))


def visium_uns(
    sdata: SpatialData,
    table: AnnData,
    image_key: str,
    library_id: str,
    max_side: int,
    spatial_key: str = Key.obsm.spatial,
) -> dict[str, Any]:
    """A Visium-style ``uns["spatial"]`` for ``scanpy.pl.spatial`` built from a SpatialData image element."""
    if image_key not in sdata.images:
        raise StmorphKeyError(
            f"sdata.images[{image_key!r}] not found; available: {list(sdata.images.keys())}. Pass `image_key=`."
        )
    image, scale = _downscaled_image(sdata.images[image_key], max_side)
    coords = get_coordinates(table, spatial_key, "st.pl.spatial")
    return {
        library_id: {
            "images": {"hires": image},
            "scalefactors": {
                "tissue_hires_scalef": scale,
                "spot_diameter_fullres": _spot_diameter(sdata, table, coords),
            },
        }
    }


def _library_id(adata: AnnData, library_id: str | None) -> str:
    libraries = list(check_mapping(adata.uns[Key.uns.spatial], "adata.uns['spatial']").keys())
    if library_id is None:
        if len(libraries) != 1:
            raise InvalidParameterError(
                f"adata.uns['spatial'] holds {len(libraries)} libraries {libraries}; pass `library_id=` to pick one."
            )
        return libraries[0]
    if library_id not in libraries:
        raise StmorphKeyError(f"library_id={library_id!r} not in adata.uns['spatial']; available: {libraries}.")
    return library_id


def _table_and_image(
    data: AnnData | SpatialData,
    *,
    table_key: str | None,
    image_key: str,
    library_id: str | None,
    max_side: int,
    spatial_key: str,
) -> tuple[AnnData, dict[str, Any], str, np.ndarray]:
    """The expression table, a ``uns["spatial"]``-style image record, its library id and the centres in its pixels."""
    if is_xenium(data):
        return _xenium_table_and_image(data, table_key, image_key, library_id, max_side)
    if is_spatialdata(data):
        table = table_of(data, table_key, name="st.pl.spatial")
        library_id = library_id or str(dataset_info(table).get("section", image_key))
        record = visium_uns(data, table, image_key, library_id, max_side, spatial_key)
        return table, record, library_id, get_coordinates(table, spatial_key, "st.pl.spatial")
    if Key.uns.spatial not in data.uns:
        raise StmorphKeyError(
            "adata.uns['spatial'] not found: st.pl.spatial needs the H&E image. Pass the SpatialData object, or a "
            "Visium-style AnnData such as `st.datasets.her2st_adata(section)` / `scanpy.read_visium(...)`."
        )
    library_id = _library_id(data, library_id)
    record = _small_visium_record(data.uns[Key.uns.spatial][library_id], library_id, max_side)
    return data, {library_id: record}, library_id, get_coordinates(data, spatial_key, "st.pl.spatial")


def _xenium_table_and_image(
    sdata: SpatialData, table_key: str | None, image_key: str, library_id: str | None, max_side: int
) -> tuple[AnnData, dict[str, Any], str, np.ndarray]:
    """A Xenium table (cells or pseudo-spots, centres in µm) placed on its aligned H&E by the H&E's alignment."""
    table, image_key, centres, diameter = he_placement(
        sdata, table_key, None if image_key == DEFAULT_IMAGE_KEY and image_key not in sdata.images else image_key
    )
    image, scale = _downscaled_image(sdata.images[image_key], max_side)
    library_id = library_id or image_key
    factors = {"tissue_hires_scalef": scale, "spot_diameter_fullres": diameter}
    return table, {library_id: {"images": {"hires": image}, "scalefactors": factors}}, library_id, centres


def _small_visium_record(record: dict[str, Any], library_id: str, max_side: int) -> dict[str, Any]:
    """A Visium library record reduced to its best image (``hires``, else ``lowres``), at most ``max_side``."""
    where = f"adata.uns['spatial'][{library_id!r}]"
    record = check_mapping(record, where)
    images = check_mapping(record.get("images", {}), f"{where}['images']")
    factors = check_mapping(record.get("scalefactors", {}), f"{where}['scalefactors']")
    res = next((r for r in ("hires", "lowres") if r in images and f"tissue_{r}_scalef" in factors), None)
    if res is None:
        raise StmorphKeyError(
            f"adata.uns['spatial'][{library_id!r}] has no 'hires' or 'lowres' image with its scale factor; "
            f"found images {list(images)} and scalefactors {list(factors)}."
        )
    image, scale = _reduce(np.asarray(images[res]), max_side)
    return {
        "images": {"hires": image},
        "scalefactors": {**factors, "tissue_hires_scalef": factors[f"tissue_{res}_scalef"] * scale},
    }


def _panel_values(table: AnnData, layers: Sequence[str], idx: np.ndarray) -> dict[str, np.ndarray]:
    """``layer → (n_obs, n_genes)`` values of the genes ``idx``; ``"measured"`` is what the predictions learnt."""
    predicted = [layer for layer in layers if layer != _utils.MEASURED]
    values = {}
    for layer in layers:
        if layer.endswith(_utils.WIDTH):
            bounds = Key.layers.interval(layer.removesuffix(_utils.WIDTH))
            lower, upper = (get_matrix(table, bound, finite=False) for bound in bounds)
            values[layer] = _utils.dense_columns(upper, idx) - _utils.dense_columns(lower, idx)
            continue
        source = _utils.measured_layer(table, predicted) if layer == _utils.MEASURED else layer
        if source is not None and source not in table.layers:
            produced_by = "st.tl.predict" if layer.startswith(_utils.PREDICTED_PREFIX) else "the step that stores it"
            raise StmorphKeyError(
                f"adata.layers[{layer!r}] not found; available: {list(table.layers.keys())}. Run `{produced_by}`."
            )
        values[layer] = _utils.dense_columns(get_matrix(table, source, finite=False), idx)
    return values


def _with_widths(table: AnnData, layers: Sequence[str]) -> list[str]:
    """``layers`` with the interval-width panel after every prediction that has interval bounds."""
    out = []
    for layer in layers:
        out.append(layer)
        if all(bound in table.layers for bound in Key.layers.interval(layer)):
            out.append(layer + _utils.WIDTH)
    if len(out) == len(layers):
        raise StmorphKeyError(
            f"none of the layers {list(layers)} has interval bounds (layers[key + '_lower'], layers[key + '_upper']); "
            "run st.tl.predict(..., interval=0.9) first."
        )
    return out


def _check_predicted(values: dict[str, np.ndarray], genes: Sequence[str]) -> None:
    for layer, vals in values.items():
        empty = [g for g, col in zip(genes, vals.T) if not np.isfinite(col).any()]
        if empty:
            raise InvalidParameterError(
                f"adata.layers[{layer!r}] holds no value for gene(s) {empty}; they were not predicted. "
                f"Predict them with `st.tl.predict(..., genes=[...])` or pick other genes."
            )


def obs_columns(table: AnnData, names: Sequence[str]) -> list[str]:
    """The ``names`` drawn from ``obs`` (a column that is not a gene); a non-numeric one is refused."""
    import pandas as pd

    columns = [name for name in names if name not in table.var_names and name in table.obs.columns]
    for name in columns:
        dtype = table.obs[name].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise InvalidParameterError(
                f"adata.obs[{name!r}] is {dtype}; st.pl.spatial draws numeric obs columns (e.g. 'tissue_fraction'). "
                "Draw categories with `scanpy.pl.spatial`."
            )
    return columns


def _default_layers(table: AnnData, genes: Sequence[str]) -> list[str]:
    """Measured and every predicted layer; only the measured panel when all names are obs columns."""
    return [_utils.MEASURED, *_utils.require_predicted_layers(table)] if genes else [_utils.MEASURED]


def percentile_limits(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """The ``percentiles`` of the finite ``values``: a colour scale a few extreme spots do not wash out."""
    low, high = np.percentile(values[np.isfinite(values)], percentiles)
    return float(low), float(high)


SCALES = ("panel", "shared")
SCALE_NOTE = {"panel": "own scale", "shared": "shared scale"}
"""What each panel's title says about its colour scale."""


def colour_limits(
    values: dict[str, np.ndarray], j: int, scale: str, percentiles: tuple[float, float]
) -> dict[str, tuple[float, float]]:
    """Colour limits of gene ``j`` in each panel: percentiles of the panel's own finite values (``"panel"``),
    or of the gene's values pooled over all its panels (``"shared"``)."""
    limits = {layer: percentile_limits(vals[:, j], percentiles) for layer, vals in values.items()}
    if scale == "panel":
        return limits
    shared = [layer for layer in values if not layer.endswith(_utils.WIDTH)]  # a width is on a scale of its own
    pooled = percentile_limits(np.concatenate([values[layer][:, j] for layer in shared]), percentiles)
    return {**limits, **dict.fromkeys(shared, pooled)}


def _title(table: AnnData, gene: str, layer: str, scale: str) -> str:
    title = f"{gene} · {_utils.label(layer)}\n{SCALE_NOTE[scale]}"
    column = f"pearson_{layer.removeprefix(_utils.PREDICTED_PREFIX)}"
    if layer.startswith(_utils.PREDICTED_PREFIX) and column in table.var.columns:
        r = table.var.loc[gene, column]
        if np.isfinite(r):
            title += f", r = {r:.2f}"
    return title


def _draw_panel(view: AnnData, gene: str, *, layer: str | None, library_id: str, **kwargs: Any) -> None:
    import scanpy as sc

    with warnings.catch_warnings():
        # scanpy ≥1.11 points users of sc.pl.spatial to squidpy; the call is still supported, and the
        # warning would only confuse users of st.pl.spatial, who did not call scanpy themselves.
        warnings.filterwarnings("ignore", message=".*squidpy.pl.spatial_scatter.*", category=FutureWarning)
        sc.pl.spatial(
            view, color=gene, layer=layer, use_raw=False, library_id=library_id, img_key="hires", show=False, **kwargs
        )


def _draw_gene(
    view: AnnData,
    table: AnnData,
    gene: str,
    cells: dict[str, Any],
    scale: str,
    percentiles: tuple[float, float],
    style: dict[str, Any],
) -> None:
    """One panel per layer of ``gene``: ``cells`` maps each layer to its axes."""
    j = list(view.var_names).index(gene)
    panels = {layer: (view.X if layer == _utils.MEASURED else view.layers[layer]) for layer in cells}
    limits = colour_limits(panels, j, scale, percentiles)
    for layer, ax in cells.items():
        _draw_panel(
            view,
            gene,
            layer=None if layer == _utils.MEASURED else layer,
            ax=ax,
            vmin=limits[layer][0],
            vmax=limits[layer][1],
            title=_title(table, gene, layer, "panel" if layer.endswith(_utils.WIDTH) else scale),
            **style,
        )


def _draw_obs(view: AnnData, column: str, cells: list[Any], limits: tuple[float, float], style: dict[str, Any]) -> None:
    """The obs column in the row's first panel, on its own scale; the row's other cells are left out."""
    _draw_panel(
        view, column, layer=None, ax=cells[0], vmin=limits[0], vmax=limits[1], title=f"{column} · obs\nown scale",
        **style,
    )  # fmt: skip
    for ax in cells[1:]:
        ax.remove()


@_utils.shared_docs
@checks_keys("library_id", "table_key", "image_key", "spatial_key", many=("genes", "layers"))
def spatial(
    data: AnnData | SpatialData,
    genes: str | Sequence[str],
    *,
    layers: Sequence[str] | None = None,
    scale: str = "panel",
    percentiles: tuple[float, float] = (1.0, 99.0),
    interval_width: bool = False,
    library_id: str | None = None,
    table_key: str | None = None,
    image_key: str = DEFAULT_IMAGE_KEY,
    spatial_key: str = Key.obsm.spatial,
    max_image_side: int = 1000,
    cmap: str = "viridis",
    size: float = 1.0,
    panel_size: tuple[float, float] = (3.6, 3.6),
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
    **kwargs: Any,
) -> Figure | None:
    """Measured and predicted expression of each gene side by side on the H&E image.

    One row per gene, one panel per layer, each drawn by :func:`scanpy.pl.spatial`. By default
    each panel has its own colour scale (the 1st to 99th percentile of its values): retrieval
    methods average many reference spots, so their predictions are shrunk toward the mean and
    would look flat on the measured panel's scale although they follow its pattern.
    ``scale="shared"`` puts a gene's panels on one scale (pooled over its panels) to compare
    magnitudes (BLEEP, Fig. 3). Every panel's title says which scale it uses.

    Parameters
    ----------
    data
        A Visium-style :class:`~anndata.AnnData` with ``uns["spatial"]`` (e.g.
        :func:`stmorph.datasets.her2st_adata`), or a :class:`~spatialdata.SpatialData` whose table
        ``tables[table_key]`` has ``obsm[spatial_key]`` in pixels of ``images[image_key]``, or a
        Xenium SpatialData (``spatialdata_io.xenium``; cells, or the pseudo-spots of
        :func:`stmorph.pp.pseudo_spots` with ``table_key=``): its centres in µm are placed on the
        aligned H&E by the H&E's alignment, cells drawn 10 µm wide, pseudo-spots their side. The
        object is never modified.
    genes
        Gene name(s) in ``var_names``, and/or numeric ``obs`` columns (e.g. ``"tissue_fraction"`` from
        :func:`stmorph.pp.extract_patches`), each drawn in one panel of its own row on its own
        ``percentiles`` scale, as scanpy draws an obs column.
    layers
        Panels per gene: ``"measured"`` (the expression the predictions were trained on — the
        ``layer`` recorded by :func:`stmorph.tl.predict`, else ``X``) and/or names in ``layers``.
        Default: ``"measured"`` followed by every ``layers["predicted_*"]`` (only ``"measured"``
        when every name is an obs column, so no prediction is needed).
    scale
        ``"panel"``: each panel spans the ``percentiles`` of its own values (the pattern of every
        map is visible); ``"shared"``: a gene's panels share the ``percentiles`` of its values
        pooled over them (magnitudes are comparable).
    percentiles
        The colour scale runs between these percentiles, so a few extreme spots do not wash out
        the rest; ``(0, 100)`` for the full range.
    interval_width
        After each prediction with intervals (``st.tl.predict(..., interval=0.9)``), a panel of the
        interval's width per spot (upper - lower bound, on its own scale): where the prediction is
        sure (narrow) and where it is not.
    library_id
        Library in ``uns["spatial"]`` (AnnData; needed when there are several) or the name
        shown for a SpatialData image (default: the table's section).
    table_key, image_key
        Table and image element of a SpatialData (``table_key=None``: its only table; a Xenium
        SpatialData without an ``image_key`` image: its aligned H&E).
    spatial_key
        Key in ``obsm`` of the spot centres in full-resolution pixels (as squidpy's ``spatial_key``).
    max_image_side
        The image is block-averaged down to at most this longest side for drawing (the full-resolution
        SpatialData image, or the Visium ``hires``/``lowres`` image).
    cmap
        Colour map of the spots.
    size
        Spot size factor passed to :func:`scanpy.pl.spatial`.
    {panel_size}
    **kwargs
        Passed to :func:`scanpy.pl.spatial` (e.g. ``alpha_img``, ``crop_coord``).
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate(100, 20)
    >>> st.pp.prepare_expression(sdata.tables["table"])
    >>> st.tl.predict(sdata, method="ridge", use_rep="latent", split=0.2)
    >>> fig = st.pl.spatial(sdata, ["planted0", "planted1"], show=False)  # measured | predicted_ridge
    >>> fig = st.pl.spatial(sdata, "planted0", scale="shared", show=False)
    >>> st.pp.extract_patches(sdata, patch_size=32, progress=False)
    >>> fig = st.pl.spatial(sdata, "tissue_fraction", show=False)
    >>> len(fig.axes)
    2
    """
    import anndata as ad

    _utils.check_plot_options(show=show, save=save, panel_size=panel_size)
    check_int(max_image_side, "max_image_side", low=1, high=MAX_IMAGE_SIDE)
    check_range(size, "size", low=0)
    check_choice(scale, SCALES, "scale")
    names = [genes] if isinstance(genes, str) else list(genes)
    check_range(percentiles[0], "percentiles[0]", 0, 100, inclusive=True)
    check_range(percentiles[1], "percentiles[1]", percentiles[0], 100, inclusive=True)
    table, spatial_uns, library_id, centres = _table_and_image(
        data, table_key=table_key, image_key=image_key, library_id=library_id, max_side=max_image_side,
        spatial_key=spatial_key,
    )  # fmt: skip
    columns = obs_columns(table, names)
    genes = [name for name in names if name not in columns]
    layers = list(layers) if layers is not None else _default_layers(table, genes)
    if check_bool(interval_width, "interval_width"):
        layers = _with_widths(table, layers)
    if not layers:
        raise InvalidParameterError("layers is empty; pass at least one of 'measured' or a layer name.")
    values = _panel_values(table, layers, get_genes(table, genes)) if genes else {}
    _check_predicted({k: v for k, v in values.items() if k != _utils.MEASURED}, genes)
    # A small private AnnData (the chosen genes and obs columns only, sharing the image): scanpy draws it, the
    # user's object is never touched.
    view = ad.AnnData(
        X=values.pop(_utils.MEASURED) if _utils.MEASURED in values else np.zeros((table.n_obs, len(genes))),
        layers=values,
        obs={name: np.asarray(table.obs[name], dtype=np.float64) for name in columns},
        obsm={Key.obsm.spatial: centres},  # scanpy reads "spatial", in pixels of the full-resolution image
        uns={Key.uns.spatial: spatial_uns},
    )
    view.var_names = genes
    view.obs_names = table.obs_names
    fig, axes = _utils.subplots(len(names) * len(layers), ncols=len(layers), panel_size=panel_size)
    style = {"library_id": library_id, "cmap": cmap, "size": size, "frameon": False, **kwargs}
    for row, name in enumerate(names):
        cells = axes[row * len(layers) : (row + 1) * len(layers)]
        if name in columns:
            _draw_obs(view, name, cells, percentile_limits(view.obs[name].to_numpy(), percentiles), style)
        else:
            _draw_gene(view, table, name, dict(zip(layers, cells)), scale, percentiles, style)
    return _utils.savefig_or_show(fig, "spatial", show=show, save=save)
