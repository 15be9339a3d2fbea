"""The demo's one-page ``report.html``: static, every image inline, written for biologists."""

from __future__ import annotations

import base64
import html
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._demo_settings import MARKER_GENES

if TYPE_CHECKING:
    from ._demo_settings import DemoResult, DemoSettings

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.5; }
h1 { font-size: 1.8em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.lead { color: #555; } .note { background: #f6f8fa; border-left: 4px solid #4a7ab5; padding: 0.6em 1em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; } th { background: #f0f0f0; }
details { margin: 0.4em 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f3f3f3; padding: 0 0.25em; }
"""

_TEXT = {
    "cv_table": (
        "How the cross-validation chose the method",
        'Each bar is a candidate of <code>method="auto"</code>, each dot one reference section held out while '
        "the candidate was fitted on the other references (the query section is never used): the mean Pearson "
        "correlation over that held-out section's 50 most variable genes. The candidate with the highest mean "
        "(dark bar, named in the title) was refitted on all references and predicted the query.",
    ),
    "ranking": (
        "Which genes can the image predict?",
        "Each bar is a gene's <b>Expression Predictability Score (EPS)</b>: it is high when spots whose image "
        "patches look alike (neighbours in the image-embedding space) also have similar expression of the gene, "
        "and close to 0 when the image says nothing about it. The label of each gene gives its q-value and in how "
        "many spots it was detected. The q-value tests the gene against chance — the same expression values "
        "shuffled over the spots (the randomization null of Geary's C, which accounts for how unevenly a gene is "
        "expressed) — corrected for testing thousands of genes (Benjamini–Hochberg); q &lt; 0.05 means the gene's "
        "image-predictability is unlikely to be chance. Only genes detected in at least 5 % of the spots are "
        "ranked (stated above the bars): a gene seen in a handful of spots can land at either extreme by chance. "
        "The genes are the 2,000 most highly variable genes shared by the sections, as in the EPS paper. Left: "
        "the most predictable genes; right: the least.",
    ),
    "eps_vs_score": (
        "Does EPS tell in advance how well a gene will be predicted?",
        "Each point is a gene: its EPS (computed from this section alone, no model trained) against how well a "
        "model trained on the <i>other</i> sections predicted it here (Pearson correlation between predicted and "
        "measured expression across spots). Colour shows where most genes lie. The Spearman ρ in the title "
        "measures how well EPS ranks genes by their eventual prediction quality (the EPS paper, Fig. 1b).",
    ),
    "sps_vs_score": (
        "Do more predictable sections get better predictions?",
        "Each point is a section: its <b>Slice Predictability Score</b> (SPS, the mean EPS over genes) against the "
        "mean per-gene Pearson correlation the models reached on it (the EPS paper, Fig. 2e). With only a few "
        "sections this is an illustration, not a test.",
    ),
    "spatial": (
        "Measured and predicted expression on the tissue",
        "Each row is a gene, drawn on the H&amp;E image: the measured expression (as the models learnt it: "
        "normalised, log-transformed and scaled per gene) and each model's prediction, made without ever seeing "
        'this section\'s expression. The panels of one gene share one colour scale ("shared scale" in each '
        "title), so colours can be compared directly (as in BLEEP, Fig. 3). Predictions are cautious — they stay "
        "closer to the average than the measurement, most of all those that average 50 retrieved reference spots "
        "— so on this common scale they look paler. ERBB2 (HER2) is the gene that defines these tumours; the "
        "others are the section's most predictable genes.",
    ),
    "spatial_pattern": (
        "The same maps, each on its own colour scale",
        'The genes above again, but every panel now spans the 1st to 99th percentile of its own spots ("own '
        'scale" in each title; the default of <code>st.pl.spatial</code>). This hides the difference in '
        "magnitude and shows whether the prediction puts high and low expression in the right places of the tissue.",
    ),
    "gene_correlation": (
        "Is the co-expression structure kept?",
        "Correlation between pairs of highly expressed genes across spots, measured (left) and predicted. Genes "
        "are ordered by clustering the measured correlations, so blocks are groups of genes that rise and fall "
        "together (e.g. tumour epithelium, stroma, immune). A prediction that keeps these blocks captures the "
        "tissue's biology, not only single genes (BLEEP, Fig. 4); the title gives how similar the two maps are.",
    ),
    "training": (
        "Did the neural network train properly?",
        "Loss of the contrastive model (BLEEP) per epoch on the training spots and on held-out validation spots. "
        "Both should fall and level off; a validation loss rising again would mean over-fitting (the model used "
        "is the one from the best validation epoch).",
    ),
}

_FILES = {
    "<section>/results.h5ad": "everything for one section (AnnData: counts, prepared expression, embeddings, EPS in "
    "<code>var</code>, predictions in <code>layers</code>, metrics in <code>var</code>, image in "
    "<code>uns['spatial']</code>); open with <code>anndata.read_h5ad</code>, draw with <code>st.pl.spatial</code>",
    "eps.csv": "EPS of every scored gene (rows; the shared highly variable genes) in every section (columns)",
    "sps.csv": "SPS, number of spots and of genes per section",
    "cv.csv": 'the cross-validation table of <code>method="auto"</code>: per query section, candidate and '
    "held-out reference section, the mean Pearson over the 50 most variable genes and over all genes, and the "
    "candidate chosen",
    "atlas.csv": "the predictable-gene atlas over the sections (<code>st.tl.predictable_genes</code>): per gene its "
    "mean EPS, the share of sections where it is significant, its consistency and the top/bottom 5 % flags",
    "metrics.csv": "prediction quality per section and method (mean Pearson over marker genes MG, the 50 most "
    "expressed HEG-50 and most variable HVG-50 genes, all genes; Spearman, RMSE, SSIM and Hit@T over all genes)",
    "encoders.csv": "the encoder table: per image encoder the mean SPS over sections, its permutation p-value, "
    "the HEST-Benchmark probe's mean Pearson r and its sd over the sections left out",
    "*.png": "every figure of this report",
}


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _figure_block(kind: str, entries: list[tuple[str, Path]]) -> str:
    title, text = _TEXT[kind]
    parts = [f"<h2>{title}</h2>", f"<p>{text}</p>"]
    for i, (section, path) in enumerate(entries):
        if len(entries) == 1:
            parts.append(_image(path))
        else:
            parts.append(f"<details{' open' if i == 0 else ''}><summary>Section {html.escape(section)}</summary>")
            parts.append(_image(path) + "</details>")
    return "\n".join(parts)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, na_rep="–")


def _sps_table(sps: pd.DataFrame) -> str:
    return _table(sps.rename(columns={"slice": "section", "sps": "SPS", "n_spots": "spots", "n_genes": "genes"}))


def _metrics_table(metrics: pd.DataFrame) -> str:
    names = {"section": "section", "method": "method", "sps": "SPS"}
    names |= {c: f"Pearson {c.removeprefix('pearson_')}" for c in metrics.columns if c.startswith("pearson_")}
    return _table(metrics[list(names)].rename(columns=names))


def _cv_summary(cv: pd.DataFrame) -> str:
    """The CV table as one row per query section and candidate (means over the held-out folds)."""
    means = cv.groupby(["section", "candidate"], sort=False)[["pearson_hvg50", "pearson_all"]].mean().reset_index()
    chosen = cv.groupby("section", sort=False)["selected"].first()
    means["chosen"] = np.where(means["candidate"].to_numpy() == chosen.loc[means["section"]].to_numpy(), "✓", "")
    return _table(means.rename(columns={"pearson_hvg50": "CV Pearson HVG-50", "pearson_all": "CV Pearson all"}))


def trust_summary(result: DemoResult, methods: Sequence[str], n_genes: int = 5) -> pd.DataFrame:
    """Per left-out section and method: trusted genes, share reaching r ≥ 0.1, Spearman(expected, achieved r)."""
    from . import get
    from ._keys import Key

    rows = []
    for section, table in result.tables.items():
        for method in methods:
            key = Key.layers.predicted(method)
            if Key.var.trust(key, "trusted") not in table.var:
                continue
            trust = get.trust_df(table, key)
            achieved = table.var[Key.var.metric("pearson", method)].to_numpy()
            trusted = trust["trusted"].to_numpy(bool)
            ok = np.isfinite(trust["expected_r"].to_numpy()) & np.isfinite(achieved)
            top = trust[trusted].sort_values("expected_r", ascending=False).head(n_genes)
            rows.append(
                {
                    "section": section,
                    "method": method,
                    "trusted genes": int(trusted.sum()),
                    "of them reached r ≥ 0.1": float(np.mean(achieved[trusted] >= 0.1)) if trusted.any() else np.nan,
                    "Spearman(expected r, achieved r)": pd.Series(trust["expected_r"][ok]).corr(
                        pd.Series(achieved[ok], index=trust.index[ok]), method="spearman"
                    ),
                    "most trusted (expected r, EPS, q)": "; ".join(
                        f"{g} ({row.expected_r:.2f}, {row.eps:.2f}, {row.eps_qval:.0e})" for g, row in top.iterrows()
                    ),
                }
            )
    return pd.DataFrame(rows)


_ATLAS_TEXT = {
    "atlas_heatmap": "EPS of the 30 genes with the highest mean EPS (rows) in every section (columns), both ordered "
    "by clustering: a gene predictable in one section only stands out as a lone bright cell.",
    "marker_panel": "EPS (left) of named genes in every section (one dot per section, a bar at the mean) and how "
    "well each method predicted them there (right: Pearson r, each section predicted from the others). The first "
    "six are the EPS paper's markers (KLK3, ERBB2, ESR1 predictable across its cancers; CD274, BRCA1, BRCA2 not); "
    "genes not among the scored genes here are named in the title. The others are this demo's breast markers.",
}


def _gene_list(atlas: pd.DataFrame, flag: str, n: int) -> str:
    columns = {
        "mean_eps": "mean EPS",
        "n_slices": "sections",
        "frac_significant": "significant in",
        "consistency": "consistency",
    }
    rows = atlas[atlas[flag]]
    rows = rows.head(n) if flag == "top" else rows.iloc[::-1].head(n)
    return _table(rows[list(columns)].rename(columns=columns).rename_axis("gene").reset_index())


def _atlas_section(result: DemoResult, n: int = 15) -> list[str]:
    """The cohort atlas: the most and least predictable genes over all sections, the heatmap, the marker panel."""
    atlas = result.atlas
    n_flagged = int(atlas["top"].sum())
    body = [
        "<h2>The predictable-gene atlas of the sections</h2>",
        "<p>Over all sections together (the EPS paper, Fig. 2): each gene's mean EPS, the share of sections where "
        "it is significantly predictable (q &lt; 0.05), and its <i>consistency</i> — the share of sections where "
        "its EPS is above that section's median gene, so 1 means always among the more predictable half whatever "
        f"the section's SPS. The top and bottom 5 % by mean EPS ({n_flagged} genes each; <code>atlas.csv</code> has "
        f"all of them) are the genes the image predicts best and worst; the {n} most extreme of each:</p>",
        "<h3>Most predictable</h3>",
        _gene_list(atlas, "top", n),
        "<h3>Least predictable</h3>",
        _gene_list(atlas, "bottom", n),
    ]
    for kind, text in _ATLAS_TEXT.items():
        if kind in result.figures:
            body += [f"<p>{text}</p>", _image(result.figures[kind][0][1])]
    return body


def write_report(path: Path, result: DemoResult, settings: DemoSettings, sections: Sequence[str]) -> Path:
    """Write the one-page HTML report of a demo run to ``path`` and return ``path``."""
    from . import __version__

    n_spots = sum(t.n_obs for t in result.tables.values())
    runtime = sum(result.timings.values())
    methods = ", ".join(settings.methods)
    body = [
        "<h1>Which genes can an H&amp;E image predict?</h1>",
        f'<p class="lead">stmorph {html.escape(__version__)} demo on HER2-positive breast cancer sections '
        f"{', '.join(map(html.escape, sections))} (HER2ST, Andersson et al. 2021; legacy Spatial Transcriptomics, "
        f"100 µm spots): {n_spots} spots, {len(result.genes)} genes predicted. Generated "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC in {runtime / 60:.1f} min on "
        f"{html.escape(platform.node())}.</p>",
        '<p class="note">What was done: an image patch of 112 µm around every spot was turned into a numeric '
        f"description by the <code>{html.escape(settings.encoder)}</code> image encoder. From these descriptions and "
        "the measured expression (normalised, log-transformed, scaled per gene, as in the EPS paper), stmorph "
        "computed how predictable each gene is in each section (EPS/SPS), then trained models "
        f"(<code>{html.escape(methods)}</code>) on all sections but one and predicted the left-out section from its "
        "image alone — so every prediction shown here is on a section the model never saw.</p>",
        "<h2>How predictable is each section?</h2>",
        "<p>SPS is the mean EPS over the section's genes: how much of its expression the image can explain at all "
        "(0: nothing). Sections differ in tissue composition, so they differ in SPS.</p>",
        _sps_table(result.sps),
        "<h2>How good are the predictions?</h2>",
        "<p>Mean Pearson correlation between predicted and measured expression across the spots of the left-out "
        "section, averaged over marker genes (MG: "
        f"{', '.join(g for g in _markers(result))}), the 50 most expressed genes (HEG-50), the 50 most variable "
        "genes (HVG-50) and all predicted genes, as in BLEEP's Table 1 (<code>metrics.csv</code> has more "
        "measures). 1 would be perfect, 0 no better than a constant.</p>",
        _metrics_table(result.metrics),
    ]
    if not result.cv.empty:
        body += [
            "<h2>Which method did the cross-validation choose?</h2>",
            "<p><code>auto</code> compared its candidates (untrained retrieval of the most similar reference spots, "
            "<code>knn</code>, and ridge regression, on each spot's embedding and with the mean embedding of its 6 "
            "nearest spots (<code>context=True</code>), the z-scored average of the two best of those, each with its "
            "setting chosen by an inner cross-validation, and BLEEP with context when its fits are affordable) by "
            "holding out one reference section at a time; the query section played no part. Mean held-out Pearson "
            "per candidate (<code>cv.csv</code> has every fold):</p>",
            _cv_summary(result.cv),
        ]
    if not result.encoders.empty:
        body += _encoder_section(result.encoders, result.figures.get("benchmark_encoders", []))
    trust = trust_summary(result, settings.methods)
    if not trust.empty:
        body += [
            "<h2>Which predictions to believe</h2>",
            "<p>Beside every prediction stmorph writes, per gene, the Pearson r it expects on a new section "
            "(estimated by predicting each reference section from the others, never from the query) and the gene's "
            "EPS on the reference sections with a q-value. A gene is <em>trusted</em> when its expected r is at least "
            "0.15 and its EPS q-value below 0.05 (<code>var['predicted_&lt;method&gt;_trusted']</code>). Here the "
            "left-out section's measured expression shows how far that held:</p>",
            _table(trust),
        ]
    if not result.atlas.empty:
        body += _atlas_section(result)
    for kind in _TEXT:
        if kind in result.figures:
            body.append(_figure_block(kind, result.figures[kind]))
    body.append("<h2>Files in this folder</h2><ul>")
    body += [f"<li><code>{html.escape(name)}</code>: {text}</li>" for name, text in _FILES.items()]
    body.append("</ul>")
    timings = ", ".join(f"{k}: {v:.0f} s" for k, v in result.timings.items())
    body.append(f'<p class="lead">Run time per step — {html.escape(timings)}.</p>')
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>stmorph demo report</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path


def _encoder_section(encoders: pd.DataFrame, figure: list[tuple[str, Path]]) -> list[str]:
    """The encoder table: which image encoder available offline suits these sections, by SPS and by the probe."""
    columns = {"sps": "SPS", "sps_pval": "SPS p-value", "probe_pearson_mean": "probe r", "probe_pearson_sd": "sd"}
    shown = encoders[list(columns)].rename(columns=columns).reset_index()
    shown["encoder"] = shown["encoder"].str.removeprefix("X_")
    return [
        "<h2>Which image encoder suits these sections?</h2>",
        "<p>Two answers for each encoder available offline: SPS, the mean EPS of a section averaged over the "
        "sections (no training; its p-value compares it with the spots shuffled against the image graph), and the "
        "HEST-Benchmark linear probe: standardise, PCA to 256 components and ridge regression onto the log counts of "
        "the 50 most variable well-detected genes, trained on all sections but one and scored (mean Pearson r over "
        "the genes) on the one left out. HEST leaves out a patient; these sections all come from one patient, so "
        "the probe here measures transfer between sections of one tumour (<code>st.tl.benchmark_encoders</code>, "
        "<code>encoders.csv</code>).</p>",
        _table(shown),
        *(_image(path) for _, path in figure),
    ]


def _markers(result: DemoResult) -> list[str]:
    return [g for g in MARKER_GENES if g in result.genes]
