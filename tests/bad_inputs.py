"""The catalogue of bad inputs: defined once, run by ``tests/test_validation.py`` and by
``docs/make_reliability.py`` (which writes the table of ``docs/reliability.md``).

Each :class:`BadInput` builds a fresh input object and a call that must fail with ``expected``.
The object the call was given (``target``) must be left exactly as it was.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import stmorph as st
from stmorph.errors import (
    AlignmentError,
    CheckpointMismatchError,
    DamagedFileError,
    InconsistentUnitsError,
    InputTypeError,
    InvalidParameterError,
    MissingDependencyError,
    MissingPathError,
    ModelFileError,
    NonFiniteError,
    NotCalibratedError,
    OutOfImageError,
    PathKindError,
    ShapeMismatchError,
    StmorphKeyError,
    TooFewObservationsError,
    UnsafeCheckpointError,
)


@dataclass(frozen=True)
class BadInput:
    """One bad input: ``build()`` returns ``(target, call)``; ``call()`` must raise ``expected``.

    ``target`` is the AnnData the call receives (compared with a deep copy afterwards), or
    ``None`` when the call takes no AnnData (files, datasets).
    """

    function: str
    problem: str
    build: Callable[[], tuple[Any, Callable[[], Any]]]
    expected: type[Exception]


@cache
def _sim():
    return st.datasets.simulate(60, 12, n_planted=3, random_state=0, spot_px=16)


@cache
def _prepared():
    adata = st.pp.extract_patches(_sim(), patch_size=16, progress=False, copy=True)
    st.pp.prepare_expression(adata)
    adata.obsm["X_lat"] = np.asarray(adata.obsm["latent"], dtype=np.float32)
    return adata


def table():
    """A fresh 60-spot prepared slice: scaled ``X``, ``layers['counts'/'log1p']``, ``obsm['X_lat'/'patches']``."""
    return _prepared().copy()


def scratch_folder(prefix: str) -> Path:
    """A new temporary folder, removed when the test process exits (builders take no ``tmp_path``)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _with(edit: Callable[[Any], None]):
    adata = table()
    edit(adata)
    return adata


def _set_x(adata, row: int, col: int, value: float) -> None:
    adata.X = np.array(adata.X, dtype=np.float64)
    adata.X[row, col] = value


def _set_rep(adata, key: str, value) -> None:
    adata.obsm[key] = value


def _case(function: str, problem: str, expected: type[Exception]):
    """Decorator turning ``build()`` into a :class:`BadInput` appended to :data:`CASES`."""

    def register(build):
        CASES.append(BadInput(function, problem, build, expected))
        return build

    return register


CASES: list[BadInput] = []


# ----------------------------------------------------------------------------------- st.tl.eps
@_case("st.tl.eps", "use_rep not in obsm", StmorphKeyError)
def eps_use_rep_not_in_obsm():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_missing", progress=False)


@_case("st.tl.eps", "no use_rep and no stored graph", StmorphKeyError)
def eps_no_use_rep_and_no_stored_graph():
    a = table()
    return a, lambda: st.tl.eps(a, progress=False)


@_case("st.tl.eps", "NaN in X", NonFiniteError)
def eps_nan_in_x():
    a = _with(lambda a: _set_x(a, 3, 2, np.nan))
    return a, lambda: st.tl.eps(a, use_rep="X_lat", progress=False)


@_case("st.tl.eps", "inf in the embedding", NonFiniteError)
def eps_inf_in_the_embedding():
    a = table()
    a.obsm["X_lat"][5, 0] = np.inf
    return a, lambda: st.tl.eps(a, use_rep="X_lat", progress=False)


@_case("st.tl.eps", "non-numeric (string) embedding", InputTypeError)
def eps_non_numeric_string_embedding():
    a = _with(lambda a: _set_rep(a, "X_str", np.full((a.n_obs, 2), "x", dtype=object)))
    return a, lambda: st.tl.eps(a, use_rep="X_str", progress=False)


@_case("st.tl.eps", "n_neighbors >= number of spots", TooFewObservationsError)
def eps_n_neighbors_number_of_spots():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", n_neighbors=a.n_obs, progress=False)


@_case("st.tl.eps", "layer not in layers", StmorphKeyError)
def eps_layer_not_in_layers():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", layer="raw", progress=False)


@_case("st.tl.eps", "genes not in var_names", StmorphKeyError)
def eps_genes_not_in_var_names():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", genes=["NOT_A_GENE"], progress=False)


@_case("st.tl.eps", "duplicated var_names", ShapeMismatchError)
def eps_duplicated_var_names():
    a = table()
    a.var_names = ["g"] * a.n_vars
    return a, lambda: st.tl.eps(a, use_rep="X_lat", progress=False)


@_case("st.tl.eps", "duplicated obs_names", ShapeMismatchError)
def eps_duplicated_obs_names():
    a = table()
    a.obs_names = ["s"] * a.n_obs
    return a, lambda: st.tl.eps(a, use_rep="X_lat", progress=False)


@_case("st.tl.eps", "negative n_perms", InvalidParameterError)
def eps_negative_n_perms():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", n_perms=-1, progress=False)


@_case("st.tl.eps", "pvalues not one of the nulls", InvalidParameterError)
def eps_pvalues_not_one_of_the_nulls():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", pvalues="analytic", progress=False)


@_case("st.tl.eps", "mask_var naming a missing var column", StmorphKeyError)
def eps_mask_var_naming_a_missing_var_column():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", mask_var="highly_variable", progress=False)


@_case("st.tl.eps", "mask_var naming a non-boolean var column", InputTypeError)
def eps_mask_var_naming_a_non_boolean_var_column():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", mask_var="n_cells", progress=False)


@_case("st.tl.eps", "stored graph with negative weights", InvalidParameterError)
def eps_stored_graph_with_negative_weights():
    a = table()
    st.tl.image_graph(a, use_rep="X_lat", progress=False)
    graph = a.obsp["image_connectivities"].copy()
    graph.data[0] = -1.0
    a.obsp["image_connectivities"] = graph
    return a, lambda: st.tl.eps(a, progress=False)


@_case("st.tl.eps", "stored graph whose edges all have weight 0", InvalidParameterError)
def eps_stored_graph_whose_edges_all_have_weight_0():
    a = table()
    st.tl.image_graph(a, use_rep="X_lat", progress=False)
    graph = a.obsp["image_connectivities"].copy()
    graph.data[:] = 0.0
    a.obsp["image_connectivities"] = graph
    return a, lambda: st.tl.eps(a, progress=False)


