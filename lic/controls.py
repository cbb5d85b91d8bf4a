"""The controls a pruning study owes its reader (chapter ``07_controls``): the narrow decoder a
practitioner wants, obtained without pruning, at the decode MACs of Liao's pruned decoders.

- **Scratch** (Liu et al., ICLR 2019): the zoo architecture with a narrow g_s trained from scratch
  with the zoo's own schedule — ``python -m lic.zoo train --decoder-width W``
  (:func:`lic.surgery.narrow_synthesis`); this module only finds ``W``.
- **Distilled**: a freshly initialised narrow g_s learns to reproduce the zoo model's
  reconstruction from the zoo's ŷ (encoder, hyper path and entropy models frozen: the bitstream is
  the zoo's) at the zoo's learning rate (it starts from scratch), then a short fine-tune against the
  image as Liao's fine-tune does — the same frozen parts, the same learning rate, the same loop
  (:func:`lic.train.train`); the same total steps as Liao's (and 10× them).

    from lic import controls
    W = controls.width_at_ratio(zoo_model, 0.55)              # Liao's r = 0.55 decoder MACs, uniform
    student = controls.distill(zoo_model, W, data, steps=1000, lmbda=0.013, scale=S)
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn

from . import liao, surgery
from .train import TrainConfig, train

# of a distilled decoder's steps, this share reproduces the teacher; the rest fine-tunes on the image
DISTILL_SHARE = 0.5


def full_width(model) -> int:
    """The hidden width of ``model``'s g_s (its narrowest hidden layer)."""
    return min(surgery.shape_of(model.get_submodule(conv))[1] for conv, _, _ in surgery.hidden_layers(model))


def narrow_copy(model, width: int):
    """A copy of ``model`` whose g_s has ``width`` hidden channels, freshly initialised."""
    return surgery.narrow_synthesis(copy.deepcopy(model), width)


def width_at_ratio(model, ratio: float, size=(512, 768)) -> int:
    """The uniform hidden width whose g_s MACs (at ``size``, GDN included) are closest to those of
    Liao's decoder pruned by ``ratio`` (the share of decoder parameters removed, same kept
    fraction per layer: :func:`lic.liao.keep_counts`)."""
    pruned = copy.deepcopy(model)
    liao.prune_decoder(pruned, ratio, {c: torch.arange(surgery.shape_of(pruned.get_submodule(c))[1], 0, -1).float()
                                       for c, _, _ in surgery.hidden_layers(pruned)})
    target = liao.decoder_macs(pruned, *size)
    return min(range(1, full_width(model) + 1),
               key=lambda w: abs(liao.decoder_macs(narrow_copy(model, w), *size) - target))


class Distill(nn.Module):
    """The student's training view: ŷ from the frozen teacher's analysis (rounded, as the decoder
    sees it), the teacher's reconstruction as the target. ``forward`` returns the loop's contract
    (:func:`lic.train.rd_loss`): no rate (the bitstream is the teacher's) and, as the distortion,
    λ·255²·MSE between the student's and the teacher's reconstructions; the reported ``mse`` is
    the student's against the image."""

    def __init__(self, teacher, student, lmbda: float):
        super().__init__()
        self.teacher, self.student, self.lmbda = teacher, student, lmbda
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        with torch.no_grad():
            y_hat = torch.round(self.teacher.g_a(x.float()))
            target = self.teacher.g_s(y_hat)
        x_hat = self.student.g_s(y_hat)
        d = self.lmbda * 255 ** 2 * ((x_hat.float() - target.float()) ** 2).flatten(1).mean(1)
        return {"x_hat": x_hat, "likelihoods": {"none": torch.ones(x.shape[0], 1, device=x.device)},
                "distortion": d}


