"""The ``stmorph`` command: the demo writes its whole story; ``eps`` and ``predict`` work on its results."""

from __future__ import annotations

import contextlib
import io
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

import stmorph as st
from stmorph.cli import main

ENCODER = "colour_cli_test"


def colour_features(patches: np.ndarray, grid: int = 4) -> np.ndarray:
    """A cheap image embedding: mean and SD of each colour channel in a grid of windows."""
    n, size = patches.shape[0], patches.shape[1] // grid * grid
    cells = patches[:, :size, :size].reshape(n, grid, size // grid, grid, size // grid, 3).astype(np.float32)
    return np.concatenate([cells.mean(axis=(2, 4)).reshape(n, -1), cells.std(axis=(2, 4)).reshape(n, -1)], axis=1)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, data_dir):
    """``stmorph demo`` on C2 and C3 with a cheap encoder, 150 genes and 3 BLEEP epochs (run once)."""
    st.tl.register_encoder(ENCODER, colour_features, overwrite=True)
    out = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--out", str(out), "--sections", "C2", "C3", "--data-dir", str(data_dir)]
    argv += ["--encoder", ENCODER, "--n-genes", "150", "--epochs", "3", "--no-progress"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


def test_demo_writes_results_tables_plots_and_a_self_contained_report(demo_run):
    out, printed = demo_run
    report = out / "report.html"
    assert re.search(rf"open the report: {re.escape(str(report.resolve()))}", printed)
    pngs = sorted(out.glob("*.png"))
    kinds = {p.stem.rsplit("_", 1)[0] for p in pngs if p.stem != "sps_vs_score"}
    assert kinds == {
        "ranking",
        "eps_vs_score",
        "spatial",
        "spatial_pattern",
        "gene_correlation",
        "training",
        "cv_table",
    }
    assert len(pngs) == 2 * 7 + 1
    page = report.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(pngs)
    assert 'src="http' not in page and "<script" not in page  # static, nothing fetched


def test_demo_results_hold_every_step_per_section(demo_run):
    out, _ = demo_run
    eps = pd.read_csv(out / "eps.csv", index_col=0)
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(eps.columns) == ["C2", "C3"]
    assert sorted(zip(metrics["section"], metrics["method"])) == sorted(
        (s, m) for s in ("C2", "C3") for m in ("auto", "bleep")
    )
    cv = pd.read_csv(out / "cv.csv")  # one reference: the CV folds are its contiguous spatial blocks
    assert set(cv["section"]) == {"C2", "C3"} and set(cv["candidate"]) == {
        "knn(k=cv)",
        "ridge(alpha=cv, standardize=True)",
    }
    for _, rows in cv.groupby("section"):
        means = rows.groupby("candidate")["pearson_hvg50"].mean()
        assert rows["selected"].iloc[0] == means.idxmax()
        assert rows["selected"].iloc[0] in (out / "report.html").read_text(encoding="utf-8")
    for section in ("C2", "C3"):
        result = ad.read_h5ad(out / section / "results.h5ad")
        assert f"X_{ENCODER}" in result.obsm
        predicted = result.layers["predicted_auto"]
        assert np.isfinite(predicted).any(axis=0).sum() == 150
        # Pearson is defined wherever BLEEP's prediction varies (a rare HVG none of whose retrieved
        # reference spots express it gets a constant prediction)
        bleep = result.layers["predicted_bleep"]
        varies = np.isfinite(bleep).all(axis=0) & (np.std(bleep, axis=0) > 1e-5)
        assert varies.sum() > 100 and np.isfinite(result.var.loc[varies, "pearson_bleep"]).all()
        np.testing.assert_allclose(eps[section].dropna(), result.var["eps"].dropna().loc[eps[section].dropna().index])
        # a results file is directly plottable: it carries its image in uns["spatial"]
        assert st.pl.spatial(result, "ERBB2", show=False) is not None


def test_predict_command_reproduces_an_independent_ridge(demo_run, tmp_path):
    out, _ = demo_run
    target = tmp_path / "C2_predicted.h5ad"
    argv = ["predict", str(out / "C2" / "results.h5ad"), "--reference", str(out / "C3" / "results.h5ad")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--method", "ridge", "--use-rep", f"X_{ENCODER}", "--evaluate", "--out", str(target)]) == 0
    query, reference = ad.read_h5ad(target), ad.read_h5ad(out / "C3" / "results.h5ad")
    # --evaluate prints the summary row and stores the per-gene metrics in the written file
    summary = query.uns["stmorph"]["evaluate"]["ridge"]["summary"]
    assert summary["pearson_all"] == pytest.approx(np.nanmean(query.var["pearson_ridge"]))
    assert re.search(rf"ridge\s.*{summary['pearson_all']:.6f}", printed.getvalue())
    genes = query.var_names.intersection(reference.var_names)[:20]
    # in float64: sklearn solves float32 input in float32, ~2e-3 off the exact solution on these features
    x_ref, x_query = (a.obsm[f"X_{ENCODER}"].astype(np.float64) for a in (reference, query))
    fitted = Ridge(alpha=1.0).fit(x_ref, np.asarray(reference[:, genes].X, dtype=np.float64))
    expected = fitted.predict(x_query)
    np.testing.assert_allclose(query[:, genes].layers["predicted_ridge"], expected, rtol=1e-3, atol=1e-3)


def test_eps_command_writes_genes_by_slices(demo_run, tmp_path):
    out, _ = demo_run
    inputs = [str(out / s / "results.h5ad") for s in ("C2", "C3")]
    assert main(["eps", *inputs, "--use-rep", f"X_{ENCODER}", "--prepared", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "eps.csv", index_col=0)
    summary = pd.read_csv(tmp_path / "sps.csv")
    assert list(table.columns) == ["C2", "C3"] and list(summary["slice"]) == ["C2", "C3"]
    demo_eps = pd.read_csv(out / "eps.csv", index_col=0)
    pd.testing.assert_frame_equal(table.loc[demo_eps.index], demo_eps, check_names=False)
