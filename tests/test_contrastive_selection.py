"""How BLEEP and HECLIP choose their epoch: validation on held-out groups, by retrieval score, then a refit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stmorph as st
from stmorph.errors import InvalidParameterError, ShapeMismatchError
from stmorph.models._base import train_val_split
from stmorph.models._contrastive import BLEEP, HECLIP, best_epoch
from stmorph.models._train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = {"epochs": 6, "batch_size": 32, "progress": False}


@pytest.mark.parametrize("seed", range(5))
def test_grouped_split_holds_out_whole_groups_covering_the_fraction(seed):
    groups = np.repeat([7, 3, 5, 9], [40, 25, 60, 35])
    train_idx, val_idx = train_val_split(len(groups), 0.2, np.random.default_rng(seed), min_train=2, groups=groups)
    held, kept = set(groups[val_idx]), set(groups[train_idx])
    assert held and kept and not held & kept  # every group entirely on one side, both sides non-empty
    assert len(val_idx) >= 0.2 * len(groups)
    assert len(val_idx) - max(np.sum(groups == g) for g in held) < 0.2 * len(groups)  # no group more than needed
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(groups)))


def test_grouped_split_keeps_a_training_group_and_falls_back_to_random_spots():
    rng = np.random.default_rng(0)
    two = np.repeat([0, 1], [10, 90])
    train_idx, val_idx = train_val_split(100, 0.95, rng, min_train=2, groups=two)  # never both groups
    assert len(set(two[train_idx])) == 1 and len(set(two[val_idx])) == 1
    for groups in (None, np.zeros(100, dtype=int)):  # no groups, or a single one: a random 20 %
        train_idx, val_idx = train_val_split(100, 0.2, rng, min_train=2, groups=groups)
        assert len(val_idx) == 20 and len(train_idx) == 80
    train_idx, val_idx = train_val_split(100, 0.0, rng, min_train=2, groups=two)
    assert len(val_idx) == 0


def test_train_keeps_the_epoch_with_the_best_validation_score_not_the_lowest_loss():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    net = torch.nn.Linear(3, 1)
    planted = [0.1, 0.2, 0.9, 0.3, 0.2, 0.1, 0.0, 0.0]  # the score peaks at epoch 3 while the loss keeps falling
    snapshots = []

    def score(module):
        snapshots.append(module.weight.detach().clone())
        return planted[len(snapshots) - 1]

    history = train(
        net,
        lambda m, b: ((m(b[0]).squeeze(1) - b[1]) ** 2).mean(),
        lambda i, t: (x[i], y[i]),
        48,
        epochs=8,
        batch_size=16,
        lr=0.05,
        val_indices=np.arange(48, 64),
        patience=8,
        val_score=score,
        progress=False,
    )
    assert int(np.argmin(history["val_loss"])) > 2  # the loss would have kept a later epoch
    assert history["val_score"] == planted and best_epoch(history) == 3
    torch.testing.assert_close(net.weight.detach(), snapshots[2])


def _sections(n_per=60, n_sections=3, seed=0):
    """Embeddings carrying a latent factor that drives the first genes, in a few sections."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_per * n_sections, 2))
    X = np.concatenate([latent, rng.normal(size=(len(latent), 4))], axis=1).astype(np.float32)
    Y = np.concatenate([latent @ rng.normal(size=(2, 6)), rng.normal(size=(len(latent), 4))], axis=1)
    return X, (Y + 0.3 * rng.normal(size=Y.shape)).astype(np.float32), np.repeat(np.arange(n_sections), n_per)


@pytest.mark.parametrize("cls", [BLEEP, HECLIP])
def test_refit_trains_on_every_spot_for_the_chosen_number_of_epochs(cls):
    X, Y, groups = _sections()
    model = cls(**FAST).fit(X, Y, groups=groups)
    assert len(model.history["loss"]) == FAST["epochs"] and len(model.history["val_score"]) == FAST["epochs"]
    assert len(model.history["refit_loss"]) == best_epoch(model.history)
    once = cls(**FAST, refit=False).fit(X, Y, groups=groups)
    assert "refit_loss" not in once.history
    assert not np.array_equal(model.predict(X[:5]), once.predict(X[:5]))
    by_loss = cls(**FAST, select="loss").fit(X, Y, groups=groups)
    assert "val_score" not in by_loss.history
    assert len(by_loss.history["refit_loss"]) == int(np.argmin(by_loss.history["val_loss"])) + 1


