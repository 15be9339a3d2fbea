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
from .._keys import Key
from .._logging import warn_user
from .._tables import is_spatialdata
from .._validation import (
    InputTypeError,
    InvalidParameterError,
    StmorphKeyError,
    check_choice,
    checks_keys,
    format_keys,
    get_stored,
)
from ..errors import DamagedFileError
from ._sources import one_key, pyramid_levels, visium_source
from ._windows import MissingChunks, as_yxc, check_inside, read_patches

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData


SAMPLE_WINDOWS = 8
"""Windows hashed at a lazy extraction (``sample_hashes``) and checked when the patches are read back."""
ON_ERROR = ("raise", "skip")
"""What :func:`patch_reader` does with windows over chunks missing from the image's store (``on_error``)."""
_NO_CHUNK_MISSING = MissingChunks(np.zeros((0, 4), dtype=np.int64))


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
    missing
        Chunks missing from the image's zarr store: a window over one raises
        :class:`~stmorph.errors.DamagedFileError` instead of reading the store's fill value.
    names
        Spot names (``obs_names``), for the messages; default the positions.
    """

    image: Any
    centres: np.ndarray
    window_px: float
    patch_size: int
    missing: MissingChunks = _NO_CHUNK_MISSING
    names: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.centres)

    def sample_indices(self) -> np.ndarray:
        """Indices of the few windows, spread over the spots, by which the image is recognised."""
        from .._fingerprint import sample_indices

        return sample_indices(len(self), SAMPLE_WINDOWS)

    def sample_hashes(self, centres: np.ndarray | None = None) -> list[str]:
        """Content hash of each window at ``centres`` (default: those of :meth:`sample_indices`).

        A window that cannot be read (damaged image data) gets ``""``: it recognises nothing.
        """
        from .._fingerprint import hash_arrays

        centres = self.centres[self.sample_indices()] if centres is None else np.asarray(centres, np.float64)
        hashes = []
        for i, centre in enumerate(centres.reshape(-1, 2)):
            try:
                hashes.append(hash_arrays(self.at(centre[None], [f"sample window {i}"])))
            except DamagedFileError:
                hashes.append("")
        return hashes

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 ``(len(indices), patch_size, patch_size, 3)`` patches of the spots ``indices``.

        Raises
        ------
        DamagedFileError
            A window lies over a chunk missing from the image's store, or its data cannot be read.
        """
        indices = np.asarray(indices)
        names = indices if self.names is None else [self.names[i] for i in indices]
        return self.at(self.centres[indices], names)

    def at(self, centres: np.ndarray, names: Sequence[Any] | None = None) -> np.ndarray:
        """uint8 ``(len(centres), patch_size, patch_size, 3)`` patches of the windows around ``centres``."""
        names = range(len(centres)) if names is None else names
        self.missing.check(centres, self.window_px, self.patch_size, names)
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


_EXTRACT_LAZY = "st.pp.extract_patches(..., store='lazy')"
_FIELDS = {
    "rows": ("path", "rows_key"),
    "windows": ("source", "centres_key", "window_px", "patch_size"),
    "spatialdata": ("image_key", "level"),
    "visium": ("library_id", "source_mpp"),
}
"""Fields a lazy record needs: a patch file's (``rows``), every image extraction's (``windows``), and per ``source``."""


def _check_record(params: dict[str, Any], key: str) -> None:
    """Raise :class:`StmorphKeyError` naming the fields a lazy record lacks (it was edited, or written partly)."""
    if "rows_key" in params:
        needed = _FIELDS["rows"]
    else:
        needed = (*_FIELDS["windows"], *_FIELDS.get(params.get("source"), ()))
    missing = [f for f in needed if f not in params]
    if missing:
        raise StmorphKeyError(
            f"adata.uns['stmorph']['patches'][{key!r}] lacks {missing}: the record of the lazy extraction is "
            f"incomplete, so its patches cannot be found. Run `{_EXTRACT_LAZY}` (key_added={key!r}) again."
        )


def _file_reader(adata: AnnData, params: dict[str, Any]) -> FilePatchReader:
    from pathlib import Path

    if not Path(params["path"]).is_file():
        raise FileNotFoundError(
            f"the patches of this table are read from {params['path']}, which no longer exists; "
            "read the sample again (`st.datasets.read_hest(root, sample_id, store='lazy')`)."
        )
    rows = get_stored(adata, "obsm", params["rows_key"], "st.datasets.read_hest(..., store='lazy')")
    return FilePatchReader(params["path"], np.asarray(rows, dtype=np.int64).reshape(-1))


