"""Model weights are read only through safetensors or ``torch.load(weights_only=True)``; pickles are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bad_inputs import table

import stmorph as st
from stmorph.errors import ModelFileError, UnsafeCheckpointError
from stmorph.models import load_state_dict_safely
from stmorph.models._io import WEIGHTS_FILE


class _Trap:
    """Unpickling this object touches ``marker``: proof that code from the file would have run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _pickle_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"weight": torch.zeros(2, 2), "trap": _Trap(marker)}, path)
    return path


def test_pickle_bearing_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "code-ran"
    path = _pickle_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"would unpickle arbitrary Python objects.*refuses") as info:
        load_state_dict_safely(path)
    assert str(path) in str(info.value) and "state_dict()" in str(info.value), "the message says what to do"
    assert not marker.exists()


def test_embed_refuses_a_pickle_checkpoint_and_leaves_adata_unchanged(tmp_path):
    marker = tmp_path / "code-ran"
    path = _pickle_checkpoint(tmp_path / "resnet18.pt", marker)
    adata = table()
    before = adata.copy()
    with pytest.raises(UnsafeCheckpointError):
        st.tl.embed(adata, model="resnet18", weights=path, progress=False)
    assert not marker.exists()
    assert set(adata.obsm) == set(before.obsm) and "embed" not in adata.uns.get("stmorph", {})


def test_saved_model_with_pickled_weights_is_refused(tmp_path):
    adata = table()
    model = st.tl.predict(
        adata, method="bleep", use_rep="X_lat", split=0.2, epochs=1, return_model=True, progress=False
    )
    folder = tmp_path / "bleep"
    model.save(folder)
    assert st.models.load(folder).genes == model.genes  # the intact folder loads
    marker = tmp_path / "code-ran"
    _pickle_checkpoint(folder / WEIGHTS_FILE, marker)
    with pytest.raises(ModelFileError, match="could not be read as safetensors"):
        st.models.load(folder)
    assert not marker.exists()


def test_plain_state_dicts_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    state = torch.nn.Linear(3, 2).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    save_file(state, tmp_path / "plain.safetensors")
    for name in ("plain.pt", "plain.safetensors"):
        loaded = load_state_dict_safely(tmp_path / name)
        assert set(loaded) == set(state)
        np.testing.assert_array_equal(loaded["weight"].numpy(), state["weight"].numpy())