def distill(teacher, width: int, data, steps: int, lmbda: float, scale, run_dir=None, progress=True):
    """The zoo model ``teacher`` with its g_s replaced by a ``width``-channel one that was trained
    for ``steps`` in all: :data:`DISTILL_SHARE` of them reproducing the teacher's reconstruction
    (:class:`Distill`), the rest against the image (g_s only; encoder, hyper path and entropy
    models are the teacher's, so is the bitstream). Resumable from ``run_dir``."""
    teacher = copy.deepcopy(teacher).eval()
    student = narrow_copy(teacher, width)
    first = int(round(steps * DISTILL_SHARE))
    tag = f"w{width}-{steps}-{lmbda:.4f}"
    state = (lambda part: Path(run_dir) / f"{tag}-{part}.state.pt") if run_dir else (lambda part: None)
    seconds = 0.0
    if first:
        view = Distill(teacher, student, lmbda)
        # a fresh decoder learns at the zoo's own rate: Liao's fine-tune rate barely moves one
        # (tried first: the decoders stayed 1.2–6.9 dB below the zoo's at equal rate even at 10x Liao's steps)
        cfg = TrainConfig.from_scale(scale, lmbda, steps=first, eval_every=0, late_crop=0, late_frac=0.0)
        seconds += train(view, data, cfg, checkpoint=state("distill"), params=list(student.g_s.parameters()),
                         progress=progress, desc=f"distil g_s w={width} λ={lmbda}")[-1]["elapsed_s"]
    if steps - first:
        cfg = TrainConfig.from_scale(scale, lmbda, steps=steps - first, lr=liao.FINETUNE_LR,
                                     lr_final=liao.FINETUNE_LR_FINAL, eval_every=0, late_crop=0, late_frac=0.0)
        seconds += train(student, data, cfg, checkpoint=state("finetune"), params=list(student.g_s.parameters()),
                         progress=progress, desc=f"fine-tune g_s w={width} λ={lmbda}")[-1]["elapsed_s"]
    student.train_seconds = seconds  # training time on this machine (a resumed run: summed over its parts)
    return student.eval()


# ---------------------------------------------------------------------------------------------
# operating points (06_synthesis measures them beside every other chapter's) and the questions

CHAPTER = "07_controls"
LIAO = "Liao (decoder pruning)"  # 01_liao's method name on its points
DECAYED = "mask decay"  # the EVC control's method name (lic.maskdecay)
MARGIN_PP = 0.5  # one method beats another when its Δrate at equal PSNR is lower by more than this (percentage points)
MARGIN_DB = 0.02  # ... or, on the same bitstream, its PSNR higher by more than this (≈ 0.5 pp of rate on the zoo curve between Liao's λ)


def scratch_view(arch: str, lmbda: float, width: int, scale, root=None):
    """The zoo architecture with a ``width``-channel g_s trained from scratch with the zoo's schedule
    (``python -m lic.zoo train --decoder-width W``): an operating point's rebuild."""
    from . import zoo

    return zoo.get(arch, lmbda, scale.with_(decoder=width), root=root, train_missing=False)


def scratch_budget(arch: str, lmbda: float, width: int, scale) -> dict:
    """{"steps", "train_seconds"} of a scratch decoder from its family's manifest, the steps of the
    model it was fine-tuned from included (the zoo's schedule: λ = 0.0035 starts from 0.013's)."""
    from . import zoo

    m = zoo.read_manifest(scale.with_(decoder=width))
    e = m.get(zoo.model_name(arch, lmbda))
    if e is None:
        return {"steps": 0, "train_seconds": 0.0}
    before = m.get(e.get("started_from") or "", {})
    return {"steps": e["steps"] + before.get("steps", 0),
            "train_seconds": (e.get("train_seconds") or 0) + (before.get("train_seconds") or 0)}


def register_scratch(arch: str, lmbda: float, width: int, ratio: float, scale) -> dict:
    from . import points

    return points.register(CHAPTER, scale, method="scratch", arch=arch, lmbda=lmbda, variant=f"w={width}",
                           rebuild="lic.controls:scratch_view", spec={"arch": arch, "lmbda": lmbda, "width": width},
                           meta={"ratio": ratio, "width": width, **scratch_budget(arch, lmbda, width, scale)})


