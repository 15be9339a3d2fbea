"""The demo behind ``make demo`` / ``stmorph demo``: the whole story on the HER2ST sections.

For every section: cut a patch around each spot, embed it, prepare the expression as the EPS
paper does, and compute EPS/SPS on the image graph. Then predict each section from the others
(leave one section out) with ``method="auto"`` (the best of untrained knn retrieval and ridge, on
each spot's embedding and with the mean embedding of its 6 nearest spots, their z-scored
ensemble, and frozen BLEEP with context, each with its settings chosen by grouped cross-validation
over the reference sections) and BLEEP
(frozen embeddings), evaluate, and write the results, the CV tables, the plots and a one-page
``report.html``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from . import datasets, get, pl, pp, tl
from ._anndata import read_uns
from ._demo_settings import MARKER_GENES, DemoResult, DemoSettings
from ._keys import Key
from ._logging import logger
from ._report import write_report
from ._validation import check_choice, check_int, check_path
from .errors import InvalidParameterError
from .pl import min_detected_spots
from .tl import AUTO

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@contextmanager
def _torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads, restoring the previous number afterwards."""
    if n is None:
        yield
        return
    import torch  # the demo's encoder and BLEEP need torch anyway

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _bar(items, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not progress, leave=True)


def _prepare_section(sdata: SpatialData, name: str, settings: DemoSettings) -> AnnData:
    """Patches → embedding → the EPS paper's expression pipeline, on a copy of the section's table.

    The copy also gets a Visium-style ``uns["spatial"]`` (the H&E image at 2000 px), so the results
    file is self-contained and :func:`stmorph.pl.spatial` draws it directly.
    """
    from .pl import visium_uns

    table = pp.extract_patches(sdata, copy=True, progress=False)
    table.uns[Key.uns.spatial] = visium_uns(sdata, table, "he", name, 2000)
    with _torch_threads(settings.torch_threads):
        for encoder in settings.encoders:
            tl.embed(table, model=encoder, progress=False)
    del table.obsm["patches"]  # ~150 kB per spot; the embedding is what the rest needs
    pp.prepare_expression(table)
    return table


def _encoder_table(tables: dict[str, AnnData], settings: DemoSettings, out: Path) -> pd.DataFrame:
    """SPS and the HEST-Benchmark probe of each embedding (a fold per section) into ``encoders.csv``; empty without."""
    if not settings.compare_encoders:
        return pd.DataFrame()
    reps = [f"X_{encoder}" for encoder in settings.encoders]
    table = tl.benchmark_encoders(tables, use_rep=reps)
    table.to_csv(out / "encoders.csv")
    return table


def _shared_genes(tables: dict[str, AnnData], n_genes: int | None) -> list[str]:
    """Genes in every section: the markers, then the most highly variable others (seurat_v3); ``n_genes`` in all."""
    import anndata as ad
    import scanpy as sc

    shared = next(iter(tables.values())).var_names
    for table in tables.values():
        shared = shared.intersection(table.var_names, sort=False)
    if not n_genes or n_genes >= len(shared):
        return list(shared)
    markers = [g for g in MARKER_GENES if g in shared][:n_genes]
    counts = ad.concat(
        {
            name: ad.AnnData(X=t[:, shared].layers[Key.layers.counts], var=t.var[[]].loc[shared])
            for name, t in tables.items()
        },
        label="section",
    )
    hvg = sc.pp.highly_variable_genes(
        counts, n_top_genes=n_genes, flavor="seurat_v3", batch_key="section", inplace=False
    )
    ranked = hvg[hvg["highly_variable"]].drop(index=markers, errors="ignore")
    ranked = ranked.sort_values(["highly_variable_nbatches", "highly_variable_rank"], ascending=[False, True])
    return markers + list(ranked.index[: n_genes - len(markers)])


