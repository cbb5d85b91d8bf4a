"""The one evaluation path: quality, real bitstreams, latency, size and MACs of any codec that
keeps CompressAI's contract (``forward``, ``compress``, ``decompress``, ``update``).

Results are returned per image and as means, and can be written in CompressAI's ``eval_model``
JSON layout so they plot next to the published curves.
"""
from __future__ import annotations

import io
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim import ssim as _ssim
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from .data import crop_back, pad_to, to_tensor
from .stages import stage_clock

PAD = 64          # every architecture here downsamples by 64 (g_a x16, h_a x4)
MIN_SIZE = 64
# Bitstream check. Without an autoregressive context, the decoded image must match the forward
# reconstruction (>= MATCH_DB dB; a decoder that differs from forward() gives far less). With one (mbt2018,
# cheng2020) CompressAI's forward rounds y while the bitstream codes round(y - mean) + mean, so the
# images legitimately differ (20-35 dB seen on barely trained models): there the decoded image must
# be at most CONTEXT_LOSS_DB worse than the forward reconstruction instead.
MATCH_DB = 40.0
CONTEXT_LOSS_DB = 1.0


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """[0,1] float -> the 8-bit image a decoder would write, back as float in [0, 255]."""
    return torch.round(x.clamp(0, 1) * 255.0)


