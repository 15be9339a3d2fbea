"""Damaged and hostile files give named stmorph errors that name the file or field, never raw library errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _adata_compare import assert_adata_equal
from bad_inputs import table

import stmorph as st
from stmorph.errors import (
    DamagedFileError,
    InputTypeError,
    InvalidParameterError,
    ModelFileError,
    PathKindError,
    UnsafeCheckpointError,
)
from stmorph.models import load_state_dict_safely

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cut(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _no_unsafe_advice(err: BaseException) -> None:
    """The error, and any error it carries, never suggests loading the file unsafely."""
    chain = [err, err.__cause__, None if err.__suppress_context__ else err.__context__]
    assert not any("weights_only=False" in str(e) for e in chain if e is not None)


# ------------------------------------------------------------------------------ weights files
def _weights(tmp_path: Path, kind: str) -> Path:
    from safetensors.torch import save_file

    state = {"weight": torch.arange(4096, dtype=torch.float32)}
    if kind.endswith("safetensors"):
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pt"
        torch.save(state, path)
    if kind.startswith("truncated"):
        _cut(path)
    elif kind.startswith("text"):
        path.write_text("this is not a checkpoint\n")
    return path


@pytest.mark.parametrize("kind", ["truncated_pt", "text_pt", "truncated_safetensors", "text_safetensors"])
def test_damaged_weights_file_is_named(tmp_path, kind):
    path = _weights(tmp_path, kind)
    with pytest.raises(DamagedFileError, match="truncated or of another format") as info:
        load_state_dict_safely(path)
    assert str(path) in str(info.value) and isinstance(info.value, OSError)
    _no_unsafe_advice(info.value)


def test_truncated_legacy_pickle_is_refused_without_suggesting_unsafe_loading(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"weight": torch.zeros(64)}, path, _use_new_zipfile_serialization=False)
    _cut(path)
    with pytest.raises((UnsafeCheckpointError, DamagedFileError)) as info:
        load_state_dict_safely(path)
    assert str(path) in str(info.value)
    _no_unsafe_advice(info.value)


def test_pickle_refusal_never_passes_on_torchs_unsafe_advice(tmp_path):
    from bad_inputs import pickle_checkpoint

    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict_safely(pickle_checkpoint())
    _no_unsafe_advice(info.value)


def test_weights_path_that_is_a_folder_is_named(tmp_path):
    with pytest.raises(PathKindError, match=r"weights: .* is a folder; expected file"):
        load_state_dict_safely(tmp_path)


def test_damaged_training_checkpoint_is_named(tmp_path):
    adata = table()
    folder = tmp_path / "train"
    folder.mkdir()
    (folder / "train_state.pt").write_bytes(b"PK\x03\x04 cut short")
    before = adata.copy()
    options = {"method": "mlp", "use_rep": "X_lat", "split": 0.2, "epochs": 1, "progress": False}
    with pytest.raises(DamagedFileError, match=r"training checkpoint .*train_state\.pt"):
        st.tl.predict(adata, checkpoint=folder, resume=True, **options)
    assert_adata_equal(adata, before)


# ------------------------------------------------------------------------- a saved model folder
@pytest.fixture(scope="module")
def saved_bleep(tmp_path_factory):
    options = {"use_rep": "X_lat", "split": 0.2, "epochs": 1, "return_model": True, "progress": False}
    model = st.tl.predict(table(), method="bleep", **options)
    folder = tmp_path_factory.mktemp("model") / "bleep"
    model.save(folder)
    return folder


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("genes", 5, "field 'genes' must be list"),
        ("genes", [1, 2], "field 'genes' must hold gene names"),
        ("params", "alpha=1", "field 'params' must be dict"),
        ("input_shape", 3, "field 'input_shape' must be list"),
        ("history", {"loss": ["not a number"]}, "does not describe a loadable model"),
        ("params", {"temperature": "one"}, "does not describe a loadable model"),
        ("method", None, "field 'method' must be str"),
    ],
)
def test_damaged_model_config_field_is_named(saved_bleep, tmp_path, field, value, named):
    folder = tmp_path / "bleep"
    shutil.copytree(saved_bleep, folder)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=named) as info:
        st.models.load(folder)
    assert "config.json" in str(info.value)


def test_model_save_path_that_is_a_file_is_refused(saved_bleep, tmp_path):
    model = st.models.load(saved_bleep)
    blocker = tmp_path / "bleep"
    blocker.write_text("a file, not a folder")
    with pytest.raises(PathKindError, match="is a file"):
        model.save(blocker)
    assert blocker.read_text() == "a file, not a folder"
    with pytest.raises(PathKindError, match="is a file"):
        st.models.load(blocker)


# ------------------------------------------------------------------ embedding checkpoint progress
@pytest.fixture(scope="module")
def embed_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embed") / "ckpt"
    st.tl.embed(table(), model="hed", batch_size=16, checkpoint=folder, progress=False)
    return folder


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda state: "{ cut", "is not valid JSON"),
        (lambda state: json.dumps([state]), "must hold a JSON object"),
        (lambda state: json.dumps({**state, "done": "0,1"}), "field 'done' must be list"),
        (lambda state: json.dumps({**state, "done": ["x"]}), "field 'done' must hold batch numbers"),
        (lambda state: json.dumps({k: v for k, v in state.items() if k != "fingerprint"}), "lacks the field"),
    ],
)
def test_damaged_progress_json_is_named(embed_checkpoint, tmp_path, damage, named):
    folder = tmp_path / "ckpt"
    shutil.copytree(embed_checkpoint, folder)
    progress = folder / "progress.json"
    progress.write_text(damage(json.loads(progress.read_text())))
    adata = table()
    before = adata.copy()
    with pytest.raises(DamagedFileError, match=named) as info:
        st.tl.embed(adata, model="hed", batch_size=16, checkpoint=folder, resume=True, progress=False)
    assert "progress.json" in str(info.value)
    assert_adata_equal(adata, before)


@pytest.mark.parametrize(
    "call",
    [
        lambda a, path: st.tl.embed(a, model="hed", checkpoint=path, progress=False),
        lambda a, path: st.tl.predict(a, method="mlp", use_rep="X_lat", split=0.2, epochs=1, checkpoint=path),
    ],
    ids=["embed", "predict"],
)
def test_checkpoint_path_that_is_a_file_is_refused_before_work(tmp_path, call):
    blocker = tmp_path / "ckpt"
    blocker.write_text("keep me")
    adata = table()
    before = adata.copy()
    with pytest.raises(PathKindError, match=r"checkpoint: .*ckpt' is a file"):
        call(adata, blocker)
    assert blocker.read_text() == "keep me"
    assert_adata_equal(adata, before)


# --------------------------------------------------------------------------- HER2ST files
@pytest.fixture
def section_copy(tmp_path, data_dir):
    """A writable copy of section C2's three files under ``tmp_path/her2st``."""
    folder = tmp_path / "her2st"
    folder.mkdir()
    for suffix in ("_HE.jpg", "_counts.tsv.gz", "_spots.tsv"):
        shutil.copyfile(data_dir / "her2st" / f"C2{suffix}", folder / f"C2{suffix}")
    return folder


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("C2_HE.jpg", _cut),
        ("C2_HE.jpg", lambda p: p.write_text("not an image")),
        ("C2_counts.tsv.gz", lambda p: _cut(p, 0.3)),
        ("C2_counts.tsv.gz", lambda p: p.write_bytes(b"\x1f\x8b\x08garbage")),
    ],
    ids=["truncated jpeg", "text as jpeg", "cut tsv.gz", "broken gzip"],
)
def test_damaged_her2st_file_is_named(section_copy, name, damage):
    damage(section_copy / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DamagedFileError) as info:
            st.datasets.her2st("C2", data_dir=section_copy.parent)
    assert name in str(info.value) and isinstance(info.value, OSError)


