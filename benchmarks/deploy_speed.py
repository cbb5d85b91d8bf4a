"""Decode time of the committed zoo models under eager PyTorch and the deployment runtimes, in one
interleaved run, with each decode's anatomy (where the time goes, stage by stage).

    python benchmarks/deploy_speed.py [--arch bmshj2018-hyperprior ...] [--lmbda 0.013] [--images 4] [--repeats 5]
    python benchmarks/deploy_speed.py --int8        # also g_s in int8 (NNCF, calibrated on BSDS500 crops)
    python benchmarks/deploy_speed.py --int8 --max-drop 0.1   # and with accuracy control (validation images)

Prints the CPU, per architecture the whole decode and g_s alone for each runtime (median ms of the
repeats, spread = (max - min) / median of the per-repeat means) and the ratios to eager; then the
decode anatomy of each. Kodak images (the first --images), real bitstreams.
"""
from __future__ import annotations

import argparse

import torch

from lic import anatomy, data, deploy, zoo
from lic.evaluate import evaluate
from lic.precision import cpu_model
from lic.scales import get_scale


def variants(model, scale, int8: bool, max_drop=None) -> dict:
    out = {"eager": model, "openvino f32": deploy.deploy(model, "openvino")}
    if int8:
        crops = data.train_set(scale, seed=1).batch(64, 256)  # calibration: training crops, never Kodak
        calib = deploy.calibration_latents(model, crops)
        out["openvino, g_s int8"] = deploy.deploy(model, "openvino", int8={"g_s": calib})
        if max_drop is not None:  # accuracy control on the validation images, never Kodak
            spec = deploy.Int8(calib, deploy.validation_pairs(model, data.validation_images(scale)), max_drop)
            out[f"openvino, g_s int8 ≤{max_drop:g} dB"] = deploy.deploy(model, "openvino", int8={"g_s": spec})
    for m in out.values():
        m.update(force=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", action="append")
    ap.add_argument("--lmbda", type=float, default=0.013)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", default="", help="N128 for the wider family")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--max-drop", type=float, default=None, metavar="DB",
                    help="with --int8: also NNCF's accuracy control, at most DB dB lost on the validation images")
    args = ap.parse_args(argv)
    scale = get_scale("cpu").at_width(args.width)
    images = data.test_images(scale)[:args.images]
    print(f"cpu {cpu_model()}  threads {torch.get_num_threads()}  {len(images)} Kodak images  "
          f"{args.repeats} repeats, interleaved; {deploy.runtime_version('openvino')=}")
    for arch in args.arch or ["bmshj2018-hyperprior", "mbt2018-mean"]:
        model = zoo.get(arch, args.lmbda, scale, train_missing=False).eval()
        models = variants(model, scale, args.int8, args.max_drop)
        quality = {n: evaluate(m, images, timed=0, progress=False)["mean"] for n, m in models.items()}
        rows = anatomy.anatomy(models, images, repeats=args.repeats, desc=arch)
        total = {r["model"]: r for r in rows if r["phase"] == "decode" and r["stage"] == "total"}
        g_s = {r["model"]: r["ms"] for r in rows if r["phase"] == "decode" and r["stage"] == "g_s"}
        print(f"\n{arch} λ={args.lmbda}")
        for n in models:
            print(f"  {n:22s} decode {total[n]['ms']:7.1f} ms (spread {total[n]['spread_pct']:4.1f} %) "
                  f"{total['eager']['ms'] / total[n]['ms']:5.2f}x   g_s {g_s[n]:7.1f} ms "
                  f"{g_s['eager'] / g_s[n]:5.2f}x   PSNR {quality[n]['psnr']:.3f} dB  bpp {quality[n]['bpp']:.4f}")
        for n in models:
            print(f"  anatomy {n}: " + ", ".join(f"{s} {v:.1%}" for s, v in anatomy.shares(rows, n).items()))


if __name__ == "__main__":
    main()