def psnr(a, b) -> float:
    """PSNR in dB of 8-bit images given as [0,1] tensors (rounded to 8 bit) or uint8 arrays."""
    a, b = (torch.tensor(np.asarray(v), dtype=torch.float64) if not torch.is_tensor(v)
            else quantize8(v).double() for v in (a, b))
    mse = torch.mean((a - b) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """MS-SSIM of two NCHW [0,1] images after 8-bit rounding (short side must exceed 160 px)."""
    if min(a.shape[-2:]) <= 160:
        raise ValueError(f"MS-SSIM needs both sides > 160 px, got {tuple(a.shape[-2:])}")
    return _ms_ssim(quantize8(a).float(), quantize8(b).float(), data_range=255.0).item()


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Single-scale SSIM (11x11 Gaussian window, σ 1.5) of two NCHW [0,1] images after 8-bit
    rounding: the metric Yu et al. report."""
    return _ssim(quantize8(a).float(), quantize8(b).float(), data_range=255.0).item()


def bpp_from_likelihoods(likelihoods: dict, num_pixels: int) -> float:
    return sum(torch.log2(lik.double()).sum().item() for lik in likelihoods.values()) / -num_pixels


def bitstream_bytes(strings) -> int:
    return sum(len(s) for group in strings for s in group)


def _median_time(fn, repeats):
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@torch.no_grad()
def evaluate_image(model, img8: np.ndarray, real=True, repeats=1, msssim=True) -> dict:
    """Evaluate one HxWx3 uint8 image. ``model`` must be in eval mode with ``update()`` done."""
    x = to_tensor(img8)
    h, w = x.shape[-2:]
    xp, size = pad_to(x, PAD, MIN_SIZE)
    out = model(xp)
    x_hat = crop_back(out["x_hat"], size).clamp(0, 1)
    row = {"height": h, "width": w, "bpp_est": bpp_from_likelihoods(out["likelihoods"], h * w),
           **{f"bpp_est_{k}": bpp_from_likelihoods({k: v}, h * w) for k, v in out["likelihoods"].items()},
           "psnr_forward": psnr(x_hat, x)}
    if real:
        model(xp)  # warm-up of the same shapes
        enc_s, enc = _median_time(lambda: model.compress(xp), repeats)
        dec_s, dec = _median_time(lambda: model.decompress(enc["strings"], enc["shape"]), repeats)
        x_dec = crop_back(dec["x_hat"], size).clamp(0, 1)
        match, real_psnr = psnr(x_dec, x_hat), psnr(x_dec, x)
        if hasattr(model, "context_prediction") or getattr(model, "autoregressive", False):
            broken = real_psnr < row["psnr_forward"] - CONTEXT_LOSS_DB
        else:
            broken = match < MATCH_DB
        if broken:
            raise RuntimeError(f"decoded image does not match the forward reconstruction ({match:.1f} "
                               f"dB apart; PSNR {real_psnr:.2f} vs {row['psnr_forward']:.2f} dB): the decoder's "
                               "bitstream path differs from forward(); after surgery call "
                               "model.update(force=True) and check every pruned layer")
        for key, strings in zip(out["likelihoods"], enc["strings"]):  # y, z: CompressAI's order
            row[f"bpp_{key}"] = 8 * bitstream_bytes([strings]) / (h * w)
        row.update(bpp=8 * bitstream_bytes(enc["strings"]) / (h * w), psnr=real_psnr,
                   decode_vs_forward_db=match, encode_ms=1e3 * enc_s, decode_ms=1e3 * dec_s)
    else:
        x_dec = x_hat
        row.update(bpp=row["bpp_est"], psnr=row["psnr_forward"])
    if msssim:
        row["ms_ssim"] = ms_ssim(x_dec, x)
        row["ssim"] = ssim(x_dec, x)
    return row


def evaluate(model, images, real=True, repeats=1, timed=None, progress=True, desc="evaluate",
             msssim=True) -> dict:
    """Evaluate ``model`` on ``images`` [(name, HxWx3 uint8)]: {'mean': {...}, 'images': [...]}.

    Real bitstreams: entropy tables are rebuilt with ``update(force=True)``; each image is
    compressed and decompressed, the decoded image must match the forward reconstruction.
    Latency: median of ``repeats`` runs after a warm-up, on the first ``timed`` images (all by
    default); the mean encode/decode times are over those images only. ``msssim=False`` skips
    MS-SSIM (it needs both sides over 160 px).
    """
    if not images:
        raise ValueError("no test images given")
    timed = len(images) if timed is None else timed
    model.eval()
    if real:
        model.update(force=True)
    rows = []
    for i, (name, img) in enumerate(tqdm(images, desc=desc, disable=not progress, leave=False)):
        row = evaluate_image(model, img, real, repeats if i < timed else 1, msssim=msssim)
        if i >= timed:
            row.pop("encode_ms", None)
            row.pop("decode_ms", None)
        rows.append({"image": name, **row})
    keys = dict.fromkeys(k for r in rows for k in r if k != "image")
    mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    mean["threads"] = torch.get_num_threads()
    mean["timed_images"] = min(timed, len(images)) if real else 0
    return {"mean": mean, "images": rows}


def summarize(model, images, repeats=1, timed=None, height=512, width=768, progress=True,
              desc="evaluate") -> dict:
    """One table row for a codec: mean quality and rates, latency, parameters, size, MACs."""
    res = evaluate(model, images, real=True, repeats=repeats, timed=timed, progress=progress, desc=desc)
    return {**res["mean"], "params": parameter_count(model), "bytes_fp32": serialized_bytes(model),
            "macs": model_macs(model, height, width), "mac_resolution": f"{width}x{height}"}


#: Version of what :func:`summarize` measures. Bump it when a change to this module changes
#: the numbers a row holds, so that :func:`summarize_cached` measures again instead of
#: returning rows measured by the old code.
MEASUREMENT_VERSION = 1


def _cache_key(model, images, kwargs: dict, version: int) -> dict:
    from .weights import fingerprint

    return {"fingerprint": fingerprint(model), "images": [name for name, _ in images],
            "args": {k: v for k, v in sorted(kwargs.items()) if k not in ("progress", "desc")},
            "version": version}


def summarize_cached(model, images, cache_dir, version=MEASUREMENT_VERSION, identity=None, **kwargs) -> dict:
    """:func:`summarize`, kept in ``cache_dir`` as one JSON file per key: the model's weight
    fingerprint, the image names, the arguments, the measurement ``version`` and ``identity`` (what
    the weights do not say about the model: see :func:`defined_by_weights`). Every chapter
    shares one folder (``runs/<scale>/measured``), so a model is measured once, whichever
    chapter asks, and a rerun after a kill measures only what is new."""
    import hashlib

    key = _cache_key(model, images, kwargs, version)
    if identity is not None:
        key["identity"] = identity
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"{key['fingerprint']}-{digest}.json"
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["row"]
    row = summarize(model, images, **kwargs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "row": row}))
    tmp.replace(cache)
    return row


def share_untimed(src, dst) -> int:
    """Copy into folder ``dst`` the measurements :func:`summarize_cached` kept in ``src`` that
    ``dst`` lacks, the untimed ones only (quality, rate, MACs: what the weights and the images
    decide, on any machine; a time is the machine's and is taken where it is reported). Returns
    how many it copied. :func:`lic.book.run` uses it both ways with the book's kept measurements."""
    import shutil

    n = 0
    for f in sorted(Path(src).glob("*.json")) if Path(src).is_dir() else []:
        target = Path(dst) / f.name
        if target.exists():
            continue
        try:
            args = json.loads(f.read_text()).get("key", {}).get("args", {})
        except ValueError:  # a file cut short by a kill: measured again next time
            continue
        if args.get("timed") == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            n += 1
    return n


def fingerprintable(model) -> bool:
    """Whether :func:`lic.weights.fingerprint` can hash ``model``'s state: plain tensors only (an
    int8 model's packed weights are not)."""
    return all(isinstance(v, torch.Tensor) and not v.is_quantized for v in model.state_dict().values())


def defined_by_weights(model) -> bool:
    """Whether ``model``'s bitstreams and reconstructions follow from its weights and buffers alone,
    so that a measurement kept under its fingerprint describes it whichever chapter made it:
    CompressAI models (pruned or not) and the fixed-λ view of a variable-rate model (λ is a buffer).
    Not: a slimmable supernet and its views (the capacity or the router is a Python attribute), the
    RNN codec (its iteration count), an int8 model (no fingerprint), a deployed model (its runtime
    parts hold no tensors: an OpenVINO f32 g_s and two NNCF int8 ones of the same zoo model would
    share one fingerprint, that of the eager parts left)."""
    from compressai.models import CompressionModel

    from .models.rate import AtLambda
    from .models.slimmable import SlimMeanScale

    return (isinstance(model, (CompressionModel, AtLambda)) and not isinstance(model, SlimMeanScale)
            and not hasattr(model, "deployment") and fingerprintable(model))


def quality_cached(model, images, cache_dir, identity=None, version=MEASUREMENT_VERSION) -> dict:
    """Real-bitstream quality and rate of ``model`` on ``images`` (the row's ``psnr``, ``ms_ssim``,
    ``bpp``, ...). For a model :func:`defined_by_weights`: any row :func:`summarize_cached` keeps for
    these weights, images and ``version``, whichever chapter measured it and with whatever timing or
    MAC arguments (quality and rate do not depend on them), else measured once, untimed, and kept.
    Any other model is kept only under its ``identity`` (e.g. an operating point's name) besides its
    fingerprint, and measured every time without one."""
    untimed = {"repeats": 1, "timed": 0, "progress": False}
    if not defined_by_weights(model):
        if identity is None or not fingerprintable(model):
            return evaluate(model, images, real=True, timed=0, progress=False)["mean"]
        return summarize_cached(model, images, cache_dir, version=version, identity=identity, **untimed)
    want = _cache_key(model, images, {}, version)
    for path in sorted(Path(cache_dir).glob(f"{want['fingerprint']}-*.json")):
        stored = json.loads(path.read_text())
        key = stored.get("key", {})
        if "identity" not in key and all(key.get(k) == want[k] for k in ("fingerprint", "images", "version")):
            return stored["row"]
    return summarize_cached(model, images, cache_dir, version=version, **untimed)


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def serialized_bytes(module, half=False) -> int:
    """Bytes of ``torch.save(state_dict)`` (optionally with floating tensors in fp16)."""
    state = module.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


@torch.no_grad()
def macs(module, *inputs) -> int:
    """Multiply–accumulates of ``module(*inputs)``: FlopCounterMode's FLOPs ÷ 2.

    Counts convolutions, transposed convolutions (by input size) and GDN's 1x1 convolution;
    element-wise operations and biases are not counted.
    """
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def model_macs(model, height=512, width=768) -> int:
    """MACs of one forward pass of a codec on an RGB image of ``height`` x ``width``."""
    model.eval()
    return macs(model, torch.zeros(1, 3, height, width))


# a point against a curve (lic.synthesis; 00's wider family against CompressAI's published curve)
EXTRAPOLATE_DB = 1.0  # how far beyond a curve's ends its end segments are extended: dB of PSNR,
REACH_FACTOR = 1.5    # and factor of bpp


def _along(xs, ys, x: float, reach: float) -> float:
    """y at ``x`` on the piecewise-linear curve (xs ascending), its end segments extended by at most
    ``reach`` beyond the ends; ``nan`` farther out."""
    if len(xs) < 2 or not xs[0] - reach <= x <= xs[-1] + reach:
        return float("nan")
    i = 0 if x < xs[0] else len(xs) - 2 if x > xs[-1] else None
    if i is None:
        return float(np.interp(x, xs, ys))
    return float(ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i]))


