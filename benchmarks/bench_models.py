"""BLEEP Table-1 style accuracy: leave-one-section-out on HER2ST C2–C5, frozen default encoder.

Run from the repository root::

    .venv/bin/python benchmarks/bench_models.py                 # 4 folds × 3 seeds × 4 methods
    .venv/bin/python benchmarks/bench_models.py --seeds 0 --methods bleep ridge   # a quick look
    # seeds (or --folds) in parallel processes, then one summary table
    .venv/bin/python benchmarks/bench_models.py --seeds 0 --out s0.csv &   # ... --seeds 1 --out s1.csv
    .venv/bin/python benchmarks/bench_models.py --summary s0.csv s1.csv s2.csv

Retrieval speed and memory against a large synthetic reference (no data needed)::

    .venv/bin/python benchmarks/bench_models.py --retrieval 1000000

End-to-end (fine-tuning the encoder on the patches; for a GPU)::

    python benchmarks/bench_models.py --mode end_to_end --device cuda --methods bleep heclip stnet

Protocol (fixed before looking at any test fold; nothing is tuned):

- Every section is cut into 224 px patches at 0.5 µm/px (``st.pp.extract_patches``) and embedded
  with the default encoder (``st.tl.embed(model="default")``, EfficientNet-Lite0, 1280-d); the
  embeddings are cached in ``--cache`` (a temp folder by default).
- Expression: ``normalize_total(1e4)`` → ``log1p`` of the raw counts, as in BLEEP.
- Genes of a fold: the union of the top-1000 highly variable genes (scanpy defaults on the
  log data, as in BLEEP's ``hvg_selection_and_pooling``) of the three *reference* sections only,
  restricted to genes present in all four sections.
- Each method is fitted on the three reference sections with its paper defaults
  (``st.tl.predict(query, references, method=..., use_rep="X_default")``) and predicts the held-out
  section. With ``--mode end_to_end``, BLEEP and HECLIP fine-tune the default encoder on the
  patches (``use_rep="patches"``, ``mode="end_to_end"``) and ST-Net trains DenseNet-121;
  ``--epochs`` and ``--patch-size`` shrink a run for a smoke test only.
- Scores as in BLEEP's evaluation: Pearson correlation per gene on the held-out section, averaged
  over the 50 genes with the highest total expression (HEG-50) and the 50 with the highest
  variance (HVG-50) in the held-out section. Reported as mean ± sd over 4 folds × the seeds.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SECTIONS = ("C2", "C3", "C4", "C5")
METHODS = ("bleep", "heclip", "ridge", "mlp")
USE_REP = "X_default"


def load_section(section: str, cache: Path, patches: bool = False, patch_size: int = 224):
    """Log-normalised expression with cached default-encoder embeddings (or the patches) in ``obsm``."""
    import scanpy as sc

    import stmorph as st

    sdata = st.datasets.her2st(section)
    table = sdata.tables["table"].copy()
    path = cache / f"{section}_{USE_REP}.npy"
    if patches:
        table = st.pp.extract_patches(sdata, patch_size=patch_size, copy=True, progress=False)
    elif path.is_file():
        table.obsm[USE_REP] = np.load(path)
    else:
        patched = st.pp.extract_patches(sdata, copy=True, progress=False)
        st.tl.embed(patched, model="default", progress=False)
        np.save(path, patched.obsm[USE_REP])
        table.obsm[USE_REP] = patched.obsm[USE_REP]
        table.obsm.pop("patches", None)
    sc.pp.normalize_total(table, target_sum=1e4)
    sc.pp.log1p(table)
    return table


def fold_genes(references: list, shared: list[str], n_top: int) -> list[str]:
    """Union of each reference section's top-``n_top`` HVGs, among ``shared`` genes."""
    import scanpy as sc

    chosen: set[str] = set()
    for ref in references:
        sub = ref[:, shared].copy()
        sc.pp.highly_variable_genes(sub, n_top_genes=n_top)
        chosen |= set(sub.var_names[sub.var["highly_variable"]])
    return [g for g in shared if g in chosen]


def table1_scores(true: np.ndarray, pred: np.ndarray, n: int = 50) -> tuple[float, float]:
    """Mean Pearson over the HEG-``n`` and HVG-``n`` genes of the held-out section (BLEEP's definition)."""
    from stmorph.tl._metrics import pearson

    r = pearson(true, pred)
    heg = np.argsort(true.sum(0))[-n:]
    hvg = np.argsort(true.var(0))[-n:]
    return float(np.nanmean(r[heg])), float(np.nanmean(r[hvg]))


