"""A HiFiC-style generative codec (Mentzer et al., NeurIPS 2020), re-implemented small, the second
codec Yu et al. prune.

Reference facts (``Justin-Tan/high-fidelity-generative-compression``, read, not copied;
``METHOD_NOTES.md``): encoder E = 7x7 conv at 60 channels, four stride-2 3x3 convs to 120, 240,
480, 960, each with ChannelNorm and ReLU, and a 3x3 conv to the latent C=220; generator G = 3x3
conv C->960, ChannelNorm, nine residual blocks at 960, four stride-2 transposed convs back to 60,
a 7x7 conv to RGB; probability model P = a mean-scale hyperprior with N=320; a PatchGAN
discriminator D conditioned on the (upsampled) latent. Widths here are the reference's times
``width`` (1: ~181 M parameters without D).

P is CompressAI's mean-scale hyperprior (``h_a``, ``h_s``, entropy bottleneck, Gaussian
conditional), so ``compress``/``decompress``/``update`` are CompressAI's and the bitstream is its
range coder; ``forward`` also returns ``y_hat`` for the conditional discriminator.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.models import MeanScaleHyperprior

ENCODER = (60, 120, 240, 480, 960)
LATENT = 220
HYPER = 320
RESIDUAL_BLOCKS = 9
DISCRIMINATOR = (64, 128, 256, 512)


class ChannelNorm(nn.Module):
    """HiFiC's ChannelNorm: each pixel's channel vector normalised to zero mean and unit
    variance, then a learned per-channel affine (no batch statistics, so batch 1 = training)."""

    def __init__(self, channels, eps=1e-3):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return self.gamma * (x - mu) * torch.rsqrt(var + self.eps) + self.beta


def _conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride, k // 2, padding_mode="reflect")


class ResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c, 3), ChannelNorm(c), nn.ReLU(), _conv(c, c, 3), ChannelNorm(c))

    def forward(self, x):
        return x + self.body(x)


def _scaled(widths, width: float) -> tuple:
    return tuple(max(4, int(round(c * width))) for c in widths)


def encoder(width: float, latent: int) -> nn.Sequential:
    c = _scaled(ENCODER, width)
    layers = [_conv(3, c[0], 7), ChannelNorm(c[0]), nn.ReLU()]
    for a, b in zip(c, c[1:]):
        layers += [_conv(a, b, 3, 2), ChannelNorm(b), nn.ReLU()]
    layers += [_conv(c[-1], latent, 3)]
    return nn.Sequential(*layers)


def generator(width: float, latent: int, blocks: int = RESIDUAL_BLOCKS) -> nn.Sequential:
    c = _scaled(ENCODER, width)[::-1]
    layers = [_conv(latent, c[0], 3), ChannelNorm(c[0])]
    layers += [ResidualBlock(c[0]) for _ in range(blocks)]
    for a, b in zip(c, c[1:]):
        layers += [nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1), ChannelNorm(b), nn.ReLU()]
    layers += [_conv(c[-1], 3, 7)]
    return nn.Sequential(*layers)


class HiFiC(MeanScaleHyperprior):
    """E (``g_a``), G (``g_s``) and P (``h_a``, ``h_s`` and the entropy models) of a HiFiC-style
    codec at ``width`` times the reference widths; input and output in [0, 1]. The encoder
    downsamples by 16 (four stride-2 convs), the hyperprior by 4 more."""

    def __init__(self, width: float = 1.0, blocks: int = RESIDUAL_BLOCKS):
        latent, hyper = _scaled((LATENT, HYPER), width)
        super().__init__(N=hyper, M=latent)
        self.width = float(width)
        self.g_a = encoder(width, latent)
        self.g_s = generator(width, latent, blocks)

    def forward(self, x):
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
                "y_hat": y_hat}


class Discriminator(nn.Module):
    """HiFiC's conditional PatchGAN: the latent, through a 1x1 conv to 12 channels and nearest
    upsampling x16, is concatenated with the image; four stride-2 4x4 convs (spectral norm,
    LeakyReLU 0.2) and a 1x1 conv give one logit per patch."""

    def __init__(self, latent: int, width: float = 1.0):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.context = nn.Conv2d(latent, 12, 1)
        c = _scaled(DISCRIMINATOR, width)
        layers, cin = [], 3 + 12
        for cout in c:
            layers += [sn(nn.Conv2d(cin, cout, 4, 2, 1)), nn.LeakyReLU(0.2)]
            cin = cout
        layers += [nn.Conv2d(cin, 1, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x, y_hat):
        ctx = F.interpolate(F.leaky_relu(self.context(y_hat), 0.2), size=x.shape[-2:], mode="nearest")
        return self.body(torch.cat([x * 2 - 1, ctx], 1))
