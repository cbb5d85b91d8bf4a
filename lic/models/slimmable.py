"""Tao et al.'s (AdaNIC) SA-CAE supernet: a slimmable mean-scale hyperprior whose transforms run
each block of the picture at its own width.

- **Slimmable layers** (SlimCAE's pattern): :class:`SlimConv2d` / :class:`SlimConvTranspose2d` slice
  their kernels to the input's channels and the requested output width; :class:`SlimGDN` is
  SlimGDN+ — β and γ shared by all widths, sliced, with a learnable scalar affine per width
  (``γ_w = s_γ[i]·γ[:w, :w] + b_γ[i]``, ``β_w = s_β[i]·β[:w] + b_β[i]``; s = 1, b = 0 at the start).
- **Capacities** C1…C5 (index 0…4): the intermediate width N of g_a and g_s at the fractions
  :data:`FRACTIONS` of N (the paper's Table 2: 96…160 of 160). Our choice, named in the chapter:
  only N is slimmed — the latent y (M channels), the hyperprior and the entropy models are shared
  at full width, so one entropy model and one bitstream layout serve every capacity map.
- **Spatially adaptive execution** (:mod:`lic.models.spatial`): a transform capacity map (TCM),
  one capacity per block of ``block`` × ``block`` pixels, runs every layer tile by tile, tiles of
  one capacity batched into one smaller convolution. The map travels in the bitstream (3 bits a
  block, counted in bpp).

:class:`SlimMeanScale` keeps CompressAI's contract: ``forward``/``compress``/``decompress`` run the
capacity ``self.capacity`` uniformly, or a TCM when one is given; :class:`Routed` is the
fixed-router view (uniform, JUMC labels, a routing agent) the one evaluation path measures.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.layers import GDN
from compressai.models import MeanScaleHyperprior

FRACTIONS = (0.6, 0.7, 0.8, 0.9, 1.0)  # C1..C5 as fractions of N (the paper's 96..160 of 160)
TCM_BITS = 3                            # bits per block entry in the bitstream (5 capacities)


def capacities(N: int, fractions=FRACTIONS) -> tuple:
    """The widths of the capacities: round(N·f) for each fraction (N=64: 38, 45, 51, 58, 64)."""
    widths = tuple(int(round(N * f)) for f in fractions)
    if len(set(widths)) != len(widths) or min(widths) < 1:
        raise ValueError(f"N={N} is too narrow for {len(fractions)} distinct capacities: {widths}")
    return widths


class SlimConv2d(nn.Conv2d):
    """A convolution that runs on the input's channels (the first ``x.shape[1]`` of its kernel's
    inputs) and produces the first ``out`` outputs (all when ``out`` is None)."""

    def sliced(self, cin: int, out=None):
        w = self.weight if out is None and cin == self.in_channels else self.weight[:out, :cin].contiguous()
        return w, None if self.bias is None else self.bias[:out]

    def forward(self, x, out=None, padding=None):
        w, b = self.sliced(x.shape[1], out)
        return F.conv2d(x, w, b, self.stride, self.padding if padding is None else padding)


class SlimConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution sliced like :class:`SlimConv2d` (kernel layout: in, out, k, k)."""

    def sliced(self, cin: int, out=None):
        w = self.weight if out is None and cin == self.in_channels else self.weight[:cin, :out].contiguous()
        return w, None if self.bias is None else self.bias[:out]

    def forward(self, x, out=None, padding=None):
        w, b = self.sliced(x.shape[1], out)
        if padding is None:
            return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding)
        return F.conv_transpose2d(x, w, b, self.stride, padding)


