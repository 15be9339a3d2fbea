"""The table a tool works on: an AnnData as given, or one table of a SpatialData (as squidpy's tools take it)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .errors import InputTypeError, InvalidParameterError, StmorphKeyError

if TYPE_CHECKING:
    from anndata import AnnData


def is_spatialdata(data: Any) -> bool:
    """Whether ``data`` is a :class:`~spatialdata.SpatialData` (or a subclass); the one test stmorph uses.

    spatialdata is not imported for it: until spatialdata is imported no SpatialData exists.

    Examples
    --------
    >>> import anndata as ad, stmorph as st
    >>> is_spatialdata(st.datasets.simulate(20, 8, n_planted=2)), is_spatialdata(ad.AnnData())
    (True, False)
    """
    module = sys.modules.get("spatialdata")
    return module is not None and isinstance(data, module.SpatialData)


def table_of(data: Any, table_key: str | None, *, name: str) -> AnnData:
    """``data`` when it is an AnnData, else ``data.tables[table_key]`` of a SpatialData.

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` or a :class:`~spatialdata.SpatialData`.
    table_key
        The SpatialData's table (``None``: its only table). Must be ``None`` for an AnnData.
    name
        The calling function, for the error messages.

    Examples
    --------
    >>> import stmorph as st
    >>> sdata = st.datasets.simulate(50, 8, n_planted=2)
    >>> table_of(sdata, None, name="st.tl.eps") is sdata.tables["table"]
    True
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        if table_key is not None:
            raise InvalidParameterError(
                f"{name}: table_key={table_key!r} applies to a SpatialData; an AnnData is its own table."
            )
        return data
    if not is_spatialdata(data):
        raise InputTypeError(f"{name} takes an AnnData or a SpatialData; found {type(data).__name__}.")
    keys = list(data.tables.keys())
    if table_key is None:
        if len(keys) != 1:
            raise StmorphKeyError(
                f"{name}: the SpatialData has {len(keys)} tables {keys}; choose one with `table_key=`."
            )
        table_key = keys[0]
    if table_key not in data.tables:
        raise StmorphKeyError(f"{name}: table {table_key!r} not found in the SpatialData; available: {keys}.")
    return data.tables[table_key]
