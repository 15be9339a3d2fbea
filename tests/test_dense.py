"""The dense strategy of ``st.tl.embed`` (one encoder pass per tile, bins pooled from the feature map)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _adata_compare import assert_adata_equal
from scipy import sparse

import stmorph as st
from stmorph.errors import (
    CheckpointMismatchError,
    DamagedCheckpointError,
    InvalidParameterError,
    OutOfImageError,
    StmorphKeyError,
)
from stmorph.models._encoders import Encoder
from stmorph.tl import _dense
from stmorph.tl._dense import choose_strategy
from stmorph.tl._spatial import adjacent_edge_fraction

STRIDE, PATCH = 4, 16  # the tiny encoder's stride; the window side in pixels


class _Pool(torch.nn.Module):
    pool_type = "avg"

    def forward(self, x):
        return x.mean(dim=(2, 3))


class TinyCNN(torch.nn.Module):
    """Two stride-2 convolutions (receptive field 7 px, so a 16 px halo is all the context there is)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.convs = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(6, 5, 3, stride=2, padding=1),
        )
        self.global_pool = _Pool()

    def forward_features(self, x):
        return self.convs(x)

    def forward(self, x):
        return self.global_pool(self.forward_features(x))


@pytest.fixture(scope="module")
def tiny():
    enc = Encoder(TinyCNN().eval(), dim=5, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=PATCH)
    name = "tiny_cnn_test"
    if name not in st.tl.list_encoders():
        st.tl.register_encoder(name, enc)
    return name, enc


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (64, 72, 3), dtype=np.uint8)


def _grid(offset: float, pitch: float = 8.0) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(8 + offset, 64, pitch), np.arange(8 + offset, 56, pitch))
    return np.column_stack([xs.ravel(), ys.ravel()])


def _bins(image: np.ndarray, centres: np.ndarray):
    return st.pp.extract_patches((image, centres), mpp=0.5, patch_size=PATCH, store="lazy", progress=False)


