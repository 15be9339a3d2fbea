"""Input validation shared by every public function.

Each check raises a specific exception of :mod:`stmorph.errors` whose message names the offending
key, what was expected, what was found, and what to do. The exception types are importable from
here too, for the modules that check inputs; users import them from :mod:`stmorph.errors`.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from scipy import sparse

from ._keys import Key
from ._tables import is_spatialdata
from .errors import (
    DamagedFileError,
    InconsistentUnitsError,
    InputTypeError,
    InvalidParameterError,
    MissingPathError,
    NonFiniteError,
    PathKindError,
    ShapeMismatchError,
    StmorphKeyError,
    TooFewObservationsError,
)
from .errors import ModelFileError as ModelFileError  # re-exported for the modules that import errors from here
from .errors import OutOfImageError as OutOfImageError
from .errors import UnsafeCheckpointError as UnsafeCheckpointError

if TYPE_CHECKING:
    from anndata import AnnData

F = TypeVar("F", bound=Callable[..., Any])


def format_keys(keys: Sequence[str], limit: int = 10) -> str:
    """The keys for an error message: at most ``limit`` of them, then how many more; ``"none"`` for none.

    Examples
    --------
    >>> format_keys(["a", "b", "c"], limit=2), format_keys([])
    ("['a', 'b', … (1 more)]", 'none')
    """
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f", … ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"[{shown}{more}]" if keys else "none"


def check_unique_names(adata: AnnData, axis: str = "obs") -> None:
    """Raise :class:`ShapeMismatchError` if ``obs_names`` (or ``var_names``) are not unique."""
    names = adata.obs_names if axis == "obs" else adata.var_names
    if not names.is_unique:
        dup = names[names.duplicated()].unique()
        raise ShapeMismatchError(
            f"{axis}_names must be unique; found {len(dup)} duplicated, e.g. {format_keys(dup, 5)}. "
            f"Call `adata.{axis}_names_make_unique()` first."
        )


def check_finite(values: np.ndarray | sparse.spmatrix, name: str) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` if ``values`` holds NaN or inf."""
    data = values.data if sparse.issparse(values) else np.asarray(values)
    if data.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(data)
    if bad.any():
        raise NonFiniteError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf); expected only finite "
            "numbers. Remove or impute them before calling stmorph."
        )


def check_numeric(values: np.ndarray | sparse.spmatrix, name: str) -> None:
    """Raise :class:`InputTypeError` if ``values`` is not a numeric (bool/int/float) array."""
    dtype = values.dtype if hasattr(values, "dtype") else np.asarray(values).dtype
    if dtype.kind not in "biuf":
        raise InputTypeError(f"{name} must be numeric; found dtype {dtype}.")


def numeric_array(values: Any, name: str) -> np.ndarray:
    """Return ``values`` (an array-like: list, array, DataFrame) as a float64 array after checking it holds numbers.

    Text is refused, also when it looks like numbers (``"10"``): it usually means a header row or a
    column read as strings.

    Raises
    ------
    InputTypeError
        The values are strings, or objects that are not numbers; the message names ``name``.

    Examples
    --------
    >>> numeric_array([[1, 2]], "coordinates").dtype
    dtype('float64')
    >>> try:
    ...     numeric_array([["10", "12"]], "coordinates")
    ... except InputTypeError as err:
    ...     print(str(err).split(";")[0])
    coordinates must be numbers
    """
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "O":
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            pass
    first = repr(array.ravel()[0].item()) if array.size else "nothing"
    raise InputTypeError(
        f"{name} must be numbers; found dtype {array.dtype}, e.g. {first}. Convert them first, e.g. "
        "`np.asarray(values, dtype=float)`."
    )


def check_in_memory(adata: AnnData, function: str) -> None:
    """Raise :class:`InputTypeError` if ``adata`` is backed by its h5ad file (``read_h5ad(..., backed="r")``).

    For a function that edits ``adata`` in place (subsets its genes): a backed AnnData cannot be.
    """
    if adata.isbacked:
        raise InputTypeError(
            f"{function} edits the AnnData in place, which a backed AnnData (opened from {str(adata.filename)!r} "
            "with backed='r') cannot be. Load it into memory first (`adata = adata.to_memory()`), or pass "
            "copy=True to get a new AnnData in memory."
        )


