"""Fault tolerance of :func:`stmorph.tl.embed`: batch checkpoints for resuming, and skipping unreadable patches.

A checkpoint is a folder holding ``embeddings.npy`` (a float32 ``(n_spots, dim)`` memory-mapped
array, NaN where nothing was computed yet) and ``progress.json`` (the run's fingerprint, the
finished batches and the spots that could not be read). Rows are flushed to disk before a batch is
recorded as finished, so an interrupted run resumes after its last recorded batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import logger
from .._validation import DamagedFileError, InvalidParameterError, read_json

ON_ERROR = ("raise", "skip")
EMBEDDINGS_FILE = "embeddings.npy"
PROGRESS_FILE = "progress.json"

Fetch = Callable[[np.ndarray], np.ndarray]
Run = Callable[[Fetch, int, bool], np.ndarray]
"""``run(fetch, n, progress)``: embeddings of the ``n`` patches ``fetch`` returns (the encoder engine)."""


def fingerprint(obs_names: Sequence[str], **settings: Any) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: the spots (hashed names) and the settings."""
    digest = hashlib.sha1("\n".join(map(str, obs_names)).encode()).hexdigest()
    return {"n_spots": len(obs_names), "obs_names_sha1": digest, **settings}


_PROGRESS_FIELDS = {"fingerprint": dict, "done": list, "failed": dict}


class Checkpoint:
    """The progress of one embedding run, on disk (``folder``) or in memory (``folder=None``)."""

    def __init__(self, folder: str | os.PathLike | None, print_: dict[str, Any], resume: bool):
        self.folder = None if folder is None else Path(folder)
        self.print = print_
        self.done: set[int] = set()
        self.failed: dict[str, str] = {}
        self.rows: np.ndarray | None = None
        if self.folder is not None and resume and (self.folder / PROGRESS_FILE).is_file():
            self._load()

    def _load(self) -> None:
        state = read_json(self.folder / PROGRESS_FILE, "embedding checkpoint progress", _PROGRESS_FIELDS)
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in state["done"]):
            raise DamagedFileError(
                f"{self.folder / PROGRESS_FILE}: field 'done' must hold batch numbers (integers ≥ 0)."
            )
        saved = state["fingerprint"]
        differ = sorted(k for k in set(saved) | set(self.print) if saved.get(k) != self.print.get(k))
        if differ:
            raise InvalidParameterError(
                f"checkpoint {str(self.folder)!r} belongs to another run: {differ} differ (checkpoint "
                f"{[saved.get(k) for k in differ]}, now {[self.print.get(k) for k in differ]}). "
                "Use another checkpoint folder, or resume=False to start over."
            )
        self.done, self.failed = set(state["done"]), dict(state["failed"])
        if (self.folder / EMBEDDINGS_FILE).is_file():
            self.rows = np.load(self.folder / EMBEDDINGS_FILE, mmap_mode="r+")
        logger.info("embed: resuming %s with %d finished batches", self.folder, len(self.done))

    def _allocate(self, dim: int) -> np.ndarray:
        shape = (self.print["n_spots"], dim)
        if self.folder is None:
            return np.full(shape, np.nan, dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = np.lib.format.open_memmap(self.folder / EMBEDDINGS_FILE, mode="w+", dtype=np.float32, shape=shape)
        rows[:] = np.nan
        return rows

    def record(self, batch: int, idx: np.ndarray, feats: np.ndarray | None, failed: dict[str, str]) -> None:
        """Store the rows of a finished batch (``feats`` for the readable spots ``idx``), then mark it done."""
        if feats is not None and len(idx):
            if self.rows is None:
                self.rows = self._allocate(feats.shape[1])
            self.rows[idx] = feats
        self.done.add(batch)
        self.failed.update(failed)
        if self.folder is None:
            return
        if isinstance(self.rows, np.memmap):
            self.rows.flush()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (PROGRESS_FILE + ".tmp")
        state = {"fingerprint": self.print, "done": sorted(self.done), "failed": self.failed}
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.folder / PROGRESS_FILE)  # atomic: a crash leaves the old or the new state

    def result(self) -> np.ndarray:
        if self.rows is None:
            raise InvalidParameterError(
                "no patch could be read: every spot failed (see the warning); nothing to embed."
            )
        return np.array(self.rows, dtype=np.float32)


def _read(fetch: Fetch, idx: np.ndarray, ids: Sequence[str], on_error: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Patches of ``idx``; with ``on_error="skip"`` a failing batch is re-read spot by spot and bad spots left out.

    Returns the readable positions' spot indices, their patches and ``{spot id: error}`` of the others.
    """
    if on_error == "raise":
        return idx, fetch(idx), {}
    try:
        return idx, fetch(idx), {}
    except Exception as err:  # any read error: find the bad spots, which are reported, never dropped silently
        logger.info("embed: batch read failed (%s); reading its %d spots one by one", err, len(idx))
    good, patches, failed = [], [], {}
    for i in idx:
        try:
            patches.append(fetch(np.array([i]))[0])
            good.append(i)
        except Exception as err:  # the spot's patch is unreadable: recorded by id and reported
            failed[str(ids[i])] = f"{type(err).__name__}: {err}"
    return np.asarray(good, dtype=int), np.stack(patches) if patches else None, failed


def run_batches(
    run: Run,
    fetch: Fetch,
    ids: Sequence[str],
    batch_size: int,
    *,
    checkpoint: str | os.PathLike | None,
    resume: bool,
    on_error: str,
    settings: dict[str, Any],
    progress: bool,
) -> tuple[np.ndarray, dict[str, str]]:
    """Embed batch by batch, recording each finished batch; return the embeddings and ``{spot id: error}``.

    Batches already finished in ``checkpoint`` (with ``resume``) are not recomputed; unreadable
    spots (``on_error="skip"``) get NaN rows.
    """
    from tqdm.auto import tqdm

    n = len(ids)
    state = Checkpoint(checkpoint, fingerprint(ids, batch_size=int(batch_size), **settings), resume)
    starts = range(0, n, batch_size)
    bar = tqdm(total=n, desc=f"embedding ({settings.get('model')})", disable=not progress, leave=False)
    bar.update(sum(min(batch_size, n - starts[b]) for b in state.done))
    for batch, start in enumerate(starts):
        if batch in state.done:
            continue
        idx = np.arange(start, min(start + batch_size, n))
        good, patches, failed = _read(fetch, idx, ids, on_error)
        feats = run(patches.__getitem__, len(good), False) if len(good) else None
        state.record(batch, good, feats, failed)
        bar.update(len(idx))
    bar.close()
    if state.failed:
        shown = ", ".join(list(state.failed)[:10])
        more = f" and {len(state.failed) - 10} more" if len(state.failed) > 10 else ""
        warnings.warn(
            f"embed: {len(state.failed)} patch(es) could not be read and were skipped (NaN rows): {shown}{more}. "
            "Their ids and errors are in uns['stmorph']['embed'][key]['failed'].",
            UserWarning,
            stacklevel=3,
        )
    return state.result(), state.failed
