"""The exception types stmorph raises, importable as ``stmorph.errors`` (``st.errors``).

Every message names the offending key, value or file, what was expected, what was found, and what
to do. Each type subclasses :class:`ValueError` or :class:`KeyError` (file errors :class:`OSError`
too, type errors :class:`TypeError` too), so ``except ValueError`` in user code keeps working; a
missing optional package is a :class:`ModuleNotFoundError` naming the extra that installs it.

Examples
--------
>>> import stmorph as st
>>> try:
...     st.datasets.simulate(10, 5, n_planted=6)
... except st.errors.InvalidParameterError as err:
...     print(type(err).__name__)
InvalidParameterError
"""

from __future__ import annotations

__all__ = [
    "AlignmentError",
    "CheckpointMismatchError",
    "DamagedCheckpointError",
    "DamagedFileError",
    "InconsistentUnitsError",
    "InputTypeError",
    "InvalidParameterError",
    "MissingDependencyError",
    "MissingPathError",
    "ModelFileError",
    "NonFiniteError",
    "NotCalibratedError",
    "OutOfImageError",
    "PathKindError",
    "ShapeMismatchError",
    "StmorphKeyError",
    "TooFewObservationsError",
    "UnsafeCheckpointError",
]


class StmorphKeyError(KeyError):
    """A required key (obsm/layer/obsp/uns entry, image element, gene) is missing."""

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0]) if self.args else ""


class ShapeMismatchError(ValueError):
    """Two arrays that must agree in shape (or names) do not."""


class NonFiniteError(ValueError):
    """An input array holds NaN or infinite values."""


class TooFewObservationsError(ValueError):
    """Not enough spots (or genes) for the requested number of neighbours, split or fit."""


class InvalidParameterError(ValueError):
    """A parameter value is outside its allowed range or set."""


class InputTypeError(ValueError, TypeError):
    """An input has a dtype or type the function cannot use (e.g. non-numeric expression, a non-dict ``uns`` entry)."""


class OutOfImageError(ValueError):
    """Spot coordinates lie outside the image."""


class AlignmentError(ValueError):
    """An image has no alignment to the spots' coordinates (e.g. a Xenium H&E read without its alignment file)."""


class InconsistentUnitsError(ValueError):
    """Two sources of the same physical quantity (e.g. the pixel size in µm) disagree."""


class UnsafeCheckpointError(ValueError):
    """A weights file is not a plain state dict (loading it would unpickle arbitrary objects)."""


class DamagedFileError(ValueError, OSError):
    """A file exists but cannot be read: truncated, of another format, or with damaged fields (the message names it)."""


class MissingDependencyError(ModuleNotFoundError):
    """An optional package that a function needs is not installed (the message names the stmorph extra)."""


class MissingPathError(InvalidParameterError, FileNotFoundError):
    """A file or folder a parameter names does not exist."""


class PathKindError(InvalidParameterError, OSError):
    """A parameter names a file where a folder is needed, or a folder where a file is needed."""


class ModelFileError(DamagedFileError):
    """A saved stmorph model folder is incomplete, damaged, or its files disagree."""


class NotCalibratedError(InvalidParameterError):
    """Prediction intervals were asked of a fitted model that holds no calibration for them."""


class CheckpointMismatchError(InvalidParameterError):
    """A checkpoint to resume from belongs to another run (other inputs or options) or its files are damaged."""


class DamagedCheckpointError(CheckpointMismatchError, DamagedFileError):
    """A checkpoint's own files are damaged (truncated, replaced, unreadable fields): nothing in it can be trusted."""
