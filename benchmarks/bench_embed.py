"""Speed of patch extraction and of each image encoder (patches per second).

Run from the repository root::

    .venv/bin/python benchmarks/bench_embed.py            # HER2ST C2, all encoders
    .venv/bin/python benchmarks/bench_embed.py --n-uni 0  # skip the ViT-L (slow on a CPU)
    .venv/bin/python benchmarks/bench_embed.py --lazy-only  # only the 1,000 lazily read spots


Extraction is timed on the shipped HER2ST section (187 spots, a ~9300 × 9900 px JPEG) from the
SpatialData object (image already decoded) and from the Visium-style AnnData (including decoding
the full-resolution JPEG). Encoders run on the extracted 224 px patches at 0.5 µm/px.
``resnet50`` and ``uni`` use randomly initialised weights of the same architecture: the speed is
the architecture's, no download is needed.

Then the default encoder's rate end to end over ``--lazy`` (1,000) randomly chosen spots read
lazily from a zarr pyramid (the store and subset of ``bench_lazy.py``, at ``--lazy-side`` px: the
cost per patch does not depend on the slide's size), beside its model-only rate: the forward
passes alone, over the same patches already in memory as normalised tensors, at the same batch
size, timed before and after the end-to-end run. The machine's 1-minute load average is printed
with each figure; on a shared machine the ratio end-to-end / model-only is the honest figure.
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


def _header() -> None:
    print("\n| step                                   |     n |        s |  patches/s | note")
    print("|----------------------------------------|-------|----------|------------|-----")


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _model_only(patches: np.ndarray, batch_size: int, device: str, fold: bool = True) -> tuple[float, float]:
    """Wall and CPU seconds of the default encoder's forward passes alone over ``patches`` (tensors prepared first).

    ``fold``: the module ``st.tl.embed`` runs (batch norms folded into the convolutions); else the
    encoder as built, with its batch norms.
    """
    import torch

    from stmorph.models._encoders import inference_encoder, patches_to_tensor, resolve_encoder
    from stmorph.models._train import resolve_device

    dev = resolve_device(device)
    encoder = (inference_encoder if fold else resolve_encoder)("default", None)
    module = encoder.module.to(dev).eval()
    batches = range(0, len(patches), batch_size)
    tensors = [patches_to_tensor(patches[s : s + batch_size], encoder, device=dev) for s in batches]
    with torch.inference_mode():
        start, cpu = time.perf_counter(), time.process_time()
        out = [module(x) for x in tensors]
        out[-1].cpu()  # waits for a GPU to finish
        return time.perf_counter() - start, time.process_time() - cpu


def _lazy_rates(args: argparse.Namespace) -> None:
    """End-to-end (lazy reading included) and model-only rates of the default encoder, in one run."""
    from bench_lazy import lazy_subset, store_path

    import stmorph as st
    from stmorph.pp import patch_reader

    sdata, table, sub, _ = lazy_subset(store_path(args.workdir, args.lazy_side, args.lazy_spots), args.lazy)
    n, batch = sub.n_obs, args.batch_size
    patches = patch_reader(sub, image=sdata).read(np.arange(n))
    print(f"\n{n} random spots of {table.n_obs}, read lazily from a {args.lazy_side} px zarr pyramid; "
          f"batch {batch}, {args.num_workers} reader thread(s)")  # fmt: skip
    _header()
    before = _model_only(patches, batch, args.device)
    _row("model only (before), default", n, before[0], f"{_load()}, CPU {before[1]:.1f} s")
    start, cpu = time.perf_counter(), time.process_time()
    st.tl.embed(sub, image=sdata, batch_size=batch, num_workers=args.num_workers, device=args.device, progress=False)
    lazy = time.perf_counter() - start, time.process_time() - cpu
    _row("embed, lazily read, end to end", n, lazy[0], f"{_load()}, CPU {lazy[1]:.1f} s")
    after = _model_only(patches, batch, args.device)
    _row("model only (after), default", n, after[0], f"{_load()}, CPU {after[1]:.1f} s")
    unfolded = _model_only(patches, batch, args.device, fold=False)
    _row("model only, batch norms not folded", n, unfolded[0], f"{_load()}, CPU {unfolded[1]:.1f} s")
    wall, cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    print(f"\nend-to-end / model-only rate: {wall / lazy[0]:.2f} by wall time (load-sensitive: the end-to-end run has "
          f"one more thread), {cpu / lazy[1]:.2f} by CPU time (the model's share of the end-to-end work; model-only: "
          "mean of before and after)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", default="C2", help="HER2ST section")
    parser.add_argument("--n-uni", type=int, default=32, help="patches embedded with the ViT-L (0 skips it)")
    parser.add_argument("--device", default="auto", help="torch device for the encoders")
    parser.add_argument("--lazy", type=int, default=1000, help="lazily read spots embedded end to end (0 skips)")
    parser.add_argument("--lazy-side", type=int, default=16000, help="side in px of the synthetic zarr image")
    parser.add_argument("--lazy-spots", type=int, default=20000, help="spots of the synthetic zarr image")
    parser.add_argument("--batch-size", type=int, default=64, help="batch of the lazy and model-only runs")
    parser.add_argument("--num-workers", type=int, default=1, help="reader threads of the lazy run")
    parser.add_argument("--workdir", default="/tmp/stmorph_bench_lazy", help="where the zarr image is written")
    parser.add_argument("--lazy-only", action="store_true", help="skip the HER2ST rows")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, CUDA: {cuda}"
    )
    if not args.lazy_only:
        _her2st_rows(args)
    if args.lazy:
        _lazy_rates(args)


def _her2st_rows(args: argparse.Namespace) -> None:
    import stmorph as st
    from stmorph.models._encoders import IMAGENET_MEAN, IMAGENET_STD, UNI_ARCH

    _header()
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
