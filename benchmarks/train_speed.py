"""Training throughput of the project's loop (bf16 autocast + channels_last, entropy models fp32)
against a plain fp32 eager CompressAI loop, measured in one run on the same data.

    python benchmarks/train_speed.py [--arch bmshj2018-hyperprior] [--steps 30] [--scale cpu]

Prints seconds per step of each and their ratio (``lic.train.speedup``; the baselines chapter
runs the same measurement). Both loops take batches of 8 x 128².
"""
from __future__ import annotations

import argparse
from functools import partial

from lic import data as lic_data
from lic.scales import get_scale
from lic.train import speedup
from lic.zoo import build_for


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--scale", default="cpu")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    r = speedup(partial(build_for, args.arch, scale), lic_data.train_set(scale), steps=args.steps)
    print(f"arch {args.arch}  widths {scale.widths(args.arch)}  batch {r['batch']}x{r['crop']}²  "
          f"threads {r['threads']}")
    print(f"plain fp32 eager : {r['plain_fp32_s']:.3f} s/step")
    print(f"lic train loop   : {r['lic_s']:.3f} s/step  (bf16 autocast, channels_last={r['channels_last']})")
    print(f"speed-up         : {r['ratio']:.2f}x")
    return r


if __name__ == "__main__":
    main()
