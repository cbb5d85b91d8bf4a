"""How much training each chapter's verdicts rest on, beside what its paper says it spent.

Ours is read from the committed manifests (steps, batch × crop, training time on the machines that
trained them); the papers' from ``data/papers/budgets.csv`` (their text, quoted, or "not stated").
The claims ledger prints both under each paper's table, so a verdict is read with its budget.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def patches(steps: int, schedule: dict) -> int:
    """Training patches one model saw: batch × steps, the late large-crop phase at its own batch."""
    batch, crop = schedule.get("batch") or 0, schedule.get("crop") or 0
    late, frac = schedule.get("late_crop") or 0, schedule.get("late_frac") or 0.0
    if not late:
        return int(steps * batch)
    late_steps = steps - int(steps * (1 - frac))
    late_batch = max(1, round(batch * (crop / late) ** 2))
    return int((steps - late_steps) * batch + late_steps * late_batch)


def _hours(entries) -> float:
    return sum(e.get("train_seconds") or 0 for e in entries) / 3600


def _shape(schedule: dict) -> str:
    if not schedule.get("batch"):
        return "batch not recorded"
    late = f", then {schedule['late_crop']}² for the last {schedule['late_frac']:.0%}" if schedule.get("late_crop") else ""
    return f"batch {schedule['batch']} × {schedule['crop']}²{late}"


def _steps_text(entries, what) -> str:
    groups = {}
    for e in entries:
        key = (e["steps"], _shape(e.get("schedule") or {}))
        groups.setdefault(key, []).append(e)
    return "; ".join(f"{len(g)} {what if len(g) > 1 else what.rstrip('s')} × {steps:,} steps ({shape})"
                     for (steps, shape), g in sorted(groups.items(), reverse=True))


def ours(chapter: str, scale) -> dict:
    """{"text", "steps" (the largest per model), "patches" (summed), "cpu_hours"} of ``chapter``'s
    training at ``scale``, from its manifests; text "" where the chapter trains nothing of its own."""
    from . import luo, store, zoo

    if chapter == "00_baselines":
        es = list(zoo.read_manifest(scale).values())
        return {"text": _steps_text(es, "base models"), "steps": max((e["steps"] for e in es), default=0),
                "patches": sum(patches(e["steps"], e.get("schedule") or {}) for e in es), "cpu_hours": _hours(es)}
    if chapter == "01_liao":
        res = _results(chapter, scale)
        if not res:
            return {"text": "", "steps": 0, "patches": 0, "cpu_hours": None}
        n = sum(1 for r in res.get("rows", []) if r.get("criterion") != "unpruned")
        return {"text": f"{n} pruned decoders × {res['finetune_steps']:,} fine-tuning steps (batch {scale.batch} × "
                        f"{scale.crop}²), from the zoo's models (their own budget above); fine-tuning time is part of "
                        "the chapter's run", "steps": res["finetune_steps"],
                "patches": n * res["finetune_steps"] * scale.batch, "cpu_hours": None}
    if chapter == "02_luo":
        es = list(luo.trained_variants(scale).values())
        if not es:
            return {"text": "", "steps": 0, "patches": 0, "cpu_hours": None}
        r = es[0]["recipe"]
        cfg, _ = luo.stage_configs(scale, r["lambda"], r["steps"], r["finetune_steps"])
        steps = [e["recipe"]["steps"] + e["recipe"]["finetune_steps"] for e in es]
        return {"text": f"{len(es)} hyper paths × up to {r['steps']:,} ResRep + {r['finetune_steps']:,} fine-tuning steps "
                        f"(batch {cfg.batch} × {cfg.crop}², the hyper path alone), from the zoo's models",
                "steps": max(steps), "patches": sum(steps) * cfg.batch, "cpu_hours": _hours(es)}
    m = store.read_manifest(chapter, scale)
    if chapter == "03_yin":
        es = [e for e in m.values() if e.get("steps") and not e.get("continued_from")]  # budget curves: apart
        return {"text": _steps_text(es, "variable-rate models") + ", each from the zoo's middle-λ model",
                "steps": max((e["steps"] for e in es), default=0),
                "patches": sum(patches(e["steps"], e.get("schedule") or {}) for e in es), "cpu_hours": _hours(es)}
    if chapter == "04_yu":
        parts = [f"{name}: " + " + ".join(f"{v:,} {k}" for k, v in e["steps"].items()) + " steps"
                 for name, e in sorted(m.items()) if isinstance(e.get("steps"), dict)]
        return {"text": "; ".join(parts) + " (trained here from scratch; pruning and int8 then without retraining, "
                        "as the paper, and with a fine-tune as our addition)",
                "steps": max((sum(e["steps"].values()) for e in m.values() if isinstance(e.get("steps"), dict)), default=0),
                "patches": None, "cpu_hours": _hours(m.values())}
    if chapter == "05_tao":
        nets = [e for k, e in m.items() if k.startswith("supernet") and e.get("steps") and not e.get("continued_from")]
        agents = [e for k, e in m.items() if k.startswith("agent")]
        text = _steps_text(nets, "supernets") + f", each from the zoo's model; {len(agents)} routing agents"
        return {"text": text, "steps": max((e["steps"] for e in nets), default=0),
                "patches": sum(patches(e["steps"], e.get("schedule") or {}) for e in nets), "cpu_hours": _hours(nets + agents)}
    if chapter == "07_controls":
        res = _results(chapter, scale)
        if not res:
            return {"text": "", "steps": 0, "patches": 0, "cpu_hours": None}
        t = [r for r in res["table"] if r["method"] != "Liao (decoder pruning)"]  # Liao's: 01's budget
        scratch = [r for r in t if r["method"] == "scratch"]
        short = [r for r in t if r["method"] != "scratch"]
        parts = ([f"{len(scratch)} narrow decoders from scratch, up to {max(r['training steps'] for r in scratch):,} "
                  "steps each (the zoo's schedule)"] if scratch else []) + (
            [f"{len(short)} distilled and mask-decayed g_s × "
             + " or ".join(f"{n:,}" for n in sorted({r['training steps'] for r in short}))
             + f" steps (batch {scale.batch} × {scale.crop}², g_s alone), from the zoo's models"] if short else [])
        secs = [r["training (min)"] * 60 for r in t if r.get("training (min)") == r.get("training (min)")]
        return {"text": "; ".join(parts), "steps": max((r["training steps"] for r in t), default=0),
                "patches": None, "cpu_hours": sum(secs) / 3600 if secs else None}
    return {"text": "", "steps": 0, "patches": 0, "cpu_hours": None}


def _results(chapter, scale):
    p = PROJECT / "data" / "results" / chapter / f"{scale.name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def paper(chapter: str, papers=None) -> str:
    """What the paper says it spent (``data/papers/budgets.csv``), with where it says so."""
    import pandas as pd

    t = pd.read_csv(Path(papers or PROJECT / "data" / "papers") / "budgets.csv")
    row = t[t.chapter == chapter]
    return "" if row.empty else f"{row.budget.iloc[0]} [{row.source.iloc[0]}]"


def line(chapter: str, scale, papers=None) -> str:
    """The ledger's budget line of one chapter (empty for chapters that train nothing)."""
    o, p = ours(chapter, scale), paper(chapter, papers)
    if not o["text"] and not p:
        return ""
    hours = f"; {o['cpu_hours']:.1f} CPU-hours (2 threads)" if o.get("cpu_hours") else ""
    seen = f"; {o['patches']:,} training patches" if o.get("patches") else ""
    return (f"**Budget.** Ours at `{scale.name}`: {o['text'] or 'nothing trained'}{seen}{hours}."
            + (f" The paper: {p}." if p else ""))


