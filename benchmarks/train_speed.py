"""Training throughput on this CPU: plain fp32 eager CompressAI and the project's loop under every
candidate precision (fp32, fp32 + channels_last, bf16 autocast + channels_last; cheng2020 without
channels_last), measured in one run, interleaved, and the loop ``precision="auto"`` picks here.

    python benchmarks/train_speed.py [--arch bmshj2018-hyperprior] [--steps 30] [--repeats 2] [--scale cpu]

Prints the CPU, seconds per step of each loop (median of the repeats, and each repeat) and the
ratio of plain fp32 to the auto-chosen loop (``lic.train.throughput``; the baselines chapter runs
the same measurement). Batches of 8 x 128².
"""
from __future__ import annotations

import argparse
from functools import partial

from lic import data as lic_data
from lic.scales import get_scale
from lic.train import throughput
from lic.zoo import build_for


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scale", default="cpu")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    r = throughput(partial(build_for, args.arch, scale), lic_data.train_set(scale), steps=args.steps,
                   repeats=args.repeats)
    print(f"cpu {r['cpu']}  threads {r['threads']}")
    print(f"arch {args.arch}  widths {scale.widths(args.arch)}  batch {r['batch']}x{r['crop']}²  "
          f"{r['steps']} steps x {r['repeats']} repeats, interleaved")
    for row in r["loops"]:
        runs = ", ".join(f"{t:.3f}" for t in row["runs"])
        print(f"{row['loop']:24s}: {row['s_per_step']:.3f} s/step  ({runs}){'  <- auto' if row['auto'] else ''}")
    print(f"auto picks {r['auto']} ({r['auto_how']}); plain fp32 / auto = {r['ratio']:.2f}x")
    return r


if __name__ == "__main__":
    main()