def sample_record(reader: PatchReader, obs_names: Sequence[str]) -> dict[str, Any]:
    """What a lazy extraction records to recognise its image: a few windows' spots, centres and pixel hashes.

    A sample window that cannot be read is recorded with the hash ``""`` and a warning.
    """
    sample = reader.sample_indices()
    hashes = reader.sample_hashes()
    unreadable = [str(obs_names[i]) for i, h in zip(sample, hashes) if not h]
    if unreadable:
        warn_user(
            f"extract_patches: the image data under the windows of {format_keys(unreadable)} cannot be read "
            "(damaged); the patches of those spots will fail to read (embed with on_error='skip' to leave them out)."
        )
    return {
        "sample_obs": [str(obs_names[i]) for i in sample],
        "sample_centres": reader.centres[sample],
        "sample_hashes": hashes,
    }


def _check_sample(reader: PatchReader, params: dict[str, Any], obs_names: pd.Index, key: str) -> None:
    """Raise unless the sample windows recorded at extraction hold the same pixels, and their spots the same centres.

    A subset of the table (``adata[mask]``) is checked against the same windows, read at their
    recorded centres. Windows that cannot be read now (damaged image data) or could not at
    extraction are left out: reading their spots reports them (``st.tl.embed``'s ``on_error``);
    when no sample window is left, a warning says the image could not be recognised.
    """
    recorded = np.asarray(params["sample_centres"], np.float64).reshape(-1, 2)
    rows = obs_names.get_indexer(list(params["sample_obs"]))
    present = rows >= 0
    moved = not np.array_equal(reader.centres[rows[present]], recorded[present])
    then = [str(h) for h in params["sample_hashes"]]
    now = [] if moved else reader.sample_hashes(recorded)
    compared = [i for i, (a, b) in enumerate(zip(then, now)) if a and b]
    if moved or any(then[i] != now[i] for i in compared):
        raise InvalidParameterError(
            f"the image given is not the one the patches of uns['stmorph']['patches'][{key!r}] were extracted "
            f"from: {SAMPLE_WINDOWS} sample windows hold other pixels (another image, or edited window centres). "
            "Pass the same image, or extract the patches again."
        )
    if not compared:
        warn_user(
            f"none of the {len(then)} sample windows of uns['stmorph']['patches'][{key!r}] can be read (damaged image "
            "data), so the image could not be recognised as the one the patches were extracted from."
        )


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
        spatial_key = params.get("spatial_key", Key.obsm.spatial)
        _, src = visium_source(visium, params["library_id"], params["source_mpp"], spatial_key)
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
def patch_reader(
    adata: AnnData, key: str = "patches", image: Any = None, *, on_error: str = "raise"
) -> PatchReader | FilePatchReader:
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
    on_error
        Windows over chunks missing from the image's zarr store: ``"raise"`` (default) refuses them
        here; ``"skip"`` leaves them to :meth:`PatchReader.read`, which raises
        :class:`~stmorph.errors.DamagedFileError` for a batch holding one (as for data that cannot
        be read), so that ``st.tl.embed(on_error="skip")`` embeds the other spots.

    Raises
    ------
    StmorphKeyError
        No lazy extraction under ``key``, or its record or window centres (``obsm``) are missing.
    DamagedFileError
        ``on_error="raise"`` and windows lie over chunks missing from the image's zarr store.
    FileNotFoundError
        The HEST patch file is no longer where it was read.
    OutOfImageError
        The image given does not hold the recorded windows (another image or resolution).
    InvalidParameterError
        The image given is another image of the same size: the pixels of a few sample windows
        differ from those hashed at extraction (``sample_hashes``; windows that cannot be read are
        not compared).

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate(50, 10)
    >>> st.pp.extract_patches(sdata, store="lazy", progress=False)
    >>> table = sdata.tables["table"]
    >>> patch_reader(table, image=sdata).read([0, 1]).shape
    (2, 224, 224, 3)
    """
    check_choice(on_error, ON_ERROR, "on_error")
    params = lazy_patch_params(adata, key)
    if params is None:
        raise StmorphKeyError(
            f"adata.uns['stmorph']['patches'][{key!r}] from a store='lazy' extraction not found; run "
            f"`st.pp.extract_patches(..., store='lazy', key_added={key!r})` first."
        )
    _check_record(params, key)
    if "rows_key" in params:
        return _file_reader(adata, params)
    centres = np.asarray(get_stored(adata, "obsm", params["centres_key"], _EXTRACT_LAZY), dtype=np.float64)
    window_px, patch_size = float(params["window_px"]), int(params["patch_size"])
    source = _lazy_image(adata, params, image)
    array = as_yxc(source)
    check_inside(centres, array.shape, adata.obs_names)
    missing = MissingChunks.of(source)
    if on_error == "raise":
        missing.check(centres, window_px, patch_size, adata.obs_names)
    reader = PatchReader(array, centres, window_px, patch_size, missing, list(adata.obs_names))
    if "sample_hashes" in params:
        _check_sample(reader, params, adata.obs_names, key)
    return reader
