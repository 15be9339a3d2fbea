"""Training curves of the torch models (BLEEP, HECLIP, MLP, ST-Net)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._anndata import read_uns
from .._keys import Key
from .._validation import check_bool, checks_keys
from ..errors import InputTypeError, InvalidParameterError, StmorphKeyError
from ..models import Predictor
from . import _utils

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.figure import Figure

_PREDICT_CALL = 'st.tl.predict(query, reference, method="bleep")'


def _curves(history: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The loss curves of a history dict (every entry whose name ends in ``loss``), as float arrays."""
    curves = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in history.items() if str(k).endswith("loss")}
    return {k: v for k, v in curves.items() if v.size}


def _model_curves(model: Predictor) -> dict[str, dict[str, np.ndarray]]:
    """``{name: curves}`` of a trained model."""
    if not model.is_trained:
        raise InvalidParameterError(
            f"the {model.name!r} model has no training history: it has not been trained. Plot a model returned by "
            f"`st.tl.predict(..., method={model.name!r}, return_model=True)`."
        )
    return {model.name: _curves(model.history or {})}


def _histories(data: Any, key: str | None) -> dict[str, dict[str, np.ndarray]]:
    """``name → curves`` from a fitted model (``.history``) or the predictions recorded in an AnnData."""
    from anndata import AnnData

    if isinstance(data, Predictor):
        return _model_curves(data)
    if not isinstance(data, AnnData):
        what = f"the class {data.__name__}" if isinstance(data, type) else type(data).__name__
        raise InputTypeError(
            f"st.pl.training takes a fitted model (`st.tl.predict(..., return_model=True)`) or an AnnData with "
            f"recorded predictions; found {what}."
        )
    records = read_uns(data, Key.uns.tool("predict"), {})
    if key is not None:
        if key not in records:
            raise StmorphKeyError(
                f"adata.uns['stmorph']['predict'][{key!r}] not found; available: {list(records)}. "
                f"Run `{_PREDICT_CALL}`."
            )
        records = {key: records[key]}
    return {
        _utils.label(name): _curves(rec["history"])
        for name, rec in records.items()
        if isinstance(rec, Mapping) and isinstance(rec.get("history"), Mapping)
    }


@_utils.shared_docs
@checks_keys("key")
def training(
    data: AnnData | Any,
    *,
    key: str | None = None,
    logy: bool = False,
    ncols: int = 3,
    panel_size: tuple[float, float] = (4.2, 3.2),
    show: bool | None = None,
    save: str | os.PathLike | bool | None = None,
) -> Figure | None:
    """Loss curves (training and validation) of trained BLEEP / HECLIP / MLP / ST-Net models.

    Parameters
    ----------
    data
        A fitted model (``st.tl.predict(..., return_model=True)``; its ``.history``) or an AnnData
        whose ``uns["stmorph"]["predict"][key]["history"]`` was recorded by
        :func:`stmorph.tl.predict` — one panel per recorded model.
    key
        Only this entry of ``uns["stmorph"]["predict"]`` (AnnData input).
    logy
        Logarithmic loss axis.
    {ncols}
    {panel_size}
    {show_save_returns}

    Examples
    --------
    >>> import stmorph as st
    >>> adata = st.datasets.simulate(200, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> query, reference = adata[:100].copy(), adata[100:].copy()  # two sections of one tissue
    >>> model = st.tl.predict(query, reference, method="bleep", use_rep="latent", epochs=5, return_model=True)
    >>> fig = st.pl.training(model, show=False)
    >>> fig.axes[0].get_title()
    'bleep'
    """
    _utils.check_plot_options(show=show, save=save, ncols=ncols, panel_size=panel_size)
    check_bool(logy, "logy")
    histories = {name: curves for name, curves in _histories(data, key).items() if curves}
    if not histories:
        raise InvalidParameterError(
            "no training history found (only torch models — bleep, heclip, mlp, stnet — record loss curves). "
            f"Train one with `{_PREDICT_CALL}`."
        )
    fig, axes = _utils.subplots(len(histories), ncols=ncols, panel_size=panel_size)
    for ax, (name, curves) in zip(axes, histories.items()):
        for curve_name, values in curves.items():
            label = {"loss": "training", "val_loss": "validation"}.get(curve_name, curve_name)
            ax.plot(np.arange(1, len(values) + 1), values, marker="o" if len(values) < 30 else None, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        if logy:
            ax.set_yscale("log")
        ax.legend()
    return _utils.savefig_or_show(fig, "training", show=show, save=save)
