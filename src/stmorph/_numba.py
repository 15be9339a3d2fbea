"""Calling stmorph's ``parallel=True`` numba kernels safely from several Python threads.

numba's ``workqueue`` threading layer (its fallback where neither OpenMP nor TBB is available)
aborts the whole process when two threads launch parallel kernels at once, which happens when
slides are processed on dask's threaded scheduler. Kernels therefore run under a lock until numba
reports a thread-safe layer (``omp`` or ``tbb``); from then on they run concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()
_THREADSAFE_LAYERS = ("omp", "tbb")


def _layer() -> str | None:
    """numba's threading layer, or ``None`` before the first parallel kernel has run."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # not initialised yet
        return None


def run_kernel(kernel: Callable[..., Any], *args: Any) -> Any:
    """``kernel(*args)``, serialised across threads unless numba's threading layer is thread-safe.

    Parameters
    ----------
    kernel
        A ``numba.njit(parallel=True)`` function.
    *args
        Its arguments.

    Returns
    -------
    What the kernel returns.
    """
    if _layer() in _THREADSAFE_LAYERS:
        return kernel(*args)
    with _LOCK:
        return kernel(*args)
