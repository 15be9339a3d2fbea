"""How much of EPS on HER2ST is spatial proximity? EPS with and without ``exclude_radius``.

Run from the repository root::

    .venv/bin/python benchmarks/eps_spatial_control.py              # sections C2 C3, radii 250 500 µm
    .venv/bin/python benchmarks/eps_spatial_control.py C2 C3 C4 --radii 250 500 1000

For each section: default patches (112 µm at 0.5 µm/px) → ``"default"`` embeddings →
``st.pp.prepare_expression`` → ``st.tl.eps`` (k = 5) on the paper's graph, then again with each
exclusion radius (HER2ST's legacy ST spots lie 200 µm apart on a square grid: 250 µm removes
the 4 nearest spots, 500 µm the 20 nearest). Prints SPS, the mean EPS on the spatial kNN graph
(``var["eps_spatial"]``), the Spearman correlation of EPS with and without the exclusion, the
overlap of the 50 most predictable genes, and the 10 most predictable genes of each graph.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy import stats

TOP = 50


def _top(eps, n: int) -> list[str]:
    return list(eps.dropna().sort_values(ascending=False).index[:n])


def evaluate(section: str, radii: list[float], model: str = "default") -> list[dict]:
    import stmorph as st

    table = st.pp.extract_patches(st.datasets.her2st(section), copy=True, progress=False)
    st.tl.embed(table, model=model, progress=False)
    st.pp.prepare_expression(table)
    rows = []
    for radius in [None, *radii]:
        key = "eps" if radius is None else f"eps_r{radius:g}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # constant genes
            st.tl.eps(table, use_rep=f"X_{model}", exclude_radius=radius, graph_key=key, key_added=key, progress=False)
        eps = table.var[key]
        both = eps.notna() & table.var["eps"].notna()
        rows.append(
            {
                "section": section,
                "radius": radius,
                "n_spots": table.n_obs,
                "sps": float(eps.mean()),
                "sps_spatial": float(table.var["eps_spatial"].mean()),
                "spearman_vs_default": float(stats.spearmanr(eps[both], table.var["eps"][both])[0]),
                "top_overlap": len(set(_top(eps, TOP)) & set(_top(table.var["eps"], TOP))),
                "top10": _top(eps, 10),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", default=["C2", "C3"])
    parser.add_argument("--radii", type=float, nargs="+", default=[250.0, 500.0])
    args = parser.parse_args()
    header = ("section", "exclude_radius µm", "SPS", "mean EPS on spatial graph", "Spearman vs default")
    print("| " + " | ".join(header) + f" | top-{TOP} overlap |")
    print("|---|---|---|---|---|---|")
    tops = []
    for section in args.sections:
        for r in evaluate(section, args.radii):
            radius = "none (paper)" if r["radius"] is None else f"{r['radius']:g}"
            print(
                f"| {section} ({r['n_spots']} spots) | {radius} | {r['sps']:.4f} | {r['sps_spatial']:.4f} | "
                f"{r['spearman_vs_default']:.3f} | {r['top_overlap']}/{TOP} |"
            )
            tops.append(f"{section}, exclude_radius={radius}: {', '.join(r['top10'])}")
    print()
    print("\n".join(tops))
    print(f"(numpy {np.__version__})")


if __name__ == "__main__":
    main()