@_case("st.tl.sps", "one slice lacks use_rep", StmorphKeyError)
def sps_one_slice_lacks_use_rep():
    a, b = table(), table()
    del b.obsm["X_lat"]
    return b, lambda: st.tl.sps({"a": a, "b": b}, use_rep="X_lat")


# ------------------------------------------------------------------- st.tl.benchmark_encoders
@_case("st.tl.benchmark_encoders", "fewer than two patient groups (the probe leaves one out)", TooFewObservationsError)
def benchmark_encoders_fewer_than_two_patient_groups():
    a, b = table(), table()
    return a, lambda: st.tl.benchmark_encoders({"a": a, "b": b}, use_rep="X_lat", groups=["p1", "p1"], inplace=True)


@_case("st.tl.benchmark_encoders", "an embedding missing from one slice", StmorphKeyError)
def benchmark_encoders_an_embedding_missing_from_one_slice():
    a, b = table(), table()
    del b.obsm["X_lat"]
    return a, lambda: st.tl.benchmark_encoders({"a": a, "b": b}, use_rep="X_lat", inplace=True)


@_case("st.tl.benchmark_encoders", "one slice without the counts layer", StmorphKeyError)
def benchmark_encoders_one_slice_without_the_counts_layer():
    a, b = table(), table()
    del b.layers["counts"]
    return a, lambda: st.tl.benchmark_encoders({"a": a, "b": b}, use_rep="X_lat", inplace=True)


# --------------------------------------------------------------------------- st.tl.image_graph
@_case("st.tl.image_graph", "NaN in the embedding", NonFiniteError)
def image_graph_nan_in_the_embedding():
    a = table()
    a.obsm["X_lat"][0, 0] = np.nan
    return a, lambda: st.tl.image_graph(a, use_rep="X_lat", progress=False)


@_case("st.tl.image_graph", "n_neighbors >= number of spots", TooFewObservationsError)
def image_graph_n_neighbors_number_of_spots():
    a = table()
    return a, lambda: st.tl.image_graph(a, use_rep="X_lat", n_neighbors=100, progress=False)


@_case("st.tl.image_graph", "unknown metric", InvalidParameterError)
def image_graph_unknown_metric():
    a = table()
    return a, lambda: st.tl.image_graph(a, use_rep="X_lat", metric="manhattan-ish")


@_case("st.tl.image_graph", "unknown precision", InvalidParameterError)
def image_graph_unknown_precision():
    a = table()
    return a, lambda: st.tl.image_graph(a, use_rep="X_lat", precision="int4")


@_case("st.tl.image_graph", "int8 search of a cosine graph", InvalidParameterError)
def image_graph_int8_search_of_a_cosine_graph():
    a = table()
    return a, lambda: st.tl.image_graph(a, use_rep="X_lat", metric="cosine", precision="int8", progress=False)


# -------------------------------------------------------------------------- st.pp.prepare_expression
@_case("st.pp.prepare_expression", "negative counts", InputTypeError)
def prepare_expression_negative_counts():
    a = _with(lambda a: _set_x(a, 0, 0, -1.0))
    return a, lambda: st.pp.prepare_expression(a)


@_case("st.pp.prepare_expression", "NaN in the counts", NonFiniteError)
def prepare_expression_nan_in_the_counts():
    a = _with(lambda a: _set_x(a, 0, 0, np.nan))
    return a, lambda: st.pp.prepare_expression(a)


@_case("st.pp.prepare_expression", "counts layer missing", StmorphKeyError)
def prepare_expression_counts_layer_missing():
    a = table()
    return a, lambda: st.pp.prepare_expression(a, layer="raw_counts")


@_case("st.pp.prepare_expression", "a single spot (cannot z-score)", TooFewObservationsError)
def prepare_expression_a_single_spot_cannot_z_score():
    a = table()[:1].copy()
    a.X = a.layers["counts"]
    return a, lambda: st.pp.prepare_expression(a)


# ------------------------------------------------------------------------------- st.tl.predict
@_case("st.tl.predict", "unknown method", InvalidParameterError)
def predict_unknown_method():
    a = table()
    return a, lambda: st.tl.predict(a, method="magic", use_rep="X_lat", split=0.2)


@_case("st.tl.predict", "method='lightgbm' without the optional lightgbm package", MissingDependencyError)
def predict_lightgbm_without_the_package():
    a = table()
    return a, _without_module("lightgbm", lambda: st.tl.predict(a, method="lightgbm", use_rep="X_lat", split=0.2))


def _without_module(name: str, call: Callable[[], Any]) -> Callable[[], Any]:
    """``call`` run as if the package ``name`` were not installed (``None`` in ``sys.modules`` fails its import)."""

    def run():
        saved = sys.modules.get(name)
        sys.modules[name] = None
        try:
            return call()
        finally:
            if saved is None:
                del sys.modules[name]
            else:
                sys.modules[name] = saved

    return run


@_case("st.tl.predict", "unknown method option", InvalidParameterError)
def predict_unknown_method_option():
    a = table()
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.2, alpah=2.0)


@_case("st.tl.predict", "split outside (0, 1)", InvalidParameterError)
def predict_split_outside_0_1():
    a = table()
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=1.5)


@_case("st.tl.predict", "min_expected_r outside [-1, 1]", InvalidParameterError)
def predict_min_expected_r_outside_minus_1_1():
    a, ref = table(), table()
    return a, lambda: st.tl.predict(a, ref, method="ridge", use_rep="X_lat", min_expected_r=1.5)


@_case("st.tl.predict", "too few spots for the split", TooFewObservationsError)
def predict_too_few_spots_for_the_split():
    a = table()[:4].copy()
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.5)


@_case("st.tl.predict", "lightgbm on more genes than max_genes (error with the expected time)", InvalidParameterError)
def predict_lightgbm_on_more_genes_than_max_genes():
    a = table()
    return a, lambda: st.tl.predict(a, method="lightgbm", use_rep="X_lat", split=0.2, max_genes=5, n_estimators=2)


@_case("st.tl.predict", 'bleep with train_genes not "hvg" or "all"', InvalidParameterError)
def predict_bleep_with_unknown_train_genes():
    a = table()
    return a, lambda: st.tl.predict(a, method="bleep", use_rep="X_lat", split=0.2, train_genes="variable")


@_case("st.tl.predict", "use_rep missing in the reference", StmorphKeyError)
def predict_use_rep_missing_in_the_reference():
    a, ref = table(), table()
    del ref.obsm["X_lat"]
    return a, lambda: st.tl.predict(a, ref, method="ridge", use_rep="X_lat")


