"""``method="auto"`` of :func:`stmorph.tl.predict`: the candidates and their nested grouped cross-validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._logging import logger
from .._validation import InvalidParameterError, check_bool
from ..models import FirstColumns, Predictor, best_candidate, check_groups, cross_validate, make_method, member_label

AUTO = "auto"
ENSEMBLE = "ensemble"
DEFAULT_CANDIDATES: tuple = (
    ("knn", {"k": "cv"}),
    ("ridge", {"alpha": "cv", "standardize": True}),
    ("knn", {"k": "cv", "context": True}),
    ("ridge", {"alpha": "cv", "standardize": True, "context": True}),
    (ENSEMBLE, {"n_best": 2}),
    ("bleep", {"context": True}),
)
"""The candidates of ``method="auto"``: knn and ridge on the spot's own embedding and with its context, the
z-scored average of the pair of them whose average is best by grouped CV, and frozen BLEEP with context when
its fits are affordable (:data:`NETWORK_SPOT_FITS`). ``mlp``, ``heclip`` and BLEEP without context on request:
on the HER2ST leave-one-section-out grid none of them beat these (docs/benchmarks.md)."""
NETWORK_SPOT_FITS = 4000
"""The default candidates that train a network (BLEEP) join ``method="auto"`` when the training spots times the
CV folds (the spots its CV fits and final fit train on, in all) is at most this. Measured on 2 CPU cores
(docs/benchmarks.md): HER2ST's four references, 732 spots × 4 folds, take ~2 minutes of BLEEP fits; above it a
default ``auto`` would pass its 5-minute budget, so it compares the fast candidates only and says so."""

Candidate = tuple[str, str, dict[str, Any]]
"""``(label, method, options)`` of one candidate; ``options`` may hold ``context`` (bool)."""


def _own(options: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A candidate's method options and whether it reads the context features."""
    own = {k: v for k, v in options.items() if k != "context"}
    return own, check_bool(options.get("context", False), "candidate option context")


def _is_pool(name: str, options: Mapping[str, Any]) -> bool:
    """An ``ensemble`` candidate without ``members``: its members are the other candidates."""
    return name == ENSEMBLE and "members" not in options


def parse_candidates(candidates: Sequence | None) -> list[Candidate]:
    """``(label, method, options)`` of each candidate (a method name or a ``(name, options)`` pair), checked.

    ``options`` may hold ``context=True`` (the candidate reads the context features of
    :func:`~stmorph.tl.predict`'s ``context=``); an ``"ensemble"`` without ``members`` averages the
    ``n_best`` best of the other candidates.
    """
    items = list(DEFAULT_CANDIDATES if candidates is None else candidates)
    if not items:
        raise InvalidParameterError('candidates is empty; name at least one method for method="auto".')
    parsed = []
    for item in items:
        name, options = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        if name == AUTO:
            raise InvalidParameterError('"auto" cannot be its own candidate.')
        if not _is_pool(name, options) and make_method(name, _own(options)[0]).input != "embedding":
            raise InvalidParameterError(  # unknown names and options raised above
                f'candidate {name!r} trains on patches; method="auto" compares embedding methods.'
            )
        parsed.append((member_label(name, options), name, options))
    if len({label for label, _, _ in parsed}) != len(parsed):
        raise InvalidParameterError(f"candidates holds duplicates: {[label for label, _, _ in parsed]}.")
    for label, name, options in parsed:
        if _is_pool(name, options):  # its members are the other candidates: n_best is checked against them
            pool = _members(parsed, None)
            if not pool:
                raise InvalidParameterError(
                    f"candidate {label!r} averages the other candidates that train no network (knn, ridge, ...); "
                    "there are none."
                )
            make_method(name, {**_own(options)[0], "members": pool})
    return parsed


def uses_context(candidates: Sequence[Candidate]) -> bool:
    """Whether any candidate reads the context features (a pooled ensemble: any of its members)."""
    return any(_own(options)[1] for _, _, options in candidates)


