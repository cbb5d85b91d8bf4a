"""The stages of a codec's ``compress`` and ``decompress``, metered where CompressAI calls them.

    with stage_clock(model) as clock:            # seconds per stage (the default meter)
        model.decompress(strings, shape)
    clock.seconds  # {"z decode": ..., "h_s": ..., "index table": ..., "y decode": ..., "g_s": ...}

The stages are the transforms (``g_a``, ``h_a``, ``h_s``, ``g_s``, timed through their forward
wherever they are called from), the entropy coding of z and y, the scale → index table, and the
serial autoregressive loop of mbt2018 and cheng2020-attn (context model and coder per latent, one
stage). The model's code is not copied: its attributes are wrapped for the duration of the block.
A call made inside another metered one counts for the outer one only. A wrapper that keeps its
codec in ``.net`` (AdaNIC's capacities), ``.model`` or ``.base`` (Yin's models at one λ) is
metered through it.

Any monotone ``meter`` works: :func:`stage_macs` reads a FlopCounterMode's running total instead of
the clock, so a point's MACs land in the same stages as its time (:mod:`lic.anatomy`).
"""
from __future__ import annotations

import contextlib
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# (attribute path, stage name)
STAGES = (
    ("g_a", "g_a"), ("h_a", "h_a"), ("h_s", "h_s"), ("g_s", "g_s"),
    ("entropy_bottleneck.compress", "z encode"), ("entropy_bottleneck.decompress", "z decode"),
    ("gaussian_conditional.build_indexes", "index table"),
    ("gaussian_conditional.compress", "y encode"), ("gaussian_conditional.decompress", "y decode"),
    ("_compress_ar", "autoregressive loop"), ("_decompress_ar", "autoregressive loop"),
)
TRANSFORM_STAGES = ("g_a", "h_a", "h_s", "g_s")  # the stages whose work is MACs
DECODE_ORDER = ("z decode", "h_s", "index table", "y decode", "autoregressive loop", "g_s", "other")
ENCODE_ORDER = ("g_a", "h_a", "z encode", "z decode", "h_s", "index table", "y encode",
                "autoregressive loop", "other")


class _Clock:
    def __init__(self, meter):
        self.meter, self.depth, self.seconds = meter, 0, {}

    def wrap(self, stage, fn):
        def metered(*args, **kwargs):
            if self.depth:  # inside another metered stage: that one counts it
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = self.meter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + self.meter() - t0
                self.depth -= 1
        return metered


WRAPPED = ("net", "model", "base")  # where wrappers keep their codec: AdaNIC's capacities, a model at one λ, BM/ECG


def codec_of(model):
    """The module holding the stages: ``model``, or the codec a wrapper keeps (in ``.net``,
    ``.model`` or ``.base``, followed until a module with a ``g_s``)."""
    while not hasattr(model, "g_s"):
        inner = next((getattr(model, a) for a in WRAPPED if isinstance(getattr(model, a, None), torch.nn.Module)), None)
        if inner is None:
            break
        model = inner
    return model


def _resolve(model, path):
    obj = model
    *owners, name = path.split(".")
    for o in owners:
        obj = getattr(obj, o, None)
        if obj is None:
            return None, None
    if not hasattr(obj, name):
        return None, None
    return obj, name


@contextlib.contextmanager
def stage_clock(model, meter=time.perf_counter):
    """Meter ``model``'s stages while the block runs; yields the clock (``clock.seconds``: {stage:
    metered amount}, seconds with the default meter)."""
    clock, patched = _Clock(meter), []
    codec = codec_of(model)
    for path, stage in STAGES:
        owner, name = _resolve(codec, path)
        if owner is None:
            continue
        target = getattr(owner, name)
        if isinstance(target, torch.nn.Module):  # meter the module's forward, wherever it is called from
            owner, name, target = target, "forward", target.forward
        owner.__dict__[name] = clock.wrap(stage, target)
        patched.append((owner, name))
    try:
        yield clock
    finally:
        for owner, name in patched:
            del owner.__dict__[name]


@torch.no_grad()
def stage_macs(model, x) -> dict:
    """MACs of ``model``'s real paths on ``x`` by stage: {"encode": {stage: MACs}, "decode": {...}},
    each with ``"total"`` (FlopCounterMode FLOPs ÷ 2; what no stage covers is ``"other"``)."""
    out = {}
    with FlopCounterMode(display=False) as c:
        with stage_clock(model, meter=c.get_total_flops) as clock:
            enc = model.compress(x)
        out["encode"] = clock.seconds
        start = c.get_total_flops()
        with stage_clock(model, meter=c.get_total_flops) as clock:
            model.decompress(enc["strings"], enc["shape"])
        out["decode"] = clock.seconds
        total = {"encode": start, "decode": c.get_total_flops() - start}
    for phase, per in out.items():
        per["other"] = total[phase] - sum(per.values())
        out[phase] = {s: v // 2 for s, v in per.items()} | {"total": total[phase] // 2}
    return out