def check_n_obs(n_obs: int, needed: int, what: str) -> None:
    """Raise :class:`TooFewObservationsError` if ``n_obs < needed``."""
    if n_obs < needed:
        raise TooFewObservationsError(
            f"{what} needs at least {needed} spots; found {n_obs}. Use more spots or lower the "
            "requirement (e.g. fewer neighbours)."
        )


def _is_real(value: object) -> bool:
    """True for ints and floats (Python or numpy), False for bools, strings, complex and the rest."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _bounds(low: float | None, high: float | None, inclusive: bool) -> str:
    """``" in [1, inf)"``-style text of the accepted range (empty when unbounded)."""
    if low is None and high is None:
        return ""
    lo = "-inf" if low is None else _number(low)
    hi = "inf" if high is None else _number(high)
    left = "[" if inclusive and low is not None else "("
    right = "]" if inclusive and high is not None else ")"
    return f" in {left}{lo}, {hi}{right}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, numbers.Integral) else f"{value:g}"


def _found(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_choice(value: object, choices: Sequence[object], name: str) -> None:
    """Raise :class:`InvalidParameterError` if ``value`` is not one of ``choices``.

    A bool matches only a bool (``True`` is not ``1``); an array matches nothing.
    """
    ok = not isinstance(value, np.ndarray) and any(
        isinstance(value, bool) == isinstance(c, bool) and value == c for c in choices
    )
    if not ok:
        raise InvalidParameterError(f"{name}={value!r} is not valid; choose one of {format_keys(choices, 50)}.")


def check_range(
    value: float, name: str, low: float | None = None, high: float | None = None, inclusive: bool = False
) -> float:
    """Return ``value`` as a float after checking it is a finite number in ``(low, high)``.

    The bounds are open unless ``inclusive``; ``None`` means unbounded. Bools, strings, NaN and
    ±inf are refused whatever the bounds.

    Raises
    ------
    InvalidParameterError
        The message names ``name``, the accepted range and the value found.
    """
    accepted = f"{name} must be a finite number{_bounds(low, high, inclusive)}"
    if not _is_real(value) or not math.isfinite(value):
        raise InvalidParameterError(f"{accepted}; found {_found(value)}.")
    below = low is not None and (value < low if inclusive else value <= low)
    above = high is not None and (value > high if inclusive else value >= high)
    if below or above:
        raise InvalidParameterError(f"{accepted}; found {value!r}.")
    return float(value)


def check_int(value: int, name: str, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer in ``[low, high]``.

    A float without a fraction (``5.0``) is accepted; bools, fractions, NaN, ±inf and strings are not.

    Raises
    ------
    InvalidParameterError
        The message names ``name``, the accepted range and the value found.
    """
    integral = isinstance(value, numbers.Integral) or (
        _is_real(value) and math.isfinite(value) and float(value).is_integer()
    )
    if not _is_real(value) or not integral:
        raise InvalidParameterError(f"{name} must be an integer{_bounds(low, high, True)}; found {_found(value)}.")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidParameterError(f"{name} must be an integer{_bounds(low, high, True)}; found {value!r}.")
    return value


def check_ints(values: Sequence[int], name: str, low: int | None = None, high: int | None = None) -> list[int]:
    """Return ``values`` as a list of ints after checking it is a non-empty sequence of integers in ``[low, high]``."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray) or len(values) == 0:
        raise InvalidParameterError(
            f"{name} must be a non-empty sequence of integers{_bounds(low, high, True)}; found {_found(values)}."
        )
    return [check_int(v, name, low, high) for v in values]


def check_key(value: object, name: str, *, many: bool = False, output: bool = False) -> None:
    """Raise :class:`InvalidParameterError` unless ``value`` is a key name: a non-empty ``str``.

    With ``many``, a non-empty sequence of such names (list, tuple, array, pandas Index) is
    accepted too; with ``output`` (the name stmorph writes a result under, ``key_added``), a
    ``'/'`` is refused: h5ad and zarr would store it as nested groups.
    """
    several = (
        many
        and not isinstance(value, str | bytes | Mapping)
        and hasattr(value, "__len__")
        and hasattr(value, "__iter__")
    )
    names = list(value) if several and len(value) else [value]
    bad = [v for v in names if not isinstance(v, str) or not v or (output and "/" in v)]
    if bad:
        what = "a non-empty string" + (" or a list of them" if many else "") + (" without '/'" if output else "")
        why = " (h5ad and zarr store '/' as nested groups, so the result would not read back)" if output else ""
        raise InvalidParameterError(f"{name} must be {what}, a key name{why}; found {_found(value)}.")


def checks_keys(*names: str, many: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorate a public function so its key-name parameters are checked before it does any work.

    Each parameter in ``names`` (and in ``many``, which also take a list of names) must be a
    non-empty ``str`` (:func:`check_key`); ``None`` passes where it is the parameter's default.
    Parameters named ``key_added`` are output keys (no ``'/'``).

    Examples
    --------
    >>> @checks_keys("use_rep")
    ... def f(adata, use_rep="X"):
    ...     return use_rep
    >>> f(None, use_rep=["X"])
    Traceback (most recent call last):
    ...
    stmorph.errors.InvalidParameterError: use_rep must be a non-empty string, a key name; found ['X'] (list).
    """

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        checked = {name: name in many for name in (*names, *many)}
        unknown = set(checked) - set(signature.parameters)
        assert not unknown, f"{fn.__name__} has no parameters {sorted(unknown)}"

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind_partial(*args, **kwargs)
            for name, value in bound.arguments.items():
                if name in checked and not (value is None and signature.parameters[name].default is None):
                    check_key(value, name, many=checked[name], output=name == "key_added")
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