def _section_eps(tables: dict[str, AnnData], genes: list[str], settings: DemoSettings) -> None:
    """EPS of the demo's genes in every section (randomization p-values, detection in ``var``)."""
    for table in tables.values():
        tl.eps(table, use_rep=settings.use_rep, genes=genes, progress=False)


def _leave_one_out(tables: dict[str, AnnData], genes: list[str], settings: DemoSettings, progress: bool) -> None:
    """Predict every section from all the others, with every method, into ``layers["predicted_<method>"]``."""
    folds = [(query, method) for query in tables for method in settings.methods]
    for query, method in _bar(folds, "2/4 predict (leave one section out)", progress):
        references = [t for name, t in tables.items() if name != query]
        with _torch_threads(settings.torch_threads):  # set per call: other libraries reset OpenMP's thread count
            tl.predict(
                tables[query],
                references,
                method=method,
                use_rep=settings.use_rep,
                genes=genes,
                progress=False,
                **settings.method_kwargs.get(method, {}),
            )


def _evaluate(tables: dict[str, AnnData], genes: list[str], settings: DemoSettings, progress: bool) -> pd.DataFrame:
    """Per-gene metrics into each table's ``var``; one summary row per section and method."""
    markers = [g for g in MARKER_GENES if g in genes]
    rows = []
    for name in _bar(list(tables), "3/4 evaluate", progress):
        table = tables[name]
        for method in settings.methods:
            tl.evaluate(table, f"predicted_{method}", marker_genes=markers, rank_layer=Key.layers.log1p)
            summary = get.evaluation_df(table, method)
            rows.append(summary.assign(section=name, method=summary.index, sps=table.uns["sps"]["sps"]))
    metrics = pd.concat(rows, ignore_index=True)
    return metrics[["section", "method", "sps", *[c for c in metrics.columns if c not in ("section", "method", "sps")]]]


def _cv_tables(tables: dict[str, AnnData]) -> pd.DataFrame:
    """Every ``method="auto"`` CV table: one row per query section, candidate and fold (empty without auto)."""
    frames = []
    for name, table in tables.items():
        key = Key.layers.predicted(AUTO)
        if "cv" in read_uns(table, Key.uns.tool("predict", key), {}):
            cv = get.cv_df(table, key)
            frames.append(cv.assign(section=name, selected=cv.loc[cv["selected"], "candidate"].iloc[0]))
    if not frames:
        return pd.DataFrame()
    cv = pd.concat(frames, ignore_index=True)
    return cv[["section", "candidate", "fold", "pearson_hvg50", "pearson_all", "selected"]]


def _plot_genes(table: AnnData, genes: list[str], settings: DemoSettings) -> list[str]:
    if settings.plot_genes:
        return list(settings.plot_genes)
    detected = table.var.loc[genes, Key.var.n_detected("eps")] >= min_detected_spots(table.n_obs, None)
    predicted = table.var.loc[genes, "eps"][detected].dropna().sort_values(ascending=False)
    chosen = ["ERBB2"] if "ERBB2" in predicted.index else []
    return chosen + [g for g in predicted.index if g not in chosen][: 4 - len(chosen)]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _section_figures(name: str, table: AnnData, genes: list[str], settings: DemoSettings, out: Path) -> dict[str, Path]:
    scores = [f"pearson_{m}" for m in settings.methods]
    shown = _plot_genes(table, genes, settings)
    figures = {
        "ranking": pl.eps_ranking(table, n_top=15, show=False),
        "eps_vs_score": pl.eps_vs_score(table, scores, show=False),
        "spatial": pl.spatial(table, shown, scale="shared", show=False),
        "spatial_pattern": pl.spatial(table, shown, show=False),
        "gene_correlation": pl.gene_correlation(table, n_top=40, show=False),
    }
    if "auto" in settings.methods:
        figures["cv_table"] = pl.cv_table(table, show=False)
    if any("history" in rec for rec in read_uns(table, Key.uns.tool("predict"), {}).values()):
        figures["training"] = pl.training(table, show=False)
    return {kind: _save(fig, out / f"{kind}_{name}.png") for kind, fig in figures.items()}


