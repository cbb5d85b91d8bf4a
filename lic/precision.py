"""Which training loop runs fastest on this machine, chosen by measurement and cached per CPU.

The candidates are fp32 and bf16 autocast, each with or without channels_last (never channels_last
for cheng2020, which aborts with it on torch 2.14 CPU; METHOD_NOTES). bf16 autocast is 1.8–2.4×
faster than fp32 on the Zen 3 EPYC the zoo was trained on and 9× *slower* on a Zen 2 one, so no
choice is right everywhere: ``precision="auto"`` times a few steps of each candidate on the real
model, batch and crop, keeps the fastest, and remembers it in ``runs/precision.json`` under a key
of CPU model, torch version, threads, model, widths, batch, crop and trained parameters.

Only the forward pass and the loss run under autocast (PyTorch's AMP guide); parameters, gradients
and Adam states stay fp32 whatever the loop, so a run can resume under another precision, on
another machine. Entropy models always run in fp32.

    precision="fp32" | "bf16" | "auto"   (TrainConfig, ``--precision`` of ``lic.zoo train``,
                                          or $LIC_PRECISION for notebooks run by papermill)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from compressai.entropy_models import EntropyModel

from .scales import check_choice

PRECISIONS = ("fp32", "bf16", "auto")
ENV = "LIC_PRECISION"
# a run (or phase of a run) shorter than this does not calibrate: it takes the cached choice for
# its key, else fp32 (at worst ~2x slower than the best loop; bf16 can be 9x slower)
CALIBRATE_MIN_STEPS = 300
PROJECT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Loop:
    """One way of running a training step: autocast dtype and memory format."""

    precision: str          # "fp32" | "bf16"
    channels_last: bool

    @property
    def name(self) -> str:
        return self.precision + ("+channels_last" if self.channels_last else "")

    @classmethod
    def from_name(cls, name: str) -> "Loop":
        precision, _, fmt = name.partition("+")
        return cls(precision, fmt == "channels_last")


def requested(value=None) -> str:
    """The precision asked for: ``value`` if given, else $LIC_PRECISION, else ``auto``; checked."""
    if value is None:
        value = os.environ.get(ENV) or "auto"
        what = f"precision (from ${ENV})"
    else:
        what = "precision"
    check_choice(what, value, PRECISIONS)
    return value


def uses_channels_last(model) -> bool:
    """cheng2020 models abort with heap corruption under channels_last on torch 2.14 CPU
    (METHOD_NOTES); every other architecture may use it."""
    return not any("Cheng2020" in type(m).__name__ for m in model.modules())


def device_type(model=None) -> str:
    """"cuda" when ``model`` (else the device :mod:`lic.distributed` trains on) is on a GPU, else "cpu"."""
    if model is not None:
        p = next(model.parameters(), None)
        return p.device.type if p is not None else "cpu"
    from .distributed import device

    return device().type


def bf16_supported(dev: str) -> bool:
    """bf16 autocast is a candidate on every CPU (timed there: emulated on AVX2 it loses) and on
    GPUs that support it (Ampere and newer)."""
    return dev != "cuda" or torch.cuda.is_bf16_supported()


def candidates(model, channels_last=True) -> list:
    """The loops worth timing for ``model`` on its device, fp32 first."""
    bf16 = bf16_supported(device_type(model))
    if channels_last and uses_channels_last(model):
        return [Loop("fp32", False), Loop("fp32", True)] + ([Loop("bf16", True)] if bf16 else [])
    return [Loop("fp32", False)] + ([Loop("bf16", False)] if bf16 else [])


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (model name, family, model) and torch's ISA level."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        name += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"


def device_name(model=None) -> str:
    """What a training loop ran on: the GPU's name on CUDA, else :func:`cpu_model`."""
    if device_type(model) == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return cpu_model()


def cache_path() -> Path:
    return Path(os.environ.get("LIC_RUNS", PROJECT / "runs")) / "precision.json"


