"""Does SPS rank image encoders as the HEST-Benchmark probe does? The four shipped HER2ST sections C2–C5.

Encoders available offline: ``default`` (EfficientNet-Lite0, ImageNet weights), ``hed`` (57
stain/texture features), and random-weight controls of the same architectures:
``default-random`` (EfficientNet-Lite0, random initialisation, ``torch.manual_seed(seed)``) and
``resnet50-random`` (``--resnet``). HED has no weights; its control, like every encoder's, is its
own embedding shuffled against the spots (``<name>-shuffled``, the null).

All four sections come from one patient, so the probe's folds are the sections (groups =
sections: leave one section out), which is easier than HEST's leave-one-patient-out. Each
embedding is timed (seconds per 1,000 patches, one torch thread) and cached under ``--cache``
with its timing, so a second run only recomputes the benchmark. Writes ``--out``/encoders.csv
and encoders.png and prints the table and the Spearman correlations of SPS and probe.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src nice -n 5 \\
        python benchmarks/bench_encoders.py [--resnet] [--out /tmp/bench_encoders]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import stmorph as st

SECTIONS = ("C2", "C3", "C4", "C5")
ARCHS = {"default-random": ("tf_efficientnet_lite0", (0.5, 0.5, 0.5)), "resnet50-random": ("resnet50", None)}


def register_random(name: str, seed: int) -> None:
    """Register ``name`` of :data:`ARCHS`: the timm architecture with random weights (seeded)."""
    import timm

    from stmorph.models._presets import IMAGENET_MEAN, IMAGENET_STD

    arch, norm = ARCHS[name]
    torch.manual_seed(seed)
    module = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    mean, std = (norm, norm) if norm else (IMAGENET_MEAN, IMAGENET_STD)
    st.tl.register_encoder(name, module, mean=mean, std=std, overwrite=True)


def section(name: str, encoders: list[str], cache: Path) -> tuple[object, dict[str, float]]:
    """The prepared section with ``obsm[f"X_{encoder}"]`` for every encoder, and each encoder's seconds per patch."""
    adata = st.pp.extract_patches(st.datasets.her2st(name), copy=True, progress=False)
    st.pp.prepare_expression(adata)
    seconds = {}
    for encoder in encoders:
        path, timing = cache / f"{name}_{encoder}.npy", cache / f"{name}_{encoder}.json"
        if not path.is_file():
            start = time.perf_counter()
            st.tl.embed(adata, model=encoder, key_added=f"X_{encoder}", progress=False)
            elapsed = time.perf_counter() - start
            np.save(path, adata.obsm[f"X_{encoder}"])
            timing.write_text(json.dumps({"seconds": elapsed, "n": adata.n_obs, "load": os.getloadavg()[0]}))
        adata.obsm[f"X_{encoder}"] = np.load(path)
        record = json.loads(timing.read_text())
        seconds[encoder] = record["seconds"] / record["n"]
    del adata.obsm["patches"]
    return adata, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resnet", action="store_true", help="add a random-weight ResNet-50")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and of the shuffles")
    parser.add_argument("--n-perms", type=int, default=199)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/stmorph_bench_encoders"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_encoders"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoders = ["default", "hed", "default-random"] + (["resnet50-random"] if args.resnet else [])
    for name in encoders:
        if name in ARCHS:
            register_random(name, args.seed)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    slices, per_patch = {}, {}
    for name in SECTIONS:
        adata, seconds = section(name, encoders, args.cache)
        for encoder in encoders:  # the null: each embedding shuffled against the spots
            adata.obsm[f"X_{encoder}-shuffled"] = adata.obsm[f"X_{encoder}"][rng.permutation(adata.n_obs)]
            per_patch.setdefault(encoder, []).append(seconds[encoder])
        slices[name] = adata
    reps = [f"X_{e}" for e in encoders] + [f"X_{e}-shuffled" for e in encoders]
    timings = {f"X_{e}": 1000 * float(np.mean(s)) for e, s in per_patch.items()}
    start = time.perf_counter()
    tables = {
        genes: st.tl.benchmark_encoders(slices, use_rep=reps, sps_genes=genes, n_perms=args.n_perms, timings=timings)
        for genes in ("all", "probe")
    }
    elapsed = time.perf_counter() - start
    table = tables["all"].copy()
    table.insert(1, "sps_probe_genes", tables["probe"]["sps"])
    table.insert(3, "sps_probe_genes_pval", tables["probe"]["sps_pval"])
    table.to_csv(args.out / "encoders.csv")
    st.pl.benchmark_encoders(tables["all"], save=args.out / "encoders.png", show=False)
    print(f"sections {SECTIONS} (one patient; groups = sections), probe genes: {len(table.attrs['genes'])}")
    print(f"benchmark (both SPS gene sets): {elapsed:.1f} s; load {os.getloadavg()[0]:.1f}")
    with_columns = [
        "sps",
        "sps_probe_genes",
        "sps_pval",
        "probe_pearson_mean",
        "probe_pearson_sd",
        "dim",
        "seconds_per_1k",
    ]
    print(table[with_columns].round(4).to_string())
    real = [f"X_{e}" for e in encoders]
    for label, rows in (("all embeddings", reps), ("without the shuffles", real)):
        for genes, other in tables.items():
            rho = st.pl.rank_agreement(other.loc[rows])
            print(f"Spearman(SPS over {genes} genes, probe), {label} ({len(rows)}): {rho:.2f}")
    print(f"wrote {args.out / 'encoders.csv'} and {args.out / 'encoders.png'}")


if __name__ == "__main__":
    main()
