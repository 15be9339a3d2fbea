"""Checkpoints prove they belong to the run: damaged, replaced or foreign ones are refused, never trusted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import table

import stmorph as st
from stmorph.errors import CheckpointMismatchError, InvalidParameterError
from stmorph.tl._embed_resume import EMBEDDINGS_FILE, PROGRESS_FILE

BATCH = 8  # 60 spots → 8 batches


def _embed(adata, folder, **kwargs):
    st.tl.embed(adata, model="hed", batch_size=BATCH, checkpoint=folder, progress=False, **kwargs)


@pytest.fixture
def finished(tmp_path):
    """A table and the folder of a finished embedding checkpoint of it."""
    adata, folder = table(), tmp_path / "ckpt"
    _embed(adata, folder)
    return adata, folder


def _resume_refused(adata, folder, match: str) -> None:
    before = adata.copy()
    with pytest.raises(CheckpointMismatchError, match=match):
        _embed(adata, folder, resume=True, key_added="resumed")
    assert_adata_equal(adata, before)


def test_ck5_truncated_embeddings_file_is_refused_not_zero_extended(finished):
    adata, folder = finished
    path = folder / EMBEDDINGS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # 40 of 120 rows' worth of bytes, as a full disk leaves it
    _resume_refused(adata, folder, "truncated or replaced")
    assert path.stat().st_size == len(data) // 3  # the refused checkpoint was only read, never extended


def test_ck6_array_of_another_shape_or_dtype_is_refused(finished):
    adata, folder = finished
    np.save(folder / EMBEDDINGS_FILE, np.zeros((adata.n_obs, 7)))  # float64 (N, 7): not the 57-d float32 rows
    _resume_refused(adata, folder, EMBEDDINGS_FILE)
    dim = adata.obsm["X_hed"].shape[1]
    np.save(folder / EMBEDDINGS_FILE, np.zeros((adata.n_obs, 2 * dim), np.float16))  # same byte size
    _resume_refused(adata, folder, r"float16 \(60, 114\) array; the run wrote float32 \(60, 57\)")


def test_rows_changed_after_they_were_recorded_are_refused(finished):
    adata, folder = finished
    rows = np.load(folder / EMBEDDINGS_FILE)
    rows[20] = 0.0  # same file size, shape and dtype; batch 2's content differs
    np.save(folder / EMBEDDINGS_FILE, rows)
    _resume_refused(adata, folder, r"finished batch\(es\) \[2\]")


def test_ck7_other_patches_under_the_same_key_are_refused(finished):
    adata, folder = finished
    adata.obsm["patches"] = adata.obsm["patches"][::-1].copy()  # other pixels, same spots, key and shape
    _resume_refused(adata, folder, r"\['patches_blake2b'\] differ")


def test_other_image_region_of_lazy_patches_is_refused(tmp_path):
    sdata = st.datasets.simulate(60, 12, n_planted=3, random_state=0, spot_px=16)
    st.pp.extract_patches(sdata, patch_size=16, store="lazy", progress=False)
    adata, folder = sdata.tables["table"], tmp_path / "ckpt"
    _embed(adata, folder, image=sdata)
    centres = adata.obsm["patches_centres_px"]
    adata.obsm["patches_centres_px"] = centres + 3.0  # the windows moved: another image region
    with pytest.raises(InvalidParameterError, match="sample windows hold other pixels"):  # the extraction's hash
        _embed(adata, folder, image=sdata, resume=True)
    record = adata.uns["stmorph"]["patches"]["patches"]
    sample_hashes = record.pop("sample_hashes")  # as an extraction without those hashes: the checkpoint still refuses
    with pytest.raises(CheckpointMismatchError, match="patches_blake2b"):
        _embed(adata, folder, image=sdata, resume=True)
    record["sample_hashes"] = sample_hashes
    adata.obsm["patches_centres_px"] = centres
    _embed(adata, folder, image=sdata, resume=True, key_added="again")  # the true run still resumes
    np.testing.assert_array_equal(adata.obsm["again"], adata.obsm["X_hed"])


def test_damaged_progress_record_is_refused_by_name(finished):
    adata, folder = finished
    (folder / PROGRESS_FILE).write_text('{"done": [0, 1]')
    _resume_refused(adata, folder, f"{PROGRESS_FILE}.*is damaged")


def test_a_resumed_checkpoint_is_opened_read_only(finished, monkeypatch):
    adata, folder = finished
    modes = []
    real = np.load

    def load(*args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", load)
    before = (folder / EMBEDDINGS_FILE).stat().st_mtime_ns
    _embed(adata, folder, resume=True, key_added="again")  # every batch finished: nothing to write
    assert modes == ["r"]
    assert (folder / EMBEDDINGS_FILE).stat().st_mtime_ns == before
    np.testing.assert_array_equal(adata.obsm["again"], adata.obsm["X_hed"])


def test_progress_records_shape_size_and_checksums(finished):
    adata, folder = finished
    rows = json.loads((folder / PROGRESS_FILE).read_text())["rows"]
    assert rows["shape"] == [adata.n_obs, 57]
    assert rows["size"] == (folder / EMBEDDINGS_FILE).stat().st_size
    assert sorted(map(int, rows["batches"])) == list(range(8))


MLP = {"method": "mlp", "use_rep": "X_lat", "split": 0.2, "batch_size": 16, "device": "cpu", "progress": False}


@pytest.fixture
def trained(tmp_path):
    """A table and the folder of a finished 6-epoch MLP training checkpoint on it."""
    adata, folder = table(), tmp_path / "train"
    st.tl.predict(adata, checkpoint=folder, epochs=6, **MLP)
    return adata, folder


def _predict_refused(adata, folder, match: str, **options) -> None:
    before = adata.copy()
    with pytest.raises(CheckpointMismatchError, match=match):
        st.tl.predict(adata, checkpoint=folder, resume=True, key_added="resumed", **{**MLP, **options})
    assert_adata_equal(adata, before)


def test_t4_another_reference_of_the_same_shape_is_refused(trained):
    adata, folder = trained
    other = adata.copy()
    other.X = np.asarray(other.X)[::-1].copy()  # other expression, same spots, genes and shape
    _predict_refused(other, folder, r"\['expression_blake2b'\] differ", epochs=6)


def test_t4_other_embeddings_or_genes_are_refused(trained):
    adata, folder = trained
    other = adata.copy()
    other.obsm["X_lat"] = other.obsm["X_lat"] * 2
    _predict_refused(other, folder, r"\['inputs_blake2b'\] differ", epochs=6)
    renamed = adata.copy()
    renamed.var_names = [f"g{i}" for i in range(adata.n_vars)]
    _predict_refused(renamed, folder, r"\['genes_blake2b'\] differ", epochs=6)


def test_t5_other_epochs_or_settings_are_refused(trained):
    adata, folder = trained
    _predict_refused(adata, folder, r"\['epochs'\] differ \(checkpoint \[6\], now \[3\]\)", epochs=3)
    _predict_refused(adata, folder, r"\['lr'\] differ", epochs=6, lr=0.5)
    _predict_refused(adata, folder, r"'random_state'\] differ", epochs=6, random_state=1)  # and the split


def test_the_same_training_resumes_to_the_same_predictions(trained):
    adata, folder = trained
    st.tl.predict(adata, checkpoint=folder, resume=True, key_added="resumed", epochs=6, **MLP)
    np.testing.assert_array_equal(adata.layers["resumed"], adata.layers["predicted_mlp"])


def test_damaged_training_checkpoint_is_refused_by_name(trained):
    from stmorph.models._train import TRAIN_CHECKPOINT

    adata, folder = trained
    path = folder / TRAIN_CHECKPOINT
    path.write_bytes(path.read_bytes()[:-100])
    _predict_refused(adata, folder, f"{TRAIN_CHECKPOINT}.*is damaged", epochs=6)
