"""What chapter ``00_baselines`` says about the base models, as numbers and sentences for its page:
the measured bars (BD-rate against WebP and against CompressAI's own models, mean-scale against
scale hyperprior, what the context model buys), the schedule that replaced an earlier one, the
learning curves, and the training speed of this CPU's loop. The models themselves are
:mod:`lic.zoo`'s; each function here reads measurements and returns what the page glues, so the
notebook keeps to the story.
"""
from __future__ import annotations

import pandas as pd

from . import report, zoo
from .evaluate import bd

REF_ARCH = "bmshj2018-hyperprior"  # the architecture every bar is set for
SPEED_GOAL = 3.5                    # the zoo issue's goal for the training loop over plain fp32 eager


def _given(v) -> bool:
    return v is not None and not pd.isna(v)


def summary(models: pd.DataFrame, bd_table: pd.DataFrame, archs: list, on_kodak: bool) -> dict:
    """The base models' bars from the evaluation table ``models`` (one row per arch and λ: bpp,
    psnr, bpp_est, decode_ms) and ``bd_table`` (BD-rate of each arch against each anchor): the
    best family against WebP, each family against CompressAI's model of its architecture, the
    mean-scale prior and the context model against their simpler neighbours. Returns the values
    the results file keeps (``bar``, ``mean_vs``, ``ctx_bd``, ``webp_anchor``) and ``texts``, the
    page's glue."""
    webp_anchor = "WebP (published)" if on_kodak else "WebP (Pillow, here)"
    vs_webp = bd_table[bd_table.anchor == webp_anchor].set_index("arch")["BD-rate %"]
    best = vs_webp.idxmin() if vs_webp.notna().any() else archs[0]
    cai = bd_table[bd_table.anchor.str.startswith("CompressAI")].set_index("arch")["BD-rate %"]
    own = {a: {"bpp": models[models.arch == a].bpp.tolist(), "psnr": models[models.arch == a].psnr.tolist()}
           for a in archs}
    vs_ref = {a: bd(own[REF_ARCH], own[a])["bd_rate"] for a in archs if a != REF_ARCH and REF_ARCH in own}
    bar = vs_webp.get(REF_ARCH)          # the first bar: bmshj2018-hyperprior needs fewer bits than WebP
    mean_vs = vs_ref.get("mbt2018-mean")  # the second: the mean-scale prior is no worse than it
    ctx_bd, ctx_note = None, "not measured in this run (needs both mbt2018 and mbt2018-mean)"
    if {"mbt2018", "mbt2018-mean"} <= set(archs):  # what the autoregressive context model buys, and costs
        ctx_bd = bd(own["mbt2018-mean"], own["mbt2018"])["bd_rate"]
        slow = models[models.arch == "mbt2018"].decode_ms.median() / models[models.arch == "mbt2018-mean"].decode_ms.median()
        ctx_note = (f"BD-rate {report.pct(ctx_bd)} against mbt2018-mean, at {slow:.1f}× its median decode time "
                    "(the context model decodes the latent one position after another)")
    texts = {
        "webp_anchor": webp_anchor, "best_arch": best,
        "best_bd_webp": report.pct(vs_webp.get(best)),
        "price": "; ".join(f"{a}: {report.pct(v)}" for a, v in cai.items()) if len(cai) else
                 "not measured at this scale (no published curve on these test images)",
        "best_psnr": float(models.psnr.max()), "best_psnr_bpp": float(models.loc[models.psnr.idxmax(), "bpp"]),
        "max_est_gap": float((models.bpp / models.bpp_est - 1).abs().max() * 100),
        "vs_bmshj": "; ".join(f"{a}: {report.pct(v)}" for a, v in vs_ref.items()) or "no other architecture in this run",
        "bar_bd": f"{bar:+.1f} %" if _given(bar) else "not in this run",
        "bar_verdict": ("met" if bar < 0 else "not met") if _given(bar) else "not measured",
        "mean_bd": f"{mean_vs:+.1f} %" if _given(mean_vs) else "not in this run",
        "mean_verdict": ("met" if mean_vs <= 0 else "not met") if _given(mean_vs) else "not measured",
        "ctx_note": ctx_note,
    }
    return {"bar": float(bar) if _given(bar) else None, "mean_vs": float(mean_vs) if _given(mean_vs) else None,
            "ctx_bd": float(ctx_bd) if _given(ctx_bd) else None, "webp_anchor": webp_anchor, "texts": texts}


def learning_curves_figure(archs: list, scale):
    """One row per architecture: test PSNR and estimated bpp against step, the middle λ from
    scratch and each other λ drawn on from the weights it was fine-tuned from (dotted line)."""
    import matplotlib.pyplot as plt

    mid = zoo.middle_lambda(scale)
    shown = [a for a in archs if zoo.learning_curve(a, mid, scale) is not None]
    fig, axes = plt.subplots(max(1, len(shown)), 2, figsize=(12, 2.9 * max(1, len(shown))), squeeze=False)
    for row, arch in zip(axes, shown):
        first = zoo.learning_curve(arch, mid, scale)
        start = int(first.step.max())  # fine-tunes continue from the middle model's final weights
        for lmbda in scale.lambdas:
            lc = zoo.learning_curve(arch, lmbda, scale)
            if lc is None or "test_psnr" not in lc:
                continue
            if lmbda != mid:
                lc = pd.concat([first.tail(1).assign(step=0), lc]).assign(step=lambda d: d.step + start)
            label = f"λ={lmbda}" + (" (from scratch)" if lmbda == mid else "")
            row[0].plot(lc.step, lc.test_psnr, marker=".", label=label)
            row[1].plot(lc.step, lc.test_bpp_est, marker=".", label=label)
        for ax in row:
            ax.axvline(start, color="grey", ls=":", lw=1)
        row[0].set(title=arch, xlabel="step", ylabel="test PSNR (dB)")
        row[1].set(title=arch, xlabel="step", ylabel="test bpp (estimate)")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


