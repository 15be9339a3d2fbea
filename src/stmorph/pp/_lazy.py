"""Patches stored lazily, read a batch at a time (:func:`patch_reader`).

Two kinds of lazy record exist under ``uns["stmorph"]["patches"][key]`` (``store="lazy"``): windows
of an image (:func:`~stmorph.pp.extract_patches`; :class:`PatchReader`) and rows of a patch file
(:func:`~stmorph.datasets.read_hest`; :class:`FilePatchReader`). Both readers have ``read(indices)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import tool_record
from .._tables import is_spatialdata
from .._validation import InputTypeError, InvalidParameterError, StmorphKeyError, checks_keys
from ._sources import one_key, pyramid_levels, visium_source
from ._windows import as_yxc, check_inside, check_stored, read_patches

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData


SAMPLE_WINDOWS = 8
"""Windows hashed at a lazy extraction (``sample_hash``) and checked when the patches are read back."""


@dataclass
class PatchReader:
    """Reads the patches of a table extracted with ``store="lazy"``, a batch at a time.

    Attributes
    ----------
    image
        ``(H, W, C)`` uint8 array-like (numpy or dask) of the level the windows refer to.
    centres
        ``(n, 2)`` window centres in pixels of ``image``.
    window_px
        Window side in source pixels.
    patch_size
        Patch side in output pixels.
    """

    image: Any
    centres: np.ndarray
    window_px: float
    patch_size: int

    def __len__(self) -> int:
        return len(self.centres)

    def sample_indices(self) -> np.ndarray:
        """Indices of the few windows, spread over the spots, by which the image is recognised."""
        from .._fingerprint import sample_indices

        return sample_indices(len(self), SAMPLE_WINDOWS)

    def sample_hash(self, centres: np.ndarray | None = None) -> str:
        """Content hash of the windows at ``centres`` (default: those of :meth:`sample_indices`)."""
        from .._fingerprint import hash_arrays

        centres = self.centres[self.sample_indices()] if centres is None else np.asarray(centres, np.float64)
        return hash_arrays(self.at(centres))

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 ``(len(indices), patch_size, patch_size, 3)`` patches of the spots ``indices``."""
        return self.at(self.centres[np.asarray(indices)])

    def at(self, centres: np.ndarray) -> np.ndarray:
        """uint8 ``(len(centres), patch_size, patch_size, 3)`` patches of the windows around ``centres``."""
        batch = max(len(centres), 1)
        return read_patches(self.image, centres, self.window_px, self.patch_size, batch_size=batch)[0]


@dataclass
class FilePatchReader:
    """Reads patches kept in an HDF5 file (HEST-1k's ``patches/<id>.h5``, dataset ``img``), a batch at a time.

    Attributes
    ----------
    path
        The HDF5 file.
    rows
        ``(n,)`` row of each spot's patch in the file.
    dataset
        Name of the ``(N, P, P, 3)`` uint8 dataset.

    Examples
    --------
    >>> import h5py, numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "patches.h5")
    >>> with h5py.File(path, "w") as fh:
    ...     fh["img"] = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1).repeat(3, axis=-1)
    >>> FilePatchReader(path, rows=np.array([3, 1])).read([1, 0])[:, 0, 0, 0].tolist()
    [1, 3]
    """

    path: str
    rows: np.ndarray
    dataset: str = "img"

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 ``(len(indices), P, P, 3)`` patches of the spots ``indices``."""
        from .._hdf5 import read_rows

        return read_rows(self.path, self.dataset, self.rows[np.asarray(indices)])


def _file_reader(adata: AnnData, params: dict[str, Any]) -> FilePatchReader:
    from pathlib import Path

    if not Path(params["path"]).is_file():
        raise FileNotFoundError(
            f"the patches of this table are read from {params['path']}, which no longer exists; "
            "read the sample again (`st.datasets.read_hest(root, sample_id, store='lazy')`)."
        )
    return FilePatchReader(params["path"], np.asarray(adata.obsm[params["rows_key"]], dtype=np.int64).reshape(-1))


def sample_record(reader: PatchReader, obs_names: Sequence[str]) -> dict[str, Any]:
    """What a lazy extraction records to recognise its image: a few windows' spots, centres and pixel hash."""
    sample = reader.sample_indices()
    return {
        "sample_obs": [str(obs_names[i]) for i in sample],
        "sample_centres": reader.centres[sample],
        "sample_hash": reader.sample_hash(),
    }


def _same_sample(reader: PatchReader, params: dict[str, Any], obs_names: pd.Index) -> bool:
    """True when the windows recorded at extraction hold the same pixels, and their spots the same centres.

    A subset of the table (``adata[mask]``) is checked against the same windows, read at their
    recorded centres; extractions recorded before ``sample_centres`` existed hash the windows of
    :meth:`PatchReader.sample_indices`.
    """
    if "sample_centres" not in params:
        return reader.sample_hash() == params["sample_hash"]
    recorded = np.asarray(params["sample_centres"], np.float64).reshape(-1, 2)
    rows = obs_names.get_indexer(list(params["sample_obs"]))
    present = rows >= 0
    moved = not np.array_equal(reader.centres[rows[present]], recorded[present])
    return not moved and reader.sample_hash(recorded) == params["sample_hash"]


