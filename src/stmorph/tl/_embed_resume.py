"""Fault tolerance of :func:`stmorph.tl.embed`: batch checkpoints for resuming, and skipping unreadable patches.

A checkpoint is a folder holding ``embeddings.npy`` (a float32 ``(n_spots, dim)`` memory-mapped
array, NaN where nothing was computed yet) and ``progress.json`` (the run's fingerprint, the
finished batches, the spots that could not be read, and the shape, dtype, size and per-batch
checksums of ``embeddings.npy``). Rows are flushed to disk before a batch is recorded as finished,
so an interrupted run resumes after its last recorded batch. A checkpoint is verified (opened
read-only) before it is resumed: another run's fingerprint, a truncated or replaced embeddings
file, or rows that changed since they were recorded raise
:class:`~stmorph.errors.CheckpointMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._fingerprint import check_same, hash_arrays, replace_atomically
from .._logging import logger, warn_user
from .._validation import InvalidParameterError, read_json
from ..errors import CheckpointMismatchError, DamagedCheckpointError

ON_ERROR = ("raise", "skip")
EMBEDDINGS_FILE = "embeddings.npy"
PROGRESS_FILE = "progress.json"
_DTYPE = np.dtype(np.float32)
_ADVICE = "Use another checkpoint folder, or resume=False to start over."

Fetch = Callable[[np.ndarray], np.ndarray]
Run = Callable[[Fetch, int, bool], np.ndarray]
"""``run(fetch, n, progress)``: embeddings of the ``n`` patches ``fetch`` returns (the encoder engine)."""


def fingerprint(obs_names: Sequence[str], **settings: Any) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: the spots (hashed names) and the settings."""
    digest = hashlib.sha1("\n".join(map(str, obs_names)).encode()).hexdigest()
    return {"n_spots": len(obs_names), "obs_names_sha1": digest, **settings}


