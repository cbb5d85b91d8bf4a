"""The cross-method chapter (``06_synthesis``): every chapter's operating points (:mod:`lic.points`)
loaded and measured again on the same test images, the same CPU and, per architecture, in one
interleaved timing run, so that their speed-ups and rate costs compare.

Per point: real-bitstream PSNR, MS-SSIM and bpp; encode and decode MACs of the real paths
(``compress`` / ``decompress``, counted by FlopCounterMode on a crop of the first test image,
the scale's ``mac_size`` square (256 at ``cpu``), and scaled by area to 768x512; an int8 model's are its float twin's, ``mac_reference``:
the counter sees float convolutions only, and int8 does the same multiply-accumulates); parameters and fp16 bytes; encode and decode latency from one round-robin run over all
the points of an architecture (median, spread). Against the zoo model of the same architecture:

- **Δrate at equal PSNR** — the bits the point spends over what the zoo's curve (its four λ, log-bpp
  interpolated linearly in PSNR) needs for the point's PSNR, the end segments extended at most
  :data:`EXTRAPOLATE_DB` beyond the curve (``extrapolated`` says so; ``nan`` farther out). A
  point-wise BD-rate: it serves methods that have one λ as well as four; and **ΔPSNR at equal
  rate** the same way;
- **BD-rate** over a family's λ when it has the zoo's four;
- **decode speed-up** against the zoo model at the point's λ, from the same timing run.
"""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import anatomy, points
from .data import pad_to, to_tensor
from .evaluate import (EXTRAPOLATE_DB, MIN_SIZE, PAD, REACH_FACTOR, bd, evaluate, fingerprintable,  # noqa: F401
                       interleaved_times, parameter_count, psnr_at, quality_cached, rate_at, serialized_bytes)
from .precision import cpu_model
from .scales import BASE_WIDTH, WIDER, WIDTHS
from .stages import stage_macs
from .weights import fingerprint

CHAPTERS = points.CHAPTERS
ZOO = "zoo"           # the method name of the base models (00_baselines' points)
RATE_BUDGET = 2.0     # % Δrate a practitioner might pay for speed: the "what to use" cut


def collect(scale, chapters=CHAPTERS) -> tuple:
    """(points, {chapter: the command that makes its points}) — the second for chapters without any.
    Points of a chapter run on a wider family (its own page, e.g. ``01_liao-N128``) come too, with
    that family's zoo models as their reference (:func:`widened`)."""
    found, missing = [], {}
    for ch in chapters:
        got = points.entries(scale, [ch])
        if got:
            found += got
        else:
            missing[ch] = f"python -m lic.book run {ch} --scale {scale.name}"
    for width in WIDER:
        wide = scale.at_width(width)
        got = [e for ch in chapters if ch != "00_baselines" for e in points.entries(wide, [ch])]
        if got:
            found += [widened(e, width) for e in _zoo_of(wide, {e["arch"] for e in got}) + got]
    return found, missing


def widened(entry: dict, width: str) -> dict:
    """A wider family's point as 06 handles it: its architecture labelled with the family
    (``bmshj2018-hyperprior N128``: compared with that family's zoo, timed in a run of its own,
    plotted in a panel of its own), its name made distinct, its ``width`` kept to load it."""
    return {**entry, "width": width, "arch": f"{entry['arch']} {width}", "name": f"{entry['name']}-{width}"}


def _zoo_of(wide, archs) -> list:
    """The zoo points of a wider family (every trained model of ``archs``): 00_baselines runs on the
    scale's own family only, so they are made here, the way it makes its own."""
    from .zoo import read_manifest

    have = read_manifest(wide)
    return [points.register("00_baselines", wide, method=ZOO, arch=e["arch"], lmbda=e["lambda"], variant="zoo",
                            rebuild="lic.zoo:get", spec={"arch": e["arch"], "lmbda": e["lambda"], "train_missing": False})
            for e in sorted(have.values(), key=lambda e: (e["arch"], e["lambda"])) if e["arch"] in archs]


def family_of(entry: dict, scale):
    """The scale whose family ``entry`` belongs to (:func:`widened` points: the wider one)."""
    return scale.at_width(entry.get("width", ""))


# MACs are counted on a crop (the scale's ``mac_size``, 256x256 at cpu) and scaled by area to 768x512
# (convolution MACs grow with the area): counting an autoregressive decode latent by latent under
# FlopCounterMode at 768x512 takes minutes per model.
MAC_AREA = 768 * 512


def mac_picture(images, height: int, width: int) -> torch.Tensor:
    """The first test image's top-left ``height`` x ``width`` as a tensor (edge-padded where smaller)."""
    x = to_tensor(images[0][1])[..., :height, :width]
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


@torch.no_grad()
def path_macs(model, x, scale: float = 1.0) -> dict:
    """MACs of the real encode and decode paths on ``x`` (FlopCounterMode FLOPs ÷ 2), times
    ``scale``, and the decode's by stage (``decode_stage_macs``, :func:`lic.stages.stage_macs`)."""
    m = stage_macs(model, x)
    return {"encode_macs": round(m["encode"]["total"] * scale), "decode_macs": round(m["decode"]["total"] * scale),
            "decode_stage_macs": {s: round(v * scale) for s, v in m["decode"].items() if s != "total"}}


def measure(entries: list, images, scale, root=None, timed=3, repeats=None, progress=True, cache_dir=None,
            timing_dir=None, runtimes=("eager",), loaded=None) -> list:
    """One row per point (see the module's docstring), timed in one interleaved run per architecture
    (:func:`timed_per_arch`). With ``cache_dir`` (``runs/<scale>/measured``), quality and rate come
    from what a chapter already measured for the same weights where the weights define the model,
    else from this chapter's own earlier measurement of the same point
    (:func:`lic.evaluate.quality_cached`): a rerun after a kill, or a point its chapter measured,
    costs only its timing. With ``timing_dir``, each architecture's finished timing run is kept
    there, and a rerun times only the architectures not yet done. ``runtimes`` beyond ``eager``
    (:mod:`lic.deploy`) time every point again, deployed, in the same interleaved run
    (``decode_ms@openvino``, ...; :func:`deployed`). ``loaded``: a dict that receives the loaded
    models by point name (so later cells reuse them instead of rebuilding)."""
    models, rows = ({} if loaded is None else loaded), []
    x = pad_to(mac_picture(images, scale.mac_size, scale.mac_size), PAD, MIN_SIZE)[0]
    per_area = MAC_AREA / (x.shape[-2] * x.shape[-1])
    for e in tqdm(entries, desc="operating points", disable=not progress):
        at = family_of(e, scale)
        m = points.stack(e["stack"], at, root) if "stack" in e else points.load(e, at, root)
        r = (quality_cached(m, images, cache_dir, identity=e["name"]) if cache_dir is not None
             else evaluate(m, images, real=True, timed=0, progress=False)["mean"])
        ref = getattr(m, "mac_reference", m)  # an int8 model: MACs and parameters of its float twin
        rows.append({k: e[k] for k in ("chapter", "name", "method", "arch", "lambda", "variant")}
                    | {"width": e.get("width") or BASE_WIDTH, "parts": [p["name"] for p in e.get("stack", [])], "psnr": r["psnr"], "ms_ssim": r["ms_ssim"],
                       "runtime": getattr(m, "deployment", {}).get("runtime", "eager"),
                       "bpp": r["bpp"], **path_macs(ref, x, per_area),
                       "params": parameter_count(ref), "bytes_fp16": serialized_bytes(m, half=True)})
        models[e["name"]] = m
    archs = {r["name"]: r["arch"] for r in rows}
    extra, refused = {}, {}
    for rt in runtimes:
        if rt != "eager":
            got, refused[rt] = deployed(models, rt)
            extra.update(got)
            archs.update({n: archs[n.split(AT)[0]] for n in got})
    t = timed_per_arch({**models, **extra}, archs, images[:timed],
                       repeats=repeats or scale.timing_repeats, cache_dir=timing_dir, progress=progress)
    for row in rows:
        row.update({k: t[row["name"]].get(k) for k in ("encode_ms", "decode_ms", "encode_spread_pct", "decode_spread_pct",
                                                       "decode_stages_ms", "timed_at", "decode_ms_repeats")})
        for rt, why in refused.items():
            n = row["name"] + AT + rt
            row.update({f"{k}{AT}{rt}": t[n].get(k) if n in t else float("nan")
                        for k in ("encode_ms", "decode_ms", "decode_spread_pct", "decode_stages_ms", "decode_ms_repeats")})
            c = (decode_check(t[row["name"]], t[n]) if n in t else
                 {"text": why.get(row["name"], "not timed"), "psnr_db": float("nan"), "bpp_pct": float("nan")})
            row[f"deploy{AT}{rt}"] = c["text"]
            row[f"deploy_dpsnr_db{AT}{rt}"], row[f"deploy_dbpp_pct{AT}{rt}"] = c["psnr_db"], c["bpp_pct"]
        row["macs"] = row["encode_macs"] + row["decode_macs"]
    return compare(rows)


