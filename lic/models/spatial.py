"""Spatially adaptive execution of a slimmable transform (Tao et al.'s SA-Conv, SA-TConv, SA-GDN)
by block tiles, for real — smaller convolutions, not masks.

Each layer runs on the whole feature map, tile by tile: a tile is one block of the capacity map
(TCM) at that layer's resolution (``block / stride`` elements a side). The tiles of one capacity
are cut from the zero-padded input *with the halo the kernel needs*, stacked into one batch, run
as one convolution at that capacity's width (input channels and outputs sliced), normalised by
that capacity's GDN, and written back into a full-size output map. So:

- a TCM of the widest capacity everywhere equals the dense layer (same arithmetic per output;
  only the summation order inside the convolution library may differ, ~1e-6);
- a uniform TCM of capacity c equals the slim sub-model c;
- in a mixed map, a tile reads its neighbours' values in the halo; where a neighbour runs
  narrower, the channels it lacks are zero there — the border effect the paper names (its
  Eq. 3 / §3.3), confined to a halo-wide strip along the tile's edges.

Geometry (per side): a conv (kernel k, stride s, padding p) making output rows [o0, o0+T) reads
padded input rows [s·o0, s·(o0+T−1)+k); a transposed conv making [s·i0, s·i0+T) reads input rows
[i0 − ⌊(k−1−p)/s⌋, i0 + T/s + ⌊(s−1+p)/s⌋) and keeps local outputs from s·halo + p.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _groups(tcm: torch.Tensor) -> dict:
    """{capacity: (image, row, col) index tensors of its tiles}."""
    out = {}
    for cap in torch.unique(tcm).tolist():
        idx = torch.nonzero(tcm == cap, as_tuple=True)
        out[cap] = idx
    return out


def _layer(conv, gdn, x, groups, T_in, T_out, width, first, last):
    """One unit (conv + its GDN) over every capacity group. ``x`` is the full input map. Tiles
    are gathered with ``unfold`` (a view) and one advanced-index copy per group, and written back
    in tile layout (one copy per group, one permute at the end)."""
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    n, _, H, W = x.shape
    transposed = isinstance(conv, nn.ConvTranspose2d)
    if transposed:
        lo, hi = (k - 1 - p) // s, (s - 1 + p) // s
        pad = max(lo, hi)
        xp = F.pad(x, (pad, pad, pad, pad))[..., pad - lo:, pad - lo:]
        step, span = T_in, T_in + lo + hi
    else:
        xp = F.pad(x, (p, p, p, p))
        step, span = s * T_out, s * (T_out - 1) + k
    rows, cols = H // T_in, W // T_in
    windows = xp.unfold(2, span, step).unfold(3, span, step)[:, :, :rows, :cols]  # n, C, rows, cols, span, span
    out_full = conv.out_channels
    tiles = x.new_empty(n, rows, cols, out_full, T_out, T_out)  # every tile is written below
    for cap, (img, r, c) in groups.items():
        cin = x.shape[1] if first else width[cap]
        cout = None if last else width[cap]
        batch = windows.permute(0, 2, 3, 1, 4, 5)[img, r, c, :cin]
        y = conv(batch, cout, padding=0)
        if transposed:
            o = s * lo + p
            y = y[..., o:o + T_out, o:o + T_out]
        if gdn is not None:
            y = gdn(y, cap)
        tiles[img, r, c, :y.shape[1]] = y
        if y.shape[1] < out_full:  # the channels a narrower tile lacks are zero
            tiles[img, r, c, y.shape[1]:] = 0
    return tiles.permute(0, 3, 1, 4, 2, 5).reshape(n, out_full, rows * T_out, cols * T_out)


def run_tiles(seq, x, tcm, block: int, stride_in: int):
    """Run :class:`lic.models.slimmable.SlimSequential` ``seq`` on ``x`` (at ``stride_in`` image
    pixels per element: 1 for g_a on the image, 16 for g_s on ŷ) by the capacity map ``tcm``
    (batch, rows, cols) of ``block``-pixel blocks."""
    tcm = torch.as_tensor(tcm, dtype=torch.long)
    if tcm.dim() == 2:
        tcm = tcm.expand(x.shape[0], *tcm.shape)
    rows, cols = x.shape[-2] * stride_in // block, x.shape[-1] * stride_in // block
    if tuple(tcm.shape) != (x.shape[0], rows, cols):
        raise ValueError(f"capacity map {tuple(tcm.shape)} does not fit the input {tuple(x.shape)} "
                         f"({block}-pixel blocks: {(x.shape[0], rows, cols)})")
    groups = _groups(tcm)
    units = seq.units()
    stride = stride_in
    for j, (conv, gdn) in enumerate(units):
        s = conv.stride[0]
        out_stride = stride // s if isinstance(conv, nn.ConvTranspose2d) else stride * s
        T_in, T_out = block // stride, block // out_stride
        if T_out < 1 or block % out_stride:
            raise ValueError(f"block {block} is too small for a layer at stride {out_stride}")
        x = _layer(conv, gdn, x, groups, T_in, T_out, seq.widths, first=j == 0, last=j == len(units) - 1)
        stride = out_stride
    return x
