"""Long embedding runs: resume without recomputing finished batches; unreadable patches skipped only loudly."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import table

import stmorph as st
from stmorph.errors import DamagedFileError, InvalidParameterError
from stmorph.tl import _embed_engine
from stmorph.tl._embed_resume import PROGRESS_FILE

BATCH = 8  # 60 spots → 8 batches


class Crash(RuntimeError):
    """The injected interruption."""


def _counting_hed(monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Replace the "hed" encoder by a counting wrapper that raises on call ``fail_on_call``."""
    hed = _embed_engine.inference_encoder("hed", None)
    calls: list[int] = []

    def encoder(patches):
        calls.append(len(patches))
        if len(calls) == fail_on_call:
            raise Crash(f"interrupted at batch {len(calls)}")
        return hed(patches)

    monkeypatch.setattr(_embed_engine, "inference_encoder", lambda model, weights: encoder)
    return calls


@pytest.fixture(scope="module")
def reference():
    adata = table()
    st.tl.embed(adata, model="hed", batch_size=BATCH, progress=False)
    return adata.obsm["X_hed"]


def test_interrupted_run_resumes_without_recomputing_finished_batches(monkeypatch, tmp_path, reference):
    adata, folder = table(), tmp_path / "ckpt"
    before = adata.copy()
    calls = _counting_hed(monkeypatch, fail_on_call=4)
    with pytest.raises(Crash):
        st.tl.embed(adata, model="hed", batch_size=BATCH, checkpoint=folder, progress=False)
    assert_adata_equal(adata, before)  # nothing written into the AnnData
    assert json.loads((folder / PROGRESS_FILE).read_text())["done"] == [0, 1, 2]

    calls = _counting_hed(monkeypatch)
    st.tl.embed(adata, model="hed", batch_size=BATCH, checkpoint=folder, resume=True, progress=False)
    assert calls == [8, 8, 8, 8, 4]  # batches 3..7 only (60 = 7 × 8 + 4)
    np.testing.assert_array_equal(adata.obsm["X_hed"], reference)

    calls = _counting_hed(monkeypatch)
    st.tl.embed(adata, model="hed", batch_size=BATCH, checkpoint=folder, resume=True, key_added="again", progress=False)
    assert calls == []  # a finished checkpoint recomputes nothing
    np.testing.assert_array_equal(adata.obsm["again"], reference)


def test_without_resume_a_checkpoint_starts_over(monkeypatch, tmp_path, reference):
    adata, folder = table(), tmp_path / "ckpt"
    st.tl.embed(adata, model="hed", batch_size=BATCH, checkpoint=folder, progress=False)
    calls = _counting_hed(monkeypatch)
    st.tl.embed(adata, model="hed", batch_size=BATCH, checkpoint=folder, key_added="fresh", progress=False)
    assert len(calls) == 8
    np.testing.assert_array_equal(adata.obsm["fresh"], reference)


def test_resuming_a_checkpoint_of_another_run_is_refused(tmp_path):
    adata, folder = table(), tmp_path / "ckpt"
    st.tl.embed(adata, model="hed", batch_size=BATCH, checkpoint=folder, progress=False)
    with pytest.raises(InvalidParameterError, match=r"belongs to another run: \['batch_size'\]"):
        st.tl.embed(adata, model="hed", batch_size=16, checkpoint=folder, resume=True, progress=False)
    other = adata[::-1].copy()  # same spots, another order: rows would land on the wrong spots
    with pytest.raises(InvalidParameterError, match="obs_names_sha1"):
        st.tl.embed(other, model="hed", batch_size=BATCH, checkpoint=folder, resume=True, progress=False)


def _unreadable(monkeypatch, bad: set[int]) -> None:
    """Make the patches of spots ``bad`` unreadable (as a corrupt image chunk would be)."""
    real = _embed_engine._patch_fetcher

    def fetcher(adata, key, image, on_error):
        fetch = real(adata, key, image, on_error)

        def read(idx):
            broken = sorted(bad & set(np.asarray(idx).tolist()))
            if broken:
                raise OSError(f"corrupt image data under spot {broken[0]}")
            return fetch(idx)

        return read

    monkeypatch.setattr(_embed_engine, "_patch_fetcher", fetcher)


def test_unreadable_patches_raise_by_default_and_leave_adata_unchanged(monkeypatch):
    adata = table()
    before = adata.copy()
    _unreadable(monkeypatch, {5})
    with pytest.raises(OSError, match="corrupt"):
        st.tl.embed(adata, model="hed", batch_size=BATCH, progress=False)
    assert_adata_equal(adata, before)


