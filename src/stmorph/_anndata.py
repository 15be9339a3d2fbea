"""Write a tool's outputs into an AnnData in one final step.

Every tool computes all its results first and hands them to :func:`commit_outputs`, so an
exception during the computation leaves the user's object exactly as it was. Replacing an
existing key is allowed (it is the documented ``key_added``) but is announced with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anndata import AnnData

UNS_KEY = "stmorph"

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


def _uns_has(adata: AnnData, path: tuple[str, ...]) -> bool:
    node: Any = adata.uns
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


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
    >>> commit_outputs(adata, var={"eps": np.zeros(2)}, uns={("stmorph", "eps"): {"k": 5}})
    >>> adata.uns["stmorph"]["eps"]["k"]
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
