"""The one rate–distortion training loop every chapter uses.

loss = R + λ·255²·MSE (+ the terms hooks add), an aux loss for the entropy bottleneck's quantiles,
gradient clipping, a cosine learning-rate decay, tqdm progress, periodic resumable checkpoints
(model, both optimizers, step, every RNG, hook state, learning curve) and bf16 autocast with
channels_last on CPU, entropy models kept in fp32.

Methods plug in through hooks (see :class:`Hook`) instead of copying the loop.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from compressai.entropy_models import EntropyModel
from tqdm import tqdm


@dataclass
class TrainConfig:
    lmbda: float
    steps: int
    batch: int = 8
    crop: int = 128
    lr: float = 5e-4
    lr_final: float = 5e-5
    aux_lr: float = 1e-3
    clip: float = 1.0
    late_crop: int = 0
    late_frac: float = 0.0
    checkpoint_every: int = 500
    eval_every: int = 0
    fast: bool = True
    channels_last: bool = True
    seed: int = 0

    @classmethod
    def from_scale(cls, scale, lmbda, steps=None, **changes):
        cfg = cls(lmbda=lmbda, steps=scale.steps if steps is None else steps, batch=scale.batch,
                  crop=scale.crop, lr=scale.lr, lr_final=scale.lr_final, aux_lr=scale.aux_lr,
                  clip=scale.clip, late_crop=scale.late_crop, late_frac=scale.late_frac,
                  checkpoint_every=scale.checkpoint_every, eval_every=scale.eval_every,
                  fast=scale.fast)
        for k, v in changes.items():
            setattr(cfg, k, v)
        return cfg


class Hook:
    """Extension points of :func:`train`. Subclass and override what the method needs.

    - ``loss(model, out, x)`` -> dict of extra scalar loss terms (added to the loss, logged)
    - ``after_backward(model, step)``: edit gradients (e.g. ResRep's masked lasso rule)
    - ``after_step(model, step)``: e.g. update masks
    - ``state_dict()`` / ``load_state_dict(d)``: whatever must survive a resume
    """

    def loss(self, model, out, x) -> dict:
        return {}

    def after_backward(self, model, step) -> None:
        pass

    def after_step(self, model, step) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state) -> None:
        pass


def rd_loss(out, x, lmbda):
    """{'bpp', 'mse', 'loss'}: R + λ·255²·MSE with R in bits per pixel (CompressAI's convention).

    ``out["x_hat"] is None`` means the reconstruction does not depend on what is trained (e.g. a
    hyper path under a frozen main path, :class:`lic.luo.RatePath`): the loss is the rate alone.
    """
    n, _, h, w = x.shape
    bpp = sum(torch.log(lik.float()).sum() for lik in out["likelihoods"].values()) / (-math.log(2) * n * h * w)
    if out["x_hat"] is None:
        mse = torch.zeros((), device=bpp.device)
    else:
        mse = torch.mean((out["x_hat"].float() - x.float()) ** 2)
    return {"bpp": bpp, "mse": mse, "loss": bpp + lmbda * 255 ** 2 * mse}


def _fp32_forward(fn):
    def forward(*args, **kwargs):
        cast = lambda a: a.float() if torch.is_tensor(a) and a.is_floating_point() else a  # noqa: E731
        with torch.autocast("cpu", enabled=False):
            return fn(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})
    return forward


@contextlib.contextmanager
def fast_cpu(model, enabled=True, channels_last=True):
    """channels_last for the model and fp32 entropy models; the caller runs the forward pass under
    ``autocast(enabled)`` (forward and loss only: backward and optimizer steps stay outside, as
    PyTorch's AMP guide says; running them inside stopped this loop from learning at all)."""
    if not enabled:
        yield lambda x: x
        return
    patched = [m for m in model.modules() if isinstance(m, EntropyModel)]
    for m in patched:
        m.forward = _fp32_forward(m.forward)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield (lambda x: x.contiguous(memory_format=torch.channels_last)) if channels_last else (lambda x: x)
    finally:
        for m in patched:
            del m.forward
        if channels_last:
            model.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def only_these_trained(model, params):
    """Turn off gradients of every parameter not in ``params`` (a frozen encoder costs no
    backward work); restored on exit. ``params=None`` changes nothing."""
    keep = None if params is None else {id(p) for p in params}
    frozen = [] if keep is None else [p for p in model.parameters() if id(p) not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def uses_channels_last(model) -> bool:
    """cheng2020 models abort with heap corruption under channels_last on torch 2.14 CPU
    (METHOD_NOTES); every other architecture gets it."""
    return not any("Cheng2020" in type(m).__name__ for m in model.modules())


def split_parameters(model, params=None):
    """(main parameters, aux parameters): entropy-bottleneck quantiles go to the aux optimizer.
    With ``params`` given, only those are trained (the quantiles too only if among them)."""
    named = dict(model.named_parameters())
    chosen = set(id(p) for p in params) if params is not None else None
    main = [p for n, p in named.items() if not n.endswith("quantiles") and p.requires_grad
            and (chosen is None or id(p) in chosen)]
    aux = [p for n, p in named.items() if n.endswith("quantiles") and (chosen is None or id(p) in chosen)]
    return main, aux


def lr_at(step, cfg):
    """Cosine decay from ``lr`` to ``lr_final`` over ``steps``."""
    t = min(step / max(cfg.steps, 1), 1.0)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))


def _rng_state(data):
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(), "data": data.state()}


def _set_rng_state(state, data):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    data.set_state(state["data"])


class _Stopped:
    """Counts SIGCONT: a job paused with SIGSTOP (e.g. to free the cores for a while) must not
    count the pause as training time. Main thread only; the previous handler is restored."""

    def __init__(self):
        self.count, self.previous = 0, None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGCONT, self._handler)
        except (ValueError, AttributeError):  # not the main thread, or no SIGCONT (Windows)
            self.previous = None
        return self

    def _handler(self, signum, frame):
        self.count += 1

    def pop(self) -> bool:
        hit, self.count = self.count > 0, 0
        return hit

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGCONT, self.previous)


