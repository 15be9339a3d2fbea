"""A user's own values are never dropped silently: replaced keys warn, a non-dict node on the way is refused."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import table

import stmorph as st
from stmorph._anndata import commit_outputs
from stmorph.errors import InputTypeError, InvalidParameterError


def _fresh():
    return ad.AnnData(np.ones((3, 2), np.float32))


@pytest.mark.parametrize(
    ("uns", "blocker"),
    [
        ({"stmorph": "my notes"}, r"uns\['stmorph'\] holds a str"),
        ({"stmorph": {"predict": 7}}, r"\['stmorph', 'predict'\] holds a int"),
    ],
)
def test_a_user_value_on_the_way_to_a_record_is_refused_and_kept(uns, blocker):
    adata = _fresh()
    adata.uns.update(uns)
    before = adata.copy()
    with pytest.raises(InputTypeError, match=blocker):
        commit_outputs(adata, obsm={"X_new": np.zeros((3, 1))}, uns={("stmorph", "predict", "ridge"): {"k": 1}})
    assert_adata_equal(adata, before)  # not even the obsm entry was written


def test_a_users_own_key_next_to_a_record_is_kept_without_warning():
    adata = _fresh()
    adata.uns["stmorph"] = {"predict": {"mine": "keep me"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        commit_outputs(adata, uns={("stmorph", "predict", "ridge"): {"k": 1}})
    assert adata.uns["stmorph"]["predict"] == {"mine": "keep me", "ridge": {"k": 1}}


def test_a_users_value_at_the_record_itself_is_replaced_with_the_warning():
    adata = _fresh()
    adata.uns["stmorph"] = {"predict": {"ridge": "my own"}}
    with pytest.warns(UserWarning, match=r"replaced existing uns\['stmorph', 'predict', 'ridge'\]"):
        commit_outputs(adata, uns={("stmorph", "predict", "ridge"): {"k": 1}})


@pytest.mark.parametrize("slot", ["obsm", "uns"])
def test_keys_with_a_slash_are_refused(slot):
    adata = _fresh()
    before = adata.copy()
    outputs = {"obsm": {"a/b": np.zeros((3, 1))}} if slot == "obsm" else {"uns": {("stmorph", "eps", "a/b"): {}}}
    with pytest.raises(InvalidParameterError, match=r"\['a/b'\] \(key_added\) hold '/'"):
        commit_outputs(adata, **outputs)
    assert_adata_equal(adata, before)


def test_a_tool_refuses_to_overwrite_a_users_string_in_uns_stmorph():
    adata = table()
    adata.uns["stmorph"] = "notes about this slice"
    before = adata.copy()
    with pytest.raises(InputTypeError, match="does not overwrite it"):
        st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.2)
    assert_adata_equal(adata, before)
