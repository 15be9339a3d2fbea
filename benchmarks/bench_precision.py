"""Speed and fidelity of ``st.tl.embed(precision=...)``: patches/s per precision, cosine to float32, EPS ranking.

Run from the repository root (``--threads 2`` is the 2-core target of issue 26)::

    .venv/bin/python benchmarks/bench_precision.py                      # ViT-L/16 speed + every check
    .venv/bin/python benchmarks/bench_precision.py --n-speed 16 --rounds 3
    .venv/bin/python benchmarks/bench_precision.py --skip-speed --eps-model h0-mini  # fidelity only

**Speed.** ViT-L/16 at 224 px (UNI's architecture from its model card, random weights: the speed
is the architecture's) embeds ``--n-speed`` patches of the shipped section end to end through
``st.tl.embed`` (patch preparation, the encoder, the output) at each precision, the precisions
interleaved round after round so that a change of machine load hits them alike. Each row gives
wall-clock and CPU-time rates (patches per CPU-second: less sensitive to other processes on a
shared machine) and the 1-minute load average. The one-off cost of each call before the first
patch (int8: copying and quantising the weights) is measured separately and printed; it is in the
end-to-end rates, and the last rate leaves its CPU time out (the rate a slide of thousands of
spots sees). The summary compares those. On a quiet machine wall-clock rates are the target's.

**Fidelity.** Mean (and minimum) cosine of each precision's features to the float32 features of
the same patches, for ViT-L/16 with random weights as timm initialises UNI (layer scale 1e-5:
every block starts near the identity, an easy case) and with layer scale 1 (every block changes
the tokens, so rounding errors add up: the harder case), and for the shipped default encoder
(EfficientNet-Lite0, real ImageNet weights; bf16 only: int8 quantises linear layers and a CNN has
none). Then EPS: all spots of the section embedded at each precision, ``st.tl.eps`` on each, and
the Spearman correlation of the genes' EPS with the float32 run's (``--eps-model``: ``default``
and a random-weight preset architecture).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

LAYER_SCALE = {"uni_random": 1e-5, "uni_random_layer_scale_1": 1.0}
"""Random-weight UNI architectures of the fidelity check: as timm initialises UNI, and with layer scale 1."""


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def _register_vit(name: str, arch: dict, layer_scale: float | None = None) -> None:
    """Register a preset architecture with random weights (seeded) under ``name``, pooled as the preset."""
    import timm
    import torch

    import stmorph as st
    from stmorph.models._encoders import timm_arguments
    from stmorph.models._pooling import PooledViT
    from stmorph.models._presets import PRESETS

    preset = PRESETS[arch]
    args = timm_arguments(preset.arch)
    if layer_scale is not None:
        args["init_values"] = layer_scale
    torch.manual_seed(0)
    module = PooledViT(timm.create_model(args.pop("model_name"), pretrained=False, **args), preset.pooling)
    st.tl.register_encoder(name, module.eval(), mean=preset.mean, std=preset.std, overwrite=True)


def _setup_seconds(model: str, precision: str) -> tuple[float, float]:
    """Wall and CPU seconds ``st.tl.embed`` spends before its first patch: building the encoder at ``precision``."""
    import torch

    from stmorph.models import inference_encoder, with_precision

    wall, cpu = time.perf_counter(), time.process_time()
    with_precision(inference_encoder(model), precision, torch.device("cpu"))
    return time.perf_counter() - wall, time.process_time() - cpu


def _embed(table, model: str, precision: str) -> tuple[np.ndarray, float, float]:
    """Features, wall seconds and CPU seconds of ``st.tl.embed`` at ``precision`` on the CPU."""
    import stmorph as st

    out = table.copy()
    wall, cpu = time.perf_counter(), time.process_time()
    st.tl.embed(out, model=model, precision=precision, device="cpu", batch_size=8, progress=False)
    return out.obsm[f"X_{model}"], time.perf_counter() - wall, time.process_time() - cpu


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _speed(table, precisions: list[str], rounds: int) -> None:
    print(f"\n## ViT-L/16 (UNI architecture, random weights), {table.n_obs} patches end to end through st.tl.embed")
    _register_vit("uni_random", "uni")
    setup = {p: _setup_seconds("uni_random", p) for p in precisions}
    print("setup before the first patch: " + ", ".join(f"{p} {w:.1f} s (CPU {c:.1f} s)" for p, (w, c) in setup.items()))
    print("| round | precision | wall s | patches/s | patches/CPU-s | patches/CPU-s after setup | cos to fp32 | load |")
    print("|---|---|---|---|---|---|---|---|")
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    n = table.n_obs
    for r in range(rounds):
        exact = None
        for precision in precisions:
            feats, wall, cpu = _embed(table, "uni_random", precision)
            exact = feats if precision == "fp32" else exact
            cos = _cosine(feats, exact).mean() if exact is not None else np.nan
            steady = n / max(cpu - setup[precision][1], 1e-9)
            rates[precision].append(steady)
            print(
                f"| {r + 1} | {precision} | {wall:.1f} | {n / wall:.3f} | {n / cpu:.3f} | {steady:.3f} | "
                f"{cos:.4f} | {_load()} |",
                flush=True,
            )
    base = np.median(rates["fp32"]) if "fp32" in rates else np.nan
    for precision, values in rates.items():
        median = np.median(values)
        print(f"median after setup, {precision}: {median:.3f} patches/CPU-s ({median / base:.2f}× fp32)")


def _fidelity(table, models: dict[str, list[str]]) -> None:
    print(f"\n## cosine to float32 features, {table.n_obs} patches")
    print("| encoder | precision | mean cosine | min cosine | load |")
    print("|---|---|---|---|---|")
    for model, precisions in models.items():
        exact = _embed(table, model, "fp32")[0]
        for precision in precisions:
            cos = _cosine(_embed(table, model, precision)[0], exact)
            print(f"| {model} | {precision} | {cos.mean():.4f} | {cos.min():.4f} | {_load()} |", flush=True)


def _eps_ranking(table, model: str, precisions: list[str]) -> None:
    from scipy.stats import spearmanr

    import stmorph as st

    print(f"\n## EPS ranking, {model}, all {table.n_obs} spots")
    eps, feats, rate = {}, {}, {}
    for precision in ["fp32", *precisions]:
        feats[precision], wall, _ = _embed(table, model, precision)
        rate[precision] = table.n_obs / wall
        print(f"{model}, {precision}: {rate[precision]:.2f} patches/s, {_load()}", flush=True)
        out = table.copy()
        out.obsm["X_p"] = feats[precision]
        st.tl.eps(out, use_rep="X_p", progress=False)
        eps[precision] = out.var["eps"].to_numpy()
    print("| encoder | precision | Spearman of genes' EPS to fp32 | genes | mean cosine | patches/s | load |")
    print("|---|---|---|---|---|---|---|")
    for precision in precisions:
        ok = np.isfinite(eps["fp32"]) & np.isfinite(eps[precision])
        rho = spearmanr(eps["fp32"][ok], eps[precision][ok])[0]
        cos = _cosine(feats[precision], feats["fp32"]).mean()
        print(f"| {model} | {precision} | {rho:.4f} | {ok.sum()} | {cos:.4f} | {rate[precision]:.2f} | {_load()} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", default="C2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-speed", type=int, default=8, help="patches per timed ViT-L/16 call")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "bf16"], help="fp32 first")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--eps-model", nargs="*", default=["default", "h0-mini"], help="'default' or presets")
    parser.add_argument("--eps-layer-scale", type=float, default=None, help="layer scale of the random presets")
    args = parser.parse_args()

    import torch

    import stmorph as st

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} threads, {_load()}")  # fmt: skip
    table = st.pp.extract_patches(st.datasets.her2st(args.section), copy=True, progress=False)
    st.pp.prepare_expression(table)
    sub = table[: args.n_speed].copy()
    if not args.skip_speed:
        _speed(sub, args.precisions, args.rounds)
    if not args.skip_fidelity:
        for name, scale in LAYER_SCALE.items():
            _register_vit(name, "uni", scale)
        low = [p for p in args.precisions if p != "fp32"]
        _fidelity(sub, {**dict.fromkeys(LAYER_SCALE, low), "default": [p for p in low if p != "int8"]})
    for preset in args.eps_model:
        model = preset if preset == "default" else f"{preset}_random"
        if preset != "default":
            _register_vit(model, preset, args.eps_layer_scale)
        low = [p for p in args.precisions if p != "fp32" and not (preset == "default" and p == "int8")]
        _eps_ranking(table, model, low)


if __name__ == "__main__":
    main()