def test_section_name_must_be_a_plain_name(data_dir):
    with pytest.raises(InvalidParameterError, match="section must be a HER2ST section name"):
        st.datasets.her2st("../her2st/C2", data_dir=data_dir)


# ------------------------------------------------------------------- Visium metadata in uns
def _visium(scalefactors: dict):
    adata = table()
    adata.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    image = np.full((200, 200, 3), 200, dtype=np.uint8)
    adata.uns["spatial"] = {"lib": {"images": {"hires": image}, "scalefactors": scalefactors}}
    return adata


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spot_diameter_fullres", 0),
        ("spot_diameter_fullres", np.nan),
        ("microns_per_pixel", -0.5),
        ("microns_per_pixel", np.nan),
        ("microns_per_pixel", "0.5"),
        ("tissue_hires_scalef", np.inf),
    ],
)
def test_bad_visium_scalefactor_is_named(field, value):
    factors = {"spot_diameter_fullres": 100.0, "tissue_hires_scalef": 1.0, field: value}
    adata = _visium(factors)
    before = adata.copy()
    with pytest.raises(InvalidParameterError, match=rf"uns\['spatial'\]\['lib'\]\['scalefactors'\]\['{field}'\]"):
        st.pp.extract_patches(adata, patch_size=16, progress=False)
    assert_adata_equal(adata, before)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda a: a.uns.__setitem__("spatial", "lib"), r"uns\['spatial'\] must be a dict"),
        (lambda a: a.uns.__setitem__("spatial", {"lib": [1, 2]}), r"uns\['spatial'\]\['lib'\] must be a dict"),
        (lambda a: a.uns["spatial"]["lib"].__setitem__("scalefactors", 0.5), r"\['scalefactors'\] must be a dict"),
    ],
)
@pytest.mark.parametrize("function", ["extract_patches", "pl.spatial"])
def test_non_dict_uns_spatial_is_named(edit, named, function):
    adata = _visium({"spot_diameter_fullres": 100.0, "tissue_hires_scalef": 1.0})
    edit(adata)
    before = adata.copy()
    with pytest.raises(InputTypeError, match=named) as info:
        if function == "extract_patches":
            st.pp.extract_patches(adata, patch_size=16, progress=False)
        else:
            st.pl.spatial(adata, adata.var_names[0], layers=["measured"], show=False)
    assert isinstance(info.value, TypeError)
    assert_adata_equal(adata, before)


