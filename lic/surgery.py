"""Model surgery shared by every pruning chapter: channel selection of layers, and rebuilding a
model so its layers match the (possibly non-uniform) widths of a saved state dict.

Layer kinds: ``Conv2d`` (and CompressAI's ``MaskedConv2d``), ``ConvTranspose2d``, ``GDN``/``IGDN``
(``beta[k]``, ``gamma[k][:, k]``) and ``EntropyBottleneck`` (one factorized density per channel).
"""
from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN
from torch import nn


def _conv_like(m: nn.Module, in_ch: int, out_ch: int) -> nn.Module:
    kw = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
              dilation=m.dilation, bias=m.bias is not None)
    if isinstance(m, nn.ConvTranspose2d):
        kw["output_padding"] = m.output_padding
    new = type(m).__new__(type(m))
    # MaskedConv2d takes mask_type; its mask buffer comes back with the state dict.
    if hasattr(m, "mask"):
        new.__init__(in_ch, out_ch, mask_type="A", **kw)
    else:
        new.__init__(in_ch, out_ch, **kw)
    return new


def shape_of(module: nn.Module) -> tuple:
    """(in_channels, out_channels) of a conv, (C, C) of a GDN, (C, C) of an EntropyBottleneck."""
    if isinstance(module, nn.ConvTranspose2d):
        return module.weight.shape[0], module.weight.shape[1]
    if isinstance(module, nn.Conv2d):
        return module.weight.shape[1], module.weight.shape[0]
    if isinstance(module, GDN):
        return (module.beta.shape[0],) * 2
    if isinstance(module, EntropyBottleneck):
        return (module.quantiles.shape[0],) * 2
    raise TypeError(f"no channel shape for {type(module).__name__}")


def fresh_like(module: nn.Module, in_ch: int, out_ch: int) -> nn.Module:
    """A newly initialised module of the same kind as ``module`` with other channel counts."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if module.groups != 1:
            raise NotImplementedError("grouped convolutions are not resized")
        return _conv_like(module, in_ch, out_ch)
    if isinstance(module, GDN):
        return GDN(out_ch, inverse=module.inverse)
    if isinstance(module, EntropyBottleneck):
        return EntropyBottleneck(out_ch, init_scale=module.init_scale, filters=module.filters)
    raise TypeError(f"cannot resize {type(module).__name__}")


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _stored_shape(module: nn.Module, name: str, state: dict):
    prefix = f"{name}." if name else ""
    if isinstance(module, nn.ConvTranspose2d):
        w = state[prefix + "weight"]
        return w.shape[0], w.shape[1]
    if isinstance(module, nn.Conv2d):
        w = state[prefix + "weight"]
        return w.shape[1], w.shape[0]
    if isinstance(module, GDN):
        c = state[prefix + "beta"].shape[0]
        return c, c
    if isinstance(module, EntropyBottleneck):
        c = state[prefix + "quantiles"].shape[0]
        return c, c
    return None


def resize_to(model: nn.Module, state: dict) -> nn.Module:
    """Rebuild every resizable layer of ``model`` whose widths differ from those in ``state``.

    This is how a pruned model (non-uniform widths) is loaded: build the architecture at its
    nominal widths, then make each layer the size its stored weights say.
    """
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, GDN, EntropyBottleneck)):
            continue
        try:
            stored = _stored_shape(module, name, state)
        except KeyError:
            continue
        if stored is not None and tuple(stored) != tuple(shape_of(module)):
            _set(model, name, fresh_like(module, *stored))
    return model


def channel_config(model: nn.Module) -> dict:
    """{layer name: [in, out]} of every resizable layer: the model's channel configuration."""
    return {name: list(map(int, shape_of(m))) for name, m in model.named_modules()
            if name and isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, GDN, EntropyBottleneck))}


# ---------------------------------------------------------------------------------------------
# channel selection (physical removal)


@torch.no_grad()
def select_out(module: nn.Module, keep) -> nn.Module:
    """A copy of ``module`` that produces only the output channels ``keep``."""
    keep = torch.as_tensor(keep, dtype=torch.long)
    cin, _ = shape_of(module)
    if isinstance(module, GDN):
        new = fresh_like(module, len(keep), len(keep))
        new.beta.copy_(module.beta[keep])
        new.gamma.copy_(module.gamma[keep][:, keep])
        return new
    new = fresh_like(module, cin, len(keep))
    if isinstance(module, nn.ConvTranspose2d):
        new.weight.copy_(module.weight[:, keep])
    else:
        new.weight.copy_(module.weight[keep])
        if hasattr(module, "mask"):
            new.mask.copy_(module.mask[keep])
    if module.bias is not None:
        new.bias.copy_(module.bias[keep])
    return new


@torch.no_grad()
def select_in(module: nn.Module, keep) -> nn.Module:
    """A copy of ``module`` that reads only the input channels ``keep``."""
    keep = torch.as_tensor(keep, dtype=torch.long)
    _, cout = shape_of(module)
    if isinstance(module, GDN):
        return select_out(module, keep)
    new = fresh_like(module, len(keep), cout)
    if isinstance(module, nn.ConvTranspose2d):
        new.weight.copy_(module.weight[keep])
    else:
        new.weight.copy_(module.weight[:, keep])
        if hasattr(module, "mask"):
            new.mask.copy_(module.mask[:, keep])
    if module.bias is not None:
        new.bias.copy_(module.bias)
    return new


def remove_channels(model: nn.Module, producer: str, keep, followers=(), consumers=()) -> nn.Module:
    """Keep only channels ``keep`` of layer ``producer``'s output, in place.

    ``followers`` are channel-wise layers on the same channels (GDN/IGDN); ``consumers`` read those
    channels as input. Names are dotted module paths, e.g. ``"g_s.0"``.
    """
    _set(model, producer, select_out(model.get_submodule(producer), keep))
    for name in followers:
        _set(model, name, select_out(model.get_submodule(name), keep))
    for name in consumers:
        _set(model, name, select_in(model.get_submodule(name), keep))
    return model