# ---------------------------------------------------------------------------------------------
# convergence: does a chapter's training still improve where it stopped?


def rd_cost(curve, lmbda: float):
    """R + λD on the validation images, per row of a learning curve (CompressAI's loss: estimated
    bpp + λ·255²·MSE, MSE from the PSNR of [0, 1] images): the mean over every λ or capacity the
    curve logs (``val_psnr@0.013``, ``val_psnr@C5``; a suffix that is no number takes ``lmbda``).
    None when the curve logs no validation columns (curves written before they were added)."""
    pairs = [(c, "val_bpp_est" + c[len("val_psnr"):]) for c in curve.columns if c.startswith("val_psnr")]
    pairs = [(p, b) for p, b in pairs if b in curve.columns]
    if not pairs:
        return None
    costs = []
    for p, b in pairs:
        suffix = p[len("val_psnr"):].lstrip("@")
        try:
            lam = float(suffix)
        except ValueError:
            lam = lmbda
        costs.append(curve[b] + lam * 255 ** 2 * 10 ** (-curve[p] / 10))
    return sum(costs) / len(costs)


def method_curves(chapter: str, scale) -> list:
    """[(model name, learning-curve file, λ)] of the models a chapter's verdicts rest on: the zoo's
    base models (00), Yin's variable-rate models (03), Tao's supernets (05), the narrow decoders
    trained from scratch (07). 01, 02 and 04 keep no learning curves of their fine-tunes or codecs."""
    from . import store, zoo

    if chapter == "00_baselines":
        d, m = zoo.zoo_dir(scale), zoo.read_manifest(scale)
        return [(k, d / e["curve"], e["lambda"]) for k, e in sorted(m.items()) if e.get("curve")]
    if chapter in ("03_yin", "05_tao"):
        d, m = store.models_dir(chapter, scale), store.read_manifest(chapter, scale)
        return [(k, d / e["curve"], e.get("lambda", e.get("lmbda"))) for k, e in sorted(m.items())
                if e.get("curve") and (d / e["curve"]).exists()]
    if chapter == "07_controls":  # its decoders trained from scratch (the zoo's narrow-g_s families)
        z = zoo.zoo_dir(scale)
        out = []
        for d in sorted(z.parent.glob(f"{z.name}-gs*")):
            m = zoo.read_manifest(scale.with_(decoder=int(d.name.rsplit("-gs", 1)[1])))
            out += [(f"{k} (g_s width {d.name.rsplit('-gs', 1)[1]})", d / e["curve"], e["lambda"])
                    for k, e in sorted(m.items()) if e.get("curve") and (d / e["curve"]).exists()]
        return out
    return []


