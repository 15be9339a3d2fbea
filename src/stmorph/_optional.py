"""Optional dependencies: imported on first use, with an error naming the pip extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def import_optional(module: str, *, package: str, extra: str, needed_for: str) -> ModuleType:
    """Import ``module`` of the optional pip ``package``, or raise :class:`~stmorph.errors.MissingDependencyError`.

    Parameters
    ----------
    module
        Dotted module name, e.g. ``"lightgbm"``.
    package
        Name of the pip package that provides it.
    extra
        The stmorph extra that installs it: ``pip install "stmorph[<extra>]"``.
    needed_for
        What needs it, for the message, e.g. ``'method="lightgbm"'``.

    Raises
    ------
    MissingDependencyError
        ``package`` is not installed. A missing dependency *of* the package is not caught: its own
        error names it.

    Examples
    --------
    >>> import_optional("json", package="json", extra="none", needed_for="this example").__name__
    'json'
    >>> import_optional("no_such_module", package="no-such", extra="demo", needed_for="this example")
    Traceback (most recent call last):
    ...
    stmorph.errors.MissingDependencyError: this example needs the package `no-such`, which is not installed; ...
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if not (err.name and (module == err.name or module.startswith(err.name + "."))):
            raise
        raise MissingDependencyError(
            f"{needed_for} needs the package `{package}`, which is not installed; install it with "
            f'`pip install "stmorph[{extra}]"` (or `pip install {package}`).'
        ) from err
