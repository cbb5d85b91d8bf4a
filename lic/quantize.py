"""Post-training int8 quantization of a codec's parts, three ways (Yu et al. §4.2, and what works).

- :func:`dynamic_int8`: PyTorch's dynamic quantization. It converts only Linear / LSTM / GRU
  modules, so it reports what it touched (nothing, in a convolutional codec).
- :func:`eager_static_int8`: eager-mode static quantization as the paper used it. Eager mode has
  no quantized elementwise ops on plain tensors, so each convolution is wrapped alone (quantize its
  input, int8 convolution, dequantize its output). Observers that saw no data give PyTorch's
  default parameters (scale 1, zero point 0): every activation in (-0.5, 0.5) becomes 0. Eager
  mode's per-channel weight observer does not exist for transposed convolutions, so the default
  x86 configuration fails on them; ``transposed="per-tensor"`` is the fix.
- :func:`fx_int8`: FX graph-mode static quantization for x86 (``torch.ao.quantization``;
  deprecated in favour of torchao's PT2E flow, which needs ``torch.export`` of each part and
  ``torch.compile`` to run int8 kernels), per part (``g_a``, ``g_s``, ...), observers calibrated on
  the images given, modules that must stay float (GDN, ChannelNorm) left out of the graph.

Entropy models are never quantized; the parts that compute their parameters (``h_s``) run the
same int8 kernels in the encoder and the decoder.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torch.nn as nn
from compressai.layers import GDN

from .models.hific import ChannelNorm

FLOAT_MODULES = (GDN, ChannelNorm)
CONVS = (nn.Conv2d, nn.ConvTranspose2d)
BACKEND = "x86"


@contextlib.contextmanager
def _quiet():
    """The quantization APIs warn on every call that they are deprecated (said once, above)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def parts_of(model, parts) -> dict:
    """{name: submodule} for the dotted ``parts`` of ``model``; a clear error names the valid ones."""
    found = {}
    names = dict(model.named_modules())
    for p in parts:
        if p not in names or p == "":
            top = ", ".join(n for n, _ in model.named_children())
            raise ValueError(f"{type(model).__name__} has no part {p!r}; its parts: {top}")
        found[p] = names[p]
    return found


def _set(model, dotted: str, module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def dynamic_int8(model):
    """(quantized copy, names of the modules it converted) under dynamic int8 quantization."""
    types = (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)
    touched = [n for n, m in model.named_modules() if isinstance(m, types)]
    with _quiet():
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), set(types), dtype=torch.qint8)
    return q, touched


class _Wrapped(nn.Module):
    """quantize -> int8 module -> dequantize (eager mode, one convolution at a time)."""

    def __init__(self, module):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.module = module
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.module(self.quant(x)))


def eager_static_int8(model, parts, calibrate=(), transposed="per-channel"):
    """Eager static int8 of every convolution in ``parts`` (each wrapped alone), observers fed by
    running ``model`` on each batch of ``calibrate`` (none: PyTorch's default parameters).
    ``transposed``: weight observer of transposed convolutions ("per-channel" is x86's default,
    which eager mode cannot convert; "per-tensor" can). Returns the quantized copy."""
    if transposed not in ("per-channel", "per-tensor"):
        raise ValueError(f"transposed={transposed!r}; use 'per-channel' or 'per-tensor'")
    q = copy.deepcopy(model).eval()
    qconfig = torch.ao.quantization.get_default_qconfig(BACKEND)
    per_tensor = torch.ao.quantization.QConfig(activation=qconfig.activation,
                                               weight=torch.ao.quantization.default_weight_observer)
    with _quiet(), torch.no_grad():
        for part, module in parts_of(q, parts).items():
            for name, m in list(module.named_modules()):
                if isinstance(m, CONVS):
                    w = _Wrapped(m)
                    w.qconfig = per_tensor if isinstance(m, nn.ConvTranspose2d) and transposed == "per-tensor" else qconfig
                    _set(module, name, w)
        torch.ao.quantization.prepare(q, inplace=True)
        for x in calibrate:
            q(x)
        torch.ao.quantization.convert(q, inplace=True)
    return q


