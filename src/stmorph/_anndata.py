"""Write a tool's outputs into an AnnData in one final step.

Every tool computes all its results first and hands them to :func:`commit_outputs`, so an
exception during the computation leaves the user's object exactly as it was. Replacing an
existing key is allowed (it is the documented ``key_added``) but is announced with a warning; a
user's non-dict value on the way to an ``uns`` record is never replaced (an error says where).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._keys import Key
from ._logging import warn_user
from .errors import InputTypeError, InvalidParameterError

if TYPE_CHECKING:
    from anndata import AnnData


_SLOTS = ("obs", "var", "obsm", "varm", "obsp", "layers")


def _container(adata: AnnData, slot: str):
    return getattr(adata, slot)


def _existing(adata: AnnData, slot: str, key: str) -> bool:
    cont = _container(adata, slot)
    return key in cont.columns if slot in ("obs", "var") else key in cont


def _uns_set(adata: AnnData, path: tuple[str, ...], value: Any) -> None:
    node = adata.uns
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _uns_blocker(adata: AnnData, path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The first node on the way to ``path`` that holds a non-dict value (a user's), or ``None``."""
    node: Any = adata.uns
    for depth, part in enumerate(path[:-1], start=1):
        node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return None
        if not isinstance(node, Mapping):
            return path[:depth]
    return None


def _check_writable(adata: AnnData, slots: Mapping[str, Mapping[str, Any]], uns: Mapping[tuple[str, ...], Any]) -> None:
    """Refuse keys h5ad would nest ('/') and ``uns`` paths that would overwrite a user's non-dict value."""
    keys = [key for items in slots.values() for key in items] + [part for path in uns for part in path]
    slashed = sorted({str(k) for k in keys if "/" in str(k)})
    if slashed:
        raise InvalidParameterError(
            f"output key(s) {slashed} (key_added) hold '/', which h5ad and zarr store as nested groups, so "
            "the result would not read back under that name; choose a key without '/'."
        )
    for path in uns:
        blocker = _uns_blocker(adata, path)
        if blocker is not None:
            found = type(read_uns(adata, blocker)).__name__
            raise InputTypeError(
                f"adata.uns{list(blocker)} holds a {found}, where stmorph keeps its records (a dict) to write "
                f"uns{list(path)}; stmorph does not overwrite it. Move or delete that value first."
            )


_MISSING = object()


def read_uns(adata: AnnData, path: tuple[str, ...], default: Any = None) -> Any:
    """The value at ``path`` in the nested dicts of ``adata.uns``, or ``default`` when it is absent.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((3, 2)), uns={"stmorph": {"eps": {"eps": {"n_neighbors": 5}}}})
    >>> read_uns(adata, ("stmorph", "eps", "eps", "n_neighbors"))
    5
    >>> read_uns(adata, ("stmorph", "predict"), {})
    {}
    """
    node: Any = adata.uns
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _uns_has(adata: AnnData, path: tuple[str, ...]) -> bool:
    return read_uns(adata, path, _MISSING) is not _MISSING


def tool_record(adata: AnnData, tool: str, key: str) -> dict:
    """The record ``uns["stmorph"][tool][key]`` a tool wrote (a plain dict), or ``{}`` when there is none.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((3, 2)), uns={"stmorph": {"predict": {"predicted_ridge": {"layer": "X"}}}})
    >>> tool_record(adata, "predict", "predicted_ridge")
    {'layer': 'X'}
    """
    record = read_uns(adata, Key.uns.tool(tool, key))
    return dict(record) if isinstance(record, Mapping) else {}


def dataset_info(adata: AnnData) -> dict:
    """Metadata of an example dataset, ``uns["stmorph"]["dataset"]`` (``name``, ``section``, ``mpp``), or ``{}``.

    Examples
    --------
    >>> import stmorph as st
    >>> dataset_info(st.datasets.simulate(20, 5, n_planted=2).tables["table"])["mpp"]
    1.0
    """
    record = read_uns(adata, Key.uns.dataset)
    return dict(record) if isinstance(record, Mapping) else {}


def commit_outputs(
    adata: AnnData,
    *,
    uns: Mapping[str | tuple[str, ...], Any] | None = None,
    warn: bool = True,
    **slots: Mapping[str, Any],
) -> None:
    """Write computed results into ``adata`` and warn about every key that gets replaced.

    Parameters
    ----------
    adata
        Object to write into.
    uns
        Mapping of ``uns`` keys to values. A tuple key is a path into nested dicts, e.g.
        ``("stmorph", "predict", "ridge")``.
    warn
        Emit one :class:`UserWarning` listing the keys that already existed and are replaced.

    Raises
    ------
    InvalidParameterError
        A key holds ``'/'`` (h5ad and zarr would store it as nested groups).
    InputTypeError
        An ``uns`` path runs through a value that is not a dict (e.g. a user's string in
        ``uns["stmorph"]``): it is never replaced silently. Nothing is written.
    **slots
        ``obs``, ``var``, ``obsm``, ``varm``, ``obsp`` or ``layers``: mappings of key to value.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((3, 2)))
    >>> commit_outputs(adata, var={"eps": np.zeros(2)}, uns={("stmorph", "eps", "eps"): {"k": 5}})
    >>> adata.uns["stmorph"]["eps"]["eps"]["k"]
    5
    """
    unknown = set(slots) - set(_SLOTS)
    if unknown:
        raise TypeError(f"unknown AnnData slot(s) {sorted(unknown)}; use one of {_SLOTS} or uns")
    uns_items = {(k,) if isinstance(k, str) else tuple(k): v for k, v in (uns or {}).items()}
    _check_writable(adata, slots, uns_items)
    replaced = [f"{slot}[{key!r}]" for slot, items in slots.items() for key in items if _existing(adata, slot, key)]
    replaced += [f"uns{list(p)}" for p in uns_items if _uns_has(adata, p)]
    for slot, items in slots.items():
        cont = _container(adata, slot)
        for key, value in items.items():
            cont[key] = value
    for path, value in uns_items.items():
        _uns_set(adata, path, value)
    if warn and replaced:
        warn_user(f"stmorph replaced existing {', '.join(replaced)}")