def _save_atomic(obj, path: Path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(model, data, cfg: TrainConfig, checkpoint=None, hooks=(), params=None, evaluate=None,
          log=None, progress=True, stop_after=None, desc="train"):
    """Train ``model`` in place for ``cfg.steps`` steps; resume from ``checkpoint`` if it exists.

    Args:
        data: a :class:`lic.data.ImageFolder` (its ``batch(n, crop)`` gives training patches).
        checkpoint: path of the resumable checkpoint (written every ``cfg.checkpoint_every`` steps
            and at the end); ``None`` disables checkpointing.
        hooks: :class:`Hook` objects adding loss terms or editing gradients.
        params: the parameters to optimise (default: all but the quantiles), e.g. only ``g_s``.
        evaluate: ``model -> dict`` run every ``cfg.eval_every`` steps and at the end (learning
            curve); rows are returned and appended to ``log`` (CSV) if given.
        stop_after: stop (after checkpointing) at this step, as a kill would; for tests.

    Returns the learning curve: a list of dicts (step, wall time, losses, evaluation).
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    data.set_state(random.Random(cfg.seed).getstate())
    main_params, aux_params = split_parameters(model, params)
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else None
    step, curve, elapsed = 0, [], 0.0
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if aux_opt and state.get("aux_optimizer"):
            aux_opt.load_state_dict(state["aux_optimizer"])
        for hook, hs in zip(hooks, state.get("hooks", [])):
            hook.load_state_dict(hs)
        step, curve, elapsed = state["step"], state["curve"], state.get("elapsed", 0.0)
        _set_rng_state(state["rng"], data)

    def save():
        if checkpoint:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "aux_optimizer": aux_opt.state_dict() if aux_opt else None,
                          "hooks": [h.state_dict() for h in hooks], "step": step, "curve": curve,
                          "elapsed": elapsed, "rng": _rng_state(data), "config": asdict(cfg)},
                         checkpoint)

    def record(stats):
        row = {"step": step, "elapsed_s": round(elapsed, 2), **{k: float(v) for k, v in stats.items()}}
        if evaluate is not None:
            model.eval()
            row.update(evaluate(model))
            model.train()
        curve.append(row)
        if log:
            write_csv(log, curve)

    late_start = int(cfg.steps * (1 - cfg.late_frac)) if cfg.late_crop else cfg.steps
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress, mininterval=2)
    stats = {}
    cl = cfg.channels_last and uses_channels_last(model)
    frozen = None if params is None else main_params + aux_params
    last_step_s = 0.0
    with only_these_trained(model, frozen), fast_cpu(model, cfg.fast, cl) as to_format, _Stopped() as stopped:
        while step < cfg.steps:
            if stop_after is not None and step >= stop_after:
                break
            t0 = time.perf_counter()
            crop, batch = cfg.crop, cfg.batch
            if step >= late_start:
                crop = cfg.late_crop
                batch = max(1, round(cfg.batch * (cfg.crop / cfg.late_crop) ** 2))
            x = to_format(data.batch(batch, crop))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.fast):
                out = model(x)
                terms = rd_loss(out, x, cfg.lmbda)
                loss = terms["loss"]
                for hook in hooks:
                    for k, v in hook.loss(model, out, x).items():
                        terms[k] = v
                        loss = loss + v
                terms["loss"] = loss  # the total, with the hooks' terms
            loss.backward()
            for hook in hooks:
                hook.after_backward(model, step)
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
            opt.step()
            if aux_opt:
                aux_opt.zero_grad(set_to_none=True)
                model.aux_loss().backward()
                aux_opt.step()
            for hook in hooks:
                hook.after_step(model, step)
            step += 1
            step_s = time.perf_counter() - t0
            if stopped.pop():  # paused (SIGSTOP/SIGCONT) during this step: count a normal step
                step_s = last_step_s
            elapsed += step_s
            last_step_s = step_s
            stats = {k: v.detach().item() for k, v in terms.items()}
            if not math.isfinite(stats["loss"]):
                raise FloatingPointError(f"loss became {stats['loss']} at step {step}; lower the "
                                         "learning rate or resume from the last checkpoint")
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", bpp=f"{stats['bpp']:.3f}", refresh=False)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                record(stats)
            if checkpoint and step % cfg.checkpoint_every == 0:
                save()
    bar.close()
    if step >= cfg.steps and (not curve or curve[-1]["step"] != step):
        record(stats)
    save()
    model.eval()
    return curve


def write_csv(path, rows):
    """Write the learning curve (rewritten whole, so a resume never duplicates rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _plain_fp32_seconds(model, data, steps, lmbda, batch, crop):
    """Seconds per step of CompressAI's example loop: fp32, eager, default memory format."""
    params = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    opt, aux_opt = torch.optim.Adam(params, 1e-4), torch.optim.Adam(aux, 1e-3)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        x = data.batch(batch, crop)
        opt.zero_grad()
        rd_loss(model(x), x, lmbda)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        aux_opt.zero_grad()
        model.aux_loss().backward()
        aux_opt.step()
    return (time.perf_counter() - t0) / steps


def speedup(make_model, data, steps=30, batch=8, crop=128, lmbda=0.013, warmup=3) -> dict:
    """Training throughput of :func:`train` against plain fp32 eager CompressAI, measured in one run.

    ``make_model()`` builds a fresh, untrained model; both loops take batches of the same shape from
    ``data`` and run ``warmup`` untimed steps first. Returns seconds per step of each and the ratio.
    """
    torch.manual_seed(0)
    ref = make_model()
    _plain_fp32_seconds(ref, data, warmup, lmbda, batch, crop)
    plain = _plain_fp32_seconds(ref, data, steps, lmbda, batch, crop)
    torch.manual_seed(0)
    ours = make_model()
    cfg = TrainConfig(lmbda=lmbda, steps=warmup, batch=batch, crop=crop, checkpoint_every=10**9)
    train(ours, data, cfg, progress=False)
    cfg = TrainConfig(**{**asdict(cfg), "steps": steps})
    t0 = time.perf_counter()
    train(ours, data, cfg, progress=False)
    lic = (time.perf_counter() - t0) / steps
    return {"plain_fp32_s": plain, "lic_s": lic, "ratio": plain / lic, "steps": steps, "batch": batch,
            "crop": crop, "threads": torch.get_num_threads(), "channels_last": uses_channels_last(ours)}