def _example_inputs(model, parts: dict, x) -> dict:
    """The positional inputs each part sees in ``model(x)`` (first call), for tracing."""
    seen, handles = {}, []
    for name, module in parts.items():
        def grab(mod, args, name=name):
            seen.setdefault(name, tuple(a.detach() if torch.is_tensor(a) else a for a in args))
        handles.append(module.register_forward_pre_hook(grab))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in parts if n not in seen]
    if missing:
        raise ValueError(f"parts {missing} never ran in {type(model).__name__}.forward; quantize parts it calls")
    return seen


def latent_layers(model) -> tuple:
    """The two layers that touch the latent: ``g_a``'s last convolution (its int8 output would be
    y on a grid of range/255, coarser than the codec's own rounding to integers) and ``g_s``'s
    first (its input ŷ)."""
    convs = lambda part: [n for n, m in model.get_submodule(part).named_modules() if isinstance(m, CONVS)]
    return (f"g_a.{convs('g_a')[-1]}", f"g_s.{convs('g_s')[0]}")


def fx_int8(model, parts, calibrate, skip=FLOAT_MODULES, float_layers=()):
    """FX graph-mode post-training int8 (x86) of ``parts`` of ``model``.

    ``calibrate``: batches run through the whole float-in/float-out model to set the observers
    (at least one). ``skip``: module classes kept in float and out of the traced graph;
    ``float_layers``: dotted names of single layers kept in float (e.g. :func:`latent_layers`).
    Returns the quantized copy; its other parts, and the entropy models, are unchanged."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    calibrate = list(calibrate)
    if not calibrate:
        raise ValueError("FX static quantization needs calibration batches (e.g. BSDS500 crops)")
    q = copy.deepcopy(model).eval()
    found = parts_of(q, parts)
    examples = _example_inputs(q, found, calibrate[0])
    custom = PrepareCustomConfig().set_non_traceable_module_classes(list(skip))
    unknown = [f for f in float_layers if not any(f.startswith(p + ".") for p in found)]
    if unknown:
        raise ValueError(f"float_layers {unknown} are not inside the quantized parts {list(found)}")
    with _quiet():
        for name, module in found.items():
            mapping = get_default_qconfig_mapping(BACKEND)
            for cls in skip:
                mapping = mapping.set_object_type(cls, None)
            for f in float_layers:
                if f.startswith(name + "."):
                    mapping = mapping.set_module_name(f[len(name) + 1:], None)
            try:
                prepared = prepare_fx(module, mapping, example_inputs=examples[name], prepare_custom_config=custom)
            except Exception as err:  # torch.fx raises several types for untraceable code
                raise ValueError(f"FX cannot trace part {name!r} of {type(model).__name__} ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}); quantize smaller parts, or pass "
                                 "the offending module classes in skip= to keep them in float") from err
            _set(q, name, prepared)
        with torch.no_grad():
            for x in calibrate:
                q(x)
        for name in found:
            part = convert_fx(q.get_submodule(name))
            part.register_forward_pre_hook(_contiguous_inputs)
            _set(q, name, part)
    return q


def _contiguous_inputs(module, args):
    """An int8 part sees its input in one memory layout whatever the caller holds: a float layer's
    kernel depends on the layout (forward() hands g_s a channels_last ŷ from g_a's int8 output,
    decompress() a contiguous one), and an int8 layer after it turns those last-bit differences
    into whole quantization steps (the decoded HiFiC image was 36 dB from forward's)."""
    return tuple(a.contiguous() if torch.is_tensor(a) else a for a in args)


def int8_modules(model) -> int:
    """How many quantized (int8) convolution / linear modules ``model`` holds."""
    return sum(1 for m in model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")
               and hasattr(m, "weight"))
