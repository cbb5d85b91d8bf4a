"""Mask decay (EVC: Wang et al., ICLR 2023), one of the controls of chapter ``07_controls``: the
zoo decoder's channels that the narrow decoder will not have are faded out *while* it trains,
instead of being cut at once and fine-tuned afterwards as Liao's pruning does.

Every hidden layer of g_s gets a fixed mask on its output channels (:class:`Decaying`). The masks
of the channels to drop fall linearly from 1 to 0 over the first :data:`DECAY_SHARE` of the
training steps and stay 0 after; the other masks stay 1. Then the zeroed channels are removed by
:mod:`lic.surgery` — real smaller convolutions, exactly the masked decoder's output (IGDN maps a
zero channel to zero and adds nothing to the others' norms).

What is ours, not the paper's: EVC's training code is not released (microsoft/DCVC issue #125)
and its method section was not reachable offline, so neither its sparsity loss nor its decay
schedule is reproduced. The channels to drop, and how many per layer, are those of Liao's pruning
at the same ratio (the same scores, :func:`lic.liao.keep_counts`): the two decoders have the same
architecture and MACs, and differ only in *how* the channels leave — at once, then fine-tuned
(Liao), or gradually, while training (mask decay), with the same steps, learning rate and frozen
parts (g_s alone trains; the bitstream is the zoo model's).

    from lic import maskdecay
    narrow = maskdecay.decay(zoo_model, ratio=0.55, scores=scores, data=data, steps=1000, lmbda=0.013, scale=S)
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from . import liao, surgery
from .train import Hook, TrainConfig, train

DECAY_SHARE = 0.5  # the masks reach 0 halfway; the second half trains the narrow decoder as it will ship


class Decaying(nn.Module):
    """A layer whose output channels are multiplied by the buffer ``mask`` (1 keeps, 0 removes)."""

    def __init__(self, layer: nn.Module, channels: int):
        super().__init__()
        self.layer = layer
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, x):
        y = self.layer(x)
        return y * self.mask.to(y.dtype).view(1, -1, 1, 1)


def add_masks(model, ratio: float, scores: dict) -> dict:
    """Wrap, in place, every hidden layer of ``model``'s g_s in :class:`Decaying`; returns
    {conv name: channels to drop}: per layer the lowest-scoring ones, as many as Liao's pruning at
    ``ratio`` removes (:func:`lic.liao.keep_counts`)."""
    counts = liao.keep_counts(model, ratio)
    drop = {}
    for (conv, _, _), keep in zip(surgery.hidden_layers(model), counts):
        layer = model.get_submodule(conv)
        channels = surgery.shape_of(layer)[1]
        order = torch.argsort(torch.as_tensor(scores[conv], dtype=torch.float32), descending=True)
        drop[conv] = order[keep:].sort().values.tolist()
        surgery.set_module(model, conv, Decaying(layer, channels))
    return drop


def mask_value(step: int, steps: int) -> float:
    """The dropped channels' mask after ``step`` of ``steps`` training steps."""
    end = max(1, round(steps * DECAY_SHARE))
    return max(0.0, 1.0 - step / end)


class MaskDecay(Hook):
    """Sets the dropped channels' masks for the next step (:func:`mask_value`)."""

    def __init__(self, drop: dict, steps: int):
        self.drop, self.steps = drop, steps

    @torch.no_grad()
    def after_step(self, model, step):
        for conv, channels in self.drop.items():
            model.get_submodule(conv).mask[channels] = mask_value(step + 1, self.steps)


@torch.no_grad()
def remove_masked(model) -> dict:
    """Unwrap every :class:`Decaying` layer of ``model``'s g_s, in place, removing the channels
    whose mask is 0 (every mask must be 0 or 1 by then). Returns the kept channels per layer."""
    masks = {}
    for i, m in enumerate(model.g_s):
        if isinstance(m, Decaying):
            if not bool(((m.mask == 0) | (m.mask == 1)).all()):
                raise ValueError(f"g_s.{i}'s mask is still decaying (values in (0, 1)): train to the end first")
            masks[f"g_s.{i}"] = m.mask.clone()
            surgery.set_module(model, f"g_s.{i}", m.layer)
    kept = {}
    for conv, gdn, nxt in reversed(surgery.hidden_layers(model)):
        if conv in masks:
            kept[conv] = torch.nonzero(masks[conv]).flatten().tolist()
            surgery.remove_channels(model, conv, kept[conv], followers=[gdn], consumers=[nxt])
    return kept


def decay(base, ratio: float, scores: dict, data, steps: int, lmbda: float, scale, run_dir=None, progress=True):
    """A copy of the zoo model ``base`` whose g_s lost, gradually over ``steps`` training steps,
    the channels Liao's pruning at ``ratio`` removes (by ``scores``), then had them removed."""
    model = copy.deepcopy(base).eval()
    drop = add_masks(model, ratio, scores)
    cfg = TrainConfig.from_scale(scale, lmbda, steps=steps, lr=liao.FINETUNE_LR,
                                 lr_final=liao.FINETUNE_LR_FINAL, eval_every=0, late_crop=0, late_frac=0.0)
    state = Path(run_dir) / f"decay-{ratio:.2f}-{steps}-{lmbda:.4f}.state.pt" if run_dir else None
    curve = train(model, data, cfg, checkpoint=state, hooks=[MaskDecay(drop, steps)], params=list(model.g_s.parameters()),
                  progress=progress, desc=f"mask decay r={ratio} λ={lmbda}")
    remove_masked(model)
    model.train_seconds = curve[-1]["elapsed_s"] if curve else 0.0  # training time on this machine
    return model.eval()