MAX_SEED = 2**32 - 1
"""Largest ``random_state`` accepted (numpy, pynndescent and torch all take seeds below 2**32)."""


def check_seed(random_state: int, name: str = "random_state") -> int:
    """Return ``random_state`` as an int after checking it is an integer seed in ``[0, 2**32 - 1]``.

    ``None`` is refused: stmorph records the seed with every result, so that a run can be repeated.
    """
    return check_int(random_state, name, low=0, high=MAX_SEED)


def check_mapping(value: object, name: str) -> Mapping:
    """Return ``value`` after checking it is a mapping (a dict), e.g. ``uns['spatial']``.

    Raises
    ------
    InputTypeError
        The message names ``name`` and the type found.
    """
    if not isinstance(value, Mapping):
        raise InputTypeError(f"{name} must be a dict; found {_found(value)}. Restore it or delete the entry.")
    return value


def check_bool(value: bool, name: str) -> bool:
    """Return ``value`` after checking it is ``True`` or ``False`` (a string such as ``"no"`` is refused)."""
    if not isinstance(value, bool | np.bool_):
        raise InvalidParameterError(f"{name} must be True or False; found {_found(value)}.")
    return bool(value)


DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""The device strings :func:`check_device` accepts (``N``: a GPU index)."""
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(device: object, name: str = "device") -> str:
    """Return ``device`` as a string after checking it is one of :data:`DEVICES` (or a ``torch.device``).

    Raises
    ------
    InvalidParameterError
        Any other value, e.g. ``"banana"`` or ``"cuda:x"``.
    """
    text = str(device) if type(device).__module__ == "torch" else device
    if not isinstance(text, str) or _DEVICE.fullmatch(text) is None:
        raise InvalidParameterError(
            f"{name}={device!r} is not a device; choose one of {format_keys(DEVICES)} (N: a GPU index)."
        )
    return text


PATH_KINDS = ("file", "dir", "folder_to_write", "file_to_write", "file_to_create")
"""What :func:`check_path` checks: an existing file, an existing folder, a folder that may be created
(not an existing file), a file that may be written (its folder exists and it is not a folder), a file
that may be created with its folders (it is not a folder)."""


def check_path(value: object, name: str, kind: str) -> Path:
    """Return ``value`` as a :class:`~pathlib.Path` after checking it is a path of ``kind`` (:data:`PATH_KINDS`).

    Raises
    ------
    InputTypeError
        ``value`` is not a string or path.
    MissingPathError
        The file or folder that must exist does not (or the folder of a file to write).
    PathKindError
        A file where a folder is needed, or the reverse.
    """
    check_choice(kind, PATH_KINDS, "kind")
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise InputTypeError(f"{name} must be a path (str or os.PathLike); found {_found(value)}.")
    path = Path(value)
    if kind in ("file", "dir") and not path.exists():
        raise MissingPathError(f"{name}: {str(path)!r} does not exist; pass an existing {_KIND_TEXT[kind]}.")
    if kind == "file_to_write" and not path.parent.is_dir():
        raise MissingPathError(f"{name}: the folder {str(path.parent)!r} of {str(path)!r} does not exist; create it.")
    wants_dir = kind in ("dir", "folder_to_write")
    if path.exists() and path.is_dir() != wants_dir:
        found = "a folder" if path.is_dir() else "a file"
        raise PathKindError(f"{name}: {str(path)!r} is {found}; expected {_KIND_TEXT[kind]}.")
    return path


_KIND_TEXT = {
    "file": "file",
    "dir": "folder",
    "folder_to_write": "folder (existing or to be created), not a file",
    "file_to_write": "file to write, not a folder",
    "file_to_create": "file to write, not a folder",
}


def get_coordinates(adata: AnnData, spatial_key: str = Key.obsm.spatial, need: str = "this") -> np.ndarray:
    """Spot centres ``obsm[spatial_key][:, :2]`` in pixels (float64), after checking they are usable.

    ``need`` names what needs them, for the error messages.

    Raises
    ------
    StmorphKeyError
        ``obsm[spatial_key]`` is missing.
    InvalidParameterError
        It is not a finite ``n_obs × 2`` (or wider) array of numbers.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> adata = ad.AnnData(np.ones((2, 1)), obsm={"xy": np.array([[1, 2, 9], [3, 4, 9]])})
    >>> get_coordinates(adata, "xy").tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    if spatial_key not in adata.obsm:
        raise StmorphKeyError(
            f"{need} needs spot coordinates in adata.obsm[{spatial_key!r}] (pixels of the full-resolution "
            f"image; `spatial_key=` names another key); available: {sorted(adata.obsm.keys())}."
        )
    xy = np.asarray(adata.obsm[spatial_key])
    if xy.ndim != 2 or xy.shape[0] != adata.n_obs or xy.shape[1] < 2 or not np.isfinite(xy[:, :2]).all():
        raise InvalidParameterError(
            f"adata.obsm[{spatial_key!r}] must be a finite n_obs × 2 array of numbers; found shape {xy.shape}."
        )
    return xy[:, :2].astype(np.float64)


