"""The one rate–distortion training loop every chapter uses.

loss = R + λ·255²·MSE (+ the terms hooks add), an aux loss for the entropy bottleneck's quantiles,
gradient clipping, a cosine learning-rate decay, tqdm progress, periodic resumable checkpoints
(model, both optimizers, step, every RNG, hook state, learning curve) and the fastest precision of
this CPU (fp32 or bf16 autocast, channels_last or not: :mod:`lic.precision`), entropy models in fp32.

Methods plug in through hooks (see :class:`Hook`) instead of copying the loop.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import random
import signal
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as D
from . import precision as prec
from .precision import uses_channels_last  # noqa: F401 - part of this module's interface


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
    precision: str | None = None    # "fp32" | "bf16" | "auto"; None: $LIC_PRECISION, else auto
    channels_last: bool = True      # allowed (never for cheng2020); auto decides whether it helps
    seed: int = 0

    @classmethod
    def from_scale(cls, scale, lmbda, steps=None, **changes):
        cfg = cls(lmbda=lmbda, steps=scale.steps if steps is None else steps, batch=scale.batch,
                  crop=scale.crop, lr=scale.lr, lr_final=scale.lr_final, aux_lr=scale.aux_lr,
                  clip=scale.clip, late_crop=scale.late_crop, late_frac=scale.late_frac,
                  checkpoint_every=scale.checkpoint_every, eval_every=scale.eval_every)
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
    A variable-rate model returns its own λ per image (``out["lmbda"]``, e.g.
    :class:`lic.models.gated.VariableRate`): each image's R + λ·255²·D is weighed by it, and
    ``lmbda`` is ignored; the loss is the mean over images. A codec with its own distortion
    (Toderici's RNN codec: mean L1 of the residual over iterations, :mod:`lic.models.rnn`) returns
    it per image as ``out["distortion"]``; it replaces λ·255²·MSE (``mse`` is still reported).
    A model whose input is not the image (a hyper path trained on cached latents,
    :class:`lic.luo.Latents`) gives the image's pixel count as ``out["num_pixels"]``.
    """
    n, _, h, w = x.shape
    pixels = out.get("num_pixels") or h * w
    bits = torch.stack([torch.log(lik.float()).flatten(1).sum(1) for lik in out["likelihoods"].values()]).sum(0)
    bpp_i = bits / (-math.log(2) * pixels)
    if out["x_hat"] is None:
        mse_i = torch.zeros_like(bpp_i)
    else:
        mse_i = ((out["x_hat"].float() - x.float()) ** 2).flatten(1).mean(1)
    lam = out["lmbda"].to(bpp_i) if out.get("lmbda") is not None else lmbda
    d_i = lam * 255 ** 2 * mse_i if out.get("distortion") is None else out["distortion"].float()
    return {"bpp": bpp_i.mean(), "mse": mse_i.mean(), "loss": (bpp_i + d_i).mean()}


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


def split_parameters(model, params=None):
    """(main parameters, aux parameters): entropy-bottleneck quantiles go to the aux optimizer.
    With ``params`` given, only those are trained (the quantiles too only if among them)."""
    named = dict(model.named_parameters())
    chosen = set(id(p) for p in params) if params is not None else None
    main = [p for n, p in named.items() if not n.endswith("quantiles") and p.requires_grad
            and (chosen is None or id(p) in chosen)]
    aux = [p for n, p in named.items() if n.endswith("quantiles") and (chosen is None or id(p) in chosen)]
    return main, aux


RESTART_WARMUP = 500  # steps of linear warm-up after a restart from stored weights (fresh Adam moments)


def lr_at(step, cfg, restarted_at=None):
    """Cosine decay from ``lr`` to ``lr_final`` over ``steps``; after a restart from stored
    weights (``restarted_at``: :func:`restart_state`), ramped up linearly over
    ``RESTART_WARMUP`` steps, since Adam's moments start again from zero."""
    t = min(step / max(cfg.steps, 1), 1.0)
    lr = cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))
    if restarted_at is not None:
        lr *= min(1.0, (step - restarted_at + 1) / RESTART_WARMUP)
    return lr