SCHEDULE_COLUMNS = ["arch", "zoo", "models", "steps (middle λ)", "steps (others)", "train hours", "BD-rate vs WebP %"]


def schedule(scale) -> tuple:
    """The zoo schedules replaced by a longer one at this scale: (table, figure of the middle λ's
    learning curves under the replaced schedule (dashed) and the current one, texts for the page)."""
    import matplotlib.pyplot as plt

    rows = zoo.schedule_comparison(scale)
    table = pd.DataFrame(rows, columns=SCHEDULE_COLUMNS)
    mid = zoo.middle_lambda(scale)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    for arch in table.arch.unique():
        curves = [(zoo.superseded_curve(e, scale), e["steps"], "replaced", "--") for e in zoo.superseded(scale).values()
                  if e["arch"] == arch and e["lambda"] == mid]
        steps = zoo.read_manifest(scale)[zoo.model_name(arch, mid)]["steps"]
        curves.append((zoo.learning_curve(arch, mid, scale), steps, "current", "-"))
        for lc, n, kind, ls in curves:
            if lc is not None:
                axes[0].plot(lc.step, lc.test_psnr, marker=".", ls=ls, label=f"{arch}, {n} steps ({kind})")
                axes[1].plot(lc.step, lc.test_bpp_est, marker=".", ls=ls, label=f"{arch}, {n} steps ({kind})")
    axes[0].set(xlabel="step", ylabel="test PSNR (dB)", title=f"middle λ={mid}, from scratch")
    axes[1].set(xlabel="step", ylabel="test bpp (estimate)", title=f"middle λ={mid}, from scratch")
    if len(table):
        axes[0].legend(fontsize=7)
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no zoo model was replaced at this scale", ha="center", transform=ax.transAxes)
    fig.tight_layout()

    def before_after(arch, g):
        old, new = (g.set_index("zoo").loc[k] for k in ("replaced", "current"))
        return (f"{arch}: {old['BD-rate vs WebP %']:+.1f} % with {old['steps (middle λ)']} steps → "
                f"{new['BD-rate vs WebP %']:+.1f} % with {new['steps (middle λ)']} steps")

    none = "no zoo model was replaced at this scale"
    texts = {"schedule_decided": "; ".join(f"{r['arch']}, decided on {r['decided on']}" for r in rows
                                           if r["decided on"]) or none,
             "schedule_summary": "; ".join(before_after(a, g) for a, g in table.groupby("arch")) or none}
    return table, fig, texts


def speed_texts(speed: dict, widths: dict, scale_name: str) -> dict:
    """The page's sentences about :func:`lic.train.throughput`'s measurement ``speed`` of
    :data:`REF_ARCH` at ``widths``, and about bf16's quality at equal steps where
    ``benchmarks/bf16_quality.py`` measured it at this scale."""
    texts = {"speed_ratio": speed["ratio"], "speed_verdict": "met" if speed["ratio"] >= SPEED_GOAL else "not met",
             "speed_plain": speed["plain_fp32_s"], "speed_lic": speed["lic_s"], "speed_auto": speed["auto"],
             "speed_cpu": speed["cpu"],
             "speed_what": f"{REF_ARCH} at {', '.join(f'{k}={v}' for k, v in widths.items())}, {speed['steps']} steps "
                           f"× {speed['repeats']} interleaved repeats, {speed['threads']} threads",
             "speed_spread": max((max(r["runs"]) - min(r["runs"])) / r["s_per_step"] * 100 for r in speed["loops"])}
    try:  # quality at equal steps: two from-scratch runs, minutes to hours, so a benchmark, not this page
        q = report.load_results("bench_bf16_quality", scale_name)
        fp32, bf16 = q["runs"]["fp32 eager"], q["runs"]["bf16 + channels_last"]
        texts["bf16_quality"] = (
            f"after {q['steps']} steps from the same start ({q['arch']}, λ={q['lambda']}, "
            f"{q['test_images']} test images, real bitstreams), bf16 + channels_last reaches "
            f"{bf16['psnr']:.2f} dB at {bf16['bpp']:.4f} bpp and fp32 {fp32['psnr']:.2f} dB at {fp32['bpp']:.4f} bpp: "
            f"{bf16['psnr'] - fp32['psnr']:+.3f} dB, {100 * (bf16['bpp'] / fp32['bpp'] - 1):+.2f} % bits, "
            f"R + λD {100 * (bf16['rd'] / fp32['rd'] - 1):+.1f} %, at {fp32['s_per_step'] / bf16['s_per_step']:.1f}× "
            f"the speed (measured on {q['environment']['date'][:10]}, CPU {q['environment']['cpu']})")
    except FileNotFoundError:
        texts["bf16_quality"] = f"not measured at this scale (`python benchmarks/bf16_quality.py --scale {scale_name}`)"
    return texts


def speed_table(speed: dict) -> pd.DataFrame:
    """Every loop's median seconds per step, its repeats, and its ratio to plain fp32 eager."""
    return pd.DataFrame([{"loop": r["loop"], "s/step (median)": round(r["s_per_step"], 3),
                          "repeats": ", ".join(f"{t:.3f}" for t in r["runs"]),
                          "vs plain fp32": f"{speed['plain_fp32_s'] / r['s_per_step']:.2f}×",
                          "auto's choice": "✓" if r["auto"] else ""} for r in speed["loops"]])
