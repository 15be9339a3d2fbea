"""Save and load trained models: safetensors arrays + a JSON config, never pickle.

A saved model is a folder::

    <path>/config.json        format, version, method, genes, encoder, dimensions, settings, history
    <path>/model.safetensors  network weights and, for retrieval models, the reference bank
                              (embeddings + expression) that predictions are drawn from; the
                              calibration of the prediction intervals (keys ``calibration.*``,
                              described by the config entry ``calibration``) when there is one
    <path>/encoder.safetensors  (end-to-end models) the fine-tuned image encoder as a plain state dict

Only plain numbers, strings, lists and arrays are read back, so loading cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import ModelFileError, check_path, read_json

if TYPE_CHECKING:
    from ._predictor import Predictor

FORMAT = "stmorph-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_FILE = "encoder.safetensors"


def _to_builtin(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays (e.g. in the training record)."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store a {type(value).__name__} in a model config; use plain numbers, strings and lists.")


def write_safetensors(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write numpy ``arrays`` to the safetensors file ``path`` (0-d arrays keep their shape)."""
    from safetensors.numpy import save_file

    save_file({k: np.require(v, requirements="C") for k, v in arrays.items()}, str(path))


def save_arrays(path: str | os.PathLike, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``config`` as JSON and ``arrays`` as safetensors into the folder ``path`` (created if needed).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> save_arrays(folder, {"method": "demo", "genes": ["a"]}, {"w": np.ones((1, 1), np.float32)})
    >>> sorted(p.name for p in Path(folder).iterdir())
    ['config.json', 'model.safetensors']
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / WEIGHTS_FILE, arrays)
    text = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **config}, indent=1, default=_to_builtin)
    (folder / CONFIG_FILE).write_text(text, encoding="utf-8")


_CONFIG_FIELDS = {"format": str, "version": int, "method": str, "genes": list}
_CONFIG_OPTIONAL = {
    "params": dict,
    "random_state": int,
    "input": str,
    "history": dict,
    "training": dict,
    "input_shape": list,
    "calibration": dict,
}