def test_the_validation_spots_are_a_whole_group(monkeypatch):
    """The score is computed on one held-out section predicted from the others."""
    X, Y, groups = _sections()
    seen = []
    original = BLEEP._score_fn

    def spy(self, X_, Y_, train_idx, val_idx):
        seen.append((set(groups[train_idx]), set(groups[val_idx])))
        return original(self, X_, Y_, train_idx, val_idx)

    monkeypatch.setattr(BLEEP, "_score_fn", spy)
    BLEEP(**FAST).fit(X, Y, groups=groups)
    BLEEP(**FAST, grouped_validation=False).fit(X, Y, groups=groups)
    (kept, held), (kept_random, held_random) = seen
    assert len(held) == 1 and not kept & held
    assert held_random == set(range(3)) and kept_random == set(range(3))  # random spots from every section


def test_predict_passes_one_group_per_reference_section(monkeypatch):
    X, Y, groups = _sections()
    adata = st.datasets.simulate(len(X), Y.shape[1], n_planted=2, random_state=0).tables["table"]
    adata.X, adata.obsm["X_emb"] = Y, X
    refs = [adata[groups == g].copy() for g in range(3)]
    seen = []
    original = BLEEP.fit

    def spy(self, X_, Y_, groups=None, **kwargs):
        seen.append((groups, kwargs["sections"]))
        return original(self, X_, Y_, groups=groups, **kwargs)

    monkeypatch.setattr(BLEEP, "fit", spy)
    st.tl.predict(refs[0].copy(), refs, method="bleep", use_rep="X_emb", **FAST)
    np.testing.assert_array_equal(seen[0][0], groups)
    np.testing.assert_array_equal(seen[0][1], groups)  # and the sections of the per-section gene selection


def test_frozen_heclip_retrieves_by_expression_and_the_paper_keys_stay_available():
    X, Y, groups = _sections()
    frozen = HECLIP(**FAST).fit(X, Y, groups=groups)
    np.testing.assert_array_equal(frozen.reference_embeddings_, Y)  # HECLIP's expression side is the gene vector
    by_image = HECLIP(**FAST, retrieve_from="image").fit(X, Y, groups=groups)
    np.testing.assert_allclose(by_image.reference_embeddings_, by_image.embed_images(X), rtol=1e-6)
    assert HECLIP(mode="end_to_end").params["retrieve_from"] == "image"  # the paper's, end-to-end
    assert BLEEP().params["retrieve_from"] == "expression"


def test_bad_selection_settings_raise_clear_errors():
    X, Y, groups = _sections()
    with pytest.raises(InvalidParameterError, match="select"):
        BLEEP(select="accuracy")
    with pytest.raises(InvalidParameterError, match="refit"):
        HECLIP(refit="yes")
    with pytest.raises(InvalidParameterError, match="retrieve_from"):
        HECLIP(retrieve_from="patches")
    with pytest.raises(ShapeMismatchError, match="group labels"):
        BLEEP(**FAST).fit(X, Y, groups=groups[:-1])


def test_training_announces_its_expected_time_after_the_second_batch(monkeypatch, caplog):
    import logging
    import time

    from stmorph.models import _train as train_module

    x = torch.randn(64, 3)
    net = torch.nn.Linear(3, 1)

    def slow_loss(module, batch):
        time.sleep(0.05)  # every batch takes ≥ 0.05 s: 4 batches × 10 epochs ≥ 2 s expected
        return (module(batch) ** 2).mean()

    def run():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="stmorph"):
            train(net, slow_loss, lambda i, t: x[i], 64, epochs=10, batch_size=16, desc="demo", progress=False)
        return [r for r in caplog.records if "training takes about" in r.getMessage()]

    monkeypatch.setattr(train_module, "SLOW_TRAINING_S", 1.0)
    (record,) = run()  # announced once, as a warning with what makes it faster
    assert record.levelno == logging.WARNING and "10 epochs × 4 batches" in record.getMessage()
    assert "epochs=" in record.getMessage() and "device='cuda'" in record.getMessage()
    seconds = float(record.getMessage().split("about ")[1].split(" s ")[0])
    assert 2.0 <= seconds < 60
    monkeypatch.setattr(train_module, "SLOW_TRAINING_S", 3600.0)
    (record,) = run()
    assert record.levelno == logging.INFO

    calls = []

    def warm_up_then_fast(module, batch):  # a slow first batch (torch's warm-up) must not set the estimate
        calls.append(1)
        time.sleep(1.0 if len(calls) == 1 else 0.01)
        return (module(batch) ** 2).mean()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stmorph"):
        train(net, warm_up_then_fast, lambda i, t: x[i], 64, epochs=10, batch_size=16, desc="demo", progress=False)
    (record,) = [r for r in caplog.records if "training takes about" in r.getMessage()]
    assert float(record.getMessage().split("about ")[1].split(" s ")[0]) < 10  # 40 batches × 1 s would say ≥ 40