def _chunked_zarr_slide(path: Path):
    """A simulated slide written to a zarr store with 128 px image chunks, read back lazily."""
    from spatialdata import read_zarr
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    sdata = st.datasets.simulate(40, 5, n_planted=1, random_state=1)
    image = sdata.images["he"]
    sdata.images["he"] = Image2DModel.parse(
        image.data, dims=image.dims, chunks=(3, 128, 128), transformations=get_transformation(image, get_all=True)
    )
    sdata.write(path)
    return read_zarr(path)


def test_missing_zarr_chunk_is_located_and_only_windows_over_it_are_refused(tmp_path):
    from stmorph._image import missing_chunk_boxes

    intact = _chunked_zarr_slide(tmp_path / "intact.zarr")
    expected = st.pp.extract_patches(intact, patch_size=32, progress=False, copy=True).obsm["patches"]
    assert missing_chunk_boxes(intact.images["he"])[0].shape == (0, 4)

    damaged = _chunked_zarr_slide(tmp_path / "damaged.zarr")
    (tmp_path / "damaged.zarr" / "images" / "he" / "s0" / "c" / "0" / "2" / "3").unlink()  # rows 256:384, cols 384:512
    assert missing_chunk_boxes(damaged.images["he"])[0].tolist() == [[256, 384, 384, 512]]
    with pytest.raises(DamagedFileError, match="missing from the zarr store"):
        st.pp.extract_patches(damaged, patch_size=32, progress=False, copy=True)

    # spots whose 32 px windows stay > 150 px away from the hole are read, and equal the intact store's patches
    xy = np.array([g.coords[0] for g in damaged.shapes["spots"].geometry])
    far = (np.abs(xy[:, 0] - 448) > 64 + 150) | (np.abs(xy[:, 1] - 320) > 64 + 150)
    assert 0 < far.sum() < len(far)
    damaged.tables["table"] = damaged.tables["table"][far].copy()
    kept = st.pp.extract_patches(damaged, patch_size=32, progress=False, copy=True)
    np.testing.assert_array_equal(kept.obsm["patches"], expected[far])
