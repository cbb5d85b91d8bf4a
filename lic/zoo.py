"""Base models: build any architecture of the study, save/load checkpoints (non-uniform widths
included), CompressAI pretrained weights at ``paper`` scale, and the trained zoo with its manifest.

    python -m lic.zoo train --scale cpu [--arch A] [--lmbda L]     # train or resume what is missing
    python -m lic.zoo list --scale cpu                             # models and BD-rate vs WebP
    LIC_ZOO=runs/long python -m lic.zoo train --scale cpu --arch A --steps 60000   # a schedule trial
    python -m lic.zoo adopt runs/long --scale cpu --arch A         # take the trial's models
    python -m lic.zoo check-fp16 runs/cpu --scale cpu               # fp16 files vs fp32 states

Checkpoint layout: ``{"arch", "widths", "channels", "state_dict", "meta"}``. ``channels`` (every
layer's [in, out]) is stored because CompressAI's ``from_state_dict`` infers only N and M, which
is wrong for pruned models; entropy-coder tables are not stored (``update()`` rebuilds them).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from compressai.models import (Cheng2020Attention, JointAutoregressiveHierarchicalPriors,
                               MeanScaleHyperprior, ScaleHyperprior)

from . import data as lic_data
from . import distributed as D
from . import store
from .evaluate import evaluate
from .cli import check_lambdas, train_parser
from .scales import ARCHS, PAPER_QUALITY, SCALES, WIDTHS, Scale, check_choice, get_scale
from .surgery import channel_config, narrow_synthesis, resize_to
from .train import TrainConfig, train
from .weights import CODER_TABLES, fingerprint, is_entropy  # noqa: F401 - part of this module's interface

CLASSES = {
    "bmshj2018-hyperprior": ScaleHyperprior,
    "mbt2018-mean": MeanScaleHyperprior,
    "mbt2018": JointAutoregressiveHierarchicalPriors,
    "cheng2020-attn": Cheng2020Attention,
}
ZOO_FUNCS = {"bmshj2018-hyperprior": "bmshj2018_hyperprior", "mbt2018-mean": "mbt2018_mean",
             "mbt2018": "mbt2018", "cheng2020-attn": "cheng2020_attn"}
PROJECT = Path(__file__).resolve().parents[1]
# the zoo stores transforms in fp16 only where that moves the mean test PSNR by at most this much
FP16_TOLERANCE_DB = 0.01


CheckpointError = store.StoredModelError  # a checkpoint is missing, corrupt or does not match its manifest


def build(arch: str, **widths):
    """A freshly initialised CompressAI model of ``arch`` with the given widths (N, M)."""
    check_choice("arch", arch, ARCHS)
    return CLASSES[arch](**widths)


def build_for(arch: str, scale: Scale):
    """A fresh ``arch`` at ``scale``'s widths; with ``scale.decoder``, its g_s narrowed to that
    hidden width (:func:`lic.surgery.narrow_synthesis`)."""
    model = build(arch, **scale.widths(arch))
    return narrow_synthesis(model, scale.decoder) if scale.decoder else model


def pretrained_file(arch: str, lmbda: float, metric: str = "mse") -> tuple:
    """(URL, local path) of CompressAI's pretrained weights for ``arch`` at ``lmbda``'s quality: the
    file torch.hub looks for in its cache (``$TORCH_HOME/hub/checkpoints``) before the network."""
    from compressai.zoo.image import model_urls

    url = model_urls[arch][metric][PAPER_QUALITY[lmbda]]
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def pretrained(arch: str, lmbda: float, metric: str = "mse"):
    """CompressAI's pretrained model for ``arch`` at the quality whose λ is ``lmbda``.

    Uses ``compressai.zoo`` (weights through torch.hub's cache: ``$TORCH_HOME/hub/checkpoints``),
    so it needs the network the first time or the file already in that cache.
    """
    import compressai.zoo

    check_choice("arch", arch, ARCHS)
    check_choice("lambda", lmbda, tuple(PAPER_QUALITY))
    fn = getattr(compressai.zoo, ZOO_FUNCS[arch])
    try:
        return fn(quality=PAPER_QUALITY[lmbda], metric=metric, pretrained=True, progress=False).eval()
    except OSError as err:
        url, cache = pretrained_file(arch, lmbda, metric)
        raise CheckpointError(f"CompressAI's pretrained {arch} (quality {PAPER_QUALITY[lmbda]}) is not in the "
                              f"local cache and could not be fetched ({err}): download {url} on a machine "
                              f"with network access and put it at {cache}") from err


# ---------------------------------------------------------------------------------------------
# checkpoints


_is_entropy = is_entropy  # entropy-model parameters stay fp32 in fp16 checkpoints


def save(model, path, arch: str, widths: dict, meta=None, half=False) -> str:
    """Save ``model`` with its architecture, widths and per-layer channels; return its sha256.

    ``half`` stores the transforms' floating tensors in fp16; entropy-model parameters stay fp32.
    """
    first, parts = store.write_parts(store.stored_state(model, half), path)  # no file over 7 MiB
    return store.write({"arch": arch, "widths": dict(widths), "channels": channel_config(model),
                        "state_dict": first, "parts": parts, "meta": meta or {}}, path)


def load(path, sha256: str | None = None, retrain_hint: str = ""):
    """Load a checkpoint written by :func:`save`; verify ``sha256`` when given."""
    hint = f"Retrain it with `{retrain_hint}`." if retrain_hint else ""
    ck = store.read(path, sha256, hint)
    state = store.read_state(ck, path, hint)
    model = build(ck["arch"], **ck["widths"])
    resize_to(model, state)
    store.fill(model, state, path, hint)
    if channel_config(model) != ck["channels"]:
        raise CheckpointError(f"checkpoint {path}: rebuilt channels differ from the stored ones")
    return model


def fp16_check(fp32: dict, fp16: dict, tol_db=FP16_TOLERANCE_DB) -> dict:
    """Compare the mean results of a model's fp32 weights and of its fp16 file."""
    delta = fp16["psnr"] - fp32["psnr"]
    return {"psnr_fp32": fp32["psnr"], "bpp_fp32": fp32["bpp"], "delta_psnr_db": delta,
            "delta_bpp_pct": 100 * (fp16["bpp"] / fp32["bpp"] - 1), "tolerance_db": tol_db,
            "within_tolerance": abs(delta) <= tol_db}


def check_stored_fp16(scale: Scale, state_dirs, root=None, progress=True) -> dict:
    """Measure zoo models stored in fp16 against their fp32 weights, where the training state
    they were saved from (``<dir>/<name>.state.pt``) is still in one of ``state_dirs``; record the
    comparison in the manifest. A state counts only if it finished the model's steps and rounds to
    the stored weights. Returns {name: fp16_check}."""
    manifest, images, found = read_manifest(scale), lic_data.test_images(scale, root), {}
    for name, entry in sorted(manifest.items()):
        if not entry.get("weights", "").startswith("fp16"):
            continue
        stored = load(zoo_dir(scale) / entry["file"], entry["sha256"])
        for folder in state_dirs:
            f = Path(folder) / f"{name}.state.pt"
            if not f.is_file():
                continue
            state = torch.load(f, map_location="cpu", weights_only=False)
            fp32 = build(entry["arch"], **entry["widths"])
            fp32.load_state_dict(state["model"])
            if state["step"] != entry["steps"] or not _rounds_to(fp32, stored):
                continue
            ref = evaluate(fp32, images, real=True, timed=0, progress=progress, desc=f"{name} fp32")["mean"]
            res = evaluate(stored, images, real=True, timed=0, progress=progress, desc=f"{name} fp16")["mean"]
            entry["fp16_check"] = found[name] = fp16_check(ref, res)
            _write_manifest(scale, manifest)
            break
    return found


def _rounds_to(fp32, stored) -> bool:
    """Whether ``stored`` (fp16 transforms, fp32 entropy models) was saved from ``fp32``."""
    ref = stored.state_dict()
    for k, v in fp32.state_dict().items():
        if k.rsplit(".", 1)[-1] in CODER_TABLES or not v.is_floating_point():
            continue
        if not torch.equal(v if _is_entropy(k) else v.half().float(), ref[k]):
            return False
    return True


def save_checked(model, path, meta: dict, images, half=True, tol_db=FP16_TOLERANCE_DB, progress=True,
                 desc="eval"):
    """Save a zoo model, reload the file and measure it on ``images`` with real bitstreams.

    With ``half``, the fp32 model is measured first; the fp16 file is kept only if its mean PSNR is
    within ``tol_db`` of fp32's, otherwise the file is rewritten in fp32. The comparison goes into
    ``meta["fp16_check"]``. Returns (sha256, loaded model, mean results of the loaded model).
    """
    arch, widths = meta["arch"], meta["widths"]
    if half:
        ref = evaluate(model, images, real=True, timed=0, progress=progress, desc=f"{desc} (fp32)")["mean"]
    sha = save(model, path, arch, widths, meta, half=half)
    loaded = load(path, sha)
    res = evaluate(loaded, images, real=True, timed=0, progress=progress, desc=desc)["mean"]
    if half:
        meta["fp16_check"] = fp16_check(ref, res, tol_db)
        if not meta["fp16_check"]["within_tolerance"]:
            meta["weights"] = "fp32"
            sha = save(model, path, arch, widths, meta, half=False)
            loaded, res = load(path, sha), ref
    return sha, loaded, res


# ---------------------------------------------------------------------------------------------
# the zoo


def zoo_dir(scale: Scale) -> Path:
    """Final checkpoints: ``data/checkpoints/cpu`` (committed); other scales under ``runs/``. A
    wider family (:meth:`Scale.at_width`) has its own folder: ``data/checkpoints/cpu-N128``."""
    tail = scale.family
    if "LIC_ZOO" in os.environ:
        return Path(os.environ["LIC_ZOO"]) / scale.key
    if scale.name == "cpu":
        return PROJECT / "data" / "checkpoints" / ("cpu" + tail)
    return PROJECT / "runs" / scale.name / ("zoo" + tail)


def runs_dir(scale: Scale) -> Path:
    """Resumable training state and learning curves (not committed)."""
    return Path(os.environ.get("LIC_RUNS", PROJECT / "runs")) / scale.name


def states_dir(scale: Scale) -> Path:
    """Where the zoo's training states are: ``runs/<scale>`` (``runs/<scale>/zoo-N128`` for a wider family)."""
    return runs_dir(scale) / f"zoo{scale.family}" if scale.family else runs_dir(scale)


def model_name(arch: str, lmbda: float) -> str:
    return f"{arch}-{lmbda:.4f}"


def manifest_path(scale: Scale) -> Path:
    return zoo_dir(scale) / "manifest.json"


def read_manifest(scale: Scale) -> dict:
    return store.read_json(manifest_path(scale))


def _write_json(p: Path, obj: dict) -> None:
    store.write_json(p, obj)


def _write_manifest(scale: Scale, manifest: dict) -> None:
    _write_json(manifest_path(scale), manifest)


def learning_curve(arch, lmbda, scale: Scale):
    """The logged learning curve of a zoo model (a DataFrame), or None if none was logged."""
    import pandas as pd

    p = zoo_dir(scale) / f"{model_name(arch, lmbda)}.curve.csv"
    return pd.read_csv(p) if p.exists() else None


def train_command(arch, lmbda, scale: Scale) -> str:
    width = (f" --width {scale.width}" if scale.width else "") + (f" --decoder-width {scale.decoder}" if scale.decoder else "")
    return f"python -m lic.zoo train --scale {scale.name}{width} --arch {arch} --lmbda {lmbda}"


def middle_lambda(scale: Scale) -> float:
    """The λ trained from scratch; the others are fine-tuned from it."""
    return scale.lambdas[len(scale.lambdas) // 2]


def get(arch: str, lmbda: float, scale: Scale, root=None, train_missing=True, progress=True, precision=None,
        stop_at=None):
    """The base model ``arch`` at ``lmbda`` for ``scale``: from the zoo, CompressAI (paper scale),
    or trained now (resumable, under ``precision``: :mod:`lic.precision`) when missing and
    ``train_missing``."""
    check_choice("arch", arch, ARCHS)
    check_choice(f"lambda for scale {scale.name!r}", lmbda, scale.lambdas)
    if scale.pretrained:
        if scale.decoder:  # CompressAI's weights are for its own g_s widths only
            raise CheckpointError(f"no pretrained {arch} with a {scale.decoder}-channel g_s at the {scale.name} scale: "
                                  "a narrow decoder from scratch is trained at smoke or cpu scale")
        return pretrained(arch, lmbda)
    entry = read_manifest(scale).get(model_name(arch, lmbda))
    if entry:
        return load(zoo_dir(scale) / entry["file"], entry["sha256"], train_command(arch, lmbda, scale))
    if not train_missing:
        raise CheckpointError(f"{model_name(arch, lmbda)} is not in the {scale.name} zoo "
                              f"({zoo_dir(scale)}); train it with `{train_command(arch, lmbda, scale)}`")
    return train_model(arch, lmbda, scale, root=root, progress=progress, precision=precision, stop_at=stop_at)


def learning_curve_eval(scale: Scale, root=None, limit=None):
    """Learning-curve evaluation (forward only): mean PSNR, estimated bpp and R + λD on the
    validation images (``val_*``: what decides when a run has converged or may stop,
    :func:`lic.claims.still_improving`) and on the test set (``test_*``, the figures)."""
    images = lic_data.test_images(scale, root)
    if limit:
        images = images[:limit]
    validation = lic_data.validation_images(scale, root)

    def run(model):
        res = evaluate(model, images, real=False, progress=False)["mean"]
        val = evaluate(model, validation, real=False, progress=False)["mean"]
        return {"test_psnr": res["psnr"], "test_bpp_est": res["bpp_est"],
                "val_psnr": val["psnr"], "val_bpp_est": val["bpp_est"]}
    return run


def register_points(archs, lambdas, scale: Scale) -> list:
    """The base models as 06_synthesis' anchors: a point that is the zoo model itself (nothing stored)."""
    from . import points

    return points.publish("00_baselines", scale, [
        points.register("00_baselines", scale, method="zoo", arch=a, lmbda=lam, variant="zoo",
                        rebuild="lic.zoo:get", spec={"arch": a, "lmbda": lam, "train_missing": False})
        for a in archs for lam in lambdas])


def read_stages(scale: Scale) -> dict:
    """Unfinished zoo models kept between sessions (``stages.json`` beside the manifest): for each,
    the stored weights at the step its last stage ended, the schedule it belongs to and every stage."""
    return store.read_json(zoo_dir(scale) / "stages.json")


def keep_stage(model, name: str, cfg, state_file: Path, scale: Scale, started_from=None) -> dict:
    """Store an unfinished model at the step its training state reached (fp16 transforms, fp32
    entropy models; the learning curve beside it) so a later session on any machine continues
    it (:func:`lic.train.restart_state`) instead of starting again. The stage is recorded, with
    the CPU, loops and seconds of each part, in ``stages.json``."""
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    stages = read_stages(scale)
    before = stages.get(name, {})
    file = f"{name}.stage.pt"
    sha = save(model, zoo_dir(scale) / file, scale_arch(name), scale.widths(scale_arch(name)),
               {"stage_of": name, "step": state["step"]}, half=True)
    if D.is_main():
        write_curve(zoo_dir(scale) / f"{name}.stage.curve.csv", state["curve"])
    part = {"to_step": state["step"], "train_seconds": round(state.get("elapsed", 0.0), 3),
            "loops": [{k: lp.get(k) for k in ("from_step", "loop", "how", "cpu")} for lp in state.get("loops", [])],
            "ended": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    stages[name] = {"file": file, "sha256": sha, "step": state["step"], "of_steps": cfg.steps,
                    "lambda": cfg.lmbda, "started_from": started_from, "config": {
                        k: getattr(cfg, k) for k in ("batch", "crop", "late_crop", "late_frac", "lr", "lr_final",
                                                     "aux_lr", "clip", "seed")},
                    "train_seconds": part["train_seconds"],
                    # kept again at the same step (e.g. rewritten by newer code): that part, not another
                    "stages": [p for p in before.get("stages", []) if p["to_step"] != part["to_step"]] + [part]}
    _write_json(zoo_dir(scale) / "stages.json", stages)
    return stages[name]


def scale_arch(name: str) -> str:
    """The architecture of a zoo model name (``arch-λ``)."""
    return name.rsplit("-", 1)[0]


def write_curve(path: Path, rows) -> None:
    from .train import write_csv

    if rows:
        write_csv(path, rows)


def _continue_stage(model, name: str, cfg, state_file: Path, scale: Scale) -> None:
    """Without a training state here, continue a kept stage of ``name`` (same schedule) from its
    stored weights."""
    from .train import restart_state

    stage = read_stages(scale).get(name)
    if D.broadcast(state_file.exists()) or not stage:  # rank 0's answer: restart_state has a barrier
        return
    if stage["of_steps"] != cfg.steps or stage["lambda"] != cfg.lmbda:
        raise CheckpointError(f"the kept stage of {name} belongs to a {stage['of_steps']}-step schedule at "
                              f"λ={stage['lambda']}, not {cfg.steps} at λ={cfg.lmbda}; train with its steps")
    kept = load(zoo_dir(scale) / stage["file"], stage["sha256"])
    model.load_state_dict(kept.state_dict())
    import pandas as pd

    curve_file = zoo_dir(scale) / f"{name}.stage.curve.csv"
    curve = pd.read_csv(curve_file).to_dict("records") if curve_file.exists() else []
    restart_state(state_file, model, stage["step"], cfg, curve, stage["train_seconds"],
                  [lp for part in stage["stages"] for lp in part["loops"]])


def train_model(arch: str, lmbda: float, scale: Scale, root=None, progress=True, seed=0, precision=None,
                stop_at=None):
    """Train (or resume) one zoo model, save it, evaluate the saved file, add it to the manifest
    (with the training loop of every part of the run: ``precision``).

    ``stop_at``: end this session's part at that step and keep it as a stage (:func:`keep_stage`),
    returning None; a later call continues it, from the training state if this machine still has
    it, else from the stage's stored weights."""
    mid = middle_lambda(scale)
    steps, finetune_steps = scale.schedule(arch)
    start = None
    if lmbda != mid:
        start = get(arch, mid, scale, root=root, progress=progress, precision=precision, stop_at=stop_at)
        if start is None:  # the middle λ stopped at a stage
            return None
        steps = finetune_steps
    model = build_for(arch, scale)
    if start is not None:
        model.load_state_dict(start.state_dict())
    name = model_name(arch, lmbda)
    run = states_dir(scale)
    data = lic_data.train_set(scale, root, seed=seed)
    cfg = TrainConfig.from_scale(scale, lmbda, steps=steps, seed=seed, precision=precision)
    if start is not None and scale.late_crop:
        # fine-tunes stay on the large crops the start model finished on (same pixels per batch):
        # at λ=0.025, 8k steps on 256² crops beat 8k steps on 128² by 1.5 % in R + λD on Kodak
        # (benchmarks/finetune_crop.py)
        cfg.batch = max(1, round(cfg.batch * (cfg.crop / scale.late_crop) ** 2))
        cfg.crop, cfg.late_crop, cfg.late_frac = scale.late_crop, 0, 0.0
    images = lic_data.test_images(scale, root)
    state = run / f"{name}.state.pt"
    _continue_stage(model, name, cfg, state, scale)
    curve = train(model, data, cfg, checkpoint=state,
                  evaluate=learning_curve_eval(scale, root) if cfg.eval_every else None,
                  log=run / f"{name}.curve.csv", progress=progress, desc=name, stop_after=stop_at)
    if not curve or curve[-1]["step"] < steps:
        if stop_at is not None:
            keep_stage(model, name, cfg, state, scale, model_name(arch, mid) if start is not None else None)
        return None
    t_trained = time.time()
    file = f"{name}.pt"
    half = scale.name == "cpu"
    meta = {"arch": arch, "widths": scale.widths(arch), "lambda": lmbda, "steps": steps,
            **({"decoder_width": scale.decoder, "init": "trained from scratch at this decoder width"}
               if scale.decoder else {}),
            "started_from": model_name(arch, mid) if start is not None else None,
            "schedule": {k: getattr(cfg, k) for k in ("batch", "crop", "late_crop", "late_frac", "lr",
                                                      "lr_final", "aux_lr", "clip")},
            "stages": read_stages(scale).get(name, {}).get("stages", []),
            "precision": [{k: lp[k] for k in ("from_step", "loop", "how", "cpu")}
                          for lp in torch.load(state, weights_only=False).get("loops", [])],
            "seed": seed, "train_seconds": round(curve[-1]["elapsed_s"] if curve else 0, 3),
            "train_data": scale.train_set, "weights": "fp16 transforms, fp32 entropy models" if half
            else "fp32", "torch": str(torch.__version__)}
    sha, loaded, res = save_checked(model, zoo_dir(scale) / file, meta, images, half=half,
                                    progress=progress, desc=f"{name} eval")
    curve_log, curve_copy = run / f"{name}.curve.csv", zoo_dir(scale) / f"{name}.curve.csv"
    if curve_log.exists() and curve_log.resolve() != curve_copy.resolve() and D.is_main():  # one folder for both is fine
        shutil.copyfile(curve_log, curve_copy)
    meta.update(file=file, sha256=sha, test_set=scale.test_set, test_images=len(images),
                psnr=res["psnr"], bpp=res["bpp"], bpp_est=res["bpp_est"], ms_ssim=res["ms_ssim"],
                curve=f"{name}.curve.csv",
                # training time summed over every resume, plus this call's save and evaluation
                wall_seconds=round(meta["train_seconds"] + time.time() - t_trained, 1))
    manifest = read_manifest(scale)
    manifest[name] = meta
    _write_manifest(scale, manifest)
    stages = read_stages(scale)
    if stages.pop(name, None):  # finished: its stages live on in the manifest entry
        if D.is_main():
            for f in store.model_files(zoo_dir(scale) / f"{name}.stage.pt") + [zoo_dir(scale) / f"{name}.stage.curve.csv"]:
                f.unlink(missing_ok=True)
        _write_json(zoo_dir(scale) / "stages.json", stages)
    return loaded


def validation_bd(trial: dict, current: dict, scale: Scale, root=None) -> dict:
    """BD-rate (%) of a trial family against the current one of the same architecture on the
    validation images (:func:`lic.data.validation_images`, never the test set), models given as
    {λ: model}; rate estimated from the likelihoods (the choice needs no bitstreams)."""
    from .evaluate import bd

    images = lic_data.validation_images(scale, root)
    curves = {}
    for tag, fam in (("trial", trial), ("current", current)):
        pts = [evaluate(m, images, real=False, progress=False)["mean"] for _, m in sorted(fam.items())]
        curves[tag] = {"bpp": [r["bpp_est"] for r in pts], "psnr": [r["psnr"] for r in pts]}
    return {"images": [n for n, _ in images], "bd_rate": bd(curves["current"], curves["trial"])["bd_rate"],
            "trial": curves["trial"], "current": curves["current"]}


def adopt(source, scale: Scale, archs=None, force=False, root=None) -> list:
    """Take the finished models of another zoo (a schedule trial's ``LIC_ZOO`` folder) into this
    scale's zoo: checkpoint, learning curve and manifest entry, each checkpoint verified against
    the source manifest before it is copied. A family that would replace models must need fewer
    bits on the validation images (:func:`validation_bd` < 0; the test images decide nothing);
    ``force`` adopts anyway. The comparison is kept with the replaced records. Returns the adopted
    model names."""
    src = Path(source) / scale.name
    entries = json.loads((src / "manifest.json").read_text()) if (src / "manifest.json").exists() else {}
    chosen = {n: e for n, e in entries.items() if archs is None or e["arch"] in archs}
    if not chosen:
        raise CheckpointError(f"no finished models{' of ' + ', '.join(archs) if archs else ''} in "
                              f"{src / 'manifest.json'}; finish them with `LIC_ZOO={source} python -m "
                              f"lic.zoo train --scale {scale.name}` (with the trial's --steps) first")
    new = {name: load(src / e["file"], e["sha256"]) for name, e in chosen.items()}  # refuses a corrupt file
    dest = zoo_dir(scale)
    dest.mkdir(parents=True, exist_ok=True)
    manifest, old = read_manifest(scale), superseded(scale)
    checks = {}
    for arch, fam in _families({**e, "name": n} for n, e in chosen.items()).items():
        replaced = [e for e in fam if e["name"] in manifest and manifest[e["name"]]["sha256"] != e["sha256"]]
        if not replaced:
            continue
        trial = {e["lambda"]: new[e["name"]] for e in fam}
        current = {lam: get(arch, lam, scale, train_missing=False) for lam in trial if model_name(arch, lam) in manifest}
        check = validation_bd({lam: trial[lam] for lam in current}, current, scale, root)
        if not check["bd_rate"] < 0 and not force:
            raise CheckpointError(
                f"{arch}: the trial does not need fewer bits than the current zoo on the validation images "
                f"({', '.join(check['images'])}): BD-rate "
                + (f"{check['bd_rate']:+.2f} %" if check["bd_rate"] == check["bd_rate"] else "n/a (the curves overlap too little)")
                + ". Keep the current models, "
                f"or adopt anyway with `python -m lic.zoo adopt {source} --scale {scale.name} --arch {arch} --force`")
        checks[arch] = {k: check[k] for k in ("images", "bd_rate")} | {"forced": bool(force and not check["bd_rate"] < 0)}
    for name, e in sorted(chosen.items()):
        before = manifest.get(name)
        if before and before["sha256"] != e["sha256"]:
            # the replaced model's record and learning curve stay: the chapter compares schedules
            key = f"{name}@{before['steps']}"
            if before.get("curve") and (dest / before["curve"]).exists():
                kept = f"{name}.{before['steps']}steps.curve.csv"
                shutil.copyfile(dest / before["curve"], dest / kept)
                before = {**before, "curve": kept}
            old[key] = {**before, "file": None, "superseded_by": e["sha256"], "validation": checks.get(e["arch"])}
        for f in (e["file"], e.get("curve")):
            if f and (src / f).exists():
                shutil.copyfile(src / f, dest / f)
        manifest[name] = e
    if old:
        _write_json(zoo_dir(scale) / "superseded.json", old)
    _write_manifest(scale, manifest)
    return sorted(chosen)


def superseded(scale: Scale) -> dict:
    """Records (and learning curves) of zoo models that ``adopt`` replaced, keyed ``name@steps``;
    their weights are not kept."""
    p = zoo_dir(scale) / "superseded.json"
    return json.loads(p.read_text()) if p.exists() else {}


def superseded_curve(entry: dict, scale: Scale):
    """The learning curve of a superseded model (a DataFrame), or None."""
    import pandas as pd

    p = zoo_dir(scale) / entry["curve"] if entry.get("curve") else None
    return pd.read_csv(p) if p and p.exists() else None


def _families(entries) -> dict:
    families = {}
    for e in entries:
        families.setdefault(e["arch"], []).append(e)
    return families


def _bd_webp(entries: list) -> float:
    from .evaluate import bd
    from .report import published

    return bd(published("WebP"), {"bpp": [e["bpp"] for e in entries], "psnr": [e["psnr"] for e in entries]})["bd_rate"]


def bd_vs_webp(scale: Scale) -> dict:
    """Each family's BD-rate (%) against the published WebP curve on Kodak, from the manifest's
    measured points: the quality bar of the `cpu` zoo (bmshj2018-hyperprior must be < 0). NaN
    where the curves overlap too little; empty unless the scale tests on Kodak."""
    if scale.test_set != "kodak":
        return {}
    return {arch: _bd_webp(pts) for arch, pts in sorted(_families(read_manifest(scale).values()).items())
            if len(pts) >= 2}


def at_compressai_widths(scale: Scale) -> list:
    """Every model of the scale's own zoo and of each wider family (:data:`lic.scales.WIDER`) whose
    λ is one of CompressAI's qualities, beside CompressAI's published model of that architecture and
    quality on Kodak: PSNR and bpp of both (ours from the manifest: the stored file, real
    bitstreams, all test images) and the rate ours spends over the published curve at equal PSNR
    (:func:`lic.evaluate.rate_at`). At ``N=128, M=192`` (bmshj2018-hyperprior, qualities 1–5) the
    two are the same architecture, so the gap is our training's alone. Empty off Kodak."""
    from compressai.zoo.image import cfgs

    from .evaluate import rate_at
    from .report import published
    from .scales import WIDER

    if scale.test_set != "kodak":
        return []
    rows = []
    for at in [scale.at_width("")] + [scale.at_width(w) for w in WIDER]:
        for name, e in sorted(read_manifest(at).items()):
            q = PAPER_QUALITY.get(e.get("lambda"))
            if q is None or e.get("decoder_width") or e.get("psnr") is None:
                continue
            pub = published(e["arch"])
            if q > len(pub["bpp"]):
                continue
            need = rate_at(pub, e["psnr"])
            rows.append({"arch": e["arch"], "N, M (ours)": ", ".join(str(e["widths"][k]) for k in ("N", "M") if k in e["widths"]),
                         "N, M (CompressAI)": ", ".join(map(str, cfgs[e["arch"]][q])),
                         "λ": e["lambda"], "quality": q, "steps": e["steps"],
                         "PSNR (ours)": e["psnr"], "bpp (ours)": e["bpp"],
                         "PSNR (CompressAI)": pub["psnr"][q - 1], "bpp (CompressAI)": pub["bpp"][q - 1],
                         "rate over CompressAI at equal PSNR (%)": 100 * (e["bpp"] / need - 1) if need == need
                         else float("nan")})
    return rows


def at_compressai_widths_text(rows: list) -> str:
    """One sentence from :func:`at_compressai_widths`' rows: each model trained at CompressAI's own
    widths against CompressAI's, beside our narrower model of the same architecture and λ."""
    from .report import pct

    key = "rate over CompressAI at equal PSNR (%)"
    same = [r for r in rows if r["N, M (ours)"] == r["N, M (CompressAI)"]]
    if not rows:
        return "No zoo model here has the λ of a CompressAI quality on Kodak (the published points are Kodak's)."
    if not same:
        return "No model at CompressAI's own widths is in the zoo at this scale yet."
    narrow = {(r["arch"], r["λ"]): r for r in rows if r["N, M (ours)"] != r["N, M (CompressAI)"]}
    parts = []
    for r in same:
        other = narrow.get((r["arch"], r["λ"]))
        parts.append(f"{r['arch']} at N, M = {r['N, M (ours)']}, λ = {r['λ']:g} (quality {r['quality']}, "
                     f"{r['steps']:,} steps): {pct(r[key])} rate over CompressAI's model at equal PSNR"
                     + (f", against {pct(other[key])} for ours at N, M = {other['N, M (ours)']}" if other else ""))
    return "Measured: " + "; ".join(parts) + "."


def schedule_comparison(scale: Scale) -> list:
    """For each architecture whose models ``adopt`` replaced: the replaced and the current family
    side by side (steps, training hours over all λ, BD-rate vs published WebP on Kodak)."""
    mid, rows = middle_lambda(scale), []
    current = _families(read_manifest(scale).values())
    for arch, old in sorted(_families(superseded(scale).values()).items()):
        for tag, fam in (("replaced", old), ("current", current.get(arch, []))):
            steps = {e["lambda"]: e["steps"] for e in fam}
            rows.append({"arch": arch, "zoo": tag, "models": len(fam), "steps (middle λ)": steps.get(mid),
                         "steps (others)": max((v for k, v in steps.items() if k != mid), default=None),
                         "train hours": sum(e["train_seconds"] for e in fam) / 3600,
                         "BD-rate vs WebP %": _bd_webp(fam) if scale.test_set == "kodak" and len(fam) >= 2
                         else float("nan"), "decided on": _decided_on(old) if tag == "current" else ""})
    return rows


def _decided_on(replaced: list) -> str:
    """What chose a replacement: the validation comparison ``adopt`` recorded, or — for models
    adopted before ``adopt`` compared on validation images — the test images' learning curves."""
    checks = [e["validation"] for e in replaced if e.get("validation")]
    if not checks:
        return "test-image learning curves (adopted before the validation rule; not re-checkable: the replaced weights are not kept)"
    c = checks[0]
    return (f"validation images ({', '.join(c['images'])}): BD-rate {c['bd_rate']:+.1f} % vs replaced"
            + (" (forced)" if c.get("forced") else ""))


# ---------------------------------------------------------------------------------------------
# the bars the base models must meet (00_baselines), as claims

TIE_PCT = 0.5  # |BD-rate| below this is a tie, stated as one


def claims_for(bd, mean_vs_bmshj, train_speed, bars) -> list:
    """The baselines chapter's bars (``data/papers/claims.csv``, chapter 00_baselines) as claims
    (:mod:`lic.claims`): ``bd`` the BD-rate table (arch, anchor, "BD-rate %"), ``mean_vs_bmshj``
    mbt2018-mean's BD-rate against bmshj2018-hyperprior, ``train_speed`` the result of
    :func:`lic.train.throughput`. A bar met against one anchor and tied against another says both."""
    import pandas as pd

    from . import claims

    bd = pd.DataFrame(bd)
    b = bars[bars.chapter == "00_baselines"].set_index("claim").value
    ref = bd[bd.arch == "bmshj2018-hyperprior"].set_index("anchor")["BD-rate %"]
    webp = {a: float(ref[a]) for a in ("WebP (published)", "WebP (Pillow, here)") if a in ref and ref[a] == ref[a]}
    main = "WebP (published)" if "WebP (published)" in webp else next(iter(webp), None)
    ties = [a for a, v in webp.items() if abs(v) < TIE_PCT]
    out = []
    if main is not None:
        out.append(claims.make(
            "bar-webp", "our bmshj2018-hyperprior needs fewer bits than WebP at equal PSNR (the base models are not weak)",
            f"BD-rate {b['bmshj2018-hyperprior BD-rate against WebP']} %",
            "; ".join(f"{v:+.2f} % against {a}" for a, v in webp.items())
            + (f" (a tie, |BD-rate| < {TIE_PCT} %, against {', '.join(ties)})" if ties else ""),
            "reproduced" if webp[main] < 0 else "not reproduced",
            f"BD-rate below 0 against {main}; against any WebP anchor within ±{TIE_PCT} % it is stated as a tie",
            "Rate–distortion curves"))
    if mean_vs_bmshj is not None and mean_vs_bmshj == mean_vs_bmshj:
        out.append(claims.make(
            "bar-mean", "adding a mean to the Gaussian prior (mbt2018-mean) is no worse than the scale hyperprior",
            f"BD-rate {b['mbt2018-mean BD-rate against bmshj2018-hyperprior']} %", f"{mean_vs_bmshj:+.2f} %",
            "reproduced" if mean_vs_bmshj <= 0 else "not reproduced", "BD-rate at most 0 against our bmshj2018-hyperprior",
            "Rate–distortion curves"))
    if train_speed:
        goal = float(b["training throughput of the project's loop against plain fp32 eager"])
        out.append(claims.make(
            "bar-train-speed", "the project's training loop is several times faster than plain fp32 eager CompressAI",
            f"{goal:g}×", f"{train_speed['ratio']:.2f}× ({train_speed['auto']} on {train_speed['cpu']})",
            "reproduced" if train_speed["ratio"] >= goal else "not reproduced",
            f"at least {goal:g}× on this CPU, one interleaved run", "Training speed on this CPU"))
    return out


def main(argv=None) -> int:
    ap, sub, t = train_parser("python -m lic.zoo", "train or list base models")
    t.add_argument("--arch", action="append", choices=ARCHS, help="repeatable; default: all")
    t.add_argument("--lmbda", type=float, action="append", help="repeatable; default: all")
    t.add_argument("--steps", type=int, help="steps of the middle λ from scratch (default: the scale's)")
    t.add_argument("--finetune-steps", type=int, help="steps of each other λ (default: the scale's)")
    t.add_argument("--width", default="", choices=WIDTHS,
                   help="the base family: N64 (the scale's own, default) or N128 (CompressAI's N=128/M=192)")
    t.add_argument("--decoder-width", type=int, default=0, metavar="W",
                   help="g_s hidden width trained from scratch (07_controls' scratch control; default: the architecture's)")
    t.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="end this part at STEP and keep it as a stage (committable weights); the next "
                        "call continues it, on this machine from its state, elsewhere from the stage")
    ls = sub.add_parser("list", help="print the manifest and each family's BD-rate vs WebP")
    ls.add_argument("--scale", default="cpu", choices=tuple(SCALES))
    ls.add_argument("--width", default="", choices=WIDTHS, help="the base family (default: the scale's own)")
    ls.add_argument("--decoder-width", type=int, default=0, metavar="W", help="a narrow-decoder family (07_controls)")
    ad = sub.add_parser("adopt", help="copy the finished models of another zoo (a schedule trial) into this one")
    ad.add_argument("source", help="the other zoo's LIC_ZOO folder, e.g. runs/trial")
    ad.add_argument("--scale", default="cpu")
    ad.add_argument("--arch", action="append", help="repeatable; default: all")
    ad.add_argument("--force", action="store_true",
                    help="adopt even where the trial is not better on the validation images")
    ad.add_argument("--data", default=None, help="data root (default: $LIC_DATA)")
    ck = sub.add_parser("check-fp16", help="measure fp16-stored models against their fp32 training states")
    ck.add_argument("states", nargs="+", help="folders holding <name>.state.pt, e.g. runs/cpu runs/trial/cpu")
    ck.add_argument("--scale", default="cpu")
    ck.add_argument("--data", default=None, help="data root (default: $LIC_DATA)")
    args = ap.parse_args(argv)
    scale = get_scale(args.scale).at_width(getattr(args, "width", ""))
    if getattr(args, "decoder_width", 0):
        if args.decoder_width < 1 or args.decoder_width >= scale.N:
            ap.error(f"--decoder-width must be in [1, {scale.N - 1}] (narrower than the scale's N={scale.N}), "
                     f"not {args.decoder_width}")
        scale = scale.with_(decoder=args.decoder_width)
    if getattr(args, "stop_at", None) is not None and args.stop_at < 1:
        ap.error(f"--stop-at must be a positive step, not {args.stop_at}")
    check_lambdas(ap, getattr(args, "lmbda", None), scale)
    if args.cmd == "check-fp16":
        found = check_stored_fp16(scale, args.states, root=args.data)
        for name, c in found.items():
            print(f"{name:32s} fp16 - fp32: {c['delta_psnr_db']:+.4f} dB  {c['delta_bpp_pct']:+.3f} % bpp  "
                  f"(within {c['tolerance_db']} dB: {c['within_tolerance']})")
        missing = [n for n, e in read_manifest(scale).items() if e.get("weights", "").startswith("fp16")
                   and n not in found]
        if missing:
            print(f"no matching fp32 training state for: {', '.join(missing)}")
        return 0
    if args.cmd == "adopt":
        for name in adopt(args.source, scale, args.arch, force=args.force, root=args.data):
            print(f"adopted {name} into {zoo_dir(scale)}")
        return 0
    if args.cmd == "list":
        for name, e in sorted(read_manifest(scale).items()):
            print(f"{name:32s} {e['psnr']:6.2f} dB  {e['bpp']:.3f} bpp  {e['steps']:>6d} steps")
        for name, e in sorted(read_stages(scale).items()):
            print(f"{name:32s} unfinished: step {e['step']} of {e['of_steps']} kept "
                  f"({len(e['stages'])} part(s), {e['train_seconds'] / 3600:.1f} h)")
        for arch, rate in bd_vs_webp(scale).items():
            print(f"{arch:32s} BD-rate vs WebP (published, Kodak): {rate:+.1f} %")
        return 0
    if args.steps or args.finetune_steps:  # a schedule experiment: the manifest records the steps
        scale = scale.with_(steps=args.steps or scale.steps,
                            finetune_steps=args.finetune_steps or scale.finetune_steps, arch_steps=())
    archs = args.arch or list(ARCHS)
    lambdas = args.lmbda or list(scale.lambdas)
    for arch in archs:
        # the middle lambda first: the others start from it
        for lmbda in sorted(lambdas, key=lambda l: l != middle_lambda(scale)):
            if model_name(arch, lmbda) not in read_manifest(scale):
                if get(arch, lmbda, scale, root=args.data, precision=args.precision, stop_at=args.stop_at) is None:
                    stage = read_stages(scale).get(model_name(arch, lmbda)) or read_stages(scale).get(
                        model_name(arch, middle_lambda(scale)))
                    print(f"stopped at step {stage['step']} of {stage['of_steps']}; kept in {zoo_dir(scale)}/"
                          f"{stage['file']} ({', '.join(sorted(read_stages(scale)))}). Continue with the same command "
                          "(a larger or no --stop-at).")
                    return 0
    return 0


if __name__ == "__main__":
    from .lock import guarded

    sys.exit(guarded(main))
