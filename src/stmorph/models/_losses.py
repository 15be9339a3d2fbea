"""Contrastive losses of BLEEP and HECLIP as small pure functions.

Both follow the authors' public code (``BLEEP/models.py``, ``HECLIP/code/models_hvg.py``): with
image embeddings ``E_v`` and expression embeddings ``E_x`` of one batch (one row per spot),

``logits = E_x E_vᵀ / τ`` (row ``i`` = spot ``i``'s expression against every image), and a soft
cross-entropy ``CE(P, T) = mean_i -Σ_j T_ij log softmax(P)_ij`` against a soft target ``T``.

- **BLEEP**: ``T = softmax((E_v E_vᵀ + E_x E_xᵀ) / 2 / τ)`` (row-wise);
  ``loss = (CE(logits, T) + CE(logitsᵀ, Tᵀ)) / 2``.
- **HECLIP** (image-centric): ``T = softmax(E_v E_vᵀ / τ)``; ``loss = CE(logitsᵀ, Tᵀ)``.

BLEEP's code multiplies the target similarities by τ (``/ 2 * self.temperature``) where the paper
and HECLIP divide; at BLEEP's default ``τ = 1`` both are the same, and we divide (the CLIP
convention). As in both codes, the image-side term uses the transposed row-softmax target ``Tᵀ``
and no embedding is L2-normalised inside the loss (the projection heads end in a LayerNorm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy ``-Σ_j targets_ij · log softmax(logits)_ij`` (shape ``(n,)``).

    Examples
    --------
    >>> import torch
    >>> soft_cross_entropy(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    tensor([0.6931, 0.6931])
    """
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def _check_pair(img_emb: torch.Tensor, expr_emb: torch.Tensor, temperature: float) -> None:
    if img_emb.ndim != 2 or img_emb.shape != expr_emb.shape:
        raise ValueError(
            f"img_emb and expr_emb must both be (batch, dim) with the same shape; found "
            f"{tuple(img_emb.shape)} and {tuple(expr_emb.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; found {temperature!r}")


def bleep_loss(img_emb: torch.Tensor, expr_emb: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """BLEEP's similarity-adjusted symmetric cross-entropy (Xie et al., NeurIPS 2023).

    Parameters
    ----------
    img_emb
        ``(batch, dim)`` projected image embeddings ``E_v``.
    expr_emb
        ``(batch, dim)`` projected expression embeddings ``E_x`` (row ``i`` pairs with image ``i``).
    temperature
        τ > 0.

    Returns
    -------
    Scalar loss: mean over spots of the mean of the expression-side and image-side cross-entropies
    against the soft target ``softmax((E_v E_vᵀ + E_x E_xᵀ) / 2 / τ)``.

    Examples
    --------
    >>> import torch
    >>> e = torch.eye(3)
    >>> round(float(bleep_loss(e, e, 1.0)), 4)
    0.9753
    """
    _check_pair(img_emb, expr_emb, temperature)
    logits = expr_emb @ img_emb.T / temperature
    similarity = (img_emb @ img_emb.T + expr_emb @ expr_emb.T) / 2
    targets = F.softmax(similarity / temperature, dim=-1)
    expr_side = soft_cross_entropy(logits, targets)
    img_side = soft_cross_entropy(logits.T, targets.T)
    return ((expr_side + img_side) / 2).mean()


def heclip_loss(img_emb: torch.Tensor, expr_emb: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """HECLIP's image-centric contrastive loss (Wang et al. 2025).

    Parameters
    ----------
    img_emb
        ``(batch, n_genes)`` image embeddings projected to the gene dimension.
    expr_emb
        ``(batch, n_genes)`` expression vectors themselves (HECLIP has no expression head).
    temperature
        τ > 0.

    Returns
    -------
    Scalar loss: mean over spots of the image-side cross-entropy of ``logitsᵀ`` against the
    image-only target ``softmax(E_v E_vᵀ / τ)ᵀ``.

    Examples
    --------
    >>> import torch
    >>> e = torch.eye(3)
    >>> round(float(heclip_loss(e, e, 1.0)), 4)
    0.9753
    """
    _check_pair(img_emb, expr_emb, temperature)
    logits = expr_emb @ img_emb.T / temperature
    targets = F.softmax(img_emb @ img_emb.T / temperature, dim=-1)
    return soft_cross_entropy(logits.T, targets.T).mean()
