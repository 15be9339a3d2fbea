"""BLEEP and HECLIP losses against hand computations, and where their gradients flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from stmorph.models._contrastive import ContrastiveNet
from stmorph.models._losses import bleep_loss, heclip_loss

IMG = np.array([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.4, 0.6, 1.0]])
EXPR = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, -0.5], [0.3, 0.2, 1.2]])


def _softmax_row(row: np.ndarray) -> np.ndarray:
    return np.exp(row - logsumexp(row))


def _bleep_by_hand(img: np.ndarray, expr: np.ndarray, tau: float) -> float:
    """BLEEP's loss written out element by element (BLEEP/models.py, CLIPModel.forward)."""
    n = len(img)
    sim = [[(img[i] @ img[j] + expr[i] @ expr[j]) / 2 for j in range(n)] for i in range(n)]
    target = np.array([_softmax_row(np.array(sim[i]) / tau) for i in range(n)])
    logits = np.array([[expr[i] @ img[j] / tau for j in range(n)] for i in range(n)])
    total = 0.0
    for i in range(n):
        spot_ce = -sum(target[i, j] * (logits[i, j] - logsumexp(logits[i])) for j in range(n))
        image_ce = -sum(target[j, i] * (logits[j, i] - logsumexp(logits[:, i])) for j in range(n))
        total += (spot_ce + image_ce) / 2
    return total / n


def _heclip_by_hand(img: np.ndarray, expr: np.ndarray, tau: float) -> float:
    """HECLIP's image-centric loss written out (HECLIP/code/models_hvg.py, HECLIPModel.forward)."""
    n = len(img)
    target = np.array([_softmax_row(np.array([img[i] @ img[j] for j in range(n)]) / tau) for i in range(n)])
    logits = np.array([[expr[i] @ img[j] / tau for j in range(n)] for i in range(n)])
    total = 0.0
    for i in range(n):
        total += -sum(target[j, i] * (logits[j, i] - logsumexp(logits[:, i])) for j in range(n))
    return total / n


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_bleep_loss_matches_hand_computed_3x3(tau):
    got = bleep_loss(torch.tensor(IMG), torch.tensor(EXPR), tau)
    assert float(got) == pytest.approx(_bleep_by_hand(IMG, EXPR, tau), rel=1e-10)


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_heclip_loss_matches_hand_computed_3x3(tau):
    got = heclip_loss(torch.tensor(IMG), torch.tensor(EXPR), tau)
    assert float(got) == pytest.approx(_heclip_by_hand(IMG, EXPR, tau), rel=1e-10)


def test_losses_on_identity_embeddings_equal_closed_form():
    # E_v = E_x = I, τ = 1: every target row is (e, 1, 1) / (e + 2) and equals softmax(logits),
    # so each cross-entropy is the entropy log(e + 2) - e / (e + 2).
    expected = np.log(np.e + 2) - np.e / (np.e + 2)
    eye = torch.eye(3, dtype=torch.float64)
    assert float(bleep_loss(eye, eye, 1.0)) == pytest.approx(expected, rel=1e-12)
    assert float(heclip_loss(eye, eye, 1.0)) == pytest.approx(expected, rel=1e-12)


def test_bleep_loss_depends_on_expression_similarity_but_heclip_target_does_not():
    img = torch.tensor(IMG)
    # scaling the expression changes BLEEP's target and logits; HECLIP's target stays image-only
    expr_a, expr_b = torch.tensor(EXPR), torch.tensor(EXPR) * 3
    assert float(bleep_loss(img, expr_a)) != pytest.approx(float(bleep_loss(img, expr_b)))
    expected_b = _heclip_by_hand(IMG, EXPR * 3, 1.0)
    assert float(heclip_loss(img, expr_b)) == pytest.approx(expected_b, rel=1e-10)


@pytest.mark.parametrize("loss", [bleep_loss, heclip_loss])
def test_losses_reject_mismatched_shapes_and_bad_temperature(loss):
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="temperature"):
        loss(torch.zeros(3, 2), torch.zeros(3, 2), 0.0)


def _grads(net: torch.nn.Module) -> dict[str, float]:
    return {n: (0.0 if p.grad is None else float(p.grad.abs().sum())) for n, p in net.named_parameters()}


def test_bleep_gradients_reach_both_heads_and_the_encoder():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU())
    net = ContrastiveNet(5, 4, 8, expression_head=True, encoder=encoder)
    x, y = torch.randn(10, 6), torch.randn(10, 4)
    bleep_loss(net.image(x), net.expression(y)).backward()
    grads = _grads(net)
    for prefix in ("image_encoder.", "image_projection.", "spot_projection."):
        assert any(n.startswith(prefix) for n in grads)
        assert all(g > 0 for n, g in grads.items() if n.startswith(prefix)), prefix


def test_heclip_gradients_reach_only_the_image_side():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU())
    net = ContrastiveNet(5, 4, 4, expression_head=False, encoder=encoder)
    x = torch.randn(10, 6)
    y = torch.randn(10, 4, requires_grad=True)
    heclip_loss(net.image(x), net.expression(y)).backward()
    grads = _grads(net)
    # the expression side has no trainable parameters: the gene vector is used as it is
    assert not any(n.startswith("spot_projection.") for n in grads)
    assert all(g > 0 for g in grads.values())
    assert net.expression(y) is y
