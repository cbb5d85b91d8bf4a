"""Where encode and decode time goes, stage by stage, and what a MAC cut can buy (Amdahl).

    rows = anatomy({"zoo": model, "pruned": other}, images, repeats=5)   # one interleaved run
    bound = amdahl_bound(rows, "zoo", stage_macs(model), stage_macs(other))

The stages are the calls CompressAI's ``compress`` / ``decompress`` make, timed where they are
made (:mod:`lic.stages`): the transforms, the entropy coding of z and y, the scale → index table,
the autoregressive loop; what no stage covers (padding, copies, ``clamp``) is ``other``. Works the same on a deployed model (:mod:`lic.deploy`).
"""
from __future__ import annotations

import statistics
import time

import torch
from tqdm import tqdm

from .data import pad_to, to_tensor
from .evaluate import MIN_SIZE, PAD, macs
from .stages import DECODE_ORDER, ENCODE_ORDER, TRANSFORM_STAGES, stage_clock  # noqa: F401 (re-exported)


@torch.no_grad()
def anatomy(models: dict, images, repeats=5, progress=True, desc="anatomy") -> list:
    """Stage times of each codec's encode and decode, all codecs in one interleaved run (each
    repeat times every model on every image in turn). Returns rows {model, phase (encode|decode),
    stage, ms (median over repeats of the mean per image), share (of the phase's total), spread_pct
    of the total}."""
    xs = [pad_to(to_tensor(img), PAD, MIN_SIZE)[0] for _, img in images]
    streams = {}
    for name, m in models.items():
        m.eval()
        streams[name] = [m.compress(x) for x in xs]  # warm-up and the bitstreams to decode
        for enc in streams[name]:
            m.decompress(enc["strings"], enc["shape"])
    runs = {(n, ph): [] for n in models for ph in ("encode", "decode")}
    for _ in tqdm(range(repeats), desc=desc, disable=not progress, leave=False):
        for name, m in models.items():
            for phase in ("encode", "decode"):
                total, per = 0.0, {}
                for x, enc in zip(xs, streams[name]):
                    with stage_clock(m) as clock:
                        t0 = time.perf_counter()
                        m.compress(x) if phase == "encode" else m.decompress(enc["strings"], enc["shape"])
                        total += time.perf_counter() - t0
                    for s, v in clock.seconds.items():
                        per[s] = per.get(s, 0.0) + v
                per["other"] = total - sum(per.values())
                runs[(name, phase)].append({"total": total / len(xs), **{s: v / len(xs) for s, v in per.items()}})
    rows = []
    for (name, phase), reps in runs.items():
        totals = [r["total"] for r in reps]
        med_total = statistics.median(totals)
        spread = (max(totals) - min(totals)) / med_total * 100
        order = DECODE_ORDER if phase == "decode" else ENCODE_ORDER
        stages = [s for s in order if any(s in r for r in reps)]
        for s in stages + ["total"]:
            ms = 1e3 * statistics.median(r.get(s, 0.0) for r in reps)
            rows.append({"model": name, "phase": phase, "stage": s, "ms": ms,
                         "share": ms / (1e3 * med_total), "spread_pct": spread})
    return rows


@torch.no_grad()
def stage_macs(model, height=512, width=768) -> dict:
    """MACs of each transform stage for one ``height`` x ``width`` image ({stage: MACs})."""
    model.eval()
    x = torch.zeros(1, 3, height, width)
    out = {}
    y = model.g_a(x)
    out["g_a"] = macs(model.g_a, x)
    z = model.h_a(y)
    out["h_a"] = macs(model.h_a, y)
    out["h_s"] = macs(model.h_s, z)
    out["g_s"] = macs(model.g_s, y)
    return out


def amdahl_bound(rows, reference: str, ref_macs: dict, point_macs: dict, phase="decode") -> float:
    """The speed-up of ``phase`` a point's MAC cuts would give over ``reference`` if each transform
    stage's time scaled with its MACs and every other stage (entropy coding, index table,
    autoregressive loop, other) stayed as it is: reference total ÷ Σ stage time × MAC ratio."""
    t = {r["stage"]: r["ms"] for r in rows if r["model"] == reference and r["phase"] == phase and r["stage"] != "total"}
    return bound(t, ref_macs, point_macs)


def bound(stage_ms: dict, ref_macs: dict, point_macs: dict) -> float:
    """:func:`amdahl_bound` from the reference's stage times ({stage: ms}) directly."""
    new = sum(ms * (point_macs.get(s, 0) / ref_macs[s] if s in TRANSFORM_STAGES and ref_macs.get(s) else 1.0)
              for s, ms in stage_ms.items())
    return sum(stage_ms.values()) / new if new > 0 else float("inf")


def savings_in(ref_macs: dict, point_macs: dict) -> str:
    """The transform stage where a point saves the most MACs against its reference ("none" when it
    saves none)."""
    cut = {s: ref_macs.get(s, 0) - point_macs.get(s, 0) for s in TRANSFORM_STAGES}
    best = max(cut, key=cut.get)
    return best if cut[best] > 0 else "none"


def shares(rows, model: str, phase="decode") -> dict:
    """{stage: share of the phase's time} of one model."""
    return {r["stage"]: r["share"] for r in rows if r["model"] == model and r["phase"] == phase and r["stage"] != "total"}


def figure(rows, phase="decode"):
    """Where ``phase`` time goes: one horizontal bar per model, its stages stacked as shares of its
    time (so a 10 ms and a 500 ms decode read alike), each model's total in ms at the bar's end,
    stages labelled in place when wide enough; a fixed colour per stage."""
    import seaborn as sns

    from . import report

    models = list(dict.fromkeys(r["model"] for r in rows if r["phase"] == phase))
    stages = list(dict.fromkeys(r["stage"] for r in rows if r["phase"] == phase and r["stage"] != "total"))
    order = list(DECODE_ORDER if phase == "decode" else ENCODE_ORDER) + list(TRANSFORM_STAGES)
    stages.sort(key=lambda s: order.index(s) if s in order else len(order))
    palette = dict(zip(order, sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8)))
    fig, axes = report.figure(1, 1, height=0.9 + 0.4 * len(models))
    ax = axes[0][0]
    ms = {(r["model"], r["stage"]): r["ms"] for r in rows if r["phase"] == phase}
    for i, m in enumerate(models):
        total = ms.get((m, "total")) or sum(ms.get((m, s), 0.0) for s in stages) or 1.0
        left = 0.0
        for s in stages:
            w = 100 * ms.get((m, s), 0.0) / total
            ax.barh(i, w, left=left, color=palette.get(s, "grey"), edgecolor="white", linewidth=0.5)
            if w > 9:
                ax.text(left + w / 2, i, s, ha="center", va="center", fontsize=7, color="white")
            left += w
        ax.text(101, i, f"{total:.0f} ms", va="center", fontsize=7)
    ax.set_yticks(range(len(models)), models)
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xticks(range(0, 101, 25))
    ax.set(xlabel=f"share of {phase} time (%), stage by stage")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=palette.get(s, "grey"), label=s) for s in stages], loc="lower center",
               ncol=min(4, len(stages)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1 + 0.05 * ((len(stages) - 1) // 4), 1, 1))  # the legend below the bars
    return fig