AT = "@"  # a point deployed in a runtime: "<name>@openvino", its columns "decode_ms@openvino", ...


# What 06 deploys: the synthesis transform, the decode's largest stage. The encoder stays eager, so a
# deployed twin decodes the eager model's own bitstream and its rate is the eager one's exactly.
DEPLOYED_PARTS = ("g_s",)


def deployed(models: dict, runtime: str) -> tuple:
    """({name@runtime: the model deployed}, {name: why it is not}) over ``models``
    (:func:`lic.deploy.deploy`): a part that does not export, an int8 torch model, or a point that
    is a deployment already. Whether a deployed twin decodes what its eager model decodes is
    checked on the timing run's own bitstreams (:func:`decode_check`)."""
    from .deploy import DeployError, deploy

    out, refused = {}, {}
    for name, m in tqdm(models.items(), desc=f"deploying ({runtime})", leave=False):
        if getattr(m, "deployment", {}).get("runtime", "eager") != "eager":  # a point that is a deployment already
            refused[name] = f"not deployed: it is a {m.deployment['runtime']} model already (timed as it is)"
            continue
        try:
            out[name + AT + runtime] = deploy(m, runtime, parts=DEPLOYED_PARTS)
        except Exception as err:  # noqa: BLE001 — any converter's failure: recorded, the point stays eager
            err = err if isinstance(err, DeployError) else DeployError(f"{type(err).__name__}: {err}")
            refused[name] = f"not deployed: {str(err).splitlines()[0][:120]}"
    return out, refused


def decode_check(eager: dict, twin: dict) -> dict:
    """{"text", "psnr_db", "bpp_pct"}: the largest PSNR and bpp differences between what an eager
    model's and its deployed twin's bitstreams decode to on the timed images
    (:func:`lic.evaluate.interleaved_times`' ``decoded``; f32 runtimes reorder sums, so a latent may
    round the other way)."""
    a, b = eager.get("decoded"), twin.get("decoded")
    if not a or not b:
        return {"text": "ok: timed (no decode check kept with this run)", "psnr_db": float("nan"), "bpp_pct": float("nan")}
    dpsnr = max(abs(x["psnr"] - y["psnr"]) for x, y in zip(a, b))
    dbpp = max(abs(y["bpp"] / x["bpp"] - 1) for x, y in zip(a, b))
    return {"text": f"ok: PSNR within {dpsnr:.3f} dB, bpp within {100 * dbpp:.2f} % of eager", "psnr_db": dpsnr,
            "bpp_pct": 100 * dbpp}


def _identity(model):
    """What names a model's weights for a kept timing: its fingerprint, or its float twin's for an
    int8 model (packed weights cannot be hashed); None when neither exists."""
    for m in (model, getattr(model, "mac_reference", None)):
        if m is not None and fingerprintable(m):
            return fingerprint(m)
    return None


def timed_per_arch(models: dict, archs: dict, images, repeats: int, cache_dir=None, progress=True) -> dict:
    """Encode and decode times of ``models`` ({name: codec}), one :func:`lic.evaluate.interleaved_times`
    run per architecture (``archs``: {name: arch}), architectures in order of first appearance.
    Every speed-up this chapter reports is against the zoo model of the same architecture, so each
    ratio comes from one run. With ``cache_dir`` (this machine's ``runs/``: a time is the
    machine's), each architecture's run is kept when it ends, under its models' names and weights,
    the images, repeats, threads and CPU; a rerun reuses a run only when all of these match, so
    that a kill costs at most the architecture being timed. Each row gets the UTC time its run
    ended (``timed_at``)."""
    out = {}
    for arch in dict.fromkeys(archs[n] for n in models):
        group = {n: m for n, m in models.items() if archs[n] == arch}
        key = {"arch": arch, "models": [[n, _identity(m)] for n, m in group.items()],
               "images": [name for name, _ in images], "repeats": repeats,
               "threads": torch.get_num_threads(), "cpu": cpu_model()}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        path = Path(cache_dir) / f"{arch}-{digest}.json" if cache_dir is not None else None
        if path is not None and path.exists() and json.loads(path.read_text()).get("key") == key:
            out.update(json.loads(path.read_text())["times"])
            continue
        times = interleaved_times(group, images, repeats=repeats, progress=progress, desc=f"timing {arch}")
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        times = {n: t | {"timed_at": stamp} for n, t in times.items()}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(json.dumps({"key": key, "times": times}))
            path.with_suffix(".tmp").replace(path)
        out.update(times)
    return out


def timing_runs(rows: list) -> str:
    """When each architecture's timing run ended, for the page: "arch (n points): time; ..."."""
    runs = {}
    for r in rows:
        runs.setdefault((r["arch"], r.get("timed_at", "?")), []).append(r["name"])
    return "; ".join(f"{arch}, {len(names)} points: run ended {at}" for (arch, at), names in runs.items())


def zoo_image_ms(scale) -> dict:
    """{arch: mean encode + decode time (ms) per test image of the zoo's models}, from the results
    00_baselines wrote at ``scale``; {} without them."""
    from .report import RESULTS

    path = RESULTS / "00_baselines" / f"{scale.name}.json"
    rows = json.loads(path.read_text()).get("models", []) if path.exists() else []
    per = {}
    for r in rows:
        if r.get("encode_ms") is not None and r.get("decode_ms") is not None:
            per.setdefault(r["arch"], []).append(r["encode_ms"] + r["decode_ms"])
    return {a: sum(v) / len(v) for a, v in per.items()}


