"""Write a tool's outputs into an AnnData in one final step.

Every tool computes all its results first and hands them to :func:`commit_outputs`, so an
exception during the computation leaves the user's object exactly as it was. Replacing an
existing key is allowed (it is the documented ``key_added``) but is announced with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._keys import UNS_KEY, Key

if TYPE_CHECKING:
    from anndata import AnnData


_SLOTS = ("obs", "var", "obsm", "varm", "obsp", "layers")


def _container(adata: AnnData, slot: str):
    return getattr(adata, slot)


def _existing(adata: AnnData, slot: str, key: str) -> bool:
    cont = _container(adata, slot)
    return key in cont.columns if slot in ("obs", "var") else key in cont


def _uns_set(adata: AnnData, path: tuple[str, ...], value: Any) -> bool:
    node = adata.uns
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, Mapping):
            child = {}
            node[part] = child
        node = child
    replaced = path[-1] in node
    node[path[-1]] = value
    return replaced


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
    """Metadata of an example dataset's table: ``uns["stmorph"]["dataset"]`` (``name``, ``section``, ``mpp``).

    Tables written before that record existed (and users' own tables) keep ``mpp``, ``section``
    and the dataset name directly in ``uns["stmorph"]``; they are read from there.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((3, 2)), uns={"stmorph": {"mpp": 0.5, "dataset": "her2st", "section": "C2"}})
    >>> dataset_info(adata)
    {'name': 'her2st', 'section': 'C2', 'mpp': 0.5}
    """
    record = read_uns(adata, Key.uns.dataset)
    if isinstance(record, Mapping):
        return dict(record)
    root = adata.uns.get(UNS_KEY)
    if not isinstance(root, Mapping):
        return {}
    legacy = {"name": root.get("dataset"), "section": root.get("section"), "mpp": root.get("mpp")}
    return {k: v for k, v in legacy.items() if v is not None}


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
    replaced = [f"{slot}[{key!r}]" for slot, items in slots.items() for key in items if _existing(adata, slot, key)]
    replaced += [f"uns{list(p)}" for p in uns_items if _uns_has(adata, p)]
    for slot, items in slots.items():
        cont = _container(adata, slot)
        for key, value in items.items():
            cont[key] = value
    for path, value in uns_items.items():
        _uns_set(adata, path, value)
    if warn and replaced:
        warnings.warn(f"stmorph replaced existing {', '.join(replaced)}", UserWarning, stacklevel=3)
