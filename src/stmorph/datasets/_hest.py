"""HEST-1k samples (Jaume et al., NeurIPS 2024): expression, 224 px patches at 0.5 µm/px and metadata.

A HEST-1k download (huggingface.co/datasets/MahmoodLab/hest) holds, per sample id, the files read here
(layout as written by ``hest.HESTData.save`` / ``dump_patches`` and read by ``hest.iter_hest``,
github.com/mahmoodlab/HEST):

- ``st/<id>.h5ad``: spots × genes, ``obsm["spatial"]`` = spot centres in full-resolution WSI pixels;
- ``patches/<id>.h5``: datasets ``img`` (uint8 ``(n, 224, 224, 3)``, 0.5 µm/px), ``barcode``
  (``(n, 1)`` bytes, the spot of each patch) and ``coords`` (``(n, 2)`` patch corner in WSI pixels).
  Only spots inside the slide (and on tissue) have a patch, in HEST's own order;
- ``metadata/<id>.json``: ``pixel_size_um_estimated`` (µm/px of the WSI), ``tissue``, ``organ``,
  ``st_technology``, ...;
- optionally ``wsis/<id>.tif``, the pyramidal whole-slide image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._hdf5 import read_rows
from .._keys import Key
from .._logging import logger
from .._validation import InputTypeError, InvalidParameterError, ShapeMismatchError, check_choice, checks_keys

if TYPE_CHECKING:
    from anndata import AnnData

HEST_PATCH_MPP = 0.5
"""µm/px of the patches HEST-1k ships (224 px = 112 µm)."""
_MPP_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded")


def hest_files(root: str | os.PathLike, sample_id: str) -> dict[str, Path]:
    """Paths of one HEST-1k sample: ``st``, ``patches``, ``metadata`` and ``wsi`` (which may not exist)."""
    root = Path(root)
    return {
        "st": root / "st" / f"{sample_id}.h5ad",
        "patches": root / "patches" / f"{sample_id}.h5",
        "metadata": root / "metadata" / f"{sample_id}.json",
        "wsi": root / "wsis" / f"{sample_id}.tif",
    }


def _check_present(files: dict[str, Path], sample_id: str, patches: bool) -> None:
    needed = ["st", "metadata"] + (["patches"] if patches else [])
    missing = [files[k] for k in needed if not files[k].is_file()]
    if missing:
        raise FileNotFoundError(
            f"HEST sample {sample_id!r}: missing {', '.join(str(p) for p in missing)}. Download the sample from "
            "huggingface.co/datasets/MahmoodLab/hest (`huggingface_hub.snapshot_download('MahmoodLab/hest', "
            f"repo_type='dataset', local_dir=<root>, allow_patterns=['*{sample_id}[_.]**'])`)"
            + (", or pass patches=False to read the expression only." if files["patches"] in missing else ".")
        )


def _metadata(path: Path) -> tuple[dict[str, Any], float]:
    """The sample's metadata (h5ad-serialisable values only) and the WSI's µm/px."""
    with open(path) as fh:
        meta = json.load(fh)
    mpp = next((float(meta[k]) for k in _MPP_KEYS if isinstance(meta.get(k), int | float)), None)
    if mpp is None or not mpp > 0:
        raise InvalidParameterError(f"{path} gives no positive pixel size (keys {list(_MPP_KEYS)}).")
    return {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)}, mpp


def _decode(barcodes: np.ndarray) -> pd.Index:
    flat = np.asarray(barcodes).reshape(-1)
    return pd.Index([b.decode() if isinstance(b, bytes) else str(b) for b in flat])


def _patch_rows(barcodes: pd.Index, obs_names: pd.Index, path: Path) -> np.ndarray:
    """Row of ``patches/<id>.h5`` for each spot of the table, -1 where HEST cut no patch."""
    if barcodes.has_duplicates:
        raise ShapeMismatchError(f"{path}: barcodes occur more than once, e.g. {barcodes[barcodes.duplicated()][0]!r}.")
    rows = barcodes.get_indexer(obs_names)
    if not (rows >= 0).any():
        raise ShapeMismatchError(
            f"{path}: none of its {len(barcodes)} barcodes (e.g. {barcodes[0]!r}) is a spot of the expression table "
            f"(e.g. {obs_names[0]!r}); the two files do not belong together."
        )
    extra = len(barcodes) - int((rows >= 0).sum())
    if extra:
        logger.info("read_hest: %d patches belong to no spot of the table and are ignored", extra)
    return rows


def _patch_file(path: Path, obs_names: pd.Index) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of the table that have a patch (table order), their rows in the patch file, and the patch side."""
    import h5py

    with h5py.File(path, "r") as fh:
        for name in ("img", "barcode"):
            if name not in fh:
                raise ShapeMismatchError(f"{path} has no dataset {name!r} (found {sorted(fh)}); not a HEST patch file.")
        img = fh["img"]
        if img.ndim != 4 or img.shape[-1] != 3 or img.shape[1] != img.shape[2] or img.dtype != np.uint8:
            raise InputTypeError(f"{path}: 'img' must be uint8 (n, P, P, 3); found {img.dtype} {img.shape}.")
        barcodes = _decode(fh["barcode"][:])
        if len(barcodes) != len(img):
            raise ShapeMismatchError(f"{path}: {len(img)} patches but {len(barcodes)} barcodes.")
        size = int(img.shape[1])
    rows = _patch_rows(barcodes, obs_names, path)
    keep = np.flatnonzero(rows >= 0)
    return keep, rows[keep], size


