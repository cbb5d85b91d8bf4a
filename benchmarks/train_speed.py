"""Training throughput of the project's loop (bf16 autocast + channels_last, entropy models fp32)
against a plain fp32 eager CompressAI loop, measured in one run on the same data.

    python benchmarks/train_speed.py [--arch bmshj2018-hyperprior] [--steps 30] [--scale cpu]

Prints seconds per step of each and their ratio. Both loops take identical batches (8 x 128²).
"""
from __future__ import annotations

import argparse
import time

import torch

from lic import data as lic_data
from lic.scales import get_scale
from lic.train import TrainConfig, rd_loss, train
from lic.zoo import build_for


def plain_fp32(model, data, steps, lmbda, batch, crop):
    """The reference: CompressAI's example loop, fp32, default memory format."""
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--scale", default="cpu")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    data = lic_data.train_set(scale)
    batch, crop = 8, 128
    torch.manual_seed(0)
    ref = build_for(args.arch, scale)
    plain_fp32(ref, data, 3, 0.013, batch, crop)  # warm-up
    t_ref = plain_fp32(ref, data, args.steps, 0.013, batch, crop)
    torch.manual_seed(0)
    ours = build_for(args.arch, scale)
    cfg = TrainConfig(lmbda=0.013, steps=args.steps + 3, batch=batch, crop=crop, checkpoint_every=10**9)
    curve = train(ours, data, TrainConfig(**{**cfg.__dict__, "steps": 3}), progress=False)
    t0 = time.perf_counter()
    train(ours, data, cfg, progress=False)
    t_ours = (time.perf_counter() - t0) / cfg.steps
    print(f"arch {args.arch}  widths {scale.widths(args.arch)}  batch {batch}x{crop}²  "
          f"threads {torch.get_num_threads()}")
    print(f"plain fp32 eager : {t_ref:.3f} s/step")
    print(f"lic train loop   : {t_ours:.3f} s/step  (bf16 autocast, channels_last="
          f"{'Cheng2020' not in type(ours).__name__})")
    print(f"speed-up         : {t_ref / t_ours:.2f}x")
    return curve


if __name__ == "__main__":
    main()