def timing_seconds(entries: list, timed: int, repeats: int, image_ms: dict, runtimes: int = 1) -> tuple:
    """(estimated seconds of :func:`measure`'s interleaved timing, points it cannot estimate): every
    point codes ``timed`` images once to warm up and ``repeats`` times more, each at its
    architecture's zoo time per image (``image_ms``, :func:`zoo_image_ms`), once per runtime (an
    upper bound: a deployed twin decodes faster, and a point that does not export is timed once);
    other codecs (04's) are not estimated."""
    known = [e for e in entries if e["arch"] in image_ms]
    return (sum(image_ms[e["arch"]] for e in known) * timed * (repeats + 1) * runtimes / 1000,
            len(entries) - len(known))


def stacked(parts: list, method: str, variant: str) -> dict:
    """A point made of several points' changes on one start model (:func:`lic.points.stack`), for
    :func:`measure`: e.g. ERHP's hyper path with Liao's pruned decoder."""
    first = parts[0]
    return {"chapter": "06_synthesis", "name": points.slug(method, first["arch"], f"{first['lambda']:.4f}", variant),
            "method": method, "arch": first["arch"], "lambda": first["lambda"], "variant": variant, "stack": parts,
            **({"width": first["width"]} if first.get("width") else {})}


def additivity(rows: list, name: str) -> dict:
    """Do the stacked point's costs and savings add up? Its Δrate and decode speed-up beside the
    sum of its parts' Δrates and the product of their speed-ups (what independent savings give)."""
    by = {r["name"]: r for r in rows}
    s = by[name]
    parts = [by[p] for p in s["parts"]]
    return {"stacked": name, "parts": s["parts"], "lambda": s["lambda"],
            "Δrate stacked (%)": s["rate_vs_zoo_pct"], "Δrate sum of parts (%)": sum(p["rate_vs_zoo_pct"] for p in parts),
            "decode speed-up stacked (x)": s["decode_speedup"],
            "decode speed-up product of parts (x)": math.prod(p["decode_speedup"] for p in parts),
            "decode spread (%)": s["decode_spread_pct"], "PSNR stacked (dB)": s["psnr"], "bpp stacked": s["bpp"]}


def _paired_spread(ref: list, mine: list) -> float:
    """(max − min) / median (%) of the per-repeat speed-ups ``ref[i] / mine[i]``: the noise of a
    ratio taken within each repeat of one interleaved run, where what slowed one model slowed the
    other alike."""
    ratios = [a / b for a, b in zip(ref, mine)]
    return 100 * (max(ratios) - min(ratios)) / float(np.median(ratios))


def paired(r: dict, ref) -> None:
    """Set row ``r``'s decode spreads (eager and each runtime's) to the spread of its speed-up over
    the zoo model ``ref`` *paired within each repeat* (:func:`_paired_spread`), where the timing run
    kept its per-repeat times (runs since stop 47); a run kept before that keeps the spread of the
    times themselves. ``r["spread_kind"]`` says which."""
    base = (ref or {}).get("decode_ms_repeats")
    r["spread_kind"] = "of the times"
    for col in [c for c in r if c.startswith("decode_ms_repeats")]:
        mine = r[col]
        if not base or not isinstance(mine, list) or len(mine) != len(base) or len(base) < 2:
            continue
        r["decode_spread_pct" + col.removeprefix("decode_ms_repeats")] = _paired_spread(base, mine)
        r["spread_kind"] = "paired"


def spread_text(rows: list) -> str:
    """What "spread" means on the page, from the rows' ``spread_kind`` (:func:`paired`)."""
    kinds = {r.get("spread_kind", "of the times") for r in rows}
    both = ("(max − min) / median over the repeats of the speed-up against the zoo model, each repeat's "
            "ratio taken within that repeat")
    plain = "(max − min) / median over the repeats of the decode time itself"
    if kinds == {"paired"}:
        return both
    if kinds == {"of the times"}:
        return plain + " (these timing runs were kept before per-repeat times were recorded)"
    return f"{both} where the timing run kept per-repeat times, else {plain}"


def compare(rows: list) -> list:
    """Adds to every row its Δrate at equal PSNR against the zoo curve of its architecture and its
    decode/encode speed-up against the zoo model at its λ (same run)."""
    zoo = {(r["arch"], r["lambda"]): r for r in rows if r["method"] == ZOO}
    curves = {}
    for r in zoo.values():
        c = curves.setdefault(r["arch"], {"bpp": [], "psnr": []})
        c["bpp"].append(r["bpp"])
        c["psnr"].append(r["psnr"])
    for r in rows:
        c = curves.get(r["arch"])
        need = rate_at(c, r["psnr"]) if c else float("nan")
        r["rate_vs_zoo_pct"] = 100 * (r["bpp"] / need - 1) if need == need else float("nan")
        r["psnr_vs_zoo_db"] = r["psnr"] - psnr_at(c, r["bpp"]) if c else float("nan")
        r["extrapolated"] = bool(c) and not min(c["psnr"]) <= r["psnr"] <= max(c["psnr"])
        ref = zoo.get((r["arch"], r["lambda"]))
        paired(r, ref)
        for k in ("decode", "encode"):
            r[f"{k}_speedup"] = ref[f"{k}_ms"] / r[f"{k}_ms"] if ref else float("nan")
            for col in [c for c in r if c.startswith(f"{k}_ms{AT}")]:  # deployed: against the zoo model, eager
                r[f"{k}_speedup{AT}{col.split(AT)[1]}"] = ref[f"{k}_ms"] / r[col] if ref else float("nan")
        r["decode_mac_reduction"] = ref["decode_macs"] / r["decode_macs"] if ref else float("nan")
        # what its MAC cuts could buy: the zoo model's decode stages (same run) with each transform
        # stage's time scaled by the point's MACs there (lic.anatomy.bound), and where they are
        ok = ref and ref.get("decode_stages_ms") and r.get("decode_stage_macs")
        r["amdahl_bound"] = (anatomy.bound(ref["decode_stages_ms"], ref["decode_stage_macs"], r["decode_stage_macs"])
                             if ok else float("nan"))
        r["savings_in"] = anatomy.savings_in(ref["decode_stage_macs"], r["decode_stage_macs"]) if ok else "?"
    return rows


def families(rows: list) -> list:
    """Per (method, architecture, variant): the points' mean Δrate and speed-ups, and the BD-rate
    against the zoo when the family has a point at every zoo λ of that architecture."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for (method, arch, variant), g in df.groupby(["method", "arch", "variant"], sort=False):
        z = df[(df.method == ZOO) & (df.arch == arch)]
        full = len(z) >= 4 and set(z["lambda"]) <= set(g["lambda"])
        out.append({"method": method, "arch": arch, "variant": variant,
                    "runtime": str(g["runtime"].iloc[0]) if "runtime" in g and g["runtime"].iloc[0] == g["runtime"].iloc[0] else "eager",
                    "λ": len(g),
                    "BD-rate vs zoo (%)": (bd(z[["bpp", "psnr"]].to_dict("list"), g[["bpp", "psnr"]].to_dict("list"))["bd_rate"]
                                           if full and method != ZOO else (0.0 if method == ZOO else float("nan"))),
                    "Δrate at equal PSNR (%)": float(g.rate_vs_zoo_pct.mean()),
                    "ΔPSNR at equal rate (dB)": float(g.psnr_vs_zoo_db.mean()),
                    "decode speed-up (x)": float(g.decode_speedup.mean()),
                    "encode speed-up (x)": float(g.encode_speedup.mean()),
                    "decode MACs (x fewer)": float(g.decode_mac_reduction.mean()),
                    "Amdahl bound (x)": float(g.amdahl_bound.mean()) if "amdahl_bound" in g else float("nan"),
                    "savings in": "/".join(sorted(set(g.savings_in))) if "savings_in" in g else "?",
                    "decode spread (%)": float(g.decode_spread_pct.max())}
                   | _deployed_columns(g))
    return out


def width_of(arch: str) -> tuple:
    """("bmshj2018-hyperprior", "N128") for a wider family's architecture label (:func:`widened`),
    (arch, :data:`BASE_WIDTH`) for the scale's own."""
    base, _, width = arch.partition(" ")
    return base, width or BASE_WIDTH