def _patch_params(path: Path, store: str, size: int, mpp: float) -> dict[str, Any]:
    return {
        "source": "hest",
        "store": store,
        "path": str(path.resolve()),
        "target_mpp": HEST_PATCH_MPP,
        "patch_size": size,
        "source_mpp": mpp,
        "window_px": size * HEST_PATCH_MPP / mpp,
        "tile_um": size * HEST_PATCH_MPP,
    }


@checks_keys("sample_id", "key_added")
def read_hest(
    root: str | os.PathLike,
    sample_id: str,
    *,
    patches: bool = True,
    store: str = "memory",
    key_added: str = "patches",
) -> AnnData:
    """Read one HEST-1k sample as an AnnData ready for :func:`stmorph.tl.embed`.

    Parameters
    ----------
    root
        Folder of the HEST-1k download, holding ``st/``, ``patches/`` and ``metadata/``.
    sample_id
        Sample id, e.g. ``"TENX95"``.
    patches
        Read ``patches/<id>.h5`` into ``obsm[key_added]``. Spots without a HEST patch (outside the
        slide or off tissue) are dropped from the table and the patches are put in the table's
        order, matched on the barcodes. ``False`` reads the expression and metadata only.
    store
        ``"memory"`` reads the patches into ``obsm[key_added]``. ``"lazy"`` keeps them in the HDF5
        file and records each spot's row of it (``obsm[f"{key_added}_rows"]``):
        :func:`stmorph.tl.embed` then reads them batch by batch (see :func:`stmorph.pp.patch_reader`),
        so memory stays bounded by a batch; the file must stay where it was read (``path``).
    key_added
        ``obsm`` key of the patches and ``uns["stmorph"]["patches"]`` key of their parameters, as
        :func:`stmorph.pp.extract_patches` writes them.

    Returns
    -------
    The expression table of ``st/<id>.h5ad`` (its ``obs``, ``var``, ``obsm["spatial"]`` unchanged),
    with

    ``obsm[key_added]`` : uint8 ``(n_spots, 224, 224, 3)`` patches at 0.5 µm/px (``patches=True``,
    ``store="memory"``).
    ``obsm[f"{key_added}_rows"]`` : ``(n_spots, 1)`` row of each spot's patch in ``patches/<id>.h5``
    (``store="lazy"``).
    ``uns["stmorph"]["patches"][key_added]`` : ``source="hest"``, ``store``, ``target_mpp``,
    ``patch_size``, ``source_mpp``, ``window_px``, ``tile_um``, ``path`` (and ``rows_key``, lazy).
    ``uns["stmorph"]["dataset"]`` : ``name="hest"``, ``section`` (the sample id), ``mpp`` (µm/px of
    the WSI, ``pixel_size_um_estimated``) and ``metadata``: the sample's metadata (``tissue``,
    ``organ``, ...), plus ``wsi_path`` when ``wsis/<id>.tif`` exists.

    Raises
    ------
    FileNotFoundError
        ``st/<id>.h5ad``, ``metadata/<id>.json`` or (with ``patches=True``) ``patches/<id>.h5`` is
        missing; all are checked before anything is read.
    ShapeMismatchError
        The patch file's barcodes match no spot, occur twice, or do not match its patch count.
    InvalidParameterError
        The metadata gives no pixel size, or ``store`` is neither ``"memory"`` nor ``"lazy"``.

    Examples
    --------
    The HEST-1k files are a download (``huggingface_hub.snapshot_download("MahmoodLab/hest", ...)``),
    so these lines are not run by the test suite:

    >>> import stmorph as st
    >>> table = st.datasets.read_hest("hest_data", "TENX95")  # doctest: +SKIP
    >>> st.tl.embed(table)  # doctest: +SKIP
    >>> lazy = st.datasets.read_hest("hest_data", "TENX95", store="lazy")  # doctest: +SKIP
    >>> st.tl.embed(lazy)  # reads the patch file batch by batch  # doctest: +SKIP
    """
    import anndata as ad

    check_choice(store, ("memory", "lazy"), "store")
    files = hest_files(root, sample_id)
    _check_present(files, sample_id, patches)
    meta, mpp = _metadata(files["metadata"])
    adata = ad.read_h5ad(files["st"])
    if files["wsi"].is_file():
        meta["wsi_path"] = str(files["wsi"].resolve())
    stmorph_uns: dict[str, Any] = {"dataset": {"name": "hest", "section": sample_id, "mpp": mpp, "metadata": meta}}
    if patches:
        keep, rows, size = _patch_file(files["patches"], adata.obs_names)
        if len(keep) < adata.n_obs:
            logger.info(
                "read_hest: %d of %d spots have no HEST patch and are dropped", adata.n_obs - len(keep), adata.n_obs
            )
        adata = adata[keep].copy()
        params = _patch_params(files["patches"], store, size, mpp)
        if store == "memory":
            adata.obsm[key_added] = read_rows(files["patches"], "img", rows)
        else:
            params["rows_key"] = Key.obsm.patch_rows(key_added)
            adata.obsm[params["rows_key"]] = rows.reshape(-1, 1)
        stmorph_uns["patches"] = {key_added: params}
    adata.uns["stmorph"] = {**adata.uns.get("stmorph", {}), **stmorph_uns}
    return adata
