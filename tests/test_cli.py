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
    """``stmorph demo`` on C2 and C3 with a cheap encoder, 150 genes and 3 BLEEP epochs, auto's too (run once)."""
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
    cohort = {"sps_vs_score", "atlas_heatmap", "marker_panel", "encoders"}  # one figure each for all sections
    kinds = {p.stem.rsplit("_", 1)[0] for p in pngs if p.stem not in cohort}
    assert kinds == {
        "ranking",
        "eps_vs_score",
        "spatial",
        "spatial_pattern",
        "gene_correlation",
        "training",
        "cv_table",
    }
    assert len(pngs) == 2 * 7 + len(cohort) and cohort <= {p.stem for p in pngs}
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
    assert set(cv["section"]) == {"C2", "C3"} and set(cv["candidate"]) == {  # auto's defaults: context, ensemble,
        "knn(k=cv)",  # and BLEEP with context, its epochs from --epochs
        "ridge(alpha=cv, standardize=True)",
        "knn(k=cv, context=True)",
        "ridge(alpha=cv, standardize=True, context=True)",
        "ensemble(n_best=2)",
        "bleep(context=True, epochs=3)",
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
        trust = st.get.trust_df(result, "predicted_auto")  # written beside the prediction, read back from h5ad
        assert list(trust.columns) == ["expected_r", "expected_r_sd", "eps", "eps_qval", "trusted"]
        # NaN only where the gene's r is undefined on every fold (a prediction constant in each block)
        assert np.isfinite(trust["expected_r"]).sum() >= 140
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Which predictions to believe" in page and "trusted genes" in page
    encoders = pd.read_csv(out / "encoders.csv", index_col="encoder")  # the demo's encoder against hed
    assert list(encoders.index) == [f"X_{ENCODER}", "X_hed"]
    assert list(encoders.filter(like="probe_fold_").columns) == ["probe_fold_C2", "probe_fold_C3"]
    assert "Which image encoder suits these sections?" in page


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
    # the trust columns come with the prediction, and the command says how many genes are trusted
    n_trusted = int(query.var["predicted_ridge_trusted"].sum())
    assert f"{n_trusted} genes trusted" in printed.getvalue() and "expected_r_spearman" in summary


def test_predict_command_writes_intervals_around_the_prediction(demo_run, tmp_path):
    out, _ = demo_run
    target = tmp_path / "C2_intervals.h5ad"
    argv = ["predict", str(out / "C2" / "results.h5ad"), "--reference", str(out / "C3" / "results.h5ad")]
    argv += ["--method", "knn", "--use-rep", f"X_{ENCODER}", "--interval", "0.8", "--out", str(target)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    query = ad.read_h5ad(target)
    pred, lower, upper = (query.layers[f"predicted_knn{s}"] for s in ("", "_lower", "_upper"))
    predicted = np.isfinite(pred)  # NaN: genes the reference lacks, without an interval either
    assert predicted.mean() > 0.9 and np.array_equal(np.isfinite(lower), predicted)
    lower, pred, upper = lower[predicted], pred[predicted], upper[predicted]
    assert np.all(lower <= upper) and np.mean(upper - lower) > 0
    # the bounds are clipped to the references' range of each gene, which a prediction may leave
    assert np.mean((lower <= pred) & (pred <= upper)) > 0.9
    assert "predicted_knn_lower" in printed.getvalue() and "predicted_knn_upper" in printed.getvalue()


def test_eps_command_writes_genes_by_slices(demo_run, tmp_path):
    out, _ = demo_run
    inputs = [str(out / s / "results.h5ad") for s in ("C2", "C3")]
    assert main(["eps", *inputs, "--use-rep", f"X_{ENCODER}", "--prepared", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "eps.csv", index_col=0)
    summary = pd.read_csv(tmp_path / "sps.csv")
    assert list(table.columns) == ["C2", "C3"] and list(summary["slice"]) == ["C2", "C3"]
    demo_eps = pd.read_csv(out / "eps.csv", index_col=0)
    pd.testing.assert_frame_equal(table.loc[demo_eps.index], demo_eps, check_names=False)


def test_atlas_command_summarises_the_stored_eps_of_the_demo(demo_run, tmp_path):
    out, _ = demo_run
    inputs = [str(out / s / "results.h5ad") for s in ("C2", "C3")]
    demo_atlas = pd.read_csv(out / "atlas.csv", index_col=0)
    assert "The predictable-gene atlas of the sections" in (out / "report.html").read_text(encoding="utf-8")
    top = list(demo_atlas.index[demo_atlas["top"]])
    gmt = tmp_path / "sets.gmt"
    gmt.write_text(f"TOP\tthe top genes\t{chr(9).join(top)}\nREST\tothers\t{chr(9).join(demo_atlas.index[50:80])}\n")
    printed = _run(["atlas", *inputs, "--gene-sets", str(gmt), "--out", str(tmp_path / "h5ad")])
    assert "enrichment.png" in printed
    from_slices = pd.read_csv(tmp_path / "h5ad" / "atlas.csv", index_col=0)
    pd.testing.assert_frame_equal(from_slices, demo_atlas)  # the demo's own atlas: the same stored values
    assert {p.name for p in (tmp_path / "h5ad").glob("*.png")} == {
        "eps_heatmap.png",
        "marker_panel.png",
        "enrichment.png",
    }
    enrichment = pd.read_csv(tmp_path / "h5ad" / "enrichment.csv").set_index(["list", "term"])
    assert enrichment.loc[("top", "TOP"), "qval"] < 1e-6 and enrichment.loc[("top", "TOP"), "overlap"] == len(top)
    # from the EPS table alone (no q-values in it): the same means and flags, frac_significant unknown
    _run(["atlas", str(out / "eps.csv"), "--out", str(tmp_path / "csv")])
    from_table = pd.read_csv(tmp_path / "csv" / "atlas.csv", index_col=0)
    columns = ["mean_eps", "n_slices", "consistency", "top", "bottom"]
    pd.testing.assert_frame_equal(from_table[columns], demo_atlas[columns])
    assert from_table["frac_significant"].isna().all()


def test_atlas_command_needs_metadata_to_group_a_table(demo_run, tmp_path, capsys):
    out, _ = demo_run
    assert main(["atlas", str(out / "eps.csv"), "--groupby", "tissue", "--out", str(tmp_path)]) == 2
    assert "pass metadata=" in capsys.readouterr().err


def _run(argv: list[str]) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def colour_encoder():
    st.tl.register_encoder(ENCODER, colour_features, overwrite=True)
    return ENCODER


def test_embed_command_reads_a_space_ranger_folder_into_embeddings_of_its_patches(
    visium_folder, colour_encoder, tmp_path
):
    folder, image = visium_folder
    out = tmp_path / "C2.h5ad"
    printed = _run(["embed", str(folder), "--image", str(image), "--model", colour_encoder, "--out", str(out)])
    assert f"wrote {out} with obsm['X_{colour_encoder}']" in printed
    table = ad.read_h5ad(out)
    from spatialdata_io import visium

    expected = st.pp.extract_patches(visium(folder, dataset_id="C2", fullres_image_file=image), copy=True)
    np.testing.assert_allclose(table.obsm[f"X_{colour_encoder}"], colour_features(expected.obsm["patches"]))
    assert "tissue_fraction" in table.obs


def test_embed_command_takes_the_visium_hd_bin_size(visium_hd_folder, colour_encoder, tmp_path):
    out = tmp_path / "hd.h5ad"
    _run(["embed", str(visium_hd_folder), "--bin-size", "8", "--model", colour_encoder, "--out", str(out)])
    table = ad.read_h5ad(out)
    assert table.n_obs == (192 // 8) ** 2
    assert table.uns["stmorph"]["patches"]["patches"]["bin_size_um"] == 8


def test_eps_command_embeds_raw_inputs_first(visium_folder, colour_encoder, tmp_path):
    folder, image = visium_folder
    _run(["eps", str(folder), "--image", str(image), "--model", colour_encoder, "--out", str(tmp_path)])
    eps = pd.read_csv(tmp_path / "eps.csv", index_col=0)
    assert list(eps.columns) == ["C2"] and np.isfinite(eps["C2"]).sum() > 100


def test_inputs_are_checked_before_any_is_read(visium_folder, tmp_path, capsys):
    from stmorph._inputs import input_kind

    (tmp_path / "empty").mkdir()
    with pytest.raises(st.errors.InputTypeError, match="none of: a Visium HD Space Ranger folder"):
        input_kind(tmp_path / "empty")
    code, err = run_cli(["eps", visium_folder[0], tmp_path / "missing.h5ad", "--out", tmp_path], capsys)
    assert code == 2 and "missing.h5ad" in err and "does not exist" in err  # the second input: nothing is read
    assert not (tmp_path / "eps.csv").exists()


# ------------------------------------------------------------------ user mistakes: one line, exit 2 or 1
@pytest.fixture(scope="module")
def slice_files(tmp_path_factory):
    """Two small simulated slices with embeddings in ``obsm['X_lat']``, written as .h5ad (no demo needed)."""
    folder = tmp_path_factory.mktemp("slices")
    paths = []
    for seed in (0, 1):
        adata = st.datasets.simulate(60, 12, n_planted=3, random_state=seed, spot_px=16).tables["table"]
        adata.obsm["X_lat"] = np.asarray(adata.obsm["latent"], dtype=np.float32)
        adata.X = np.log1p(adata.X.toarray().astype(np.float32))
        paths.append(folder / f"s{seed}.h5ad")
        adata.write_h5ad(paths[-1])
    return paths


def run_cli(argv, capsys):
    """``(exit status, stderr)`` of ``stmorph argv``; argparse's own exits count as returns."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def predict_argv(query, reference, out, *extra):
    return ["predict", query, "--reference", reference, "--use-rep", "X_lat", "--out", out, *extra]


@pytest.mark.parametrize(
    ("extra", "status", "named"),
    [
        (["--params", "{not json"], 2, "--params is not valid JSON"),
        (["--params", "[1, 2]"], 2, "--params must be a JSON object"),
        (["--params", '{"copy": true}'], 2, "must not set ['copy']"),
        (["--params", '{"method": "ridge"}'], 2, "must not set ['method']"),
        (["--method", "banana"], 2, "--method='banana' is not valid"),
        (["--params", '{"alpha": -1}'], 2, "alpha must be a finite number"),
    ],
)
def test_predict_usage_mistakes_print_one_line_and_write_nothing(slice_files, tmp_path, capsys, extra, status, named):
    out = tmp_path / "out.h5ad"
    code, err = run_cli(predict_argv(*slice_files, out, *extra), capsys)
    assert code == status
    assert err.count("\n") == 1 and err.startswith("stmorph predict: error:") and named in err
    assert "Traceback" not in err and not out.exists()


def test_missing_option_is_one_usage_line(slice_files, tmp_path, capsys):
    code, err = run_cli(["predict", slice_files[0], "--reference", slice_files[1], "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--use-rep" in err


@pytest.mark.parametrize("damage", ["missing", "corrupt", "no_rep"])
def test_bad_h5ad_inputs_name_the_file(slice_files, tmp_path, capsys, damage):
    bad = tmp_path / "bad.h5ad"
    if damage == "corrupt":
        bad.write_bytes(slice_files[0].read_bytes()[:1000])
    elif damage == "no_rep":
        adata = ad.read_h5ad(slice_files[0])
        del adata.obsm["X_lat"]
        adata.write_h5ad(bad)
    code, err = run_cli(predict_argv(bad, slice_files[1], tmp_path / "out.h5ad"), capsys)
    assert code == (2 if damage == "missing" else 1)
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err
    code, err = run_cli(["eps", slice_files[0], bad, "--use-rep", "X_lat", "--out", tmp_path / "eps"], capsys)
    assert code == (2 if damage == "missing" else 1) and str(bad) in err
    assert not (tmp_path / "eps").exists()  # checked before any EPS was computed


def test_out_folder_missing_or_a_file_is_refused_before_work(slice_files, tmp_path, capsys):
    code, err = run_cli(predict_argv(*slice_files, tmp_path / "nowhere" / "out.h5ad"), capsys)
    assert code == 2 and "nowhere" in err and "does not exist" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(["eps", *slice_files, "--use-rep", "X_lat", "--prepared", "--out", blocker], capsys)
    assert code == 2 and "is a file" in err


def test_demo_checks_every_section_before_embedding(tmp_path, capsys, data_dir):
    out = tmp_path / "demo"
    code, err = run_cli(["demo", "--sections", "C2", "Z9", "--data-dir", data_dir, "--out", out], capsys)
    assert code == 2 and "'Z9'" in err and err.count("\n") == 1
    assert not out.exists()  # nothing was embedded or written


def test_evaluate_failure_keeps_the_finished_prediction(slice_files, tmp_path, capsys, monkeypatch):
    def failing_evaluate(*args, **kwargs):
        raise st.errors.TooFewObservationsError("evaluating needs at least 3 spots; found 0.")

    monkeypatch.setattr(st.tl, "evaluate", failing_evaluate)
    out = tmp_path / "out.h5ad"
    code, err = run_cli(predict_argv(*slice_files, out, "--evaluate"), capsys)
    assert code == 1 and "at least 3 spots" in err
    written = ad.read_h5ad(out)
    assert np.isfinite(written.layers["predicted_ridge"]).all()


def test_a_damaged_h5ad_is_a_named_error_on_every_reading_path(slice_files, tmp_path):
    from stmorph._inputs import read_slide

    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(slice_files[0].read_bytes()[:1000])
    with pytest.raises(st.errors.DamagedFileError, match=r"bad\.h5ad.* is not a readable \.h5ad file"):
        read_slide(bad)  # the reader behind `stmorph embed` (its raw h5py OSError before)