def get_rep(adata: AnnData, use_rep: str, *, finite: bool = True) -> np.ndarray:
    """Return ``adata.obsm[use_rep]`` as a 2-D float array after checking it.

    Raises
    ------
    StmorphKeyError
        ``use_rep`` is not in ``adata.obsm``.
    ShapeMismatchError
        The array is not 2-D with one row per observation.
    NonFiniteError
        It holds NaN or inf (when ``finite``).
    """
    if use_rep not in adata.obsm:
        raise StmorphKeyError(
            f"adata.obsm[{use_rep!r}] not found; available: {format_keys(adata.obsm.keys())}. "
            "Compute image embeddings first with `st.tl.embed` or pass another `use_rep`."
        )
    rep = adata.obsm[use_rep]
    if hasattr(rep, "to_numpy"):
        rep = rep.to_numpy()
    if sparse.issparse(rep):
        rep = rep.toarray()
    rep = np.asarray(rep)
    if rep.ndim != 2 or rep.shape[0] != adata.n_obs:
        raise ShapeMismatchError(
            f"adata.obsm[{use_rep!r}] must have shape (n_obs={adata.n_obs}, n_features); found {rep.shape}."
        )
    check_numeric(rep, f"adata.obsm[{use_rep!r}]")
    if finite:
        check_finite(rep, f"adata.obsm[{use_rep!r}]")
    return rep


def get_matrix(adata: AnnData, layer: str | None = None, *, finite: bool = True) -> np.ndarray | sparse.spmatrix:
    """Return ``adata.X`` or ``adata.layers[layer]`` after checking it exists, is numeric and finite."""
    if layer is None:
        mat, name = adata.X, "adata.X"
        if mat is None:
            raise StmorphKeyError("adata.X is empty; pass `layer=` with the expression to use.")
    else:
        if layer not in adata.layers:
            raise StmorphKeyError(f"adata.layers[{layer!r}] not found; available: {format_keys(adata.layers.keys())}.")
        mat, name = adata.layers[layer], f"adata.layers[{layer!r}]"
    if not (sparse.issparse(mat) or isinstance(mat, np.ndarray)):  # a backed AnnData's sparse X has to_memory
        mat = mat.to_memory() if hasattr(mat, "to_memory") else np.asarray(mat)
    check_numeric(mat, name)
    if finite:
        check_finite(mat, name)
    return mat