# chapters whose curves are shown but do not qualify verdicts (lic.ledger.qualify): 07's questions set
# a method against a control, and a control still improving could move a verdict either way
NOT_QUALIFIED = ("07_controls",)


def convergence(chapter: str, scale) -> list:
    """Per model of :func:`method_curves`: whether its validation R + λD still falls over the last
    fifth of its run (:func:`lic.claims.still_improving`), or why that cannot be told."""
    import pandas as pd

    from .claims import still_improving

    out = []
    for name, path, lam in method_curves(chapter, scale):
        curve = pd.read_csv(path)
        cost = rd_cost(curve, lam or 0.0)
        if cost is None:
            out.append({"model": name, "improving": None, "why": "their curves were logged on the test images only, before validation evaluation was added"})
            continue
        r = still_improving(curve["step"], cost, higher_is_better=False, first_step=0)
        why = (f"R + λD {'still falls' if r['improving'] else 'flat'} over the last fifth: "
               f"{-r['gain']:+.4f} ± {r['se']:.4f}" if r["improving"] is not None
               else f"{r['points']} validation points in the last fifth of the run (3 needed)")
        out.append({"model": name, "improving": r["improving"], "why": why, "steps": int(curve["step"].max())})
    return out


def improving(chapter: str, scale) -> bool | None:
    """True when any of a chapter's method curves still improves; False when every one was told
    flat; None when none could be told."""
    told = [c["improving"] for c in convergence(chapter, scale) if c["improving"] is not None]
    return any(told) if told else None


def convergence_line(chapter: str, scale) -> str:
    """The ledger's convergence sentence of one chapter ("" where it keeps no learning curves)."""
    rows = convergence(chapter, scale)
    if not rows:
        return ""
    still = [r["model"] for r in rows if r["improving"]]
    flat = [r["model"] for r in rows if r["improving"] is False]
    unknown = [r for r in rows if r["improving"] is None]
    parts = []
    if still:
        parts.append(f"still improving at the end of its run: {', '.join(still)}" + (
            "" if chapter in NOT_QUALIFIED else " — this chapter's \"not reproduced\" verdicts hold at this budget only"))
    if flat:
        parts.append(f"converged (flat within noise): {', '.join(flat)}")
    if unknown:
        reasons = sorted({r["why"] for r in unknown})
        parts.append(f"not told for {len(unknown)} of {len(rows)} models: {'; '.join(reasons)}")
    return ("**Convergence** (validation R + λD over the last fifth of each run, never the test images): "
            + "; ".join(parts) + ".")


