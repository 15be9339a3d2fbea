"""A failure in the middle of a tool leaves the AnnData exactly as before; replaced keys are announced."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import table

import stmorph as st
from stmorph.tl import _embed_engine, _eps, _evaluate, _predict


class InjectedFailure(RuntimeError):
    """Raised by a monkeypatched internal step."""


def _fail(*args, **kwargs):
    raise InjectedFailure("injected failure")


def _run_failing(adata, call):
    """Run ``call`` (which must fail with the injected error) and check ``adata`` did not change."""
    before = adata.copy()
    with pytest.raises(InjectedFailure):
        call()
    assert_adata_equal(adata, before)


def test_eps_failure_after_graph_and_geary_leaves_adata_unchanged(monkeypatch):
    adata = table()
    monkeypatch.setattr(_eps, "bh_qvalues", _fail)  # the graph and Geary's C are computed by then
    _run_failing(adata, lambda: st.tl.eps(adata, use_rep="X_lat", progress=False))


def test_eps_failure_when_replacing_earlier_results_keeps_them(monkeypatch):
    adata = table()
    st.tl.eps(adata, use_rep="X_lat", progress=False)
    monkeypatch.setattr(_eps, "bh_qvalues", _fail)
    _run_failing(adata, lambda: st.tl.eps(adata, use_rep="X_lat", n_neighbors=3, progress=False))


def test_predict_failure_after_fit_and_prediction_leaves_adata_unchanged(monkeypatch):
    adata = table()
    monkeypatch.setattr(_predict, "_plain", _fail)  # builds the record after fit + predict
    _run_failing(adata, lambda: st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.2, progress=False))


def test_embed_failure_after_some_batches_leaves_adata_unchanged(monkeypatch):
    adata = table()
    hed = _embed_engine.inference_encoder("hed", None)
    calls = []

    def flaky(patches):
        calls.append(len(patches))
        if len(calls) == 3:
            raise InjectedFailure("encoder crashed on batch 3")
        return hed(patches)

    monkeypatch.setattr(_embed_engine, "inference_encoder", lambda model, weights: flaky)
    _run_failing(adata, lambda: st.tl.embed(adata, model="hed", batch_size=16, progress=False))
    assert calls == [16, 16, 16]


def test_evaluate_failure_after_per_gene_metrics_leaves_adata_unchanged(monkeypatch):
    adata = table()
    st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.3, progress=False)
    monkeypatch.setattr(_evaluate, "hit_at", _fail)
    _run_failing(adata, lambda: st.tl.evaluate(adata, "predicted_ridge", n_top=3))


def test_replacing_results_warns_naming_every_replaced_key():
    adata = table()
    st.tl.eps(adata, use_rep="X_lat", progress=False)
    with pytest.warns(UserWarning, match="stmorph replaced existing") as record:
        st.tl.eps(adata, use_rep="X_lat", n_neighbors=3, progress=False)
    message = " ".join(str(w.message) for w in record if "stmorph replaced" in str(w.message))
    for key in ("var['eps']", "var['eps_pval']", "var['eps_qval']", "obsp['image_connectivities']", "uns['sps']"):
        assert key in message, key


def test_predict_again_warns_about_the_replaced_layer_only_under_key_added():
    adata = table()
    st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.2, progress=False)
    with pytest.warns(UserWarning, match=r"layers\['predicted_ridge'\]"):
        st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.2, progress=False, alpha=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new key_added replaces nothing: no warning at all
        st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.2, key_added="ridge2", progress=False)
    assert not np.array_equal(adata.layers["ridge2"], adata.layers["predicted_ridge"])


def test_first_run_writes_without_warning():
    adata = table()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        st.tl.embed(adata, model="hed", progress=False)
        st.tl.eps(adata, use_rep="X_hed", progress=False)
