"""Yu et al. (2023): unstructured pruning of each component of an RNN codec and of a HiFiC-style
codec, and int8 quantization (:mod:`lic.quantize`), the procedure of chapter ``04_yu``.

The two codecs are ours (:mod:`lic.models.rnn`, :mod:`lic.models.hific`), trained at the scale's
widths, since the paper's checkpoints cannot be reached. Their components are named once, in
:data:`COMPONENTS`; :func:`prune` applies ``torch.nn.utils.prune``'s L1 unstructured pruning to
every convolution and transposed convolution of the chosen components, layer by layer, and makes it
permanent.

Training, through the project's one loop (:func:`lic.train.train`):
- RNN codec: Toderici's loss (mean L1 of the residual over iterations), Adam 5e-4 as the
  reference, 64x64 crops at batch 8 (the reference: 32x32 at batch 32, the same pixels a step);
- HiFiC-style codec: a rate-distortion warm-up, R + λ·255²·MSE + k_P·(1 − MS-SSIM), then the GAN
  stage from it, + β·G with the conditional PatchGAN trained alongside (:class:`Adversarial`).
  LPIPS (the paper's perceptual term) needs backbone weights that cannot be downloaded here;
  MS-SSIM (three scales at the 128 px crops) needs none and stands in for it.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

from . import data as lic_data
from . import store
from .evaluate import evaluate, interleaved_times
from .models.hific import Discriminator, HiFiC
from .models.rnn import RNNCodec, SplitRNNCodec
from .scales import Scale, check_choice
from .train import Hook, TrainConfig, train
from .weights import fingerprint

CHAPTER = "04_yu"
CODECS = ("rnn", "hific")
# each component: the codec's submodules whose conv / transposed-conv layers it prunes
COMPONENTS = {"rnn": {"E": ("encoder", "binarizer"), "D": ("decoder",)},
              "hific": {"E": ("g_a",), "G": ("g_s",), "P": ("h_a", "h_s")}}
PAPER_RATIO = 0.3
DECODER_ONLY = "D (decoding program only)"
TARGET_ITERATIONS = 3          # 3 x 0.125 bpp: the paper's 0.375 bpp target for the RNN codec
RNN_CROP, RNN_BATCH, RNN_LR = 64, 8, 5e-4  # the reference: 32x32 crops, batch 32 (same pixels per step)
HIFIC_LMBDA = 0.0067           # a zoo λ; with the terms below it lands near HiFiC's 0.30 bpp "mi" model
PERCEPTUAL_WEIGHT = 8.73       # k_P: CompressAI's MS-SSIM λ at the quality of λ=0.0067 (q3)
GAN_WEIGHT = 0.15              # β, HiFiC's
MSSSIM_SCALES = (0.0448, 0.2856, 0.3001)  # the first three of MS-SSIM's five weights


def check_codec(codec: str) -> None:
    check_choice("codec", codec, CODECS)


def components(codec: str) -> tuple:
    check_codec(codec)
    return tuple(COMPONENTS[codec])


def combinations(codec: str) -> list:
    """Every subset of the codec's components, the unpruned model first (the paper's rows)."""
    names = components(codec)
    return [c for k in range(len(names) + 1) for c in itertools.combinations(names, k)]


def label(combo) -> str:
    return "+".join(combo) if combo else "unpruned"


def component_modules(model, codec: str, component: str) -> list:
    """[(name, layer)] of the conv / transposed-conv layers of ``component``."""
    check_codec(codec)
    spec = COMPONENTS[codec]
    if component not in spec:
        raise ValueError(f"unknown component {component!r} of the {codec} codec; valid: {', '.join(spec)}")
    out = []
    for part in spec[component]:
        for name, m in model.get_submodule(part).named_modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                out.append((f"{part}.{name}", m))
    return out


def prune(model, codec: str, combo, ratio: float = PAPER_RATIO):
    """A copy of ``model`` with ``ratio`` of each conv / deconv weight of the components in
    ``combo`` set to zero by magnitude (L1 unstructured, per layer), made permanent."""
    import copy

    from torch.nn.utils import prune as tprune

    if not 0 <= float(ratio) < 1:
        raise ValueError(f"pruning ratio {ratio!r} must be in [0, 1)")
    pruned = copy.deepcopy(model)
    for component in combo:
        for _, layer in component_modules(pruned, codec, component):
            tprune.l1_unstructured(layer, "weight", amount=float(ratio))
            tprune.remove(layer, "weight")
    pruned.update(force=True)
    return pruned.eval()


def prune_decoder_only(model: RNNCodec, ratio: float = PAPER_RATIO) -> SplitRNNCodec:
    """The RNN codec with D pruned in the decoding program only: the encoder keeps the unpruned
    decoder it computes its residuals with (the reference ships encoder and decoder as separate
    scripts and checkpoints), so the bits are the unpruned codec's and the decoder drifts."""
    return SplitRNNCodec(model, prune(model, "rnn", ("D",), ratio)).eval()


def sparsity(model, codec: str) -> dict:
    """{component: fraction of exactly-zero conv / deconv weights}."""
    out = {}
    for c in components(codec):
        layers = component_modules(model, codec, c)
        zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
        out[c] = zeros / max(1, sum(m.weight.numel() for _, m in layers))
    return out


# ---------------------------------------------------------------------------------------------
# the two codecs at a scale: build, train, store


def build(codec: str, scale: Scale):
    check_codec(codec)
    if codec == "rnn":
        return RNNCodec(scale.rnn_width, scale.rnn_iterations)
    return HiFiC(scale.hific_width)


def _rebuild(codec, width, iterations=None):
    return RNNCodec(width, iterations) if codec == "rnn" else HiFiC(width)


def spec(codec: str, scale: Scale) -> dict:
    if codec == "rnn":
        return {"codec": codec, "width": scale.rnn_width, "iterations": scale.rnn_iterations}
    return {"codec": codec, "width": scale.hific_width}


def models_dir(scale: Scale) -> Path:
    return store.models_dir(CHAPTER, scale)


