"""CompressAI's own variable-rate models (``ScaleHyperpriorVbr``, ``MeanScaleHyperpriorVbr``,
``JointAutoregressiveHierarchicalPriorsVbr``; Kamisli, Racapé and Choi, DCC 2024) behind the same
interface as :class:`lic.models.gated.VariableRate`, so one training loop and one evaluation path
serve both ways of getting one model for every rate.

CompressAI's recipe (``compressai/models/vbr.py``, read, not copied): y is multiplied by a gain
per rate level before quantization (straight-through rounding) and divided by it after; a small
MLP adds a quantization-reconstruction offset to non-zero values; in its stage-2 training the gains
are fixed (``Gain[s].detach()``), one level drawn per step, and any gain in between
(``inputscale``) gives a rate in between at test time. CompressAI's gains run 0.1 … 1.0 over its
eight λ (0.0018 … 0.18), i.e. gain ∝ √λ; we keep that law over the zoo's λ with gain 1 at the
middle λ, the λ of the fixed-rate model every variable-rate model here starts from, so at its own
λ the starting model is CompressAI's stage-1 model unchanged.
"""
from __future__ import annotations

import math

import torch
from compressai.models import (JointAutoregressiveHierarchicalPriorsVbr, MeanScaleHyperpriorVbr,
                               ScaleHyperpriorVbr)

from .rate import OneModelAllRates

VBR_CLASSES = {"bmshj2018-hyperprior": ScaleHyperpriorVbr, "mbt2018-mean": MeanScaleHyperpriorVbr,
               "mbt2018": JointAutoregressiveHierarchicalPriorsVbr}


class Vbr(OneModelAllRates):
    """A CompressAI vbr model trained at the levels ``lambdas`` (gain ∝ √λ, 1 at ``anchor``)."""

    def __init__(self, arch: str, widths: dict, lambdas, anchor: float):
        super().__init__()
        if arch not in VBR_CLASSES:
            raise ValueError(f"no CompressAI vbr model for {arch!r}; valid: {', '.join(VBR_CLASSES)}")
        self.base = VBR_CLASSES[arch](**widths)
        self.levels = sorted(float(v) for v in lambdas)
        self.anchor = float(anchor)
        with torch.no_grad():  # our levels replace CompressAI's eight (the rest of Gain is unused)
            for i, lam in enumerate(self.levels):
                self.base.Gain[i] = self.gain(lam)
        self.base.lmbda = list(self.levels)
        self.base.levels = len(self.levels)

    @property
    def lmbda_range(self) -> tuple:
        return (self.levels[0], self.levels[-1])

    def gain(self, lmbda: float) -> float:
        self.check_lambda(lmbda)
        return math.sqrt(lmbda / self.anchor)

    def forward(self, x, lmbda=None):
        """Training: one level drawn per step (CompressAI's stage 2); else ``lmbda`` given."""
        if lmbda is None:
            if not self.training:
                raise ValueError("give λ to evaluate a variable-rate model, or use model.at(lmbda)")
            s = int(torch.randint(len(self.levels), ()).item())
            out = self.base(x, stage=2, s=s)
            lam = self.levels[s]
        else:
            lam = float(lmbda)
            out = self.base(x, stage=2, inputscale=torch.tensor(self.gain(lam)))
        out["lmbda"] = torch.full((x.shape[0],), lam)
        return out

    def compress_at(self, x, lmbda: float):
        return self.base.compress(x, stage=2, inputscale=torch.tensor(self.gain(lmbda)))

    def decompress_at(self, strings, shape, lmbda: float):
        return self.base.decompress(strings, shape, stage=2, inputscale=torch.tensor(self.gain(lmbda)))