def restart_state(path, model, step: int, cfg, curve=(), elapsed=0.0, loops=()) -> None:
    """Write a training state at ``path`` from which :func:`train` continues ``model``'s stored
    weights at ``step`` of ``cfg``'s schedule when the full state (optimizers, RNG) is gone, e.g. a
    staged run on another machine: fresh optimizers, a short warm-up (:func:`lr_at`), every RNG
    seeded from the step; the learning curve and loops so far are kept, and a loop entry records
    the restart."""
    restart = {"from_step": step, "loop": "restart", "how": "stored weights, fresh optimizers, "
               f"{RESTART_WARMUP}-step warm-up", "s_per_step": [], "cpu": prec.cpu_model(),
               "torch": str(torch.__version__)}
    path = Path(path)
    if D.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_atomic({"model": model.state_dict(), "optimizer": None, "aux_optimizer": None, "hooks": [],
                      "step": step, "curve": list(curve), "elapsed": elapsed, "rng": None,
                      "config": asdict(cfg), "loops": list(loops) + [restart], "restarted_at": step}, path)
    D.barrier()


def train_on(model, data, cfg, state, log, at_step: int, curve_file=None, elapsed=0.0, loops=(), hooks=(),
             evaluate=None, progress=True, desc=None):
    """Train a stored model on from ``at_step`` to ``cfg.steps`` (a budget curve: more steps for a
    model already kept): the first call writes a :func:`restart_state` at ``state`` from the
    model's weights, with its learning curve so far (``curve_file``), training seconds and loops;
    every call then resumes :func:`train` from ``state``. Returns the learning curve."""
    if not D.broadcast(Path(state).exists()):
        import pandas as pd

        rows = pd.read_csv(curve_file).to_dict("records") if curve_file and Path(curve_file).exists() else []
        restart_state(state, model, at_step, cfg, rows, elapsed, [{**lp, "s_per_step": []} for lp in loops])
    return train(model, data, cfg, checkpoint=state, hooks=hooks, log=log, evaluate=evaluate, progress=progress,
                 desc=desc)


def _rng_state(data):
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(), "data": data.state()}


def _seed_rank(seed, rank, data):
    """Seed every stream of ``rank`` (rank 0: exactly as one process does)."""
    s = seed if rank == 0 else f"{seed}/{rank}"
    torch.manual_seed(seed + 7919 * rank)
    np.random.seed((seed + 7919 * rank) % 2**32)
    random.seed(s)
    data.set_state(random.Random(s).getstate())


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


def phases(cfg: TrainConfig) -> list:
    """[(first step, end step, batch, crop)]: the main crop, then the late crop if any (same
    pixels per batch)."""
    if not cfg.late_crop:
        return [(0, cfg.steps, cfg.batch, cfg.crop)]
    late_start = int(cfg.steps * (1 - cfg.late_frac))
    late_batch = max(1, round(cfg.batch * (cfg.crop / cfg.late_crop) ** 2))
    return [(0, late_start, cfg.batch, cfg.crop), (late_start, cfg.steps, late_batch, cfg.late_crop)]


def _step(model, x, opt, aux_opt, main_params, cfg, hooks, loop, step, forward=None):
    """One optimisation step; returns the loss terms (the total under ``loss``). ``forward``: the
    model's DistributedDataParallel wrapper under torchrun (:mod:`lic.distributed`)."""
    opt.zero_grad(set_to_none=True)
    with prec.autocast(loop, prec.device_type(model)):
        out = (forward or model)(x)
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
        D.average_gradients(aux_opt.param_groups[0]["params"])  # quantiles stay equal on every rank
        aux_opt.step()
    for hook in hooks:
        hook.after_step(model, step)
    return terms


class _LossOnly(Hook):
    """A hook's loss terms without its side effects (gradient edits, its own optimizer steps)."""

    def __init__(self, hook):
        self.hook = hook

    def loss(self, model, out, x):
        return self.hook.loss(model, out, x)


def copy_model(model):
    """A deep copy of ``model``, also when ``torch.nn.utils.prune`` masks are on: the weight such a
    mask recomputes before every forward is held as a non-leaf tensor, which ``deepcopy`` refuses;
    it is detached first (the next forward recomputes it from ``weight_orig`` and the mask)."""
    from torch.nn.utils.prune import BasePruningMethod

    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, BasePruningMethod):
                setattr(m, hook._tensor_name, getattr(m, hook._tensor_name).detach())
    return copy.deepcopy(model)


