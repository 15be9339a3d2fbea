"""A small, seeded torch training loop shared by every trainable model (MLP, BLEEP, HECLIP, ST-Net)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._fingerprint import check_same
from .._logging import format_duration, logger
from .._validation import InvalidParameterError, check_device
from ..errors import CheckpointMismatchError, DamagedCheckpointError

if TYPE_CHECKING:
    import torch

BatchFn = Callable[[np.ndarray, bool], Any]
"""``batch_fn(indices, train)`` returns what ``loss_fn`` takes for those samples (on the device)."""
LossFn = Callable[["torch.nn.Module", Any], "torch.Tensor"]
"""``loss_fn(module, batch)`` returns a scalar loss tensor."""
ScoreFn = Callable[["torch.nn.Module"], float]
"""``score_fn(module)`` returns a validation score, higher is better (the module is in eval mode)."""


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``, ``"cuda[:N]"``, ``"mps"`` must be available.

    Raises
    ------
    InvalidParameterError
        Not a device string (see :func:`~stmorph._validation.check_device`), or the device is not
        available on this machine.
    """
    import torch

    device = check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    kind, _, index = device.partition(":")
    if not available[kind] or (index and int(index) >= torch.cuda.device_count()):
        raise InvalidParameterError(f"device={device!r} is not available on this machine; use 'auto' or 'cpu'.")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) so that model initialisation and dropout are reproducible."""
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


SLOW_TRAINING_S = 180.0
"""A training run expected to take longer than this is announced with a warning after its second batch."""


class _Announcer:
    """Logs the expected training time once, from the second batch (the first pays torch's warm-up).

    The first batch allocates buffers and picks kernels: on a CPU, BLEEP's first batch on the
    HER2ST references took 0.68 s and a later one about 0.04 s, and the first-batch estimate
    announced 7 minutes. So the estimate waits one batch more. A training of a single batch is
    never announced.
    """

    def __init__(self, desc: str, *, n_batches: int, epochs: int, device: str):
        self.desc, self.n_batches, self.epochs, self.device = desc, n_batches, epochs, device
        self.seen = 0

    def __call__(self, batch_s: float) -> None:
        """Count one finished batch of ``batch_s`` seconds; announce at the second."""
        self.seen += 1
        if self.seen != 2:
            return
        expected = batch_s * self.n_batches * self.epochs
        message = "%s: training takes about %s (%d epochs × %d batches; a batch took %.2g s on %s)"
        args = (self.desc, format_duration(expected), self.epochs, self.n_batches, batch_s, self.device)
        if expected > SLOW_TRAINING_S:
            faster = "; fewer epochs (epochs=), a GPU (device='cuda') or fewer genes make it faster"
            logger.warning(message + faster, *args)
        else:
            logger.info(message, *args)


def _epoch_loss(
    module,
    loss_fn: LossFn,
    batch_fn: BatchFn,
    order: np.ndarray,
    batch_size: int,
    optimizer=None,
    on_batch: Callable[[float], None] | None = None,
) -> float:
    """Mean loss of one pass over ``order`` (training with ``optimizer``); ``on_batch(seconds)`` after each batch."""
    import time

    import torch

    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        clock = time.perf_counter()
        idx = order[start : start + batch_size]
        if optimizer is None:
            with torch.no_grad():
                loss = loss_fn(module, batch_fn(idx, False))
        else:
            loss = loss_fn(module, batch_fn(idx, True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        if on_batch is not None:
            on_batch(time.perf_counter() - clock)
    return total / max(count, 1)


TRAIN_CHECKPOINT = "train_state.pt"


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    """Write the training state after an epoch; atomic, so a crash leaves the previous epoch's state."""
    import torch

    from .._fingerprint import replace_atomically

    folder.mkdir(parents=True, exist_ok=True)
    replace_atomically(folder / TRAIN_CHECKPOINT, lambda tmp: torch.save(state, tmp))


def _module_checksum(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a module's state dict (names, dtypes, shapes and values)."""
    import torch

    from .._fingerprint import hash_arrays, hash_value

    tensors = [v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy() for v in state.values()]
    return hash_value([[k, str(v.dtype), list(v.shape)] for k, v in state.items()]) + hash_arrays(*tensors)


def _load_state(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The saved training state, after checking it belongs to this run (``fingerprint``) and is intact.

    Read with ``weights_only=True`` (tensors and plain Python values only).
    """
    import pickle
    import zipfile

    import torch

    path = folder / TRAIN_CHECKPOINT
    if not path.is_file():
        return None
    advice = "Use another checkpoint folder, or resume=False to start over."
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise DamagedCheckpointError(f"training checkpoint {str(path)!r} is damaged ({err}). {advice}") from err
    if not isinstance(saved, dict) or not {"fingerprint", "module", "module_blake2b"} <= set(saved):
        raise CheckpointMismatchError(
            f"training checkpoint {str(path)!r} records no fingerprint of its run (not written by this "
            f"stmorph version, or not a training checkpoint). {advice}"
        )
    check_same(saved["fingerprint"], fingerprint, repr(str(path)), advice)
    if _module_checksum(saved["module"]) != saved["module_blake2b"]:
        raise CheckpointMismatchError(
            f"training checkpoint {str(path)!r}: the weights differ from those recorded. {advice}"
        )
    return saved


def _can_fuse(module: torch.nn.Module) -> bool:
    """Whether AdamW's fused kernel applies: every trainable parameter a floating tensor on the CPU or a GPU.

    The fused update is one kernel per step instead of one per parameter and operation; on the
    MLP's 3.7 M-parameter output layer (14,500 genes) it makes the optimiser step ~5× faster on a
    CPU, the same update up to rounding.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def train(
    module: torch.nn.Module,
    loss_fn: LossFn,
    batch_fn: BatchFn,
    n_train: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    random_state: int = 0,
    val_indices: np.ndarray | None = None,
    patience: int | None = None,
    val_score: ScoreFn | None = None,
    drop_last: bool = False,
    progress: bool = True,
    desc: str = "training",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, list[float]]:
    """Train ``module`` with AdamW on mini-batches of ``n_train`` samples.

    Parameters
    ----------
    module
        Model, already on its device.
    loss_fn
        ``loss_fn(module, batch) -> scalar tensor``.
    batch_fn
        ``batch_fn(indices, train) -> batch``; ``train`` is False for validation batches, so
        augmentation can be switched off there.
    n_train
        Number of training samples; indices ``0 .. n_train-1`` are shuffled every epoch.
    epochs, batch_size, lr, weight_decay
        Optimisation settings (AdamW).
    random_state
        Seeds the shuffling order.
    val_indices
        Sample indices (in ``batch_fn``'s numbering) used for a validation loss after each epoch.
    patience
        With ``val_indices``: stop after this many epochs without a better validation loss (or
        score) and restore the best weights.
    val_score
        With ``val_indices``: choose the best epoch by this score of the module (higher is
        better; e.g. the held-out spots' prediction accuracy) instead of the validation loss. The
        loss is still recorded.
    drop_last
        Drop a last batch smaller than ``batch_size`` (contrastive losses need at least 2 samples).
    progress
        Show a tqdm bar over epochs.
    desc
        Label of the progress bar.
    checkpoint
        Folder where the full training state (weights, optimiser, random states, history) is saved
        after every epoch, as ``train_state.pt`` (tensors and plain values only).
    resume
        Continue from the state in ``checkpoint``: finished epochs are not repeated, and the result
        is the same as an uninterrupted run with the same seed. The checkpoint must come from the
        same run: the options above and ``fingerprint`` are recorded in it and compared.
    fingerprint
        What else the run depends on (plain values: content hashes of the data, the model's
        settings); a checkpoint whose record differs is refused.

    Returns
    -------
    History ``{"loss": [...], "val_loss": [...]}`` with one mean loss per epoch, and
    ``"val_score"`` with ``val_score``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
    >>> net = torch.nn.Linear(3, 1)
    >>> hist = train(net, lambda m, b: ((m(b[0]).squeeze(1) - b[1]) ** 2).mean(),
    ...              lambda i, t: (x[i], y[i]), 64, epochs=50, batch_size=16, lr=1e-2, progress=False)
    >>> hist["loss"][-1] < hist["loss"][0]
    True
    """
    import torch
    from tqdm.auto import tqdm

    rng = np.random.default_rng(random_state)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, fused=_can_fuse(module))
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], **({"val_score": []} if val_score else {})}
    best, best_state, stale, start = np.inf, None, 0, 0
    folder = None if checkpoint is None else Path(checkpoint)
    print_ = {**(fingerprint or {}), "n_train": int(n_train), "n_val": 0 if val_indices is None else len(val_indices)}
    print_.update(epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), weight_decay=float(weight_decay))
    print_.update(random_state=int(random_state), patience=None if patience is None else int(patience))
    print_.update(drop_last=bool(drop_last), val_score=val_score is not None)
    saved = _load_state(folder, print_) if folder is not None and resume else None
    if saved is not None:
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        history, best, stale, start = saved["history"], saved["best"], saved["stale"], saved["epoch"]
        best_state = saved["best_state"]
        logger.info("%s: resuming after epoch %d of %d", desc, start, epochs)
    stopped = saved is not None and saved["stopped"]
    device = next((str(p.device) for p in module.parameters()), "cpu")
    bar = tqdm(range(start, epochs if not stopped else start), desc=desc, disable=not progress, leave=False)
    n_used = n_train - n_train % batch_size if drop_last and n_train > batch_size else n_train
    # the expected time, announced before the user has waited for more than two batches
    announce = _Announcer(desc, n_batches=-(-n_used // batch_size), epochs=epochs - start, device=device)
    for epoch in bar:
        module.train()
        order = rng.permutation(n_train)[:n_used]
        history["loss"].append(_epoch_loss(module, loss_fn, batch_fn, order, batch_size, optimizer, announce))
        if val_indices is not None and len(val_indices):
            module.eval()
            val = _epoch_loss(module, loss_fn, batch_fn, np.asarray(val_indices), batch_size)
            history["val_loss"].append(val)
            bar.set_postfix(loss=history["loss"][-1], val_loss=val)
            if val_score is not None:
                history["val_score"].append(float(val_score(module)))
                val = -history["val_score"][-1]
            if val < best:
                best, stale = val, 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    what, value = ("score", -best) if val_score is not None else ("loss", best)
                    n_done = len(history["loss"])
                    logger.info("%s: early stop after %d epochs (best val %s %.4g)", desc, n_done, what, value)
                    stopped = True
        else:
            bar.set_postfix(loss=history["loss"][-1])
        if folder is not None:
            state = {"module": module.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state}
            state.update(torch_rng=torch.get_rng_state(), history=history, best=float(best), stale=stale)
            state.update(fingerprint=print_, module_blake2b=_module_checksum(state["module"]))
            _save_state(folder, {**state, "epoch": epoch + 1, "best_state": best_state, "stopped": stopped})
        if stopped:
            break
    if patience is not None and best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history
