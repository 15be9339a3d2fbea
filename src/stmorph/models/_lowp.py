"""Inner products of a matrix's rows in int8, with a proven bound on their error (for st.tl's exact kNN).

:class:`Int8Gram` quantises the rows of ``x`` twice, once for each side of a product block:

- as the *rows* of a block: onto one shared grid, ``x̃ = s (q - z)`` with integer codes ``q`` in
  ``[0, L]`` (the same ``s`` and ``z`` for every row), ``L = 255`` where the kernel sums 8-bit
  codes exactly (AVX-512 VNNI, AMX) and ``L = 127`` where it does not (AVX2);
- as the *columns* of a block: each row symmetric in 8 bits, ``ŵ = t p`` with ``p`` in
  ``[-127, 127]``.

The product ``x̃_i · ŵ_j`` runs in oneDNN's int8 matrix product through torch
(``torch.ops.onednn.qlinear_pointwise``, the kernel behind torch's x86 quantised linear layers),
which takes the codes as they are (uint8, scale ``s``, zero point ``z``) and returns float32. Its
integer sums are exact: 7-bit unsigned codes times 8-bit signed ones cannot saturate the int16
pair sums of AVX2's ``vpmaddubsw`` (8-bit codes can), and AVX-512 VNNI and AMX sum in int32.
:func:`int8_levels` finds out which once per process, on the most saturation-prone codes. Every
block also carries one extra *pin row* of the code ``L`` everywhere, whose products are checked
against exact integer ones, so a kernel that stopped being exact would be caught, not
trusted.

The error of a product is then bounded, by Cauchy-Schwarz, with the exact residual norms of both
quantisations: ``|x_i·x_j - x̃_i·ŵ_j| <= |x_i - x̃_i| |x_j| + |x̃_i| |x_j - ŵ_j|``, plus the float32
rounding of the kernel's output (allowed: ``1e-6 |x̃_i| |ŵ_j|``, far above its few ulps).
:meth:`Int8Gram.products` returns that bound's largest value over the block.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

_ROUNDING = 1e-6
"""Bound on the float32 rounding of the kernel's output, relative to ``|x̃_i| |ŵ_j|``."""

_MAX_DIM = 2**31 // (255 * 127)
"""Longest rows whose integer sums cannot overflow int32."""


def int8_available() -> bool:
    """Whether torch's oneDNN int8 matrix product runs here with exact integer sums (x86 builds of torch).

    Examples
    --------
    >>> from stmorph.models import int8_available
    >>> isinstance(int8_available(), bool)
    True
    """
    return int8_levels() > 0


@cache
def int8_levels() -> int:
    """Largest unsigned code the int8 kernel multiplies exactly here: 255, 127, or 0 (no kernel).

    Checked once per process on a block of the most saturation-prone codes (``L`` everywhere,
    against weights ``127``, ``-127`` and both in turn), 8-bit codes first.
    """
    weights = np.full((64, 256), 127, dtype=np.int8)
    weights[1::3] = -127
    weights[2::3, ::2] = -127
    for levels in (255, 127):
        codes = np.full((256, 256), levels, dtype=np.uint8)
        codes[1::2, ::3] = 0
        try:
            got = _int8_matmul(codes, 1.0, 0, _pack(weights), np.ones(weights.shape[0]))
        except (RuntimeError, AttributeError, NotImplementedError):
            return 0
        if np.array_equal(got, codes.astype(np.float64) @ weights.T.astype(np.float64)):
            return levels
    return 0


def _pack(codes: np.ndarray) -> Any:
    """oneDNN's packed form of ``cols × d`` int8 weights."""
    import torch

    return torch.ops.onednn.qlinear_prepack(torch.from_numpy(codes), None)


def _int8_matmul(codes: np.ndarray, scale: float, zero: int, packed: Any, col_scales: np.ndarray) -> np.ndarray:
    """``scale (codes - zero) @ (col_scales p).T`` in float32, ``codes`` uint8 and ``p`` the packed int8 weights."""
    import torch

    n_cols = col_scales.shape[0]
    out = torch.ops.onednn.qlinear_pointwise(
        torch.from_numpy(codes),
        float(scale),
        int(zero),
        packed,
        torch.from_numpy(col_scales.astype(np.float32)),
        torch.zeros(n_cols, dtype=torch.long),
        None,
        1.0,
        0,
        torch.float32,
        "none",
        [],
        "",
    )
    return out.numpy()


@dataclass
class PackedColumns:
    """A column block quantised and packed for oneDNN, with its norms."""

    params: Any
    """oneDNN's packed int8 codes."""
    scales: np.ndarray
    """Each column's step ``t_j``."""
    pin_products: np.ndarray
    """The exact products of the pin row with the block."""
    norm: float
    """Largest ``|x_j|`` of the block."""
    residual: float
    """Largest ``|x_j - ŵ_j|`` of the block."""
    dequantised: float
    """Largest ``|ŵ_j|`` of the block."""