def add_calibration(model: Predictor, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Add the model's interval calibration (if any) to the ``config`` and ``arrays`` it is saved with."""
    if model.calibration is not None:
        config["calibration"] = model.calibration.config()
        arrays.update(model.calibration.arrays())


def restore_calibration(model: Predictor, config: dict[str, Any], arrays: dict[str, np.ndarray], where: Path) -> None:
    """Set ``model.calibration`` from what :func:`add_calibration` saved (``None`` when nothing was)."""
    from ._conformal import Calibration

    if "calibration" in config:
        model.calibration = Calibration.from_saved(config["calibration"], arrays, len(model.genes), where)


def read_config(folder: Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model folder."""
    check_path(folder, "saved model folder", "dir")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ModelFileError(
                f"{str(folder)!r} is not a complete stmorph model: {name} is missing (expected {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}, as written by `model.save(path)`)."
            )
    config = read_json(folder / CONFIG_FILE, "model config", _CONFIG_FIELDS, _CONFIG_OPTIONAL, error=ModelFileError)
    if not all(isinstance(g, str) for g in config["genes"]):
        raise ModelFileError(f"{folder / CONFIG_FILE} (model config): field 'genes' must hold gene names (strings).")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{folder / CONFIG_FILE} is not an stmorph model config (expected format {FORMAT!r}).")
    if config.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{folder / CONFIG_FILE} has format version {config.get('version')!r}; this stmorph reads version "
            f"{FORMAT_VERSION}. Re-save the model with a matching stmorph version."
        )
    return config


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy arrays, reporting a damaged file clearly."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{path} could not be read as safetensors ({err}); the file is damaged or not a model."
        ) from err


def load(path: str | os.PathLike) -> Predictor:
    """Load a model saved with ``model.save(path)``.

    Parameters
    ----------
    path
        Folder written by ``save``.

    Returns
    -------
    The fitted :class:`~stmorph.models.Predictor` (e.g. BLEEP, HECLIP, ST-Net), ready for
    ``st.tl.predict(query, model=...)``; its ``genes`` are the predicted genes.

    Raises
    ------
    MissingPathError
        ``path`` does not exist (a :class:`FileNotFoundError`).
    PathKindError
        ``path`` is a file, not a model folder.
    ModelFileError
        A file is missing, damaged, of another format version, or the files disagree (e.g. the
        number of genes in the config and in the weights).
    InvalidParameterError
        The config names a method that is not registered.

    Examples
    --------
    >>> import tempfile, numpy as np, stmorph as st
    >>> adata = st.datasets.simulate(200, 20).tables["table"]
    >>> st.pp.prepare_expression(adata)
    >>> query, reference = adata[:100].copy(), adata[100:].copy()  # two sections of one tissue
    >>> model = st.tl.predict(query, reference, method="ridge", use_rep="latent", return_model=True)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     model.save(folder)
    ...     loaded = st.models.load(folder)
    >>> st.tl.predict(query, model=loaded, key_added="predicted_loaded")  # no refit
    >>> np.array_equal(query.layers["predicted_loaded"], query.layers["predicted_ridge"])
    True
    """
    from ._predictor import get_method

    folder = Path(path)
    config = read_config(folder)
    cls = get_method(config["method"])
    if not hasattr(cls, "from_saved"):
        raise ModelFileError(f"method {config['method']!r} cannot be loaded from files.")
    arrays = read_arrays(folder / WEIGHTS_FILE)
    try:
        return cls.from_saved(folder, config, arrays)
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as err:  # a field of the right type with a bad value
        raise ModelFileError(
            f"{folder / CONFIG_FILE} (model config) does not describe a loadable model: {err}"
        ) from None


class ArrayModel:
    """``save`` / ``from_saved`` for predictors whose fitted state is a few arrays (the baselines and the MLP).

    Subclasses implement :meth:`_fitted_arrays` (the arrays to store; raise ``AttributeError`` when
    unfitted) and :meth:`_restore_arrays` (set the fitted state from them). The config holds the
    method's settings (``params``), the genes, the training record and :meth:`_fitted_config`
    (plain values chosen in fitting, e.g. the α a ``"cv"`` setting chose).
    """

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _fitted_config(self) -> dict[str, Any]:
        return {}

    def _restore_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any], where: Path) -> None:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted model into the folder ``path`` (safetensors + JSON; see :func:`stmorph.models.load`).

        Examples
        --------
        >>> import numpy as np, tempfile, stmorph as st
        >>> from stmorph.models._baselines import Ridge
        >>> X = np.random.default_rng(0).normal(size=(20, 3)); Y = X[:, :2]
        >>> model = Ridge().fit(X, Y); model.genes = ["a", "b"]
        >>> folder = tempfile.mkdtemp(); model.save(folder)
        >>> np.allclose(st.models.load(folder).predict(X), model.predict(X))
        True
        """
        try:
            arrays = self._fitted_arrays()
        except AttributeError:
            message = f"this {self.name} model is not fitted; call fit(X, Y) or `st.tl.predict` first."
            raise RuntimeError(message) from None
        config = {
            "method": self.name,
            "input": self.input,
            "genes": [str(g) for g in self.genes],
            "random_state": self.random_state,
            "params": self.params,
            "fitted": self._fitted_config(),
            "history": self.history,
            "training": self.training,
        }
        add_calibration(self, config, arrays)
        save_arrays(path, config, arrays)

    @classmethod
    def from_saved(cls, folder: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]):
        """Rebuild a fitted model from what :meth:`save` wrote (used by :func:`stmorph.models.load`)."""
        model = cls(random_state=int(config.get("random_state", 0)), progress=False, **dict(config.get("params", {})))
        model.genes = [str(g) for g in config["genes"]]
        if not model.genes:
            raise ModelFileError(f"{folder / CONFIG_FILE}: the list of genes is empty.")
        model.history = {k: [float(v) for v in vals] for k, vals in config.get("history", {}).items()}
        model.training = dict(config.get("training", {}))
        model._restore_arrays(arrays, dict(config.get("fitted", {})), folder / WEIGHTS_FILE)
        restore_calibration(model, config, arrays, folder / WEIGHTS_FILE)
        return model