def pace_text(rows: list, metric: str, bar: float) -> str:
    """Whether ``metric`` (lower is better) of budget-curve ``rows`` (by steps) is closing on ``bar``,
    and how fast: points per doubling of steps from the first budget with a value to the last, and at
    that pace how many more doublings (and steps) the bar is off. With three budgets or more whose
    last pair keeps a different pace (by more than a tenth), both are given and the projection spans
    them: a curve that slows (or speeds up) is not extrapolated from its early pace alone."""
    ok = [r for r in rows if math.isfinite(r[metric])]
    if len(rows) < 2:
        return "one budget only so far (the stored model continues to more steps)"
    if len(ok) < 2 or ok[-1] is not rows[-1]:
        return "too few budgets with a value to tell a trend"
    last = ok[-1]
    gap = last[metric] - bar

    def pace(a):  # points per doubling of steps from budget ``a`` to the last
        return (a[metric] - last[metric]) / math.log2(last["steps"] / a["steps"])

    def off(per):
        return gap / per, _rounded(last["steps"] * 2 ** (gap / per))

    per = pace(ok[0])
    recent = pace(ok[-2]) if len(ok) > 2 else per
    if abs(recent - per) <= 0.1 * abs(per):
        if gap <= 0:
            return f"the gap closed by {per:.1f} points per doubling of steps"
        if per <= 0:
            return f"the gap did not close ({-per:+.1f} points per doubling of steps)"
        n, steps = off(per)
        return (f"the gap closes by {per:.1f} points per doubling of steps: at that pace the bar, {gap:.1f} points "
                f"away, is ≈ {n:.1f} more doublings off (≈ {steps} steps in all)")
    both = (f"{per:.1f} points per doubling of steps over the whole range, {recent:.1f} between the last two budgets "
            f"({'slowing' if recent < per else 'speeding up'})")
    if gap <= 0:
        return f"the gap closed: {both}"
    if recent <= 0:
        return f"the gap stopped closing: {both}"
    n_recent, s_recent = off(recent)
    if per <= 0:
        return (f"the gap only began to close: {both}; at the recent pace the bar, {gap:.1f} points away, is "
                f"≈ {n_recent:.1f} more doublings off (≈ {s_recent} steps in all)")
    n_all, s_all = off(per)
    lo, hi = sorted([(n_recent, s_recent), (n_all, s_all)])
    return (f"the gap closes by {both}: the bar, {gap:.1f} points away, is ≈ {lo[0]:.1f}–{hi[0]:.1f} more doublings "
            f"off at those paces (≈ {lo[1]}–{hi[1]} steps in all)")


def _rounded(n: float) -> str:
    """``n`` to two significant figures, in words a reader takes in at once (3,259,840 → "3.3 million")."""
    for size, word in ((1e9, "billion"), (1e6, "million")):
        if n >= size:
            return f"{n / size:.2g} {word}"
    return f"{float(f'{n:.2g}'):,.0f}"


def _steps_label(n: int) -> str:
    """20000 → "20k", 1600000 → "1.6M", 500 → "500": a tick label."""
    for div, unit in ((1_000_000, "M"), (1000, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def curve_figure(rows: list, metric: str, paper=None, label="ours", paper_label="paper"):
    """A claim's metric against training steps (one of :func:`lic.yin.budget_curve`'s columns, say),
    with the paper's value as a dashed line labelled in place: is the gap closing with compute?"""
    from . import report

    fig, axes = report.figure(1, 1, height=3.0)
    ax = axes[0][0]
    steps = [r["steps"] for r in rows]
    ax.plot(steps, [r[metric] for r in rows], marker="o", label=label)
    for r in rows:
        if r[metric] is not None and math.isfinite(r[metric]):  # a value the curves could not give: no label
            ax.annotate(f"{r[metric]:.1f}", (r["steps"], r[metric]), xytext=(0, 5), textcoords="offset points",
                        ha="center", fontsize=7)
    if paper is not None:
        ax.axhline(paper, color="k", ls="--", lw=0.8)
        ax.annotate(paper_label, (min(steps), paper), xytext=(0, 3), textcoords="offset points", fontsize=7)
    ax.set_xscale("log", base=2)  # the pace is read per doubling of the steps
    ax.set_xticks(steps, [_steps_label(s) for s in steps])
    ax.minorticks_off()
    ax.set(xlabel="training steps (log scale)", ylabel=metric)
    ax.margins(x=0.1, y=0.15)
    fig.tight_layout()
    return fig