class SlimGDN(GDN):
    """SlimGDN+: CompressAI's GDN sliced to the input's width, with a scalar affine on β and γ per
    capacity (identity at initialisation, so the full width is exactly the original GDN)."""

    def __init__(self, channels: int, n_capacities: int, inverse: bool = False):
        super().__init__(channels, inverse=inverse)
        self.s_beta = nn.Parameter(torch.ones(n_capacities))
        self.b_beta = nn.Parameter(torch.zeros(n_capacities))
        self.s_gamma = nn.Parameter(torch.ones(n_capacities))
        self.b_gamma = nn.Parameter(torch.zeros(n_capacities))

    def params(self, width: int, capacity: int):
        beta = self.beta_reparam(self.beta)[:width]
        gamma = self.gamma_reparam(self.gamma)[:width, :width]
        beta = (self.s_beta[capacity] * beta + self.b_beta[capacity]).clamp_min(self.beta_reparam.minimum)
        gamma = (self.s_gamma[capacity] * gamma + self.b_gamma[capacity]).clamp_min(0)
        return beta, gamma

    def forward(self, x, capacity: int = -1):
        beta, gamma = self.params(x.shape[1], capacity)
        norm = F.conv2d(x ** 2, gamma[:, :, None, None], beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


class SlimSequential(nn.Sequential):
    """conv, GDN, conv, GDN, …, conv: every hidden layer at ``widths[capacity]``, the last at its
    full output (M for g_a, 3 for g_s). Indices match CompressAI's ``g_a``/``g_s``, so a zoo
    model's weights load directly."""

    def __init__(self, widths, *layers):
        super().__init__(*layers)
        self.widths = tuple(widths)

    def units(self):
        """[(conv, gdn or None)] in order."""
        mods = list(self)
        return [(mods[i], mods[i + 1] if i + 1 < len(mods) else None) for i in range(0, len(mods), 2)]

    def forward(self, x, capacity: int = -1):
        units = self.units()
        for j, (conv, gdn) in enumerate(units):
            last = j == len(units) - 1
            x = conv(x, None if last else self.widths[capacity])
            if gdn is not None:
                x = gdn(x, capacity)
        return x


class SlimMeanScale(MeanScaleHyperprior):
    """The SA-CAE supernet at one quality level: CompressAI's mean-scale hyperprior (mbt2018-mean)
    with slimmable g_a and g_s. ``capacity`` (index, default the widest) is what ``forward``,
    ``compress`` and ``decompress`` run when no TCM is given."""

    def __init__(self, N=64, M=96, fractions=FRACTIONS, block=64, **kwargs):
        super().__init__(N=N, M=M, **kwargs)
        self.widths = capacities(N, fractions)
        self.block = int(block)
        k = len(self.widths)
        self.g_a = SlimSequential(
            self.widths,
            SlimConv2d(3, N, 5, 2, 2), SlimGDN(N, k),
            SlimConv2d(N, N, 5, 2, 2), SlimGDN(N, k),
            SlimConv2d(N, N, 5, 2, 2), SlimGDN(N, k),
            SlimConv2d(N, M, 5, 2, 2))
        self.g_s = SlimSequential(
            self.widths,
            SlimConvTranspose2d(M, N, 5, 2, 2, 1), SlimGDN(N, k, inverse=True),
            SlimConvTranspose2d(N, N, 5, 2, 2, 1), SlimGDN(N, k, inverse=True),
            SlimConvTranspose2d(N, N, 5, 2, 2, 1), SlimGDN(N, k, inverse=True),
            SlimConvTranspose2d(N, 3, 5, 2, 2, 1))
        self.capacity = k - 1

    @property
    def n_capacities(self) -> int:
        return len(self.widths)

    def check_capacity(self, capacity: int) -> int:
        if not -self.n_capacities <= capacity < self.n_capacities:
            raise ValueError(f"capacity {capacity} does not exist: this supernet has C1..C{self.n_capacities} "
                             f"(indices 0..{self.n_capacities - 1}, widths {self.widths})")
        return capacity % self.n_capacities

    # -- the two transforms, uniform or by a capacity map --------------------------------------
    def analysis(self, x, capacity=None, tcm=None):
        from .spatial import run_tiles
        if tcm is not None:
            return run_tiles(self.g_a, x, tcm, self.block, stride_in=1)
        return self.g_a(x, self.check_capacity(self.capacity if capacity is None else capacity))

    def synthesis(self, y_hat, capacity=None, tcm=None):
        from .spatial import run_tiles
        if tcm is not None:
            return run_tiles(self.g_s, y_hat, tcm, self.block, stride_in=16)
        return self.g_s(y_hat, self.check_capacity(self.capacity if capacity is None else capacity))

    def forward(self, x, capacity=None, tcm=None):
        y = self.analysis(x, capacity, tcm)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        return {"x_hat": self.synthesis(y_hat, capacity, tcm),
                "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def compress(self, x, tcm=None):
        """CompressAI's strings [y, z], plus the capacity map as a third string (3 bits a block)
        when ``tcm`` is given; without it, the uniform capacity ``self.capacity`` (no third string:
        the decoder of a uniform sub-model is a fixed model)."""
        if tcm is not None:
            tcm = check_tcm(tcm, x, self.block, self.n_capacities)
        y = self.analysis(x, tcm=tcm)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means_hat)
        strings = [y_strings, z_strings]
        if tcm is not None:
            strings.append([pack_tcm(t) for t in tcm])
        return {"strings": strings, "shape": z.size()[-2:]}

    def decompress(self, strings, shape):
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, means=means_hat)
        tcm = None
        if len(strings) > 2:
            grid = tcm_grid(y_hat.shape[-2:], self.block, stride=16)
            tcm = torch.stack([unpack_tcm(s, grid) for s in strings[2]])
        return {"x_hat": self.synthesis(y_hat, tcm=tcm).clamp_(0, 1)}


