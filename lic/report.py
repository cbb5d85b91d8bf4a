"""What the chapters show: results files, paper tables, "paper vs ours" tables and RD figures.

- ``data/results/<notebook>/<scale>.json``: every notebook's headline numbers (tests read them).
- ``data/papers/*.csv``: the papers' own numbers, transcribed once, each file naming its source.
- ``data/reference/compressai-kodak/*.json``: published Kodak curves (CompressAI, JPEG, WebP, ...).
"""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .evaluate import read_compressai_json

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "data" / "results"
PAPERS = PROJECT / "data" / "papers"
REFERENCE = PROJECT / "data" / "reference" / "compressai-kodak"
PUBLISHED = {
    "bmshj2018-hyperprior": "compressai-bmshj2018-hyperprior_mse_cpu.json",
    "mbt2018-mean": "compressai-mbt2018-mean_mse_cpu.json",
    "mbt2018": "compressai-mbt2018_mse_cpu.json",
    "cheng2020-attn": "compressai-cheng2020-attn_mse_cpu.json",
    "JPEG": "jpeg.json", "WebP": "webp.json", "BPG": "bpg_444_x265_ycbcr.json", "VTM": "vtm.json",
    # CompressAI's variable-rate models (Kamisli et al., DCC 2024), one model for all rates
    "bmshj2018-hyperprior-vbr": "bmshj2018-hyperprior-vbr-ans.json",
    "mbt2018-mean-vbr": "mbt2018-mean-vbr-ans.json", "mbt2018-vbr": "mbt2018-vbr-ans.json",
}


def _clean(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, pd.DataFrame):
        return _clean(obj.to_dict(orient="records"))
    return obj


def environment() -> dict:
    """Where a run happened: versions, CPU (model and ISA level), threads, time."""
    import compressai
    import torch

    from .precision import cpu_model

    return {"python": platform.python_version(), "torch": torch.__version__,
            "compressai": compressai.__version__, "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def save_results(notebook: str, scale: str, payload: dict, root=None) -> Path:
    """Write ``data/results/<notebook>/<scale>.json`` (with the run's environment)."""
    path = Path(root or RESULTS) / notebook / f"{scale}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean({"notebook": notebook, "scale": scale,
                                       "environment": environment(), **payload}), indent=1) + "\n")
    return path


def save_rd_json(notebook: str, scale: str, name: str, points: list, description="", root=None) -> Path:
    """Write one RD curve in CompressAI's ``eval_model`` layout beside the results file:
    ``data/results/<notebook>/<scale>-rd/<name>.json``."""
    from .evaluate import to_compressai_json

    path = Path(root or RESULTS) / notebook / f"{scale}-rd" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(to_compressai_json(name, points, description)), indent=1) + "\n")
    return path


def load_results(notebook: str, scale: str, root=None) -> dict:
    path = Path(root or RESULTS) / notebook / f"{scale}.json"
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}; run `python -m lic.book run {notebook} "
                                f"--scale {scale}` first")
    return json.loads(path.read_text())


def paper_table(name: str) -> pd.DataFrame:
    """A paper's table from ``data/papers/<name>.csv`` ('#' lines name the source)."""
    path = PAPERS / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"no paper table {path}")
    return pd.read_csv(path, comment="#")


def paper_source(name: str) -> str:
    """The '#' header lines of a paper table: where its numbers come from."""
    lines = (PAPERS / f"{name}.csv").read_text().splitlines()
    return " ".join(ln.lstrip("# ").strip() for ln in lines if ln.startswith("#"))


def published(name: str) -> dict:
    """A published Kodak curve: 'bmshj2018-hyperprior', ..., 'JPEG', 'WebP', 'BPG', 'VTM'."""
    if name not in PUBLISHED:
        raise ValueError(f"unknown published curve {name!r}; valid choices: {', '.join(PUBLISHED)}")
    return read_compressai_json(REFERENCE / PUBLISHED[name])


def side_by_side(paper: pd.DataFrame, ours: pd.DataFrame, on, suffixes=(" (paper)", " (ours)")):
    """Join a paper table and ours on key column(s); paper columns first."""
    return paper.merge(ours, on=on, how="outer", suffixes=suffixes)


def rd_plot(curves, ax=None, metric="psnr", title=None, xlim=None, legend="inside"):
    """Draw rate–distortion curves.

    ``curves``: dicts with 'name', 'bpp', metric values, and optional 'kind' in {'ours',
    'published', 'classical (ours)'} which sets the line style: ours solid with markers,
    published dashed, classical codecs measured here dotted. ``legend``: "inside" (lower
    right), "outside" (right of the axes, for many curves) or None.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    palette = sns.color_palette("tab10", n_colors=max(len(curves), 3))
    style = {"ours": dict(ls="-", marker="o"), "published": dict(ls="--", marker="", alpha=0.8),
             "classical (ours)": dict(ls=":", marker="s", ms=4)}
    for color, c in zip(palette, curves):
        order = np.argsort(c["bpp"])
        ys = np.asarray(c[metric], dtype=float)[order]
        ax.plot(np.asarray(c["bpp"])[order], ys, color=color, label=c["name"],
                **style.get(c.get("kind", "ours"), {}))
    ax.set_xlabel("bits per pixel (real bitstreams)")
    ax.set_ylabel({"psnr": "PSNR-RGB (dB)", "ms_ssim": "MS-SSIM"}.get(metric, metric))
    if xlim:  # zoom on what is inside: the y-range follows the points between the x-limits
        ax.set_xlim(*xlim)
        inside = [y for c in curves for x, y in zip(c["bpp"], c[metric])
                  if xlim[0] <= x <= xlim[1] and y is not None and np.isfinite(y)]
        if inside:
            lo, hi = min(inside), max(inside)
            pad = 0.05 * (hi - lo or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
    if title:
        ax.set_title(title)
    if legend == "outside":
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    elif legend:
        ax.legend(fontsize=8, loc="lower right")
    return ax

