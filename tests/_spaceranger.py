"""Write Space Ranger output folders (Visium, Visium HD) from a crop of a shipped HER2ST section.

The files follow what ``spatialdata_io.visium`` / ``visium_hd`` (0.7) read: the 10x v3 HDF5 count
matrix, ``spatial/tissue_positions.csv`` (Visium) or ``binned_outputs/square_<NNN>um/spatial/
tissue_positions.parquet`` (Visium HD), ``scalefactors_json.json``, hires/lowres PNGs and the
full-resolution image. The section's pixels are kept unchanged (a crop at whole-pixel offsets, PNG),
so patches cut from these folders can be compared with patches cut from the HER2ST loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from scipy import sparse

HIRES_SIDE, LOWRES_SIDE = 2000, 600
"""Longest side of the tissue_hires / tissue_lowres PNGs, as Space Ranger writes them."""


@dataclass
class Crop:
    """A window of a HER2ST image: its pixels and its top-left corner in the section's pixels."""

    image: np.ndarray
    x0: int
    y0: int
    mpp: float

    @property
    def offset(self) -> np.ndarray:
        """``(x0, y0)``: crop pixels + offset = section pixels."""
        return np.array([self.x0, self.y0], dtype=np.float64)

    def inside(self, centres: np.ndarray, margin: float) -> np.ndarray:
        """True where a centre (section pixels) lies at least ``margin`` pixels inside the crop."""
        h, w = self.image.shape[:2]
        local = centres - self.offset
        return (local >= margin).all(axis=1) & (local[:, 0] <= w - margin) & (local[:, 1] <= h - margin)


def write_10x_h5(path: Path, counts: sparse.spmatrix, barcodes, genes, library_id: str) -> None:
    """A ``filtered_feature_bc_matrix.h5`` in the 10x Genomics v3 HDF5 layout (``/matrix``, CSC genes × barcodes)."""
    csc = sparse.csc_matrix(counts.T.astype(np.int32))  # columns are barcodes
    genes = np.asarray(genes, dtype="S")
    with h5py.File(path, "w") as f:
        f.attrs["library_ids"] = np.array([library_id], dtype="S")
        f.attrs["chemistry_description"] = "Visium Spatial Gene Expression"
        group = f.create_group("matrix")
        group.create_dataset("barcodes", data=np.asarray(barcodes, dtype="S"))
        group.create_dataset("data", data=csc.data)
        group.create_dataset("indices", data=csc.indices.astype(np.int64))
        group.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        group.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        features = group.create_group("features")
        features.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        features.create_dataset("feature_type", data=np.full(len(genes), b"Gene Expression"))
        features.create_dataset("genome", data=np.full(len(genes), b"GRCh38"))
        features.create_dataset("id", data=np.char.add(b"ENSG_", genes))
        features.create_dataset("name", data=genes)


def _downscaled(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    scale = side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)), scale


def _write_images(folder: Path, image: np.ndarray) -> dict[str, float]:
    """tissue_hires/lowres PNGs in ``folder``; their scale factors."""
    folder.mkdir(parents=True, exist_ok=True)
    scalefactors = {}
    for name, side in (("hires", HIRES_SIDE), ("lowres", LOWRES_SIDE)):
        small, scale = _downscaled(image, side)
        Image.fromarray(small).save(folder / f"tissue_{name}_image.png")
        scalefactors[f"tissue_{name}_scalef"] = scale
    return scalefactors


def write_visium(root: Path, crop: Crop, table, library_id: str) -> Path:
    """A Visium Space Ranger folder of the table's spots inside ``crop``; returns the full-resolution image path.

    Spot diameter in the scalefactors is 55 µm at the section's pixel size, so the 55 µm Visium
    spot gives back that pixel size.
    """
    root.mkdir(parents=True, exist_ok=True)
    centres = np.asarray(table.obsm["spatial"], dtype=np.float64) - crop.offset
    write_10x_h5(root / "filtered_feature_bc_matrix.h5", table.X, table.obs_names, table.var_names, library_id)
    positions = pd.DataFrame(
        {
            "barcode": table.obs_names,
            "in_tissue": 1,
            "array_row": table.obs["array_y"].to_numpy(),
            "array_col": table.obs["array_x"].to_numpy(),
            "pxl_row_in_fullres": centres[:, 1],
            "pxl_col_in_fullres": centres[:, 0],
        }
    )
    (root / "spatial").mkdir(exist_ok=True)
    positions.to_csv(root / "spatial" / "tissue_positions.csv", index=False)
    scalefactors = {
        "spot_diameter_fullres": 55.0 / crop.mpp,
        "fiducial_diameter_fullres": 89.0 / crop.mpp,
        **_write_images(root / "spatial", crop.image),
    }
    (root / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    image_path = root / "tissue_image.png"
    Image.fromarray(crop.image).save(image_path)
    return image_path


def bin_grid(crop: Crop, bin_um: int, side_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (crop pixels) and ``(row, col)`` indices of a square grid of bins ``side_um`` wide at the crop centre."""
    n = int(side_um // bin_um)
    pitch = bin_um / crop.mpp
    h, w = crop.image.shape[:2]
    rows, cols = np.divmod(np.arange(n * n), n)
    x = w / 2 + (cols - (n - 1) / 2) * pitch
    y = h / 2 + (rows - (n - 1) / 2) * pitch
    return np.column_stack([x, y]), np.column_stack([rows, cols])


def _write_bins(folder: Path, crop: Crop, bin_um: int, side_um: float, n_genes: int, hires_lowres: dict) -> None:
    centres, index = bin_grid(crop, bin_um, side_um)
    barcodes = [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in index]
    rng = np.random.default_rng(bin_um)
    counts = sparse.csr_matrix(rng.poisson(2.0, size=(len(barcodes), n_genes)))
    (folder / "spatial").mkdir(parents=True, exist_ok=True)
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes, [f"G{i}" for i in range(n_genes)], "hd")
    positions = pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": np.ones(len(barcodes), dtype=np.int32),
            "array_row": index[:, 0],
            "array_col": index[:, 1],
            "pxl_row_in_fullres": centres[:, 1],
            "pxl_col_in_fullres": centres[:, 0],
        }
    )
    positions.to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
    scalefactors = {
        "bin_size_um": float(bin_um),
        "spot_diameter_fullres": bin_um / crop.mpp,
        "microns_per_pixel": crop.mpp,
        **hires_lowres,
    }
    (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))


def write_visium_hd(root: Path, crop: Crop, bins_um=(8, 16), side_um: float = 192.0, n_genes: int = 30) -> None:
    """A Visium HD Space Ranger folder: ``binned_outputs/square_<NNN>um/`` bins over a ``side_um`` square.

    Counts are Poisson noise (the test checks the images, not the expression).
    """
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps({"file_format": "1.0"})})
    hires_lowres = _write_images(root / "spatial", crop.image)
    (root / "spatial" / "scalefactors_json.json").write_text(
        json.dumps({"spot_diameter_fullres": 2.0 / crop.mpp, "microns_per_pixel": crop.mpp, **hires_lowres})
    )
    for bin_um in bins_um:
        _write_bins(root / "binned_outputs" / f"square_{bin_um:03d}um", crop, bin_um, side_um, n_genes, hires_lowres)
    (root / "microscope_image").mkdir(exist_ok=True)
    Image.fromarray(crop.image).save(root / "microscope_image" / "tissue_image.png")