class Int8Gram:
    """Products ``x[rows] @ x[cols].T`` of a float matrix's rows in int8, each with a proven error bound.

    Parameters
    ----------
    x
        ``n × d`` float32 or float64 matrix (``d <= 133,152``, so that int32 sums cannot
        overflow). The bound holds for the products of ``x`` as given.
    levels
        Largest code of the rows' grid (default: :func:`int8_levels`).

    Examples
    --------
    >>> import numpy as np
    >>> from stmorph.models import Int8Gram
    >>> x = np.random.default_rng(0).standard_normal((6, 32)).astype(np.float32)
    >>> gram = Int8Gram(x)
    >>> sims, bound = gram.products(slice(0, 6), gram.pack(slice(0, 6)))
    >>> exact = x.astype(np.float64) @ x.T.astype(np.float64)
    >>> bool(np.abs(sims - exact).max() <= bound)
    True
    """

    def __init__(self, x: np.ndarray, levels: int | None = None) -> None:
        if x.ndim != 2 or not 0 < x.shape[1] <= _MAX_DIM:
            raise ValueError(f"Int8Gram needs an n × d matrix with 0 < d <= {_MAX_DIM}; got shape {x.shape}")
        self.x = x
        self.levels = int8_levels() if levels is None else levels
        low, high = min(float(x.min(initial=0.0)), 0.0), max(float(x.max(initial=0.0)), 0.0)
        self.scale = (high - low) / self.levels or 1.0
        self.zero = int(np.clip(np.rint(-low / self.scale), 0, self.levels))
        self.codes = np.empty(x.shape, dtype=np.uint8)
        self.row_residual = np.empty(x.shape[0])
        self.row_dequantised = np.empty(x.shape[0])
        for start in range(0, x.shape[0], 1024):  # float64 temporaries of 1024 rows
            self._quantise_rows(slice(start, start + 1024))
        # the largest code everywhere: the products most prone to saturate
        self.pin = np.full((1, x.shape[1]), self.levels, dtype=np.uint8)

    def _quantise_rows(self, rows: slice) -> None:
        """Codes ``clip(round(x / s) + z, 0, L)`` of ``x[rows]``, and the norms of their residuals."""
        block = self.x[rows].astype(np.float64)
        codes = np.clip(np.rint(block / self.scale) + self.zero, 0, self.levels)
        self.codes[rows] = codes
        dequantised = (codes - self.zero) * self.scale
        self.row_dequantised[rows] = np.linalg.norm(dequantised, axis=1)
        self.row_residual[rows] = np.linalg.norm(block - dequantised, axis=1)

    def pack(self, cols: slice) -> PackedColumns:
        """Quantise ``x[cols]`` per row in 8 bits (symmetric) and pack it for oneDNN."""
        block = self.x[cols].astype(np.float64)
        step = np.abs(block).max(axis=1) / 127
        step[step == 0] = 1.0
        codes = np.rint(block / step[:, None]).astype(np.int8)
        dequantised = codes * step[:, None]
        pin = self.pin[0].astype(np.float64) - self.zero  # exact in float64: |sums| < 2**31
        return PackedColumns(
            params=_pack(codes),
            scales=step,
            pin_products=codes @ pin,
            norm=float(np.linalg.norm(block, axis=1).max(initial=0.0)),
            residual=float(np.linalg.norm(block - dequantised, axis=1).max(initial=0.0)),
            dequantised=float(np.linalg.norm(dequantised, axis=1).max(initial=0.0)),
        )

    def products(self, rows: slice, packed: PackedColumns) -> tuple[np.ndarray, float]:
        """``(x[rows] @ x[cols].T from int8 codes as float32, bound on the error of every entry)``.

        Raises ``RuntimeError`` if the pin row's products are not the exact integer ones.
        """
        codes = np.concatenate([self.codes[rows], self.pin])
        out = _int8_matmul(codes, self.scale, self.zero, packed.params, packed.scales)
        exact = packed.pin_products * packed.scales * self.scale
        if not np.all(np.abs(out[-1] - exact) <= _ROUNDING * np.abs(exact) + 1e-30):
            raise RuntimeError(
                "the int8 kernel did not return exact integer sums; use precision='float32' and please report this"
            )
        top = float(self.row_dequantised[rows].max(initial=0.0))
        bound = float(self.row_residual[rows].max(initial=0.0)) * packed.norm + top * packed.residual
        bound += _ROUNDING * top * packed.dequantised
        return out[:-1], bound
