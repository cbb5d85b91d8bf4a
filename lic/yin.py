"""Yin et al., *Universal Efficient Variable-rate Neural Image Compression* (ICASSP 2022 slides;
chapter ``03_yin``): energy-based channel gating (ECG) and a bit-rate modulator (BM), trained over a
range of λ so that one model serves every rate with sparse convolution inputs.

The modules are in :mod:`lic.models.gated`; this module holds the procedure:

- **training** through the project's one loop: each image of a batch gets its own λ, drawn
  log-uniformly from the zoo's λ range (continuous, not the four zoo λ), and the loss is
  R + λ·255²·D per image plus the sparsity term γ Σ_n (ρ_n − ρ_t)² (:class:`SparsityHook`);
  the model starts from the zoo's middle-λ model of its architecture;
- **variants**: ``ecg+bm`` (the paper's model), ``bm`` (the modulator alone, the ablation) and
  ``vbr`` (CompressAI's own variable-rate model, :mod:`lic.models.vbr`, the in-ecosystem peer),
  all three with the same start and budget;
- **storage**: trained models with a manifest (sha256, steps, training time, precision), like the
  zoo, in ``data/checkpoints/03_yin/cpu`` (committed) or ``runs/<scale>/03_yin/models``;
- **measurement**: MACs of the real gated computation per image (the convolutions actually run,
  plus the gates' own pooling and 1D convolutions), per-layer sparsity, and the one evaluation path
  on :meth:`lic.models.gated.VariableRate.at` views.

Our reading of the slides, where they are silent (the chapter names each choice):

- ρ_n in the sparsity term is the fraction of closed gates of gated layer n over the batch (the
  slides write (α_n − α_t)² with α the "adjustment vector"; we take α_t as the target sparsity,
  which the slides' "sparsity around 0.5" suggests), α_t = 0.5, γ = :data:`GAMMA`;
- the gate is open where the 1D-convolved log energy (relative to the layer's mean) exceeds the
  channel's learnable threshold α (initialised at −4, all open: the model starts as the zoo model);
- BM: t = (log λ − log λ_min) / (log λ_max − log λ_min) → FC(64) → ReLU → FC(M) → exp, one for
  the encoder (on y) and one for the decoder (on ŷ before g_s), both 1 at initialisation.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from . import data as lic_data
from . import store, zoo
from .budget import pace_text
from .distributed import is_main
from .evaluate import evaluate, macs
from .models.gated import AtLambda, GatedConv, VariableRate
from .models.vbr import Vbr
from .scales import Scale, check_choice
from .train import Hook, TrainConfig, train

ARCHS = ("bmshj2018-hyperprior", "mbt2018-mean", "mbt2018")   # the paper's three models
VARIANTS = ("ecg+bm", "bm", "vbr")
TARGET_SPARSITY = 0.5   # α_t
GAMMA = 1.0             # weight of the sparsity term
CHAPTER = "03_yin"


class SparsityHook(Hook):
    """γ Σ_n (ρ_n − ρ_t)²: ρ_n the fraction of closed gates of gated layer n (straight-through)."""

    def __init__(self, target=TARGET_SPARSITY, gamma=GAMMA):
        if not 0 <= target < 1:
            raise ValueError(f"target sparsity must be in [0, 1), got {target}")
        self.target, self.gamma = target, gamma

    def loss(self, model, out, x):
        if "sparsity" not in out:
            return {}
        return {"sparsity_term": self.gamma * ((out["sparsity"].float() - self.target) ** 2).sum()}


def lmbda_range(scale: Scale) -> tuple:
    """The trained λ range: the zoo's lowest to highest λ at this scale."""
    return (min(scale.lambdas), max(scale.lambdas))


def model_name(arch: str, variant: str, target: float = TARGET_SPARSITY) -> str:
    check_choice("architecture for Yin et al.", arch, ARCHS)
    check_choice("variant", variant, VARIANTS)
    return f"{arch}-{variant}" + (f"-s{target:.2f}" if variant == "ecg+bm" else "")


def build(arch: str, scale: Scale, variant: str, base=None):
    """A variable-rate model of ``variant`` started from ``base`` (default: a fresh model at the
    scale's widths): :class:`VariableRate` for ``ecg+bm`` and ``bm``, :class:`Vbr` for ``vbr``."""
    model_name(arch, variant)  # checks both
    base = zoo.build_for(arch, scale) if base is None else base
    if variant == "vbr":
        model = Vbr(arch, scale.widths(arch), scale.lambdas, zoo.middle_lambda(scale))
        state = {k: v for k, v in base.state_dict().items() if k.rsplit(".", 1)[-1] not in zoo.CODER_TABLES}
        missing, unexpected = torch.nn.Module.load_state_dict(model.base, state, strict=False)
        if unexpected:
            raise zoo.CheckpointError(f"{arch} weights do not fit CompressAI's vbr model: {unexpected[:3]}")
        return model
    return VariableRate(base, lmbda_range(scale), gated=variant == "ecg+bm")


def models_dir(scale: Scale) -> Path:
    """Final models: ``data/checkpoints/03_yin/cpu`` (committed); other scales under ``runs/``."""
    return store.models_dir(CHAPTER, scale)


def read_manifest(scale: Scale) -> dict:
    return store.read_manifest(CHAPTER, scale)


def _write_manifest(scale: Scale, manifest: dict) -> None:
    store.write_manifest(CHAPTER, scale, manifest)


def _keep_fp32(key: str) -> bool:
    """The modulator, the gates, vbr's gains and offsets: small, and stored in fp32."""
    return ".ecg." in key or key.startswith("bm.") or "QuantABCD" in key or key.endswith("Gain")


def save(model, path, meta: dict, half=True) -> str:
    """Transforms in fp16 (``half``); entropy models, modulator, gains, offsets and gates in fp32.
    Returns the file's sha256."""
    rates = ({"levels": model.levels, "anchor": model.anchor} if isinstance(model, Vbr)
             else {"lmbda_range": list(model.lmbda_range)})
    return store.write({"arch": meta["arch"], "variant": meta["variant"], "widths": meta["widths"], **rates,
                        "state_dict": store.stored_state(model, half, _keep_fp32), "meta": meta}, path)


FP16_CHECK_SERIAL = 4  # test images of the fp16 check of a serial decoder (mbt2018: ≈ 7 s per Kodak image and λ)