def register_distilled(student, teacher, arch: str, lmbda: float, width: int, ratio: float, steps: int, scale) -> dict:
    """A distilled decoder as a point: only its g_s is stored (the rest is the zoo model's)."""
    from . import points

    return points.register(CHAPTER, scale, student, method="distilled", arch=arch, lmbda=lmbda,
                           variant=f"w={width}, {steps} steps", base=teacher, rebuild="lic.zoo:get",
                           spec={"arch": arch, "lmbda": lmbda, "train_missing": False},
                           meta={"ratio": ratio, "width": width, "steps": steps,
                                 "train_seconds": getattr(student, "train_seconds", None)})


def register_decayed(model, teacher, arch: str, lmbda: float, ratio: float, steps: int, scale) -> dict:
    """A mask-decayed decoder (:func:`lic.maskdecay.decay`) as a point: its g_s is stored (the rest
    is the zoo model's)."""
    from . import points

    return points.register(CHAPTER, scale, model, method=DECAYED, arch=arch, lmbda=lmbda,
                           variant=f"r={ratio:g}, {steps} steps", base=teacher, rebuild="lic.zoo:get",
                           spec={"arch": arch, "lmbda": lmbda, "train_missing": False},
                           meta={"ratio": ratio, "steps": steps, "train_seconds": getattr(model, "train_seconds", None)})


def plan(p, scale) -> list:
    """The dry run's lines for the chapter (``lic.book plan``): the narrow widths, the scratch
    decoders present or to train, and the distilled and mask-decayed decoders to train, with an
    estimate of the hours from the zoo's own training times."""
    import json

    from . import zoo

    arch = p.archs[0]
    lams = p.lambdas or [zoo.middle_lambda(scale), min(scale.lambdas)]
    res = Path(__file__).resolve().parents[1] / "data" / "results" / "01_liao" / f"{scale.key}.json"
    steps = json.loads(res.read_text())["finetune_steps"] if res.exists() else scale.prune_finetune_steps
    widths = {r: width_at_ratio(zoo.build_for(arch, scale), r) for r in p.ratios}
    full = [e for e in zoo.read_manifest(scale).values() if e["arch"] == arch and e.get("train_seconds")]
    s_per_step = sum(e["train_seconds"] for e in full) / max(1, sum(e["steps"] for e in full)) if full else None
    lines = ["  narrow g_s: " + ", ".join(f"r = {r:g} → width {w}" for r, w in widths.items())
             + f"; Liao's fine-tune: {steps:,} steps (01's results)"]
    for r in p.scratch_ratios:
        w = widths[min(widths, key=lambda q: abs(q - r))]
        have = zoo.read_manifest(scale.with_(decoder=w))
        miss = [lam for lam in lams if zoo.model_name(arch, lam) not in have]
        hours = sum(e["train_seconds"] for e in full if e["lambda"] in miss) / 3600
        lines.append(f"  scratch, width {w}: {len(lams) - len(miss)} of {len(lams)} trained" + (
            f"; to TRAIN (`python -m lic.zoo train --scale {scale.name} --arch {arch} --decoder-width {w} --lmbda λ`): "
            + ", ".join(f"λ = {lam:g}" for lam in miss) + (f" (≤ {hours:.1f} h: the full-width zoo models' time)" if hours else "")
            if miss else ""))
    n = 2 * len(lams) * len(p.ratios) * len(p.budgets)
    total = 2 * len(lams) * len(p.ratios) * sum(p.budgets) * steps
    est = f", ≤ {total * s_per_step / 3600:.1f} h at the zoo's s/step (only g_s trains: less)" if s_per_step else ""
    lines.append(f"  distilled and mask-decayed decoders: {n}, {total:,} steps in all{est}; resumable, "
                 "their states kept under the chapter's runs folder")
    return lines


