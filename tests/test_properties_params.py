"""Property test (hypothesis): every public function's numeric and string parameters, driven with hostile values.

For each parameter, hypothesis draws values that must be refused (bools, strings, NaN, ±inf,
fractions for integers, values outside the range, names outside the choices). Each call must raise
an error type of :mod:`stmorph.errors` whose message names the parameter, and leave the AnnData
it was given unchanged.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from bad_inputs import table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import stmorph as st
from stmorph import errors

STMORPH_ERRORS = tuple(getattr(errors, name) for name in errors.__all__)
FEW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Param:
    """One parameter of a public function: ``call(adata, value)`` passes ``value`` as ``name``.

    ``kind`` is ``"int"``, ``"float"``, ``"choice"``, ``"device"``, ``"key"`` (a key name), ``"keys"`` (a
    name or a list of names) or ``"output key"`` (a name written to, no ``'/'``); ``low``/``high`` bound the
    accepted values (``open_low``: the low bound itself is refused), ``choices`` list the accepted names;
    ``optional`` parameters accept ``None``, and ``accepted`` names the strings a numeric one also takes.
    ``target()`` builds the AnnData the call is given.
    """

    function: str
    name: str
    kind: str
    call: Callable[[Any, Any], Any]
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple[str, ...] = ()
    target: Callable[[], Any] = table
    optional: bool = False
    accepted: tuple[str, ...] = ()  # non-numeric values the parameter also takes (``batch_size="auto"``)


def _junk(optional: bool) -> hs.SearchStrategy:
    """Values no numeric parameter accepts: bools, strings (also numeric-looking), containers, None (if required)."""
    junk = [hs.booleans(), hs.text(max_size=4), hs.integers(-9, 9).map(str), hs.just([1]), hs.just(1 + 2j)]
    return hs.one_of(junk if optional else [*junk, hs.none()])


def _not_a_key(p: Param) -> hs.SearchStrategy:
    """Values no key-name parameter accepts: numbers, bools, bytes, "", dicts; lists unless ``kind="keys"``."""
    junk = [hs.integers(), hs.booleans(), hs.binary(max_size=3), hs.just(""), hs.just({"a": 1}), hs.just(1.5)]
    if p.kind == "keys":
        junk += [hs.just([]), hs.lists(hs.integers(), min_size=1, max_size=2), hs.just(["ok", 3])]
    else:
        junk += [hs.lists(hs.text(min_size=1, max_size=3), min_size=1, max_size=2), hs.just(("X_lat",))]
    if p.kind == "output key":
        junk.append(hs.text(min_size=0, max_size=3).map(lambda v: f"{v}/x"))
    return hs.one_of(junk if p.optional else [*junk, hs.none()])


def _non_finite() -> hs.SearchStrategy:
    return hs.sampled_from([math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")])


def _out_of_range(p: Param) -> list[hs.SearchStrategy]:
    out = []
    if p.kind == "int":
        if p.low is not None:
            out.append(hs.integers(max_value=int(p.low) - 1))
        if p.high is not None:
            out.append(hs.integers(min_value=int(p.high) + 1, max_value=int(p.high) * 10**6))
        return out
    if p.low is not None:
        out.append(hs.floats(max_value=p.low, exclude_max=not p.open_low, allow_nan=False, allow_infinity=False))
    if p.high is not None:
        out.append(hs.floats(min_value=p.high, exclude_min=True, max_value=p.high * 1e6 + 10, allow_nan=False))
    return out


def hostile(p: Param) -> hs.SearchStrategy:
    """Values of parameter ``p`` that must be refused."""
    if p.kind == "choice":
        return hs.one_of(hs.text(max_size=6).filter(lambda v: v not in p.choices), hs.integers(), hs.booleans())
    if p.kind in ("key", "keys", "output key"):
        return _not_a_key(p)
    if p.kind == "device":
        return hs.one_of(
            hs.text(max_size=8).filter(lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is None),
            hs.integers(),
            hs.none(),
        )
    fractions = hs.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not float(v).is_integer())
    strategies = [_junk(p.optional).filter(lambda v: not (isinstance(v, str) and v in p.accepted)), _non_finite()]
    strategies += _out_of_range(p)
    if p.kind == "int":
        strategies.append(fractions)
    return hs.one_of(strategies)


@cache
def _sim_sdata():
    return st.datasets.simulate(40, 10, n_planted=3, random_state=0, spot_px=16)


def _sim_table():
    return _sim_sdata().tables["table"]


@cache
def _predicted_once():
    adata = table()
    st.tl.predict(adata, method="ridge", use_rep="X_lat", split=0.3, progress=False)
    st.tl.eps(adata, use_rep="X_lat", progress=False)
    st.tl.evaluate(adata, "predicted_ridge", n_top=3)
    return adata


def _predicted():
    return _predicted_once().copy()


def _patches(sdata_table, **kw):
    return st.pp.extract_patches(_sim_sdata(), progress=False, **kw)


def _eps(a, **kw):
    return st.tl.eps(a, use_rep="X_lat", progress=False, **kw)


def _graph(a, **kw):
    return st.tl.image_graph(a, "X_lat", progress=False, **kw)


def _predict(a, **kw):
    return st.tl.predict(a, **{"method": "ridge", "use_rep": "X_lat", "split": 0.2, "progress": False, **kw})


def _embed(a, **kw):
    return st.tl.embed(a, model="hed", progress=False, **kw)


def _sim(_, **kw):
    return st.datasets.simulate(**{"n_spots": 20, "n_genes": 5, "n_planted": 2, "spot_px": 8, **kw})


def _params() -> list[Param]:
    P = Param
    return [
        P("pp.extract_patches", "target_mpp", "float", lambda a, v: _patches(a, target_mpp=v), 0, 1e4, True,
          target=_sim_table, optional=True),  # None: from patch_um, else 0.5 µm/px
        P("pp.extract_patches", "patch_um", "float", lambda a, v: _patches(a, patch_um=v), 0, 1e4, True,
          target=_sim_table, optional=True),
        P("pp.extract_patches", "mpp", "float", lambda a, v: _patches(a, mpp=v), 0, 1e4, True, target=_sim_table,
          optional=True),
        P("pp.extract_patches", "patch_size", "int", lambda a, v: _patches(a, patch_size=v), 1, 4096,
          target=_sim_table),
        P("pp.extract_patches", "batch_size", "int", lambda a, v: _patches(a, batch_size=v), 1, target=_sim_table),
        P("pp.extract_patches", "store", "choice", lambda a, v: _patches(a, store=v), choices=("memory", "lazy"),
          target=_sim_table),
        P("pp.patch_reader", "on_error", "choice", lambda a, v: st.pp.patch_reader(a, on_error=v),
          choices=("raise", "skip")),
        P("pp.prepare_expression", "n_top_genes", "int",
          lambda a, v: st.pp.prepare_expression(a, layer="counts", n_top_genes=v), 1),
        P("pp.prepare_expression", "min_cells", "int",
          lambda a, v: st.pp.prepare_expression(a, layer="counts", min_cells=v), 0),
        P("pp.prepare_expression", "target_sum", "float",
          lambda a, v: st.pp.prepare_expression(a, layer="counts", target_sum=v), 0, open_low=True),
        P("pp.prepare_expression", "max_value", "float",
          lambda a, v: st.pp.prepare_expression(a, layer="counts", max_value=v), 0, open_low=True, optional=True),
        P("tl.eps", "n_neighbors", "int", lambda a, v: _eps(a, n_neighbors=v), 1),
        P("tl.eps", "n_perms", "int", lambda a, v: _eps(a, n_perms=v), 1, optional=True),
        P("tl.eps", "max_value", "float", lambda a, v: _eps(a, max_value=v), 0, open_low=True, optional=True),
        P("tl.eps", "random_state", "int", lambda a, v: _eps(a, random_state=v), 0, 2**32 - 1),
        P("tl.sps", "n_neighbors", "int", lambda a, v: st.tl.sps([a], use_rep="X_lat", n_neighbors=v), 1),
        P("tl.image_graph", "n_neighbors", "int", lambda a, v: _graph(a, n_neighbors=v), 1),
        P("tl.image_graph", "metric", "choice", lambda a, v: _graph(a, metric=v), choices=("euclidean", "cosine")),
        P("tl.image_graph", "method", "choice", lambda a, v: _graph(a, method=v),
          choices=("auto", "exact", "pynndescent")),
        P("tl.predict", "split", "float", lambda a, v: _predict(a, split=v), 0, 1, True, optional=True),
        P("tl.predict", "random_state", "int", lambda a, v: _predict(a, random_state=v), 0, 2**32 - 1),
        P("tl.predict", "device", "device", lambda a, v: _predict(a, device=v)),
        P("tl.predict", "method", "choice", lambda a, v: _predict(a, method=v), choices=tuple(st.tl.list_methods())),
        P("tl.predict", "alpha", "float", lambda a, v: _predict(a, alpha=v), 0),
        P("tl.embed", "batch_size", "int", lambda a, v: _embed(a, batch_size=v), 1, 65536, accepted=("auto",)),
        P("tl.embed", "num_workers", "int", lambda a, v: _embed(a, num_workers=v), 0),
        P("tl.embed", "device", "device", lambda a, v: _embed(a, device=v)),
        P("tl.embed", "on_error", "choice", lambda a, v: _embed(a, on_error=v), choices=("raise", "skip")),
        P("tl.embed", "stain_norm", "choice", lambda a, v: _embed(a, stain_norm=v), choices=("macenko", "reinhard")),
        P("tl.evaluate", "n_top", "int", lambda a, v: st.tl.evaluate(a, "predicted_ridge", n_top=v), 1,
          target=_predicted),
        P("pl.eps_ranking", "n_top", "int", lambda a, v: st.pl.eps_ranking(a, n_top=v, show=False), 1,
          target=_predicted),
        P("pl.eps_vs_score", "ncols", "int", lambda a, v: st.pl.eps_vs_score(a, ncols=v, show=False), 1,
          target=_predicted),
        P("pl.eps_vs_score", "size", "float", lambda a, v: st.pl.eps_vs_score(a, size=v, show=False), 0, None, True,
          target=_predicted),
        P("pl.gene_correlation", "n_top", "int", lambda a, v: st.pl.gene_correlation(a, n_top=v, show=False), 2,
          target=_predicted),
        P("pp.extract_patches", "key_added", "output key", lambda a, v: _patches(a, key_added=v), target=_sim_table),
        P("pp.extract_patches", "image_key", "key", lambda a, v: _patches(a, image_key=v), target=_sim_table,
          optional=True),
        P("pp.prepare_expression", "layer", "key", lambda a, v: st.pp.prepare_expression(a, layer=v), optional=True),
        P("tl.eps", "use_rep", "key", lambda a, v: st.tl.eps(a, use_rep=v, progress=False), optional=True),
        P("tl.eps", "layer", "key", lambda a, v: _eps(a, layer=v), optional=True),
        P("tl.eps", "key_added", "output key", lambda a, v: _eps(a, key_added=v)),
        P("tl.sps", "use_rep", "key", lambda a, v: st.tl.sps([a], use_rep=v), optional=True),
        P("tl.image_graph", "use_rep", "key", lambda a, v: st.tl.image_graph(a, v, progress=False)),
        P("tl.image_graph", "key_added", "output key", lambda a, v: _graph(a, key_added=v)),
        P("tl.predict", "use_rep", "keys", lambda a, v: _predict(a, use_rep=v), optional=True),
        P("tl.predict", "layer", "key", lambda a, v: _predict(a, layer=v), optional=True),
        P("tl.predict", "key_added", "output key", lambda a, v: _predict(a, key_added=v), optional=True),
        P("tl.embed", "key_added", "output key", lambda a, v: _embed(a, key_added=v), optional=True),
        P("tl.embed", "patches_key", "key", lambda a, v: _embed(a, patches_key=v)),
        P("tl.evaluate", "layer", "key", lambda a, v: st.tl.evaluate(a, v), target=_predicted),
        P("pl.spatial", "genes", "keys", lambda a, v: st.pl.spatial(a, v, show=False), target=_predicted),
        P("datasets.simulate", "n_spots", "int", lambda a, v: _sim(a, n_spots=v), 1, target=lambda: None),
        P("datasets.simulate", "spot_px", "int", lambda a, v: _sim(a, spot_px=v), 1, 1024, target=lambda: None),
        P("datasets.simulate", "effect", "float", lambda a, v: _sim(a, effect=v), target=lambda: None),
        P("datasets.simulate", "random_state", "int", lambda a, v: _sim(a, random_state=v), 0, 2**32 - 1,
          target=lambda: None),
    ]  # fmt: skip


PARAMS = _params()


@pytest.mark.parametrize("param", PARAMS, ids=[f"{p.function}({p.name})" for p in PARAMS])
@FEW
@given(data=hs.data())
def test_hostile_parameter_gives_a_named_stmorph_error_and_changes_nothing(param: Param, data):
    value = data.draw(hostile(param), label=param.name)
    target = param.target()
    before = None if target is None else target.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(STMORPH_ERRORS) as info:
            param.call(target, value)
    assert param.name in str(info.value), f"the message must name {param.name!r}: {info.value}"
    if target is not None:
        assert_adata_equal(target, before)


def test_every_public_function_with_numeric_options_is_driven():
    driven = {p.function for p in PARAMS}
    expected = {
        "pp.extract_patches", "pp.prepare_expression", "tl.eps", "tl.sps", "tl.image_graph", "tl.predict",
        "tl.embed", "tl.evaluate", "pl.eps_ranking", "pl.eps_vs_score", "pl.gene_correlation", "datasets.simulate",
    }  # fmt: skip
    assert expected <= driven