def save_checked(model, path, meta: dict, images, half=True, lambdas=(), tol_db=None) -> str:
    """:func:`save`, keeping fp16 transforms only where they move the mean test PSNR by at most
    ``tol_db`` (the zoo's tolerance) at every λ of ``lambdas``, real bitstreams both; else fp32.
    A model that decodes serially (mbt2018) is checked on the first :data:`FP16_CHECK_SERIAL`
    images only. The comparison goes into ``meta["fp16_check"]``. Returns the file's sha256."""
    tol_db = zoo.FP16_TOLERANCE_DB if tol_db is None else tol_db
    if hasattr(model.base, "context_prediction"):
        images = images[:FP16_CHECK_SERIAL]
    sha = save(model, path, meta, half=half)
    if not half:
        return sha
    stored = load(path, sha)
    checks = {}
    for lam in lambdas:
        ref = evaluate(model.at(lam), images, real=True, timed=0, progress=False)["mean"]
        res = evaluate(stored.at(lam), images, real=True, timed=0, progress=False)["mean"]
        checks[str(lam)] = zoo.fp16_check(ref, res, tol_db)
    worst = max((abs(c["delta_psnr_db"]) for c in checks.values()), default=0.0)
    meta["fp16_check"] = {"per_lambda": checks, "max_abs_delta_psnr_db": worst, "tolerance_db": tol_db,
                          "within_tolerance": worst <= tol_db, "images": len(images)}
    if worst > tol_db:
        meta["weights"] = "fp32"
        return save(model, path, meta, half=False)
    return save(model, path, meta, half=True)  # again: the file's meta now holds the check


def load(path, sha256=None, hint=""):
    ck = store.read(path, sha256, hint)
    if ck["variant"] == "vbr":
        model = Vbr(ck["arch"], ck["widths"], ck["levels"], ck["anchor"])
    else:
        model = VariableRate(zoo.build(ck["arch"], **ck["widths"]), tuple(ck["lmbda_range"]),
                             gated=ck["variant"] == "ecg+bm")
    return store.fill(model, ck["state_dict"], path, hint)


def train_command(arch, variant, scale, target=TARGET_SPARSITY) -> str:
    t = f" --target {target}" if variant == "ecg+bm" and target != TARGET_SPARSITY else ""
    return f"python -m lic.yin train --scale {scale.name} --arch {arch} --variant {variant}{t}"


def curve_eval(scale: Scale, root=None, limit=6):
    """Learning-curve evaluation at the zoo's λ: test PSNR and estimated bpp (forward only) on the
    first ``limit`` test images (the figures), the same on the validation images (``val_*``: what
    tells whether a run still improves, :func:`lic.budget.convergence`), and the mean gate sparsity."""
    images = lic_data.test_images(scale, root)[:limit]
    validation = lic_data.validation_images(scale, root)

    def run(model):
        row = {}
        for lam in scale.lambdas:
            res = evaluate(model.at(lam), images, real=False, progress=False)["mean"]
            row[f"psnr@{lam}"], row[f"bpp_est@{lam}"] = res["psnr"], res["bpp_est"]
            val = evaluate(model.at(lam), validation, real=False, progress=False)["mean"]
            row[f"val_psnr@{lam}"], row[f"val_bpp_est@{lam}"] = val["psnr"], val["bpp_est"]
            if model.gated:
                row[f"sparsity@{lam}"] = float(sum(layer_sparsity(model, lam, images).values())
                                               / len(model.gates()))
        return row
    return run


def learning_curve(name: str, scale: Scale, root=None):
    """Model ``name``'s learning curve from step 0 (a DataFrame): the row of the model as built from
    its zoo start, before any training step — evaluated like every logged row (:func:`curve_eval`),
    nothing retrained — then its logged rows."""
    import pandas as pd

    entry = read_manifest(scale)[name]
    logged = pd.read_csv(models_dir(scale) / entry["curve"])
    base = zoo.get(entry["arch"], zoo.middle_lambda(scale), scale, root=root, train_missing=False)
    start = build(entry["arch"], scale, entry["variant"], base=base).eval()
    with torch.no_grad():
        first = {"step": 0, **curve_eval(scale, root)(start)}
    return pd.concat([pd.DataFrame([first]), logged], ignore_index=True)


