"""Does bf16 autocast + channels_last cost quality at equal steps? Train the same architecture from
scratch twice, same seed, data order, steps and schedule: once in plain fp32 (eager, default memory
format) and once as the zoo trains (bf16 autocast + channels_last, entropy models in fp32). Evaluate
both on the test set with real bitstreams.

    python benchmarks/bf16_quality.py [--arch bmshj2018-hyperprior] [--lmbda 0.013] [--steps 4000] [--scale cpu]

Prints PSNR, bpp, R + λ·255²·MSE and seconds per step of each, and their differences. Runs resume
from ``runs/<scale>/bench-bf16-quality/``; the numbers go to
``data/results/bench_bf16_quality/<scale>.json``, which the baselines chapter quotes.
"""
from __future__ import annotations

import argparse

import torch

from lic import data as lic_data
from lic import report
from lic import zoo
from lic.evaluate import evaluate
from lic.scales import get_scale
from lic.train import TrainConfig, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--lmbda", type=float, default=0.013)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--data", default=None, help="data root (default: $LIC_DATA)")
    ap.add_argument("--results", default=None, help="results root (default: data/results)")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    data, images = lic_data.train_set(scale, args.data), lic_data.test_images(scale, args.data)
    run = zoo.runs_dir(scale) / "bench-bf16-quality"
    results = {}
    for name, fast in (("fp32 eager", False), ("bf16 + channels_last", True)):
        torch.manual_seed(0)  # both start from the same weights
        model = zoo.build_for(args.arch, scale)
        cfg = TrainConfig.from_scale(scale, args.lmbda, steps=args.steps, late_crop=0, late_frac=0.0,
                                     eval_every=0, precision="bf16" if fast else "fp32", channels_last=fast)
        state = run / f"{args.arch}-{args.lmbda:.4f}-{args.steps}-{'bf16' if fast else 'fp32'}.state.pt"
        train(model, data, cfg, checkpoint=state, desc=name)
        seconds = torch.load(state, weights_only=False)["elapsed"]  # training time, kept across resumes
        res = evaluate(model, images, real=True, timed=0, desc="evaluate")["mean"]
        mse = 10 ** (-res["psnr"] / 10)  # of [0, 1] images, from the mean PSNR
        results[name] = {**res, "rd": res["bpp"] + args.lmbda * 255 ** 2 * mse,
                         "s_per_step": seconds / args.steps}
    print(f"arch {args.arch}  widths {scale.widths(args.arch)}  λ={args.lmbda}  {args.steps} steps from scratch"
          f"  test images {len(images)}")
    for name, r in results.items():
        print(f"{name:22s}: PSNR {r['psnr']:.3f} dB  bpp {r['bpp']:.4f}  R+λD {r['rd']:.4f}  "
              f"{r['s_per_step']:.3f} s/step")
    a, b = results["fp32 eager"], results["bf16 + channels_last"]
    print(f"bf16 vs fp32: PSNR {b['psnr'] - a['psnr']:+.3f} dB, bpp {100 * (b['bpp'] / a['bpp'] - 1):+.2f} %, "
          f"R+λD ratio {b['rd'] / a['rd']:.4f}")
    path = report.save_results("bench_bf16_quality", scale.name, {
        "arch": args.arch, "widths": scale.widths(args.arch), "lambda": args.lmbda, "steps": args.steps,
        "test_images": len(images), "runs": results}, root=args.results)
    print("wrote", path)
    return results


if __name__ == "__main__":
    main()
