"""``st.tl.benchmark_encoders``: SPS and the HEST-Benchmark probe, held against a computation written here.

The independent computation follows HEST's code (``mahmoodlab/HEST`` ``src/hest/utils.py``
``get_k_genes``, ``src/hest/bench/benchmark.py`` ``predict_single_split`` and
``merge_fold_results``, ``src/hest/bench/trainer.py`` ``train_test_reg``) with plain numpy,
pandas, scipy and sklearn: Seurat's dispersion HVGs, the kNN graph and Geary's C are written out
below, not taken from stmorph or scanpy.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import stmorph as st
from stmorph.errors import StmorphKeyError, TooFewObservationsError

GROUPS = ["p1", "p1", "p2", "p3"]  # patient p1 has two slices: they must share a fold
N_TOP = 12


# ----------------------------------------------------------------------------- the cohort
@pytest.fixture(scope="module")
def cohort() -> dict[str, ad.AnnData]:
    """Four 90-spot slices of one simulated tissue; a control probe, a BLANK probe and a gene rare in one slice."""
    table = st.datasets.simulate(360, 60, n_planted=24).tables["table"]
    names = table.var_names.to_numpy(dtype=object)
    names[30], names[31] = "BLANK_0030", "NegControl_31"  # noise genes: detected everywhere, must be dropped
    table.var_names = pd.Index(names)
    st.pp.prepare_expression(table)
    assert "highly_variable" not in table.var  # 360 spots < 2000 HVGs: SPS averages every gene
    rng = np.random.default_rng(7)
    table.obsm["good"] = table.obsm["latent"] + 0.3 * rng.normal(size=table.obsm["latent"].shape)
    table.obsm["wide"] = np.hstack([table.obsm["good"], rng.normal(size=(table.n_obs, 40))])
    table.obsm["noise"] = rng.normal(size=(table.n_obs, 8))
    slices = {f"s{i}": table[i * 90 : (i + 1) * 90].copy() for i in range(4)}
    rare = slices["s2"].layers["counts"].toarray()  # a planted gene detected in 5 of s2's 90 spots (< 10 %)
    rare[5:, 0] = 0
    slices["s2"].layers["counts"] = rare
    return slices


# ------------------------------------------------------------------- the independent computation
def seurat_hvgs(log1p: np.ndarray, names: np.ndarray, n_top: int, n_bins: int = 20) -> list[str]:
    """Seurat's dispersion-based HVGs (scanpy's ``flavor="seurat"``), in the order of ``names``."""
    x = np.expm1(log1p.astype(np.float64))
    mean, var = x.mean(0), x.var(0, ddof=1)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    frame = pd.DataFrame({"disp": np.log(dispersion), "bin": pd.cut(np.log1p(mean), bins=n_bins)})
    stats = frame.groupby("bin", observed=True)["disp"].agg(["mean", "std"])
    single = stats["std"].isna()  # a gene alone in its bin gets a normalised dispersion of 1
    stats.loc[single, "std"], stats.loc[single, "mean"] = stats.loc[single, "mean"], 0.0
    per_gene = stats.loc[frame["bin"]].to_numpy()
    norm = (frame["disp"].to_numpy() - per_gene[:, 0]) / per_gene[:, 1]
    cut = np.sort(norm[~np.isnan(norm)])[::-1][n_top - 1]
    return list(names[np.nan_to_num(norm, nan=-np.inf) >= cut][:n_top])


def hest_genes(slices: dict[str, ad.AnnData], n_top: int) -> list[str]:
    common = None
    for a in slices.values():
        counts = np.asarray(
            a.layers["counts"].todense() if hasattr(a.layers["counts"], "todense") else a.layers["counts"]
        )
        kept = a.var_names[(counts > 0).sum(0) >= np.ceil(0.10 * a.n_obs)].to_numpy(dtype=str)
        common = kept if common is None else np.intersect1d(common, kept)
    common = np.array([g for g in common if "BLANK" not in g and "Control" not in g])
    stacked = np.vstack([_counts(a, common) for a in slices.values()]).astype(np.float32)
    return seurat_hvgs(np.log1p(stacked), common, n_top)


def _counts(a: ad.AnnData, genes) -> np.ndarray:
    counts = a[:, list(genes)].layers["counts"]
    return np.asarray(counts.todense() if hasattr(counts, "todense") else counts, dtype=np.float64)


def hest_probe(slices, rep: str, genes: list[str], groups: list[str], seed: int = 1) -> tuple[float, float]:
    fold_means = []
    for test_group in dict.fromkeys(groups):
        split = {True: [], False: []}
        for a, group in zip(slices.values(), groups):
            split[group == test_group].append(a)
        X_tr, X_te = (np.vstack([a.obsm[rep] for a in split[t]]) for t in (False, True))
        y_tr, y_te = (np.vstack([np.log1p(_counts(a, genes)) for a in split[t]]) for t in (False, True))
        n_comp = min(256, *X_tr.shape)
        pipe = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=n_comp, random_state=seed))])
        X_tr, X_te = pipe.fit_transform(X_tr).astype(np.float32), pipe.transform(X_te).astype(np.float32)
        alpha = 100 / (X_tr.shape[1] * y_tr.shape[1])
        reg = Ridge(solver="lsqr", alpha=alpha, random_state=seed, fit_intercept=False, max_iter=1000)
        pred = reg.fit(X_tr, y_tr).predict(X_te)
        fold_means.append(np.mean([pearsonr(y_te[:, g], pred[:, g])[0] for g in range(len(genes))]))
    return float(np.mean(fold_means)), float(np.std(fold_means))


def sps_by_hand(a: ad.AnnData, rep: str, k: int = 5) -> float:
    """Mean over genes of -log Geary's C on the directed kNN graph of the L2-normalised embedding."""
    emb = a.obsm[rep] / np.linalg.norm(a.obsm[rep], axis=1, keepdims=True)
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb, return_distance=False)[:, 1:]
    x = np.asarray(a.X, dtype=np.float64)
    n, edges = x.shape[0], neighbours.size
    numer = ((x[:, None, :] - x[neighbours]) ** 2).sum(axis=(0, 1))
    c = (n - 1) * numer / (2 * edges * ((x - x.mean(0)) ** 2).sum(0))
    return float(np.mean(-np.log(c)))