def _figures(result: DemoResult, settings: DemoSettings, out: Path, progress: bool):
    figures: dict[str, list[tuple[str, Path]]] = {}
    for name in _bar(list(result.tables), "4/4 plot", progress):
        paths = _section_figures(name, result.tables[name], result.genes, settings, out)
        for kind, path in paths.items():
            figures.setdefault(kind, []).append((name, path))
    scores = [f"pearson_{m}" for m in settings.methods]
    figures["sps_vs_score"] = [
        ("all", _save(pl.sps_vs_score(result.tables, scores, show=False), out / "sps_vs_score.png"))
    ]
    if not result.encoders.empty:
        figures["benchmark_encoders"] = [
            ("all", _save(pl.benchmark_encoders(result.encoders, show=False), out / "encoders.png"))
        ]
    return figures


def atlas_markers(genes: Sequence[str]) -> list[str]:
    """The marker panel's genes: the EPS paper's markers, then the demo's breast markers that were scored."""
    from .tl import PAPER_MARKERS

    return list(PAPER_MARKERS) + [g for g in MARKER_GENES if g in genes and g not in PAPER_MARKERS]


def _atlas(result: DemoResult, out: Path) -> None:
    """The cohort atlas of the sections (their stored EPS and q-values): ``atlas.csv`` and its two figures."""
    result.atlas = tl.predictable_genes(result.tables)
    result.atlas.to_csv(out / "atlas.csv")
    result.figures["atlas_heatmap"] = [
        ("all", _save(pl.eps_heatmap(result.tables, n_top=30, show=False), out / "atlas_heatmap.png"))
    ]
    panel = pl.marker_panel(result.tables, atlas_markers(result.genes), show=False)
    result.figures["marker_panel"] = [("all", _save(panel, out / "marker_panel.png"))]


def _write_results(tables: dict[str, AnnData], out: Path) -> None:
    """``<out>/<section>/results.h5ad``: the section's table with every result and its image."""
    for name, table in tables.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        table.write_h5ad(folder / "results.h5ad", compression="gzip")


def run_demo(
    out: str | os.PathLike = "stmorph_demo",
    sections: Sequence[str] = ("C2", "C3", "C4", "C5"),
    *,
    data_dir: str | os.PathLike | None = None,
    settings: DemoSettings | None = None,
    progress: bool = True,
) -> Path:
    """Run the demo on HER2ST sections and write its results, plots and report to ``out``.

    Parameters and outputs as in :func:`run_demo_steps`; returns the path of ``report.html``.

    Examples
    --------
    The demo takes minutes (``make demo``; ``tests/test_demo.py`` runs it), too long for the
    docstring examples of the test suite:

    >>> from stmorph._demo import run_demo
    >>> run_demo("stmorph_demo")  # doctest: +SKIP
    """
    return run_demo_steps(out, sections, data_dir=data_dir, settings=settings, progress=progress).report


def _check_inputs(
    sections: Sequence[str], data_dir: str | os.PathLike | None, settings: DemoSettings, out: str | os.PathLike
) -> None:
    """Check every input before any section is embedded: options, methods, the output folder, each section's files."""
    from .datasets import her2st_files

    if settings.n_genes is not None:
        check_int(settings.n_genes, "n_genes", low=1)
    if settings.torch_threads is not None:
        check_int(settings.torch_threads, "torch_threads", low=1)
    for method in settings.methods:
        check_choice(method, [*tl.list_methods(), AUTO], "method")
    check_path(out, "out", "folder_to_write")
    for section in sections:
        her2st_files(section, data_dir)