@_case("st.tl.predict", "embedding width differs between reference and query", ShapeMismatchError)
def predict_embedding_width_differs_between_reference_and_query():
    a, ref = table(), table()
    ref.obsm["X_lat"] = np.hstack([ref.obsm["X_lat"], ref.obsm["X_lat"]])
    return a, lambda: st.tl.predict(a, ref, method="ridge", use_rep="X_lat")


@_case("st.tl.predict", "requested genes missing from the reference", StmorphKeyError)
def predict_requested_genes_missing_from_the_reference():
    a, ref = table(), table()
    ref = ref[:, 2:].copy()
    return a, lambda: st.tl.predict(a, ref, method="ridge", use_rep="X_lat", genes=list(a.var_names[:3]))


@_case("st.tl.predict", "NaN in the reference expression", NonFiniteError)
def predict_nan_in_the_reference_expression():
    a, ref = table(), _with(lambda r: _set_x(r, 1, 1, np.nan))
    return a, lambda: st.tl.predict(a, ref, method="ridge", use_rep="X_lat")


@_case("st.tl.predict", "duplicated var_names", ShapeMismatchError)
def predict_duplicated_var_names():
    a = table()
    a.var_names = ["g"] * a.n_vars
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.2)


@_case("st.tl.predict", "reference and split both given", InvalidParameterError)
def predict_reference_and_split_both_given():
    a = table()
    return a, lambda: st.tl.predict(a, table(), method="ridge", use_rep="X_lat", split=0.2)


@_case("st.tl.predict", "context without obsm['spatial'] in the reference", StmorphKeyError)
def predict_context_without_spatial_coordinates_in_the_reference():
    a, ref = table(), table()
    del ref.obsm["spatial"]
    return a, lambda: st.tl.predict(a, ref, method="ridge", use_rep="X_lat", context=True)


@_case("st.tl.predict", "context without a pixel size", InvalidParameterError)
def predict_context_without_a_pixel_size():
    a = table()
    del a.uns["stmorph"]
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.2, context=True)


@_case("st.tl.predict", "context radius 0", InvalidParameterError)
def predict_context_radius_0():
    a = table()
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.2, context={"radius": 0})


@_case("st.tl.predict", "context radius below the spot spacing: spots without neighbours", TooFewObservationsError)
def predict_context_radius_below_the_spot_spacing():
    a = table()
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.2, context={"radius": 1.0})


@_case("st.tl.predict", "context for a method trained on patches", InvalidParameterError)
def predict_context_for_a_method_trained_on_patches():
    a = table()
    return a, lambda: st.tl.predict(a, method="stnet", use_rep="patches", split=0.2, context=True)


def _ridge_model():
    return st.tl.predict(table(), method="ridge", use_rep="X_lat", split=0.2, return_model=True, progress=False)


@_case("st.tl.predict", "model= fitted on embeddings of another width", ShapeMismatchError)
def predict_model_fitted_on_embeddings_of_another_width():
    a, model = table(), _ridge_model()
    a.obsm["X_lat"] = np.hstack([a.obsm["X_lat"], a.obsm["X_lat"]])
    return a, lambda: st.tl.predict(a, model=model)


@_case("st.tl.predict", "model= predicts genes the query lacks", StmorphKeyError)
def predict_model_predicts_genes_the_query_lacks():
    a, model = table()[:, 4:].copy(), _ridge_model()
    return a, lambda: st.tl.predict(a, model=model)


@_case("st.tl.predict", "interval outside (0, 1)", InvalidParameterError)
def predict_interval_outside_0_1():
    a = table()
    return a, lambda: st.tl.predict(a, table(), method="ridge", use_rep="X_lat", interval=1.5)


@_case("st.tl.predict", "intervals from a single reference too small to calibrate", TooFewObservationsError)
def predict_intervals_from_a_single_reference_too_small_to_calibrate():
    a = table()
    return a, lambda: st.tl.predict(a, table()[:15].copy(), method="ridge", use_rep="X_lat", interval=0.95)


@_case("st.tl.predict", "intervals from a model saved without calibration", NotCalibratedError)
def predict_intervals_from_a_model_saved_without_calibration():
    a, folder = table(), scratch_folder("uncalibrated")
    _ridge_model().save(folder)
    return a, lambda: st.tl.predict(a, model=st.models.load(folder), interval=0.9)


# ------------------------------------------------------------------------------ st.tl.evaluate
def _predicted():
    a = table()
    st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.3, progress=False)
    return a


@_case("st.tl.evaluate", "prediction layer missing", StmorphKeyError)
def evaluate_prediction_layer_missing():
    a = table()
    return a, lambda: st.tl.evaluate(a, "predicted_ridge")


@_case("st.tl.evaluate", "NaN in the truth", NonFiniteError)
def evaluate_nan_in_the_truth():
    a = _predicted()
    _set_x(a, int(np.flatnonzero(a.obs["stmorph_split"] == "test")[0]), 0, np.nan)
    return a, lambda: st.tl.evaluate(a, "predicted_ridge", n_top=3)


@_case("st.tl.evaluate", "n_top = 0", InvalidParameterError)
def evaluate_n_top_0():
    a = _predicted()
    return a, lambda: st.tl.evaluate(a, "predicted_ridge", n_top=0)


@_case("st.tl.evaluate", "marker gene not evaluated", StmorphKeyError)
def evaluate_marker_gene_not_evaluated():
    a = _predicted()
    return a, lambda: st.tl.evaluate(a, "predicted_ridge", n_top=3, marker_genes=["NOT_A_GENE"])


# --------------------------------------------------------------------------------- st.tl.embed
@_case("st.tl.embed", "patches missing", StmorphKeyError)
def embed_patches_missing():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", patches_key="tiles", progress=False)


@_case("st.tl.embed", "float patches instead of uint8", InputTypeError)
def embed_float_patches_instead_of_uint8():
    a = _with(lambda a: _set_rep(a, "patches", a.obsm["patches"].astype(np.float32)))
    return a, lambda: st.tl.embed(a, model="hed", progress=False)


@_case("st.tl.embed", "patches not (n, P, P, 3)", ShapeMismatchError)
def embed_patches_not_n_p_p_3():
    a = _with(lambda a: _set_rep(a, "patches", a.obsm["patches"][:, :, :8]))
    return a, lambda: st.tl.embed(a, model="hed", progress=False)


@_case("st.tl.embed", "unknown encoder", InvalidParameterError)
def embed_unknown_encoder():
    a = table()
    return a, lambda: st.tl.embed(a, model="not-an-encoder", progress=False)


@_case("st.tl.embed", "batch_size = 0", InvalidParameterError)
def embed_batch_size_0():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", batch_size=0, progress=False)


