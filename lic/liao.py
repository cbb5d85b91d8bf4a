"""Liao et al., *Efficient Decoder for Learned Image Compression via Structured Pruning*
(chapter ``01_liao``).

Algorithm 1: for each hidden layer of the synthesis transform ``g_s`` (last to first), estimate
each channel's *effectiveness* as the range of its activation over decoder inputs — the
activation reached by gradient **ascent** on the input minus the one reached by gradient
**descent** — remove the least effective channels, then fine-tune the pruned decoder.

Choices the slides leave open (stated in the chapter):

- activation of channel j = spatial mean of its feature map after the layer's IGDN;
- the input starts at ``x0`` = quantised latents ŷ of training crops and stays inside the box
  [min, max] of those latents, per latent channel (projected gradient steps), so the range
  is measured over plausible decoder inputs, not arbitrary tensors;
- steps are ``η · g / mean|g|`` (the slides give no η; normalising the gradient makes one η work
  for every layer); ascent and descent each run at most ``iters`` steps from ``x0``, stopping
  early when the objective moves less than ``tol`` (relative) over 5 steps;
- all channels of a layer are optimised at once as one batch (one input copy per channel);
- the paper's ``r`` is the fraction of **decoder parameters** removed; every hidden layer keeps
  the same fraction of its channels, the fraction found by search so the decoder shrinks by r.

Importance criteria share one signature ``(model, layer, x0) -> scores`` (higher = keep), so
activation range, L1-norm and random selection are interchangeable.
"""
from __future__ import annotations

import time

from tqdm import tqdm

import torch
from compressai.layers import GDN
from torch import nn

from . import surgery
from .evaluate import macs, parameter_count


hidden_layers = surgery.hidden_layers  # [(conv, gdn, next_conv)] of g_s, first to last


def _prefix(model, layer: int):
    """g_s up to and including the GDN of hidden layer ``layer``."""
    _, gdn, _ = hidden_layers(model)[layer]
    stop = int(gdn.rsplit(".", 1)[1])
    return nn.Sequential(*list(model.g_s)[: stop + 1])


@torch.no_grad()
def latents(model, images: torch.Tensor) -> torch.Tensor:
    """Quantised latents ŷ = round(g_a(x)) of a batch of images: the decoder's real inputs."""
    model.eval()
    return torch.round(model.g_a(images))


def _optimise(f, x0, lo, hi, sign, iters, lr, tol):
    """Projected, normalised gradient ascent (sign=+1) or descent (-1) of f(x) (one value per
    leading index of x) inside the box [lo, hi]."""
    x = x0.clone().requires_grad_(True)
    history = []
    for _ in range(iters):
        obj = f(x)
        (grad,) = torch.autograd.grad(obj.sum(), x)
        with torch.no_grad():
            scale = grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
            x += sign * lr * grad / scale
            x.copy_(torch.max(torch.min(x, hi), lo))
        history.append(obj.detach())
        if len(history) > 5:
            change = (history[-1] - history[-6]).abs() / history[-6].abs().clamp_min(1e-6)
            if change.max() < tol:
                break
    with torch.no_grad():
        return f(x)


def activation_range(model, layer: int, x0: torch.Tensor, iters: int = 50, lr: float = 0.05,
                     tol: float = 1e-3) -> torch.Tensor:
    """Effectiveness e_j = max_x h_j(x) − min_x h_j(x) of every channel of hidden ``layer``.

    ``x0``: decoder inputs (B, M, h, w), e.g. :func:`latents` of training crops. One copy of the
    inputs per channel is optimised, all channels in one batch; channel j's objective is its
    mean activation over its copy (B inputs and all positions).
    """
    if x0 is None:
        raise ValueError("activation range needs decoder inputs x0 (e.g. lic.liao.latents(model, crops))")
    net = _prefix(model, layer).eval()
    frozen = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    channels = surgery.shape_of(model.get_submodule(hidden_layers(model)[layer][0]))[1]
    b = x0.shape[0]
    lo = x0.amin(dim=(0, 2, 3)).view(1, 1, -1, 1, 1)
    hi = x0.amax(dim=(0, 2, 3)).view(1, 1, -1, 1, 1)
    start = x0.unsqueeze(0).repeat(channels, 1, 1, 1, 1)  # (C, B, M, h, w)
    idx = torch.arange(channels)

    def f(x):
        h = net(x.flatten(0, 1))                                 # (C*B, C, H, W)
        h = h.view(channels, b, channels, *h.shape[-2:])
        return h[idx, :, idx].mean(dim=(1, 2, 3))                # channel j in copy j

    try:
        top = _optimise(f, start, lo, hi, +1, iters, lr, tol)
        bottom = _optimise(f, start, lo, hi, -1, iters, lr, tol)
    finally:
        for p, g in zip(net.parameters(), frozen):
            p.requires_grad_(g)
    return (top - bottom).detach()