# ----------------------------------------------------------------------------------- the tests
def test_probe_genes_follow_hests_selection(cohort):
    table = st.tl.benchmark_encoders(cohort, use_rep="good", groups=GROUPS, n_top=N_TOP, n_perms=0)
    expected = hest_genes(cohort, N_TOP)
    assert table.attrs["genes"] == expected
    assert "planted0" not in expected  # rare in s2
    assert not {"BLANK_0030", "NegControl_31"} & set(expected)


@pytest.mark.parametrize("rep", ["good", "wide", "noise"])
def test_probe_and_sps_match_an_independent_computation(cohort, rep):
    table = st.tl.benchmark_encoders(cohort, use_rep=[rep], groups=GROUPS, n_top=N_TOP, n_perms=0)
    mean, sd = hest_probe(cohort, rep, hest_genes(cohort, N_TOP), GROUPS)
    row = table.loc[rep]
    np.testing.assert_allclose([row["probe_pearson_mean"], row["probe_pearson_sd"]], [mean, sd], rtol=1e-6, atol=1e-9)
    assert [c for c in table.columns if c.startswith("probe_fold_")] == [
        "probe_fold_p1",
        "probe_fold_p2",
        "probe_fold_p3",
    ]
    sps = [sps_by_hand(a, rep) for a in cohort.values()]
    np.testing.assert_allclose([row["sps"], row["sps_sd"]], [np.mean(sps), np.std(sps)], rtol=1e-6)
    assert row["dim"] == cohort["s0"].obsm[rep].shape[1]


def test_the_embedding_that_carries_the_signal_wins_both_scores(cohort):
    table = st.tl.benchmark_encoders(cohort, use_rep=["noise", "good"], groups=GROUPS, n_top=N_TOP, n_perms=49)
    assert table.loc["good", "probe_pearson_mean"] > 0.3 > table.loc["noise", "probe_pearson_mean"]
    assert table.loc["good", "sps"] > table.loc["noise", "sps"] + 0.1
    assert table.loc["good", "sps_pval"] == pytest.approx(1 / 50)  # no shuffle reaches the observed SPS


def test_embeddings_shuffled_against_spots_say_nothing(cohort):
    """The null: each slice's embedding rows permuted, 20 times. Probe ≈ 0, SPS p-values not small."""
    rng = np.random.default_rng(3)
    shuffled = {name: a.copy() for name, a in cohort.items()}
    keys = [f"shuffled{i}" for i in range(20)]
    for a in shuffled.values():
        for key in keys:
            a.obsm[key] = a.obsm["good"][rng.permutation(a.n_obs)]
    table = st.tl.benchmark_encoders(shuffled, use_rep=["good", *keys], groups=GROUPS, n_top=N_TOP, n_perms=39)
    null = table.loc[keys]
    assert abs(null["probe_pearson_mean"].mean()) < 0.03
    assert null["probe_pearson_mean"].abs().max() < 0.15
    assert (null["sps_pval"] <= 0.05).sum() <= 3  # 1 expected of 20
    assert 0.3 < null["sps_pval"].mean() < 0.7  # uniform p-values average 0.5
    assert table.loc["good", "probe_pearson_mean"] > null["probe_pearson_mean"].max() + 0.2


def test_sps_over_the_probe_genes_only(cohort):
    table = st.tl.benchmark_encoders(cohort, use_rep="good", groups=GROUPS, n_top=N_TOP, n_perms=0, sps_genes="probe")
    genes = table.attrs["genes"]
    expected = np.mean([sps_by_hand(a[:, genes], "good") for a in cohort.values()])
    assert table.loc["good", "sps"] == pytest.approx(expected, rel=1e-6)