def rate_at(curve: dict, psnr: float, reach: float = EXTRAPOLATE_DB) -> float:
    """bpp the curve ({"bpp", "psnr"}) needs for ``psnr``: log-bpp linear in PSNR between its
    points, extended at most ``reach`` dB beyond them; ``nan`` farther out."""
    order = np.argsort(curve["psnr"])
    q, b = np.asarray(curve["psnr"], float)[order], np.log(np.asarray(curve["bpp"], float)[order])
    return float(np.exp(_along(q, b, psnr, reach)))


def psnr_at(curve: dict, bpp: float, reach_factor: float = REACH_FACTOR) -> float:
    """PSNR the curve reaches at ``bpp``: linear in log-bpp between its points, the end segments
    extended to at most ``reach_factor`` times fewer or more bits; ``nan`` farther out."""
    order = np.argsort(curve["bpp"])
    b, q = np.log(np.asarray(curve["bpp"], float)[order]), np.asarray(curve["psnr"], float)[order]
    return _along(b, q, math.log(bpp), math.log(reach_factor))


def bd(anchor: dict, test: dict, min_overlap=0.75) -> dict:
    """BD-rate (%) and BD-PSNR (dB) of ``test`` against ``anchor``, each {'bpp': [], 'psnr': []}.

    Uses the ``bjontegaard`` package (Akima interpolation; pchip with fewer than 4 points), which
    integrates over the intersection of the two curves. Our reliability rule: the intersection
    must cover at least ``min_overlap`` of the *shorter* curve's range (the package's own check
    divides by the union of both ranges, so a 4-point codec inside a 19-point WebP sweep or
    beside CompressAI's 8 sparse qualities would never qualify). Otherwise NaN, with the overlap.
    NaN too when PSNR does not rise strictly with rate along either curve (``monotonic`` False).
    """
    import warnings

    import bjontegaard as bjt

    ra, da = _sorted(anchor)
    rt, dt = _sorted(test)
    if min(len(ra), len(rt)) < 2:
        raise ValueError("BD metrics need at least two rate–distortion points per curve")
    method = "akima" if min(len(ra), len(rt)) >= 4 else "pchip"
    out = {"overlap_psnr": _overlap(da, dt), "overlap_rate": _overlap(np.log10(ra), np.log10(rt)),
           "bd_rate": float("nan"), "bd_psnr": float("nan"), "method": method,
           "monotonic": bool(np.all(np.diff(da) > 0) and np.all(np.diff(dt) > 0))}
    if not out["monotonic"]:  # quality must rise with rate, or the integrals mean nothing
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if out["overlap_psnr"] >= min_overlap:
            out["bd_rate"] = float(bjt.bd_rate(ra, da, rt, dt, method=method,
                                               require_matching_points=False, min_overlap=0))
        if out["overlap_rate"] >= min_overlap:
            out["bd_psnr"] = float(bjt.bd_psnr(ra, da, rt, dt, method=method,
                                               require_matching_points=False, min_overlap=0))
    return out