def across_widths(fams: list) -> list:
    """Every method family measured on an architecture at more than one width, side by side: per
    (method, variant, architecture) one row per width with its rate cost against the zoo model of
    *that* width, its decode MAC cut and its eager decode speed-up (spread) — do the rate costs and
    speed-ups move with the width? Widths in :data:`lic.scales.WIDTHS`' order."""
    by = {}
    for f in fams:
        if f["method"] == ZOO:
            continue
        base, width = width_of(f["arch"])
        by.setdefault((f["method"], f["variant"], base), {})[width] = f
    out = []
    for (method, variant, base), at in by.items():
        if len(at) < 2:
            continue
        for width in sorted(at, key=WIDTHS.index):
            f = at[width]
            out.append({"method": method, "variant": variant, "arch": base, "width": width, "λ": f["λ"],
                        "Δrate at equal PSNR (%)": f["Δrate at equal PSNR (%)"], "BD-rate vs zoo (%)": f["BD-rate vs zoo (%)"],
                        "decode MACs (x fewer)": f["decode MACs (x fewer)"], "decode speed-up (x)": f["decode speed-up (x)"],
                        "decode spread (%)": f["decode spread (%)"]})
    return out


def across_widths_text(rows: list) -> str:
    """One clause per method family at two widths: its Δrate and decode speed-up at each."""
    from . import report

    if not rows:
        return ("no method was run on a wider family here (`python -m lic.book run 01_liao-N128 --scale cpu`, "
                "`02_luo-N128`)")
    parts, groups = [], {}
    for r in rows:
        groups.setdefault((r["method"], r["variant"], r["arch"]), []).append(r)
    for (method, variant, arch), g in groups.items():
        each = ", ".join(f"{report.pct(r['Δrate at equal PSNR (%)'], missing='n/a (PSNR off the zoo curve)')} rate for "
                         f"{r['decode speed-up (x)']:.2f}× "
                         f"(spread {r['decode spread (%)']:.0f} %) at {r['width']}" for r in g)
        parts.append(f"{method} {variant} on {arch}: {each}")
    return "; ".join(parts)


def _deployed_columns(g) -> dict:
    """A family's columns for each runtime it was deployed in: mean decode speed-up (against the
    zoo, eager), largest spread, largest PSNR and bpp difference from eager."""
    out = {}
    for col in [c for c in g.columns if c.startswith("decode_speedup" + AT)]:
        rt = col.split(AT)[1]
        def top(c):
            return float(g[c].max()) if c in g else float("nan")
        out |= {f"decode speed-up (x){AT}{rt}": float(g[col].mean()),
                f"decode spread (%){AT}{rt}": top(f"decode_spread_pct{AT}{rt}"),
                f"max |ΔPSNR| deployed (dB){AT}{rt}": top(f"deploy_dpsnr_db{AT}{rt}"),
                f"max |Δbpp| deployed (%){AT}{rt}": top(f"deploy_dbpp_pct{AT}{rt}")}
    return out


def _against_zoo(f: dict, zoo: dict, rt: str):
    """Family ``f``'s decode speed-up and spread against the zoo model of its architecture in
    runtime ``rt`` — the same runtime on both sides, so a runtime's gain is not counted as the
    method's — or None where either was not timed in ``rt``. A family whose points are themselves
    deployments (NNCF int8) runs in its own runtime only."""
    own = f.get("runtime") or "eager"
    tail = "" if rt == own else AT + rt
    speed, spread = f.get("decode speed-up (x)" + tail), f.get("decode spread (%)" + tail)
    if rt == "eager":
        z, zspread = 1.0, (zoo or {}).get("decode spread (%)", 0.0)
    else:
        z, zspread = (zoo or {}).get(f"decode speed-up (x){AT}{rt}"), (zoo or {}).get(f"decode spread (%){AT}{rt}")
    if rt != own and own != "eager":  # a deployment runs in its own runtime only
        return None
    if any(v is None or v != v for v in (speed, z)):  # not timed in rt
        return None
    return speed / z, max(spread or 0.0, zspread or 0.0)


def what_to_use(fams: list, budget: float = RATE_BUDGET) -> list:
    """Per architecture: each method's fastest decoding family whose rate cost (BD-rate where
    measured, else mean Δrate) is within ``budget`` % and that decodes faster than the zoo model
    *in the same runtime* (eager against eager, a deployed family against the zoo deployed alike),
    and its speed-up per 1 % of rate paid."""
    zoos = {f["arch"]: f for f in fams if f["method"] == ZOO}
    best = {}
    for f in fams:
        if f["method"] == ZOO:
            continue
        cost = f["BD-rate vs zoo (%)"] if f["BD-rate vs zoo (%)"] == f["BD-rate vs zoo (%)"] else f["Δrate at equal PSNR (%)"]
        if not cost == cost or cost > budget:
            continue
        rts = dict.fromkeys([f.get("runtime") or "eager", *(k.split(AT)[1] for k in f if k.startswith("decode speed-up (x)" + AT))])
        for rt in rts:
            got = _against_zoo(f, zoos.get(f["arch"]), rt)
            if got is None or got[0] <= 1:
                continue
            speed, spread = got
            key = (f["arch"], f["method"])
            if key not in best or speed > best[key]["decode speed-up (x)"]:
                gain = 100 * (speed - 1)
                best[key] = {"arch": f["arch"], "method": f["method"], "variant": f["variant"], "runtime": rt,
                             "rate cost (%)": cost, "decode speed-up (x)": speed, "decode spread (%)": spread,
                             "speed-up % per 1 % rate": gain / cost if cost > 0.05 else (math.inf if gain > 0 else 0.0)}
    return sorted(best.values(), key=lambda r: (r["arch"], -r["decode speed-up (x)"]))


def stack_candidates(entries: list) -> list:
    """The stacked points this chapter measures: ERHP's hyper path (02_luo) with Liao's most pruned
    decoder (01_liao) wherever both exist on the same zoo model."""
    out = []
    for e in entries:
        if e["chapter"] != "02_luo" or e["variant"] != "ERHP":
            continue
        liao = [d for d in entries if d["chapter"] == "01_liao" and (d["rebuild"], d["spec"], d.get("width"))
                == (e["rebuild"], e["spec"], e.get("width"))]
        if liao:
            top = max(liao, key=lambda d: d["meta"].get("ratio", 0))
            out.append(stacked([e, top], "ERHP + Liao", f"{e['variant']} + {top['variant']}"))
    return out


