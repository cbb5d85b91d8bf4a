"""Data-parallel training under ``torchrun``: the process group, who writes, and the entropy
bottleneck's quantiles, for the one training loop (:func:`lic.train.train`).

    torchrun --nproc_per_node 2 -m lic.zoo train --scale smoke          # any trainer, unchanged

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) nothing here does anything: one
process, as before. Under it:
- the backend is gloo on CPU, NCCL on CUDA (the device is CUDA when one is visible; ``LIC_DEVICE``
  forces one);
- each rank draws its crops from its own shard of the training images with its own random stream
  (seeded by the run's seed and the rank); the scale's batch is the *global* batch, split evenly
  (refused in one line when it does not divide), so a recipe does not change with the number of
  processes; the learning-rate schedule is unchanged;
- ``DistributedDataParallel`` averages the gradients of the rate-distortion loss. The entropy
  bottleneck's ``quantiles`` are left out of it: they take no part in that loss, only in the aux
  loss, computed outside the wrapper after the main step. The aux loss does not depend on the
  images, so with the bottleneck's other parameters kept equal by DDP every rank computes the same
  quantile gradients anyway; they are still averaged explicitly (:func:`average_gradients`) so that
  equality never rests on that, and every rank's ``update()`` builds the same tables (tested:
  every parameter bit-identical across ranks after training);
- rank 0 alone writes checkpoints, learning curves, manifests and logs and runs the evaluations;
  the others wait at a barrier. A checkpoint keeps every rank's random streams, so it resumes
  with any number of processes (ranks it does not know start fresh streams).

CompressAI's own example wraps ``nn.DataParallel`` only; its users' reports on DDP name exactly
these traps (the aux loss and its optimizer, attributes hidden behind the wrapper).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def _joined() -> bool:
    """Whether this process is in a process group; under ``torchrun`` it joins on first use, so
    that who writes and what is broadcast never depend on which call came first."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init()
    return dist.is_available() and dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if _joined() else 1


def rank() -> int:
    return dist.get_rank() if _joined() else 0


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """CUDA (this rank's GPU) when one is visible, else the CPU; ``LIC_DEVICE`` forces one."""
    forced = os.environ.get("LIC_DEVICE")
    if forced:
        if forced not in ("cpu", "cuda"):
            raise ValueError(f"LIC_DEVICE={forced!r}; valid: cpu, cuda")
        if forced == "cuda" and not torch.cuda.is_available():
            raise ValueError("LIC_DEVICE=cuda but no CUDA device is visible; unset it to train on the CPU")
        name = forced
    else:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init() -> int:
    """Join the process group when launched by ``torchrun``; return the world size (1 without it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 1
    if not dist.is_initialized():
        backend = "nccl" if device().type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))  # rank 0 evaluates meanwhile
        if device().type == "cuda":
            torch.cuda.set_device(device())
    return world()


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


class SplitError(ValueError):
    """The global batch does not split over the processes; the message lists the counts that do."""


def local_batch(batch: int) -> int:
    """This rank's share of a global ``batch``; refused when the processes do not divide it."""
    n = world()
    if batch % n:
        raise SplitError(f"the global batch {batch} does not split over {n} processes; launch a number of "
                         f"processes that divides it (torchrun --nproc_per_node in "
                         f"{[d for d in range(1, batch + 1) if batch % d == 0]})")
    return batch // n


def quantile_names(model) -> list:
    return [n for n, _ in model.named_parameters() if n.endswith("quantiles")]


def wrap(model):
    """``model`` under DistributedDataParallel (the quantiles left out: :func:`average_gradients`),
    or ``model`` itself in one process."""
    if world() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    DDP._set_params_and_buffers_to_ignore_for_model(model, quantile_names(model))
    ids = [device().index] if device().type == "cuda" else None
    # some methods leave parameters out of a step (gates, slimmable widths, frozen parts)
    return DDP(model, device_ids=ids, find_unused_parameters=True)


def average_gradients(params) -> None:
    """Average the gradients of ``params`` over the ranks (the quantiles' aux-loss gradients)."""
    if world() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(world())


def average(values: dict) -> dict:
    """The mean over ranks of a dict of floats (the logged loss terms of the global batch)."""
    if world() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: v / world() for k, v in zip(keys, t.tolist())}