# (claim id, winner, loser, which rows, the question): the controls at Liao's own fine-tune budget
QUESTIONS = (
    ("controls-scratch", LIAO, "scratch", None,
     "Liao's pruned decoder costs less rate than the same decoder width trained from scratch with the zoo's schedule"),
    ("controls-distilled", LIAO, "distilled", 1,
     "Liao's pruned decoder costs less rate than the same decoder width distilled from the zoo model"),
    ("controls-mask-decay", DECAYED, LIAO, 1,
     "mask decay costs less rate than Liao's pruning, for the same decoder and the same training steps"),
)


def claims_for(rows: list, bars) -> list:
    """The chapter's questions as claims (this book's own, :data:`QUESTIONS`; the margin from
    ``data/papers/claims.csv``), each decided per (λ, ratio) with :func:`lic.claims.share`; a
    control trained for several budgets is compared at Liao's own (``budget`` 1)."""
    from . import claims

    b = bars[bars.chapter == CHAPTER].set_index("claim").value.astype(float)
    margin = b["Δrate at equal PSNR lower than the control's by more than"]
    margin_db = b["PSNR on the same bitstream higher than the control's by more than"]
    out = []
    for cid, winner, loser, budget, question in QUESTIONS:
        sub = [r for r in rows if budget is None or r.get("budget") in (None, budget)]
        cases = beats(sub, winner, loser, margin, margin_db)
        control = loser if winner == LIAO else winner
        out.append(claims.make(
            cid, f"{question}, at equal decode MACs", f"Δrate lower by > {margin:g} pp (or PSNR higher by > {margin_db:g} dB)",
            (f"{sum(c['met'] for c in cases)} of {len(cases)} (λ, r); " + _gaps(cases, winner, loser) if cases else
             f"no {control} decoder measured with a Δrate, or the same bitstream, beside Liao's"),
            claims.share(sum(c["met"] for c in cases), len(cases)),
            f"per (λ, r): {winner}'s Δrate at equal PSNR vs the zoo lower than {loser}'s by more than "
            f"{margin:g} percentage points; where one of them has no Δrate (PSNR off the zoo curve's range) "
            f"but both decode the same bitstream, {winner}'s PSNR higher by more than {margin_db:g} dB", "Paper vs ours"))
    return out


def beats(rows: list, winner: str, loser: str, margin: float = MARGIN_PP, margin_db: float = MARGIN_DB) -> list:
    """Per (λ, Liao ratio) where both decoders exist and can be compared: {"lambda", "ratio", "by",
    "gap", "met"}. By Δrate at equal PSNR vs the zoo where both have one ("by" "Δrate"; "gap": the
    winner's minus the loser's, pp; "met": lower by more than ``margin``); else, when both decode
    the same bitstream (the same bpp: decoders fine-tuned behind the zoo's encoder), by PSNR at
    that rate ("by" "PSNR"; "gap": winner's minus loser's, dB; "met": higher by more than
    ``margin_db``). A decoder off the zoo's PSNR range with a bitstream of its own is not compared.
    Rows are :func:`lic.synthesis.measure`'s; a row's ratio is in its ``ratio`` field."""
    def pick(method):
        return {(r["lambda"], round(r["ratio"], 2)): r for r in rows if r["method"] == method and r.get("ratio")}
    a, b = pick(winner), pick(loser)
    out = []
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if _finite(x.get("rate_vs_zoo_pct")) and _finite(y.get("rate_vs_zoo_pct")):
            gap = x["rate_vs_zoo_pct"] - y["rate_vs_zoo_pct"]
            out.append({"lambda": k[0], "ratio": k[1], "by": "Δrate", "gap": gap, "met": gap < -margin})
        elif x.get("bpp") is not None and y.get("bpp") is not None and math.isclose(x["bpp"], y["bpp"], rel_tol=1e-9):
            gap = x["psnr"] - y["psnr"]
            out.append({"lambda": k[0], "ratio": k[1], "by": "PSNR", "gap": gap, "met": gap > margin_db})
    return out


def _finite(v) -> bool:  # a results file stores NaN as null
    return v is not None and math.isfinite(v)