def cache_key(model, batch: int, crop: int, trained=None) -> str:
    """CPU, torch, threads, model class and every parameter's shape (the widths), batch, crop and
    which parameters are trained (a frozen encoder changes the backward pass)."""
    h = hashlib.sha256()
    for n, p in model.named_parameters():
        h.update(f"{n}:{tuple(p.shape)}:{p.requires_grad if trained is None else id(p) in trained};".encode())
    return (f"{device_name(model)} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
            f"{type(model).__name__} {h.hexdigest()[:12]} | {batch}x{crop}")


def read_cache() -> dict:
    p = cache_path()
    try:
        return json.loads(p.read_text()) if p.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged cache only costs a recalibration


def _write_cache(cache: dict) -> None:
    p = cache_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


def choose(model, batch: int, crop: int, steps: int, measure, precision=None, channels_last=True,
           trained=None) -> tuple:
    """(loop, measured seconds per step of each candidate, how it was decided).

    ``precision`` is ``fp32``/``bf16`` (taken as asked), ``auto`` or None ($LIC_PRECISION, else
    auto). For auto: the cached choice for this key, else — for ``steps`` of at least
    :data:`CALIBRATE_MIN_STEPS` — ``measure(loop, best_so_far)`` (seconds per step) of every
    candidate, the fastest kept and cached; a shorter run without a cached choice takes fp32.
    """
    precision = requested(precision)
    cands = candidates(model, channels_last)
    if precision != "auto":
        return next(c for c in reversed(cands) if c.precision == precision), {}, "asked for"
    key = cache_key(model, batch, crop, trained)
    hit = read_cache().get(key)
    if hit:
        return Loop.from_name(hit["loop"]), hit["s_per_step"], "cached"
    if steps < CALIBRATE_MIN_STEPS:
        return cands[0], {}, f"run under {CALIBRATE_MIN_STEPS} steps, not calibrated"
    times = {}
    for c in cands:
        times[c.name] = measure(c, min(times.values(), default=None))
    best = min(cands, key=lambda c: times[c.name])
    cache = read_cache()
    cache[key] = {"loop": best.name, "s_per_step": times, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    _write_cache(cache)
    return best, times, "measured"


def describe(loop: Loop, times: dict, how: str) -> str:
    """One line for the log: the loop and why."""
    shown = ", ".join(f"{k} {v:.3f}" for k, v in times.items())
    return f"training loop {loop.name} ({how}{': s/step ' + shown if shown else ''}) on {device_name()}"


def _fp32_forward(fn):
    def forward(*args, **kwargs):
        cast = lambda a: a.float() if torch.is_tensor(a) and a.is_floating_point() else a  # noqa: E731
        dev = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        with torch.autocast(dev, enabled=False):
            return fn(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
    return forward


@contextlib.contextmanager
def running(model, loop: Loop):
    """Put ``model`` in ``loop``'s memory format and keep its entropy models fp32 under autocast;
    yields the function that formats an input batch. The caller runs forward and loss under
    :func:`autocast` (backward and optimizer steps outside, as PyTorch's AMP guide says: running
    them inside stopped this loop from learning at all). Everything is undone on exit."""
    patched = [m for m in model.modules() if isinstance(m, EntropyModel)] if loop.precision == "bf16" else []
    for m in patched:
        m.forward = _fp32_forward(m.forward)
    if loop.channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield (lambda x: x.contiguous(memory_format=torch.channels_last)) if loop.channels_last else (lambda x: x)
    finally:
        for m in patched:
            del m.forward
        if loop.channels_last:
            model.to(memory_format=torch.contiguous_format)


def autocast(loop: Loop, device: str = "cpu"):
    """bf16 autocast of the forward pass and loss on ``device`` ("cpu" or "cuda") when ``loop`` asks for it."""
    return torch.autocast(device, dtype=torch.bfloat16, enabled=loop.precision == "bf16")
