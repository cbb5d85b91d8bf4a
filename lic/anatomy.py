"""Where encode and decode time goes, stage by stage, and what a MAC cut can buy (Amdahl).

    rows = anatomy({"zoo": model, "pruned": other}, images, repeats=5)   # one interleaved run
    bound = amdahl_bound(rows, "zoo", stage_macs(model), stage_macs(other))

The stages are the calls CompressAI's ``compress`` / ``decompress`` make, timed where they are
made (the model's code is not copied): the transforms (``g_a``, ``h_a``, ``h_s``, ``g_s``), the
entropy coding of z and y, the scale → index table, and the serial autoregressive loop of mbt2018
and cheng2020-attn (which calls the context model and the coder per latent and is timed as one
stage). A call made inside another timed one counts for the outer one only; what no stage covers
(padding, copies, ``clamp``) is ``other``. Works the same on a deployed model (:mod:`lic.deploy`).
"""
from __future__ import annotations

import contextlib
import statistics
import time

import torch
from tqdm import tqdm

from .data import pad_to, to_tensor
from .evaluate import MIN_SIZE, PAD, macs

# (attribute path, stage name); modules are timed through their forward
STAGES = (
    ("g_a", "g_a"), ("h_a", "h_a"), ("h_s", "h_s"), ("g_s", "g_s"),
    ("entropy_bottleneck.compress", "z encode"), ("entropy_bottleneck.decompress", "z decode"),
    ("gaussian_conditional.build_indexes", "index table"),
    ("gaussian_conditional.compress", "y encode"), ("gaussian_conditional.decompress", "y decode"),
    ("_compress_ar", "autoregressive loop"), ("_decompress_ar", "autoregressive loop"),
)
TRANSFORM_STAGES = ("g_a", "h_a", "h_s", "g_s")  # the stages whose work is MACs
DECODE_ORDER = ("z decode", "h_s", "index table", "y decode", "autoregressive loop", "g_s", "other")
ENCODE_ORDER = ("g_a", "h_a", "z encode", "z decode", "h_s", "index table", "y encode",
                "autoregressive loop", "other")


class _Clock:
    def __init__(self):
        self.depth, self.seconds = 0, {}

    def wrap(self, stage, fn):
        def timed(*args, **kwargs):
            if self.depth:  # inside another timed stage: that one counts it
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
                self.depth -= 1
        return timed


def _resolve(model, path):
    obj = model
    *owners, name = path.split(".")
    for o in owners:
        obj = getattr(obj, o, None)
        if obj is None:
            return None, None
    if not hasattr(obj, name):
        return None, None
    return obj, name


@contextlib.contextmanager
def stage_clock(model):
    """Time ``model``'s stages while the block runs; yields the clock (``clock.seconds``)."""
    clock, patched = _Clock(), []
    for path, stage in STAGES:
        owner, name = _resolve(model, path)
        if owner is None:
            continue
        target = getattr(owner, name)
        if isinstance(target, torch.nn.Module):  # time the module's forward, wherever it is called from
            owner, name, target = target, "forward", target.forward
        owner.__dict__[name] = clock.wrap(stage, target)
        patched.append((owner, name))
    try:
        yield clock
    finally:
        for owner, name in patched:
            del owner.__dict__[name]


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
    new = sum(ms * (point_macs[s] / ref_macs[s] if s in TRANSFORM_STAGES and ref_macs.get(s) else 1.0)
              for s, ms in t.items())
    return sum(t.values()) / new


def shares(rows, model: str, phase="decode") -> dict:
    """{stage: share of the phase's time} of one model."""
    return {r["stage"]: r["share"] for r in rows if r["model"] == model and r["phase"] == phase and r["stage"] != "total"}


def figure(rows, phase="decode"):
    """Where ``phase`` time goes, one horizontal bar per model, stages stacked in milliseconds and
    labelled in place when wide enough (the book's column width)."""
    from . import report

    models = list(dict.fromkeys(r["model"] for r in rows if r["phase"] == phase))
    stages = list(dict.fromkeys(r["stage"] for r in rows if r["phase"] == phase and r["stage"] != "total"))
    fig, axes = report.figure(1, 1, height=0.5 + 0.45 * len(models))
    ax = axes[0][0]
    ms = {(r["model"], r["stage"]): r["ms"] for r in rows if r["phase"] == phase}
    widest = max(ms.get((m, "total"), 0.0) for m in models) or 1.0
    for i, m in enumerate(models):
        left = 0.0
        for s in stages:
            w = ms.get((m, s), 0.0)
            ax.barh(i, w, left=left, color=report.color_of(s), edgecolor="white", linewidth=0.5)
            if w > 0.08 * widest:
                ax.text(left + w / 2, i, s, ha="center", va="center", fontsize=7, color="white")
            left += w
    ax.set_yticks(range(len(models)), models)
    ax.invert_yaxis()
    ax.set(xlabel=f"{phase} time (ms), stage by stage")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=report.color_of(s), label=s) for s in stages], loc="lower center",
               ncol=min(6, len(stages)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12 + 0.08 * ((len(stages) - 1) // 6), 1, 1))  # the legend below the bars
    return fig