def _gaps(cases: list, winner: str, loser: str) -> str:
    """"Liao minus scratch: +1.00 to +2.00 pp (Δrate, 2); ..." for each way the cases were compared."""
    unit = {"Δrate": "pp", "PSNR": "dB"}
    parts = []
    for by in ("Δrate", "PSNR"):
        g = [c["gap"] for c in cases if c["by"] == by]
        if g:
            what = "Δrate at equal PSNR" if by == "Δrate" else "PSNR on the same bitstream"
            span = f"{g[0]:+.2f}" if len(g) == 1 else f"{min(g):+.2f} to {max(g):+.2f}"
            parts.append(f"{what} ({len(g)}), {winner} minus {loser}: {span} {unit[by]}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# the chapter's table, figure and sentence

ORDER = (LIAO, "scratch", "distilled", DECAYED)  # how the table and figure list the methods


def table(rows: list):
    """One row per measured decoder of the chapter (the zoo models left out): method, λ, Liao's r,
    training budget (steps; ``budget`` in multiples of Liao's), decode MACs, Δrate at equal PSNR
    and ΔPSNR at equal rate vs the zoo (the second exists off the zoo's PSNR range too), decode speed-ups (eager, and each deployed runtime measured) and training time."""
    import pandas as pd

    out = []
    for r in rows:
        if r["method"] not in ORDER or not r.get("ratio"):
            continue
        row = {"method": r["method"], "λ": r["lambda"], "Liao's r": r["ratio"],
               "training steps": r.get("steps"), "decode MACs (G)": r["decode_macs"] / 1e9,
               "Δrate vs zoo (%)": r["rate_vs_zoo_pct"], "Δrate extrapolated": bool(r.get("extrapolated")),
               "ΔPSNR at equal rate (dB)": r.get("psnr_vs_zoo_db", math.nan),
               "decode speed-up (x)": r["decode_speedup"],
               "spread (%)": r.get("decode_spread_pct")}
        for k in sorted(k for k in r if k.startswith("decode_speedup@")):
            row[f"speed-up, {k.split('@')[1]} g_s (x)"] = r[k]
        row["training (min)"] = r["train_seconds"] / 60 if r.get("train_seconds") else float("nan")
        out.append(row)
    t = pd.DataFrame(out)
    if t.empty:
        return t
    t["_m"] = t.method.map(ORDER.index)
    return t.sort_values(["λ", "Liao's r", "_m", "training steps"], ascending=[False, False, True, True]).drop(columns="_m")


def label(r) -> str:
    """A decoder's name in the figure: its method and, beside Liao's, its training budget."""
    return r["method"] if r["method"] in (LIAO, "scratch") else f"{r['method']}, {int(r['training steps']):,} steps"


CLIP_PCT = 100.0  # an extrapolated Δrate beyond this is clipped in :func:`figure`


def figure(t):
    """Δrate at equal PSNR vs the zoo of every decoder in :func:`table`'s ``t``, one panel per
    (λ, r): at the same decode MACs, which way to the narrow decoder costs the least rate. A Δrate
    extrapolated beyond the zoo's curve is hatched, and clipped (▸) past :data:`CLIP_PCT`."""
    from . import report
    from .synthesis import method_color  # 06's colours: one per method across the book's figures

    groups = list(t.groupby(["λ", "Liao's r"], sort=False))
    fig, axes = report.figure(1, len(groups), height=len(groups) * (0.3 * max(len(g) for _, g in groups) + 1.0))
    for ax, ((lam, r), g) in zip(axes[:, 0], groups):
        vals = g["Δrate vs zoo (%)"].tolist()
        extra = g["Δrate extrapolated"].tolist() if "Δrate extrapolated" in g else [False] * len(g)
        # the axis fits the Δrates but one extrapolated past +100 % (the rate doubled, far off the zoo's curve: a
        # number to read, not to draw to scale), which is clipped with its value printed
        ok = [v for v, e in zip(vals, extra) if math.isfinite(v) and not (e and v > CLIP_PCT)] or [0.0]
        lo, hi = min(0.0, *ok), max(0.0, *ok)
        pad = (0.55 if any(extra) else 0.35) * ((hi - lo) or 1.0)
        ax.set_xlim(lo - (pad if lo < 0 else 0.05 * (hi - lo or 1.0)), hi + pad)  # room for the labels
        shown = [min(max(v, lo - 0.5 * pad), hi + 0.5 * pad) if math.isfinite(v) else 0 for v in vals]
        ax.barh(range(len(g)), shown, color=[method_color(m) for m in g.method],
                hatch=["//" if e else None for e in extra])
        ax.set_yticks(range(len(g)), [label(x) for _, x in g.iterrows()], fontsize=8)
        ax.invert_yaxis()
        for i, (v, w, e) in enumerate(zip(vals, shown, extra)):
            if math.isfinite(v):
                text = f"{v:+.1f} %" + (" (extrap.)" if e else "")
                if w != v:  # clipped: the label inside the bar's end
                    ax.annotate(text + " ▸", (w, i), xytext=(-3 if v >= 0 else 3, 0), textcoords="offset points",
                                ha="right" if v >= 0 else "left", va="center", fontsize=8, color="white")
                else:
                    ax.annotate(text, (w, i), xytext=(3 if v >= 0 else -3, 0), textcoords="offset points",
                                ha="left" if v >= 0 else "right", va="center", fontsize=8)
            else:
                ax.annotate("no Δrate (off the zoo's PSNR range)", (0.02, i), xycoords=("axes fraction", "data"),
                            va="center", fontsize=8, color="grey")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"λ = {lam:g}, r = {r:g} (g_s of the same MACs)", fontsize=9)
    axes[-1, 0].set_xlabel("Δrate at equal PSNR vs the zoo model (%)")
    fig.tight_layout()
    return fig