def train_command(codec: str, scale: Scale) -> str:
    return f"python -m lic.yu train --scale {scale.name} --codec {codec}"


class Perceptual(Hook):
    """k·(1 − MS-SSIM) of the training crops (the first three scales, 7x7 windows: crops of 128 px
    are too small for five scales of 11x11), the stand-in for HiFiC's LPIPS."""

    def __init__(self, weight=PERCEPTUAL_WEIGHT):
        self.weight = weight

    def loss(self, model, out, x):
        x_hat = out["x_hat"].float().clamp(0, 1)
        side = min(x.shape[-2:])
        win = next(w for w in (7, 5, 3) if (w - 1) * 16 < side)  # pytorch_msssim's size rule
        # fp32 whatever the loop: under bf16 autocast its Gaussian filtering loses the variances'
        # precision and the score of real crops (not of noise) overflows to -inf at step 1
        with torch.autocast("cpu", enabled=False):
            score = ms_ssim(x_hat, x.float(), data_range=1.0, win_size=win, weights=list(MSSSIM_SCALES))
        return {"perceptual": self.weight * (1 - score)}


class Adversarial(Hook):
    """HiFiC's GAN stage: adds β·G (non-saturating, softplus(−D(x̂, ŷ))) to the codec's loss and,
    after each codec step, trains the conditional discriminator one step on the same batch
    (softplus(−D(x, ŷ)) + softplus(D(x̂, ŷ)), ŷ and x̂ detached). The discriminator and its
    optimizer are this hook's state, so a resumed run continues both."""

    def __init__(self, latent: int, width: float, beta=GAN_WEIGHT, lr=1e-4):
        self.beta = beta
        self.disc = Discriminator(latent, width)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.999))
        self._batch = None

    def loss(self, model, out, x):
        y_hat = out["y_hat"].float()
        x_hat = out["x_hat"].float()
        self._batch = (x.float().detach(), x_hat.detach(), y_hat.detach())
        for p in self.disc.parameters():
            p.requires_grad_(False)
        g = F.softplus(-self.disc(x_hat, y_hat)).mean()
        for p in self.disc.parameters():
            p.requires_grad_(True)
        return {"gan": self.beta * g}

    def after_step(self, model, step):
        x, x_hat, y_hat = self._batch
        with torch.autocast("cpu", enabled=False):
            d = F.softplus(-self.disc(x, y_hat)).mean() + F.softplus(self.disc(x_hat, y_hat)).mean()
        self.opt.zero_grad(set_to_none=True)
        d.backward()
        self.opt.step()
        self._batch = None

    def state_dict(self):
        return {"disc": self.disc.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])


def curve_eval(codec: str, scale: Scale, root=None, limit=4):
    """Learning-curve evaluation: forward PSNR (and estimated bpp) on the first test images, the
    RNN codec at the paper's target iterations."""
    images = lic_data.test_images(scale, root)[:limit]

    def run(model):
        keep = getattr(model, "iterations", None)
        if codec == "rnn":
            model.iterations = min(TARGET_ITERATIONS, keep)
        res = evaluate(model, images, real=False, progress=False)["mean"]
        if codec == "rnn":
            model.iterations = keep
        return {"test_psnr": res["psnr"], "test_bpp": res["bpp"]}
    return run