def additivity_text(adds: list) -> str:
    if not adds:
        return ("Nothing is stacked at this scale: that needs points of both 01_liao and 02_luo on the same "
                "zoo model (the same architecture and λ).")
    from .report import pct

    out = "n/a (outside the zoo curve)"
    parts = [f"at λ={a['lambda']:g}: Δrate {pct(a['Δrate stacked (%)'], 2, out)} stacked vs "
             f"{pct(a['Δrate sum of parts (%)'], 2, out)} summed, decode speed-up {a['decode speed-up stacked (x)']:.2f}x "
             f"vs {a['decode speed-up product of parts (x)']:.2f}x multiplied" for a in adds]
    return "Measured " + "; ".join(parts) + "."


def _fast(u: dict) -> bool:
    """Is a speed-up more than its timing spread?"""
    return 100 * (u["decode speed-up (x)"] - 1) > u["decode spread (%)"]


def _label(r: dict) -> str:
    """A method and its variant for prose, the variant left out where the method's name says it."""
    return r["method"] if r["variant"].lower() in r["method"].lower() else f"{r['method']} ({r['variant']})"


def _in(r: dict) -> str:
    """The words " in <runtime>" for a row of a deployed family; nothing for an eager one."""
    rt = r.get("runtime", "eager")
    return "" if rt == "eager" else f" in {rt}"


def advice(use: list, budget: float) -> str:
    """The "what to use" sentence from :func:`what_to_use`'s rows: per architecture, the method
    that decodes fastest within the budget, and whether its gain exceeds the timing spread.

    Speed-ups closer together than the timing spread are a tie; of tied methods it names the one
    that costs the least rate, and says which faster-looking one it is tied with."""
    if not use:
        return f"no method's points stay within {budget:g} % of rate at this scale."
    speed, spread, cost = "decode speed-up (x)", "decode spread (%)", "rate cost (%)"
    out = []
    for arch in dict.fromkeys(r["arch"] for r in use):
        cands = [u for u in use if u["arch"] == arch]
        top = max(cands, key=lambda u: u[speed])
        ties = [u for u in cands if 100 * (top[speed] / u[speed] - 1) <= max(top[spread], u[spread])]
        r = min(ties, key=lambda u: u[cost])
        noise = ("more than" if _fast(r) else "within") + f" the timing spread ({r[spread]:.0f} %)"
        text = (f"on {arch}, {_label(r)}{_in(r)} decodes {r[speed]:.2f}x as fast as "
                f"the zoo model{_in(r)} for {r[cost]:+.2f} % rate, {noise}")
        if r is not top:
            text += (f"; {_label(top)}{_in(top)}, at {top[speed]:.2f}x, is no faster beyond that spread "
                     f"and costs {top[cost]:+.2f} %")
        out.append(text)
    return "; ".join(out) + "."


# ---------------------------------------------------------------------------------------------
# the decision guide: every family under every runtime, and what to ship for a decode-time budget

DECODE_BUDGETS = (1.0, 0.75, 0.5)  # decode time as a fraction of the zoo model's, eager PyTorch


def options(rows: list, runtimes=("eager", "openvino")) -> list:
    """Every (family, runtime) a practitioner could ship: its rate cost (BD-rate vs the zoo where the
    family has every zoo λ, else mean Δrate at equal PSNR: :func:`families`) and its decode time as
    a fraction of the zoo model's *eager* decode at the same λ (mean over the family's points, from
    the same interleaved run), with the run's largest decode spread. The zoo itself is a family:
    deployed, it costs no rate."""
    fams = {(f["method"], f["arch"], f["variant"]): f for f in families(rows)}
    out = []
    for (method, arch, variant), f in fams.items():
        cost = f["BD-rate vs zoo (%)"] if f["BD-rate vs zoo (%)"] == f["BD-rate vs zoo (%)"] else f["Δrate at equal PSNR (%)"]
        pts = [r for r in rows if (r["method"], r["arch"], r["variant"]) == (method, arch, variant)]
        for rt in runtimes:
            tail = "" if rt == "eager" else AT + rt
            speed = [r.get("decode_speedup" + tail, float("nan")) for r in pts]
            if not speed or any(v != v for v in speed):
                continue  # not deployed (or not timed) in this runtime
            own = pts[0].get("runtime", "eager")  # a point that is a deployment itself (NNCF int8) runs there
            out.append({"method": method, "arch": arch, "variant": variant, "runtime": own if rt == "eager" else rt, "λ": len(pts),
                        "rate cost (%)": cost, "decode time (x zoo eager)": float(np.mean([1 / v for v in speed])),
                        "decode spread (%)": max(r.get("decode_spread_pct" + tail, 0.0) for r in pts)})
    return out


def _option_label(o: dict) -> str:
    return f"{_label(o)}, {o['runtime']}"


def decision(opts: list, budgets=DECODE_BUDGETS) -> list:
    """Per architecture and decode-time budget (a fraction of the zoo model's eager decode): the
    option of :func:`options` that meets the budget for the least rate (ties on rate: the faster),
    or none."""
    out = []
    for arch in sorted({o["arch"] for o in opts}):
        for b in budgets:
            fit = [o for o in opts if o["arch"] == arch and o["decode time (x zoo eager)"] <= b
                   and o["rate cost (%)"] == o["rate cost (%)"]]
            best = min(fit, key=lambda o: (round(o["rate cost (%)"], 2), o["decode time (x zoo eager)"]), default=None)
            out.append({"arch": arch, "decode budget (x zoo eager)": b,
                        "ship": _option_label(best) if best else "nothing measured meets it",
                        "rate cost (%)": best["rate cost (%)"] if best else float("nan"),
                        "decode time (x zoo eager)": best["decode time (x zoo eager)"] if best else float("nan"),
                        "decode spread (%)": best["decode spread (%)"] if best else float("nan")})
    return out


def pareto(opts: list) -> list:
    """The options no other option of the same architecture beats on both rate cost and decode
    time, by architecture and decode time."""
    ok = [o for o in opts if o["rate cost (%)"] == o["rate cost (%)"]]

    def beaten(o):
        return any(p is not o and p["arch"] == o["arch"] and p["rate cost (%)"] <= o["rate cost (%)"]
                   and p["decode time (x zoo eager)"] <= o["decode time (x zoo eager)"]
                   and (p["rate cost (%)"], p["decode time (x zoo eager)"]) != (o["rate cost (%)"], o["decode time (x zoo eager)"])
                   for p in ok)
    return sorted((o for o in ok if not beaten(o)), key=lambda o: (o["arch"], o["decode time (x zoo eager)"]))


# the methods 06 puts on one figure, each its own colour (report.color_of hashes names it does not
# know, and two of these shared one); anything else falls back to it
METHODS = ("zoo", "Liao (decoder pruning)", "ERHP (Luo)", "uniform hyper path (Luo's control)",
           "half-width hyper path (Luo's control)", "Yin (ecg+bm)", "Yin (bm)", "Yin (vbr)", "int8 (Yu)",
           "int8 g_s (NNCF)", "AdaNIC (Tao)", "scratch", "distilled", "mask decay")


def method_color(method: str):
    """The colour of ``method`` in every figure of 06 (distinct for :data:`METHODS`)."""
    import seaborn as sns

    from . import report

    if method in METHODS:
        palette = sns.color_palette("tab10", 10) + [sns.color_palette("Dark2", 8)[i] for i in (0, 5, 6, 3)]
        return palette[METHODS.index(method)]
    return report.color_of(method)