@_case("st.tl.embed", "weights file does not exist", FileNotFoundError)
def embed_weights_file_does_not_exist():
    a = table()
    return a, lambda: st.tl.embed(a, model="resnet50", weights="/nonexistent/weights.safetensors", progress=False)


@_case("st.tl.embed", "unknown on_error", InvalidParameterError)
def embed_unknown_on_error():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", on_error="ignore", progress=False)


@_case("st.tl.embed", "unknown precision", InvalidParameterError)
def embed_unknown_precision():
    a = table()
    return a, lambda: st.tl.embed(a, model="default", precision="fp16", progress=False)


@_case("st.tl.embed", "precision='int8' for a CNN (no linear layers)", InvalidParameterError)
def embed_int8_for_a_cnn():
    a = table()
    return a, lambda: st.tl.embed(a, model="default", precision="int8", device="cpu", progress=False)


@_case("st.tl.embed", "precision for a featurizer without torch", InvalidParameterError)
def embed_precision_for_a_featurizer():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", precision="bf16", progress=False)


# ---------------------------------------------------------------------- st.pp.extract_patches
def _pair(coords: np.ndarray):
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    return lambda: st.pp.extract_patches((image, coords), mpp=1.0, patch_size=8, progress=False)


@_case("st.pp.extract_patches", "3 spot centres outside the image", OutOfImageError)
def extract_patches_3_spot_centres_outside_the_image():
    return None, _pair(np.array([[10.0, 10.0], [90.0, 10.0], [10.0, 120.0], [-5.0, 50.0]]))


@_case("st.pp.extract_patches", "coordinates not (n, 2)", ShapeMismatchError)
def extract_patches_coordinates_not_n_2():
    return None, _pair(np.arange(5.0))


@_case("st.pp.extract_patches", "pixel size (mpp) unknown", InvalidParameterError)
def extract_patches_pixel_size_mpp_unknown():
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    return None, lambda: st.pp.extract_patches((image, np.array([[10.0, 10.0]])), progress=False)


@_case("st.pp.extract_patches", "image element missing", StmorphKeyError)
def extract_patches_image_element_missing():
    return None, lambda: st.pp.extract_patches(_sim(), image_key="hires", progress=False)


@_case("st.pp.extract_patches", "pixel size of the image and of the table disagree", InconsistentUnitsError)
def extract_patches_pixel_size_of_the_image_and_of_the_table_disagree():
    sdata = st.datasets.simulate(20, 5, n_planted=1, random_state=0, spot_px=16, mpp=0.5)
    sdata.tables["table"].uns["stmorph"]["dataset"]["mpp"] = 0.25
    return sdata.tables["table"], lambda: st.pp.extract_patches(sdata, progress=False)


@_case("st.pp.extract_patches", "image and spots share no coordinate system", InvalidParameterError)
def extract_patches_image_and_spots_share_no_coordinate_system():
    from spatialdata.transformations import Identity, set_transformation

    sdata = st.datasets.simulate(20, 5, n_planted=1, random_state=0, spot_px=16)
    set_transformation(sdata.shapes["spots"], {"elsewhere": Identity()}, set_all=True)
    return sdata.tables["table"], lambda: st.pp.extract_patches(sdata, progress=False)


@_case("st.pp.extract_patches", "Visium AnnData without uns['spatial']", StmorphKeyError)
def extract_patches_visium_anndata_without_uns_spatial():
    a = table()
    return a, lambda: st.pp.extract_patches(a, progress=False)


@_case("st.pp.extract_patches", "Visium scalefactors without a pixel size", InvalidParameterError)
def extract_patches_visium_scalefactors_without_a_pixel_size():
    a = table()
    a.uns["spatial"] = {"lib": {"images": {}, "scalefactors": {"tissue_hires_scalef": 0.1}}}
    return a, lambda: st.pp.extract_patches(a, progress=False)


@_case("st.pp.extract_patches", "target_mpp <= 0", InvalidParameterError)
def extract_patches_target_mpp_0():
    return None, lambda: st.pp.extract_patches(_sim(), target_mpp=0, progress=False)


def _zarr_missing_chunk(extract_first: bool, corrupt: bool = False):
    """A simulated slide in a zarr store (128 px chunks) whose chunk under the first spot is deleted.

    With ``extract_first`` the patches are extracted lazily before the chunk goes missing; with
    ``corrupt`` the chunk is overwritten with bytes that do not decompress instead of deleted.
    """
    from spatialdata import read_zarr
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    sdata = st.datasets.simulate(20, 5, n_planted=1, random_state=0)
    image = sdata.images["he"]
    sdata.images["he"] = Image2DModel.parse(
        image.data, dims=image.dims, chunks=(3, 128, 128), transformations=get_transformation(image, get_all=True)
    )
    path = scratch_folder("stmorph-zarr-") / "slide.zarr"
    sdata.write(path)
    sdata = read_zarr(path)
    if extract_first:
        st.pp.extract_patches(sdata, patch_size=16, store="lazy", progress=False)
    x, y = sdata.shapes["spots"].geometry.iloc[0].coords[0]
    chunk = path / "images" / "he" / "s0" / "c" / "0" / str(int(y) // 128) / str(int(x) // 128)
    if corrupt:
        chunk.write_bytes(b"not a zstd frame" * 8)
    else:
        chunk.unlink()
    return sdata


@_case("st.tl.eps", "use_rep given as a list", InvalidParameterError)
def eps_use_rep_given_as_a_list():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep=["X_lat"], progress=False)


@_case("st.tl.embed", "key_added given as a list (refused before embedding)", InvalidParameterError)
def embed_key_added_given_as_a_list():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", key_added=["X_a", "X_b"], progress=False)


@_case("st.tl.embed", "stain_norm='reinhard' without stain_reference", InvalidParameterError)
def embed_reinhard_without_a_reference():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", stain_norm="reinhard", progress=False)


@_case("st.tl.embed", "stain_reference without stain_norm", InvalidParameterError)
def embed_stain_reference_without_stain_norm():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", stain_reference=a.obsm["patches"][:4], progress=False)


@_case("st.tl.embed", "tile_size= (dense only) with strategy='spot'", InvalidParameterError)
def embed_tile_size_with_the_spot_strategy():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", strategy="spot", tile_size=512, progress=False)


@_case("st.tl.embed", "features_store='zarr' (dense only) with patches in obsm", InvalidParameterError)
def embed_features_store_zarr_with_patches_in_obsm():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", features_store="zarr", progress=False)


@_case("st.tl.embed", "features_store='disk'", InvalidParameterError)
def embed_features_store_disk():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", features_store="disk", progress=False)