def curve_figure(curves: dict, lambdas):
    """Learning curves ({model name: :func:`learning_curve`}): forward-pass PSNR, mean over
    ``lambdas`` (left), and the share of gated inputs closed at the ends of their range (right);
    one colour per model in both panels, the legend below them."""
    from . import report

    fig, axes = report.figure(ncols=2, height=3.0 + 0.16 * ((len(curves) + 1) // 2))
    for n, lc in curves.items():
        psnr = [f"psnr@{lam}" for lam in lambdas if f"psnr@{lam}" in lc]
        ends = [f"sparsity@{lam}" for lam in (min(lambdas), max(lambdas)) if f"sparsity@{lam}" in lc]
        axes[0, 0].plot(lc.step, lc[psnr].mean(axis=1), marker=".", color=report.color_of(n), label=n)
        if ends:
            axes[0, 1].plot(lc.step, lc[ends].mean(axis=1), marker=".", color=report.color_of(n))
    axes[0, 0].set(xlabel="step", ylabel="forward-pass PSNR (dB)", title="quality, mean over the zoo's λ")
    axes[0, 1].set(xlabel="step", ylabel="share of gated inputs closed", title="sparsity, gated models", ylim=(0, 1))
    fig.legend(loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05 * ((len(curves) + 1) // 2) + 0.03, 1, 1))
    return fig


def sparsity_figure(sp, archs):
    """Share of each gated layer's input channels closed (``sp``: rows {arch, λ, layer, closed}),
    one panel per architecture, one bar per λ, the target sparsity dotted."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 3.8), squeeze=False, sharey=True)
    for ax, a in zip(axes[0], archs):
        sns.barplot(sp[sp.arch == a], x="layer", y="closed", hue="λ", ax=ax, palette="crest")
        ax.axhline(TARGET_SPARSITY, color="grey", ls=":", lw=1)
        ax.set(title=a, xlabel="", ylabel="share of input channels closed", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=90)
    fig.tight_layout()
    return fig


def rd_figure(sweep, res, archs, variants, kodak: bool):
    """Rate–distortion of each variable-rate model over its sweep (``sweep``), the zoo's fixed
    models (from ``res``) and, on Kodak, CompressAI's published fixed and variable-rate curves;
    one panel per architecture."""
    from . import report

    fig, axes = report.figure(nrows=len(archs), height=3.6 * len(archs))
    for ax, a in zip(axes[:, 0], archs):
        curves = []
        for v in variants:
            s = sweep[(sweep.arch == a) & (sweep.model == v)]
            curves.append({"name": f"{v} (ours, {len(s)} λ)", **s[["bpp", "psnr"]].to_dict("list")})
        curves.append({"name": "zoo, one model per λ",
                       **res[(res.arch == a) & (res.model == "zoo (one per λ)")][["bpp", "psnr"]].to_dict("list")})
        if kodak:
            curves += [{**report.published(n), "name": f"CompressAI {n} (published)", "kind": "published"}
                       for n in (a, f"{a}-vbr")]
        report.rd_plot(curves, ax=ax, metric="psnr", title=a, xlim=(0, 1.0) if kodak else None,
                       legend="upper left")  # the empty corner: high PSNR at low rate
    fig.tight_layout()
    return fig


def speed_figure(lat, model="ecg+bm"):
    """Measured encode and decode speed-up of ``model`` against its FLOP reduction (rows of
    :func:`latency`), one panel per architecture (named in its title), each kind labelled beside
    its points, with the line where time falls exactly as FLOPs do."""
    import matplotlib.pyplot as plt

    g = lat[lat.model == model]
    archs = list(dict.fromkeys(g.arch))
    top = max(g["FLOP reduction"].max(), 1.5) * 1.15
    fig, axes = plt.subplots(1, len(archs), figsize=(6.2, 3.4), sharey=True, squeeze=False)
    for ax, a in zip(axes[0], archs):
        x = g[g.arch == a]
        for kind, marker, color, side in (("decode", "s", "C1", -1), ("encode", "o", "C0", 1)):
            ax.scatter(x["FLOP reduction"], x[f"{kind} speed-up"], marker=marker, color=color, zorder=3)
            ax.annotate(kind, (x["FLOP reduction"].mean(), x[f"{kind} speed-up"].mean()), color=color,
                        xytext=(side * 7, 0), textcoords="offset points", va="center",
                        ha="left" if side > 0 else "right", fontsize=8,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.8))
        ax.plot([1, top], [1, top], color="grey", ls=":", lw=1)
        ax.axhline(1, color="black", lw=0.6)
        ax.set(xlim=(0.9, top), title=a, xlabel="FLOP reduction (×)")
        ax.title.set_fontsize(9)
    axes[0][0].set_ylabel(f"speed-up of {model} vs the zoo (×)")
    axes[0][0].annotate("dotted: time falls\nas FLOPs do", (0.93, top * 0.97), ha="left", va="top", fontsize=7,
                        color="grey")
    fig.tight_layout()
    return fig


def get(arch: str, scale: Scale, variant: str, target=TARGET_SPARSITY, root=None, train_missing=True,
        progress=True, precision=None):
    """The trained variable-rate model: from the chapter's manifest, or trained now (resumable)."""
    name = model_name(arch, variant, target)
    entry = read_manifest(scale).get(name)
    if entry:
        return load(models_dir(scale) / entry["file"], entry["sha256"],
                    f"Retrain it with `{train_command(arch, variant, scale, target)}`.")
    if not train_missing:
        raise zoo.CheckpointError(f"{name} is not trained at scale {scale.name} ({models_dir(scale)}); "
                                  f"train it with `{train_command(arch, variant, scale, target)}`")
    return train_model(arch, scale, variant, target, root=root, progress=progress, precision=precision)


def point_view(scale: Scale, arch: str, variant: str, lmbda: float, target=TARGET_SPARSITY, root=None):
    """The stored variable-rate model fixed at ``lmbda`` (an operating point's rebuild)."""
    return get(arch, scale, variant, target, root=root, train_missing=False).at(lmbda).eval()


def register_points(archs, variants, scale: Scale, target=TARGET_SPARSITY) -> list:
    """The chapter's operating points for 06_synthesis: every stored model at every zoo λ."""
    from . import points

    return points.publish(CHAPTER, scale, [
        points.register(CHAPTER, scale, method=f"Yin ({v})", arch=a, lmbda=lam, variant=v,
                        rebuild="lic.yin:point_view", spec={"arch": a, "variant": v, "lmbda": lam, "target": target})
        for a in archs for v in variants for lam in scale.lambdas])


def train_model(arch: str, scale: Scale, variant: str, target=TARGET_SPARSITY, root=None, progress=True,
                precision=None, seed=0):
    """Train (or resume) one variable-rate model from the zoo's middle-λ model, save it with fp16
    transforms, add it to the chapter's manifest."""
    name = model_name(arch, variant, target)
    start_name = zoo.model_name(arch, zoo.middle_lambda(scale))
    base = zoo.get(arch, zoo.middle_lambda(scale), scale, root=root, progress=progress)
    start_fp = zoo.fingerprint(base)
    model = build(arch, scale, variant, base=base)
    run = zoo.runs_dir(scale) / CHAPTER / start_fp
    data = lic_data.train_set(scale, root, seed=seed)
    cfg = TrainConfig.from_scale(scale, zoo.middle_lambda(scale), steps=scale.vr_steps, lr=scale.vr_lr,
                                 lr_final=scale.vr_lr / 10, seed=seed, precision=precision)
    hooks = [SparsityHook(target)] if variant == "ecg+bm" else []
    state = run / f"{name}.state.pt"
    curve = train(model, data, cfg, checkpoint=state, hooks=hooks, log=run / f"{name}.curve.csv",
                  evaluate=curve_eval(scale, root) if cfg.eval_every else None, progress=progress, desc=name)
    loops = torch.load(state, weights_only=False).get("loops", [])
    model.eval()
    meta = {"arch": arch, "variant": variant, "target_sparsity": target if variant == "ecg+bm" else None,
            "gamma": GAMMA if variant == "ecg+bm" else None, "widths": scale.widths(arch),
            "lmbda_range": list(lmbda_range(scale)),
            "lambda_sampling": "one zoo λ per step (CompressAI's stage 2)" if variant == "vbr" else "log-uniform per image",
            "steps": scale.vr_steps, "started_from": start_name, "started_from_fingerprint": start_fp,
            "schedule": {k: getattr(cfg, k) for k in ("batch", "crop", "late_crop", "late_frac", "lr", "lr_final")},
            "precision": [{k: lp[k] for k in ("from_step", "loop", "how", "cpu")} for lp in loops],
            "train_seconds": round(curve[-1]["elapsed_s"] if curve else 0, 3), "torch": str(torch.__version__),
            "weights": "fp16 transforms; fp32 entropy models, modulator and gates" if scale.name == "cpu" else "fp32"}
    file = f"{name}.pt"
    sha = save_checked(model, models_dir(scale) / file, meta, lic_data.test_images(scale, root),
                       half=scale.name == "cpu", lambdas=scale.lambdas)
    curve_copy = models_dir(scale) / f"{name}.curve.csv"
    if (run / f"{name}.curve.csv").exists() and is_main():  # under torchrun rank 0 writes
        curve_copy.write_text((run / f"{name}.curve.csv").read_text())
    manifest = read_manifest(scale)
    manifest[name] = {**meta, "file": file, "sha256": sha, "curve": curve_copy.name}
    _write_manifest(scale, manifest)
    return load(models_dir(scale) / file, sha)


def budget_name(name: str, steps: int) -> str:
    """The manifest name of ``name`` continued to a larger budget: ``<name>@<steps>``."""
    return f"{name}@{steps}"


def continue_model(arch: str, scale: Scale, variant: str, steps: int, target=TARGET_SPARSITY, root=None,
                   progress=True, precision=None, seed=0, start_steps=None):
    """The committed model ``arch``/``variant`` trained on to ``steps`` in all (issue 39's budget
    curves): from the stored weights at their step (the manifest's, or ``start_steps``' continued
    model) with the schedule a ``steps``-step run has there — fresh Adam moments and a short warm-up
    (:func:`lic.train.restart_state`), the learning curve continued. Stored beside the original as
    ``<name>@<steps>`` (the chapter's own model is untouched); resumable."""
    from .train import train_on

    name = model_name(arch, variant, target)
    manifest = read_manifest(scale)
    source = budget_name(name, start_steps) if start_steps else name
    entry = manifest.get(source)
    if entry is None:
        raise zoo.CheckpointError(f"{source} is not stored at scale {scale.name}; train it first with "
                                  f"`{train_command(arch, variant, scale, target)}`"
                                  + (f" --steps {start_steps}" if start_steps else ""))
    if steps <= entry["steps"]:
        raise ValueError(f"{source} has {entry['steps']} steps already; continue it to more than that")
    target_name = budget_name(name, steps)
    if target_name in manifest:
        e = manifest[target_name]
        return load(models_dir(scale) / e["file"], e["sha256"])
    if entry.get("retired") and not (models_dir(scale) / entry["file"]).exists():
        raise zoo.CheckpointError(f"{source} was retired (its weights are out of the chapter's folder); restore them "
                                  f"{_restore_how(entry)}, then continue it")
    model = load(models_dir(scale) / entry["file"], entry["sha256"])
    run = zoo.runs_dir(scale) / CHAPTER / entry["started_from_fingerprint"]
    data = lic_data.train_set(scale, root, seed=seed)
    cfg = TrainConfig.from_scale(scale, zoo.middle_lambda(scale), steps=steps, lr=scale.vr_lr,
                                 lr_final=scale.vr_lr / 10, seed=seed, precision=precision)
    hooks = [SparsityHook(target)] if variant == "ecg+bm" else []
    state, log = run / f"{target_name}.state.pt", run / f"{target_name}.curve.csv"
    curve = train_on(model, data, cfg, state, log, entry["steps"], models_dir(scale) / entry["curve"],
                     entry["train_seconds"], entry.get("precision", []), hooks=hooks,
                     evaluate=curve_eval(scale, root) if cfg.eval_every else None, progress=progress, desc=target_name)
    loops = torch.load(state, weights_only=False).get("loops", [])
    model.eval()
    meta = {**{k: v for k, v in entry.items() if k not in ("file", "sha256", "curve", "fp16_check")},
            "steps": steps, "continued_from": source, "continued_at_step": entry["steps"],
            "schedule": {k: getattr(cfg, k) for k in ("batch", "crop", "late_crop", "late_frac", "lr", "lr_final")},
            "precision": [{k: lp.get(k) for k in ("from_step", "loop", "how", "cpu")} for lp in loops],
            "train_seconds": round(curve[-1]["elapsed_s"] if curve else 0, 3)}
    file = f"{name}-{steps}.pt"
    sha = save_checked(model, models_dir(scale) / file, meta, lic_data.test_images(scale, root),
                       half=scale.name == "cpu", lambdas=scale.lambdas)
    curve_copy = models_dir(scale) / f"{name}-{steps}.curve.csv"
    if log.exists() and is_main():
        curve_copy.write_text(log.read_text())
    manifest = read_manifest(scale)
    manifest[target_name] = {**meta, "file": file, "sha256": sha, "curve": curve_copy.name}
    _write_manifest(scale, manifest)
    return load(models_dir(scale) / file, sha)


# ---------------------------------------------------------------------------------------------
# measurement


@torch.no_grad()
def layer_sparsity(model: VariableRate, lmbda: float, images) -> dict:
    """{gated layer name: mean fraction of closed input channels} over ``images`` at ``lmbda``."""
    from .data import pad_to, to_tensor
    from .evaluate import PAD

    view = model.at(lmbda).eval()
    names = {id(m): n.removeprefix("base.") for n, m in model.named_modules() if isinstance(m, GatedConv)}
    sums = dict.fromkeys(names.values(), 0.0)
    for _, img in images:
        view(pad_to(to_tensor(img), PAD)[0])
        for g in model.gates():
            sums[names[id(g)]] += 1 - g.last_open.item() / g.conv.in_channels
    return {k: v / len(images) for k, v in sums.items()}


def gate_overhead_macs(model: VariableRate) -> int:
    """The gates' own cost in the last forward pass: the energy (one multiply-add per input
    element) and the 1D convolution across channels, summed over gated layers."""
    return sum(g.pooled_elements + g.conv.in_channels * g.ecg.conv.kernel_size[0] for g in model.gates())


@torch.no_grad()
def image_macs(view: AtLambda, images) -> dict:
    """Mean MACs per image of the batch-1 computation actually run (gated convolutions sliced to
    their open channels), split into the transforms and the gates' own overhead."""
    from .data import pad_to, to_tensor
    from .evaluate import PAD

    view.eval()
    conv, over = [], []
    for _, img in images:
        x = pad_to(to_tensor(img), PAD)[0]
        conv.append(macs(view, x))
        over.append(gate_overhead_macs(view.model) if view.model.gated else 0)
    return {"macs": sum(conv) / len(conv), "gate_macs": sum(over) / len(over)}


SWEEP_POINTS = 12          # λ of the continuous-rate curves (4 at smoke: CI's minutes go elsewhere)


SERIAL_DECODE = ("mbt2018",)  # decoded latent by latent: many times the others' decode time per image


def sweep_lambdas(scale: Scale, n=None, arch=None) -> list:
    """``n`` λ (default :data:`SWEEP_POINTS`, 4 at smoke) log-spaced over the trained range, both
    ends included. For an architecture in :data:`SERIAL_DECODE`, unless ``n`` is given: the zoo's
    λ (measured for the chapter's table anyway) and the geometric mean of each neighbouring pair —
    λ the sweep would not otherwise see, at a fraction of the decode time."""
    if n is None and arch in SERIAL_DECODE:
        lams = sorted(scale.lambdas)
        return sorted(lams + [math.sqrt(a * b) for a, b in zip(lams, lams[1:])])
    n = n or (4 if scale.name == "smoke" else SWEEP_POINTS)
    lo, hi = (math.log(v) for v in lmbda_range(scale))
    return [math.exp(lo + (hi - lo) * i / (n - 1)) for i in range(n)]


def sweep_text(sweeps: dict, scale: Scale) -> str:
    """How the continuous-rate sweep of each architecture was chosen ({arch: [λ]}), in words."""
    parts = []
    for a, lams in sweeps.items():
        if a in SERIAL_DECODE and lams == sweep_lambdas(scale, None, a):
            parts.append(f"{a}: the zoo's {len(scale.lambdas)} λ and the geometric mean of each neighbouring pair "
                         f"({len(lams)} λ; its decode runs latent by latent, see the timing below)")
        else:
            parts.append(f"{a}: {len(lams)} λ log-spaced over the trained range")
    return "; ".join(parts)


def latency(fixed: dict, models: dict, res, archs, variants, lambdas, images, repeats: int):
    """Encode and decode time of the zoo model and of each variable-rate model at each λ of
    ``lambdas``, one interleaved run per (architecture, λ) (:func:`lic.evaluate.interleaved_times`).
    One row per (architecture, λ, variant): FLOP reduction (from ``res``), speed-ups against the zoo
    model, g_s's own speed-up, the share of the decode the serial autoregressive loop takes (zoo
    and variant; 0 without one), times and the run's largest spread."""
    import pandas as pd

    from .evaluate import interleaved_times

    rows = []
    for a in archs:
        for lam in lambdas:
            views = {"zoo": fixed[a, lam], **{v: models[a, v].at(lam) for v in variants}}
            for v in views.values():
                v.update(force=True)
            t = interleaved_times(views, images, repeats=repeats, progress=False)
            spread = max(t[k][f"{ph}_spread_pct"] for k in t for ph in ("encode", "decode"))
            r = res[(res.arch == a) & (res["lambda"] == lam)].set_index("model")
            z = t["zoo"]

            def loop(x):
                return 100 * x["decode_stages_ms"].get("autoregressive loop", 0.0) / x["decode_ms"]
            for v in variants:
                rows.append({"arch": a, "lambda": lam, "model": v, "FLOP reduction": r.loc[v, "flop_reduction"],
                             "encode speed-up": z["encode_ms"] / t[v]["encode_ms"],
                             "decode speed-up": z["decode_ms"] / t[v]["decode_ms"],
                             "g_s speed-up": z["decode_stages_ms"]["g_s"] / t[v]["decode_stages_ms"]["g_s"],
                             "zoo decode ms": z["decode_ms"], "decode ms": t[v]["decode_ms"],
                             "loop share of zoo decode (%)": loop(z), "loop share of decode (%)": loop(t[v]),
                             "spread % (max)": spread})
    return pd.DataFrame(rows)


def loop_text(lat, model="ecg+bm") -> str:
    """What the serial autoregressive loop takes of the decode, for each architecture that has one."""
    g = lat[(lat.model == model) & (lat["loop share of zoo decode (%)"] > 0)]
    if g.empty:
        return "no architecture of this run decodes serially (mbt2018 does; the `archs` parameter)."

    def rng(x, c, fmt=".0f", unit=" %"):  # one value where the range is one at the shown precision
        lo, hi = f"{x[c].min():{fmt}}", f"{x[c].max():{fmt}}"
        return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"
    return "; ".join(f"on {a}, the serial autoregressive loop (context model and coder, latent by latent) takes "
                     f"{rng(x, 'loop share of zoo decode (%)')} of the zoo model's decode and "
                     f"{rng(x, 'loop share of decode (%)')} of the gated one's, whose decode is "
                     f"{rng(x, 'decode speed-up', '.2f', '×')} as fast"
                     for a, x in g.groupby("arch")) + "."


def measure(view, images, cache_dir, name) -> dict:
    """One row for a codec at one λ: real-bitstream quality and rate on every image (cached per
    weights and λ, like every chapter's measurements), MACs of the computation actually run per
    image (gated convolutions count their open channels only; plus the gates' own cost), size."""
    from .evaluate import summarize_cached

    row = summarize_cached(view, images, cache_dir, repeats=1, timed=0, progress=False, desc=name)
    row = {k: row[k] for k in ("psnr", "bpp", "bpp_est", "ms_ssim", "params")}
    if isinstance(view, AtLambda) and view.model.gated:
        m = image_macs(view, images)
        row.update(macs=m["macs"] + m["gate_macs"], gate_macs=m["gate_macs"])
    else:
        h, w = images[0][1].shape[:2]
        row.update(macs=macs(view.eval(), torch.zeros(1, 3, h, w)), gate_macs=0)
    return row


def compare(fixed: dict, models: dict, archs, variants, lambdas, images, cache_dir):
    """The chapter's main table: the zoo model and every variant at every zoo λ (:func:`measure`),
    each variant's PSNR drop, FLOP reduction and rate change against the zoo model at its λ."""
    import pandas as pd

    rows = []
    for a in archs:
        for lam in lambdas:
            ref = measure(fixed[a, lam], images, cache_dir, f"{a} λ={lam}")
            rows.append({"arch": a, "lambda": lam, "model": "zoo (one per λ)", **ref})
            for v in variants:
                r = measure(models[a, v].at(lam), images, cache_dir, f"{a} {v} λ={lam}")
                rows.append({"arch": a, "lambda": lam, "model": v, **r,
                             "psnr_drop_pct": 100 * (ref["psnr"] - r["psnr"]) / ref["psnr"],
                             "flop_reduction": ref["macs"] / r["macs"], "bpp_change_pct": 100 * (r["bpp"] / ref["bpp"] - 1)})
    return pd.DataFrame(rows)


def bd_table(res, archs, variants):
    """BD-rate of every variant against the zoo's fixed models (rows of :func:`compare`), with the
    ranges of its PSNR drop and FLOP reduction over the λ."""
    import pandas as pd

    from .evaluate import bd

    rows = []
    for a in archs:
        zoo_curve = res[(res.arch == a) & (res.model == "zoo (one per λ)")][["bpp", "psnr"]].to_dict("list")
        for v in variants:
            sel = res[(res.arch == a) & (res.model == v)]
            rows.append({"arch": a, "model": v, "BD-rate vs zoo (%)": bd(zoo_curve, sel[["bpp", "psnr"]].to_dict("list"))["bd_rate"],
                         "PSNR drop (%), range": f"{sel.psnr_drop_pct.min():.2f} – {sel.psnr_drop_pct.max():.2f}",
                         "FLOP reduction (×), range": f"{sel.flop_reduction.min():.2f} – {sel.flop_reduction.max():.2f}"})
    return pd.DataFrame(rows)


def gate_cost_text(table) -> str:
    """What the gates cost in BD-rate, per architecture: ECG + BM against BM alone (:func:`bd_table`)."""
    from .report import pct

    by = table.set_index(["arch", "model"])["BD-rate vs zoo (%)"]
    archs = [a for a in dict.fromkeys(table.arch) if (a, "bm") in by.index]
    return "; ".join(f"{a}: BM alone {pct(by[a, 'bm'])}, ECG + BM {pct(by[a, 'ecg+bm'])}, so the gates "
                     + (f"cost {v:+.1f} points" if v == v else "cost an unmeasured amount")
                     for a in archs for v in [by[a, "ecg+bm"] - by[a, "bm"]]) \
        or "not measured (no BM-only model in this run)"


def monotone(sweep) -> dict:
    """{(arch, variant): whether the rate rises with λ along its sweep}: a continuous-rate model's minimum."""
    return {(a, v): bool(g.sort_values("lambda").bpp.is_monotonic_increasing)
            for (a, v), g in sweep.groupby(["arch", "model"], sort=False)}


def _tradeoff_labels(trade) -> list:
    return ["BM alone" if t == 0 else f"αₜ = {t:.2f}" for t in trade["target sparsity"]]


def tradeoff_figure(trade, arch: str):
    """BD-rate against FLOP reduction along :func:`tradeoff`'s rows, each point named in place."""
    from . import report

    x, y = trade["FLOP reduction (×)"], trade["BD-rate vs zoo (%)"]
    fig, axes = report.figure()
    ax = axes[0, 0]
    ax.plot(x, y, marker="o", color=report.color_of(arch))
    for xi, yi, text in zip(x, y, _tradeoff_labels(trade)):
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.set(xlabel="FLOP reduction (×), mean over the zoo's λ, gates included",
           ylabel="BD-rate vs the zoo's models (%)", title=arch)
    fig.tight_layout()
    return fig


def tradeoff_text(trade) -> tuple:
    """(each point in words, the curve's shape in words) for :func:`tradeoff`'s rows."""
    from .report import pct

    x, y = trade["FLOP reduction (×)"], trade["BD-rate vs zoo (%)"]
    points = "; ".join(f"{text}: {c:.2f} of the inputs closed, {xi:.2f}× fewer FLOPs at {pct(yi)} BD-rate"
                       for text, c, xi, yi in zip(_tradeoff_labels(trade), trade["closed (mean)"], x, y))
    rising = trade.sort_values("target sparsity")["BD-rate vs zoo (%)"].is_monotonic_increasing
    return points, ("rises with the target: each further share of closed inputs costs rate" if rising else
                    "does not rise steadily with the target; each point is one training run (one seed), so "
                    "run-to-run noise is part of it")


def tradeoff(arch: str, scale: Scale, targets, images, cache_dir, root=None) -> list:
    """The gates' FLOP/quality trade-off as a curve (beyond the paper, which trains one α_t): BM
    alone (no gates, α_t = 0) and ECG + BM at each target sparsity in ``targets``, on ``arch``.
    One row per model: the target, the share of input channels actually closed (mean over layers,
    images and both ends of the λ range), the FLOP reduction against the zoo model at each zoo λ
    (mean, min, max) and the BD-rate against the zoo's fixed models. Missing models train first
    (resumable, as :func:`get`); measurements are cached like every row of the chapter."""
    from .evaluate import bd

    fixed = {lam: zoo.get(arch, lam, scale, root=root, progress=False) for lam in scale.lambdas}
    ref = {lam: measure(m, images, cache_dir, f"{arch} λ={lam}") for lam, m in fixed.items()}
    zoo_curve = {k: [ref[lam][k] for lam in scale.lambdas] for k in ("bpp", "psnr")}
    out = []
    for variant, target in [("bm", 0.0)] + [("ecg+bm", t) for t in sorted(set(targets))]:
        model = get(arch, scale, variant, target if variant == "ecg+bm" else TARGET_SPARSITY, root=root)
        name = model_name(arch, variant, target)
        rows = {lam: measure(model.at(lam), images, cache_dir, f"{name} λ={lam}") for lam in scale.lambdas}
        reduction = [ref[lam]["macs"] / rows[lam]["macs"] for lam in scale.lambdas]
        closed = 0.0
        if model.gated:
            ends = (min(scale.lambdas), max(scale.lambdas))
            closed = sum(sum(layer_sparsity(model, lam, images).values()) / len(model.gates()) for lam in ends) / 2
        out.append({"model": variant, "target sparsity": target, "closed (mean)": closed,
                    "FLOP reduction (×)": sum(reduction) / len(reduction),
                    "FLOP reduction min (×)": min(reduction), "FLOP reduction max (×)": max(reduction),
                    "BD-rate vs zoo (%)": bd(zoo_curve, {k: [rows[lam][k] for lam in scale.lambdas]
                                                         for k in ("bpp", "psnr")})["bd_rate"]})
    return out


def budgets(arch: str, variant: str, scale: Scale, target=TARGET_SPARSITY) -> list:
    """[(steps, manifest name)] of the stored model and its continuations (:func:`continue_model`), by steps."""
    name = model_name(arch, variant, target)
    m = read_manifest(scale)
    return sorted((e["steps"], k) for k, e in m.items() if k == name or k.startswith(name + "@"))


def budget_curve(arch: str, variant: str, scale: Scale, images, cache_dir, root=None, target=TARGET_SPARSITY) -> list:
    """The chapter's metrics at every budget the model was trained to (issue 39): per stored
    budget, the BD-rate against the zoo's fixed models and the FLOP reduction at the zoo λ (as
    :func:`tradeoff` measures them, cached)."""
    from .evaluate import bd

    fixed = {lam: zoo.get(arch, lam, scale, root=root, progress=False) for lam in scale.lambdas}
    ref = {lam: measure(m, images, cache_dir, f"{arch} λ={lam}") for lam, m in fixed.items()}
    zoo_curve = {k: [ref[lam][k] for lam in scale.lambdas] for k in ("bpp", "psnr")}
    out = []
    for steps, name in budgets(arch, variant, scale, target):
        e = read_manifest(scale)[name]
        if e.get("retired") and not (models_dir(scale) / e["file"]).exists():
            rows = retired_rows(e, images, scale)
        else:
            model = load(models_dir(scale) / e["file"], e["sha256"])
            rows = {lam: measure(model.at(lam), images, cache_dir, f"{name} λ={lam}") for lam in scale.lambdas}
        reduction = [ref[lam]["macs"] / rows[lam]["macs"] for lam in scale.lambdas]
        out.append({"model": name, "steps": steps, "train_seconds": e.get("train_seconds"),
                    "BD-rate vs zoo (%)": bd(zoo_curve, {k: [rows[lam][k] for lam in scale.lambdas]
                                                         for k in ("bpp", "psnr")})["bd_rate"],
                    "FLOP reduction (×)": sum(reduction) / len(reduction),
                    "PSNR drop (%), max": max(100 * (ref[lam]["psnr"] - rows[lam]["psnr"]) / ref[lam]["psnr"]
                                              for lam in scale.lambdas)})
    return out


def retire(name: str, scale: Scale, images, cache_dir) -> dict:
    """Take budget-curve model ``name`` (``<model>@<steps>``) out of the chapter's folder once it was
    continued to a larger budget, so that the folder keeps within its 40 MB as budgets grow (the
    largest budget's weights stay). Its manifest entry keeps what :func:`budget_curve` reads — its
    rows at the zoo's λ, measured now (:func:`measure`: real bitstreams on ``images``) — and where git
    keeps the weights (:func:`lic.store.committed`). Returns the entry."""
    from .evaluate import MEASUREMENT_VERSION

    m = read_manifest(scale)
    e = m.get(name)
    if e is None or not e.get("continued_from"):
        raise ValueError(f"{name} is not a budget curve's continued model (<model>@<steps>); only those are retired")
    if e.get("retired"):
        return e
    if not any(x.get("continued_from") == name for x in m.values()):
        arch, variant = e["arch"], e["variant"]
        raise ValueError(f"{name} is the largest budget of its model: continue it first (`python -m lic.yin train "
                         f"--scale {scale.name} --arch {arch} --variant {variant} --steps S --from-steps {e['steps']}`, "
                         f"S > {e['steps']}), then retire it")
    path = models_dir(scale) / e["file"]
    where = store.committed(path)
    model = load(path, e["sha256"])
    rows = {str(lam): measure(model.at(lam), images, cache_dir, f"{name} λ={lam}") for lam in scale.lambdas}
    e = {**e, "retired": {"rows": rows, "images": [n for n, _ in images], "measurement_version": MEASUREMENT_VERSION,
                          **({"git": where} if where else {})}}
    m[name] = e
    _write_manifest(scale, m)
    path.unlink()
    return e


def _restore_how(entry: dict) -> str:
    """The command that brings a retired model's weights back from git (or "retraining it")."""
    git = entry["retired"].get("git")
    return f"with `git show {git['commit']}:{git['path']} > {git['path']}`" if git else "by retraining it"


def retired_rows(entry: dict, images, scale: Scale) -> dict:
    """{λ: row} a retired model's entry keeps (:func:`retire`), for ``images`` at the zoo's λ; an
    error naming how to restore its weights when they were measured on other images or by other code."""
    from .evaluate import MEASUREMENT_VERSION

    r = entry["retired"]
    if r["images"] != [n for n, _ in images] or r["measurement_version"] != MEASUREMENT_VERSION \
            or set(r["rows"]) != {str(lam) for lam in scale.lambdas}:
        raise zoo.CheckpointError(f"{entry['file']} was retired with rows for other images, λ or measurement code; "
                                  f"restore its weights {_restore_how(entry)} to measure it again")
    return {lam: r["rows"][str(lam)] for lam in scale.lambdas}


def budget_text(rows: list, bar: float) -> str:
    """What more steps did to the continuous-rate claim's metric (rows of :func:`budget_curve`):
    the BD-rate at each budget, against ``bar`` (CompressAI's own variable-rate model's), decided at
    the largest budget, and how fast the gap closes per doubling of steps (from the first budget
    with a BD-rate; none where the curves overlap too little)."""
    if not rows:
        return "no model of this architecture in the run"

    def bd(r):
        v = r["BD-rate vs zoo (%)"]
        return f"{v:+.1f} %" if math.isfinite(v) else "n/a (the curves overlap too little)"
    at = "; ".join(f"{bd(r)} at {r['steps']:,} steps" for r in rows)
    last = rows[-1]
    told = math.isfinite(last["BD-rate vs zoo (%)"])
    met = told and last["BD-rate vs zoo (%)"] <= bar
    text = (f"BD-rate against the zoo {at}, against the bar of {bar:+.1f} % (CompressAI's own variable-rate model against "
            f"its fixed ones); at the largest budget the bar is {('met' if met else 'not met') if told else 'not told'}, "
            f"and the largest PSNR drop is {last['PSNR drop (%), max']:.2f} % (the paper's bar: below 1 %)")
    if len(rows) < 2:
        return text + "; one budget only so far (the stored model continues to more steps in lic.yin)"
    if not told:
        return text + "; too few budgets with a BD-rate to tell a trend"
    return text + "; " + pace_text(rows, "BD-rate vs zoo (%)", bar)


def paper_quality(lmbda: float):
    """CompressAI's quality index whose λ is ``lmbda`` (the paper's table columns), or None."""
    from .scales import PAPER_QUALITY

    return PAPER_QUALITY.get(lmbda)


def storage(model: VariableRate, fixed: list) -> dict:
    """Bytes of one variable-rate model against the fixed-rate models it replaces (fp32
    state dicts both, so the saving is the architecture's, not fp16's), and the paper's
    saving: 1 − one / all."""
    from .evaluate import serialized_bytes

    one, many = serialized_bytes(model), sum(serialized_bytes(m) for m in fixed)
    return {"variable_bytes": one, "fixed_bytes": many, "fixed_models": len(fixed),
            "saving_pct": 100 * (1 - one / many)}


def vbr_bar(arch: str) -> float:
    """BD-rate (%) of CompressAI's published variable-rate model against its own fixed-rate
    models (Kodak): what one model for every rate cost there, the bar for ours."""
    from .evaluate import bd
    from .report import published

    return bd(published(arch), published(f"{arch}-vbr"))["bd_rate"]


def claims_for(res, bd_table, store, sparsity_mean: float, monotone: dict, paper, paper_storage, archs) -> list:
    """The chapter's verdicts (see :mod:`lic.claims`) from its tables: ``res`` (one row per
    architecture, λ and model), ``bd_table``, ``store``, the mean gate sparsity and ``monotone``
    ({(arch, variant): bool})."""
    from . import claims

    e = res[res.model == "ecg+bm"]
    p = paper[paper.arch.isin(archs)]
    lo = float(p.flop_reduction.min())
    n_fast = int((e.flop_reduction >= lo).sum())
    n_drop = int((e.psnr_drop_pct < 1).sum())
    out = [
        claims.make("yin-flops", "ECG cuts the FLOPs of the codec 2.0–2.9× at every quality",
                    f"{p.flop_reduction.min():.2f}–{p.flop_reduction.max():.2f}×",
                    f"{e.flop_reduction.min():.2f}–{e.flop_reduction.max():.2f}×",
                    claims.share(n_fast, len(e)),
                    f"each of the {len(e)} (architecture, λ) points must reach the paper's lowest "
                    f"reduction, {lo:.2f}× ({n_fast} do)", "The paper's table, regenerated"),
        claims.make("yin-psnr", "the PSNR drop of the gated variable-rate model stays below 1 %",
                    "< 1 %", f"{e.psnr_drop_pct.min():.2f} – {e.psnr_drop_pct.max():.2f} % "
                    f"(bpp {e.bpp_change_pct.min():+.1f} to {e.bpp_change_pct.max():+.1f} %)",
                    claims.share(n_drop, len(e)),
                    f"PSNR drop below 1 % at each of the {len(e)} points, at the zoo model's λ ({n_drop} are)",
                    "The paper's table, regenerated"),
    ]
    out.append(claims.make(
        "yin-sparsity", "the gated convolutions run at a sparsity of about 0.5", "≈ 0.5",
        f"{sparsity_mean:.2f} (mean over layers, Kodak images and the ends of the λ range)",
        "reproduced" if abs(sparsity_mean - 0.5) <= 0.1 else "not reproduced",
        "mean share of closed input channels within 0.1 of 0.5", "Where the gates close"))
    implied = {r.arch: 100 * (1 - r.variable_bytes / (8 * r.fixed_bytes / r.fixed_models)) for r in store.itertuples()}
    paper_s = dict(zip(paper_storage.arch, paper_storage.storage_saving_pct))
    n_store = sum(implied[a] >= paper_s[a] for a in implied)
    out.append(claims.make(
        "yin-storage", "one variable-rate model saves 80–83 % of the storage of one model per quality",
        " / ".join(f"{paper_s[a]:.2f}" for a in archs) + " %",
        " / ".join(f"{r.saving_pct:.1f}" for r in store.itertuples()) + " % against our 4 models; "
        + " / ".join(f"{implied[a]:.1f}" for a in implied) + " % against 8 of that size",
        claims.share(n_store, len(implied)),
        "against eight fixed models of the zoo's size (the paper's eight qualities), our saving must "
        "reach the paper's for the architecture", "Storage"))
    bar = {a: vbr_bar(a) for a in archs}
    g = bd_table[bd_table.model == "ecg+bm"].set_index("arch")["BD-rate vs zoo (%)"]
    n_cmp = sum(g[a] <= bar[a] for a in archs if g.get(a) == g.get(a))
    n_mono = sum(monotone[(a, "ecg+bm")] for a in archs)
    out.append(claims.make(
        "yin-continuous", "one model gives continuous rate with performance comparable to the original models",
        "continuous rate, comparable performance",
        "BD-rate vs the zoo: " + ", ".join(f"{a} " + (f"{g[a]:+.1f} %" if g[a] == g[a] else "n/a (curves overlap too little)")
                                           for a in archs) + f"; rate monotone in λ for {n_mono} of {len(archs)}",
        claims.share(min(n_cmp, n_mono), len(archs)),
        "rate must rise with λ over the sweep, and the BD-rate against the zoo's fixed models must be no "
        "worse than CompressAI's own variable-rate models against theirs (" + ", ".join(
            f"{a} {bar[a]:+.1f} %" for a in archs) + ")", "One model, every rate"))
    return out


def main(argv=None) -> int:
    from .cli import train_parser
    from .scales import get_scale

    ap, sub, t = train_parser("python -m lic.yin", "train the chapter's variable-rate models",
                              "train (or resume) missing models")
    t.add_argument("--arch", action="append", choices=ARCHS, help="repeatable; default: all three")
    t.add_argument("--variant", action="append", choices=VARIANTS, help="repeatable; default: both")
    t.add_argument("--target", type=float, default=TARGET_SPARSITY, help="target sparsity α_t of ecg+bm")
    t.add_argument("--steps", type=int, default=None, metavar="S",
                   help="a budget curve: continue the stored model to S steps in all, kept as <name>@S")
    t.add_argument("--from-steps", type=int, default=None, metavar="S0",
                   help="with --steps: continue the model already continued to S0 (default: the chapter's own)")
    r = sub.add_parser("retire", help="take a budget curve's intermediate weights out of the chapter's folder "
                                      "(kept by git), keeping its measured rows in the manifest")
    r.add_argument("name", help="<model>@<steps>, continued to a larger budget since")
    r.add_argument("--scale", default="cpu", choices=("smoke", "cpu", "paper"))
    r.add_argument("--data", default=None, help="data root (default: $LIC_DATA)")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale)
    if args.cmd == "retire":
        e = retire(args.name, scale, lic_data.test_images(scale, args.data), zoo.runs_dir(scale) / "measured")
        print("retired", args.name, "; its weights:", e["retired"].get("git", "not in git"))
        return 0
    for arch in args.arch or ARCHS:
        for variant in args.variant or VARIANTS:
            if args.steps:
                continue_model(arch, scale, variant, args.steps, args.target, root=args.data,
                               precision=args.precision, start_steps=args.from_steps)
                print("continued", budget_name(model_name(arch, variant, args.target), args.steps), "->",
                      models_dir(scale))
                continue
            get(arch, scale, variant, args.target, root=args.data, precision=args.precision)
            print("trained", model_name(arch, variant, args.target), "->", models_dir(scale))
    return 0


if __name__ == "__main__":
    import sys

    from .lock import guarded

    sys.exit(guarded(main))
