"""02_luo's hyper-path training step on images (g_a run every step, frozen) and on cached latents
(:class:`lic.luo.Latents`), measured in one run, interleaved, fp32, for each architecture.

    python benchmarks/hyper_latents.py [--arch bmshj2018-hyperprior --arch cheng2020-attn] [--steps 10] [--repeats 3]

Prints the CPU, seconds per step of each (median of the repeats, and each repeat) and their ratio.
Batches of the chapter's shape (cpu: 2 x 256²), untrained zoo architectures at the scale's widths
(the cost does not depend on the weights), the chapter's optimizer over the hyper path only.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from lic import luo
from lic.data import ImageFolder, train_set
from lic.precision import Loop, cpu_model
from lic.scales import get_scale
from lic.train import TrainConfig, _step, split_parameters
from lic.zoo import build_for


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", default="cpu")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    cfg, _ = luo.stage_configs(scale, scale.lambdas[0], 100, 100)
    images = train_set(scale)
    results = {}
    print(f"cpu {cpu_model()}  threads {torch.get_num_threads()}  batch {cfg.batch}x{cfg.crop}²  "
          f"{args.steps} steps x {args.repeats} repeats, interleaved")
    for arch in args.arch or ["bmshj2018-hyperprior", "cheng2020-attn"]:
        torch.manual_seed(0)
        model = build_for(arch, scale)
        t0 = time.perf_counter()
        lat = luo.Latents.of(model, ImageFolder(images.images[:50], cfg.crop), progress=False)
        lat.batch(1, cfg.crop)
        pool_s = (time.perf_counter() - t0) * len(images) / 50
        sources = {"images": images, "latents": lat}
        rate = luo.RatePath(model).train()
        main_p, aux_p = split_parameters(rate, luo.hyper_parameters(model))
        opt, aux = torch.optim.Adam(main_p, lr=cfg.lr), torch.optim.Adam(aux_p, lr=cfg.aux_lr)
        for p in model.g_a.parameters():
            p.requires_grad_(False)
        times, fp32 = {k: [] for k in sources}, Loop.from_name("fp32")
        for r in range(args.repeats + 1):  # the first round warms up
            for k, data in sources.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    _step(rate, data.batch(cfg.batch, cfg.crop), opt, aux, main_p, cfg, (), fp32, 0)
                if r:
                    times[k].append((time.perf_counter() - t) / args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in times.items():
            print(f"{arch:22s} {k:8s}: {med[k]:.3f} s/step  ({', '.join(f'{t:.3f}' for t in v)})")
        print(f"{arch:22s} images / latents = {med['images'] / med['latents']:.2f}x; computing the latents of "
              f"all {len(images)} images and their mirrors once ≈ {pool_s:.0f} s")
        results[arch] = {"s_per_step": med, "runs": times, "ratio": med["images"] / med["latents"], "pool_s": pool_s}
    return results


if __name__ == "__main__":
    main()