def get_genes(adata: AnnData, genes: Sequence[str] | None, *, what: str = "adata") -> np.ndarray:
    """Return integer positions of ``genes`` in ``adata.var_names`` (all genes when ``None``).

    Raises
    ------
    StmorphKeyError
        Some genes are missing; the message lists a few of them and how many.
    """
    if genes is None:
        return np.arange(adata.n_vars)
    genes = [genes] if isinstance(genes, str) else list(genes)
    idx = adata.var_names.get_indexer(genes)
    missing = [g for g, i in zip(genes, idx) if i < 0]
    if missing:
        raise StmorphKeyError(
            f"{len(missing)} of {len(genes)} requested genes are not in {what}.var_names, "
            f"e.g. {format_keys(missing, 5)}."
        )
    return idx


def check_slices(data: Any, name: str) -> dict[str, AnnData]:
    """Return the slices of a cohort as ``{name: AnnData}`` after checking each one is an AnnData.

    ``data`` is a list of AnnData (named ``"0"``, ``"1"``, ...), a dict ``{name: AnnData}`` or a
    SpatialData, whose tables are the slices.

    Raises
    ------
    InputTypeError
        ``data`` is not a list, dict or SpatialData (e.g. a string), or a slice is not an AnnData
        (e.g. ``None``); the message names the slices.
    InvalidParameterError
        There is no slice.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> list(check_slices([ad.AnnData(np.ones((2, 2)))], "st.tl.sps"))
    ['0']
    >>> check_slices({"a": None}, "st.tl.sps")
    Traceback (most recent call last):
    ...
    stmorph.errors.InputTypeError: st.tl.sps: every slice must be an AnnData; found NoneType for slice(s) ['a'].
    """
    from anndata import AnnData

    if is_spatialdata(data):
        slices = dict(data.tables.items())
    elif isinstance(data, Mapping):
        slices = {str(k): v for k, v in data.items()}
    elif isinstance(data, Sequence) and not isinstance(data, str | bytes):
        slices = {str(i): a for i, a in enumerate(data)}
    else:
        plain = data is None or isinstance(data, str | bytes)
        found = _found(data) if plain else f"an object of type {type(data).__name__}"
        raise InputTypeError(f"{name} takes a list or dict of AnnData (the slices) or a SpatialData; found {found}.")
    if not slices:
        raise InvalidParameterError(f"{name} needs at least one slice; found none.")
    bad = {k: type(v).__name__ for k, v in slices.items() if not isinstance(v, AnnData)}
    if bad:
        types = "/".join(sorted(set(bad.values())))
        raise InputTypeError(f"{name}: every slice must be an AnnData; found {types} for slice(s) {format_keys(bad)}.")
    return slices


def check_obsp_graph(adata: AnnData, key: str) -> sparse.csr_matrix:
    """Return ``adata.obsp[key]`` as CSR after checking it exists and is ``n_obs × n_obs``."""
    if key not in adata.obsp:
        raise StmorphKeyError(
            f"adata.obsp[{key!r}] not found; available: {format_keys(adata.obsp.keys())}. "
            "Build it with `st.tl.image_graph`."
        )
    graph = adata.obsp[key]
    if graph.shape != (adata.n_obs, adata.n_obs):
        raise ShapeMismatchError(
            f"adata.obsp[{key!r}] must be (n_obs, n_obs) = ({adata.n_obs}, {adata.n_obs}); found {graph.shape}."
        )
    return sparse.csr_matrix(graph)


def get_patches(adata: AnnData, key: str = "patches") -> np.ndarray:
    """Return ``adata.obsm[key]`` after checking it holds uint8 RGB patches ``(n_obs, P, P, 3)``.

    Raises
    ------
    StmorphKeyError
        ``key`` is not in ``adata.obsm``.
    ShapeMismatchError
        The array is not ``(n_obs, P, P, 3)`` with square patches.
    InputTypeError
        The dtype is not uint8.
    """
    if key not in adata.obsm:
        raise StmorphKeyError(
            f"adata.obsm[{key!r}] not found; available: {format_keys(adata.obsm.keys())}. "
            "Cut image patches first with `st.pp.extract_patches`."
        )
    patches = np.asarray(adata.obsm[key])
    if (
        patches.ndim != 4
        or patches.shape[0] != adata.n_obs
        or patches.shape[3] != 3
        or patches.shape[1] != patches.shape[2]
    ):
        raise ShapeMismatchError(
            f"adata.obsm[{key!r}] must have shape (n_obs={adata.n_obs}, P, P, 3) (square RGB patches); "
            f"found {patches.shape}."
        )
    if patches.dtype != np.uint8:
        raise InputTypeError(f"adata.obsm[{key!r}] must be uint8 RGB patches; found dtype {patches.dtype}.")
    return patches


