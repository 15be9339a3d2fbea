"""HER2ST sections (Andersson et al., Nat Commun 2021): legacy Spatial Transcriptomics of HER2+ breast cancer."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._image import no_pixel_limit, read_rgb
from .._keys import Key
from .._logging import logger
from .._validation import check_path
from ..errors import DamagedFileError, InputTypeError, InvalidParameterError, MissingPathError, NonFiniteError
from ._paths import download, resolve_data_dir, verify_cached
from ._spatialdata import build_spatialdata

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

ARRAY_PITCH_UM = 200.0
"""Centre-to-centre distance of ST array spots (µm); one array coordinate unit."""
SPOT_DIAMETER_UM = 100.0
"""Diameter of a legacy ST spot (µm)."""

_BASE_URL = "https://github.com/almaan/her2st/raw/master/data"
_IMAGE_NAMES = {
    "C2": "5714_HE_BT_C2.jpg",
    "C3": "5714_HE_BT_D1.jpg",
    "C4": "5714_HE_BT_D2.jpg",
    "C5": "5714_HE_BT_E1.jpg",
    "C6": "5714_HE_BT_E2.jpg",
}


def _files(folder: Path, section: str) -> dict[str, Path]:
    return {
        "image": folder / f"{section}_HE.jpg",
        "counts": folder / f"{section}_counts.tsv.gz",
        "spots": folder / f"{section}_spots.tsv",
    }


def _urls(section: str) -> dict[str, str]:
    if section not in _IMAGE_NAMES:
        raise FileNotFoundError(
            f"HER2ST section {section!r} is not in the local data folder and stmorph only knows the download "
            f"address of sections {sorted(_IMAGE_NAMES)}; place {section}_HE.jpg, {section}_counts.tsv.gz and "
            f"{section}_spots.tsv in <data_dir>/her2st/."
        )
    return {
        "image": f"{_BASE_URL}/ST-imgs/{section[0]}/{section}/{_IMAGE_NAMES[section]}",
        "counts": f"{_BASE_URL}/ST-cnts/{section}.tsv.gz",
        "spots": f"{_BASE_URL}/ST-spotfiles/{section}_selection.tsv",
    }


_SECTION = re.compile(r"[A-Za-z0-9_]+")


def her2st_files(section: str, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the three files of a HER2ST section, downloading them into the cache if needed.

    Parameters
    ----------
    section
        Section name, e.g. ``"C2"``.
    data_dir
        Folder holding ``her2st/<section>_HE.jpg``, ``_counts.tsv.gz`` and ``_spots.tsv``. Defaults
        to ``$STMORPH_DATA_DIR``, else ``../shared/data`` beside the repository, else a user
        cache filled from the public source (github.com/almaan/her2st).

    Returns
    -------
    Mapping ``{"image", "counts", "spots"}`` to existing paths.

    Raises
    ------
    MissingPathError
        A file is missing from a given (non-cache) folder; the message names it (a :class:`FileNotFoundError`).
    InvalidParameterError
        ``section`` is not a section name.
    """
    if not isinstance(section, str) or _SECTION.fullmatch(section) is None:
        raise InvalidParameterError(
            f"section must be a HER2ST section name such as 'C2' (letters and digits); found {section!r}."
        )
    if data_dir is not None:
        check_path(data_dir, "data_dir", "dir")
    folder, is_cache = resolve_data_dir(data_dir)
    files = _files(folder / "her2st", section)
    missing = [p for p in files.values() if not p.exists()]
    if missing and not is_cache:
        raise MissingPathError(
            f"HER2ST section {section!r}: missing {', '.join(str(p) for p in missing)}. "
            f"Put the section's files there or set $STMORPH_DATA_DIR to the folder that holds her2st/."
        )
    if is_cache:
        urls = _urls(section) if missing else {}
        for kind, path in files.items():
            if path.exists():
                verify_cached(path)
            else:
                download(urls[kind], path)
    return files