def test_inplace_stores_the_table_in_every_slice_and_it_reads_back(cohort, tmp_path):
    slices = {name: a.copy() for name, a in cohort.items()}
    returned = st.tl.benchmark_encoders(slices, use_rep=["good", "noise"], groups=GROUPS, n_top=N_TOP, n_perms=9)
    assert (
        st.tl.benchmark_encoders(
            slices,
            use_rep=["good", "noise"],
            groups=GROUPS,
            n_top=N_TOP,
            n_perms=9,
            timings={"good": 1.5},
            inplace=True,
        )
        is None
    )
    slices["s3"].write_h5ad(tmp_path / "s3.h5ad")
    stored = st.tl.stored_benchmark(ad.read_h5ad(tmp_path / "s3.h5ad"))
    pd.testing.assert_frame_equal(stored.drop(columns="seconds_per_1k"), returned.drop(columns="seconds_per_1k"))
    assert stored.loc["good", "seconds_per_1k"] == 1.5 and np.isnan(stored.loc["noise", "seconds_per_1k"])
    assert stored.attrs["genes"] == returned.attrs["genes"]
    record = slices["s0"].uns["stmorph"]["benchmark_encoders"]["benchmark"]
    assert list(record["groups"]) == GROUPS and list(record["slices"]) == list(slices)


def test_one_patient_group_is_refused_saying_what_the_probe_needs(cohort):
    with pytest.raises(TooFewObservationsError, match=r"at least two patient groups.*left out"):
        st.tl.benchmark_encoders(cohort, use_rep="good", groups=["p1"] * 4)


def test_a_missing_embedding_names_the_slice(cohort):
    slices = {name: a.copy() for name, a in cohort.items()}
    del slices["s2"].obsm["good"]
    with pytest.raises(StmorphKeyError, match=r"obsm\['good'\] is missing from slice\(s\) \['s2'\]"):
        st.tl.benchmark_encoders(slices, use_rep=["noise", "good"], groups=GROUPS)


def test_shipped_sections_hed_beats_its_shuffle(data_dir, her2st_sdata):
    """The four shipped sections (one patient: groups are the sections), HED features against their shuffle."""
    rng = np.random.default_rng(0)
    slices = {}
    for section in ("C2", "C3", "C4", "C5"):
        adata = st.pp.extract_patches(her2st_sdata(section), progress=False, copy=True)
        st.pp.prepare_expression(adata)
        st.tl.embed(adata, model="hed", progress=False)
        adata.obsm["X_hed_shuffled"] = adata.obsm["X_hed"][rng.permutation(adata.n_obs)]
        slices[section] = adata
    table = st.tl.benchmark_encoders(slices, use_rep=["X_hed", "X_hed_shuffled"], n_perms=19)
    assert len(table.attrs["genes"]) == 50
    hed, shuffled = table.loc["X_hed"], table.loc["X_hed_shuffled"]
    assert hed["probe_pearson_mean"] > shuffled["probe_pearson_mean"] + 0.1
    assert abs(shuffled["probe_pearson_mean"]) < 0.1
    assert hed["sps"] > shuffled["sps"] and hed["sps_pval"] == pytest.approx(1 / 20)


def test_plot_draws_one_point_per_encoder_from_the_table_or_a_slice(cohort):
    slices = {name: a.copy() for name, a in cohort.items()}
    reps = ["good", "wide", "noise"]
    table = st.tl.benchmark_encoders(slices, use_rep=reps, groups=GROUPS, n_top=N_TOP, n_perms=0)
    st.tl.benchmark_encoders(slices, use_rep=reps, groups=GROUPS, n_top=N_TOP, n_perms=0, inplace=True)
    for data in (table, slices["s1"]):
        ax = st.pl.benchmark_encoders(data, show=False).axes[0]
        assert [t.get_text() for t in ax.texts] == reps
        rho = pd.Series(table["sps"]).rank().corr(table["probe_pearson_mean"].rank())
        assert f"ρ = {rho:.2f}" in ax.get_title()


def test_plot_of_a_slice_without_a_benchmark_says_what_to_run(cohort):
    with pytest.raises(StmorphKeyError, match="benchmark_encoders"):
        st.pl.benchmark_encoders(cohort["s0"], show=False)


def test_benchmark_command_writes_the_table_and_its_plot(cohort, tmp_path, capsys):
    from stmorph.cli import main

    paths = []
    for name, a in cohort.items():
        paths.append(str(tmp_path / f"{name}.h5ad"))
        a.write_h5ad(paths[-1])
    argv = ["benchmark", *paths, "--use-rep", "good", "noise", "--prepared", "--n-top", str(N_TOP), "--n-perms", "0"]
    assert main([*argv, "--groups", *GROUPS, "--out", str(tmp_path / "out")]) == 0
    written = pd.read_csv(tmp_path / "out" / "encoders.csv", index_col="encoder")
    expected = st.tl.benchmark_encoders(cohort, use_rep=["good", "noise"], groups=GROUPS, n_top=N_TOP, n_perms=0)
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert (tmp_path / "out" / "encoders.png").stat().st_size > 0
    assert main([*argv, "--groups", "p1", "--out", str(tmp_path / "bad")]) == 2
    assert "--groups has 1 entries for 4 inputs" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