def _direct(enc: Encoder, image: np.ndarray, centres: np.ndarray, pad: int) -> np.ndarray:
    """One feature map of the white-padded image; each bin: the pixel-level mean of the map over its window."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
    x = (x - 0.5) / 0.25
    with torch.no_grad():
        fmap = enc.module.forward_features(x)[0].permute(1, 2, 0).numpy()
    pixels = np.repeat(np.repeat(fmap, STRIDE, axis=0), STRIDE, axis=1)  # the map, cell by cell, per pixel
    out = []
    for cx, cy in centres + pad:
        y0, x0 = int(cy - PATCH / 2), int(cx - PATCH / 2)
        out.append(pixels[y0 : y0 + PATCH, x0 : x0 + PATCH].mean(axis=(0, 1)))
    return np.array(out)


@pytest.mark.parametrize("offset", [0.0, 2.0], ids=["windows-on-cells", "windows-across-cells"])
def test_dense_features_equal_the_mean_of_the_map_under_each_window(tiny, image, offset):
    name, enc = tiny
    centres = _grid(offset)
    table = _bins(image, centres)
    # one tile holds the whole image: tile origin at -16 px, so the map is that of the image padded by 16 px
    st.tl.embed(table, model=name, strategy="dense", image=image, tile_size=112, halo=16, progress=False)
    expected = _direct(enc, image, centres, pad=16)
    np.testing.assert_allclose(table.obsm[f"X_{name}"], expected, rtol=1e-5, atol=1e-6)
    assert table.uns["stmorph"]["embed"][f"X_{name}"]["n_tiles"] == 1


def test_tiles_with_a_halo_wider_than_the_receptive_field_give_one_tiles_features(tiny, image):
    name, _ = tiny
    table = _bins(image, _grid(2.0))
    one = st.tl.embed(
        table, model=name, strategy="dense", image=image, tile_size=112, halo=16, progress=False, copy=True
    )
    many = st.tl.embed(
        table, model=name, strategy="dense", image=image, tile_size=48, halo=16, progress=False, copy=True
    )
    assert many.uns["stmorph"]["embed"][f"X_{name}"]["n_tiles"] > 4
    np.testing.assert_allclose(many.obsm[f"X_{name}"], one.obsm[f"X_{name}"], rtol=1e-5, atol=1e-6)


def test_auto_strategy_is_dense_for_bins_closer_than_half_their_window(image):
    dense_grid = _bins(image, _grid(0.0, pitch=6.0))  # window 16 px
    sparse_grid = _bins(image, _grid(0.0, pitch=12.0))
    in_memory = st.pp.extract_patches((image, _grid(0.0)), mpp=0.5, patch_size=PATCH, progress=False)
    assert choose_strategy(dense_grid, "patches", "auto") == "dense"
    assert choose_strategy(sparse_grid, "patches", "auto") == "spot"
    assert choose_strategy(in_memory, "patches", "auto") == "spot"


def test_zarr_store_holds_the_features_and_resumes_after_the_written_chunks(tiny, image, tmp_path, monkeypatch):
    name, _ = tiny
    monkeypatch.setattr(_dense, "CHUNK_ROWS", 10)
    table = _bins(image, _grid(2.0))
    memory = st.tl.embed(
        table, model=name, strategy="dense", image=image, tile_size=48, halo=16, progress=False, copy=True
    )
    path = tmp_path / "features.zarr"
    opts = dict(model=name, strategy="dense", image=image, tile_size=48, halo=16)
    opts.update(features_store="zarr", features_path=path)
    st.tl.embed(table, progress=False, **opts)
    np.testing.assert_allclose(np.asarray(table.obsm[f"X_{name}"]), memory.obsm[f"X_{name}"], rtol=1e-6)
    n_tiles = table.uns["stmorph"]["embed"][f"X_{name}"]["n_tiles"]
    # forget chunk 2 and wipe its rows, as if the run had stopped before writing it
    state = json.loads((path / _dense.PROGRESS_FILE).read_text())
    state["done"].remove(2)
    (path / _dense.PROGRESS_FILE).write_text(json.dumps(state))
    import zarr

    zarr.open_array(path, mode="r+")[20:30] = np.nan
    st.tl.embed(table, progress=False, resume=True, **opts)
    np.testing.assert_allclose(np.asarray(table.obsm[f"X_{name}"]), memory.obsm[f"X_{name}"], rtol=1e-6)
    assert table.uns["stmorph"]["embed"][f"X_{name}"]["n_tiles"] < n_tiles


def test_a_zarr_store_of_another_run_or_with_damaged_progress_is_refused_as_a_checkpoint(tiny, image, tmp_path):
    name, _ = tiny
    table = _bins(image, _grid(2.0))
    path = tmp_path / "features.zarr"
    opts = dict(model=name, strategy="dense", image=image, halo=16, features_store="zarr", features_path=path)
    st.tl.embed(table, tile_size=48, progress=False, **opts)
    features = np.asarray(table.obsm[f"X_{name}"])
    with pytest.raises(CheckpointMismatchError, match=r"\['tile_size'\] differ"):
        st.tl.embed(table, tile_size=96, resume=True, progress=False, **opts)
    (path / _dense.PROGRESS_FILE).write_text('{"fingerprint": {}, "done": "all"}')
    with pytest.raises(DamagedCheckpointError, match="done"):
        st.tl.embed(table, tile_size=48, resume=True, progress=False, **opts)
    np.testing.assert_array_equal(np.asarray(table.obsm[f"X_{name}"]), features)  # nothing written


def test_adjacent_edge_fraction_counts_edges_between_grid_neighbours():
    coords = _grid(0.0)  # pitch 8: neighbours (incl. diagonal, 11.3) within 1.5 × 8 = 12
    n = len(coords)
    right = np.flatnonzero(coords[:, 0] < coords[:, 0].max())  # each has a neighbour 8 px to the right
    far = (right + 2) % n  # two bins along: 16 px away (or another row)
    rows = np.concatenate([right, right])
    cols = np.concatenate([right + 1, far])
    graph = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    dist = np.linalg.norm(coords[rows] - coords[cols], axis=1)
    assert adjacent_edge_fraction(graph, coords) == pytest.approx(np.mean(dist <= 12.0))
    assert 0.4 < adjacent_edge_fraction(graph, coords) < 0.6


def _error_cases(image, tmp_path):
    return {
        "bins outside the image": (OutOfImageError, dict(image=image[:32, :32])),
        "tile smaller than the window": (InvalidParameterError, dict(image=image, tile_size=8, halo=8)),
        "halo less than half the window": (InvalidParameterError, dict(image=image, tile_size=48, halo=4)),
        "tile not a multiple of the stride": (InvalidParameterError, dict(image=image, tile_size=50, halo=16)),
        "encoder without a feature map": (InvalidParameterError, dict(image=image, model="hed")),
        "checkpoint with dense": (InvalidParameterError, dict(image=image, checkpoint=tmp_path / "c")),
        "zarr without a path or zarr source": (InvalidParameterError, dict(image=image, features_store="zarr")),
    }


@pytest.mark.parametrize(
    "case",
    [
        "bins outside the image",
        "tile smaller than the window",
        "halo less than half the window",
        "tile not a multiple of the stride",
        "encoder without a feature map",
        "checkpoint with dense",
        "zarr without a path or zarr source",
    ],
)
def test_bad_dense_input_raises_a_named_error_and_leaves_the_table_unchanged(tiny, image, tmp_path, case):
    name, _ = tiny
    expected, options = _error_cases(image, tmp_path)[case]
    table = _bins(image, _grid(0.0))
    before = table.copy()
    with pytest.raises(expected):
        st.tl.embed(table, **{"model": name, "strategy": "dense", "progress": False, **options})
    assert_adata_equal(table, before)


@pytest.mark.parametrize("problem", ["read-only", "full"])
def test_unwritable_zarr_store_is_refused_before_any_work(tiny, image, tmp_path, monkeypatch, problem):
    name, _ = tiny
    if problem == "read-only":  # as root, permission bits do not stop writes: ask as a read-only mount answers
        monkeypatch.setattr(_dense.os, "access", lambda path, mode: False)
    else:
        monkeypatch.setattr(_dense.shutil, "disk_usage", lambda path: type("U", (), {"free": 100})())
    table = _bins(image, _grid(0.0))
    before = table.copy()
    with pytest.raises(InvalidParameterError, match=problem):
        st.tl.embed(table, model=name, strategy="dense", image=image, features_store="zarr",
                    features_path=tmp_path / "f.zarr", progress=False)  # fmt: skip
    assert not (tmp_path / "f.zarr").exists()
    assert_adata_equal(table, before)


def test_dense_needs_a_lazy_extraction(tiny, image):
    name, _ = tiny
    table = st.pp.extract_patches((image, _grid(0.0)), mpp=0.5, patch_size=PATCH, progress=False)
    with pytest.raises(StmorphKeyError, match="store='lazy'"):
        st.tl.embed(table, model=name, strategy="dense", progress=False)


def test_bins_of_mixed_sizes_are_refused():
    sdata = st.datasets.simulate(40, 12, n_planted=3, random_state=0, spot_px=16)
    shapes = next(iter(sdata.shapes.values()))
    shapes["radius"] = np.where(np.arange(len(shapes)) % 2, 8.0, 4.0)
    st.pp.extract_patches(sdata, patch_size=16, store="lazy", progress=False)
    with pytest.raises(InvalidParameterError, match="mixed sizes"):
        st.tl.embed(sdata.tables["table"], strategy="dense", image=sdata, progress=False)


def test_zarr_backed_features_build_the_same_image_graph_as_in_memory_ones(tiny, image, tmp_path):
    name, _ = tiny
    table = _bins(image, _grid(2.0))
    opts = dict(model=name, strategy="dense", image=image, tile_size=48, halo=16, progress=False, copy=True)
    memory = st.tl.embed(table, **opts)
    on_disk = st.tl.embed(table, features_store="zarr", features_path=tmp_path / "f.zarr", **opts)
    for t in (memory, on_disk):
        st.tl.image_graph(t, use_rep=f"X_{name}", n_neighbors=3)
    assert (memory.obsp["image_connectivities"] != on_disk.obsp["image_connectivities"]).nnz == 0