def check_same_shape(found: tuple[int, ...], expected: tuple[int, ...], name: str, expected_from: str) -> None:
    """Raise :class:`ShapeMismatchError` if the per-spot input shape ``found`` differs from ``expected``.

    ``name`` names the array that was checked, ``expected_from`` where ``expected`` comes from.
    """
    if tuple(found) != tuple(expected):
        raise ShapeMismatchError(
            f"{name} has per-spot shape {tuple(found)}, but {expected_from} has {tuple(expected)}; "
            "use the same representation (same encoder / patch size) for both."
        )


def get_stored(adata: AnnData, slot: str, key: str, produced_by: str):
    """Return the result a stmorph tool stored in ``adata.<slot>[key]`` (``slot``: obs, var, obsm, layers, uns).

    Raises
    ------
    StmorphKeyError
        The key is missing; the message lists what is there and names the call that stores it
        (``produced_by``, e.g. ``"st.tl.eps(adata, use_rep=...)"``).
    """
    container = getattr(adata, slot)
    keys = list(container.columns) if slot in ("obs", "var") else list(container.keys())
    if key not in keys:
        raise StmorphKeyError(
            f"adata.{slot}[{key!r}] not found; available: {format_keys(keys)}. Run `{produced_by}` first."
        )
    return container[key]


def check_graph_shape(graph: sparse.spmatrix | np.ndarray, n_obs: int, name: str = "graph") -> None:
    """Raise :class:`ShapeMismatchError` unless ``graph`` is ``n_obs × n_obs``."""
    if graph.shape != (n_obs, n_obs):
        raise ShapeMismatchError(f"{name} must be (n_obs, n_obs) = ({n_obs}, {n_obs}); found {graph.shape}.")


def check_client(client: object) -> None:
    """Raise :class:`InputTypeError` unless ``client`` is ``None`` or a :class:`dask.distributed.Client`."""
    if client is None:
        return
    from distributed import Client  # only imported when a client is passed

    if not isinstance(client, Client):
        raise InputTypeError(
            f"client must be a dask.distributed.Client (or None for dask's local threaded scheduler); "
            f"found {type(client).__name__}."
        )


def check_agree(found: float, expected: float, name: str, expected_from: str, rtol: float = 0.01) -> None:
    """Raise :class:`InconsistentUnitsError` if ``found`` (``name``) differs from ``expected`` by more than ``rtol``.

    ``expected_from`` says where ``expected`` comes from, e.g. ``"table.uns['stmorph']['mpp']"``.
    """
    if not np.isclose(found, expected, rtol=rtol, atol=0.0):
        raise InconsistentUnitsError(
            f"{name} is {found:g}, but {expected_from} says {expected:g} (more than {rtol:.0%} apart); "
            "the coordinates and the image would be placed at different scales. Fix the wrong one, or pass "
            "the value explicitly."
        )


def read_json(
    path: Path,
    what: str,
    required: Mapping[str, type | tuple[type, ...]],
    optional: Mapping[str, type | tuple[type, ...]] | None = None,
    error: type[DamagedFileError] = DamagedFileError,
) -> dict[str, Any]:
    """Read the JSON object in ``path`` (a ``what``, e.g. ``"model config"``) and check its fields' types.

    Raises
    ------
    DamagedFileError
        (or ``error``) The file is not UTF-8 JSON, not an object, lacks a ``required`` field, or a
        field has another type; the message names the file and the field.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} ({what}) is not valid JSON: {err}. The file is damaged; restore or delete it.") from None
    if not isinstance(data, dict):
        raise error(f"{path} ({what}) must hold a JSON object; found {type(data).__name__}.")
    fields = {**required, **(optional or {})}
    for key, kind in fields.items():
        if key not in data:
            if key in required:
                raise error(f"{path} ({what}) lacks the field {key!r}.")
            continue
        value = data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            names = "/".join(t.__name__ for t in _as_tuple(kind))
            raise error(f"{path} ({what}): field {key!r} must be {names}; found {_found(value)}.")
    return data


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
