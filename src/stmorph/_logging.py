"""Package logger (``logging.getLogger("stmorph")``); library code never prints.

Without a level of its own and without a configured Python logging (no handler on the root
logger, as in a notebook), the logger follows scanpy: once scanpy is imported its level is
``scanpy.settings.verbosity`` (``"info"`` shows stmorph's info lines, scanpy's default
``"warning"`` only its warnings) and its records are written where scanpy writes its own,
``scanpy.settings.logfile``. A level set on it (``logging.getLogger("stmorph").setLevel(...)``) or
a configured root logger (``logging.basicConfig``, the ``stmorph`` command) puts it back under
Python's logging. scanpy is never imported for this.
"""

from __future__ import annotations

import logging
import sys
import warnings


def scanpy_level() -> int | None:
    """The logging level of ``scanpy.settings.verbosity`` when scanpy is imported, else ``None`` (never imports it).

    Examples
    --------
    >>> import scanpy as sc
    >>> sc.settings.verbosity = "info"
    >>> scanpy_level() == logging.INFO
    True
    >>> sc.settings.verbosity = "warning"
    """
    settings = getattr(sys.modules.get("scanpy"), "settings", None)  # None while scanpy is being imported
    return None if settings is None else int(settings.verbosity.level)


class _Logger(logging.Logger):
    """A logger that, while nothing else decides its level, takes scanpy's verbosity (:func:`scanpy_level`)."""

    def followed_level(self) -> int | None:
        """scanpy's level when the logger follows it (no level of its own, no root handler), else ``None``."""
        if self.level != logging.NOTSET or logging.getLogger().handlers:
            return None
        return scanpy_level()

    def getEffectiveLevel(self) -> int:
        followed = self.followed_level()
        return super().getEffectiveLevel() if followed is None else followed

    def isEnabledFor(self, level: int) -> bool:
        followed = self.followed_level()
        if followed is None:
            return super().isEnabledFor(level)  # logging's cached answer
        return self.manager.disable < level and level >= followed  # scanpy's setting may change at any time


class _ScanpyHandler(logging.Handler):
    """Writes a record to ``scanpy.settings.logfile``, formatted as scanpy's, while the logger follows scanpy."""

    def emit(self, record: logging.LogRecord) -> None:
        if logger.followed_level() is None:
            return  # Python logging is in charge: the record propagates to the user's handlers
        try:
            prefix = "" if record.levelno == logging.INFO else f"{record.levelname}: "
            stream = sys.modules["scanpy"].settings.logfile
            stream.write(f"{prefix}{record.getMessage()}\n")
            stream.flush()
        except Exception:  # logging must never break the computation
            self.handleError(record)


logger = logging.getLogger("stmorph")
logger.__class__ = _Logger  # also a logger the user's configuration created before stmorph was imported
logger.addHandler(_ScanpyHandler())


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """:func:`warnings.warn` attributed to the user's line: the first caller outside the stmorph package.

    A fixed ``stacklevel`` breaks whenever a call passes through one more stmorph frame (a
    decorator, a helper); this walks the stack instead.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_user("look")
    >>> caught[0].filename.endswith("_logging.py")
    False
    """
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "stmorph":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def format_duration(seconds: float) -> str:
    """``seconds`` for a person: ``"40 s"``, ``"12 min"``, ``"2.5 h"``.

    Examples
    --------
    >>> format_duration(40.4), format_duration(725), format_duration(9000)
    ('40 s', '12 min', '2.5 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