def _sorted(curve):
    r = np.asarray(curve["bpp"], dtype=float)
    d = np.asarray(curve["psnr"], dtype=float)
    order = np.argsort(r)
    return r[order], d[order]


def _overlap(a, b) -> float:
    """Length of the intersection of two ranges over the length of the shorter one."""
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    shorter = min(a.max() - a.min(), b.max() - b.min())
    return max(hi - lo, 0.0) / shorter if shorter > 0 else 0.0


def to_compressai_json(name: str, points: list, description: str = "") -> dict:
    """CompressAI's ``eval_model`` layout from a list of mean-result dicts (one per rate)."""
    pick = lambda k: [p.get(k) for p in points]  # noqa: E731
    results = {"psnr-rgb": pick("psnr"), "ms-ssim-rgb": pick("ms_ssim"), "bpp": pick("bpp")}
    if all(p.get("encode_ms") is not None for p in points):
        results["encoding_time"] = [p["encode_ms"] / 1e3 for p in points]
        results["decoding_time"] = [p["decode_ms"] / 1e3 for p in points]
    return {"name": name, "description": description, "results": results}


def read_compressai_json(path) -> dict:
    """{'name', 'bpp', 'psnr', 'ms_ssim'} from a CompressAI results file."""
    d = json.loads(Path(path).read_text())
    r = d["results"]
    return {"name": d.get("name", Path(path).stem), "bpp": r["bpp"], "psnr": r["psnr-rgb"],
            "ms_ssim": r.get("ms-ssim-rgb")}