def lazy_patch_params(adata: AnnData, key: str = "patches") -> dict[str, Any] | None:
    """Parameters of a ``store="lazy"`` extraction under ``key``, or ``None`` when there is none."""
    params = tool_record(adata, "patches", key)
    return params if params.get("store") == "lazy" else None


def _lazy_image(adata: AnnData, params: dict[str, Any], image: Any) -> Any:
    from anndata import AnnData

    source = params["source"]
    if source == "spatialdata":
        if image is None and "zarr_path" in params:
            from spatialdata import read_zarr

            image = read_zarr(params["zarr_path"], selection=("images",))
        if not is_spatialdata(image):
            raise InputTypeError(
                "these patches were extracted lazily from a SpatialData object that is not stored in a zarr store; "
                "pass it again as `image=`."
            )
        key = one_key(image.images.keys(), params["image_key"], "image element", "image_key")
        return pyramid_levels(image.images[key])[int(params["level"])]
    if source == "visium":
        visium = adata if image is None else image
        if not isinstance(visium, AnnData):
            raise InputTypeError("for patches from a Visium AnnData pass `image=` that AnnData (or nothing).")
        _, src = visium_source(visium, params["library_id"], params["source_mpp"])
        if src.info.get("image") != params.get("image"):
            raise InvalidParameterError(
                f"the patches were extracted from the {params.get('image')!r} image but now the "
                f"{src.info.get('image')!r} image is found; extract them again."
            )
        return src.image
    if image is None or is_spatialdata(image) or isinstance(image, AnnData):
        raise InputTypeError("these patches were extracted lazily from an image array; pass that array as `image=`.")
    return image


@checks_keys("key")
def patch_reader(adata: AnnData, key: str = "patches", image: Any = None) -> PatchReader | FilePatchReader:
    """A reader of the patches stored lazily under ``key``: :class:`PatchReader` or :class:`FilePatchReader`.

    A :class:`PatchReader` for patches extracted from ``adata`` with ``store="lazy"``; a
    :class:`FilePatchReader` for a HEST-1k sample read with
    ``st.datasets.read_hest(..., store="lazy")`` (its patch file, recorded as ``path``).

    Parameters
    ----------
    adata
        Table written by :func:`~stmorph.pp.extract_patches` with ``store="lazy"`` and ``key_added=key``.
    key
        ``key_added`` of that extraction.
    image
        For an extraction, the source: the same SpatialData object (e.g. re-opened with :func:`spatialdata.read_zarr`),
        the image array of an ``(image, coordinates)`` extraction, or nothing for a Visium AnnData
        (its images are found again in ``uns["spatial"]``) or for a SpatialData read from a zarr
        store (the store recorded at extraction, ``zarr_path``, is opened again).

    Raises
    ------
    StmorphKeyError
        No lazy extraction under ``key``.
    FileNotFoundError
        The HEST patch file is no longer where it was read.
    OutOfImageError
        The image given does not hold the recorded windows (another image or resolution).
    InvalidParameterError
        The image given is another image of the same size: the pixels of a few sample windows
        differ from those hashed at extraction (``sample_hash``).

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate(50, 10)
    >>> st.pp.extract_patches(sdata, store="lazy", progress=False)
    >>> table = sdata.tables["table"]
    >>> patch_reader(table, image=sdata).read([0, 1]).shape
    (2, 224, 224, 3)
    """
    params = lazy_patch_params(adata, key)
    if params is None:
        raise StmorphKeyError(
            f"adata.uns['stmorph']['patches'][{key!r}] from a store='lazy' extraction not found; run "
            f"`st.pp.extract_patches(..., store='lazy', key_added={key!r})` first."
        )
    if "rows_key" in params:
        return _file_reader(adata, params)
    centres = np.asarray(adata.obsm[params["centres_key"]], dtype=np.float64)
    source = _lazy_image(adata, params, image)
    array = as_yxc(source)
    check_inside(centres, array.shape, adata.obs_names)
    check_stored(source, centres, float(params["window_px"]), int(params["patch_size"]), adata.obs_names)
    reader = PatchReader(array, centres, float(params["window_px"]), int(params["patch_size"]))
    if "sample_hash" in params and not _same_sample(reader, params, adata.obs_names):
        raise InvalidParameterError(
            f"the image given is not the one the patches of uns['stmorph']['patches'][{key!r}] were extracted "
            f"from: {SAMPLE_WINDOWS} sample windows hold other pixels (another image, or edited window centres). "
            "Pass the same image, or extract the patches again."
        )
    return reader