def test_skip_reports_unreadable_patches_by_id_and_gives_them_nan_rows(monkeypatch, reference):
    adata = table()
    _unreadable(monkeypatch, {5, 17, 18})
    ids = list(adata.obs_names[[5, 17, 18]])
    with pytest.warns(UserWarning, match="3 patch\\(es\\) could not be read") as record:
        st.tl.embed(adata, model="hed", batch_size=BATCH, on_error="skip", progress=False)
    message = str(next(w.message for w in record if "could not be read" in str(w.message)))
    assert all(i in message for i in ids)
    emb = adata.obsm["X_hed"]
    assert np.isnan(emb[[5, 17, 18]]).all()
    keep = np.setdiff1d(np.arange(adata.n_obs), [5, 17, 18])
    np.testing.assert_array_equal(emb[keep], reference[keep])
    failed = adata.uns["stmorph"]["embed"]["X_hed"]["failed"]
    assert list(failed["obs_names"]) == ids
    assert all("OSError: corrupt image data" in e for e in failed["errors"])


def test_skipped_spots_record_survives_h5ad(monkeypatch, tmp_path):
    import anndata as ad

    adata = table()
    _unreadable(monkeypatch, {2})
    with pytest.warns(UserWarning, match="could not be read"):
        st.tl.embed(adata, model="hed", batch_size=BATCH, on_error="skip", progress=False)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert list(back.uns["stmorph"]["embed"]["X_hed"]["failed"]["obs_names"]) == [adata.obs_names[2]]
    assert np.isnan(back.obsm["X_hed"][2]).all()


def test_skip_with_nothing_unreadable_is_silent_and_identical(reference):
    adata = table()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        st.tl.embed(adata, model="hed", batch_size=BATCH, on_error="skip", progress=False)
    np.testing.assert_array_equal(adata.obsm["X_hed"], reference)
    assert "failed" not in adata.uns["stmorph"]["embed"]["X_hed"]


CHUNK, WINDOW = 128, 16  # image chunk (tile) side; patch windows of 16 px, read unchanged (target_mpp = mpp)
DAMAGED_TILES = [(0, 0), (1, 2)]  # (row, column) of the unreadable tiles


def _slide_in_zarr(path):
    """A simulated slide in a zarr store with 128 px chunks, read back lazily (images as dask)."""
    from spatialdata import read_zarr
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    sdata = _slide()
    image = sdata.images["he"]
    sdata.images["he"] = Image2DModel.parse(
        image.data, dims=image.dims, chunks=(3, CHUNK, CHUNK), transformations=get_transformation(image, get_all=True)
    )
    sdata.write(path)
    return read_zarr(path)


def _slide():
    return st.datasets.simulate(40, 5, n_planted=1, random_state=1, spot_px=48)


def _lazy(data, **kwargs):
    return st.pp.extract_patches(data, patch_size=WINDOW, target_mpp=1.0, store="lazy", progress=False, **kwargs)


def _damaged_slide(path, how: str):
    """A table with lazily extracted patches, the image to read them from, and the same image with tiles damaged.

    ``how``: ``"missing"`` (chunk files deleted from the zarr store), ``"corrupt"`` (chunk files
    overwritten with bytes that do not decompress) or ``"oserror"`` (an image array whose tiles
    raise ``OSError`` when read, as an unreadable file region would).
    """
    if how == "oserror":
        import dask.array as da

        image = np.asarray(_slide().images["he"].transpose("y", "x", "c").data)
        table = _lazy((image, _slide().tables["table"].obsm["spatial"]), mpp=1.0)

        def read(block, block_info=None):
            if tuple(block_info[0]["chunk-location"][:2]) in DAMAGED_TILES:
                raise OSError(f"unreadable tile {block_info[0]['chunk-location'][:2]}")
            return block

        damaged = da.from_array(image, chunks=(CHUNK, CHUNK, 3)).map_blocks(read, dtype=image.dtype)
        return table, image, damaged
    sdata = _slide_in_zarr(path)
    _lazy(sdata)
    table = sdata.tables["table"]
    intact = _slide_in_zarr(path.with_name("intact.zarr"))
    for row, col in DAMAGED_TILES:
        chunk = path / "images" / "he" / "s0" / "c" / "0" / str(row) / str(col)
        if how == "missing":
            chunk.unlink()
        else:
            chunk.write_bytes(b"not a zstd frame" * 8)
    return table, intact, sdata


def _windows_over_damaged_tiles(centres: np.ndarray) -> np.ndarray:
    """True for the spots whose window (``WINDOW`` px around the centre) overlaps a damaged tile."""
    x0, y0 = np.round(centres[:, 0] - WINDOW / 2), np.round(centres[:, 1] - WINDOW / 2)
    hit = np.zeros(len(centres), dtype=bool)
    for row, col in DAMAGED_TILES:
        over_x = (x0 < (col + 1) * CHUNK) & (x0 + WINDOW > col * CHUNK)
        over_y = (y0 < (row + 1) * CHUNK) & (y0 + WINDOW > row * CHUNK)
        hit |= over_x & over_y
    return hit