def _measurer(model, main_params, aux_params, cfg, batch, crop, data_shape=None, warmup=2, steps=5, hooks=()):
    """``measure(loop, best)`` for :func:`lic.precision.choose`: median seconds of ``steps`` steps
    (after ``warmup``) of a copy of ``model`` on random batches of the real shape (``data_shape(n,
    crop)``, the training data's ``shape``; default: images), the ``hooks``' loss terms included,
    with throwaway optimizers and every RNG restored, so calibrating leaves the run exactly as it
    was. A loop whose first warm-up step alone takes over 3x the best median so far is not timed
    further; one whose loss is not finite at any step scores ``inf``, so it is never chosen."""
    names = {id(p): n for n, p in model.named_parameters()}
    loss_only = [_LossOnly(h) for h in hooks]

    def measure(loop, best):
        twin = copy_model(model)
        by_name = dict(twin.named_parameters())
        main = [by_name[names[id(p)]] for p in main_params]
        aux = [by_name[names[id(p)]] for p in aux_params]
        opt = torch.optim.Adam(main, lr=cfg.lr)
        aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr) if aux else None
        times = []
        with torch.random.fork_rng(devices=[]), prec.running(twin, loop) as to_format:
            x = to_format(torch.rand(data_shape(batch, crop) if data_shape else (batch, 3, crop, crop)))
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                terms = _step(twin, x, opt, aux_opt, main, cfg, loss_only, loop, 0)
                times.append(time.perf_counter() - t0)
                if not math.isfinite(terms["loss"].item()):
                    return math.inf
                if i == 0 and best is not None and times[-1] > 3 * best:
                    return times[-1]
        return statistics.median(times[warmup:])
    return measure


# what may change between the parts of one run: the length (a longer schedule), how fast a step
# runs, and how often it is logged or saved; anything else makes it another run
RESUMABLE_CHANGES = ("steps", "precision", "channels_last", "checkpoint_every", "eval_every")


def _check_resumable(checkpoint, saved, cfg) -> None:
    """Refuse to continue ``checkpoint`` under a configuration it was not trained with."""
    if not saved:
        return  # written before configurations were saved
    now = asdict(cfg)
    changed = [f"{k}={saved[k]!r} there, {now[k]!r} now" for k in now
               if k in saved and k not in RESUMABLE_CHANGES and saved[k] != now[k]]
    if changed:
        raise ValueError(f"{checkpoint} was trained with another configuration ({'; '.join(changed)}); "
                         "move it away (or delete it) to train from the start, or ask for its configuration")


def train(model, data, cfg: TrainConfig, checkpoint=None, hooks=(), params=None, evaluate=None,
          log=None, progress=True, stop_after=None, desc="train"):
    """Train ``model`` in place for ``cfg.steps`` steps; resume from ``checkpoint`` if it exists.

    Args:
        data: a :class:`lic.data.ImageFolder` (its ``batch(n, crop)`` gives training patches, of
            shape ``shape(n, crop)``), or anything with that interface, e.g. :class:`lic.luo.Latents`.
        checkpoint: path of the resumable checkpoint (written every ``cfg.checkpoint_every`` steps
            and at the end); ``None`` disables checkpointing. It resumes under any precision.
        hooks: :class:`Hook` objects adding loss terms or editing gradients.
        params: the parameters to optimise (default: all but the quantiles), e.g. only ``g_s``.
        evaluate: ``model -> dict`` run every ``cfg.eval_every`` steps and at the end (learning
            curve, in fp32); rows are returned and appended to ``log`` (CSV) if given.
        stop_after: stop (after checkpointing) at this step, as a kill would; for tests.

    The loop (fp32 or bf16, channels_last or not) is chosen per phase (main crop, late crop) by
    :func:`lic.precision.choose` from ``cfg.precision``; the checkpoint keeps every choice
    (``loops``) and each learning-curve row names the loop it was trained under.

    Returns the learning curve: a list of dicts (step, wall time, losses, precision, evaluation).
    """
    precision = prec.requested(cfg.precision)  # a bad value fails before any work
    D.init()  # under torchrun: join the process group (lic.distributed); else nothing
    for _, _, batch, _ in phases(cfg):
        D.local_batch(batch)  # refuse a batch that does not split before any work or any file
    if checkpoint and D.is_main():  # one trainer per model state: a second one is refused (lic.lock.Busy)
        from .lock import held

        with held(Path(str(checkpoint) + ".lock"), f"training of {Path(checkpoint).name}"):
            return _train(model, data, cfg, checkpoint, hooks, params, evaluate, log, progress, stop_after,
                          desc, precision)
    return _train(model, data, cfg, checkpoint, hooks, params, evaluate, log, progress, stop_after, desc, precision)


