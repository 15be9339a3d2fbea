"""Cohorts with dask: 20 simulated slides one after another vs on a 2-worker ``LocalCluster``.

Run from the repository root (needs ``distributed``, in the ``bench`` extra)::

    .venv/bin/python benchmarks/bench_cohort.py
    .venv/bin/python benchmarks/bench_cohort.py --slides 20 --spots 5000 --genes 1000 --embed-spots 40

Two cohort steps are timed three ways — serially in this process (a loop over the per-slide
function), on dask's local threaded scheduler (the default, no ``client``) and on a
``LocalCluster(n_workers=2, threads_per_worker=1)`` (``client=``; cluster start-up excluded,
sending the slides to the workers included):

- ``st.tl.sps``: slides of ``--spots`` spots with a 256-d embedding and ``--genes`` z-scored genes
  sharing 8 latent factors (``_eps_data.py``), exact 5-NN image graph + EPS per slide;
- ``st.tl.embed_cohort``: ``st.datasets.simulate`` slides of ``--embed-spots`` spots, patches extracted
  lazily (224 px at 0.5 µm/px) and embedded with the ``"hed"`` encoder.

Every parallel result is checked to equal the serial one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _sps_slides(n: int, spots: int, genes: int) -> dict:
    import anndata as ad
    from _eps_data import embedding, latent, scaled_expression

    slides = {}
    for i in range(n):
        z = latent(spots, seed=100 + i)
        a = ad.AnnData(scaled_expression(z, genes, seed=200 + i))
        a.obsm["X_image"] = embedding(z, 256, seed=300 + i)
        slides[f"slide{i:02d}"] = a
    return slides


def _time(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _bench_sps(slides: dict, client) -> None:
    import stmorph as st
    from stmorph.tl._eps import slice_eps

    slice_eps(next(iter(slides.values())), use_rep="X_image")  # warm-up (imports, caches): not timed
    serial, t_serial = _time(lambda: [slice_eps(a, use_rep="X_image")[0] for a in slides.values()])
    (threads, _), t_threads = _time(lambda: st.tl.sps(slides, use_rep="X_image"))
    (cluster, _), t_cluster = _time(lambda: st.tl.sps(slides, use_rep="X_image", client=client))
    assert np.array_equal(threads["sps"], serial) and np.array_equal(cluster["sps"], serial)
    a = next(iter(slides.values()))
    print(f"st.tl.sps, {len(slides)} slides of {a.n_obs} spots × {a.n_vars} genes (256-d embedding, exact 5-NN):")
    print(f"  serial {t_serial:.1f} s | local threads {t_threads:.1f} s | 2-worker LocalCluster {t_cluster:.1f} s")


def _bench_embed(slides: list, client) -> None:
    import stmorph as st

    def serial():
        out = []
        for s in slides:
            table = st.pp.extract_patches(s, store="lazy", copy=True, progress=False)
            st.tl.embed(table, model="hed", image=s, progress=False)
            out.append(table.obsm["X_hed"])
        return out

    st.tl.embed_cohort(slides[:1], model="hed", copy=True)  # warm-up (imports, caches): not timed
    expected, t_serial = _time(serial)
    threads, t_threads = _time(lambda: st.tl.embed_cohort(slides, model="hed", copy=True))
    cluster, t_cluster = _time(lambda: st.tl.embed_cohort(slides, model="hed", copy=True, client=client))
    for e, a, b in zip(expected, threads, cluster):
        assert np.array_equal(a.obsm["X_hed"], e) and np.array_equal(b.obsm["X_hed"], e)
    n = slides[0].tables["table"].n_obs
    print(f"st.tl.embed_cohort (hed, lazy patches), {len(slides)} slides of {n} spots:")
    print(f"  serial {t_serial:.1f} s | local threads {t_threads:.1f} s | 2-worker LocalCluster {t_cluster:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=20)
    parser.add_argument("--spots", type=int, default=5000)
    parser.add_argument("--genes", type=int, default=1000)
    parser.add_argument("--embed-spots", type=int, default=40)
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    import stmorph as st

    sps_slides = _sps_slides(args.slides, args.spots, args.genes)
    embed_slides = [st.datasets.simulate(args.embed_spots, 20, n_planted=4, random_state=i) for i in range(args.slides)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(lambda: __import__("stmorph.tl"))  # warm the workers' imports (not timed)
            _bench_sps(sps_slides, client)
            _bench_embed(embed_slides, client)


if __name__ == "__main__":
    main()
