"""What tiling costs on this CPU: the slimmable supernet's g_a and g_s run densely and through the
tiles of a capacity map (lic.models.spatial), measured in one run, interleaved.

    python benchmarks/tiles.py [--blocks 64,128] [--repeats 5] [--scale cpu]

Prints, per block size, the median time of each variant (and its spread over the repeats) and the
ratio to the dense C5 transform: full map (all C5) and uniform C3 through the tiles against the
same transforms run densely, and a random mixed map against its MAC share. Untrained weights at
the scale's widths (time does not depend on the values); a Kodak-size 768x512 picture.
"""
from __future__ import annotations

import argparse
import time

import torch
from compressai.models import MeanScaleHyperprior

from lic.models.slimmable import from_mean_scale
from lic.scales import get_scale


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", default="64,128")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=768)
    args = ap.parse_args(argv)
    S = get_scale(args.scale)
    torch.manual_seed(0)
    net = from_mean_scale(MeanScaleHyperprior(S.N, S.M)).eval()
    x = torch.rand(1, 3, args.height, args.width)
    with torch.no_grad():
        y = net.g_a(x)
    variants = {}
    for b in (int(v) for v in args.blocks.split(",")):
        grid = (1, args.height // b, args.width // b)
        mixed = torch.randint(0, net.n_capacities, grid, generator=torch.Generator().manual_seed(1))

        def tiled(tcm, b=b):
            def run():
                keep, net.block = net.block, b
                try:
                    net.analysis(x, tcm=tcm)
                    net.synthesis(y, tcm=tcm)
                finally:
                    net.block = keep
            return run
        variants[f"block {b}: C5 tiled"] = tiled(torch.full(grid, 4))
        variants[f"block {b}: C3 tiled"] = tiled(torch.full(grid, 2))
        variants[f"block {b}: random mixed map"] = tiled(mixed)
    for c in (4, 2):
        variants[f"C{c + 1} dense"] = lambda c=c: (net.g_a(x, c), net.g_s(y, c))
    times = {k: [] for k in variants}
    with torch.no_grad():
        for f in variants.values():
            f()
        for _ in range(args.repeats):
            for k, f in variants.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"g_a + g_s at N={S.N}, M={S.M}, {args.height}x{args.width}, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repeats")
    for k, v in med.items():
        spread = 100 * (max(times[k]) - min(times[k])) / v
        print(f"{k:32s} {1e3 * v:8.1f} ms  (spread {spread:4.0f} %)  vs C5 dense {v / med['C5 dense']:.2f}x")
    return med


if __name__ == "__main__":
    main()
