"""The settings and the result of a demo run, shared by :mod:`stmorph._demo` and :mod:`stmorph._report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

MARKER_GENES = ("ERBB2", "GRB7", "KRT19", "EPCAM", "COL1A1", "FN1", "SPARC", "MGP", "PTPRC", "CD74")
"""Breast-cancer marker genes of the MG summary: HER2 amplicon, epithelium, stroma, immune cells."""


@dataclass
class DemoSettings:
    """Choices of a demo run (the defaults are the papers' settings, on the bundled data).

    Attributes
    ----------
    encoder
        Image encoder of :func:`stmorph.tl.embed`.
    methods
        Prediction methods, each fitted leave-one-section-out; ``"auto"`` chooses among its default
        candidates by grouped CV over the references (its CV table goes into the report).
    n_genes
        Number of genes scored (EPS) and predicted: as in the EPS paper, the top highly variable
        genes (seurat_v3 on the raw counts, the sections as batches) among the genes present in
        every section. ``None``: every shared gene.
    method_kwargs
        Options per method, e.g. ``{"bleep": {"epochs": 20}}``.
    plot_genes
        Genes drawn on the tissue (ERBB2 plus the query's three most predictable genes when empty).
    torch_threads
        Torch CPU threads during the run (restored afterwards; ``None`` leaves torch's setting). The
        demo's networks are small: with one thread they train as fast as with two on an idle 2-core
        machine, and many times faster when other processes compete for the cores.
    compare_encoders
        Encoders available offline compared with ``encoder`` by :func:`stmorph.tl.benchmark_encoders`
        (SPS and the HEST-Benchmark probe, one fold per section) in the report's encoder table;
        ``()`` skips the table.
    """

    encoder: str = "default"
    methods: tuple[str, ...] = ("auto", "bleep")
    n_genes: int | None = 2000
    method_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    plot_genes: tuple[str, ...] = ()
    torch_threads: int | None = 1
    compare_encoders: tuple[str, ...] = ("hed",)

    @property
    def use_rep(self) -> str:
        return f"X_{self.encoder}"

    @property
    def encoders(self) -> list[str]:
        """The encoders the demo embeds: ``encoder``, then the others of ``compare_encoders``."""
        return list(dict.fromkeys([self.encoder, *self.compare_encoders]))


@dataclass
class DemoResult:
    """Everything the report shows."""

    tables: dict[str, AnnData]
    sps: pd.DataFrame
    eps: pd.DataFrame
    metrics: pd.DataFrame
    genes: list[str]
    cv: pd.DataFrame = field(default_factory=pd.DataFrame)
    atlas: pd.DataFrame = field(default_factory=pd.DataFrame)
    encoders: pd.DataFrame = field(default_factory=pd.DataFrame)
    figures: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