def from_mean_scale(model: MeanScaleHyperprior, fractions=FRACTIONS, block=64) -> SlimMeanScale:
    """A supernet whose widest capacity is exactly ``model`` (its weights, sliced for the narrower
    ones; the per-width GDN affines start at the identity)."""
    N, M = model.g_a[0].out_channels, model.g_a[-1].out_channels
    net = SlimMeanScale(N, M, fractions, block)
    missing, unexpected = net.load_state_dict(model.state_dict(), strict=False)
    extra = [k for k in missing if not k.rsplit(".", 1)[-1] in ("s_beta", "b_beta", "s_gamma", "b_gamma")]
    if extra or unexpected:
        raise ValueError(f"not a mean-scale hyperprior of CompressAI's layout: missing {extra}, unexpected {unexpected}")
    return net


# ---------------------------------------------------------------------------------------------
# the transform capacity map


def tcm_grid(size, block: int, stride: int = 1) -> tuple:
    """(rows, cols) of blocks for a map of ``size`` (H, W) at ``stride`` pixels per element."""
    h, w = size[0] * stride, size[1] * stride
    return h // block, w // block


def check_tcm(tcm, x, block: int, n_capacities: int) -> torch.Tensor:
    """``tcm`` as a (batch, rows, cols) long tensor for image batch ``x``, or a clear error."""
    h, w = x.shape[-2:]
    if h < block or w < block:
        raise ValueError(f"image {h}x{w} is smaller than one {block}x{block} block: pad it, or use a smaller block")
    if h % block or w % block:
        raise ValueError(f"image {h}x{w} is not a whole number of {block}x{block} blocks: pad it to a multiple of {block}")
    tcm = torch.as_tensor(tcm, dtype=torch.long)
    if tcm.dim() == 2:
        tcm = tcm.expand(x.shape[0], *tcm.shape)
    want = (x.shape[0], h // block, w // block)
    if tuple(tcm.shape) != want:
        raise ValueError(f"capacity map of shape {tuple(tcm.shape)} does not fit a {h}x{w} image batch of "
                         f"{x.shape[0]} with {block}-pixel blocks: it must be {want}")
    if tcm.min() < 0 or tcm.max() >= n_capacities:
        raise ValueError(f"capacity map holds {int(tcm.min())}..{int(tcm.max())}; this supernet has capacities "
                         f"0..{n_capacities - 1} (C1..C{n_capacities})")
    return tcm


def pack_tcm(tcm: torch.Tensor) -> bytes:
    """One image's map, :data:`TCM_BITS` bits an entry, row-major."""
    v = tcm.flatten().numpy().astype(np.uint8)
    bits = (v[:, None] >> np.arange(TCM_BITS)[None, :]) & 1
    return np.packbits(bits.flatten()).tobytes()


def unpack_tcm(data: bytes, grid) -> torch.Tensor:
    n = grid[0] * grid[1]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: n * TCM_BITS].reshape(n, TCM_BITS)
    v = (bits.astype(np.int64) << np.arange(TCM_BITS)[None, :]).sum(1)
    return torch.from_numpy(v).reshape(grid)