def l1_norm(model, layer: int, x0=None) -> torch.Tensor:
    """L1-norm of each output channel's filter (Li et al. 2017), the classic baseline."""
    conv = model.get_submodule(hidden_layers(model)[layer][0])
    w = conv.weight.detach()
    return w.abs().sum(dim=(0, 2, 3)) if isinstance(conv, nn.ConvTranspose2d) else w.abs().sum(dim=(1, 2, 3))


def random_scores(seed: int = 0):
    """A criterion that ranks channels at random (seeded)."""
    def scores(model, layer: int, x0=None) -> torch.Tensor:
        conv = model.get_submodule(hidden_layers(model)[layer][0])
        g = torch.Generator().manual_seed(seed * 1000 + layer)
        return torch.rand(surgery.shape_of(conv)[1], generator=g)
    return scores


FINETUNE_LR, FINETUNE_LR_FINAL = 1e-4, 1e-5  # the fine-tune after pruning: Adam on g_s, this to that (cosine)
CRITERIA = {"activation range": activation_range, "L1-norm": l1_norm, "random": random_scores(0)}


def decoder_parameters(model) -> int:
    return parameter_count(model.g_s)


@torch.no_grad()
def decoder_macs(model, height: int, width: int, gdn: bool = True) -> int:
    """MACs of g_s decoding an image of height x width (latent = image / 16).

    ``gdn=False`` counts the (transposed) convolutions only, the paper's convention (3618 M for
    CompressAI's N=128/M=192 decoder at 384x256; IGDN's 1x1 convolutions add 528 M).
    """
    x = torch.zeros(1, model.g_s[0].weight.shape[0], height // 16, width // 16)
    total = 0
    for layer in model.g_s:
        if gdn or not isinstance(layer, GDN):
            total += macs(layer, x)
        x = layer(x)
    return total


def _params_if_kept(model, counts) -> int:
    """Decoder parameters if hidden layer i keeps counts[i] channels (no surgery)."""
    layers = hidden_layers(model)
    width = {conv: c for (conv, _, _), c in zip(layers, counts)}
    total = 0
    prev = None
    for name, m in zip([f"g_s.{i}" for i in range(len(model.g_s))], model.g_s):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            cin, cout = surgery.shape_of(m)
            cin = prev if prev is not None else cin
            cout = width.get(name, cout)
            k = m.weight.shape[-1] * m.weight.shape[-2]
            total += cin * cout * k + (cout if m.bias is not None else 0)
            prev = cout
        elif isinstance(m, GDN):
            total += prev + prev * prev
    return total


def keep_counts(model, ratio: float) -> list:
    """Channels each hidden layer keeps so the decoder loses ``ratio`` of its parameters
    (same kept fraction in every layer, closest achievable)."""
    if not 0 <= ratio < 1:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    widths = [surgery.shape_of(model.get_submodule(c))[1] for c, _, _ in hidden_layers(model)]
    full = _params_if_kept(model, widths)
    best = None
    for step in range(1001):
        frac = step / 1000
        counts = [max(1, round(w * frac)) for w in widths]
        removed = 1 - _params_if_kept(model, counts) / full
        if best is None or abs(removed - ratio) < best[0]:
            best = (abs(removed - ratio), counts)
    return best[1]


def channel_scores(model, criterion, x0=None, progress=False) -> dict:
    """{conv name: score per output channel} of every hidden layer of ``model``'s g_s (``progress``:
    a bar over the layers; the activation range takes minutes per layer at N=128).

    Algorithm 1 scores layers last to first, pruning as it goes. A layer's activations depend
    only on the layers *before* it, and pruning a layer removes only *its* outputs and the next
    layer's inputs, so scores computed once on the unpruned decoder are exactly those the
    algorithm sees (``tests/test_liao.py`` checks this); one estimate then serves every ratio.
    """
    layers = hidden_layers(model)
    name = getattr(criterion, "__name__", "<>").replace("_", " ")
    name = "channel scores" if name.startswith("<") else name  # a lambda (the notebooks' partials)
    out = {}
    for i, (conv, _, _) in enumerate(tqdm(layers, desc=f"{name} of each hidden layer", disable=not progress)):
        out[conv] = criterion(model, i, x0)
    return out


def prune_decoder(model, ratio: float, scores: dict) -> dict:
    """Remove, in place, the lowest-scoring channels of every hidden layer (last to first) so
    the decoder loses ``ratio`` of its parameters. Returns the kept channels per layer."""
    counts = keep_counts(model, ratio)
    layers = hidden_layers(model)
    kept = {}
    for i in reversed(range(len(layers))):
        conv, gdn, nxt = layers[i]
        keep = torch.argsort(torch.as_tensor(scores[conv]), descending=True)[: counts[i]].sort().values
        surgery.remove_channels(model, conv, keep.tolist(), followers=[gdn], consumers=[nxt])
        kept[conv] = keep.tolist()
    return {"ratio": ratio, "counts": counts, "kept": kept}


def sweep(base, lmbda: float, criteria: dict, ratios, x0, data, images, scale, run_dir,
          finetune_steps: int, y_time: torch.Tensor, progress=True, keep=None, scores=None) -> list:
    """The chapter's experiment for one base model: for every criterion and ratio, prune a copy,
    measure it before fine-tuning (forward pass), fine-tune g_s only (encoder and entropy models
    frozen: the bitstream does not change), and measure it again with real bitstreams.

    Fine-tuning runs resume from ``run_dir``/<base model's fingerprint> (pruning is deterministic,
    so a rerun rebuilds the same architecture and loads its state). Encode, decode and g_s times
    of all the models come from one interleaved run after the sweep (:func:`time_interleaved`),
    so machine noise hits every variant alike. Returns one row per (criterion, ratio), plus r = 0;
    ``keep`` (a dict), when given, receives the models: {(criterion, ratio): model}. ``scores``
    ({criterion: :func:`channel_scores` of ``base`` on ``x0``}), when given, are used instead of
    estimating those criteria again (the activation range takes minutes at ``cpu``).
    """
    import copy
    from pathlib import Path

    from .evaluate import evaluate, summarize
    from .train import TrainConfig, train
    from .zoo import fingerprint

    run_dir = Path(run_dir) / fingerprint(base)  # a retrained base model starts afresh
    scores = {name: (scores or {}).get(name) or channel_scores(base, fn, x0) for name, fn in criteria.items()}
    full = decoder_parameters(base)

    def measure(model, name, ratio, before=None, kept=None):
        row = summarize(model, images, timed=0, progress=False)  # times: below, interleaved
        models[(name, ratio)] = model
        return {"lambda": lmbda, "criterion": name, "ratio": ratio,
                "decoder_params": decoder_parameters(model),
                "removed": 1 - decoder_parameters(model) / full,
                "macs_384x256": decoder_macs(model, 256, 384, gdn=False),
                "macs_384x256_with_gdn": decoder_macs(model, 256, 384),
                "macs_768x512": decoder_macs(model, 512, 768),
                "psnr_before_ft": before, "kept": kept,
                **{k: row[k] for k in ("psnr", "bpp", "bpp_est", "ms_ssim")}}

    models = {}
    rows = [measure(copy.deepcopy(base), "unpruned", 0.0)]
    rows[0]["psnr_before_ft"] = rows[0]["psnr"]
    jobs = [(n, r) for n in criteria for r in ratios]
    for name, ratio in tqdm(jobs, desc=f"prune+fine-tune λ={lmbda}", disable=not progress):
        model = copy.deepcopy(base)
        info = prune_decoder(model, ratio, scores[name])
        before = evaluate(model, images, real=False, progress=False)["mean"]["psnr"]
        cfg = TrainConfig.from_scale(scale, lmbda, steps=finetune_steps, lr=FINETUNE_LR, lr_final=FINETUNE_LR_FINAL,
                                     eval_every=0, late_crop=0, late_frac=0.0)
        tag = f"{name.replace(' ', '_')}-{ratio:.2f}-{lmbda:.4f}"
        train(model, data, cfg, checkpoint=run_dir / f"{tag}.state.pt",
              params=list(model.g_s.parameters()), progress=False)
        rows.append(measure(model, name, ratio, before, info["counts"]))
    times = time_interleaved(models, images[:3], y_time, scale.timing_repeats)
    for row in rows:
        row.update(times[(row["criterion"], row["ratio"])])
    if keep is not None:
        keep.update(models)
    return rows


def register_points(runs: list, arch: str, scale, criterion="activation range") -> list:
    """The chapter's operating points for 06_synthesis: the decoder pruned by ``criterion`` at every
    r, for every (models from :func:`sweep`'s ``keep``, zoo base model, λ) in ``runs``; each is
    stored as its g_s changes on the zoo model."""
    from . import points

    return points.publish("01_liao", scale, [
        points.register("01_liao", scale, m, method="Liao (decoder pruning)", arch=arch, lmbda=lmbda,
                        variant=f"r={ratio:.2f}", base=base, rebuild="lic.zoo:get",
                        spec={"arch": arch, "lmbda": lmbda, "train_missing": False},
                        meta={"criterion": name, "ratio": ratio})
        for models, base, lmbda in runs for (name, ratio), m in models.items() if name == criterion])


@torch.no_grad()
def time_interleaved(models: dict, images, y_hat: torch.Tensor, repeats: int) -> dict:
    """Encode, decode and g_s-alone times of ``models`` ({key: codec}) in one run, round-robin
    (:func:`lic.evaluate.interleaved_times`; g_s timed the same way on ``y_hat``): {key: {
    "encode_ms", "decode_ms", "decode_spread_pct", "gs_seconds"}}."""
    from .evaluate import interleaved_times

    for m in models.values():
        m.update(force=True)
    names = {f"m{i}": k for i, k in enumerate(models)}
    t = interleaved_times({n: models[k] for n, k in names.items()}, images, repeats=repeats, progress=False)
    gs = {n: [] for n in names}
    for n, k in names.items():
        models[k].g_s(y_hat)  # warm-up
    for _ in range(repeats):
        for n, k in names.items():
            t0 = time.perf_counter()
            models[k].g_s(y_hat)
            gs[n].append(time.perf_counter() - t0)
    return {k: {"encode_ms": t[n]["encode_ms"], "decode_ms": t[n]["decode_ms"],
                "decode_spread_pct": t[n]["decode_spread_pct"],
                "gs_seconds": sorted(gs[n])[len(gs[n]) // 2]} for n, k in names.items()}


def timing_latent(model, img8) -> torch.Tensor:
    """ŷ of one test image (padded to a multiple of 64): the input used to time g_s."""
    from .data import pad_to, to_tensor

    return latents(model, pad_to(to_tensor(img8), 64)[0])


# ---------------------------------------------------------------------------------------------
# verdicts

QUALITY_TOL_DB = 0.1  # what we call "the same PSNR loss as the paper's"


def derive(rows):
    """The sweep's rows as a table with, per λ against its unpruned model: PSNR decay per million
    decoder parameters removed, MAC reduction (768x512), g_s and full-decode speed-ups, and the
    speed-up each MAC reduction buys (1 = time falls as fast as MACs)."""
    import numpy as np
    import pandas as pd

    res = pd.DataFrame(rows)
    for _, grp in res.groupby("lambda"):
        ref = grp[grp.criterion == "unpruned"].iloc[0]
        idx = grp.index
        res.loc[idx, "psnr_decay_db_per_M"] = (grp.psnr - ref.psnr) / ((ref.decoder_params - grp.decoder_params) / 1e6)
        res.loc[idx, "mac_reduction"] = ref.macs_768x512 / grp.macs_768x512
        res.loc[idx, "gs_speedup"] = ref.gs_seconds / grp.gs_seconds
        res.loc[idx, "decode_speedup"] = ref.decode_ms / grp.decode_ms
    res.loc[res.criterion == "unpruned", "psnr_decay_db_per_M"] = np.nan
    res["speedup_per_mac_reduction"] = res.gs_speedup / res.mac_reduction
    return res


def criterion_text(facts: dict, verdicts: list) -> tuple:
    """(sentence, verdict) of "does the criterion matter?" for the prose: the best other criterion's
    loss beside the activation range's, or, in a run of the activation range alone, that the
    question was not asked (the ``criteria`` parameter)."""
    verdict = next((c["verdict"] for c in verdicts if c["id"] == "liao-criterion"), None)
    if facts["best_other"] is None or verdict is None:
        return ("Only the activation range ran (the `criteria` parameter), so no other criterion was "
                "compared at this width", "not asked in this run")
    return (f"With the same budget, the best other criterion ({facts['best_other']}) loses "
            f"{facts['others'][facts['best_other']]:.2f} dB at the same r ({facts['gap']:+.2f} dB relative to the "
            f"activation range); that the activation range is the better criterion (by more than {QUALITY_TOL_DB} dB)",
            verdict)


def across_widths(rows_by_width: dict):
    """Activation-range pruning at each width, side by side: {label: the chapter's rows at that
    width (:func:`derive`'s columns)} -> one row per width, λ and r with the PSNR change against
    that width's unpruned model, the MAC reduction and the g_s and whole-decode speed-ups."""
    import pandas as pd

    out = []
    for label, rows in rows_by_width.items():
        res = derive(rows) if "mac_reduction" not in pd.DataFrame(rows) else pd.DataFrame(rows)
        for lam, grp in res.groupby("lambda", sort=False):
            ref = grp[grp.criterion == "unpruned"].iloc[0]
            for _, r in grp[grp.criterion == "activation range"].sort_values("ratio").iterrows():
                out.append({"width": label, "λ": lam, "r": round(r.ratio, 2), "ΔPSNR (dB)": r.psnr - ref.psnr,
                            "MAC reduction (x)": r.mac_reduction, "gₛ speed-up (x)": r.gs_speedup,
                            "decode speed-up (x)": r.decode_speedup, "decode spread (%)": r.decode_spread_pct})
    return pd.DataFrame(out)


def claims_for(rows, lambdas, paper) -> tuple:
    """The chapter's claims (see :mod:`lic.claims`) from its sweep ``rows`` (one per λ, criterion,
    ratio: psnr, decoder_params, macs_384x256, decode_speedup), the two λ in ``lambdas`` (the main
    one first) and the paper's table. Returns (claims, facts): facts holds the numbers the prose
    quotes."""
    import pandas as pd

    from . import claims

    rows = pd.DataFrame(rows)
    lam = lambdas[0]
    r_max = float(rows[rows.criterion == "activation range"].ratio.max())
    p0 = paper[paper.ratio == 0].iloc[0]
    pr = paper.iloc[(paper.ratio - r_max).abs().argsort().iloc[0]]  # the paper's row nearest our largest ratio

    def at(lmb, criterion, r):
        sel = rows[(rows["lambda"] == lmb) & (rows.criterion == criterion) & (abs(rows.ratio - r) < 1e-9)]
        return sel.iloc[0]

    drops = {lmb: float(at(lmb, "unpruned", 0).psnr - at(lmb, "activation range", r_max).psnr) for lmb in lambdas}
    paper_drop = float(p0.psnr_db - pr.psnr_db)
    n_q = sum(d <= paper_drop + QUALITY_TOL_DB for d in drops.values())
    others = {c: float(at(lam, "unpruned", 0).psnr - at(lam, c, r_max).psnr)
              for c in rows.criterion.unique() if c not in ("unpruned", "activation range")}
    best_other = min(others, key=others.get) if others else None
    gap = others[best_other] - drops[lam] if best_other else float("nan")
    ref, top = at(lam, "unpruned", 0), at(lam, "activation range", r_max)
    paper_macs = float(p0.macs_M_384x256 / pr.macs_M_384x256)
    ours_macs = float(ref.macs_384x256 / top.macs_384x256)
    paper_time = float(p0.time_s / pr.time_s)
    ours_time = float(top.decode_speedup)
    kept_paper, kept_ours = float(pr.decoder_params_M / p0.decoder_params_M), float(top.decoder_params / ref.decoder_params)
    section = "Paper vs ours"
    out = [
        claims.make("liao-quality", f"pruning the decoder by activation range and fine-tuning loses about "
                    f"{paper_drop:.2f} dB at r = {pr.ratio:.2f}",
                    f"{p0.psnr_db:.2f} → {pr.psnr_db:.2f} dB at r = {pr.ratio:.2f}",
                    ", ".join(f"{d:.2f} dB at λ = {lmb:g}" for lmb, d in drops.items()) + f" (r = {r_max:.2f})",
                    claims.share(n_q, len(drops)),
                    f"the loss at each λ must be within {QUALITY_TOL_DB} dB of the paper's or smaller "
                    f"({n_q} of {len(drops)} are)", section),
    ]
    if best_other:
        out.append(claims.make(
            "liao-criterion", "the activation range is the criterion that finds the channels a decoder can lose "
            "(the slides compare no other criterion)", "activation range (no other criterion shown)",
            f"{drops[lam]:.2f} dB lost by activation range vs {others[best_other]:.2f} dB by {best_other}, "
            f"the best other criterion (λ = {lam:g}, r = {r_max:.2f})",
            "reproduced" if gap > QUALITY_TOL_DB else "not reproduced",
            f"the activation range must lose at least {QUALITY_TOL_DB} dB less than every other criterion "
            "at the same ratio and fine-tuning budget", section))
    out += [
        claims.make("liao-size", "the pruned decoder keeps under half of its parameters at the largest ratio",
                    f"{p0.decoder_params_M:.2f} → {pr.decoder_params_M:.2f} M",
                    f"{ref.decoder_params / 1e6:.3f} → {top.decoder_params / 1e6:.3f} M ({kept_ours:.0%} kept)",
                    "reproduced" if abs(kept_ours - kept_paper) <= 0.05 else "not reproduced",
                    f"the kept share within 5 points of the paper's {kept_paper:.0%}", section),
        claims.make("liao-flops", "the pruned decoder needs about 3× fewer FLOPs",
                    f"{p0.macs_M_384x256:.0f} → {pr.macs_M_384x256:.0f} M", f"{ours_macs:.2f}× fewer MACs "
                    f"({ref.macs_384x256 / 1e6:.0f} → {top.macs_384x256 / 1e6:.0f} M at 384×256)",
                    claims.at_least(ours_macs, paper_macs), claims.at_least_rule(paper_macs), section),
        claims.make("liao-time", "the pruned decoder decodes faster", f"{p0.time_s:.2f} → {pr.time_s:.2f} s",
                    f"{ours_time:.2f}× faster whole decode (λ = {lam:g}, this CPU, one interleaved run)",
                    claims.at_least(ours_time, paper_time), claims.at_least_rule(paper_time), section),
    ]
    facts = {"r_max": r_max, "drops": drops, "others": others, "best_other": best_other, "gap": gap,
             "paper_drop": paper_drop, "paper_macs": paper_macs, "paper_time": paper_time}
    return out, facts
