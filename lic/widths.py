"""Would a method's decode speed-up differ at the papers' widths? Each static geometry — a point's
decoder transforms (h_s, g_s) as fractions of its zoo model's channel counts — rebuilt with random
weights at CompressAI's widths and timed against the full decoder of the same width, under eager
PyTorch and a deployment runtime, in one interleaved run per width.

    geoms = {"Liao (r=0.55)": widths.geometry(pruned, zoo_model), ...}
    rows = widths.timings("bmshj2018-hyperprior", geoms, runtimes=("eager", "openvino"))

Only the transforms are timed (h_s on z, then g_s on ŷ, for a 768×512 image): the entropy coding
does not change with a geometry, and random weights time like trained ones. Architectures whose
layers keep their shapes as the widths grow (bmshj2018-hyperprior, mbt2018-mean); AdaNIC's
capacities are their uniform g_s fractions.
"""
from __future__ import annotations

import statistics
import time

import torch
from tqdm import tqdm

from .models.rate import OneModelAllRates
from .stages import codec_of
from .surgery import channel_config, fresh_like, set_module, shape_of

WIDTHS = ((64, 96), (128, 192), (192, 320))  # N / M: this book's cpu zoo; CompressAI's qualities 1–5; 6–8
ARCHS = ("bmshj2018-hyperprior", "mbt2018-mean")
PARTS = ("h_s", "g_s")
FULL = "full"


def geometry(point, zoo_model) -> dict:
    """{layer: (in fraction, out fraction)} of the point's h_s and g_s layers whose channels differ
    from the zoo model's ({} when none do: the point's decoder transforms are the zoo's)."""
    cap = getattr(point, "capacity", None)
    if cap is not None and hasattr(getattr(point, "net", None), "widths"):  # AdaNIC: a uniform g_s fraction
        f = point.net.widths[cap] / max(point.net.widths)
        return {} if f == 1 else _uniform(zoo_model, f)
    if isinstance(getattr(point, "model", None), OneModelAllRates):  # Yin's: the zoo's layers, gated per image
        return {}
    p, z = channel_config(codec_of(point)), channel_config(zoo_model)
    return {name: (p[name][0] / z[name][0], p[name][1] / z[name][1]) for name in p
            if name.split(".")[0] in PARTS and name in z and p[name] != z[name]}


def _uniform(zoo_model, f: float) -> dict:
    names = [n for n in channel_config(zoo_model) if n.startswith("g_s.")]
    out = {}
    for i, n in enumerate(names):
        out[n] = (1.0 if i == 0 else f, 1.0 if i == len(names) - 1 else f)
    return out


def build(arch: str, N: int, M: int, geom: dict):
    """``arch`` at widths N / M, random weights, its h_s and g_s layers narrowed by ``geom``."""
    from .zoo import build as build_arch

    torch.manual_seed(0)
    model = build_arch(arch, N=N, M=M).eval()
    for name, (fi, fo) in geom.items():
        module = model.get_submodule(name)
        ci, co = shape_of(module)
        set_module(model, name, fresh_like(module, max(1, round(fi * ci)), max(1, round(fo * co))))
    return model