def _train(model, data, cfg, checkpoint, hooks, params, evaluate, log, progress, stop_after, desc, precision):
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    data.set_state(random.Random(cfg.seed).getstate())
    rank, world, device = D.rank(), D.world(), D.device()
    if world > 1:  # each rank: its own shard of the images, its own streams (rank 0 as one process would)
        if hasattr(data, "shard"):
            data.shard(rank, world)
        _seed_rank(cfg.seed, rank, data)
    model.to(device)
    main_params, aux_params = split_parameters(model, params)
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else None
    step, curve, elapsed, loops, restarted_at = 0, [], 0.0, [], None
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and D.broadcast(checkpoint.exists()):  # rank 0's answer, so every rank takes one branch
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        _check_resumable(checkpoint, state.get("config"), cfg)
        model.load_state_dict(state["model"])
        if state.get("optimizer"):  # None: a state made from stored weights (restart_state)
            opt.load_state_dict(state["optimizer"])
        if aux_opt and state.get("aux_optimizer"):
            aux_opt.load_state_dict(state["aux_optimizer"])
        for hook, hs in zip(hooks, state.get("hooks", [])):
            hook.load_state_dict(hs)
        step, curve, elapsed = state["step"], state["curve"], state.get("elapsed", 0.0)
        loops, restarted_at = state.get("loops", []), state.get("restarted_at")
        streams = state.get("rng_ranks") or ([state["rng"]] if state.get("rng") else [])
        if rank < len(streams):
            _set_rng_state(streams[rank], data)
        else:  # a restart, or a rank the state does not know: fresh streams, seeded by the step too
            _seed_rank(cfg.seed + step, rank, data)

    def save():
        if checkpoint:
            streams = D.gather(_rng_state(data))  # every rank's, so any number of processes resumes
            if D.is_main():
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                              "aux_optimizer": aux_opt.state_dict() if aux_opt else None,
                              "hooks": [h.state_dict() for h in hooks], "step": step, "curve": curve,
                              "elapsed": elapsed, "rng": streams[0], "rng_ranks": streams, "config": asdict(cfg),
                              "loops": loops, "restarted_at": restarted_at, "processes": world}, checkpoint)
            D.barrier()

    def record(stats, loop):
        if D.is_main():  # rank 0 evaluates and logs; the others wait
            row = {"step": step, "elapsed_s": round(elapsed, 3), **{k: float(v) for k, v in stats.items()},
                   "precision": loop.name}
            if world > 1:
                row["processes"] = world
            if evaluate is not None:
                model.eval()
                row.update(evaluate(model))
                model.train()
            curve.append(row)
            if log:
                write_csv(log, curve)
        D.barrier()

    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress or not D.is_main(), mininterval=2)
    stats, loop = {}, None
    frozen = None if params is None else main_params + aux_params
    trained = {id(p) for p in main_params + aux_params}
    last_step_s = 0.0
    with only_these_trained(model, frozen), _Stopped() as stopped:
        for first, end, batch, crop in phases(cfg):
            if step >= end or (stop_after is not None and step >= stop_after):
                continue
            batch = D.local_batch(batch)  # the scale's batch is the global one
            choice = prec.choose(
                model, batch, crop, end - step, precision=precision, channels_last=cfg.channels_last,
                trained=trained, measure=_measurer(model, main_params, aux_params, cfg, batch, crop, data.shape,
                                                   hooks=hooks)) if D.is_main() else None
            loop, times, how = D.broadcast(choice)  # rank 0 measures, every rank runs its choice
            loops.append({"from_step": step, "loop": loop.name, "how": how, "s_per_step": times,
                          "cpu": prec.device_name(model), "torch": str(torch.__version__)})
            (tqdm.write if progress and D.is_main() else lambda m: None)(
                f"{desc}: {prec.describe(loop, times, how)}" + (f", {world} processes x batch {batch}" if world > 1 else ""))
            with prec.running(model, loop) as to_format:
                forward = D.wrap(model)  # DistributedDataParallel under torchrun
                while step < end:
                    if stop_after is not None and step >= stop_after:
                        break
                    t0 = time.perf_counter()
                    x = to_format(data.batch(batch, crop).to(device))
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, cfg, restarted_at)
                    terms = _step(model, x, opt, aux_opt, main_params, cfg, hooks, loop, step, forward)
                    step += 1
                    step_s = time.perf_counter() - t0
                    if stopped.pop():  # paused (SIGSTOP/SIGCONT) during this step: count a normal step
                        step_s = last_step_s
                    elapsed += step_s
                    last_step_s = step_s
                    stats = D.average({k: v.detach().item() for k, v in terms.items()})  # the global batch's
                    if not math.isfinite(stats["loss"]):
                        raise FloatingPointError(f"loss became {stats['loss']} at step {step}; lower the "
                                                 "learning rate or resume from the last checkpoint")
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", bpp=f"{stats['bpp']:.3f}", loop=loop.name,
                                    refresh=False)
                    if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                        record(stats, loop)
                    if checkpoint and step % cfg.checkpoint_every == 0:
                        save()
    bar.close()
    if D.broadcast(step >= cfg.steps and (not curve or curve[-1]["step"] != step)):
        record(stats, loop or prec.Loop.from_name(loops[-1]["loop"] if loops else "fp32"))
    save()
    model.eval()
    return D.broadcast(curve)


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


