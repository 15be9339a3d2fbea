"""``st.get``: stored results read back as tables, equal to what the tools wrote."""

from __future__ import annotations

import numpy as np
import pytest

import stmorph as st
from stmorph.errors import StmorphKeyError


@pytest.fixture(scope="module")
def c3(her2st_sdata):
    """The real section C3 with HED colour features, EPS and a within-slice ridge prediction, evaluated."""
    table = st.pp.extract_patches(her2st_sdata("C3"), progress=False, copy=True)
    st.tl.embed(table, model="hed", progress=False)
    st.pp.prepare_expression(table)
    st.tl.eps(table, use_rep="X_hed", progress=False)
    st.tl.predict(table, method="ridge", use_rep="X_hed", split=0.3)
    st.tl.evaluate(table, "predicted_ridge")
    return table


def test_eps_df_on_a_real_section_is_the_var_columns_most_predictable_first(c3):
    table = st.get.eps_df(c3)
    assert list(table.columns) == ["eps", "pval", "qval", "n_detected", "eps_spatial"]
    assert table.index.is_unique and set(table.index) == set(c3.var_names)
    pairs = [("eps", "eps"), ("pval", "eps_pval"), ("qval", "eps_qval"), ("eps_spatial", "eps_spatial")]
    for column, var_column in pairs:
        np.testing.assert_array_equal(table[column], c3.var.loc[table.index, var_column])
    eps = table["eps"].dropna().to_numpy()
    assert len(eps) > 100 and np.all(np.diff(eps) <= 0)
    assert table["eps"].isna().sum() == c3.var["eps"].isna().sum()
    assert table["eps"].iloc[len(eps) :].isna().all()  # genes without an EPS come last
    unsorted = st.get.eps_df(c3, sort=False)
    assert list(unsorted.index) == list(c3.var_names)


def test_evaluation_df_is_the_summary_evaluate_returns_and_takes_the_layer_or_the_name(c3):
    stored = st.get.evaluation_df(c3, "predicted_ridge")
    returned = st.tl.evaluate(c3, "predicted_ridge", inplace=False)
    np.testing.assert_allclose(stored.to_numpy(float), returned.to_numpy(float), equal_nan=True)
    assert list(stored.columns) == list(returned.columns)
    assert st.get.evaluation_df(c3, "ridge").equals(stored)
    with pytest.raises(StmorphKeyError, match=r"st\.tl\.evaluate"):
        st.get.evaluation_df(c3, "predicted_knn")


@pytest.mark.usefixtures("fast_auto")
def test_cv_df_marks_the_candidate_auto_chose(sim_sdata):
    sections = []
    for seed in range(3):
        table = st.datasets.simulate(80, 12, n_planted=3, random_state=seed).tables["table"]
        st.pp.prepare_expression(table)
        sections.append(table)
    query, *refs = sections
    st.tl.predict(query, refs, method="auto", use_rep="latent", progress=False)
    table = st.get.cv_df(query)
    record = query.uns["stmorph"]["predict"]["predicted_auto"]
    assert table["candidate"].nunique() >= 2 and len(table) == 2 * table["candidate"].nunique()  # × 2 folds
    assert set(table.loc[table["selected"], "candidate"]) == {record["selected"]}
    means = table.groupby("candidate")["pearson_hvg50"].mean()
    assert means.idxmax() == record["selected"]
    with pytest.raises(StmorphKeyError, match='method="auto"'):
        st.get.cv_df(refs[0])


def test_trust_df_is_the_trust_columns_predict_wrote_and_names_the_call_when_none_are_stored(c3):
    table = st.get.trust_df(c3, "predicted_ridge")
    assert list(table.index) == list(c3.var_names)
    assert {"expected_r", "eps", "eps_qval", "trusted"} <= set(table.columns)
    for column in table.columns:
        np.testing.assert_array_equal(table[column], c3.var[f"predicted_ridge_{column}"])
    with pytest.raises(StmorphKeyError, match=r"st\.tl\.predict"):
        st.get.trust_df(c3, "predicted_knn")