def _inputs(model, height=512, width=768) -> tuple:
    z_ch = shape_of(model.h_s[0])[0]
    y_ch = shape_of(model.g_s[0])[0]
    return torch.rand(1, z_ch, height // 64, width // 64), torch.rand(1, y_ch, height // 16, width // 16)


def _decoder(model, runtime: str):
    """A callable running h_s(z) then g_s(ŷ) of ``model`` under ``runtime``."""
    if runtime != "eager":
        from .deploy import deploy

        model = deploy(model, runtime, parts=PARTS)
    return lambda z, y: (model.h_s(z), model.g_s(y))


@torch.no_grad()
def timings(arch: str, geoms: dict, widths=WIDTHS, runtimes=("eager",), repeats=5, progress=True,
            size=(512, 768)) -> list:
    """Rows {arch, N, M, geometry, runtime, ms (median), spread_pct, speedup (vs the full decoder of
    the same width and runtime, same run)} — every geometry × runtime of one width in one
    interleaved run, decoding an image of ``size`` (H, W; a Kodak image by default)."""
    rows = []
    for N, M in widths:
        calls = {}
        for g, geom in {FULL: {}, **geoms}.items():
            model = build(arch, N, M, geom)
            inputs = _inputs(model, *size)
            for rt in runtimes:
                run = _decoder(model, rt)
                run(*inputs)  # warm-up (and the runtime's first-call compile)
                calls[(g, rt)] = (run, inputs)
        times = {k: [] for k in calls}
        for _ in tqdm(range(repeats), desc=f"{arch} N={N}", disable=not progress, leave=False):
            for k, (run, inputs) in calls.items():
                t0 = time.perf_counter()
                run(*inputs)
                times[k].append(1e3 * (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in times.items()}
        for (g, rt), v in times.items():
            rows.append({"arch": arch, "N": N, "M": M, "geometry": g, "runtime": rt, "ms": med[(g, rt)],
                         "spread_pct": (max(v) - min(v)) / med[(g, rt)] * 100, "speedup": med[(FULL, rt)] / med[(g, rt)]})
    return rows


def figure(rows: list):
    """Speed-up of each geometry against its full decoder, by width; one panel per runtime, lines
    labelled at their right end."""
    from . import report

    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    fig, axes = report.figure(len(runtimes), 1, height=3.4)
    ends = {}
    for ax, rt in zip(axes[0], runtimes):
        ends[rt] = []
        for g in dict.fromkeys(r["geometry"] for r in rows if r["geometry"] != FULL):
            pts = [r for r in rows if r["runtime"] == rt and r["geometry"] == g]
            xs, ys = [r["N"] for r in pts], [r["speedup"] for r in pts]
            line, = ax.plot(xs, ys, "o-", ms=3, lw=1)
            ends[rt].append(((xs[-1], ys[-1]), g, line.get_color()))
        ax.axhline(1, color="grey", lw=0.8, ls=":")
        ns = sorted({r["N"] for r in rows})
        ax.set_xticks(ns, [f"{n}/{next(r['M'] for r in rows if r['N'] == n)}" for n in ns])
        ax.set_xlim(min(ns) - 10, max(ns) + (max(ns) - min(ns) + 20) * 0.75)  # room for the labels
        ax.set(title=rt, xlabel="widths N / M (random weights)", ylabel="speed-up vs the full decoder (×)")
    lo = min(a.get_ylim()[0] for a in axes[0])
    hi = max(a.get_ylim()[1] for a in axes[0])
    for a in axes[0]:
        a.set_ylim(lo, hi)  # one scale: runtimes compare across panels
    fig.tight_layout()
    for ax, rt in zip(axes[0], runtimes):  # labels spread so none overlaps, each in its line's colour
        end = ax.transAxes.inverted().transform(ax.transData.transform((max(ns), 0)))[0]
        report.label_column(ax, [p for p, _, _ in ends[rt]], [g for _, g, _ in ends[rt]], x=end + 0.06,
                            colors=[c for _, _, c in ends[rt]])
    return fig


def text(rows: list) -> str:
    """One sentence per runtime: the range of the geometries' speed-ups at the narrowest and the
    widest width timed."""
    out = []
    for rt in dict.fromkeys(r["runtime"] for r in rows):
        mine = [r for r in rows if r["runtime"] == rt and r["geometry"] != FULL]
        if not mine:
            continue
        lo, hi = min(r["N"] for r in mine), max(r["N"] for r in mine)

        def span(n):
            v = [r["speedup"] for r in mine if r["N"] == n]
            return f"{min(v):.2f}–{max(v):.2f}×"
        label = {n: f"{n}/{next(r['M'] for r in mine if r['N'] == n)}" for n in (lo, hi)}
        out.append(f"{rt}: {span(lo)} at {label[lo]}" + (f", {span(hi)} at {label[hi]}" if hi != lo else ""))
    return "; ".join(out) if out else "no geometry was timed"