def findings(t) -> str:
    """One clause per (λ, r): the cheapest decoder in rate, Liao's cost, and how many controls cost
    less than Liao's pruning (by any margin; the claims use :data:`MARGIN_PP`)."""
    def pct(v):
        return f"{v:+.1f} %" if math.isfinite(v) else "no Δrate (off the zoo's PSNR range)"

    parts = []
    for (lam, r), g in t.groupby(["λ", "Liao's r"], sort=False):
        ok = g[g["Δrate vs zoo (%)"].map(math.isfinite)].sort_values("Δrate vs zoo (%)")
        liao_rate = g[g.method == LIAO]["Δrate vs zoo (%)"]
        text = f"at λ = {lam:g} and r = {r:g}, "
        text += (f"the cheapest is {label(ok.iloc[0])} ({pct(ok.iloc[0]['Δrate vs zoo (%)'])})" if len(ok)
                 else "no decoder has a Δrate")
        liao_first = len(ok) and ok.iloc[0].method == LIAO
        if liao_first:
            text = text.replace(f"is {LIAO}", "is Liao's pruning itself")
        if len(liao_rate):
            v = float(liao_rate.iloc[0])
            others = ok[ok.method != LIAO]["Δrate vs zoo (%)"]  # the controls with a Δrate
            text += "" if liao_first else f", Liao's pruning {pct(v)}"
            if math.isfinite(v) and len(others):
                text += f" ({int((others < v).sum())} of {len(others)} controls cost less)"
        parts.append(text)
    return "; ".join(parts) if parts else "no decoder measured"


def speed_text(t) -> str:
    """The decode speed-ups of the decoders at each ratio (one architecture per ratio), eager, with
    the largest timing spread: how far apart decoders of the same MACs time."""
    by = [f"{g['decode speed-up (x)'].min():.2f}–{g['decode speed-up (x)'].max():.2f}× at r = {r:g}"
          for r, g in t.groupby("Liao's r", sort=False)]
    return f"decode speed-ups against the zoo model of {' and '.join(by)} (eager; timing spread up to " \
           f"{t['spread (%)'].max():.0f} %)" if by else "no decoder timed"