@_case("st.pp.extract_patches", "zarr image with a chunk missing under a spot", DamagedFileError)
def extract_patches_zarr_image_with_a_chunk_missing_under_a_spot():
    sdata = _zarr_missing_chunk(extract_first=False)
    return sdata.tables["table"], lambda: st.pp.extract_patches(sdata, patch_size=16, progress=False)


@_case("st.tl.embed", "lazy patches whose zarr image lost a chunk", DamagedFileError)
def embed_lazy_patches_whose_zarr_image_lost_a_chunk():
    sdata = _zarr_missing_chunk(extract_first=True)
    return sdata.tables["table"], lambda: st.tl.embed(sdata.tables["table"], model="hed", progress=False)


# ------------------------------------------------------- issue 27: Xenium with its post-run H&E


def _xenium():
    """A fresh simulated Xenium slide (``spatialdata_io.xenium`` layout) of 60 cells."""
    return st.datasets.simulate_xenium(60, random_state=0)


@_case("st.pp.extract_patches", "Xenium H&E without its alignment (identity to the Xenium pixels)", AlignmentError)
def extract_patches_xenium_he_without_alignment():
    from spatialdata.transformations import Identity, set_transformation

    sdata = _xenium()
    set_transformation(sdata.images["he_image"], Identity(), "global")
    return sdata.tables["table"], lambda: st.pp.extract_patches(sdata, patch_size=16, progress=False)


@_case("st.pp.extract_patches", "Xenium alignment placing cells off the H&E (says how many)", OutOfImageError)
def extract_patches_xenium_alignment_places_cells_off_the_he():
    from spatialdata.transformations import Affine, get_transformation, set_transformation

    sdata = _xenium()
    matrix = get_transformation(sdata.images["he_image"], "global").to_affine_matrix(("x", "y"), ("x", "y"))
    matrix[0, 2] += 1000.0  # Xenium pixels: the H&E moved right, the left cells off it
    set_transformation(sdata.images["he_image"], Affine(matrix, ("x", "y"), ("x", "y")), "global")
    return sdata.tables["table"], lambda: st.pp.extract_patches(sdata, patch_size=16, progress=False)


@_case("st.pp.extract_patches", "Xenium DAPI morphology image given as the H&E", InputTypeError)
def extract_patches_xenium_dapi_given_as_the_he():
    sdata = _xenium()
    return sdata.tables["table"], lambda: st.pp.extract_patches(sdata, image_key="morphology_focus", progress=False)


@_case("st.pp.extract_patches", "Xenium SpatialData without a cell table", StmorphKeyError)
def extract_patches_xenium_without_a_cell_table():
    sdata = _xenium()
    del sdata.tables["table"]
    return None, lambda: st.pp.extract_patches(sdata, progress=False)


@_case("st.pp.pseudo_spots", "pseudo-spot size below the H&E's pixel size", InvalidParameterError)
def pseudo_spots_size_below_the_pixel_size():
    sdata = _xenium()
    return sdata.tables["table"], lambda: st.pp.pseudo_spots(sdata, size_um=0.2)


@_case("st.pp.pseudo_spots", "Xenium H&E without its alignment", AlignmentError)
def pseudo_spots_xenium_he_without_alignment():
    from spatialdata.transformations import Identity, set_transformation

    sdata = _xenium()
    set_transformation(sdata.images["he_image"], Identity(), "global")
    return sdata.tables["table"], lambda: st.pp.pseudo_spots(sdata)


@_case("st.pp.pseudo_spots", "not a Xenium SpatialData", InputTypeError)
def pseudo_spots_not_a_xenium_spatialdata():
    return None, lambda: st.pp.pseudo_spots(_sim())


# ------------------------------------------------------------------------------ st.models.load
@_case("st.models.load", "folder does not exist", MissingPathError)
def load_folder_does_not_exist():
    return None, lambda: st.models.load("/nonexistent/stmorph-model")


@_case("st.models.load", "config.json damaged", ModelFileError)
def load_config_json_damaged():
    folder = scratch_folder("stmorph-bad-")
    (folder / "config.json").write_text("{ not json")
    (folder / "model.safetensors").write_bytes(b"")
    return None, lambda: st.models.load(folder)


@_case("st.models.load_state_dict_safely", "pickled object in a checkpoint", UnsafeCheckpointError)
def load_state_dict_safely_pickled_object_in_a_checkpoint():
    return None, lambda: st.models.load_state_dict_safely(pickle_checkpoint())


def pickle_checkpoint() -> Path:
    """A torch checkpoint holding a pickled non-tensor object (what ``weights_only=True`` refuses)."""
    import torch

    path = scratch_folder("stmorph-pickle-") / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
    return path


class _Payload:
    """An arbitrary Python object: unpickling it would run code from the file's author."""


# --------------------------------------------------------------------------- st.datasets
@_case("st.datasets.her2st", "unknown section (files missing)", MissingPathError)
def her2st_unknown_section_files_missing():
    return None, lambda: st.datasets.her2st("Z9")


@_case("st.datasets.simulate", "zero spots", InvalidParameterError)
def simulate_zero_spots():
    return None, lambda: st.datasets.simulate(0, 10)


@_case("st.datasets.simulate", "more planted genes than genes", InvalidParameterError)
def simulate_more_planted_genes_than_genes():
    return None, lambda: st.datasets.simulate(20, 5, n_planted=6)


# ------------------------------------------------ issue 17 §1: silently wrong results, now refused
def _embedded_checkpoint() -> tuple[Any, Path]:
    """A table and the folder of its finished "hed" embedding checkpoint (batches of 8)."""
    a, folder = table(), scratch_folder("stmorph-ckpt-")
    st.tl.embed(a, model="hed", batch_size=8, checkpoint=folder, progress=False)
    return a, folder


def _resume_embed(a, folder: Path):
    return lambda: st.tl.embed(a, model="hed", batch_size=8, checkpoint=folder, resume=True, progress=False)


@_case("st.tl.embed", "resume: embeddings.npy truncated (CK5)", CheckpointMismatchError)
def embed_resume_embeddings_npy_truncated_ck5():
    a, folder = _embedded_checkpoint()
    path = folder / "embeddings.npy"
    path.write_bytes(path.read_bytes()[:-4000])
    return a, _resume_embed(a, folder)


@_case("st.tl.embed", "resume: embeddings.npy replaced by an (N, 7) float64 array (CK6)", CheckpointMismatchError)
def embed_resume_embeddings_npy_replaced_by_an_n_7_float64_array_ck6():
    a, folder = _embedded_checkpoint()
    np.save(folder / "embeddings.npy", np.zeros((a.n_obs, 7)))
    return a, _resume_embed(a, folder)


