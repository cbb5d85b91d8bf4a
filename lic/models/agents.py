"""Tao et al.'s routing agents: a small CNN that reads the picture and predicts, per block, the
capacity its JUMC label would give (and, for the teacher, the ΔCost of every narrower capacity).

The backbone is a stack of MobileNetV2/V3 inverted-residual blocks (1×1 expand, 3×3 depthwise,
1×1 project, hard-swish), stride 2 per stage until one feature vector per TCM block; each head is
two fully connected layers with a hard-swish between them (the paper's §3.5), applied per block as
1×1 convolutions. ``input_scale=0.5`` halves the picture first: the paper's low-resolution input.
Sizes are ours (no weights are public); :func:`teacher` and :func:`student` name them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def _head(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.Hardswish(), nn.Conv2d(hidden, cout, 1))


class RoutingAgent(nn.Module):
    """Picture (batch, 3, H, W) → {"logits": (batch, capacities, rows, cols)} and, with a cost
    head, {"delta": (batch, capacities − 1, rows, cols)}, one entry per ``block``-pixel block."""

    def __init__(self, widths=(16, 24, 32, 48, 64, 96), n_capacities: int = 5, cost_head: bool = True,
                 block: int = 64, input_scale: float = 1.0, hidden: int = 64, expand: int = 4):
        super().__init__()
        stages = int(round(math.log2(block * input_scale)))
        if 2 ** stages != block * input_scale or stages < 2:
            raise ValueError(f"block {block} at input scale {input_scale} is not a power of two ≥ 4")
        widths = list(widths)[:stages] + [widths[-1]] * max(0, stages - len(widths))
        self.block, self.input_scale, self.n_capacities = block, input_scale, n_capacities
        layers = [nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.Hardswish()]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [InvertedResidual(cin, cout, 2, expand), InvertedResidual(cout, cout, 1, expand)]
        self.backbone = nn.Sequential(*layers)
        self.route = _head(widths[-1], hidden, n_capacities)
        self.cost = _head(widths[-1], hidden, n_capacities - 1) if cost_head else None

    def forward(self, x):
        if self.input_scale != 1:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False,
                              antialias=True)
        f = self.backbone(x)
        out = {"logits": self.route(f)}
        if self.cost is not None:
            out["delta"] = self.cost(f)
        return out

    @torch.no_grad()
    def predict(self, x) -> torch.Tensor:
        """The capacity map: the most likely capacity per block, (batch, rows, cols)."""
        was = self.training
        self.eval()
        tcm = self(x)["logits"].argmax(1)
        self.train(was)
        return tcm


def teacher(n_capacities=5, block=64, cost_head=True, input_scale=1.0) -> RoutingAgent:
    return RoutingAgent((16, 24, 32, 48, 64, 96), n_capacities, cost_head, block, input_scale, hidden=64)


def student(n_capacities=5, block=64, input_scale=1.0) -> RoutingAgent:
    return RoutingAgent((8, 12, 16, 24, 32, 48), n_capacities, False, block, input_scale, hidden=32, expand=3)