def _loop_seconds(model, data, loop, steps, lmbda, batch, crop) -> float:
    """Seconds per step of :func:`train` under ``loop`` (setup excluded)."""
    cfg = TrainConfig(lmbda=lmbda, steps=steps, batch=batch, crop=crop, checkpoint_every=10**9,
                      precision=loop.precision, channels_last=loop.channels_last)
    return train(model, data, cfg, progress=False)[-1]["elapsed_s"] / steps


def throughput(make_model, data, steps=30, batch=8, crop=128, lmbda=0.013, warmup=3, repeats=2) -> dict:
    """Training throughput on this CPU, every loop measured in one run, interleaved.

    Plain fp32 eager CompressAI (its example loop) and :func:`train` under each candidate loop of
    :func:`lic.precision.candidates`, ``repeats`` rounds of ``steps`` steps on batches of the same
    shape (each model warmed up by ``warmup`` steps first), plus the loop ``precision="auto"``
    picks here (its cached or fresh calibration, as a real run of this shape would make it).
    ``make_model()`` builds a fresh, untrained model. Returns every loop's median seconds per step
    and its runs, the auto choice, and ``ratio`` = plain fp32 / the auto-chosen loop.
    """
    torch.manual_seed(0)
    probe = make_model()
    cfg = TrainConfig(lmbda=lmbda, steps=prec.CALIBRATE_MIN_STEPS, batch=batch, crop=crop)
    auto, calibration, how = prec.choose(probe, batch, crop, prec.CALIBRATE_MIN_STEPS, precision="auto",
                                         measure=_measurer(probe, *split_parameters(probe), cfg, batch, crop))
    loops = prec.candidates(probe)
    names = ["plain fp32 eager"] + [lp.name for lp in loops]
    models, runs = {}, {n: [] for n in names}
    for n in names:
        torch.manual_seed(0)
        models[n] = make_model()
    _plain_fp32_seconds(models[names[0]], data, warmup, lmbda, batch, crop)
    for lp in loops:
        _loop_seconds(models[lp.name], data, lp, warmup, lmbda, batch, crop)
    for _ in range(repeats):
        runs[names[0]].append(_plain_fp32_seconds(models[names[0]], data, steps, lmbda, batch, crop))
        for lp in loops:
            runs[lp.name].append(_loop_seconds(models[lp.name], data, lp, steps, lmbda, batch, crop))
    med = {n: statistics.median(r) for n, r in runs.items()}
    return {"cpu": prec.cpu_model(), "threads": torch.get_num_threads(), "steps": steps, "batch": batch,
            "crop": crop, "repeats": repeats,
            "loops": [{"loop": n, "s_per_step": med[n], "runs": runs[n], "auto": n == auto.name} for n in names],
            "auto": auto.name, "auto_how": how, "calibration_s_per_step": calibration,
            "plain_fp32_s": med[names[0]], "lic_s": med[auto.name], "ratio": med[names[0]] / med[auto.name],
            "channels_last": prec.uses_channels_last(probe)}