@_case("st.tl.embed", "resume: other patches under the same key (CK7)", CheckpointMismatchError)
def embed_resume_other_patches_under_the_same_key_ck7():
    a, folder = _embedded_checkpoint()
    a.obsm["patches"] = a.obsm["patches"][::-1].copy()
    return a, _resume_embed(a, folder)


_MLP = {"method": "mlp", "use_rep": "X_lat", "split": 0.2, "batch_size": 16, "device": "cpu", "progress": False}


def _trained_checkpoint() -> tuple[Any, Path]:
    a, folder = table(), scratch_folder("stmorph-train-")
    st.tl.predict(a, checkpoint=folder, epochs=4, **_MLP)
    return a, folder


@_case("st.tl.predict", "resume: another reference of the same shape (T4)", CheckpointMismatchError)
def predict_resume_another_reference_of_the_same_shape_t4():
    a, folder = _trained_checkpoint()
    a.X = np.asarray(a.X)[::-1].copy()
    return a, lambda: st.tl.predict(a, checkpoint=folder, resume=True, epochs=4, **_MLP)


@_case("st.tl.predict", "resume: epochs=2 from a 4-epoch checkpoint (T5)", CheckpointMismatchError)
def predict_resume_epochs_2_from_a_4_epoch_checkpoint_t5():
    a, folder = _trained_checkpoint()
    return a, lambda: st.tl.predict(a, checkpoint=folder, resume=True, epochs=2, **_MLP)


@_case("st.tl.predict", "epochs=2.5 (would be truncated)", InvalidParameterError)
def predict_epochs_2_5_would_be_truncated():
    a = table()
    return a, lambda: st.tl.predict(a, epochs=2.5, **_MLP)


@_case("st.pp.prepare_expression", "max_value=nan (all-NaN result)", InvalidParameterError)
def prepare_expression_max_value_nan_all_nan_result():
    a = table()
    a.X = a.layers["counts"].copy()
    return a, lambda: st.pp.prepare_expression(a, max_value=np.nan)


@_case("st.pp.prepare_expression", "n_top_genes=-5", InvalidParameterError)
def prepare_expression_n_top_genes_5():
    a = table()
    a.X = a.layers["counts"].copy()
    return a, lambda: st.pp.prepare_expression(a, n_top_genes=-5)


@_case("st.tl.eps", "genes=[] (no gene)", InvalidParameterError)
def eps_genes_no_gene():
    a = table()
    return a, lambda: st.tl.eps(a, use_rep="X_lat", genes=[], progress=False)


@_case("st.pp.extract_patches", "mpp=inf (0-px windows)", InvalidParameterError)
def extract_patches_mpp_inf_0_px_windows():
    return None, lambda: st.pp.extract_patches(_sim(), mpp=np.inf, progress=False, copy=True)


@_case("st.tl.embed", "key_added with '/' (nested by h5ad)", InvalidParameterError)
def embed_key_added_with_nested_by_h5ad():
    a = table()
    return a, lambda: st.tl.embed(a, model="hed", key_added="a/b", progress=False)


@_case("st.tl.predict", "user's string in uns['stmorph'] would be overwritten", InputTypeError)
def predict_user_s_string_in_uns_stmorph_would_be_overwritten():
    a = table()
    a.uns["stmorph"] = "my notes"
    return a, lambda: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.2)


def _her2st_with(edit: Callable[[Any], None]) -> Path:
    """A data folder holding section C2 as "N1" with its count table edited by ``edit(DataFrame)``."""
    import gzip
    import shutil

    import pandas as pd

    from stmorph.datasets._her2st import her2st_files

    files, root = her2st_files("C2"), scratch_folder("stmorph-counts-")
    (root / "her2st").mkdir()
    shutil.copy(files["image"], root / "her2st" / "N1_HE.jpg")
    shutil.copy(files["spots"], root / "her2st" / "N1_spots.tsv")
    counts = pd.read_csv(files["counts"], sep="\t", index_col=0).astype(float)
    edit(counts)
    with gzip.open(root / "her2st" / "N1_counts.tsv.gz", "wt") as handle:
        counts.to_csv(handle, sep="\t")
    return root


@_case("st.datasets.her2st", "an NA count (was loaded as -2147483648)", NonFiniteError)
def her2st_an_na_count_was_loaded_as_2147483648():
    root = _her2st_with(lambda c: c.iloc.__setitem__((3, 5), np.nan))
    return None, lambda: st.datasets.her2st("N1", data_dir=root)


@_case("st.datasets.her2st", "a negative count", InputTypeError)
def her2st_a_negative_count():
    root = _her2st_with(lambda c: c.iloc.__setitem__((3, 5), -2))
    return None, lambda: st.datasets.her2st("N1", data_dir=root)


@_case("st.models.load", "saved model whose reference bank is all NaN", ModelFileError)
def load_saved_model_whose_reference_bank_is_all_nan():
    from stmorph.models._io import WEIGHTS_FILE, read_arrays, write_safetensors

    model = st.tl.predict(table(), method="bleep", use_rep="X_lat", split=0.2, epochs=1, batch_size=16,
                          device="cpu", progress=False, return_model=True)  # fmt: skip
    folder = scratch_folder("stmorph-model-")
    model.save(folder)
    arrays = read_arrays(folder / WEIGHTS_FILE)
    arrays["reference_expression"] = np.full_like(arrays["reference_expression"], np.nan)
    write_safetensors(folder / WEIGHTS_FILE, arrays)
    return None, lambda: st.models.load(folder)


# ------------------------------------------------- issue 17 §2–§3: parameter types, damaged files (p17b)
def _nothing() -> None:
    """No target: the call builds its own input (files, the cached simulated SpatialData)."""


def _calling(make: Callable[[], Any], call: Callable[[Any], Any]):
    """A builder: a fresh target from ``make()`` and the call ``call(target)`` on it."""

    def build():
        target = make()
        return target, lambda: call(target)

    return build


