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


def pct(value, digits=1, missing="n/a (curves overlap < 75 %)") -> str:
    """A signed percentage for prose ("+1.2 %"); a missing or NaN value reads as ``missing``
    (BD-rate is NaN where two curves overlap too little), never as "nan"."""
    if value is None or not math.isfinite(float(value)):
        return missing
    return f"{float(value):+.{digits}f} %"


def _decimals(values) -> int:
    """Decimals that show a column's values sensibly: fewer as magnitudes grow."""
    v = np.abs(np.asarray([x for x in values if isinstance(x, (int, float)) and math.isfinite(x)], dtype=float))
    if v.size == 0:
        return 2
    big = np.median(v[v > 0]) if (v > 0).any() else 0
    return 0 if big >= 1000 else 1 if big >= 100 else 2 if big >= 1 else 3 if big >= 0.01 else 4


def table(df: pd.DataFrame, decimals=None, rename=None, max_rows=24, caption=None):
    """A results table for people: no index column, headers in words (``_`` → space, ``rename``
    first), numbers with sensible decimals per column (or ``decimals``: int or {column: int}),
    thousands separated, "–" for a missing value; a table longer than ``max_rows`` shows its first
    rows and folds the rest behind a "show all" toggle. Returns an object the notebook displays."""
    from IPython.display import HTML

    # a named index (a pivot's "arch") becomes a column; an unnamed one (row numbers, also those
    # left by filtering rows) is dropped
    d = df.reset_index(drop=all(n is None for n in df.index.names))
    if isinstance(d.columns, pd.MultiIndex):
        d.columns = [" ".join(str(x) for x in c if str(x)) for c in d.columns]
    d = d.rename(columns=rename or {})
    given = [str(c) for c in d.columns]
    d.columns = [c.replace("_", " ") for c in given]
    fmt = {}
    for orig, c in zip(given, d.columns):
        col = d[c]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            continue
        k = (decimals.get(orig, decimals.get(c)) if isinstance(decimals, dict) else decimals)
        if k is None:  # counts (steps, images, threads) read as counts, not "24.00"
            k = 0 if pd.api.types.is_integer_dtype(col) else _decimals(col.tolist())
        fmt[c] = f"{{:,.{k}f}}"

    def render(frame):
        sty = frame.style.hide(axis="index").format(fmt, na_rep="–")
        if caption:
            sty = sty.set_caption(caption)
        return sty.to_html()

    if len(d) <= max_rows:
        return HTML(render(d))
    head = render(d.head(max_rows))
    return HTML(f"{head}<details><summary>show all {len(d)} rows</summary>{render(d)}</details>")


COLUMN_INCHES = 7.2  # the book's content column (~740 px at 100 dpi): a figure this wide renders at its own size
_NAMED = ("bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-attn",  # our architectures
          "rnn", "hific", "E", "D", "G", "P",                                    # Yu's codecs, components
          "ecg+bm", "bm", "vbr", "zoo", "int8", "float")


def color_of(key: str):
    """One colour per thing across every panel and chapter: our architectures, codecs, components,
    variants first (fixed), anything else from a stable hash of its name."""
    import zlib

    import seaborn as sns

    palette = sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8)
    if key in _NAMED:
        return palette[_NAMED.index(key) % len(palette)]
    return palette[zlib.crc32(key.encode()) % len(palette)]


def style() -> None:
    """The book's figure style: seaborn whitegrid, 9-10 pt text, figures drawn at the column width
    (:func:`figure`) so that text renders at the size it was set in."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper",
                  rc={"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                      "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 100, "savefig.dpi": 100})
    mpl.rcParams["figure.figsize"] = (COLUMN_INCHES, 3.6)


def figure(ncols=1, nrows=1, height=None, **kwargs):
    """``plt.subplots`` at the column width (3.4 in per row unless ``height``), in the book's style."""
    import matplotlib.pyplot as plt

    style()
    return plt.subplots(nrows, ncols, figsize=(COLUMN_INCHES, height or 3.4 * nrows), squeeze=False, **kwargs)


def label_column(ax, pts: list, labels: list, x: float = 1.04, fontsize: float = 7, colors=None):
    """``labels`` in a column at ``x`` (axes fractions: beyond 1 is right of the axes), each at its
    point's height where there is room, spread just enough that no two overlap, joined to its point
    by a thin line (coloured ``colors`` if given). Call it after the figure's layout is final."""
    to_axes = ax.transAxes.inverted()
    ys = [float(to_axes.transform(ax.transData.transform(p))[1]) for p in pts]
    gap = 1.25 * fontsize / 72 / (ax.get_position().height * ax.figure.get_figheight())
    order = sorted(range(len(pts)), key=lambda i: ys[i])
    at, last = {}, -math.inf
    for i in order:
        at[i] = last = max(ys[i], last + gap, 0.0)
    for i in reversed(order):  # pushed past the top: pull back down, keeping the gaps
        at[i] = last = min(at[i], 1.0 if i == order[-1] else last - gap)
    for i, (p, text) in enumerate(zip(pts, labels)):
        c = colors[i] if colors else None
        ax.annotate(text, xy=p, xytext=(x, at[i]), textcoords="axes fraction", va="center", fontsize=fontsize,
                    color=c,
                    arrowprops=dict(arrowstyle="-", lw=0.4, color=c or "0.55", shrinkA=0, shrinkB=2), annotation_clip=False)


def rd_plot(curves, ax=None, metric="psnr", title=None, xlim=None, legend="inside"):
    """Draw rate–distortion curves.

    ``curves``: dicts with 'name', 'bpp', metric values, and optional 'kind' in {'ours',
    'published', 'classical (ours)'} which sets the line style: ours solid with markers,
    published dashed, classical codecs measured here dotted. ``legend``: "inside" (lower
    right), "outside" (right of the axes, for many curves), any other matplotlib ``loc`` (e.g.
    "upper left", the corner RD curves leave empty) or None.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    style = {"ours": dict(ls="-", marker="o"), "published": dict(ls="--", marker="", alpha=0.9),
             "classical (ours)": dict(ls=":", marker="s", ms=4)}
    ours = iter(sns.color_palette("tab10", n_colors=10))
    greys = iter(sns.color_palette("Greys_r", n_colors=max(3, sum(c.get("kind") == "published" for c in curves) + 2)))
    for c in curves:
        # a thing keeps its colour across panels and chapters (color_of); published curves are grey
        color = c.get("color") or (color_of(c["key"]) if "key" in c else
                                   next(greys) if c.get("kind") == "published" else next(ours))
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
        ax.legend(fontsize=8, loc="lower right" if legend == "inside" else legend)
    return ax