def _rss_mib() -> float:
    """Current resident memory of this process (Linux ``/proc``)."""
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_retrieval(n_ref: int, n_query: int = 1000, dim: int = 256, n_genes: int = 50, k: int = 50) -> None:
    """Time :func:`retrieve` on random data and report the growth of peak memory while it runs."""
    import resource

    from stmorph.models._retrieval import retrieve

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((n_ref, dim), dtype=np.float32)
    expression = rng.random((n_ref, n_genes), dtype=np.float32)
    query = rng.standard_normal((n_query, dim), dtype=np.float32)
    inputs_mib = (reference.nbytes + expression.nbytes + query.nbytes) / 2**20
    before = _rss_mib()
    start = time.perf_counter()
    retrieve(query, reference, expression, k=k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    print(
        f"retrieval: {n_query} queries × {n_ref} reference spots ({dim}-d, {n_genes} genes, k={k}): "
        f"{seconds:.1f} s, {n_query / seconds:.0f} queries/s; inputs {inputs_mib:.0f} MiB, "
        f"peak memory above the inputs {peak - before:.0f} MiB (includes a normalised copy of the reference)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", nargs="+", default=list(SECTIONS), help="held-out sections to run")
    parser.add_argument("--n-top-genes", type=int, default=1000, help="HVGs per reference section")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "stmorph_bench_models")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", choices=["frozen", "end_to_end"], default="frozen")
    parser.add_argument("--epochs", type=int, default=None, help="override the papers' epochs (smoke tests only)")
    parser.add_argument("--patch-size", type=int, default=224, help="patch side in px for end-to-end runs")
    parser.add_argument("--retrieval", type=int, default=0, help="only time retrieval against this many spots")
    parser.add_argument("--out", type=Path, default=None, help="write every run's scores to this CSV as it goes")
    parser.add_argument("--summary", type=Path, nargs="+", default=None, help="only summarise these result CSVs")
    args = parser.parse_args()
    if args.retrieval:
        bench_retrieval(args.retrieval)
        return
    if args.summary:
        print_summary(pd.concat([pd.read_csv(path) for path in args.summary], ignore_index=True))
        return

    import torch

    import stmorph as st

    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, device {args.device}, {args.mode}")
    end_to_end = args.mode == "end_to_end"
    use_rep = "patches" if end_to_end else USE_REP
    tables = {s: load_section(s, args.cache, end_to_end, args.patch_size) for s in SECTIONS}
    shared = [g for g in tables[SECTIONS[0]].var_names if all(g in tables[s].var_names for s in SECTIONS[1:])]
    folds = {}
    for test in args.folds:
        refs = [tables[s] for s in SECTIONS if s != test]
        genes = fold_genes(refs, shared, args.n_top_genes)
        true = tables[test][:, genes].X
        folds[test] = (refs, genes, true.toarray() if hasattr(true, "toarray") else np.asarray(true))
        n_ref = sum(r.n_obs for r in refs)
        print(f"fold {test}: {n_ref} reference spots, {tables[test].n_obs} query spots, {len(genes)} genes")
    rows = []
    for seed in args.seeds:  # seed-major: every fold is covered before the next seed starts
        for test, (refs, genes, true) in folds.items():
            for method in args.methods:
                options = {"mode": "end_to_end"} if end_to_end and method in ("bleep", "heclip") else {}
                if args.epochs is not None:
                    options["epochs"] = args.epochs
                start = time.perf_counter()
                out = st.tl.predict(
                    tables[test],
                    refs,
                    method=method,
                    use_rep=use_rep,
                    genes=genes,
                    random_state=seed,
                    device=args.device,
                    progress=False,
                    copy=True,
                    **options,
                )
                heg, hvg = table1_scores(true, out[:, genes].layers[f"predicted_{method}"])
                rows.append({"seed": seed, "fold": test, "method": method, "heg50": heg, "hvg50": hvg})
                rows[-1]["seconds"] = time.perf_counter() - start
                print(f"  seed {seed} fold {test} {method:<7} HEG-50 {heg:.3f}  HVG-50 {hvg:.3f}", flush=True)
                if args.out is not None:
                    pd.DataFrame(rows).to_csv(args.out, index=False)
    print_summary(pd.DataFrame(rows))


def print_summary(results: pd.DataFrame) -> None:
    """Markdown table: mean ± sd over (fold, seed) runs of HEG-50 / HVG-50 Pearson, per method."""
    print("\n| method | HEG-50 Pearson | HVG-50 Pearson | runs (folds × seeds) | s per fit |")
    print("|--------|----------------|----------------|----------------------|-----------|")
    for method, group in results.groupby("method", sort=False):
        runs = f"{len(group)} ({group['fold'].nunique()} × {group['seed'].nunique()})"
        heg, hvg = group["heg50"], group["hvg50"]
        print(
            f"| {method} | {heg.mean():.3f} ± {heg.std(ddof=1):.3f} | {hvg.mean():.3f} ± {hvg.std(ddof=1):.3f} "
            f"| {runs} | {group['seconds'].mean():.0f} |"
        )


if __name__ == "__main__":
    main()