def _damaged(path: Path, what: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(
        f"checkpoint file {str(path)!r} is damaged: {what}. Its finished batches cannot be trusted. {_ADVICE}"
    )


class Checkpoint:
    """The progress of one embedding run, on disk (``folder``) or in memory (``folder=None``)."""

    def __init__(self, folder: str | os.PathLike | None, print_: dict[str, Any], resume: bool, batch_size: int):
        self.folder = None if folder is None else Path(folder)
        self.print = print_
        self.batch_size = batch_size
        self.done: set[int] = set()
        self.failed: dict[str, str] = {}
        self.sums: dict[str, str] = {}
        self.rows: np.ndarray | None = None
        if self.folder is not None and resume and (self.folder / PROGRESS_FILE).is_file():
            self._load()

    def _rows_of(self, batch: int) -> slice:
        return slice(batch * self.batch_size, min((batch + 1) * self.batch_size, self.print["n_spots"]))

    def _read_state(self) -> dict[str, Any]:
        path = self.folder / PROGRESS_FILE
        fields = {"fingerprint": dict, "done": list, "failed": dict}
        state = read_json(path, "embedding checkpoint progress", fields, {"rows": dict}, error=DamagedCheckpointError)
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in state["done"]):
            raise _damaged(path, "field 'done' must hold batch numbers (integers ≥ 0)")
        rows = state.get("rows")
        try:
            if rows is not None:
                int(rows["size"]), int(rows["shape"][1]), dict(rows["batches"])
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise _damaged(path, f"field 'rows' is not a record of the embeddings file ({err!r})") from None
        return state

    def _load(self) -> None:
        state = self._read_state()
        check_same(state["fingerprint"], self.print, repr(str(self.folder)), _ADVICE)
        self.done, self.failed = set(state["done"]), dict(state["failed"])
        record = state.get("rows")
        if record is not None:  # else no batch wrote rows yet: a leftover embeddings file is overwritten
            self.rows = self._verified_rows(record)
        logger.info("embed: resuming %s with %d finished batches", self.folder, len(self.done))

    def _verified_rows(self, record: dict[str, Any]) -> np.ndarray:
        """The embeddings file, opened read-only, after checking it is the one ``progress.json`` describes."""
        path = self.folder / EMBEDDINGS_FILE
        if not path.is_file():
            raise _damaged(path, "the file is missing")
        size = path.stat().st_size
        if size != record["size"]:
            raise _damaged(path, f"it holds {size} bytes, but {record['size']} were written (truncated or replaced)")
        try:
            rows = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise _damaged(path, f"not a .npy array ({err})") from err
        expected = (self.print["n_spots"], int(record["shape"][1]))
        if rows.shape != expected or rows.dtype != _DTYPE:
            raise _damaged(path, f"it holds a {rows.dtype} {rows.shape} array; the run wrote float32 {expected}")
        self.sums = dict(record["batches"])
        changed = [b for b in sorted(self.done) if self._checksum(rows, b) != self.sums.get(str(b))]
        if changed:
            raise _damaged(path, f"the rows of finished batch(es) {changed[:10]} differ from those recorded")
        return rows

    def _checksum(self, rows: np.ndarray, batch: int) -> str:
        return hash_arrays(rows[self._rows_of(batch)])

    def _allocate(self, dim: int) -> np.ndarray:
        shape = (self.print["n_spots"], dim)
        if self.folder is None:
            return np.full(shape, np.nan, dtype=_DTYPE)
        self.folder.mkdir(parents=True, exist_ok=True)
        rows = np.lib.format.open_memmap(self.folder / EMBEDDINGS_FILE, mode="w+", dtype=_DTYPE, shape=shape)
        rows[:] = np.nan
        return rows

    def _writable(self, dim: int) -> np.ndarray:
        """The rows array, allocated on first use; a verified (read-only) checkpoint is reopened for writing."""
        if self.rows is None:
            return self._allocate(dim)
        if self.rows.shape[1] != dim:
            raise CheckpointMismatchError(
                f"checkpoint {str(self.folder)!r} holds {self.rows.shape[1]}-d embeddings, but the encoder now "
                f"returns {dim}-d ones. {_ADVICE}"
            )
        if isinstance(self.rows, np.memmap) and self.rows.mode == "r":
            return np.load(self.folder / EMBEDDINGS_FILE, mmap_mode="r+")
        return self.rows

    def record(self, batch: int, idx: np.ndarray, feats: np.ndarray | None, failed: dict[str, str]) -> None:
        """Store the rows of a finished batch (``feats`` for the readable spots ``idx``), then mark it done."""
        if feats is not None and len(idx):
            self.rows = self._writable(feats.shape[1])
            self.rows[idx] = feats
        self.done.add(batch)
        self.failed.update(failed)
        if self.folder is None:
            return
        state: dict[str, Any] = {"fingerprint": self.print, "done": sorted(self.done), "failed": self.failed}
        if self.rows is not None:
            self.rows.flush()
            for done in self.done - {int(b) for b in self.sums}:  # this batch, and earlier ones without rows
                self.sums[str(done)] = self._checksum(self.rows, done)
            size = (self.folder / EMBEDDINGS_FILE).stat().st_size
            state["rows"] = {"shape": list(self.rows.shape), "dtype": _DTYPE.str, "size": size, "batches": self.sums}
        self.folder.mkdir(parents=True, exist_ok=True)
        replace_atomically(self.folder / PROGRESS_FILE, lambda tmp: tmp.write_text(json.dumps(state)))

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
    state = Checkpoint(checkpoint, fingerprint(ids, batch_size=int(batch_size), **settings), resume, batch_size)
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
        warn_user(
            f"embed: {len(state.failed)} patch(es) could not be read and were skipped (NaN rows): {shown}{more}. "
            "Their ids and errors are in uns['stmorph']['embed'][key]['failed']."
        )
    return state.result(), state.failed
