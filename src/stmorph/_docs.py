"""Numpy-docstring fragments of the parameters every tool repeats, filled in by :func:`doc_params` (as scanpy does).

A docstring names a fragment as ``{copy}`` on a line of its own, indented like the other
parameters; only the names passed to :func:`doc_params` are replaced, so other braces in the
docstring (``f"X_{model}"``) stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

copy = """copy
        Return a modified copy instead of editing ``adata`` (then ``None`` is returned)."""

progress = """progress
        Show progress bars."""

table_key = """table_key
        When ``adata`` is a :class:`~spatialdata.SpatialData`: the table to use (``None``, the
        default of every stmorph function: its only table); the outputs are written into that table."""

spatial_key = """spatial_key
        Key in ``adata.obsm`` of the spot centres, in pixels of the full-resolution image (as
        squidpy's ``spatial_key``)."""

FRAGMENTS = {"copy": copy, "progress": progress, "spatial_key": spatial_key, "table_key": table_key}


def doc_params(*names: str) -> Callable[[F], F]:
    """Replace ``{name}`` in the decorated function's docstring by the fragment ``name``.

    Examples
    --------
    >>> @doc_params("copy")
    ... def f(adata, copy=False):
    ...     '''Do something.
    ...
    ...     Parameters
    ...     ----------
    ...     {copy}
    ...     '''
    >>> "Return a modified copy" in f.__doc__
    True
    """

    def fill(fn: F) -> F:
        doc = fn.__doc__ or ""
        for name in names:
            marker = "{" + name + "}"
            if marker not in doc:
                raise ValueError(f"{fn.__qualname__}'s docstring has no {marker} to fill")
            doc = doc.replace(marker, FRAGMENTS[name])
        fn.__doc__ = doc
        return fn

    return fill
