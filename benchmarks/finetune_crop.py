"""Which crop should the zoo's fine-tunes use? Fine-tune the zoo's middle-λ model to another λ
twice with the same seed, steps and pixels per batch: on 128² crops (batch 8) and on the 256²
crops the middle model finished on (batch 2). Evaluate both on the test set with real bitstreams.

    python benchmarks/finetune_crop.py [--arch bmshj2018-hyperprior] [--lmbda 0.025] [--scale cpu]

Prints PSNR, bpp and R + λ·255²·MSE of each and their ratio. Runs resume from
``runs/<scale>/bench-finetune-crop/``.
"""
from __future__ import annotations

import argparse
import time

from lic import data as lic_data
from lic import zoo
from lic.evaluate import evaluate
from lic.scales import get_scale
from lic.train import TrainConfig, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--lmbda", type=float, default=0.025)
    ap.add_argument("--steps", type=int, default=None, help="default: the scale's fine-tune steps")
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--data", default=None, help="data root (default: $LIC_DATA)")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    steps = args.steps or scale.finetune_steps
    large = scale.late_crop or 2 * scale.crop
    start = zoo.get(args.arch, zoo.middle_lambda(scale), scale, root=args.data)
    data, images = lic_data.train_set(scale, args.data), lic_data.test_images(scale, args.data)
    run = zoo.runs_dir(scale) / "bench-finetune-crop" / zoo.fingerprint(start)
    results = {}
    for crop in (scale.crop, large):
        batch = max(1, round(scale.batch * (scale.crop / crop) ** 2))
        model = zoo.build_for(args.arch, scale)
        model.load_state_dict(start.state_dict())
        cfg = TrainConfig.from_scale(scale, args.lmbda, steps=steps, crop=crop, batch=batch,
                                     late_crop=0, late_frac=0.0, eval_every=0)
        t0 = time.time()
        train(model, data, cfg, checkpoint=run / f"{args.arch}-{args.lmbda:.4f}-{crop}.state.pt",
              desc=f"{crop}² x {batch}")
        res = evaluate(model, images, real=True, timed=0, desc="evaluate")["mean"]
        mse = 10 ** (-res["psnr"] / 10)  # of [0, 1] images, from the mean PSNR
        results[crop] = {**res, "rd": res["bpp"] + args.lmbda * 255 ** 2 * mse,
                         "batch": batch, "seconds": time.time() - t0}
    print(f"arch {args.arch}  λ={args.lmbda}  {steps} steps from {zoo.model_name(args.arch, zoo.middle_lambda(scale))}"
          f"  test images {len(images)}")
    for crop, r in results.items():
        print(f"{crop:4d}² x {r['batch']}: PSNR {r['psnr']:.3f} dB  bpp {r['bpp']:.4f}  R+λD {r['rd']:.4f}")
    a, b = results[scale.crop], results[large]
    print(f"R+λD ratio {large}²/{scale.crop}²: {b['rd'] / a['rd']:.4f}  "
          f"(PSNR {b['psnr'] - a['psnr']:+.3f} dB, bpp {100 * (b['bpp'] / a['bpp'] - 1):+.2f} %)")
    return results


if __name__ == "__main__":
    main()
