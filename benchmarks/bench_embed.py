"""Speed of patch extraction and of each image encoder (patches per second).

Run from the repository root::

    .venv/bin/python benchmarks/bench_embed.py            # HER2ST C2, all encoders
    .venv/bin/python benchmarks/bench_embed.py --n-uni 0  # skip the ViT-L (slow on a CPU)

Extraction is timed on the shipped HER2ST section (187 spots, a ~9300 × 9900 px JPEG) from the
SpatialData object (image already decoded) and from the Visium-style AnnData (including decoding
the full-resolution JPEG). Encoders run on the extracted 224 px patches at 0.5 µm/px.
``resnet50`` and ``uni`` use randomly initialised weights of the same architecture: the speed is
the architecture's, no download is needed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _timed(fn, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _row(what: str, n: int, seconds: float, note: str = "") -> None:
    print(f"| {what:<38} | {n:>5} | {seconds:>8.2f} | {n / seconds:>10.1f} | {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", default="C2", help="HER2ST section")
    parser.add_argument("--n-uni", type=int, default=32, help="patches embedded with the ViT-L (0 skips it)")
    parser.add_argument("--device", default="auto", help="torch device for the encoders")
    args = parser.parse_args()

    import torch

    import stmorph as st
    from stmorph.models._encoders import IMAGENET_MEAN, IMAGENET_STD, UNI_ARCH

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, CUDA: {cuda}\n"
    )
    print("| step                                   |     n |        s |  patches/s | note")
    print("|----------------------------------------|-------|----------|------------|-----")
    sdata, t_load = _timed(st.datasets.her2st, args.section)
    print(f"| {'load SpatialData (decode the JPEG)':<38} |     1 | {t_load:>8.2f} |          — | one section")
    table, t = _timed(st.pp.extract_patches, sdata, copy=True, progress=False)
    _row("extract_patches, SpatialData", table.n_obs, t, "image in memory")
    adata = st.datasets.her2st_adata(args.section)
    _, t = _timed(st.pp.extract_patches, adata, progress=False)
    _row("extract_patches, Visium AnnData", adata.n_obs, t, "incl. decoding the full-res JPEG")

    n = table.n_obs
    for model in ("hed", "default"):
        _, t = _timed(st.tl.embed, table, model=model, device=args.device, progress=False)
        _row(f"embed {model!r}", n, t, f"{table.obsm[f'X_{model}'].shape[1]}-d")

    import timm

    st.tl.register_encoder("resnet50_random", timm.create_model("resnet50", num_classes=0), overwrite=True)
    _, t = _timed(st.tl.embed, table, model="resnet50_random", device=args.device, progress=False)
    _row("embed 'resnet50' (random weights)", n, t, "2048-d")
    if args.n_uni:
        uni = timm.create_model(**UNI_ARCH)
        st.tl.register_encoder("uni_random", uni, mean=IMAGENET_MEAN, std=IMAGENET_STD, overwrite=True)
        sub = table[: min(args.n_uni, n)].copy()
        _, t = _timed(st.tl.embed, sub, model="uni_random", device=args.device, batch_size=16, progress=False)
        _row("embed 'uni' (ViT-L/16, random weights)", sub.n_obs, t, "1024-d")
    emb = table.obsm["X_default"]
    print(f"\ncheck: default embeddings finite {bool(np.isfinite(emb).all())}, shape {emb.shape}")


if __name__ == "__main__":
    main()
