"""Synthetic slices for the EPS benchmarks: embeddings and expression that share latent factors.

Spots have ``n_factors`` latent factors ``z ~ N(0, 1)``. The embedding is a random linear map of
``z`` plus isotropic noise (like an image encoder's output: a few directions carry tissue
structure, the rest is noise). Half of the genes follow one factor each with an effect that
varies from weak to strong; the other half are noise. So EPS spreads over a wide range, which
makes the Spearman agreement between graphs a meaningful check.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def latent(n_spots: int, n_factors: int = 8, seed: int = 0) -> np.ndarray:
    """Latent factors ``n_spots × n_factors`` (float32)."""
    return np.random.default_rng(seed).standard_normal((n_spots, n_factors), dtype=np.float32)


def embedding(z: np.ndarray, dim: int, *, noise: float = 1.0, seed: int = 1, chunk: int = 100_000) -> np.ndarray:
    """``n × dim`` float32 embedding ``z A + noise`` (built in row chunks)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((z.shape[1], dim), dtype=np.float32)
    out = np.empty((z.shape[0], dim), dtype=np.float32)
    for start in range(0, z.shape[0], chunk):
        block = z[start : start + chunk] @ mixing
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        out[start : start + chunk] = block
    return out


def _gene_design(n_genes: int, n_factors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    factor = rng.integers(0, n_factors, n_genes)
    effect = np.zeros(n_genes, dtype=np.float32)
    effect[: n_genes // 2] = np.linspace(0.05, 1.5, n_genes // 2)
    return factor, effect


def scaled_expression(z: np.ndarray, n_genes: int, *, seed: int = 2) -> np.ndarray:
    """Dense z-scored expression ``n × n_genes`` (float32), like ``sc.pp.scale`` output."""
    rng = np.random.default_rng(seed)
    factor, effect = _gene_design(n_genes, z.shape[1], seed)
    x = z[:, factor] * effect + rng.standard_normal((z.shape[0], n_genes), dtype=np.float32)
    x -= x.mean(axis=0)
    x /= x.std(axis=0, ddof=1)
    return np.clip(x, -10, 10)


def sparse_log1p(
    z: np.ndarray, n_genes: int, *, mean_count: float = 0.05, seed: int = 3, chunk: int = 20_000
) -> sparse.csr_matrix:
    """Sparse log1p-normalised expression ``n × n_genes`` (float32 CSR) from Poisson counts.

    ``mean_count`` sets the sparsity (about ``1 - exp(-mean_count)`` of the entries are non-zero),
    as in Visium HD bins (~100 counts over the top 2000 genes of an 8 µm bin). Built in row chunks,
    so the dense matrix never exists.
    """
    rng = np.random.default_rng(seed)
    factor, effect = _gene_design(n_genes, z.shape[1], seed)
    base = (mean_count * rng.lognormal(0, 0.5, n_genes)).astype(np.float32)
    blocks = []
    for start in range(0, z.shape[0], chunk):
        rate = base * np.exp(z[start : start + chunk, factor] * effect - effect**2 / 2)
        counts = sparse.csr_matrix(rng.poisson(rate).astype(np.float32))
        library = np.asarray(counts.sum(axis=1)).ravel()
        counts = sparse.diags((1e4 / np.maximum(library, 1)).astype(np.float32)) @ counts
        counts.data = np.log1p(counts.data)
        blocks.append(counts.astype(np.float32))
    return sparse.vstack(blocks, format="csr")
