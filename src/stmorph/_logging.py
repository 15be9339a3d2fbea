"""Package logger (``logging.getLogger("stmorph")``); library code never prints."""

from __future__ import annotations

import logging
import sys
import warnings

logger = logging.getLogger("stmorph")
logger.addHandler(logging.NullHandler())


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
