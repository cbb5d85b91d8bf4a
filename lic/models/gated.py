"""Yin et al.'s two modules around any CompressAI hyperprior model: an energy-based channel gate
(ECG) before convolutions and a bit-rate modulator (BM) that makes one model variable-rate.

- :class:`ECG` — per image and channel: energy (global mean of x²; log, relative to the layer's
  mean), a 1D convolution across channels (ECA's pattern, odd kernel), and a learnable threshold
  per channel, the adjustment vector α (larger α → more channels closed). Hard 0/1 gates in the
  forward pass, a sigmoid straight-through gradient for training.
- :class:`GatedConv` — ECG + the convolution it feeds. Training and batches > 1 multiply by the
  mask; batch-1 inference runs the *smaller* convolution on the open input channels only (the
  weights sliced per image), so the gate saves time on a CPU, not just FLOPs on paper.
- :class:`RateModulator` — two fully connected layers map t = normalised log λ to a positive
  channel vector that scales y before quantization, and two more to the vector that scales ŷ
  back before g_s (the decoder knows λ: it travels in the bitstream, 4 bytes).
- :class:`VariableRate` — a CompressAI model with BM (and ECG unless ``gated=False``); ``forward(x,
  lmbda)``; ``at(lmbda)`` gives the fixed-λ view of :mod:`lic.models.rate` (CompressAI's
  contract, λ in the bitstream) for the one evaluation path.

Choices that the slides leave open are ours and named in the chapter.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rate import AtLambda, OneModelAllRates  # noqa: F401 - AtLambda: the fixed-λ view

GATED_PARTS = ("g_a", "g_s", "h_a", "h_s")
ALPHA_SCALE = 50.0


def eca_kernel(channels: int, gamma=2, b=1) -> int:
    """ECA's odd 1D kernel size for ``channels`` (3 for 64 or 96 channels)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECG(nn.Module):
    """Energy-based channel gate: (B, C, H, W) -> gates (B, C), 1 = channel kept."""

    def __init__(self, channels: int, alpha0: float = -4.0, tau: float = 1.0):
        super().__init__()
        k = eca_kernel(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        with torch.no_grad():  # start as the identity across channels: the gate reads the energy
            self.conv.weight.zero_()
            self.conv.weight[0, 0, k // 2] = 1.0
        # α = ALPHA_SCALE · a: Adam moves a by about lr per step, so α moves ALPHA_SCALE times
        # faster than the weights (at lr 2e-4, α travels from −4 to the scores' range in a few
        # hundred steps, not tens of thousands)
        self.a = nn.Parameter(torch.full((channels,), float(alpha0) / ALPHA_SCALE))
        self.tau = tau

    @property
    def alpha(self) -> torch.Tensor:
        """The per-channel threshold adjustment (larger → sparser)."""
        return ALPHA_SCALE * self.a

    @torch.no_grad()
    def set_alpha(self, value) -> None:
        self.a.copy_(torch.as_tensor(value, dtype=self.a.dtype).expand_as(self.a) / ALPHA_SCALE)

    def score(self, x):
        """Per-channel score minus threshold: the gate is open where it is > 0."""
        e = torch.log(x.float().pow(2).mean((2, 3)) + 1e-8)
        e = e - e.mean(1, keepdim=True)  # relative to the layer's mean energy
        return self.conv(e[:, None])[:, 0] - self.alpha

    def forward(self, x):
        s = self.score(x)
        hard = (s > 0).float()
        if not self.training:
            return hard
        soft = torch.sigmoid(s / self.tau)
        return hard + soft - soft.detach()  # straight-through: hard value, sigmoid gradient


class GatedConv(nn.Module):
    """An :class:`ECG` on the input channels of ``conv`` (Conv2d or ConvTranspose2d)."""

    def __init__(self, conv: nn.Module, **ecg):
        super().__init__()
        if conv.groups != 1:
            raise ValueError("GatedConv needs an ungrouped convolution")
        self.conv = conv
        self.ecg = ECG(conv.in_channels, **ecg)
        self.mode = "auto"     # "mask" always masks; "auto" slices for batch-1 inference
        self.enabled = True
        self.sparsity = None   # fraction of closed gates in the last forward (a tensor, with gradient)
        self.last_open = None  # open channels per image of the last forward
        self.pooled_elements = 0

    def _run(self, x, weight):
        c = self.conv
        if isinstance(c, nn.ConvTranspose2d):
            return F.conv_transpose2d(x, weight, c.bias, c.stride, c.padding, c.output_padding, 1, c.dilation)
        return F.conv2d(x, weight, c.bias, c.stride, c.padding, c.dilation, 1)

    def forward(self, x):
        if not self.enabled:
            self.sparsity = None
            return self.conv(x)
        g = self.ecg(x)
        self.pooled_elements = x[0].numel()  # the energy's cost: one multiply-add per element
        self.sparsity = 1 - g.mean()
        self.last_open = g.detach().sum(1)
        if self.training or x.shape[0] != 1 or self.mode == "mask":
            return self.conv(x * g.to(x.dtype)[:, :, None, None])
        keep = g[0].nonzero().flatten()
        if len(keep) == g.shape[1]:
            return self.conv(x)
        if len(keep) == 0:  # every input closed: the output is the bias alone
            keep, x = keep.new_zeros(1), torch.zeros_like(x[:, :1])
            return self._run(x, self._weight(keep))
        return self._run(x[:, keep], self._weight(keep))

    def _weight(self, keep):
        w = self.conv.weight
        return w[keep] if isinstance(self.conv, nn.ConvTranspose2d) else w[:, keep]


class RateModulator(nn.Module):
    """λ -> (gain on y, gain on ŷ before g_s): two FC layers each, positive through exp, 1 at init."""

    def __init__(self, channels: int, lmbda_range: tuple, hidden: int = 64):
        super().__init__()
        lo, hi = map(float, lmbda_range)
        if not 0 < lo < hi:
            raise ValueError(f"λ range must be 0 < low < high, got {lmbda_range}")
        self.register_buffer("log_range", torch.tensor([math.log(lo), math.log(hi)]))
        self.enc = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.dec = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        for net in (self.enc, self.dec):
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)

    @property
    def lmbda_range(self) -> tuple:
        return tuple(float(v) for v in self.log_range.exp())

    def position(self, lmbda: torch.Tensor) -> torch.Tensor:
        """t in [0, 1]: log λ between the ends of the trained range; refuses a λ outside it."""
        lo, hi = self.log_range.tolist()
        lmbda = torch.as_tensor(lmbda, dtype=torch.float32).reshape(-1)
        if ((lmbda.log() < lo - 1e-6) | (lmbda.log() > hi + 1e-6)).any():
            bad = lmbda[(lmbda.log() < lo - 1e-6) | (lmbda.log() > hi + 1e-6)][0].item()
            a, b = self.lmbda_range
            raise ValueError(f"λ={bad:g} is outside the trained range [{a:g}, {b:g}]; use a λ in it")
        return ((lmbda.log() - lo) / (hi - lo))[:, None]

    def forward(self, lmbda):
        t = self.position(lmbda)
        return self.enc(t).exp(), self.dec(t).exp()


class _Scale(nn.Module):
    """Multiplies by the modulator's current gain (``which`` = 0: on y, 1: before g_s)."""

    def __init__(self, owner_gains: dict, which: int):
        super().__init__()
        self._gains, self.which = owner_gains, which

    def forward(self, x):
        g = self._gains.get("current")
        if g is None:
            raise RuntimeError("no λ set: call VariableRate(x, lmbda) or use VariableRate.at(lmbda)")
        g = g[self.which].to(x.dtype)
        if g.shape[0] != x.shape[0]:
            g = g.expand(x.shape[0], -1)
        return x * g[:, :, None, None]


class VariableRate(OneModelAllRates):
    """BM (and ECG, unless ``gated=False``) around a CompressAI hyperprior model ``base``.

    The base model's own ``forward``, ``compress`` and ``decompress`` run unchanged: g_a ends with
    the y gain, g_s starts with the inverse gain, and gated convolutions replace the convolutions
    of g_a (but the first, which sees the RGB image), g_s, h_a and h_s. The autoregressive parts of
    mbt2018 (context model, entropy parameters) stay dense: the decoder computes them position by
    position, before the whole ŷ whose energy a gate would need exists.
    """

    def __init__(self, base: nn.Module, lmbda_range: tuple, gated: bool = True, **ecg):
        super().__init__()
        self.base = base
        self.gated = gated
        self._gains = {}
        M = base.g_a[-1].out_channels
        self.bm = RateModulator(M, lmbda_range)
        if gated:
            for part in GATED_PARTS:
                seq = getattr(base, part)
                for i, m in enumerate(seq):
                    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not (part == "g_a" and i == 0):
                        seq[i] = GatedConv(m, **ecg)
        base.g_a.append(_Scale(self._gains, 0))
        base.g_s.insert(0, _Scale(self._gains, 1))

    @property
    def lmbda_range(self) -> tuple:
        return self.bm.lmbda_range

    def gates(self) -> list:
        return [m for m in self.modules() if isinstance(m, GatedConv)]

    def set_lambda(self, lmbda):
        self._gains["current"] = self.bm(lmbda)

    def sample_lambda(self, n: int) -> torch.Tensor:
        """``n`` λ drawn log-uniformly from the trained range (torch's RNG: resumable)."""
        lo, hi = self.bm.log_range
        return (lo + (hi - lo) * torch.rand(n)).exp()

    def forward(self, x, lmbda=None):
        """``lmbda``: a float or one per image; in training mode, None draws one per image
        (:meth:`sample_lambda`), so the project's training loop trains over the whole range.
        Adds ``sparsity`` (per gated layer, with gradient) and ``lmbda`` (per image) to
        CompressAI's output; :func:`lic.train.rd_loss` weighs each image by its own λ."""
        if lmbda is None:
            if not self.training:
                a, b = self.lmbda_range
                raise ValueError(f"give λ (in [{a:g}, {b:g}]) to evaluate a variable-rate model, "
                                 "or use model.at(lmbda)")
            lmbda = self.sample_lambda(x.shape[0])
        lmbda = torch.as_tensor(lmbda, dtype=torch.float32).reshape(-1)
        self.set_lambda(lmbda)
        out = self.base(x)
        if self.gated:
            out["sparsity"] = torch.stack([g.sparsity for g in self.gates()])
            for g in self.gates():
                g.sparsity = None  # hand the graph over: nothing of it stays on the module
        self._gains.pop("current")
        out["lmbda"] = lmbda.expand(x.shape[0]) if lmbda.numel() == 1 else lmbda
        return out

    def check_lambda(self, lmbda: float) -> None:
        self.bm.position(lmbda)

    def compress_at(self, x, lmbda: float):
        self.set_lambda(lmbda)
        return self.base.compress(x)

    def decompress_at(self, strings, shape, lmbda: float):
        self.set_lambda(lmbda)
        return self.base.decompress(strings, shape)