def run_demo_steps(
    out: str | os.PathLike = "stmorph_demo",
    sections: Sequence[str] = ("C2", "C3", "C4", "C5"),
    *,
    data_dir: str | os.PathLike | None = None,
    settings: DemoSettings | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo and return everything it computed (tables, metrics, figures, timings, report path).

    Parameters
    ----------
    out
        Output folder (created).
    sections
        HER2ST sections; at least two (each is predicted from the others).
    data_dir
        Folder holding ``her2st/`` (see :func:`stmorph.datasets.her2st`).
    settings
        Encoder, methods, genes and method options (:class:`DemoSettings`).
    progress
        Show a progress bar per step.

    Returns
    -------
    :class:`DemoResult`; ``result.report`` is the path of ``report.html``. The folder also holds
    ``<section>/results.h5ad``, ``eps.csv`` (genes × sections), ``sps.csv``, ``metrics.csv`` (one
    row per section and method), ``cv.csv`` (with ``"auto"``: the CV table of every query section,
    one row per candidate and fold), ``atlas.csv`` (:func:`stmorph.tl.predictable_genes` over the
    sections), ``encoders.csv`` (``settings.compare_encoders``: the table of
    :func:`stmorph.tl.benchmark_encoders`, one fold per section) and the PNGs.

    Examples
    --------
    Even on two sections with the ``hed`` features and ridge alone the demo takes ~50 s of CPU
    (``tests/test_demo.py`` runs it), too long for the docstring examples of the test suite:

    >>> from stmorph._demo import run_demo_steps
    >>> from stmorph._demo_settings import DemoSettings
    >>> small = DemoSettings(encoder="hed", methods=("ridge",), n_genes=50)
    >>> run_demo_steps("stmorph_demo", ["C2", "C3"], settings=small).timings  # doctest: +SKIP
    """

    settings = settings or DemoSettings()
    sections = list(dict.fromkeys(sections))
    if len(sections) < 2:
        raise InvalidParameterError(
            f"the demo needs at least two sections (one is predicted from the others); got {sections}."
        )
    _check_inputs(sections, data_dir, settings, out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings, start = {}, time.perf_counter()
    tables = {
        s: _prepare_section(datasets.her2st(s, data_dir=data_dir), s, settings)
        for s in _bar(sections, "1/4 load, embed spots, EPS", progress)
    }
    timings["load, embed, EPS"] = time.perf_counter() - start
    genes = _shared_genes(tables, settings.n_genes)
    _section_eps(tables, genes, settings)
    logger.info("demo: scoring and predicting %d highly variable genes shared by %s", len(genes), sections)
    _leave_one_out(tables, genes, settings, progress)
    metrics = _evaluate(tables, genes, settings, progress)
    timings["predict + evaluate"] = time.perf_counter() - start - sum(timings.values())
    sps = pd.DataFrame(
        [
            {"slice": s, **{k: t.uns["sps"][k] for k in ("sps", "n_genes")}, "n_spots": t.n_obs}
            for s, t in tables.items()
        ]
    )
    eps = pd.DataFrame({s: t.var.loc[genes, "eps"] for s, t in tables.items()})
    result = DemoResult(tables=tables, sps=sps, eps=eps, metrics=metrics, genes=genes, cv=_cv_tables(tables))
    result.encoders = _encoder_table(tables, settings, out)
    if not result.cv.empty:
        result.cv.to_csv(out / "cv.csv", index=False)
    eps.to_csv(out / "eps.csv", index_label="gene")
    sps.to_csv(out / "sps.csv", index=False)
    metrics.to_csv(out / "metrics.csv", index=False)
    _write_results(tables, out)
    result.figures = _figures(result, settings, out, progress)
    _atlas(result, out)
    timings["write + plot"] = time.perf_counter() - start - sum(timings.values())
    result.timings = timings
    result.report = write_report(out / "report.html", result, settings, sections)
    logger.info("demo finished in %.0f s: %s", sum(timings.values()), timings)
    return result