HOSTILE_VALUES = [
    (
        "st.tl.eps",
        "n_neighbors=2.5 (not an integer)",
        table,
        lambda a: st.tl.eps(a, use_rep="X_lat", n_neighbors=2.5, progress=False),
    ),
    (
        "st.tl.eps",
        "n_neighbors=True (a bool)",
        table,
        lambda a: st.tl.eps(a, use_rep="X_lat", n_neighbors=True, progress=False),
    ),
    (
        "st.tl.eps",
        'n_neighbors="5" (a string)',
        table,
        lambda a: st.tl.eps(a, use_rep="X_lat", n_neighbors="5", progress=False),
    ),
    ("st.tl.eps", "n_perms=2.5", table, lambda a: st.tl.eps(a, use_rep="X_lat", n_perms=2.5, progress=False)),
    (
        "st.tl.eps",
        "random_state=None (refused before the computation)",
        table,
        lambda a: st.tl.eps(a, use_rep="X_lat", random_state=None, progress=False),
    ),
    ("st.tl.eps", "max_value=nan", table, lambda a: st.tl.eps(a, use_rep="X_lat", max_value=np.nan, progress=False)),
    ("st.tl.predict", "split=nan", table, lambda a: st.tl.predict(a, method="ridge", use_rep="X_lat", split=np.nan)),
    (
        "st.tl.predict",
        'device="banana"',
        table,
        lambda a: st.tl.predict(a, method="ridge", use_rep="X_lat", split=0.2, device="banana"),
    ),
    ("st.tl.evaluate", "n_top=2.5", _predicted, lambda a: st.tl.evaluate(a, "predicted_ridge", n_top=2.5)),
    ("st.tl.embed", "batch_size=2.5", table, lambda a: st.tl.embed(a, model="hed", batch_size=2.5, progress=False)),
    ("st.tl.embed", "num_workers=1.5", table, lambda a: st.tl.embed(a, model="hed", num_workers=1.5, progress=False)),
    (
        "st.pp.extract_patches",
        "patch_size=10**7 (would need terabytes)",
        _nothing,
        lambda a: st.pp.extract_patches(_sim(), patch_size=10**7, progress=False),
    ),
    (
        "st.pp.extract_patches",
        "target_mpp=inf",
        _nothing,
        lambda a: st.pp.extract_patches(_sim(), target_mpp=np.inf, progress=False),
    ),
    ("st.pp.extract_patches", "mpp=nan", _nothing, lambda a: st.pp.extract_patches(_sim(), mpp=np.nan, progress=False)),
]
"""Hostile parameter values (non-integers, bools, strings, NaN, ±inf, absurd sizes): each an InvalidParameterError."""
for _function, _problem, _make, _call in HOSTILE_VALUES:
    _case(_function, _problem, InvalidParameterError)(_calling(_make, _call))


@_case("st.tl.embed", "checkpoint is an existing file", PathKindError)
def embed_checkpoint_is_an_existing_file():

    a = table()
    path = scratch_folder("stmorph-ckpt-") / "file"
    path.write_text("not a folder")
    return a, lambda: st.tl.embed(a, model="hed", checkpoint=path, progress=False)


@_case("st.pp.extract_patches", "Visium spot_diameter_fullres=0", InvalidParameterError)
def extract_patches_visium_spot_diameter_fullres_0():
    a = table()
    a.uns["spatial"] = {"lib": {"images": {}, "scalefactors": {"spot_diameter_fullres": 0}}}
    return a, lambda: st.pp.extract_patches(a, progress=False)


@_case("st.pp.extract_patches", "uns['spatial'] is not a dict", InputTypeError)
def extract_patches_uns_spatial_is_not_a_dict():
    a = table()
    a.uns["spatial"] = "lib"
    return a, lambda: st.pp.extract_patches(a, progress=False)


@_case("st.models.load_state_dict_safely", "truncated .safetensors", DamagedFileError)
def load_state_dict_safely_truncated_safetensors():
    return None, lambda: st.models.load_state_dict_safely(_damaged_weights("w.safetensors"))


@_case("st.models.load_state_dict_safely", "text file as .pt", DamagedFileError)
def load_state_dict_safely_text_file_as_pt():
    return None, lambda: st.models.load_state_dict_safely(_damaged_weights("w.pt"))


