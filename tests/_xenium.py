"""Write a Xenium output folder (XOA 2.0) from a crop of a shipped HER2ST section, with its post-run H&E.

The files are those ``spatialdata_io.xenium`` (0.7) reads: ``experiment.xenium`` (pixel size, software
version), ``cells.zarr.zip`` (``cell_id`` as uint32 prefix/suffix pairs, ``cell_summary``),
``cells.parquet`` (centroids and areas in µm), ``cell_feature_matrix.h5`` (10x v3 HDF5),
``morphology_focus/morphology_focus_0000.ome.tif`` (DAPI, uint16, Xenium pixels) and the H&E image
``<name>_he_image.ome.tif`` with ``<name>_he_imagealignment.csv``, the 3 × 3 affine matrix from H&E
pixels to Xenium pixels. The H&E is the crop's pixels unchanged; the alignment rotates and scales
them onto the Xenium frame, so patches cut through the reader can be compared with patches cut
from the crop at centres mapped with the known matrix.

Cells are placed inside the HER2ST spots (uniformly in a disc of 0.8 × the 50 µm spot radius) and
each spot's counts are split among its cells (a multinomial per gene), so the cells carry the
section's own expression.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from _spaceranger import Crop, write_10x_h5
from scipy import sparse

XENIUM_PIXEL_UM = 0.2125
"""µm per pixel of the Xenium morphology image (the frame of ``"global"``)."""
HER2ST_SPOT_UM = 100.0
"""Diameter of a HER2ST (legacy ST) spot."""
XOA_VERSION = "xenium-2.0.0.10"


@dataclass
class XeniumTruth:
    """What the test knows independently of the reader: the alignment and each cell's H&E pixel."""

    alignment: np.ndarray
    """3 × 3 affine, H&E pixels → Xenium pixels (as in the alignment CSV)."""
    cells_he: np.ndarray
    """``(n, 2)`` cell centroids in H&E (crop) pixels."""
    cells_um: np.ndarray
    """``(n, 2)`` cell centroids in µm (Xenium frame, as ``cells.parquet`` holds them)."""
    cell_ids: np.ndarray
    counts: sparse.csr_matrix
    genes: list[str]
    spot_of_cell: np.ndarray
    """Row of the section's table each cell was placed in."""


def alignment_matrix(crop: Crop, angle_deg: float = 4.0, shift: tuple[float, float] = (300.0, 150.0)) -> np.ndarray:
    """H&E pixels → Xenium pixels: a rotation, the scale between the pixel sizes and a shift."""
    scale = crop.mpp / XENIUM_PIXEL_UM
    a = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    h, w = crop.image.shape[:2]
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) @ rotation.T
    offset = np.asarray(shift) - corners.min(axis=0)  # the whole H&E lands at positive Xenium pixels
    return np.vstack([np.column_stack([rotation, offset]), [0.0, 0.0, 1.0]])


def apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64) @ matrix[:2, :2].T + matrix[:2, 2]


def place_cells(crop: Crop, spots_he: np.ndarray, per_spot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_spots * per_spot, 2)`` cell centres (H&E pixels), ``per_spot`` per spot inside its disc."""
    radius = 0.8 * HER2ST_SPOT_UM / 2 / crop.mpp
    r = radius * np.sqrt(rng.random((len(spots_he), per_spot)))
    theta = 2 * np.pi * rng.random((len(spots_he), per_spot))
    offsets = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)
    return (spots_he[:, None, :] + offsets).reshape(-1, 2)


def split_counts(counts: np.ndarray, per_spot: int, rng: np.random.Generator) -> sparse.csr_matrix:
    """Each spot's counts shared among its ``per_spot`` cells (multinomial per gene): rows spot-major."""
    share = np.full(per_spot, 1.0 / per_spot)
    cells = [rng.multinomial(row.astype(np.int64), share).T for row in counts]  # (per_spot, genes) each
    return sparse.csr_matrix(np.concatenate(cells, axis=0))