@torch.no_grad()
def interleaved_times(models: dict, images, repeats=5, progress=True, desc="timing") -> dict:
    """Encode and decode latency of several codecs measured in one run, round-robin: every repeat
    times each model once on each image, in turn, so machine noise hits every variant alike.

    ``models``: {name: codec with CompressAI's contract}, each ``update()``-ed and in eval mode.
    Returns {name: {"encode_ms", "decode_ms" (median over repeats of the per-repeat mean over
    images), "encode_spread_pct", "decode_spread_pct" ((max − min) / median of those per-repeat
    means), "encode_ms_repeats", "decode_ms_repeats" (the per-repeat means, in the order of the
    repeats: a ratio of two models within one repeat cancels the noise both saw), "decode_stages_ms" ({stage: median ms}: where the decode time went, :mod:`lic.stages`; medians of parts, so
    their sum is near the decode's median only on a quiet machine — a preemption lands in a different stage
    each repeat), "decode_stages_ms_repeats" (per repeat {stage: ms}, summing to that repeat's decode time),
    "decoded" ([{psnr, bpp}] per image: what each model's timed bitstreams decode to), "repeats"}}.
    """
    pads = [pad_to(to_tensor(img), PAD, MIN_SIZE) for _, img in images]
    xs = [x for x, _ in pads]
    streams, decoded = {}, {}
    for name, m in models.items():  # warm-up, the bitstreams each decode times, and what they decode to
        m.eval()
        streams[name] = [m.compress(x) for x in xs]
        decoded[name] = []
        for (x, size), enc in zip(pads, streams[name]):
            x_dec = crop_back(m.decompress(enc["strings"], enc["shape"])["x_hat"], size).clamp(0, 1)
            decoded[name].append({"psnr": psnr(x_dec, crop_back(x, size)),
                                  "bpp": 8 * bitstream_bytes(enc["strings"]) / (size[0] * size[1])})
    enc_t = {n: [] for n in models}
    dec_t = {n: [] for n in models}
    stages = {n: [] for n in models}
    for _ in tqdm(range(repeats), desc=desc, disable=not progress, leave=False):
        for name, m in models.items():
            e = d = 0.0
            per = {}
            for x, enc in zip(xs, streams[name]):
                t0 = time.perf_counter()
                m.compress(x)
                with stage_clock(m) as clock:
                    t1 = time.perf_counter()
                    m.decompress(enc["strings"], enc["shape"])
                    d += time.perf_counter() - t1
                e += t1 - t0
                for st, v in clock.seconds.items():
                    per[st] = per.get(st, 0.0) + v
            enc_t[name].append(1e3 * e / len(xs))
            dec_t[name].append(1e3 * d / len(xs))
            stages[name].append({st: 1e3 * v / len(xs) for st, v in per.items()}
                                | {"other": 1e3 * (d - sum(per.values())) / len(xs)})

    def spread(ts):
        return (max(ts) - min(ts)) / statistics.median(ts) * 100
    return {n: {"encode_ms": statistics.median(enc_t[n]), "decode_ms": statistics.median(dec_t[n]),
                "encode_spread_pct": spread(enc_t[n]), "decode_spread_pct": spread(dec_t[n]),
                "encode_ms_repeats": enc_t[n], "decode_ms_repeats": dec_t[n],
                "decode_stages_ms": {st: statistics.median(r.get(st, 0.0) for r in stages[n]) for st in dict.fromkeys(k for r in stages[n] for k in r)},
                "decode_stages_ms_repeats": stages[n],
                "decoded": decoded[n], "repeats": repeats} for n in models}