def without_context(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates that read only the spots' own embeddings."""
    return [c for c in candidates if not _own(c[2])[1]]


def trains_network(name: str, options: Mapping[str, Any]) -> bool:
    """Whether a candidate trains a network (mlp, bleep, heclip): a fit costs seconds to minutes, not milliseconds."""
    return name != ENSEMBLE and make_method(name, _own(options)[0]).resumable


def affordable(candidates: Sequence[Candidate], n_spots: int, n_folds: int) -> list[Candidate]:
    """The default candidates without those that train a network when ``n_spots × n_folds`` passes
    :data:`NETWORK_SPOT_FITS` (logged, with how to include them)."""
    networks = [label for label, name, options in candidates if trains_network(name, options)]
    if not networks or n_spots * n_folds <= NETWORK_SPOT_FITS:
        return list(candidates)
    logger.info(
        "auto: skipped %s, whose %d fits on %d training spots would take minutes on a CPU (more than %d spots × "
        "folds); name it in candidates= to include it",
        networks,
        n_folds + 1,
        n_spots,
        NETWORK_SPOT_FITS,
    )
    return [c for c in candidates if c[0] not in networks]


def _members(candidates: Sequence[Candidate], width: int | None) -> list[tuple[str, dict[str, Any]]]:
    """The pool of a pooled ensemble: the candidates that train no network (the pair search refits each member
    once per inner fold); those without context read the first ``width`` columns."""
    members = []
    for _, name, options in candidates:
        own, context = _own(options)
        if name != ENSEMBLE and not trains_network(name, options):
            members.append((name, own if context or width is None else {**own, "columns": width}))
    return members


def _maker(candidate: Candidate, candidates: Sequence[Candidate], width: int | None, common: Mapping[str, Any]):
    """A function making the unfitted candidate, reading the columns it needs of inputs with context."""
    _, name, options = candidate
    own, context = _own(options)
    if _is_pool(name, options):
        return lambda: make_method(name, {**own, "members": _members(candidates, width)}, **common)
    if context or width is None or name == ENSEMBLE:
        return lambda: make_method(name, own, **common)
    return lambda: FirstColumns(make_method(name, own, **common), width)


def _reads_context(candidate: Candidate, candidates: Sequence[Candidate]) -> bool:
    _, name, options = candidate
    return _own(options)[1] or (_is_pool(name, options) and uses_context(candidates))


def select(
    candidates: Sequence[Candidate],
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray | None,
    blocks: np.ndarray | None,
    width: int | None = None,
    **common: Any,
) -> tuple[Predictor, bool, dict[str, Any], np.ndarray]:
    """Nested grouped CV of the candidates: the winner (new, unfitted), whether it reads context, the CV table
    and its CV predictions.

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
    width
        With context features in ``X``: the width of the spots' own embeddings (its first columns,
        all that candidates without context read); ``None``: ``X`` has no context.
    **common
        ``random_state``, ``device``, ``progress`` of the winner (the CV fits show no progress).

    Returns
    -------
    The winner, whether it reads the context features (else it is fitted on ``X[:, :width]``),
    the CV table (``candidate``, ``fold``, ``pearson_hvg50``, ``pearson_all``, ``selected``) and
    the winner's out-of-fold predictions of the training spots (what its expected accuracy per gene
    and its intervals are computed from, at no extra fit).
    """
    groups = check_groups(groups, len(X), 'method="auto"')
    labels = [label for label, _, _ in candidates]
    quiet = {**common, "progress": False}
    makers = [_maker(candidate, candidates, width, quiet) for candidate in candidates]
    table, predictions = cross_validate(makers, labels, X, Y, groups, blocks, return_predictions=True)
    best = best_candidate(table, labels)
    for label in labels:
        logger.info(
            "auto: %s mean HVG-50 Pearson %.3f", label, table["pearson_hvg50"][table["candidate"] == label].mean()
        )
    logger.info("auto: chose %s by %d-fold grouped CV", best, len(np.unique(groups)))
    winner = candidates[labels.index(best)]
    context = width is not None and _reads_context(winner, candidates)
    model = _maker(winner, candidates, width if context else None, common)()
    return model, context, {**table, "selected": best}, predictions[best]
