"""The projection head shared by BLEEP and HECLIP (image side, and BLEEP's expression side)."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """``Linear → GELU → Linear → Dropout``, added to the first projection, then ``LayerNorm``.

    This is the head of BLEEP's and HECLIP's public code: ``h = W₁x``,
    ``y = LayerNorm(h + Dropout(W₂ GELU(h)))``.

    Parameters
    ----------
    in_dim
        Input features (encoder embedding size, or the number of genes).
    out_dim
        Projection size (256 for BLEEP; the number of genes for HECLIP's image head).
    dropout
        Dropout rate of the second branch.

    Examples
    --------
    >>> import torch
    >>> head = ProjectionHead(8, 4)
    >>> head(torch.randn(5, 8)).shape
    torch.Size([5, 4])
    """

    def __init__(self, in_dim: int, out_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        x = self.dropout(self.fc(self.gelu(projected)))
        return self.layer_norm(x + projected)