def cell_id_strings(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Xenium cell ids: the ``(n, 2)`` uint32 (prefix, suffix) pairs and their strings (``aaaabbbc-1``)."""
    from spatialdata_io.readers.xenium import cell_id_str_from_prefix_suffix_uint32

    pairs = np.column_stack([np.arange(1, n + 1, dtype=np.uint32) * 7919, np.ones(n, dtype=np.uint32)])
    return pairs, cell_id_str_from_prefix_suffix_uint32(pairs[:, 0], pairs[:, 1])


def _write_cells_zarr(path: Path, pairs: np.ndarray, summary: pd.DataFrame) -> None:
    import zarr

    store = zarr.storage.ZipStore(path, mode="w")
    group = zarr.open_group(store, mode="w")
    group.create_array("cell_id", data=pairs)
    group.create_array(
        "cell_summary", data=summary.to_numpy(np.float64), attributes={"column_names": list(summary.columns)}
    )
    store.close()


def _write_ome_tif(path: Path, image: np.ndarray, **kwargs) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, ome=True, compression="zlib", **kwargs)


def write_xenium(
    root: Path,
    crop: Crop,
    table,
    *,
    per_spot: int = 25,
    n_genes: int = 60,
    name: str = "C2",
    alignment: bool = True,
    seed: int = 0,
) -> XeniumTruth:
    """A Xenium output folder of cells inside the table's spots that lie in ``crop``; what it holds.

    ``table`` is the section's spots × genes table (``obsm["spatial"]`` in section pixels); its
    ``n_genes`` most expressed genes are kept. ``alignment=False`` leaves the alignment CSV out.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    spots_he = np.asarray(table.obsm["spatial"], dtype=np.float64) - crop.offset
    dense = np.asarray(table.X.todense() if sparse.issparse(table.X) else table.X)
    top = np.sort(np.argsort(-dense.sum(axis=0), kind="stable")[:n_genes])
    genes = [str(g) for g in table.var_names[top]]
    counts = split_counts(dense[:, top], per_spot, rng)
    cells_he = place_cells(crop, spots_he, per_spot, rng)
    matrix = alignment_matrix(crop)
    cells_um = apply(matrix, cells_he) * XENIUM_PIXEL_UM
    n = len(cells_he)
    pairs, ids = cell_id_strings(n)
    area = rng.uniform(40.0, 140.0, n)  # µm², the usual range of Xenium cell areas
    (root / "experiment.xenium").write_text(
        json.dumps({"pixel_size": XENIUM_PIXEL_UM, "analysis_sw_version": XOA_VERSION, "run_name": name})
    )
    summary = pd.DataFrame(
        {
            "cell_centroid_x": cells_um[:, 0], "cell_centroid_y": cells_um[:, 1], "cell_area": area,
            "nucleus_centroid_x": cells_um[:, 0], "nucleus_centroid_y": cells_um[:, 1],
            "nucleus_area": area / 3, "z_level": np.zeros(n), "nucleus_count": np.ones(n),
        }
    )  # fmt: skip
    _write_cells_zarr(root / "cells.zarr.zip", pairs, summary)
    total = np.asarray(counts.sum(axis=1)).ravel()
    pd.DataFrame(
        {
            "cell_id": ids, "x_centroid": cells_um[:, 0], "y_centroid": cells_um[:, 1],
            "transcript_counts": total, "control_probe_counts": 0, "control_codeword_counts": 0,
            "unassigned_codeword_counts": 0, "deprecated_codeword_counts": 0, "total_counts": total,
            "cell_area": area, "nucleus_area": area / 3, "nucleus_count": 1, "segmentation_method": "Imported",
        }
    ).to_parquet(root / "cells.parquet", index=False)  # fmt: skip
    write_10x_h5(root / "cell_feature_matrix.h5", counts, ids, genes, name)
    h, w = crop.image.shape[:2]
    corners = apply(matrix, np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64))
    extent = np.ceil(corners.max(axis=0)).astype(int) + 100
    dapi = np.zeros((extent[1], extent[0]), dtype=np.uint16)
    xy = np.round(apply(matrix, cells_he)).astype(int)
    dapi[xy[:, 1], xy[:, 0]] = 4000  # one bright pixel per nucleus
    _write_ome_tif(root / "morphology_focus" / "morphology_focus_0000.ome.tif", dapi[None], metadata={"axes": "CYX"})
    _write_ome_tif(root / f"{name}_he_image.ome.tif", crop.image, photometric="rgb", metadata={"axes": "YXS"})
    if alignment:
        np.savetxt(root / f"{name}_he_imagealignment.csv", matrix, delimiter=",")
    order = np.repeat(np.arange(table.n_obs), per_spot)
    return XeniumTruth(matrix, cells_he, cells_um, ids, counts, genes, order)


def read_xenium(folder: Path, **options):
    """The folder read as the issue's user reads it: cells as circles, the aligned H&E included."""
    import warnings

    from spatialdata_io import xenium

    kwargs = {
        "cells_as_circles": True, "aligned_images": True, "cells_boundaries": False, "nucleus_boundaries": False,
        "cells_labels": False, "nucleus_labels": False, "transcripts": False, **options,
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xenium(folder, **kwargs)