# short names for labels in a figure (the tables keep the full ones)
SHORT = {"Liao (decoder pruning)": "Liao", "ERHP (Luo)": "ERHP", "uniform hyper path (Luo's control)": "uniform h-path",
         "half-width hyper path (Luo's control)": "half h-path", "int8 (Yu)": "Yu int8", "int8 g_s (NNCF)": "NNCF int8",
         "AdaNIC (Tao)": "AdaNIC", "Yin (ecg+bm)": "Yin ECG+BM", "Yin (bm)": "Yin BM", "Yin (vbr)": "Yin vbr"}
RUNTIME_SHORT = {"eager": "", "openvino": "OV"}


def short_label(o: dict) -> str:
    """A short label of option ``o`` for a figure: the method's short name, what its variant adds
    (the variant's words the method's name does not already say), and the runtime unless eager."""
    def words(t):
        return t.replace("(", " ").replace(")", " ").replace(",", " ").split()
    said = o["method"].lower()
    extra = " ".join(w for w in words(o["variant"]) if w.lower() not in said and w != "+")
    rt = RUNTIME_SHORT.get(o["runtime"], o["runtime"])
    return " ".join(x for x in (SHORT.get(o["method"], o["method"]), extra, f"({rt})" if rt else "") if x)


def pareto_figure(opts: list):
    """One row per architecture: rate cost against decode time (a fraction of the zoo's eager
    decode, log axis), eager points filled, deployed ones hollow; the front (the options no other
    beats on both) joined and labelled in a column on the right. The rate axis spans the front;
    options costing more are left out, and the panel's title says how many."""
    import matplotlib.ticker

    from . import report

    archs = sorted({o["arch"] for o in opts})
    fig, axes = report.figure(1, len(archs), height=2.1 * len(archs) + 0.9)
    front = pareto(opts)
    for ax, arch in zip(axes.flat, archs):
        mine = [o for o in opts if o["arch"] == arch and o["rate cost (%)"] == o["rate cost (%)"]]
        f = [o for o in front if o["arch"] == arch]
        rate = [o["rate cost (%)"] for o in f]
        top = max(2.0, 1.15 * max(rate) + 1.0)
        bottom = min(-1.0, min(o["rate cost (%)"] for o in mine) - 1.0)
        shown = [o for o in mine if o["rate cost (%)"] <= top]
        for o in shown:
            c = method_color(o["method"])
            ax.scatter(o["decode time (x zoo eager)"], o["rate cost (%)"], s=24, marker="o", zorder=3,
                       facecolors=c if o["runtime"] == "eager" else "none", edgecolors=c)
        ax.plot([o["decode time (x zoo eager)"] for o in f], rate, "k-", lw=0.8, zorder=2)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.axvline(1, color="grey", lw=0.8, ls=":")
        t = [o["decode time (x zoo eager)"] for o in shown]
        ax.set_xscale("log")
        ax.set_xlim(min(t + [1.0]) / 1.12, max(t + [1.0]) * 1.12)
        ax.set_ylim(bottom, top)
        lo, hi = ax.get_xlim()
        ticks = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0) if hi / lo > 1.8 else \
            (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5)  # a narrow range gets finer ticks
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([v for v in ticks if lo <= v <= hi]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        hidden = len(mine) - len(shown)
        ax.set_title(arch + (f" ({hidden} costlier option{'s' * (hidden > 1)} above the axis)" if hidden else ""),
                     fontsize=9, loc="left")
        ax.set_ylabel("rate cost (%)")
    axes.flat[len(archs) - 1].set_xlabel("decode time (× the zoo model's eager decode)")
    from matplotlib.lines import Line2D

    methods = sorted({o["method"] for o in opts})
    handles = [Line2D([], [], marker="o", ls="", color=method_color(m), label=SHORT.get(m, m)) for m in methods]
    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", color="0.3", label="deployed (hollow)"))
    ncol = 4
    legend_in = 0.15 + 0.18 * -(-len(handles) // ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.subplots_adjust(left=0.09, right=0.62, top=1 - 0.3 / fig.get_figheight(),
                        bottom=(legend_in + 0.45) / fig.get_figheight(), hspace=0.55)
    for ax, arch in zip(axes.flat, archs):  # after the layout: the column needs the axes' final place
        f = [o for o in front if o["arch"] == arch]
        report.label_column(ax, [(o["decode time (x zoo eager)"], o["rate cost (%)"]) for o in f],
                            [short_label(o) for o in f])
    return fig


def runtime_text(rows: list) -> str:
    """What "deployed" means in this run, from the deployed models' own record."""
    rts = sorted({c.split(AT)[1] for r in rows for c in r if c.startswith("decode_ms" + AT)})
    if not rts:
        return "no runtime besides eager PyTorch in this run"
    from .deploy import runtime_version

    return "; ".join(f"{rt} {runtime_version(rt)}: {', '.join(DEPLOYED_PARTS)} in f32 in the runtime, the encoder, h_s and "
                     "the entropy coding in CompressAI's eager code, so the bitstream is the eager model's" for rt in rts)


def not_deployed_text(rows: list) -> str:
    """Which points stayed eager only, and why (first reason per method)."""
    why = {}
    for r in rows:
        for c in [c for c in r if c.startswith("deploy" + AT)]:
            if not str(r[c]).startswith("ok"):
                n, reason = why.get(r["method"], (0, r[c]))
                why[r["method"]] = (n + 1, reason)
    return ("every point deployed" if not why else
            "; ".join(f"{m}, {n} point{'s' * (n > 1)}: {reason.removeprefix('not deployed: ')}" for m, (n, reason) in why.items()))


def zoo_anatomy(rows: list, lmbda: float) -> list:
    """Rows for :func:`lic.anatomy.figure`: the decode stages of each architecture's zoo model at
    ``lmbda``, under every runtime it was timed in (from the interleaved run itself)."""
    out = []
    for r in rows:
        if r["method"] != ZOO or r["lambda"] != lmbda:
            continue
        for col in [c for c in r if c.startswith("decode_stages_ms")]:
            stages, rt = r[col], (col.split(AT)[1] if AT in col else "eager")
            if not isinstance(stages, dict):
                continue
            label = f"{r['arch']}, {rt}"
            out += [{"model": label, "phase": "decode", "stage": s, "ms": ms} for s, ms in stages.items()]
            out.append({"model": label, "phase": "decode", "stage": "total", "ms": sum(stages.values())})
    return out


def anatomy_text(an: list) -> str:
    """One sentence from :func:`zoo_anatomy`'s rows: g_s's and h_s's shares of each eager decode."""
    parts = []
    for label in dict.fromkeys(r["model"] for r in an):
        if not label.endswith(", eager"):
            continue
        ms = {r["stage"]: r["ms"] for r in an if r["model"] == label}
        share = {s: 100 * ms.get(s, 0.0) / ms["total"] for s in ("g_s", "h_s", "autoregressive loop")}
        loop = f", the autoregressive loop {share['autoregressive loop']:.0f} %" if share["autoregressive loop"] else ""
        parts.append(f"{label.rsplit(',', 1)[0]}: g_s {share['g_s']:.0f} %, h_s {share['h_s']:.0f} %{loop} "
                     f"of {ms['total']:.0f} ms")
    return "; ".join(parts) if parts else "no zoo model was timed"


def geometries(entries: list, scale, root=None, archs=None, loaded=None) -> dict:
    """{arch: {family label: geometry}} of every static family whose decoder transforms differ
    from the zoo's (:func:`lic.widths.geometry`), at the middle λ; one label per distinct geometry.
    ``loaded``: models already loaded by point name (:func:`measure`'s), else each is loaded."""
    from . import widths
    from .zoo import middle_lambda

    archs, lam = archs or widths.ARCHS, middle_lambda(scale)
    zoo = {e["arch"]: e for e in entries if e["method"] == ZOO and e["lambda"] == lam}
    out = {}
    for e in entries:
        if e["arch"] not in archs or e["method"] == ZOO or e["lambda"] != lam or "stack" in e or e["arch"] not in zoo:
            continue
        def get(x):
            return loaded[x["name"]] if loaded and x["name"] in loaded else points.load(x, scale, root)
        try:
            g = widths.geometry(get(e), get(zoo[e["arch"]]))
        except (TypeError, KeyError, AttributeError, NotImplementedError):  # int8 packed layers: no channel shapes
            continue
        mine = out.setdefault(e["arch"], {})
        short = e["method"].split(" (")[0]
        if g and g not in mine.values():
            mine[short if e["variant"] in e["method"] else f"{short} {e['variant']}"] = g
    return out


# ---------------------------------------------------------------------------------------------
# every CPU the book has run on: each finished run's ratios (never raw times), kept with the book

SPEEDUPS = Path(__file__).resolve().parents[1] / "data" / "speedups"
SPEEDUP_COLUMNS = ("decode speed-up (x)", "decode speed-up (x)@openvino", "decode spread (%)")


def keep_speedups(fams: list, scale, root=None) -> Path:
    """Write this machine's family speed-ups (against the zoo, eager, same run) to
    ``data/speedups/<scale>/<cpu>-<threads>t.json``; a later run on the same CPU replaces it."""
    import re

    cpu, threads = cpu_model(), torch.get_num_threads()
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    path = Path(root or SPEEDUPS) / scale.name / f"{slug}-{threads}t.json"
    keep = [{k: f[k] for k in ("method", "arch", "variant")} | {k: f[k] for k in SPEEDUP_COLUMNS if k in f}
            for f in fams if f["method"] != ZOO or any(k.endswith(AT + "openvino") for k in f)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cpu": cpu, "threads": threads, "when": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                                "families": keep}, indent=1, default=lambda v: None) + "\n")
    return path


def speedups_by_cpu(scale, root=None, column="decode speed-up (x)") -> list:
    """One row per family, one column per CPU (and thread count) that kept its ratios: ``column``."""
    runs = [json.loads(p.read_text()) for p in sorted((Path(root or SPEEDUPS) / scale.name).glob("*.json"))]
    table = {}
    for run in runs:
        head = f"{run['cpu'].split(',')[0]}, {run['threads']} threads ({run['when']})"
        for f in run["families"]:
            row = table.setdefault((f["arch"], f["method"], f["variant"]), {"arch": f["arch"], "family": f"{f['method']} ({f['variant']})"})
            v = f.get(column)
            row[head] = float("nan") if v is None else v
    return list(table.values())


# ---------------------------------------------------------------------------------------------
# the study's cross-method questions, as claims (their bars: data/papers/claims.csv, 06_synthesis)

MAC_MIN = 1.1  # a family counts in the MACs-to-time question only with at least this many times fewer decode MACs


def claims_for(fams: list, adds: list, bars) -> list:
    """The synthesis chapter's three questions as claims (:mod:`lic.claims`), from :func:`families`
    and :func:`additivity`; their bars (the rate budget among them, whatever the page's own
    ``rate_budget``) from ``bars``, ``data/papers/claims.csv``. Each is decided per case
    (architecture, family, λ) with :func:`lic.claims.share`."""
    from . import claims

    b = bars[bars.chapter == "06_synthesis"].set_index("claim").value.astype(float)
    share_min = b["share of a method's decode-MAC reduction it turns into decode speed-up"]
    add_max = b["stacked Δrate off the sum of its parts' Δrates by at most"]
    budget = b["some method decodes faster than the zoo model beyond the timing spread for at most this rate cost"]
    use = what_to_use(fams, budget)
    out = []
    archs = sorted({f["arch"] for f in fams if f["method"] != ZOO})
    fast = sorted({u["arch"] for u in use if _fast(u)})
    best = max(use, key=lambda u: u["decode speed-up (x)"], default=None)
    out.append(claims.make(
        "synth-budget", f"some method decodes measurably faster than the zoo model (in the same runtime) for at most "
        f"{budget:g} % more rate",
        f"speed-up beyond the timing spread at ≤ {budget:g} % rate",
        f"{len(fast)} of {len(archs)} architectures"
        + (f"; the fastest within {budget:g} %: {_label(best)}{_in(best)} "
           f"on {best['arch']}, {best['decode speed-up (x)']:.2f}× "
           f"({best['decode spread (%)']:.0f} % spread)" if best else f"; no method's points within {budget:g} %"),
        claims.share(len(fast), len(archs)),
        f"per architecture: a family within {budget:g} % of rate (BD-rate, else mean Δrate) whose decode speed-up "
        "against the zoo model in the same runtime (eager against eager, deployed against the zoo deployed alike) "
        "exceeds the larger of their timing spreads", "What to use"))
    cut = [f for f in fams if f["method"] != ZOO and f["decode MACs (x fewer)"] >= MAC_MIN]
    # Amdahl: a cut in a stage that takes a small share of the decode cannot buy more than that share;
    # so each family's speed-up is held against the bound its MAC cuts allow (lic.anatomy.bound),
    # where the stage times were measured, else against the MAC reduction itself
    ceiling = [f["Amdahl bound (x)"] if f.get("Amdahl bound (x)", float("nan")) == f.get("Amdahl bound (x)")
               else f["decode MACs (x fewer)"] for f in cut]
    kept = [(f["decode speed-up (x)"] - 1) / (c - 1) if c > 1 + 1e-9 else 0.0 for f, c in zip(cut, ceiling)]
    raw = [(f["decode speed-up (x)"] - 1) / (f["decode MACs (x fewer)"] - 1) for f in cut]
    met = sum(k >= share_min for k in kept)
    out.append(claims.make(
        "synth-macs-to-time", "a method that cuts decode MACs keeps at least half of what those cuts can buy as decode "
        "speed-up (its Amdahl bound: the transform stages' times scaled by their MACs, the rest unchanged)",
        f"≥ {share_min:g} of the bound's gain",
        (f"{met} of {len(cut)} families; they keep {100 * min(kept):.0f}–{100 * max(kept):.0f} % of their bound's gain "
         f"({sum(k >= share_min for k in raw)} of {len(cut)} keep {share_min:g} of the plain MAC gain)"
         if cut else "no family cuts decode MACs"),
        claims.share(met, len(cut)),
        f"per family with ≥ {MAC_MIN:g}× fewer decode MACs: (speed-up − 1) at least {share_min:g} × (Amdahl bound − 1), "
        "the bound from the zoo model's decode stages timed in the same run", "Speed against rate, per method"))
    ok = [abs(a["Δrate stacked (%)"] - a["Δrate sum of parts (%)"]) <= add_max
          and 100 * abs(a["decode speed-up stacked (x)"] / a["decode speed-up product of parts (x)"] - 1) <= a["decode spread (%)"]
          for a in adds]
    gaps = [a["Δrate stacked (%)"] - a["Δrate sum of parts (%)"] for a in adds]
    out.append(claims.make(
        "synth-stack", "two methods stacked on one model (ERHP's hyper path, Liao's decoder) cost the sum of their "
        "rates and give the product of their speed-ups",
        f"Δrate within {add_max:g} pp of the sum", (f"{sum(ok)} of {len(adds)} λ; Δrate {min(gaps):+.2f} to "
                                                     f"{max(gaps):+.2f} pp off the sum" if adds else "nothing stacked"),
        claims.share(sum(ok), len(adds)),
        f"per λ: stacked Δrate within {add_max:g} percentage points of the parts' sum, and the stacked decode speed-up "
        "within its timing spread of the parts' product", "Stacking two methods"))
    extra = [runtime_claim(fams, bars), int8_claim(fams, bars)]
    return out + [c for c in extra if c]


INT8_METHOD = "int8 g_s (NNCF)"  # lic.yu's NNCF points


def int8_claim(fams: list, bars, runtime: str = "openvino"):
    """"An int8 decoder pays": per architecture with NNCF points, some NNCF family within the
    BD-rate bar of the zoo and faster than the zoo model deployed in f32 beyond both spreads.
    None when there are no NNCF points (or no deployed zoo to hold them against)."""
    from . import claims

    b = bars[bars.chapter == "06_synthesis"].set_index("claim").value.astype(float)
    cap = b["an int8 decoder (NNCF) costs at most this BD-rate against the f32 zoo model, decoding faster than the zoo "
            "model deployed in f32"]
    zoo = {f["arch"]: f for f in fams if f["method"] == ZOO and f"decode speed-up (x){AT}{runtime}" in f}
    archs = sorted({f["arch"] for f in fams if f["method"] == INT8_METHOD} & set(zoo))
    if not archs:
        return None
    met, best = [], []
    for arch in archs:
        z = zoo[arch]
        ok = []
        for f in (f for f in fams if f["method"] == INT8_METHOD and f["arch"] == arch):
            gain = f["decode speed-up (x)"] / z[f"decode speed-up (x){AT}{runtime}"]
            spread = max(f["decode spread (%)"], z[f"decode spread (%){AT}{runtime}"]) / 100
            best.append(f"{arch} {f['variant']}: {f['BD-rate vs zoo (%)']:+.2f} %, {gain:.2f}× f32's decode speed")
            ok.append(f["BD-rate vs zoo (%)"] <= cap and gain - 1 > spread)
        met.append(any(ok))
    return claims.make(
        "synth-int8", f"an int8 decoder (NNCF into {runtime}) costs at most {cap:g} % BD-rate and decodes faster than the "
        f"zoo model in {runtime} f32", f"≤ {cap:g} % BD-rate, faster beyond the spread",
        f"{sum(met)} of {len(archs)} architectures; " + "; ".join(best), claims.share(sum(met), len(archs)),
        f"per architecture: some NNCF int8 family (04_yu) with BD-rate against the zoo at most {cap:g} % and a decode "
        f"faster than the zoo model's in {runtime} f32 by more than the larger of their timing spreads", "What to ship")


def runtime_claim(fams: list, bars, runtime: str = "openvino"):
    """"A deployment runtime decodes faster than eager at zero rate cost", decided per architecture
    on the zoo family deployed: faster beyond its timing spread, and decoding to what eager decodes
    (PSNR and bpp within the bar on the timed images). None when nothing was deployed."""
    from . import claims

    b = bars[bars.chapter == "06_synthesis"].set_index("claim").value.astype(float)
    tol = b["a deployment runtime decodes the zoo model faster than eager, its PSNR (dB) and bpp (%) within"]
    zoo = [f for f in fams if f["method"] == ZOO and f.get(f"decode speed-up (x){AT}{runtime}") == f.get(f"decode speed-up (x){AT}{runtime}")
           and f"decode speed-up (x){AT}{runtime}" in f]
    if not zoo:
        return None
    ok = [f[f"decode speed-up (x){AT}{runtime}"] - 1 > f[f"decode spread (%){AT}{runtime}"] / 100
          and f[f"max |ΔPSNR| deployed (dB){AT}{runtime}"] <= tol and f[f"max |Δbpp| deployed (%){AT}{runtime}"] <= tol
          for f in zoo]
    sp = [f[f"decode speed-up (x){AT}{runtime}"] for f in zoo]
    return claims.make(
        "synth-runtime", f"a deployment runtime ({runtime}) decodes faster than eager PyTorch at zero rate cost",
        f"faster beyond the spread, PSNR and bpp within {tol:g} dB / %",
        f"{sum(ok)} of {len(zoo)} architectures; the zoo models decode {min(sp):.2f}–{max(sp):.2f}× faster",
        claims.share(sum(ok), len(zoo)),
        f"per architecture: the zoo models deployed ({runtime}: the transforms f32 in the runtime, h_s and the entropy "
        f"coding eager) decode faster than eager beyond the timing spread, their PSNR and bpp within {tol:g} dB / % of "
        "eager's on the timed images", "What to ship")


def tradeoff_figure(res):
    """Two panels: decode speed-up vs Δrate at equal PSNR; decode speed-up vs decode-MAC reduction.
    Colour: the method; marker: the architecture; both keys below the panels."""
    from matplotlib.lines import Line2D

    from . import report

    pts = res[res.method != ZOO]
    markers = dict(zip(sorted(res.arch.unique()), "osD^v<>"))
    methods = sorted(pts.method.unique())
    keys = ([Line2D([], [], marker="o", ls="", color=method_color(m), label=SHORT.get(m, m)) for m in methods]
            + [Line2D([], [], marker=markers[a], ls="", color="0.35", label=a) for a in markers])
    ncol = 4
    legend_in = 0.2 + 0.19 * (-(-len(methods) // ncol) + -(-len(markers) // ncol))
    fig, axes = report.figure(2, 1, height=3.2 + legend_in)
    left, right = axes[0]
    for (method, arch), g in pts.groupby(["method", "arch"]):
        kw = dict(color=method_color(method), marker=markers[arch], s=22)
        left.scatter(g.rate_vs_zoo_pct, g.decode_speedup, **kw)
        right.scatter(g.decode_mac_reduction, g.decode_speedup, **kw)
    for ax in (left, right):
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    left.axvline(0.0, color="grey", lw=0.8, ls=":")
    lim = max(1.1, float(pts.decode_mac_reduction.max()) if len(pts) else 1.1)
    right.plot([1, lim], [1, lim], "k:", lw=0.8)
    right.annotate("speed-up = MAC reduction", (lim, lim), xytext=(-4, 4), textcoords="offset points", ha="right",
                   fontsize=7)
    left.set(xlabel="Δrate at equal PSNR vs the zoo (%)", ylabel="decode speed-up vs the zoo (×)")
    right.set(xlabel="decode MACs, × fewer than the zoo's", ylabel="decode speed-up (×)")
    fig.legend(handles=keys, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))
    return fig
