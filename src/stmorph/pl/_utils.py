"""Shared plotting plumbing: figure layout, show/save/return like scanpy, reading stored results."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._anndata import tool_record
from .._keys import Key
from .._logging import logger
from .._validation import InvalidParameterError, check_bool, check_int, check_path, check_range, get_stored

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PREDICTED_PREFIX = Key.layers.predicted_prefix
MEASURED = "measured"
WIDTH = " width"
"""Suffix of the panel of a prediction's interval width (``layers[key + "_upper"] - layers[key + "_lower"]``)."""

#: Docstring text every plotting function shares, filled into its ``{name}`` fields by :func:`shared_docs`.
SHARED_DOCS: dict[str, str] = {
    "ncols": "ncols\n    Panels per row.",
    "panel_size": "panel_size\n    Width and height of one panel in inches.",
    # the last parameters and the Returns section: every plot is shown, saved and returned alike
    "show_save_returns": (
        "show\n"
        "    Show the figure (default: ``scanpy.settings.autoshow``).\n"
        "save\n"
        "    File path (extension picks the format) or ``True`` for ``scanpy.settings.figdir``.\n"
        "\n"
        "Returns\n"
        "-------\n"
        "The :class:`~matplotlib.figure.Figure`, unless ``show=True``."
    ),
}

_Plot = TypeVar("_Plot", bound=Callable[..., Any])


def shared_docs(plot: _Plot) -> _Plot:
    """Decorator filling the ``{name}`` fields of ``plot``'s docstring with the text of :data:`SHARED_DOCS`.

    The docstring is dedented first, as the shared text is written at column 0. It goes through
    :meth:`str.format_map`, so literal braces in it are doubled (``{{`` and ``}}``).

    Parameters
    ----------
    plot
        A plotting function whose docstring holds fields such as ``{show_save_returns}``.

    Returns
    -------
    ``plot`` itself, its docstring filled in.
    """
    if plot.__doc__:
        plot.__doc__ = inspect.cleandoc(plot.__doc__).format_map(SHARED_DOCS)
    return plot


MAX_INCHES = 100.0
"""Largest figure or panel side in inches accepted (a 100-inch side at 150 dpi is 15 000 px)."""


def check_size(size: tuple[float, float] | None, name: str) -> None:
    """Raise :class:`InvalidParameterError` unless ``size`` is ``None`` or ``(width, height)`` in inches."""
    if size is None:
        return
    if isinstance(size, str) or not isinstance(size, Sequence) or len(size) != 2:
        raise InvalidParameterError(f"{name} must be (width, height) in inches; found {size!r}.")
    for value, side in zip(size, ("width", "height")):
        check_range(value, f"{name} {side}", low=0, high=MAX_INCHES, inclusive=False)


def check_plot_options(
    *,
    show: bool | None,
    save: str | os.PathLike | bool | None,
    ncols: int = 1,
    **sizes: tuple[float, float] | None,
) -> None:
    """Raise :class:`InvalidParameterError` naming the first bad shared option of a plot.

    ``ncols`` is the plot's panels per row (plots without the option keep the default);
    ``sizes`` are the figure/panel sizes by parameter name (``panel_size=``, ``figsize=``).
    """
    if show is not None:
        check_bool(show, "show")
    if save is not None and not isinstance(save, bool):
        check_path(save, "save", "file_to_create")
    check_int(ncols, "ncols", low=1)
    for name, size in sizes.items():
        check_size(size, name)


def subplots(n_panels: int, *, ncols: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes on a grid of ``ncols`` columns; unused cells are removed."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, layout="constrained"
    )
    axes = list(axes.ravel())
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, axes[:n_panels]


def _save_path(save: str | os.PathLike | bool, writekey: str) -> Path:
    import scanpy as sc

    if save is True:
        return Path(sc.settings.figdir) / f"{writekey}.{sc.settings.file_format_figs}"
    path = Path(save)
    return path if path.suffix else path.with_suffix(".png")


def savefig_or_show(
    fig: Figure, writekey: str, *, show: bool | None, save: str | os.PathLike | bool | None, dpi: int = 150
) -> Figure | None:
    """Save ``fig`` when asked, show it when asked, and return it unless it was shown.

    ``save`` is a file path (its extension picks the format; ``.png`` when it has none) or ``True``
    for ``scanpy.settings.figdir / "<writekey>.<file_format_figs>"``. ``show=None`` follows
    ``scanpy.settings.autoshow``, as in scanpy.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if save:
        path = _save_path(save, writekey)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        logger.info("saved figure to %s", path)
    show = sc.settings.autoshow if show is None else show
    if show:
        plt.show()
        return None
    return fig


def predicted_layers(adata: AnnData) -> list[str]:
    """Names of the ``layers["predicted_*"]`` written by :func:`stmorph.tl.predict`, sorted."""
    names = [k for k in adata.layers if k.startswith(PREDICTED_PREFIX)]
    bounds = {bound for name in names for bound in Key.layers.interval(name)}  # interval bounds are no prediction
    return sorted(name for name in names if name not in bounds)


def require_predicted_layers(adata: AnnData) -> list[str]:
    """Like :func:`predicted_layers`, but raise naming ``st.tl.predict`` when there is none."""
    layers = predicted_layers(adata)
    if not layers:
        get_stored(adata, "layers", f"{PREDICTED_PREFIX}<method>", "st.tl.predict(adata, reference, method=...)")
    return layers


def prediction_record(adata: AnnData, layer: str) -> dict:
    """The ``uns["stmorph"]["predict"][layer]`` record :func:`stmorph.tl.predict` wrote with ``layers[layer]``."""
    return tool_record(adata, "predict", layer)


def measured_layer(adata: AnnData, predicted: Sequence[str]) -> str | None:
    """Layer holding the measured expression the predictions in ``predicted`` were trained on.

    Reads the ``"layer"`` that :func:`stmorph.tl.predict` records; ``None`` (``adata.X``) when it
    is ``"X"`` or nothing is recorded.
    """
    for layer in predicted:
        source = prediction_record(adata, layer).get("layer")
        if isinstance(source, str) and source in adata.layers:
            return source
    return None


def label(layer: str) -> str:
    """Human-readable panel label of a layer name: ``"predicted_ridge"`` → ``"predicted (ridge)"``."""
    if layer.endswith(WIDTH):
        return f"{label(layer.removesuffix(WIDTH))} interval width"
    if layer.startswith(PREDICTED_PREFIX):
        return f"predicted ({layer.removeprefix(PREDICTED_PREFIX)})"
    return layer


def dense_columns(matrix, idx: np.ndarray) -> np.ndarray:
    """Columns ``idx`` of a dense or sparse matrix as a dense float64 array."""
    from scipy import sparse

    sub = matrix[:, idx]
    sub = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    return sub.astype(np.float64, copy=False)