def _stages(codec: str, scale: Scale) -> list:
    """[(stage name, steps, TrainConfig changes)] of the codec's training (stages of 0 steps are
    skipped)."""
    if codec == "rnn":
        return [("rnn", scale.rnn_steps, dict(batch=RNN_BATCH, crop=RNN_CROP, lr=RNN_LR, lr_final=RNN_LR / 10,
                                             late_crop=0, late_frac=0.0))]
    # HiFiC's own Adam rate, 1e-4, from the start: the zoo's 5e-4 collapses the nine-block generator
    # to a near-zero-rate mean image (cpu, 8000 steps: train MSE stuck at 0.04-0.07, Kodak 14.8 dB)
    common = dict(late_crop=0, late_frac=0.0, lr=1e-4, lr_final=1e-5)
    # Then crops twice as large: on 128 px crops the latent is 8x8 and the hyper-latent 2x2, every
    # position a border one, and the hyperprior learned scales that hold only there (our first
    # model's bpp grew with the image: its manifest entry's init_rate_by_size)
    late = dict(common, crop=2 * scale.crop, batch=max(1, scale.batch // 2))
    return [("rd", scale.hific_steps, common), ("gan", scale.hific_gan_steps, common),
            ("rd-late", scale.hific_late_steps, late), ("gan-late", scale.hific_late_gan_steps, late)]


def train_codec(codec: str, scale: Scale, root=None, progress=True, precision=None, seed=0, init=None):
    """Train (or resume) the codec from scratch at the scale's widths, every stage resumable;
    store it (fp16 where within the zoo's tolerance) and add it to the chapter's manifest.

    ``init`` = (weights file, stage): start from a stored model that is the output of the stages
    up to and including ``stage`` (trained by this code earlier), and run only the later ones; the
    manifest names the file, its sha256 and its training time (``init_seconds``, from its own
    manifest entry when given as a third item)."""
    from .zoo import FP16_TOLERANCE_DB, fp16_check, runs_dir

    check_codec(codec)
    stages = _stages(codec, scale)
    torch.manual_seed(seed)
    if init:
        names = [name for name, _, _ in stages]
        check_choice("stage of --init", init[1], names)
        init_sha = lic_data.sha256(init[0])
        model = load(init[0]).float()
        done = names[:names.index(init[1]) + 1]
        init_sizes = rate_by_size(model.eval(), lic_data.test_images(scale, root)[:SIZE_IMAGES]) if codec == "hific" else None
        model.train()
        start = f"init-{init_sha[:12]}"
    else:
        model, done = build(codec, scale), []
        start = fingerprint(model)
    run = runs_dir(scale) / CHAPTER / f"{codec}-{start}"  # a new width, seed or start never resumes an old state
    data = lic_data.train_set(scale, root, seed=seed)
    curves, seconds, loops = {}, float(init[2]) if init and len(init) > 2 else 0.0, []
    for stage, steps, changes in stages:
        if stage in done or not steps:
            continue
        cfg = TrainConfig.from_scale(scale, HIFIC_LMBDA, steps=steps, seed=seed, precision=precision, **changes)
        hooks = [] if codec == "rnn" else [Perceptual()]
        if stage.startswith("gan"):
            hooks.append(Adversarial(model.M, scale.hific_width))
        state = run / f"{stage}.state.pt"
        curve = train(model, data, cfg, checkpoint=state, hooks=hooks, log=run / f"{stage}.curve.csv",
                      evaluate=curve_eval(codec, scale, root) if cfg.eval_every else None,
                      progress=progress, desc=f"{codec} {stage}")
        curves[stage] = curve
        seconds += curve[-1]["elapsed_s"] if curve else 0.0
        loops += torch.load(state, map_location="cpu", weights_only=False).get("loops", [])
    images = lic_data.test_images(scale, root)
    name = codec
    path = models_dir(scale) / f"{name}.pt"
    meta = {"codec": codec, "spec": spec(codec, scale), "scale": scale.name,
            "steps": {stage: steps for stage, steps, _ in stages if steps},
            "train_seconds": round(seconds, 1), "loops": [lp["loop"] for lp in loops],
            "cpu": loops[-1]["cpu"] if loops else "", "start": "from scratch", "start_fingerprint": start}
    if init:
        meta["init_rate_by_size"] = init_sizes
        meta["start"] = (f"{Path(init[0]).name} (sha256 {init_sha}), this code's stages {', '.join(done)} "
                         "from scratch in an earlier run; train_seconds includes theirs")
    def at_target(m):  # both sides of the fp16 check at the paper's rate (a loaded RNN codec
        if codec == "rnn":  # codes its trained iterations)
            m.iterations = TARGET_ITERATIONS
        return m
    ref = evaluate(at_target(model), images, real=True, timed=0, progress=progress, desc=f"{name} fp32")["mean"]
    sha = store.save_model(model, path, spec(codec, scale), meta, half=True)
    res = evaluate(at_target(load(path, sha)), images, real=True, timed=0, progress=progress,
                   desc=f"{name} fp16")["mean"]
    meta["fp16_check"] = fp16_check(ref, res, FP16_TOLERANCE_DB)
    half = meta["fp16_check"]["within_tolerance"]
    meta["weights"] = "fp16 (entropy models fp32)" if half else "fp32"
    sha = store.save_model(model, path, spec(codec, scale), meta, half=half)
    manifest = store.read_manifest(CHAPTER, scale)
    manifest[name] = {**meta, "file": path.name, "sha256": sha,
                      "files": [f.name for f in store.model_files(path)],
                      "bytes": sum(f.stat().st_size for f in store.model_files(path))}
    store.write_manifest(CHAPTER, scale, manifest)
    return load(path, sha)


def load(path, sha256=None, hint=""):
    return store.load_model(path, _rebuild, sha256, hint)


def get(codec: str, scale: Scale, root=None, train_missing=True, progress=True, precision=None):
    """The trained codec: from the chapter's manifest, or trained now (resumable). The RNN codec
    comes set to the paper's target rate (:data:`TARGET_ITERATIONS`)."""
    check_codec(codec)
    entry = store.read_manifest(CHAPTER, scale).get(codec)
    if entry:
        model = load(models_dir(scale) / entry["file"], entry["sha256"], f"Retrain it with `{train_command(codec, scale)}`.")
    elif not train_missing:
        raise store.StoredModelError(f"the {codec} codec is not trained at scale {scale.name} ({models_dir(scale)}); "
                                     f"train it with `{train_command(codec, scale)}`")
    else:
        model = train_codec(codec, scale, root=root, progress=progress, precision=precision)
    if codec == "rnn":
        model.iterations = TARGET_ITERATIONS
    return model.eval()


# ---------------------------------------------------------------------------------------------
# measurement: the paper's tables, sweeps, storage, quantization


def _row(res: dict) -> dict:
    """Quality and real compressed size of one evaluated model (means over the images)."""
    m, imgs = res["mean"], res["images"]
    return {"psnr": m["psnr"], "ssim": m["ssim"], "ms_ssim": m["ms_ssim"], "bpp": m["bpp"],
            "bytes": sum(r["bpp"] * r["height"] * r["width"] / 8 for r in imgs) / len(imgs)}


def pruned_table(codec: str, model, images, ratio=PAPER_RATIO, combos=None, repeats=3, timed=None,
                 progress=True) -> list:
    """The paper's Table 1 (RNN) or 2 (HiFiC): every combination of pruned components at ``ratio``,
    with SSIM, MS-SSIM, PSNR and mean compressed bytes (real bitstreams) on ``images``, and the
    total encode + decode time of all the images, every variant timed in one interleaved run on
    the first ``timed`` images (the total is their mean time per image times the image count)."""
    combos = combinations(codec) if combos is None else combos
    variants = {label(c): prune(model, codec, c, ratio) for c in combos}
    if codec == "rnn":  # beside the paper's rows: D pruned in the decoding program only
        variants[DECODER_ONLY] = prune_decoder_only(model, ratio)
        combos = list(combos) + [("D",)]
    rows = []
    for (name, m), combo in zip(variants.items(), combos):
        res = evaluate(m, images, real=True, timed=0, progress=progress, desc=f"{codec} {name}")
        rows.append({"codec": codec, "pruned": name, **{f"{c}PR": ratio if c in combo else 0.0 for c in components(codec)},
                     **_row(res)})
    timed = len(images) if timed is None else min(timed, len(images))
    times = interleaved_times(variants, images[:timed], repeats=repeats, progress=progress, desc=f"{codec} timing")
    for row in rows:
        t = times[row["pruned"]]
        row.update(total_s=(t["encode_ms"] + t["decode_ms"]) * len(images) / 1e3, encode_ms=t["encode_ms"],
                   decode_ms=t["decode_ms"], spread_pct=max(t["encode_spread_pct"], t["decode_spread_pct"]),
                   timed_images=timed, repeats=repeats)
    return rows


def ratio_sweep(codec: str, model, images, ratios, progress=True) -> list:
    """Quality and compressed size when one component at a time is pruned at each ratio."""
    rows = []
    base = _row(evaluate(model, images, real=True, timed=0, progress=False))
    for c in components(codec):
        rows.append({"codec": codec, "component": c, "ratio": 0.0, **base})
        for r in ratios:
            res = evaluate(prune(model, codec, (c,), r), images, real=True, timed=0, progress=progress,
                           desc=f"{codec} {c} {r:g}")
            rows.append({"codec": codec, "component": c, "ratio": float(r), **_row(res)})
    return rows


def finetune_pruned(codec: str, model, combo, ratio, scale: Scale, root=None, progress=True, precision=None,
                    seed=0):
    """Prune ``combo`` at ``ratio`` and fine-tune the whole codec for ``scale.prune_finetune_steps``
    with the pruned weights held at zero (``torch.nn.utils.prune``'s masks stay on during training
    and are made permanent after); the codec's own loss (the HiFiC-style codec without the GAN term,
    its discriminator is not kept). Resumable; returns the fine-tuned codec."""
    import copy

    from torch.nn.utils import prune as tprune

    from .zoo import runs_dir

    if not 0 <= float(ratio) < 1:
        raise ValueError(f"pruning ratio {ratio!r} must be in [0, 1)")
    net = copy.deepcopy(model).train()
    layers = [m for c in combo for _, m in component_modules(net, codec, c)]
    for layer in layers:
        tprune.l1_unstructured(layer, "weight", amount=float(ratio))
    name = f"{codec}-{label(combo)}-{ratio:g}"
    run = runs_dir(scale) / CHAPTER / "finetune" / f"{fingerprint(model)}-{name}"
    stage = _stages(codec, scale)[0][2]
    cfg = TrainConfig.from_scale(scale, HIFIC_LMBDA, steps=scale.prune_finetune_steps, seed=seed, precision=precision,
                                 **{**stage, "lr": stage.get("lr", scale.lr) / 5, "lr_final": stage.get("lr", scale.lr) / 50})
    keep = getattr(net, "iterations", None)
    if codec == "rnn":
        net.iterations = scale.rnn_iterations
    train(net, lic_data.train_set(scale, root, seed=seed), cfg, checkpoint=run / "state.pt",
          hooks=[] if codec == "rnn" else [Perceptual()], progress=progress, desc=f"fine-tune {name}")
    for layer in layers:
        tprune.remove(layer, "weight")
    if codec == "rnn":
        net.iterations = keep
    net.update(force=True)
    return net.eval()


def storage(model, codec: str) -> dict:
    """What unstructured sparsity buys in bytes: the dense state dict (fp32, fp16) and a sparse
    format for the conv / deconv weights (a 1-bit mask plus the non-zero values in fp16, zlib'd;
    everything else fp16 zlib'd), beside the dense fp16 state dict zlib'd alone."""
    import zlib

    import numpy as np

    from .evaluate import serialized_bytes

    convs = {f"{n}.weight" for c in components(codec) for n, _ in component_modules(model, codec, c)}
    sparse = dense = 0
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            continue
        a = v.detach().half().numpy()
        dense += len(zlib.compress(a.tobytes(), 6))
        if k in convs:
            nz = a != 0
            sparse += len(zlib.compress(np.packbits(nz.ravel()).tobytes() + a[nz].tobytes(), 6))
        else:
            sparse += len(zlib.compress(a.tobytes(), 6))
    return {"fp32_bytes": serialized_bytes(model), "fp16_bytes": serialized_bytes(model, half=True),
            "fp16_zlib_bytes": dense, "sparse_fp16_zlib_bytes": sparse}


def calibration(scale: Scale, root=None, batches=8, batch=4, crop=256, seed=1) -> list:
    """Observer calibration batches: training crops (BSDS500 at ``cpu``), never test images."""
    data = lic_data.train_set(scale, root, seed=seed)
    crop = min(crop, scale.crop * 2)
    return [data.batch(batch, crop) for _ in range(batches)]


QUANT_PARTS = {"rnn": ("encoder", "decoder"), "hific": ("g_a", "g_s", "h_a", "h_s"),
               "compressai": ("g_a", "g_s", "h_a", "h_s")}


def int8(model, kind: str, batches, latent_float=False):
    """FX int8 (x86) of the parts :data:`QUANT_PARTS` names for ``kind`` ("rnn", "hific" or
    "compressai"); GDN, ChannelNorm, the binarizer and the entropy models stay float, and with
    ``latent_float`` the two layers touching the latent too (:func:`lic.quantize.latent_layers`;
    not for the RNN codec, whose latent is its ±1 bits)."""
    from .quantize import fx_int8, latent_layers

    check_choice("kind", kind, tuple(QUANT_PARTS))
    floats = latent_layers(model) if latent_float and kind != "rnn" else ()
    q = fx_int8(model, QUANT_PARTS[kind], batches, float_layers=floats)
    if kind == "rnn":
        q.iterations = model.iterations
    return q


def ao_rows(models: list, batches, images, timed: int, repeats: int, sweep_images) -> tuple:
    """(rows, curves): each (kind, name, float model) in torch.ao FX int8, all layers and (not for
    the RNN codec, whose latent is its ±1 bits) the latent layers float: quality and rate on
    ``images``, storage, encode/decode speed-up against float in one interleaved run on the first
    ``timed``, and the thread check; for the RNN codec, its iteration curves float and int8."""
    from .evaluate import serialized_bytes

    rows, curves = [], {}
    for kind, name, model in models:
        variants = {"int8": int8(model, kind, batches)}
        if kind != "rnn":
            variants["int8, latent layers float"] = int8(model, kind, batches, latent_float=True)
        t = interleaved_times({"float": model, **variants}, images[:timed], repeats=repeats, progress=False)
        f = quality(model, images)
        for vname, q in variants.items():
            i8 = quality(q, images)
            rows.append({"kind": kind, "model": name, "variant": vname, "psnr_float": f["psnr"], "psnr_int8": i8["psnr"],
                         "bpp_float": f["bpp"], "bpp_int8": i8["bpp"], "MB float": serialized_bytes(model) / 1e6,
                         "MB int8": serialized_bytes(q) / 1e6,
                         "encode speed-up": t["float"]["encode_ms"] / t[vname]["encode_ms"],
                         "decode speed-up": t["float"]["decode_ms"] / t[vname]["decode_ms"],
                         "spread (%)": max(t[k][f"{s_}_spread_pct"] for k in t for s_ in ("encode", "decode")),
                         "threads": thread_check(q, images[0][1]), "threads_float": thread_check(model, images[0][1])})
        if kind == "rnn":
            curves["rnn"] = iteration_curves(model, variants["int8"], sweep_images)
    return rows, curves


INT8_ARCH = "bmshj2018-hyperprior"  # the zoo model the chapter quantizes


def int8_point(scale: Scale, arch: str, lmbda: float, latent_float: bool, root=None):
    """The zoo model at ``lmbda``, FX int8 (an operating point's rebuild: calibration is seeded, so
    the same batches each time). ``mac_reference`` is the float model, for counting MACs (the
    counter sees float convolutions only) and parameters; it is not a submodule."""
    from . import zoo

    model = zoo.get(arch, lmbda, scale, root=root, train_missing=False)
    q = int8(model, "compressai", calibration(scale, root), latent_float=latent_float)
    q.__dict__["mac_reference"] = model
    return q


# ---------------------------------------------------------------------------------------------
# int8 that pays on this CPU: NNCF post-training quantization into OpenVINO (lic.deploy)

NNCF_ARCHS = ("bmshj2018-hyperprior", "mbt2018-mean")
NNCF_MAX_DROP_DB = 0.1   # accuracy control: at most this PSNR lost on the validation images
NNCF_CALIBRATION = 64    # training crops whose ŷ calibrate g_s
NNCF_F32 = "OpenVINO f32"
NNCF_VARIANTS = ("g_s int8 (NNCF)", f"g_s int8 (NNCF, ≤ {NNCF_MAX_DROP_DB:g} dB)")


def nncf_point(scale: Scale, arch: str, lmbda: float, accuracy_control: bool, root=None):
    """The zoo model deployed to OpenVINO with g_s in int8 by NNCF (decoder-only: the bitstream is
    the f32 encoder's): calibrated on :data:`NNCF_CALIBRATION` seeded training crops' ŷ, with
    ``accuracy_control`` NNCF's accuracy-controlled mode on the validation images (never the test
    set). An operating point's rebuild; ``mac_reference`` is the float model."""
    from . import deploy, zoo

    model = zoo.get(arch, lmbda, scale, root=root, train_missing=False)
    calib = deploy.calibration_latents(model, lic_data.train_set(scale, root, seed=1).batch(NNCF_CALIBRATION,
                                                                                         min(256, scale.crop * 2)))
    spec = (deploy.Int8(calib, deploy.validation_pairs(model, lic_data.validation_images(scale, root)), NNCF_MAX_DROP_DB)
            if accuracy_control else calib)
    q = deploy.deploy(model, "openvino", int8={"g_s": spec})
    q.update(force=True)
    q.__dict__["mac_reference"] = model
    return q.eval()


def nncf_rows(lambdas, scale: Scale, images, timed: int, archs=NNCF_ARCHS, root=None, progress=True) -> tuple:
    """(rows, BD-rates): per architecture and λ, the zoo model in eager PyTorch, in OpenVINO f32 and
    in each :data:`NNCF_VARIANTS`, quality and rate on ``images`` (real bitstreams), decode time in one
    interleaved run on the first ``timed`` (speed-ups against OpenVINO f32 and against eager); per
    architecture and variant, the BD-rate against f32 (eager) over ``lambdas``."""
    from tqdm import tqdm

    from . import deploy, zoo
    from .evaluate import bd

    rows = []
    for arch in archs:
        for lam in tqdm(lambdas, desc=f"NNCF int8 {arch}", disable=not progress, leave=False):
            f32 = zoo.get(arch, lam, scale, root=root, train_missing=False)
            models = {"eager": f32, NNCF_F32: deploy.deploy(f32, "openvino")}
            for v, ac in zip(NNCF_VARIANTS, (False, True)):
                models[v] = nncf_point(scale, arch, lam, ac, root=root)
            t = interleaved_times(models, images[:timed], repeats=scale.timing_repeats, progress=False)
            base = evaluate(f32, images, real=True, timed=0, progress=False)["mean"]
            for v in (NNCF_F32,) + NNCF_VARIANTS:
                q = evaluate(models[v], images, real=True, timed=0, progress=False)["mean"]
                rows.append({"arch": arch, "lambda": lam, "variant": v, "psnr_float": base["psnr"], "psnr": q["psnr"],
                             "bpp_float": base["bpp"], "bpp": q["bpp"], "decode_ms": t[v]["decode_ms"],
                             "decode speed-up vs OpenVINO f32": t[NNCF_F32]["decode_ms"] / t[v]["decode_ms"],
                             "decode speed-up vs eager": t["eager"]["decode_ms"] / t[v]["decode_ms"],
                             "spread (%)": max(t[k]["decode_spread_pct"] for k in t)})
    bds = []
    for arch in archs:
        for v in (NNCF_F32,) + NNCF_VARIANTS:
            g = [r for r in rows if r["arch"] == arch and r["variant"] == v]
            if len(g) >= 2:
                got = bd({"bpp": [r["bpp_float"] for r in g], "psnr": [r["psnr_float"] for r in g]},
                         {"bpp": [r["bpp"] for r in g], "psnr": [r["psnr"] for r in g]})
                bds.append({"arch": arch, "variant": v, "BD-rate vs f32 (%)": got["bd_rate"], "BD-PSNR (dB)": got["bd_psnr"],
                            "decode speed-up vs OpenVINO f32 (x)": sum(r["decode speed-up vs OpenVINO f32"] for r in g) / len(g)})
    return rows, bds


def register_points(lambdas, scale: Scale, arch: str = INT8_ARCH) -> list:
    """The chapter's operating points for 06_synthesis: the zoo model in int8 (torch.ao FX), all
    layers or the two latent layers float, at every λ; and the NNCF int8 decoders of
    :data:`NNCF_ARCHS` (:func:`nncf_point`). Rebuilt by quantizing again; nothing stored."""
    from . import points

    return points.publish(CHAPTER, scale, [
        points.register(CHAPTER, scale, method="int8 (Yu)", arch=arch, lmbda=lam,
                        variant="latent layers float" if lf else "all int8", rebuild="lic.yu:int8_point",
                        spec={"arch": arch, "lmbda": lam, "latent_float": lf})
        for lam in lambdas for lf in (False, True)]
        + [points.register(CHAPTER, scale, method="int8 g_s (NNCF)", arch=a, lmbda=lam, variant=v,
                           rebuild="lic.yu:nncf_point", spec={"arch": a, "lmbda": lam, "accuracy_control": ac})
           for a in NNCF_ARCHS for lam in lambdas for v, ac in zip(NNCF_VARIANTS, (False, True))])


@torch.no_grad()
def latent_step(model, batches) -> dict:
    """The range of y = g_a(x) over the calibration batches and the step one int8 scale gives it."""
    ys = [model.g_a(x) for x in batches]
    lo, hi = min(float(y.min()) for y in ys), max(float(y.max()) for y in ys)
    return {"y_min": lo, "y_max": hi, "int8_step": (hi - lo) / 255}


def layer_sensitivity(model, kind: str, batches, images) -> list:
    """Each convolution of the quantized parts alone in int8 (every other layer float): its PSNR
    and rate change on ``images`` (real bitstreams) — where int8 error comes from."""
    from .quantize import CONVS, fx_int8

    base = quality(model, images)
    layers = [(part, f"{part}.{n}") for part in QUANT_PARTS[kind]
              for n, m in model.get_submodule(part).named_modules() if isinstance(m, CONVS)]
    rows = []
    for part, name in layers:
        others = [n for p, n in layers if p == part and n != name]
        q = fx_int8(model, (part,), batches, float_layers=others)
        r = quality(q, images)
        rows.append({"layer": name, "delta_psnr_db": r["psnr"] - base["psnr"],
                     "delta_bpp_pct": 100 * (r["bpp"] / base["bpp"] - 1)})
    return rows


@torch.no_grad()
def thread_check(model, img8, threads=(2, 1)) -> dict:
    """Encode under ``threads[0]`` threads, decode under ``threads[1]``: is the image the one a
    decoder under the encoder's thread count gives? (The entropy parameters must be bit-identical.)"""
    from .data import pad_to, to_tensor
    from .evaluate import psnr

    keep = torch.get_num_threads()
    x, _ = pad_to(to_tensor(img8), 64, 64)
    try:
        torch.set_num_threads(threads[0])
        model.update(force=True)
        enc = model.compress(x)
        same = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        torch.set_num_threads(threads[1])
        other = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    finally:
        torch.set_num_threads(keep)
    diff = float((same - other).abs().max())
    between = psnr(same.clamp(0, 1), other.clamp(0, 1))
    # a wrong entropy parameter derails the range decoder: a corrupted image, far below 50 dB
    return {"encode_threads": threads[0], "decode_threads": threads[1], "max_abs_diff": diff,
            "identical": diff == 0.0, "psnr_between_db": between, "decodes": between >= 50}


@torch.no_grad()
def eager_story(rnn, hific, batches, img8) -> dict:
    """Eager static int8 as the paper ran it, and why it fails: the RNN codec with observers that
    saw no data (the decoded residual of every iteration, and how much of it is exactly zero) and
    calibrated; the HiFiC-style codec under x86's default (per-channel) weights, and per-tensor."""
    from .data import pad_to, to_tensor
    from .evaluate import psnr
    from .quantize import eager_static_int8

    x, _ = pad_to(to_tensor(img8), 64, 64)
    out = {}
    for name, cal in (("uncalibrated", []), ("calibrated", batches)):
        q = eager_static_int8(rnn, QUANT_PARTS["rnn"], cal)
        x_hat = q(x)["x_hat"]
        out[f"rnn_{name}"] = {"psnr": psnr(x_hat.clamp(0, 1), x), "residual_zero_fraction":
                              float(((x_hat - 0.5) == 0).float().mean()), "output_unique": int(x_hat.unique().numel())}
    try:
        eager_static_int8(hific, QUANT_PARTS["hific"], batches[:1])
        out["hific_default"] = {"error": ""}
    except Exception as err:  # noqa: BLE001 - the failure is the finding
        out["hific_default"] = {"error": f"{type(err).__name__}: {err}"}
    q = eager_static_int8(hific, QUANT_PARTS["hific"], batches, transposed="per-tensor")
    out["hific_per_tensor"] = {"psnr": psnr(q(x)["x_hat"].clamp(0, 1), x),
                               "psnr_float": psnr(hific(x)["x_hat"].clamp(0, 1), x)}
    return out


def read_manifest(scale: Scale) -> dict:
    return store.read_manifest(CHAPTER, scale)


def quality(model, images) -> dict:
    """Mean PSNR, SSIM, MS-SSIM, bpp and compressed bytes on ``images`` (real bitstreams)."""
    return _row(evaluate(model, images, real=True, timed=0, progress=False))


SIZE_IMAGES = 6                # test images of :func:`rate_by_size` checks


def rate_by_size(model, images, sizes=(128, 256)) -> list:
    """[{size, psnr, bpp}]: the codec on centre crops of ``images`` of each side in ``sizes`` and
    on the whole images (size "whole"), real bitstreams. A codec trained only on small crops can
    spend bits per pixel that grow with the image (its hyperprior's scales fit border positions)."""
    rows = []
    for size in (*sizes, None):
        crops = images if size is None else [(n, lic_data.center_crop(im, (size, size))) for n, im in images]
        res = evaluate(model, crops, real=True, timed=0, progress=False, msssim=False)["mean"]
        rows.append({"size": "whole" if size is None else f"{size} px", "psnr": res["psnr"], "bpp": res["bpp"]})
    return rows


@torch.no_grad()
def reconstruct(model, img8):
    """The decoded HxWx3 uint8 image (real bitstream)."""
    import numpy as np

    from .data import crop_back, pad_to, to_tensor

    x, size = pad_to(to_tensor(img8), 64, 64)
    model.update(force=True)
    enc = model.compress(x)
    x_hat = crop_back(model.decompress(enc["strings"], enc["shape"])["x_hat"], size).clamp(0, 1)
    return (x_hat[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def tone_shift(model, images, ratio=PAPER_RATIO) -> dict:
    """{R, G, B}: mean 8-bit level of each channel of the HiFiC-style codec's decoded images with
    G pruned at ``ratio``, minus the unpruned codec's (mean over ``images``)."""
    pruned = prune(model, "hific", ("G",), ratio)
    shift = sum(reconstruct(pruned, im).reshape(-1, 3).mean(0) - reconstruct(model, im).reshape(-1, 3).mean(0)
                for _, im in images) / len(images)
    return dict(zip("RGB", map(float, shift)))


def break_points(sweep, drop_db=0.5) -> dict:
    """{(codec, component): first swept ratio whose PSNR is more than ``drop_db`` below the unpruned
    codec's, or None}."""
    out = {}
    for (codec, comp), d in sweep.groupby(["codec", "component"], sort=False):
        d = d.sort_values("ratio")
        base = d[d.ratio == 0].psnr.iloc[0]
        hit = d[(d.ratio > 0) & (d.psnr < base - drop_db)]
        out[codec, comp] = None if hit.empty else float(hit.ratio.iloc[0])
    return out


def iteration_curves(model, quantized, images) -> dict:
    """{"float": curve, "int8": curve}: the RNN codec's rate–distortion points at 1 … its trained
    iterations (real bitstreams), for BD-rate between the two."""
    out = {}
    for name, m in (("float", model), ("int8", quantized)):
        keep, pts = m.iterations, {"bpp": [], "psnr": []}
        for k in range(1, model.trained_iterations + 1):
            m.iterations = k
            r = quality(m, images)
            pts["bpp"].append(r["bpp"])
            pts["psnr"].append(r["psnr"])
        m.iterations = keep
        out[name] = pts
    return out


def _n(v) -> str:
    """A paper's number as printed (no trailing zeros)."""
    return f"{float(v):.4f}".rstrip("0").rstrip(".")


def claims_for(t1, t2, eager, dynamic_touched, fx_rows, paper1, paper2) -> list:
    """The chapter's claims (:mod:`lic.claims`) from Table 1 and 2 (:func:`pruned_table` rows), the
    eager-mode story (:func:`eager_story`), what dynamic quantization touched ({codec: [names]}) and
    the FX int8 rows (``kind``: "rnn", "hific" or "compressai"; ``psnr_float``, ``psnr_int8``)."""
    import pandas as pd

    from . import claims

    t1, t2 = pd.DataFrame(t1).set_index("pruned"), pd.DataFrame(t2).set_index("pruned")
    p1, p2 = paper1.set_index("row"), paper2.set_index("row")
    out = []
    # RNN: quality unchanged
    paper_rows = [label(c) for c in combinations("rnn")[1:]]
    drop = (t1.loc["unpruned", "ssim"] - t1.ssim)[paper_rows]
    paper_drop = float((p1.SSIM.iloc[0] - p1.SSIM).max())
    out.append(claims.make(
        "yu-rnn-quality", "pruning 30 % of the RNN codec's encoder, decoder or both leaves its SSIM unchanged",
        f"SSIM {_n(p1.loc[1, 'SSIM'])} -> {_n(p1.SSIM.iloc[1:].min())} at worst", 
        ", ".join(f"{k} {v:+.4f}" for k, v in (-drop).items()) + " SSIM",
        "reproduced" if drop.abs().max() <= 0.005 else "not reproduced",
        f"every pruned row within 0.005 SSIM of the unpruned codec (the paper's largest change: {paper_drop:.4f})",
        "Table 1, regenerated"))
    # RNN: encoder pruning lowers the size
    lower = [k for k in ("E", "E+D") if t1.loc[k, "bytes"] < t1.loc["unpruned", "bytes"]]
    out.append(claims.make(
        "yu-rnn-size", "pruning the RNN codec's encoder lowers the compressed size slightly",
        f"{_n(p1.loc[1, 'bytes'])} -> {_n(p1.loc[2, 'bytes'])} B",
        f"{t1.loc['unpruned', 'bytes']:.0f} -> {t1.loc['E', 'bytes']:.0f} B (E), {t1.loc['E+D', 'bytes']:.0f} B (E+D)",
        {2: "reproduced", 1: "partly reproduced", 0: "not reproduced"}[len(lower)],
        "both rows that prune the encoder (E, E+D) must be smaller than the unpruned codec's (partly: one)",
        "Table 1, regenerated"))
    # HiFiC: pruning G costs quality
    g = [k for k in t2.index if "G" in k.split("+")]
    not_g = [k for k in t2.index if k not in g]
    loss = t2.loc["unpruned", "ssim"] - t2.ssim
    worst_other = loss[not_g].max()
    g_costs = loss[g].min() > max(worst_other, 0) and loss[g].min() >= 0.01
    others_free = all(abs(loss[k]) <= 0.01 for k in ("E", "P") if k in loss.index)
    out.append(claims.make(
        "yu-hific-generator", "pruning the HiFiC generator costs quality; pruning E or P does not",
        f"SSIM {_n(p2.loc[1, 'SSIM'])} -> {_n(p2.loc[3, 'SSIM'])} (G), {_n(p2.loc[2, 'SSIM'])} (E), {_n(p2.loc[4, 'SSIM'])} (P)",
        f"SSIM {t2.loc['unpruned', 'ssim']:.4f} -> {t2.loc['G', 'ssim']:.4f} (G), {t2.loc['E', 'ssim']:.4f} (E), "
        f"{t2.loc['P', 'ssim']:.4f} (P)",
        {2: "reproduced", 1: "partly reproduced", 0: "not reproduced"}[int(g_costs) + int(others_free)],
        "both halves: every row pruning G loses more SSIM than every row that does not, and at least 0.01; "
        "the E and P rows stay within 0.01 SSIM of the unpruned codec (partly: one half)",
        "Table 2, regenerated"))
    # HiFiC: pruning E or P raises the size
    rows = [k for k in ("E", "P", "E+P") if k in t2.index]
    higher = [k for k in rows if t2.loc[k, "bytes"] > t2.loc["unpruned", "bytes"]]
    out.append(claims.make(
        "yu-hific-size", "pruning the HiFiC encoder or probability model raises the compressed size",
        f"{_n(p2.loc[1, 'bytes'])} -> {_n(p2.loc[2, 'bytes'])} (E), {_n(p2.loc[4, 'bytes'])} (P), {_n(p2.loc[8, 'bytes'])} B (E+P)",
        ", ".join(f"{t2.loc['unpruned', 'bytes']:.0f} -> {t2.loc[k, 'bytes']:.0f} B ({k})" for k in rows),
        "reproduced" if len(higher) == len(rows) else "partly reproduced" if higher else "not reproduced",
        "the E, P and E+P rows must each be larger than the unpruned codec's (partly: some)", "Table 2, regenerated"))
    # time
    for cid, t, codec, paper_txt, expect in (
            ("yu-rnn-time", t1, "RNN", f"{p1.loc[1, 'total_time']} for every row", "unchanged"),
            ("yu-hific-time", t2, "HiFiC", f"{p2.loc[1, 'total_time']} -> {p2.loc[9, 'total_time']} (E+G+P)", "lower")):
        full = "+".join(components("rnn" if codec == "RNN" else "hific"))
        ratio = t.loc[full, "total_s"] / t.loc["unpruned", "total_s"]
        spread = float(t.spread_pct.max())
        tie = abs(ratio - 1) * 100 <= spread
        verdict = ("reproduced" if tie else "not reproduced") if expect == "unchanged" else \
            ("reproduced" if ratio < 1 and not tie else "not reproduced")
        out.append(claims.make(
            cid, f"pruning leaves the {codec} codec's inference time {expect}" +
            (" (slightly)" if expect == "lower" else ""), paper_txt,
            f"{full} pruned: {ratio:.3f}x the unpruned codec's time (spread {spread:.0f} %)", verdict,
            "a change within the timing spread is no change; " + (
                "reproduced if within it" if expect == "unchanged" else "reproduced if faster by more than it"),
            "Tables 1 and 2, regenerated"))
    # quantization
    u, c = eager["rnn_uncalibrated"], eager["rnn_calibrated"]
    out.append(claims.make(
        "yu-rnn-int8-zero", "post-training static int8 of the RNN codec outputs zeros", "output all zero",
        f"observers never fed: {100 * u['residual_zero_fraction']:.0f} % of the decoded residual is exactly 0 "
        f"({u['output_unique']} distinct output value); calibrated: {c['psnr']:.2f} dB",
        "reproduced" if u["residual_zero_fraction"] == 1.0 else "not reproduced",
        "every decoded residual exactly zero under eager static int8; the cause is what the calibrated row changes",
        "Quantization"))
    fx = {r["kind"]: r for r in fx_rows if r.get("variant", "int8") == "int8"}
    h = fx.get("hific")
    out.append(claims.make(
        "yu-hific-int8", "HiFiC cannot be quantized: PyTorch has no quantized transposed convolution",
        "not possible (transposed conv)",
        f"eager x86 default fails ({eager['hific_default']['error'].split(':')[0] or 'no error'}); per-tensor eager and FX "
        f"convert every transposed conv" + (f" (FX: {h['psnr_int8'] - h['psnr_float']:+.2f} dB)" if h else ""),
        "not reproduced" if h and eager["hific_per_tensor"]["psnr"] > 0 else "reproduced",
        "not reproduced if a PyTorch int8 path converts HiFiC's transposed convolutions and decodes real bitstreams",
        "Quantization"))
    touched = sum(len(v) for v in dynamic_touched.values())
    out.append(claims.make(
        "yu-dynamic", "dynamic quantization covers only Linear, LSTM and GRU layers, none of these codecs' convolutions",
        "Linear / LSTM / GRU", f"{touched} modules converted in the two codecs",
        "reproduced" if touched == 0 else "not reproduced",
        "dynamic int8 must convert no module of either convolutional codec", "Quantization"))
    return out


def main(argv=None) -> int:
    import sys

    from .cli import train_parser
    from .scales import get_scale

    ap, _, t = train_parser("python -m lic.yu", "train the chapter's two codecs", "train (or resume) the codecs")
    t.add_argument("--codec", choices=CODECS, action="append", help="default: both, one after the other")
    t.add_argument("--init", metavar="FILE", help="start from this stored model (one --codec), the output "
                   "of the stages up to --init-stage, trained by this code earlier; run only the later stages")
    t.add_argument("--init-stage", help="the last stage FILE has done (e.g. gan)")
    t.add_argument("--init-seconds", type=float, default=0.0, help="FILE's training time, for the manifest")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    if args.init and (len(args.codec or ()) != 1 or not args.init_stage):
        ap.error("--init needs exactly one --codec and --init-stage")
    if args.init and not Path(args.init).is_file():
        ap.error(f"--init {args.init}: no such file (a model stored by `python -m lic.yu train`)")
    for codec in args.codec or CODECS:
        t0 = time.time()
        if args.init:
            train_codec(codec, scale, root=args.data, precision=args.precision,
                        init=(args.init, args.init_stage, args.init_seconds))
        else:
            get(codec, scale, root=args.data, precision=args.precision)
        print(f"{codec}: ready ({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from .lock import guarded

    raise SystemExit(guarded(main))
