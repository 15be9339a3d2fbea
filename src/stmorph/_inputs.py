"""What a ``stmorph`` command line points at, read into a table with patches ready for ``st.tl.embed``.

Five kinds of input are recognised from the path alone (:func:`input_kind`), so every input of a
command is checked before any is read:

- a Visium HD Space Ranger folder (``binned_outputs/square_<NNN>um/``), read with
  :func:`spatialdata_io.visium_hd`;
- a Visium Space Ranger folder (``[<id>_]filtered_feature_bc_matrix.h5`` and ``spatial/``), read
  with :func:`spatialdata_io.visium`;
- a SpatialData ``.zarr`` store;
- a HEST-1k sample, given as its ``<root>/st/<id>.h5ad`` beside ``<root>/patches/<id>.h5``;
- an ``.h5ad``: with patches (``obsm["patches"]`` or a lazy extraction), or a Visium-style
  AnnData with its image in ``uns["spatial"]``.

Patches of SpatialData inputs are extracted lazily (read a batch at a time while embedding).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._keys import Key
from ._logging import logger
from .errors import DamagedFileError, InputTypeError, MissingPathError, StmorphKeyError

if TYPE_CHECKING:
    from anndata import AnnData

KINDS = ("visium_hd", "visium", "zarr", "hest", "h5ad")
_COUNTS = "filtered_feature_bc_matrix.h5"


@dataclass
class Slide:
    """One input slide: the table that gets the embeddings and where its patches are read from.

    Attributes
    ----------
    table
        The AnnData with ``obsm["patches"]`` or a lazy extraction record.
    image
        What :func:`stmorph.tl.embed` needs as ``image=`` (the SpatialData of a lazy extraction), or ``None``.
    """

    table: AnnData
    image: Any = None


def _hest_root(path: Path) -> tuple[Path, str] | None:
    """``(root, sample id)`` when ``path`` is ``<root>/st/<id>.h5ad`` of a HEST-1k download."""
    root, sample_id = path.parent.parent, path.stem
    if path.parent.name == "st" and (root / "patches" / f"{sample_id}.h5").is_file():
        return root, sample_id
    return None


def input_kind(path: str | os.PathLike) -> str:
    """The kind of input at ``path``, one of :data:`KINDS`.

    Raises
    ------
    MissingPathError
        Nothing is at ``path`` (a ``FileNotFoundError``).
    InputTypeError
        ``path`` is none of the recognised inputs (the message lists them).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "binned_outputs" / "square_016um").mkdir(parents=True)
    >>> input_kind(folder)
    'visium_hd'
    """
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"input {str(path)!r} does not exist.")
    if path.is_dir():
        if path.suffix == ".zarr" or (path / "zmetadata").is_file() or (path / "zarr.json").is_file():
            return "zarr"
        if any((path / "binned_outputs").glob("square_*um")):
            return "visium_hd"
        if (path / "spatial").is_dir() and any(path.glob(f"*{_COUNTS}")):
            return "visium"
    elif path.suffix == ".h5ad":
        return "hest" if _hest_root(path) else "h5ad"
    raise InputTypeError(
        f"input {str(path)!r} is none of: a Visium HD Space Ranger folder (binned_outputs/square_<NNN>um/), a Visium "
        f"Space Ranger folder ({_COUNTS} and spatial/), a SpatialData .zarr store, a HEST-1k sample "
        "(<root>/st/<id>.h5ad) or an .h5ad with patches or a Visium image."
    )


def _visium_dataset_id(folder: Path) -> str:
    """The library id spatialdata-io reads from ``<id>_filtered_feature_bc_matrix.h5``, else the folder name."""
    prefixed = [p.name[: -len(_COUNTS) - 1] for p in folder.glob(f"*_{_COUNTS}")]
    return prefixed[0] if prefixed else folder.name


def _read_spatialdata(path: Path, kind: str, bin_size: int | None, image: str | None) -> Any:
    if kind == "zarr":
        from spatialdata import read_zarr

        return read_zarr(path)
    import spatialdata_io

    if kind == "visium_hd":
        bins = {"bin_size": bin_size} if bin_size is not None else {}
        return spatialdata_io.visium_hd(path, load_segmentations_only=False, fullres_image_file=image, **bins)
    if image is None:
        logger.warning("%s: no --image (full-resolution H&E) given; patches are cut from the hires image", path)
    return spatialdata_io.visium(path, dataset_id=_visium_dataset_id(path), fullres_image_file=image)


def _has_patches(table: AnnData) -> bool:
    from .pp import lazy_patch_params

    return "patches" in table.obsm or lazy_patch_params(table) is not None


def read_h5ad(path: str | os.PathLike, option: str = "input") -> AnnData:
    """The AnnData of the ``.h5ad`` file ``path`` (given as ``option``); a missing or unreadable file is a named error.

    Raises
    ------
    MissingPathError
        Nothing is at ``path``.
    DamagedFileError
        ``path`` is not a readable ``.h5ad`` file (h5py's and anndata's errors, named).

    Examples
    --------
    >>> import tempfile, pathlib, anndata as ad, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "slide.h5ad"
    >>> ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(path)
    >>> read_h5ad(path).shape
    (3, 2)
    >>> _ = path.write_bytes(b"not hdf5")
    >>> read_h5ad(path, "--reference")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    stmorph.errors.DamagedFileError: --reference: '...slide.h5ad' is not a readable .h5ad file (...).
    """
    import anndata as ad

    from ._validation import check_path

    check_path(path, option, "file")
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as err:  # h5py / anndata errors of a damaged file
        raise DamagedFileError(
            f"{option}: {str(path)!r} is not a readable .h5ad file ({type(err).__name__}: {err})."
        ) from None


def _h5ad_table(path: Path) -> AnnData:
    """The table of an ``.h5ad`` input with patches: stored ones, else extracted from its ``uns["spatial"]`` image."""
    from . import pp

    table = read_h5ad(path)
    if _has_patches(table):
        return table
    if Key.uns.spatial in table.uns:
        pp.extract_patches(table, progress=False)
        return table
    raise StmorphKeyError(
        f"{path} has no patches (obsm['patches']) and no image (uns['spatial']); run st.pp.extract_patches first "
        "or point stmorph at the slide's Space Ranger folder or SpatialData store."
    )


def read_slide(
    path: str | os.PathLike, *, bin_size: int | None = None, image: str | os.PathLike | None = None
) -> Slide:
    """Read one input into a :class:`Slide` with patches ready for :func:`stmorph.tl.embed`.

    Parameters
    ----------
    path
        Any input :func:`input_kind` recognises.
    bin_size
        Visium HD bin size in µm (default: see :func:`stmorph.pp.extract_patches`).
    image
        Full-resolution H&E image of a Space Ranger folder (Space Ranger does not copy it there).

    Examples
    --------
    >>> import tempfile, pathlib, stmorph as st
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "slide.h5ad"
    >>> st.pp.extract_patches(st.datasets.simulate(50, 10), patch_size=16, copy=True).write_h5ad(path)
    >>> read_slide(path).table.obsm["patches"].shape
    (50, 16, 16, 3)
    """
    from . import pp
    from .datasets import read_hest

    path = Path(path)
    kind = input_kind(path)
    logger.info("reading %s (%s)", path, kind)
    if kind == "h5ad":
        return Slide(_h5ad_table(path))
    if kind == "hest":
        return Slide(read_hest(*_hest_root(path)))
    sdata = _read_spatialdata(path, kind, bin_size, None if image is None else str(image))
    table = pp.extract_patches(sdata, bin_size=bin_size, store="lazy", progress=False, copy=True)
    return Slide(table, sdata)
