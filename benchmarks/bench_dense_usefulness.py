"""Are dense-strategy features as useful as per-spot ones? SPS and leave-one-section-out prediction on HER2ST.

For each shipped section (C2–C5) the default encoder's feature map is computed once per tile of
``--tile`` px with a ``--halo`` px margin (``st.tl.embed(strategy="dense")``'s tiling), and each
spot's feature is pooled from it in several attention-free ways:

- ``mean``: the mean of the map over the spot's 112 µm window (what ``strategy="dense"`` returns);
- ``centre``: the mean over the central 48 µm (3 × 3 cells) only;
- ``gem3``: the generalised mean with p = 3 over the window;
- ``hybrid``: ``mean`` mapped onto the per-spot features by a ridge fitted on a random 25 % of the
  spots, which keep their per-spot features (a calibration subsample).

Per-spot features: ``st.tl.embed`` (cached by ``benchmarks/bench_loso.py`` in
``/tmp/stmorph_bench_loso``). SPS: ``st.pp.prepare_expression`` → ``st.tl.eps`` (k = 5); shuffled =
per-spot features permuted (seed 0). LOSO: ``bench_loso.py``'s protocol (knn, and ridge with
``alpha="cv"``; mean Pearson over the query's 50 most variable genes).

    PYTHONPATH=src python benchmarks/bench_dense_usefulness.py [--tile 1792] [--halo 128] [--sections C2 C3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_loso import METHODS, SECTIONS, section
from compare_published import blas_kernels
from sklearn.linear_model import RidgeCV

import stmorph as st
from stmorph.models._cv import fold_scores
from stmorph.models._encoders import feature_map, resolve_encoder
from stmorph.tl._dense import Tiling, _lazy_reader, read_tile, window_means

CACHE = Path("/tmp/stmorph_bench_dense")
POOLINGS = ("mean", "centre", "gem3")
VARIANTS = ("spot", *POOLINGS, "hybrid")


def dense_pooled(name: str, tile: int, halo: int) -> dict[str, np.ndarray]:
    """``{pooling: (n_spots, 1280)}`` of section ``name``, from one feature map per tile."""
    sdata = st.datasets.her2st(name)
    table = sdata.tables["table"]
    st.pp.extract_patches(sdata, store="lazy", progress=False)
    reader, _ = _lazy_reader(table, "patches", sdata)
    fmap_fn = feature_map(resolve_encoder("default"))
    tiling = Tiling(tile, halo, fmap_fn.stride)
    u = reader.centres * (reader.patch_size / reader.window_px)
    tiles, owner = np.unique(np.floor(u / tiling.core).astype(np.int64), axis=0, return_inverse=True)
    out = {p: np.empty((len(u), fmap_fn.encoder.dim), np.float32) for p in POOLINGS}
    cell = tiling.stride
    for t, txy in enumerate(tiles):
        mine = np.flatnonzero(owner.ravel() == t)
        origin = tiling.origin(txy)
        fmap = fmap_fn(read_tile(reader, origin, tile)[None])[0]
        starts = (u[mine] - reader.patch_size / 2 - origin) / cell
        out["mean"][mine] = window_means(fmap, starts, reader.patch_size / cell)
        out["centre"][mine] = window_means(fmap, starts + (reader.patch_size / cell - 3) / 2, 3.0)
        out["gem3"][mine] = np.cbrt(window_means(np.maximum(fmap, 0) ** 3, starts, reader.patch_size / cell))
    return out


def hybrid(dense: np.ndarray, spot: np.ndarray, seed: int = 0, fraction: float = 0.25) -> np.ndarray:
    """Dense features mapped onto per-spot ones by a ridge fitted on a subsample, which keeps its spot features."""
    rng = np.random.default_rng(seed)
    calib = rng.choice(len(dense), max(int(fraction * len(dense)), 10), replace=False)
    model = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(dense[calib], spot[calib])
    out = model.predict(dense).astype(np.float32)
    out[calib] = spot[calib]
    return out


def sps(table, rep: str) -> float:
    st.tl.eps(table, use_rep=rep, graph_key=f"g_{rep}", key_added=f"eps_{rep}", progress=False)
    return float(table.uns[f"sps_eps_{rep}"]["sps"])


def loso(tables: dict, genes: list[str], rep: str, label: str) -> dict[str, float]:
    method, options = METHODS[label]
    scores = {}
    for query_name in tables:
        query = tables[query_name].copy()
        refs = [tables[n] for n in tables if n != query_name]
        st.tl.predict(query, refs, method=method, use_rep=rep, genes=genes, progress=False, device="cpu",
                      key_added="pred", **options)  # fmt: skip
        truth = query[:, genes].X
        truth = truth.toarray() if hasattr(truth, "toarray") else np.asarray(truth)
        scores[query_name] = fold_scores(truth, query[:, genes].layers["pred"])[0]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tile", type=int, default=1792)
    parser.add_argument("--halo", type=int, default=128)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS))
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    print("BLAS kernels:", "; ".join(blas_kernels()))  # one process: the kernel affects times, not ratios
    tables, rows = {}, []
    for name in args.sections:
        table = section(name)
        path = CACHE / f"{name}_{args.tile}_{args.halo}.npz"
        start = time.perf_counter()
        if not path.is_file():
            np.savez(path, **dense_pooled(name, args.tile, args.halo))
        pooled = dict(np.load(path))
        print(f"{name}: dense maps {time.perf_counter() - start:.0f}s", flush=True)
        spot = np.asarray(table.obsm["X_default"])
        table.obsm["X_spot"] = spot
        table.obsm["X_shuffled"] = spot[np.random.default_rng(0).permutation(len(spot))]
        for p in POOLINGS:
            table.obsm[f"X_{p}"] = pooled[p]
        table.obsm["X_hybrid"] = hybrid(pooled["mean"], spot)
        cos = (pooled["mean"] * spot).sum(1) / np.linalg.norm(pooled["mean"], axis=1) / np.linalg.norm(spot, axis=1)
        scored = st.datasets.her2st(name).tables["table"][table.obs_names].copy()  # raw counts
        scored.obsm.update({k: table.obsm[k] for k in table.obsm if k.startswith("X_")})
        st.pp.prepare_expression(scored)
        for v in (*VARIANTS, "shuffled"):
            rows.append({"section": name, "variant": v, "metric": "SPS", "value": sps(scored, f"X_{v}")})
        rows.append(
            {"section": name, "variant": "mean", "metric": "median cosine to spot", "value": float(np.median(cos))}
        )
        tables[name] = table
    genes = list(tables[args.sections[0]].var_names)
    for t in tables.values():
        genes = [g for g in genes if g in set(t.var_names)]
    for label in ("knn", "ridge-cv"):
        for v in VARIANTS:
            for q, s in loso(tables, genes, f"X_{v}", label).items():
                rows.append({"section": q, "variant": v, "metric": f"LOSO {label}", "value": s})
    df = pd.DataFrame(rows)
    wide = df.pivot_table(index=["metric", "variant"], columns="section", values="value")
    wide["mean"] = wide.mean(axis=1)
    print(f"tile {args.tile}, halo {args.halo}; {len(genes)} genes")
    print(wide.round(4).to_string())
    df.to_csv(CACHE / f"results_{args.tile}_{args.halo}.csv", index=False)


if __name__ == "__main__":
    main()
