"""One model for every rate: what every variable-rate model here shares, and the fixed-λ view
that gives it CompressAI's contract for the one evaluation path.

A variable-rate model (:class:`lic.models.gated.VariableRate`, :class:`lic.models.vbr.Vbr`) wraps a
CompressAI model as ``base`` and implements ``forward(x, lmbda)``, ``check_lambda``,
``compress_at`` and ``decompress_at``; :meth:`OneModelAllRates.at` fixes λ. The bitstream carries λ
(float32, 4 bytes, counted in bpp) as its last string group, so the decoder needs nothing else.
"""
from __future__ import annotations

import struct

import torch
import torch.nn as nn


class OneModelAllRates(nn.Module):
    """Base of the variable-rate models: delegates the entropy models to ``self.base``."""

    gated = False

    def gates(self) -> list:
        return []

    def aux_loss(self):
        return self.base.aux_loss()

    def update(self, scale_table=None, force=False):
        return self.base.update(scale_table=scale_table, force=force)

    def check_lambda(self, lmbda: float) -> None:
        lo, hi = self.lmbda_range
        if not lo * (1 - 1e-6) <= float(lmbda) <= hi * (1 + 1e-6):
            raise ValueError(f"λ={float(lmbda):g} is outside the trained range [{lo:g}, {hi:g}]; use a λ in it")

    def at(self, lmbda: float) -> "AtLambda":
        self.check_lambda(lmbda)  # refuses a λ outside the trained range now
        return AtLambda(self, lmbda)


class AtLambda(nn.Module):
    """A variable-rate model fixed at one λ, with CompressAI's contract."""

    def __init__(self, model: OneModelAllRates, lmbda: float):
        super().__init__()
        self.model = model
        self.register_buffer("lmbda", torch.tensor(float(lmbda)))  # in the fingerprint: one per λ
        self.autoregressive = hasattr(model.base, "context_prediction")

    def forward(self, x):
        out = self.model(x, self.lmbda.item())
        return {"x_hat": out["x_hat"], "likelihoods": out["likelihoods"]}

    def update(self, scale_table=None, force=False):
        return self.model.update(scale_table=scale_table, force=force)

    @torch.no_grad()
    def compress(self, x):
        enc = self.model.compress_at(x, self.lmbda.item())
        return {"strings": [*enc["strings"], [struct.pack("<f", self.lmbda.item())]], "shape": enc["shape"]}

    @torch.no_grad()
    def decompress(self, strings, shape):
        (lmbda,) = struct.unpack("<f", strings[-1][0])
        return self.model.decompress_at(strings[:-1], shape, lmbda)