def tcm_bytes(grid) -> int:
    return math.ceil(grid[0] * grid[1] * TCM_BITS / 8)


class Routed(nn.Module):
    """CompressAI's contract for a supernet under a fixed router: ``router(x)`` gives the capacity
    map of each image (a uniform capacity, JUMC labels, a routing agent). What the router costs is
    part of ``compress`` (and so of the measured encode time). ``block`` (default: the supernet's)
    is the block size this view runs at, so views of one supernet can differ in it."""

    def __init__(self, net: SlimMeanScale, router, block=None):
        super().__init__()
        self.net, self.router, self.block = net, router, block or net.block

    @contextlib.contextmanager
    def _blocks(self):
        keep, self.net.block = self.net.block, self.block
        try:
            yield
        finally:
            self.net.block = keep

    def forward(self, x):
        with self._blocks():
            return self.net(x, tcm=check_tcm(self.router(x), x, self.block, self.net.n_capacities))

    def compress(self, x):
        with self._blocks():
            return self.net.compress(x, tcm=self.router(x))

    def decompress(self, strings, shape):
        with self._blocks():
            return self.net.decompress(strings, shape)

    def update(self, *args, **kwargs):
        return self.net.update(*args, **kwargs)


def uniform_router(capacity: int, block: int):
    """Every block at ``capacity``."""
    def route(x):
        return torch.full((x.shape[0], x.shape[-2] // block, x.shape[-1] // block), capacity, dtype=torch.long)
    return route


class AtCapacity(nn.Module):
    """CompressAI's contract for one uniform capacity of a supernet, run densely (the slim
    sub-model; no map in the bitstream)."""

    def __init__(self, net: SlimMeanScale, capacity: int):
        super().__init__()
        self.net, self.capacity = net, net.check_capacity(capacity)

    def forward(self, x):
        return self.net(x, capacity=self.capacity)

    def compress(self, x):
        keep, self.net.capacity = self.net.capacity, self.capacity
        try:
            return self.net.compress(x)
        finally:
            self.net.capacity = keep

    def decompress(self, strings, shape):
        keep, self.net.capacity = self.net.capacity, self.capacity
        try:
            return self.net.decompress(strings, shape)
        finally:
            self.net.capacity = keep

    def update(self, *args, **kwargs):
        return self.net.update(*args, **kwargs)


class PictureRouted(nn.Module):
    """Picture-level routing (the DS-Net-style baseline): ``choose(x)`` gives one capacity per
    picture (batch 1), which runs densely; the capacity travels as one byte."""

    def __init__(self, net: SlimMeanScale, choose):
        super().__init__()
        self.net, self.choose = net, choose

    def forward(self, x):
        return self.net(x, capacity=int(self.choose(x)))

    def compress(self, x):
        c = int(self.choose(x))
        enc = AtCapacity(self.net, c).compress(x)
        enc["strings"].append([bytes([c])])
        return enc

    def decompress(self, strings, shape):
        return AtCapacity(self.net, strings[2][0][0]).decompress(strings[:2], shape)

    def update(self, *args, **kwargs):
        return self.net.update(*args, **kwargs)
