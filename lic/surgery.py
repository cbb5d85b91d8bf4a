"""Model surgery shared by every pruning chapter: channel selection of layers, and rebuilding a
model so its layers match the (possibly non-uniform) widths of a saved state dict.

Layer kinds: ``Conv2d`` (and CompressAI's ``MaskedConv2d``), ``ConvTranspose2d``, ``GDN``/``IGDN``
(``beta[k]``, ``gamma[k][:, k]``), ``EntropyBottleneck`` (one factorized density per channel) and
sub-pixel units ``Sequential(Conv2d, PixelShuffle(r))`` (output channel c is made of the r² conv
channels c·r² … c·r²+r²−1, kept or removed together).

:func:`fold_1x1` merges a following bias-free 1×1 convolution (ResRep's compactor) into a layer.
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
    """(in_channels, out_channels) of a conv, (C, C) of a GDN, (C, C) of an EntropyBottleneck,
    (in, shuffled out) of a sub-pixel unit."""
    if is_subpel(module):
        cin, cout = shape_of(module[0])
        return cin, cout // module[1].upscale_factor ** 2
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


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
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
            set_module(model, name, fresh_like(module, *stored))
    return model


def channel_config(model: nn.Module) -> dict:
    """{layer name: [in, out]} of every resizable layer: the model's channel configuration."""
    return {name: list(map(int, shape_of(m))) for name, m in model.named_modules()
            if name and isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, GDN, EntropyBottleneck))}


# ---------------------------------------------------------------------------------------------
# channel selection (physical removal)


def is_subpel(module: nn.Module) -> bool:
    """``Sequential(Conv2d, PixelShuffle)``: CompressAI's ``subpel_conv3x3``."""
    return (isinstance(module, nn.Sequential) and len(module) == 2
            and isinstance(module[0], nn.Conv2d) and isinstance(module[1], nn.PixelShuffle))


def _subpel_channels(keep, r2: int) -> torch.Tensor:
    """The conv channels behind shuffled channels ``keep`` (each one's r² sub-positions)."""
    keep = torch.as_tensor(keep, dtype=torch.long)
    return (keep[:, None] * r2 + torch.arange(r2)).reshape(-1)


@torch.no_grad()
def select_out(module: nn.Module, keep) -> nn.Module:
    """A copy of ``module`` that produces only the output channels ``keep``."""
    keep = torch.as_tensor(keep, dtype=torch.long)
    if is_subpel(module):
        r = module[1].upscale_factor
        return nn.Sequential(select_out(module[0], _subpel_channels(keep, r * r)), nn.PixelShuffle(r))
    if isinstance(module, EntropyBottleneck):
        new = fresh_like(module, len(keep), len(keep))
        for name, p in module.named_parameters():  # every parameter is per channel (dim 0)
            new.get_parameter(name).copy_(p[keep])
        return new
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
    if is_subpel(module):
        return nn.Sequential(select_in(module[0], keep), module[1])
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
    set_module(model, producer, select_out(model.get_submodule(producer), keep))
    for name in followers:
        set_module(model, name, select_out(model.get_submodule(name), keep))
    for name in consumers:
        set_module(model, name, select_in(model.get_submodule(name), keep))
    return model


@torch.no_grad()
def fold_1x1(module: nn.Module, q: torch.Tensor) -> nn.Module:
    """``module`` followed by a bias-free 1×1 convolution with weight ``q`` (out × C [×1×1]), as
    one layer of the same kind with ``q.shape[0]`` output channels (ResRep's merge).

    Conv2d: W' = q·W over output channels, b' = q·b (ERHP Eqs. 5-6). ConvTranspose2d (weight
    in × out × k × k): the same product along its output dimension (Eq. 10). Sub-pixel unit
    (compactor after the shuffle): every sub-position s uses the conv channels s, s+r², … and gets
    the same q (Eqs. 8-9 with PyTorch's channel order c·r² + s).
    """
    q = q.reshape(q.shape[0], q.shape[1]).to(torch.float32)
    if is_subpel(module):
        conv, r2 = module[0], module[1].upscale_factor ** 2
        w = conv.weight.reshape(-1, r2, *conv.weight.shape[1:])           # C x r² x in x k x k
        new = fresh_like(conv, conv.weight.shape[1], q.shape[0] * r2)
        new.weight.copy_(torch.einsum("oc,cs...->os...", q, w).reshape(new.weight.shape))
        if conv.bias is not None:
            new.bias.copy_((q @ conv.bias.reshape(-1, r2)).reshape(-1))
        return nn.Sequential(new, nn.PixelShuffle(module[1].upscale_factor))
    if isinstance(module, nn.ConvTranspose2d):
        new = fresh_like(module, module.weight.shape[0], q.shape[0])
        new.weight.copy_(torch.einsum("oc,ic...->io...", q, module.weight))
    elif isinstance(module, nn.Conv2d):
        new = fresh_like(module, module.weight.shape[1], q.shape[0])
        new.weight.copy_(torch.einsum("oc,c...->o...", q, module.weight))
    else:
        raise TypeError(f"cannot fold a 1x1 convolution into {type(module).__name__}")
    if module.bias is not None:
        new.bias.copy_(q @ module.bias)
    return new


def hidden_layers(model) -> list:
    """[(conv, gdn, next_conv)] module names of g_s's hidden layers, first to last."""
    names = [f"g_s.{i}" for i, _ in enumerate(model.g_s)]
    mods = list(model.g_s)
    layers = []
    for i, m in enumerate(mods[:-1]):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and i + 2 < len(mods) and isinstance(mods[i + 1], GDN):
            layers.append((names[i], names[i + 1], names[i + 2]))
    if not layers:
        raise ValueError(f"{type(model).__name__}.g_s has no (conv, GDN, conv) hidden layers to prune")
    return layers


@torch.no_grad()
def narrow_synthesis(model: nn.Module, width: int) -> nn.Module:
    """Give every hidden layer of ``model``'s g_s ``width`` channels, in place, freshly initialised
    (a decoder to train from scratch, not a pruned one): the zoo architecture at a pruned
    decoder's width, Liu et al.'s control for structured pruning."""
    layers = hidden_layers(model)
    full = min(shape_of(model.get_submodule(conv))[1] for conv, _, _ in layers)
    if not 1 <= width <= full:
        raise ValueError(f"a decoder width must be in [1, {full}] (the architecture's), got {width}")
    for conv, gdn, nxt in reversed(layers):
        remove_channels(model, conv, list(range(width)), followers=[gdn], consumers=[nxt])
    for conv, gdn, nxt in layers:
        for name in (conv, nxt):
            model.get_submodule(name).reset_parameters()  # PyTorch's init for the new fan-in
        g = model.get_submodule(gdn)
        fresh = GDN(width, inverse=g.inverse)
        set_module(model, gdn, fresh)
    return model
