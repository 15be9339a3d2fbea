"""One spelling for each idea across the public API (issue 22 §4): the same option has one name and one default."""

from __future__ import annotations

import inspect

import stmorph as st


def _public_functions():
    for module in (st.pp, st.tl, st.pl, st.datasets, st.get):
        for name in module.__all__:
            fn = getattr(module, name)
            if inspect.isfunction(fn):
                yield f"{module.__name__}.{name}", inspect.signature(fn).parameters


def test_no_public_function_spells_random_state_as_seed():
    offenders = [name for name, params in _public_functions() if "seed" in params]
    assert offenders == []


def test_table_key_defaults_to_the_only_table_everywhere():
    defaults = {name: params["table_key"].default for name, params in _public_functions() if "table_key" in params}
    assert {"stmorph.tl.embed", "stmorph.tl.embed_cohort", "stmorph.pl.spatial"} <= set(defaults)
    assert {name: d for name, d in defaults.items() if d is not None} == {}


def test_how_many_top_genes_is_n_top():
    spellings = {"n", "n_genes", "n_top_genes"}
    offenders = {
        name: sorted(spellings & set(params))
        for name, params in _public_functions()
        if spellings & set(params) and name != "stmorph.pp.prepare_expression"  # scanpy's n_top_genes, passed on
    }
    for simulator in ("stmorph.datasets.simulate", "stmorph.datasets.simulate_xenium"):
        offenders.pop(simulator, None)  # n_genes: how many genes to simulate, not a top-n
    assert offenders == {}


def test_embed_cohort_has_the_defaults_of_embed():
    embed = inspect.signature(st.tl.embed).parameters
    cohort = inspect.signature(st.tl.embed_cohort).parameters
    shared = (set(embed) & set(cohort)) - {"copy"}
    assert {"model", "batch_size", "num_workers", "device", "table_key"} <= shared
    assert {k: cohort[k].default for k in shared} == {k: embed[k].default for k in shared}