def _damaged_weights(name: str) -> Path:
    """A weights file cut short (``.safetensors``) or holding text (``.pt``)."""

    path = scratch_folder("stmorph-damaged-") / name
    if name.endswith(".safetensors"):
        path.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{")
    else:
        path.write_text("this is not a checkpoint\n")
    return path


@_case("st.datasets.her2st", "section name with a path separator", InvalidParameterError)
def her2st_section_name_with_a_path_separator():
    return None, lambda: st.datasets.her2st("../C2")


@_case("st.datasets.simulate", "random_state=-1", InvalidParameterError)
def simulate_random_state_1():
    return None, lambda: st.datasets.simulate(20, 5, n_planted=2, random_state=-1)


# ------------------------------------------------- issue 22 §6: raw library errors, now named
def _backed(sparse_x: bool):
    """A 60-spot count table written to h5ad and opened with ``backed="r"`` (X dense or CSR)."""
    import anndata as ad
    from scipy import sparse

    counts = sparse.csr_matrix(table().layers["counts"])
    a = ad.AnnData(X=counts if sparse_x else counts.toarray())
    path = scratch_folder("stmorph-backed-") / "counts.h5ad"
    a.write_h5ad(path)
    return ad.read_h5ad(path, backed="r")


@_case("st.pp.prepare_expression", "backed AnnData (dense X, edited in place)", InputTypeError)
def prepare_expression_backed_anndata_dense_x():
    b = _backed(sparse_x=False)
    return None, lambda: st.pp.prepare_expression(b)  # a backed AnnData cannot be copied for the comparison


@_case("st.pp.prepare_expression", "backed AnnData (sparse X)", InputTypeError)
def prepare_expression_backed_anndata_sparse_x():
    b = _backed(sparse_x=True)
    return None, lambda: st.pp.prepare_expression(b)


def _counts() -> Any:
    a = table()
    a.X = a.layers["counts"].copy()
    return a


@_case("st.pp.prepare_expression", "every gene filtered out (min_cells above the spot count)", TooFewObservationsError)
def prepare_expression_every_gene_filtered_out():
    a = _counts()
    return a, lambda: st.pp.prepare_expression(a, min_cells=a.n_obs + 1)


@_case("st.pp.prepare_expression", "all-zero counts (every gene filtered out)", TooFewObservationsError)
def prepare_expression_all_zero_counts():
    a = _counts()
    a.X = np.zeros(a.shape, dtype=np.float32)
    return a, lambda: st.pp.prepare_expression(a)


@_case("st.pp.extract_patches", "image given as a nested list", InputTypeError)
def extract_patches_image_given_as_a_nested_list():
    image = np.zeros((40, 30, 3), dtype=np.uint8).tolist()
    return None, lambda: st.pp.extract_patches((image, np.array([[10.0, 10.0]])), mpp=1.0, patch_size=8, progress=False)


@_case("st.pp.extract_patches", "coordinates given as strings", InputTypeError)
def extract_patches_coordinates_given_as_strings():
    return None, _pair(np.array([["10", "12"], ["x", "y"]]))


@_case("st.tl.embed", "1 x 1 patches with model='hed'", ShapeMismatchError)
def embed_1_x_1_patches_with_hed():
    a = _with(lambda a: _set_rep(a, "patches", np.zeros((a.n_obs, 1, 1, 3), dtype=np.uint8)))
    return a, lambda: st.tl.embed(a, model="hed", progress=False)


def _embed_with_encoder(a, name: str, featurizer: Callable[[np.ndarray], Any]):
    """``st.tl.embed(a, model=name)`` with ``featurizer`` registered as ``name`` for the call only."""
    from stmorph.models import _encoders

    st.tl.register_encoder(name, featurizer)
    try:
        st.tl.embed(a, model=name, progress=False)
    finally:
        del _encoders._REGISTRY[name]


@_case("st.tl.embed", "registered featurizer returning strings", InputTypeError)
def embed_registered_featurizer_returning_strings():
    a = table()
    return a, lambda: _embed_with_encoder(a, "returns-strings", lambda p: np.full((len(p), 3), "x"))


@_case("st.tl.embed", "lazy patches record lacking centres_key", StmorphKeyError)
def embed_lazy_patches_record_lacking_centres_key():
    sdata = st.datasets.simulate(20, 5, n_planted=1, random_state=0, spot_px=16)
    st.pp.extract_patches(sdata, patch_size=16, store="lazy", progress=False)
    a = sdata.tables["table"]
    del a.uns["stmorph"]["patches"]["patches"]["centres_key"]
    return a, lambda: st.tl.embed(a, model="hed", image=sdata, progress=False)


@_case("st.tl.embed", "lazy patches whose window centres were deleted from obsm", StmorphKeyError)
def embed_lazy_patches_whose_window_centres_were_deleted():
    sdata = st.datasets.simulate(20, 5, n_planted=1, random_state=0, spot_px=16)
    st.pp.extract_patches(sdata, patch_size=16, store="lazy", progress=False)
    a = sdata.tables["table"]
    del a.obsm["patches_centres_px"]
    return a, lambda: st.tl.embed(a, model="hed", image=sdata, progress=False)


@_case("st.pp.extract_patches", "zarr image with a corrupt chunk (store='lazy')", DamagedFileError)
def extract_patches_zarr_image_with_a_corrupt_chunk():
    sdata = _zarr_missing_chunk(extract_first=False, corrupt=True)
    return sdata.tables["table"], lambda: st.pp.extract_patches(sdata, patch_size=16, store="lazy", progress=False)


@_case("st.tl.embed", "lazy patches whose zarr image has a corrupt chunk (on_error='raise')", DamagedFileError)
def embed_lazy_patches_whose_zarr_image_has_a_corrupt_chunk():
    sdata = _zarr_missing_chunk(extract_first=True, corrupt=True)
    return sdata.tables["table"], lambda: st.tl.embed(sdata.tables["table"], model="hed", progress=False)


@_case("st.tl.sps", "a None slice", InputTypeError)
def sps_a_none_slice():
    a = table()
    return a, lambda: st.tl.sps({"a": a, "b": None}, use_rep="X_lat")


@_case("st.tl.sps", "a string instead of a list of slices", InputTypeError)
def sps_a_string_instead_of_a_list():
    return None, lambda: st.tl.sps("slices.h5ad", use_rep="X_lat")


@_case("st.pl.training", "an untrained model", InvalidParameterError)
def training_an_untrained_model():
    from stmorph.models._mlp import MLP

    return None, lambda: st.pl.training(MLP(), show=False)


@_case("st.pl.training", "a model class instead of a fitted model", InputTypeError)
def training_a_model_class_instead_of_a_fitted_model():
    from stmorph.models._mlp import MLP

    return None, lambda: st.pl.training(MLP, show=False)


@_case("st.pl.sps_vs_score", "no slice ([])", InvalidParameterError)
def sps_vs_score_no_slice():
    return None, lambda: st.pl.sps_vs_score([], show=False)


# ----------------------------------------------------------------------------------- the atlas
def _scored_slices() -> dict:
    """Two fresh slices with ``var['eps']`` from ``st.tl.eps`` (the input of the atlas)."""
    slices = {}
    for name in ("A1", "B1"):
        a = table()
        st.tl.eps(a, use_rep="X_lat", progress=False)
        a.obs["tissue"] = "breast"
        slices[name] = a
    return slices


@_case("st.tl.predictable_genes", "the group column missing from one slice", StmorphKeyError)
def predictable_genes_the_group_column_missing_from_one_slice():
    slices = _scored_slices()
    del slices["B1"].obs["tissue"]
    return slices["B1"], lambda: st.tl.predictable_genes(slices, groupby="tissue")


@_case("st.tl.predictable_genes", "a slice without st.tl.eps results", StmorphKeyError)
def predictable_genes_a_slice_without_eps_results():
    slices = {**_scored_slices(), "C1": table()}
    return slices["C1"], lambda: st.tl.predictable_genes(slices)


@_case("st.tl.predictable_genes", "q-values of other slices than the EPS table", ShapeMismatchError)
def predictable_genes_q_values_of_other_slices():
    eps = np.random.default_rng(0).random((5, 3))
    import pandas as pd

    table_, qvals = pd.DataFrame(eps, columns=["a", "b", "c"]), pd.DataFrame(eps, columns=["a", "b", "x"])
    return None, lambda: st.tl.predictable_genes(table_, qvals)


@_case("st.tl.enrich_predictable", "gene sets sharing no gene with the scored genes", InvalidParameterError)
def enrich_predictable_gene_sets_sharing_no_gene_with_the_scored_genes():
    atlas = st.tl.predictable_genes(_scored_slices())
    sets = {"ensembl": [f"ENSG{i:011d}" for i in range(30)]}  # other identifiers than the scored symbols
    return None, lambda: st.tl.enrich_predictable(atlas, sets)


@_case("st.pl.marker_panel", "none of the marker genes scored", StmorphKeyError)
def marker_panel_none_of_the_marker_genes_scored():
    slices = _scored_slices()
    return slices["A1"], lambda: st.pl.marker_panel(slices, ["KLK3", "ESR1"], show=False)


@_case("st.tl.enrich_predictable", "without the optional decoupler package", MissingDependencyError)
def enrich_predictable_without_decoupler():
    atlas = st.tl.predictable_genes(_scored_slices())
    sets = {"some": list(atlas.index[:6])}
    return None, _without_module("decoupler", lambda: st.tl.enrich_predictable(atlas, sets))