@pytest.mark.parametrize("how", ["missing", "corrupt", "oserror"])
def test_damaged_image_tiles_skip_their_spots_and_embed_the_rest(tmp_path, how):
    table, intact, damaged = _damaged_slide(tmp_path / "slide.zarr", how)
    bad = _windows_over_damaged_tiles(table.obsm["patches_centres_px"])
    assert 0 < bad.sum() < table.n_obs
    reference = st.tl.embed(table, model="hed", image=intact, batch_size=BATCH, progress=False, copy=True)
    before = table.copy()

    with pytest.raises(DamagedFileError):
        st.tl.embed(table, model="hed", image=damaged, batch_size=BATCH, progress=False)
    assert_adata_equal(table, before)

    with pytest.warns(UserWarning, match=f"{bad.sum()} patch\\(es\\) could not be read"):
        st.tl.embed(table, model="hed", image=damaged, batch_size=BATCH, on_error="skip", progress=False)
    failed = table.uns["stmorph"]["embed"]["X_hed"]["failed"]
    assert list(failed["obs_names"]) == list(table.obs_names[bad])
    assert all(e.startswith("DamagedFileError") for e in failed["errors"])
    emb = table.obsm["X_hed"]
    assert np.isnan(emb[bad]).all()
    np.testing.assert_array_equal(emb[~bad], reference.obsm["X_hed"][~bad])


def _net_and_data():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(96, 4, generator=gen)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(96, generator=gen)
    return net, (lambda idx, train: (x[idx], y[idx]))


def _train(net, batch_fn, loss_fn, **kwargs):
    from stmorph.models._train import train

    options = {"epochs": 6, "batch_size": 16, "lr": 1e-2, "random_state": 3, "val_indices": np.arange(80, 96)}
    return train(net, loss_fn, batch_fn, 80, progress=False, **options, **kwargs)


def _mse(module, batch):
    return ((module(batch[0]).squeeze(1) - batch[1]) ** 2).mean()


def test_interrupted_training_resumes_from_the_last_epoch_and_matches_an_uninterrupted_run(tmp_path):
    net, batch_fn = _net_and_data()
    expected = _train(net, batch_fn, _mse)
    expected_weights = {k: v.clone() for k, v in net.state_dict().items()}

    calls = []

    def crashing(module, batch):
        calls.append(1)
        if len(calls) == 3 * 6 + 2:  # 5 training + 1 validation batch per epoch: dies in epoch 4
            raise Crash("power cut")
        return _mse(module, batch)

    net, batch_fn = _net_and_data()
    with pytest.raises(Crash):
        _train(net, batch_fn, crashing, checkpoint=tmp_path)
    net, batch_fn = _net_and_data()  # a fresh process: new module, same seed
    calls.clear()
    counted = lambda module, batch: calls.append(1) or _mse(module, batch)  # noqa: E731
    history = _train(net, batch_fn, counted, checkpoint=tmp_path, resume=True)
    assert len(calls) == 3 * 6  # epochs 4, 5 and 6 only
    assert history == expected
    for key, value in net.state_dict().items():
        assert _torch_equal(value, expected_weights[key]), key


def _torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def _counting_mse(monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Count the MLP's loss evaluations (one per training batch); optionally crash at one of them."""
    import torch

    real, calls = torch.nn.functional.mse_loss, []

    def mse(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_on_call:
            raise Crash(f"interrupted at batch {len(calls)}")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "mse_loss", mse)
    return calls


def test_predict_resumes_an_interrupted_training_and_matches_an_uninterrupted_run(monkeypatch, tmp_path):
    # 60 spots, 48 train (split 0.2), batches of 16: 3 batches per epoch
    options = {"method": "mlp", "use_rep": "X_lat", "split": 0.2, "epochs": 4, "batch_size": 16, "progress": False}
    expected = table()
    st.tl.predict(expected, device="cpu", **options)

    adata, folder = table(), tmp_path / "train"
    before = adata.copy()
    _counting_mse(monkeypatch, fail_on_call=3 * 2 + 2)  # dies in epoch 3
    with pytest.raises(Crash):
        st.tl.predict(adata, device="cpu", checkpoint=folder, **options)
    assert_adata_equal(adata, before)  # nothing written into the AnnData

    calls = _counting_mse(monkeypatch)
    st.tl.predict(adata, device="cpu", checkpoint=folder, resume=True, **options)
    assert len(calls) == 3 * 2  # epochs 3 and 4 only
    np.testing.assert_array_equal(adata.layers["predicted_mlp"], expected.layers["predicted_mlp"])


def test_checkpoint_is_refused_where_it_cannot_apply(tmp_path):
    adata = table()
    with pytest.raises(InvalidParameterError, match="fitted in one step"):
        st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.2, checkpoint=tmp_path)
    with pytest.raises(InvalidParameterError, match="resume=True needs checkpoint="):
        st.tl.predict(adata, method="mlp", use_rep="X_lat", split=0.2, resume=True, progress=False)
