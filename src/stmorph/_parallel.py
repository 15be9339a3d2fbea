"""Run a pure per-slide function over many slides with dask (threads by default, or a cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._logging import logger
from ._validation import check_client


def map_slides(fn: Callable[[Any], Any], items: Iterable[Any], *, client: Any = None) -> list[Any]:
    """``[fn(item) for item in items]``, the items processed in parallel by dask.

    Parameters
    ----------
    fn
        A pure function of one item (picklable — a module-level function or a
        :func:`functools.partial` of one — when ``client`` runs on worker processes).
    items
        One item per slide (an AnnData, a SpatialData object, a zarr path, ...).
    client
        A :class:`dask.distributed.Client`: the items are scattered to its workers and
        processed there with ``client.map``. ``None`` runs :func:`dask.delayed` calls on dask's local threaded
        scheduler (numpy, scipy and torch release the GIL in the heavy steps).

    Returns
    -------
    The results, in the order of ``items``.

    Examples
    --------
    >>> map_slides(abs, [-1, 2, -3])
    [1, 2, 3]
    """
    check_client(client)
    items = list(items)
    if client is not None:
        logger.info("running %d slides on the dask cluster %s", len(items), client.dashboard_link)
        return client.gather(client.map(fn, client.scatter(items), pure=False))
    import dask

    tasks = [dask.delayed(fn, pure=False)(item) for item in items]
    return list(dask.compute(*tasks, scheduler="threads"))
