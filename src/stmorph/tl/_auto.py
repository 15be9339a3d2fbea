"""``method="auto"`` of :func:`stmorph.tl.predict`: the candidates and their nested grouped cross-validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._logging import logger
from .._validation import InvalidParameterError
from ..models import Predictor, best_candidate, check_groups, cross_validate, make_method

AUTO = "auto"
DEFAULT_CANDIDATES: tuple = (("knn", {"k": "cv"}), ("ridge", {"alpha": "cv", "standardize": True}))
"""The candidates of ``method="auto"``: the fast ones. ``mlp`` and frozen ``bleep``/``heclip`` on request: on
the HER2ST leave-one-section-out grid none of them beat knn (docs/benchmarks.md), and each costs a network
fit per fold."""

Candidate = tuple[str, str, dict[str, Any]]
"""``(label, method, options)`` of one candidate."""


def _label(name: str, options: Mapping[str, Any]) -> str:
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else "")


def parse_candidates(candidates: Sequence | None) -> list[Candidate]:
    """``(label, method, options)`` of each candidate (a method name or a ``(name, options)`` pair), checked."""
    items = list(DEFAULT_CANDIDATES if candidates is None else candidates)
    if not items:
        raise InvalidParameterError('candidates is empty; name at least one method for method="auto".')
    parsed = []
    for item in items:
        name, options = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        if name == AUTO:
            raise InvalidParameterError('"auto" cannot be its own candidate.')
        if make_method(name, options).input != "embedding":  # unknown names and options raise here
            raise InvalidParameterError(
                f'candidate {name!r} trains on patches; method="auto" compares embedding methods.'
            )
        parsed.append((_label(name, options), name, options))
    if len({label for label, _, _ in parsed}) != len(parsed):
        raise InvalidParameterError(f"candidates holds duplicates: {[label for label, _, _ in parsed]}.")
    return parsed


def select(
    candidates: Sequence[Candidate],
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray | None,
    blocks: np.ndarray | None,
    **common: Any,
) -> tuple[Predictor, dict[str, Any]]:
    """Nested grouped CV of the candidates: the winner as a new unfitted model, and the CV table.

    Parameters
    ----------
    candidates
        From :func:`parse_candidates`.
    X, Y
        Training inputs and expression.
    groups
        Fold labels (reference sections, or spatial blocks of one section).
    blocks
        Spatial blocks of the training spots, the inner folds when one group remains.
    **common
        ``random_state``, ``device``, ``progress`` of the winner (the CV fits show no progress).

    Returns
    -------
    The winner and the CV table (``candidate``, ``fold``, ``pearson_hvg50``, ``pearson_all``,
    ``selected``).
    """
    groups = check_groups(groups, len(X), 'method="auto"')
    labels = [label for label, _, _ in candidates]
    quiet = {**common, "progress": False}
    makers = [
        (lambda name=name, options=options: make_method(name, options, **quiet)) for _, name, options in candidates
    ]
    table = cross_validate(makers, labels, X, Y, groups, blocks)
    best = best_candidate(table, labels)
    for label in labels:
        logger.info(
            "auto: %s mean HVG-50 Pearson %.3f", label, table["pearson_hvg50"][table["candidate"] == label].mean()
        )
    logger.info("auto: chose %s by %d-fold grouped CV", best, len(np.unique(groups)))
    _, name, options = candidates[labels.index(best)]
    return make_method(name, options, **common), {**table, "selected": best}