def _read_tsv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv(path, sep="\\t")``; a truncated or foreign file raises :class:`DamagedFileError` naming it."""
    import zlib

    try:
        return pd.read_csv(path, sep="\t", **kwargs)
    except (EOFError, OSError, zlib.error, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DamagedFileError(
            f"{path} could not be read as a tab-separated table ({type(err).__name__}: {err}); the file is truncated "
            "or damaged. Delete it to download it again, or restore it."
        ) from None


def _read_counts(path: Path) -> pd.DataFrame:
    counts = _read_tsv(path, index_col=0)
    counts.index = counts.index.astype(str)
    _check_counts(counts, path)
    return counts


def _check_counts(counts: pd.DataFrame, path: Path) -> None:
    """Refuse missing (``NA``), non-numeric, negative or fractional counts, naming the first bad entry."""
    values = counts.to_numpy()
    if values.dtype.kind not in "iuf":
        raise InputTypeError(f"{path}: the counts must be numbers; found non-numeric entries (dtype {values.dtype}).")
    for problem, bad, error in (
        ("missing (NA)", np.isnan(values) if values.dtype.kind == "f" else None, NonFiniteError),
        ("negative", values < 0, InputTypeError),
        ("not a whole number", values != np.round(values), InputTypeError),
    ):
        if bad is not None and bad.any():
            row, col = np.argwhere(bad)[0]
            raise error(
                f"{path}: {int(bad.sum())} count(s) are {problem}, e.g. spot {counts.index[row]!r}, gene "
                f"{str(counts.columns[col])!r} ({float(values[row, col])}); counts must be non-negative integers. "
                "The file is damaged or not a HER2ST count table."
            )


def _read_spots(path: Path) -> pd.DataFrame:
    spots = _read_tsv(path)
    need = {"x", "y", "pixel_x", "pixel_y"}
    if not need <= set(spots.columns):
        raise ValueError(f"{path} must have columns {sorted(need)}; found {list(spots.columns)}")
    spots.index = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    return spots[~spots.index.duplicated()]


def _match(counts: pd.DataFrame, spots: pd.DataFrame, section: str) -> pd.Index:
    common = counts.index.intersection(spots.index, sort=False)
    if len(common) == 0 or len(common) < 0.5 * min(len(counts), len(spots)):
        raise ValueError(
            f"HER2ST section {section!r}: only {len(common)} of {len(counts)} count spots and {len(spots)} spot-table "
            "rows share an id '<x>x<y>'; the counts and spots files do not belong together."
        )
    if len(common) < len(counts) or len(common) < len(spots):
        logger.info(
            "%s: %d spots in both files (%d in counts, %d in the spot table)",
            section,
            len(common),
            len(counts),
            len(spots),
        )
    return common


def estimate_mpp(spots: pd.DataFrame) -> float:
    """Pixel size (µm) from the spot table: image pixels per ST array unit (200 µm).

    Fits ``pixel_x ~ new_x`` and ``pixel_y ~ new_y`` by least squares (the adjusted array
    coordinates when present, else ``x``/``y``) and averages the two slopes.
    """
    cx = "new_x" if "new_x" in spots else "x"
    cy = "new_y" if "new_y" in spots else "y"
    slopes = [
        abs(np.polyfit(spots[a].to_numpy(float), spots[p].to_numpy(float), 1)[0])
        for a, p in ((cx, "pixel_x"), (cy, "pixel_y"))
    ]
    return ARRAY_PITCH_UM / float(np.mean(slopes))


def _table(section: str, files: dict[str, Path]) -> tuple[AnnData, float]:
    import anndata as ad

    counts = _read_counts(files["counts"])
    spots = _read_spots(files["spots"])
    ids = _match(counts, spots, section)
    counts, spots = counts.loc[ids], spots.loc[ids]
    mpp = estimate_mpp(spots)
    obs = pd.DataFrame(
        {
            "array_x": spots["x"].to_numpy(int),
            "array_y": spots["y"].to_numpy(int),
            "in_tissue": spots["selected"].to_numpy(int) if "selected" in spots else 1,
            "section": pd.Categorical([section] * len(ids)),
        },
        index=pd.Index(ids, name=None),
    )
    var = pd.DataFrame(index=pd.Index(counts.columns.astype(str), name=None))
    adata = ad.AnnData(X=sparse.csr_matrix(counts.to_numpy(np.int32)), obs=obs, var=var)
    adata.var_names_make_unique()
    adata.obsm[Key.obsm.spatial] = spots[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    return adata, mpp


def her2st(section: str = "C2", data_dir: str | os.PathLike | None = None) -> SpatialData:
    """Load one HER2ST section as a :class:`~spatialdata.SpatialData`.

    Parameters
    ----------
    section
        Section name; ``"C2"``, ``"C3"``, ``"C4"`` and ``"C5"`` ship with this workplace's data, and
        any section whose three files are in the data folder loads.
    data_dir
        Folder that holds ``her2st/``; see :func:`her2st_files` for the default search order.

    Returns
    -------
    SpatialData with

    ``images["he"]``
        The H&E image, RGB uint8, dims ``(c, y, x)``; its ``"um"`` coordinate system records the
        pixel size (about 0.78 µm), estimated from the 200 µm array pitch.
    ``shapes["spots"]``
        Circles at the spot centres, radius 50 µm in image pixels.
    ``tables["table"]``
        Spots × genes raw integer counts (CSR), gene symbols as unique ``var_names``, spot ids
        ``"<x>x<y>"`` as ``obs_names``, ``obsm["spatial"]`` = centre in image pixels
        (x = column, y = row), ``obs["in_tissue"]``, and ``uns["stmorph"]["dataset"]`` (``name``, ``section``, ``mpp``).

    Raises
    ------
    FileNotFoundError
        A file of the section is missing (the path is named).
    ValueError
        The counts and spots files share too few spot ids (the count is given).
    NonFiniteError, InputTypeError
        A count is missing (``NA``), negative or fractional (the spot and gene are named).

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.her2st("C2")
    >>> sdata.tables["table"].n_obs
    187
    """
    files = her2st_files(section, data_dir)
    table, mpp = _table(section, files)
    table.uns["stmorph"] = {"dataset": {"name": "her2st", "section": section, "mpp": mpp}}
    image = read_rgb(files["image"])
    return build_spatialdata(image, table, mpp, spot_radius_px=SPOT_DIAMETER_UM / 2 / mpp)


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    from PIL import Image

    scale = min(1.0, max_side / max(image.shape[:2]))
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    with no_pixel_limit():
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return small, size[0] / image.shape[1]


def her2st_adata(section: str = "C2", data_dir: str | os.PathLike | None = None) -> AnnData:
    """Load one HER2ST section as a Visium-style :class:`~anndata.AnnData`.

    The same table as :func:`her2st`, with the image laid out in ``uns["spatial"][section]`` the
    way :func:`scanpy.read_visium` does, so :func:`scanpy.pl.spatial` draws it.

    Parameters
    ----------
    section
        Section name, e.g. ``"C2"``.
    data_dir
        Folder that holds ``her2st/``; see :func:`her2st_files`.

    Returns
    -------
    AnnData with ``obsm["spatial"]`` (full-resolution pixels) and ``uns["spatial"][section]``:
    ``images["hires"]`` (longest side 2000 px) and ``images["lowres"]`` (600 px), uint8;
    ``scalefactors`` with ``tissue_hires_scalef``, ``tissue_lowres_scalef``,
    ``spot_diameter_fullres`` (100 µm in full-resolution pixels) and ``microns_per_pixel``;
    ``metadata["source_image_path"]``, the full-resolution image file.

    Examples
    --------
    >>> import scanpy as sc, stmorph as st
    >>> adata = st.datasets.her2st_adata("C2")
    >>> axes = sc.pl.spatial(adata, color="ERBB2", library_id="C2", show=False)
    """
    files = her2st_files(section, data_dir)
    adata, mpp = _table(section, files)
    image = read_rgb(files["image"])
    hires, hires_scale = _downscale(image, 2000)
    lowres, lowres_scale = _downscale(image, 600)
    adata.uns[Key.uns.spatial] = {
        section: {
            "images": {"hires": hires, "lowres": lowres},
            "scalefactors": {
                "tissue_hires_scalef": hires_scale,
                "tissue_lowres_scalef": lowres_scale,
                "spot_diameter_fullres": SPOT_DIAMETER_UM / mpp,
                "microns_per_pixel": mpp,
            },
            "metadata": {"source_image_path": str(files["image"].resolve())},
        }
    }
    adata.uns["stmorph"] = {"dataset": {"name": "her2st", "section": section, "mpp": mpp}}
    return adata
