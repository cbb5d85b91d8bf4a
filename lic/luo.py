"""Luo et al. (ERHP): ResRep compactor pruning of the hyper path (h_a, h_s) of a hyperprior codec.

ResRep (Ding et al. 2021) puts a *compactor* — a bias-free 1×1 convolution initialised to the
identity — after every layer to prune, trains with a group lasso on the compactor's rows while the
task gradient of *masked* rows is zeroed (so those rows only shrink), then folds each compactor
into its layer and removes the masked channels. ERHP adds compactors for transposed convolutions
(folded along the weight's output dimension, Eq. 10) and for sub-pixel convolutions (the compactor
sits after the PixelShuffle; the r² conv channels of one shuffled channel go together, Eqs. 7-9).

Here:

- :func:`add_compactors` / :func:`merge` — compactors after every hyper-path unit except the last of
  h_s (its width is fixed by the entropy model of y); the fold itself is
  :func:`lic.surgery.fold_1x1`, the removal :func:`lic.surgery.remove_channels`.
- :class:`ResRep` — the gradient rule (a :class:`lic.train.Hook`) and the mask schedule: every
  ``every`` steps after ``start``, rows are ranked by L2 norm over all compactors and, from full
  widths again, masked in that order until ``target`` of the hyper path's parameters would be
  removed, at most ``per_update`` more than before, at least ``min_keep`` channels per layer.
- :class:`RatePath` — training the hyper path with the main path (and any context model) frozen:
  the distortion does not depend on the hyper path, so the loss is the rate of y and z only and
  g_s is never run; :class:`Latents` — its training data, y of the training images computed once.
- :func:`erhp`, :func:`uniform` — the chapter's two pruning procedures, resumable.

Adam normalises gradients, but only down to its ε (1e-8): a masked row, whose gradient is the
penalty alone, moves by about lr·β/(β+ε) per step — about the learning rate for ResRep's β=1e-4,
about a tenth of it for the paper's β=1e-9. Rows do not reach ResRep's 1e-5 norm threshold in a
short run, so :func:`merge` removes the *masked* channels and reports the norms they still had;
the chapter shows what that removal costs before fine-tuning.
"""
from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import torch
from compressai.models import MeanScaleHyperprior
from torch import nn
from tqdm import tqdm

from . import surgery
from .train import Hook, TrainConfig, train
from .weights import fingerprint, is_entropy


class Compactor(nn.Conv2d):
    """ResRep's compactor: 1×1 convolution C→C without bias, identity at start, and a 0/1 mask per
    output row (a buffer, so it is saved and resumed with the model)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 1, bias=False)
        with torch.no_grad():
            self.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        self.register_buffer("mask", torch.ones(channels))

    def row_norms(self) -> torch.Tensor:
        return self.weight.detach().flatten(1).norm(dim=1)


class Compacted(nn.Module):
    """A hyper-path unit followed by its compactor."""

    def __init__(self, layer: nn.Module, channels: int):
        super().__init__()
        self.layer = layer
        self.compactor = Compactor(channels)

    def forward(self, x):
        return self.compactor(self.layer(x))


def _is_unit(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, Compacted)) or surgery.is_subpel(m)


def hyper_units(model) -> list:
    """Names of the hyper path's convolution units in data order: h_a's, then h_s's (a sub-pixel
    unit ``Sequential(conv, PixelShuffle)`` counts as one). Activations sit between them."""
    if not all(isinstance(getattr(model, p, None), nn.Sequential) for p in ("h_a", "h_s")):
        raise TypeError(f"ERHP prunes a hyperprior's h_a/h_s; {type(model).__name__} has none "
                        "(use bmshj2018-hyperprior, mbt2018-mean, mbt2018 or cheng2020-attn)")
    names = []
    for part in ("h_a", "h_s"):
        seq = getattr(model, part)
        names += [f"{part}.{i}" for i, m in enumerate(seq) if _is_unit(m)]
    return names


def prunable_units(model) -> list:
    """Every hyper-path unit but the last of h_s."""
    return hyper_units(model)[:-1]


def _out_channels(unit: nn.Module) -> int:
    if isinstance(unit, Compacted):
        return unit.compactor.weight.shape[0]
    return surgery.shape_of(unit)[1]


def add_compactors(model) -> nn.Module:
    """Put a compactor after every prunable unit, in place. The model computes the same function."""
    for name in prunable_units(model):
        unit = model.get_submodule(name)
        if not isinstance(unit, Compacted):
            surgery.set_module(model, name, Compacted(unit, _out_channels(unit)))
    return model


def compactors(model) -> dict:
    """{unit name: Compactor} of a model with compactors."""
    return {n: model.get_submodule(n).compactor for n in prunable_units(model)
            if isinstance(model.get_submodule(n), Compacted)}


def hyper_modules(model) -> list:
    return [model.h_a, model.h_s, model.entropy_bottleneck]


def hyper_parameters(model) -> list:
    """The parameters ERHP trains: h_a, h_s (compactors included) and the entropy bottleneck."""
    return [p for m in hyper_modules(model) for p in m.parameters()]


def hyper_size(model) -> int:
    """Parameters of the hyper path (h_a, h_s, entropy bottleneck), compactors not counted."""
    n = sum(p.numel() for p in hyper_parameters(model))
    return n - sum(c.weight.numel() for c in compactors(model).values())


def _unit_params(unit: nn.Module, cin: int, cout: int) -> int:
    if isinstance(unit, Compacted):
        unit = unit.layer
    r2 = 1
    if surgery.is_subpel(unit):
        unit, r2 = unit[0], unit[1].upscale_factor ** 2
    k = unit.weight[0, 0].numel()
    return cin * cout * r2 * k + (cout * r2 if unit.bias is not None else 0)


def widths(model) -> dict:
    """{unit name: output channels} of every hyper-path unit (after a merge: the kept widths)."""
    return {n: _out_channels(model.get_submodule(n)) for n in hyper_units(model)}


def hyper_size_for(model, kept: dict) -> int:
    """Hyper-path parameters if the prunable units had the widths ``kept`` (others unchanged)."""
    names = hyper_units(model)
    first = model.get_submodule(names[0])
    cin = surgery.shape_of(first.layer if isinstance(first, Compacted) else first)[0]
    eb = model.entropy_bottleneck
    per_channel = sum(p[0].numel() for p in eb.parameters())
    total, full = 0, widths(model)
    for name in names:
        cout = kept.get(name, full[name])
        total += _unit_params(model.get_submodule(name), cin, cout)
        cin = cout
    return total + per_channel * kept.get(z_unit(model), full[z_unit(model)])


def z_unit(model) -> str:
    """The unit producing z (h_a's last): its channels are the entropy bottleneck's."""
    return [n for n in hyper_units(model) if n.startswith("h_a.")][-1]


def _consumer(model, name: str) -> str:
    names = hyper_units(model)
    nxt = names[names.index(name) + 1]
    return f"{nxt}.layer" if isinstance(model.get_submodule(nxt), Compacted) else nxt


def update_masks(model, target: float, per_update: int, min_keep: int) -> float:
    """ResRep's mask schedule step; returns the fraction of hyper-path parameters the masks remove.

    From full widths, rows are masked in order of increasing L2 norm (over all compactors) until
    ``target`` of the hyper path's parameters would be removed, at most ``per_update`` more rows
    than are masked now, never leaving fewer than ``min_keep`` channels in a layer. A row masked
    before can come back.
    """
    comps = compactors(model)
    full = hyper_size_for(model, {})
    already = int(sum((c.mask == 0).sum().item() for c in comps.values()))
    rows = sorted((float(v), name, j) for name, c in comps.items() for j, v in enumerate(c.row_norms()))
    kept = {name: c.weight.shape[0] for name, c in comps.items()}
    masks = {name: torch.ones_like(c.mask) for name, c in comps.items()}
    masked = 0
    for _, name, j in rows:
        if 1 - hyper_size_for(model, kept) / full >= target or masked >= already + per_update:
            break
        if kept[name] - 1 < min_keep:
            continue
        kept[name] -= 1
        masks[name][j] = 0
        masked += 1
    for name, c in comps.items():
        c.mask.copy_(masks[name])
    return 1 - hyper_size_for(model, kept) / full


class ResRep(Hook):
    """ResRep's training rule on the compactors of ``model``.

    After ``loss.backward()``: each compactor row's task gradient is multiplied by its mask and
    every row gets ``strength · W_j / ‖W_j‖`` (Eq. 11's group lasso; masked rows get only that).
    After the optimizer step: masks are updated every ``every`` steps from step ``start``.
    """

    def __init__(self, target=0.7, strength=1e-9, start=100, every=100, per_update=20, min_keep=1):
        self.target, self.strength = target, strength
        self.start, self.every, self.per_update, self.min_keep = start, every, per_update, min_keep
        self.history = []

    def after_backward(self, model, step):
        for c in compactors(_inner(model)).values():
            if c.weight.grad is None:
                continue
            w = c.weight.detach()
            norms = w.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
            c.weight.grad.mul_(c.mask.reshape(-1, 1, 1, 1)).add_(self.strength * w / norms)

    def after_step(self, model, step):
        done = step + 1
        if done >= self.start and (done - self.start) % self.every == 0:
            removed = update_masks(_inner(model), self.target, self.per_update, self.min_keep)
            self.history.append({"step": done, "removed": removed})

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state):
        self.history = list(state.get("history", []))


def _inner(model):
    return model.model if isinstance(model, RatePath) else model


@torch.no_grad()
def merge(model) -> dict:
    """Fold every compactor into its unit and remove the masked channels (in place).

    Returns {unit: kept channel indices} and the largest/mean norm the removed rows still had.
    """
    kept, removed_norms, kept_norms = {}, [], []
    for name in prunable_units(model):
        unit = model.get_submodule(name)
        if not isinstance(unit, Compacted):
            continue
        c = unit.compactor
        keep = torch.nonzero(c.mask).flatten()
        if len(keep) == 0:
            keep = c.row_norms().argmax().reshape(1)
        removed_norms += c.row_norms()[c.mask == 0].tolist()
        kept_norms += c.row_norms()[keep].tolist()
        surgery.set_module(model, name, surgery.fold_1x1(unit.layer, c.weight))
        followers = ["entropy_bottleneck"] if name == z_unit(model) else []
        surgery.remove_channels(model, name, keep.tolist(), followers=followers,
                                consumers=[_consumer(model, name)])
        kept[name] = keep.tolist()
    return {"kept": kept, "removed_norm_max": max(removed_norms, default=0.0),
            "removed_norm_mean": sum(removed_norms) / max(len(removed_norms), 1),
            "kept_norm_min": min(kept_norms, default=0.0)}


class RatePath(nn.Module):
    """The model's rate with g_a frozen and g_s not run: ``forward`` returns the likelihoods of y
    and z as the model's own ``forward`` computes them, and ``x_hat=None`` (the distortion does not
    depend on the hyper path, so :func:`lic.train.rd_loss` counts only the rate).

    The input is an image batch (N×3×H×W), or y itself (N×M×h×w, e.g. from :class:`Latents`):
    then ``num_pixels`` gives rd_loss the image's pixel count, ``stride``² per latent position."""

    def __init__(self, model, stride: int = 16):
        super().__init__()
        self.model = model
        self.stride = stride

    def forward(self, x):
        m = self.model
        out = {}
        if x.shape[1] == 3:
            with torch.no_grad():
                y = m.g_a(x)
        else:
            y = x
            out["num_pixels"] = y.shape[-2] * y.shape[-1] * self.stride ** 2
        z = m.h_a(y if isinstance(m, MeanScaleHyperprior) else torch.abs(y))
        z_hat, z_lik = m.entropy_bottleneck(z)
        params = m.h_s(z_hat)
        gc = m.gaussian_conditional
        if hasattr(m, "context_prediction"):
            y_hat = gc.quantize(y, "noise" if self.training else "dequantize")
            params = m.entropy_parameters(torch.cat((params, m.context_prediction(y_hat)), dim=1))
        if isinstance(m, MeanScaleHyperprior):
            scales, means = params.chunk(2, 1)
            _, y_lik = gc(y, scales, means=means)
        else:
            _, y_lik = gc(y, params)
        return {"x_hat": None, "likelihoods": {"y": y_lik, "z": z_lik}, **out}

    def aux_loss(self):
        return self.model.aux_loss()


class Latents:
    """Training data of a hyper path under a frozen g_a, with :class:`lic.data.ImageFolder`'s
    interface: y = g_a(image) of every training image and of its mirror image, computed once, on
    the first ``batch``; ``batch(n, crop)`` returns random windows of crop/16 × crop/16 latents.

    g_a is frozen, so running it every step recomputes the same values, and it is most of the
    step's work: at the cpu scale a step on latents was 3.3× (bmshj2018-hyperprior) and 4.7×
    (cheng2020-attn) faster than on images, for 1.5 and 4.5 min of latents per base model (Zen 3,
    2 threads, ``benchmarks/hyper_latents.py``). A window is y of a 16-pixel-aligned image crop, up to g_a's
    receptive field at the crop's edges: a crop computed on its own sees zero padding there, a
    window sees the rest of the image."""

    def __init__(self, g_a, images: list, stride: int = 16, seed: int = 0, progress=True, desc="latents"):
        self.g_a, self.images, self.stride = g_a, images, stride
        self.rng = random.Random(seed)
        self.progress, self.desc = progress, desc
        self._y = None
        with torch.no_grad():
            self.channels = g_a(torch.zeros(1, 3, stride * 4, stride * 4)).shape[1]

    @classmethod
    def of(cls, model, data, **kw) -> "Latents":
        """The latents of ``model``'s g_a on the images of ``data`` (an ImageFolder)."""
        return cls(model.g_a, data.images, **kw)

    @torch.no_grad()
    def _latents(self) -> list:
        if self._y is None:
            self._y = []
            for img in tqdm(self.images, desc=self.desc, disable=not self.progress, mininterval=2):
                x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0)[None]
                for im in (x, x.flip(-1)):
                    self._y.append(self.g_a(im)[0].contiguous())
        return self._y

    def shape(self, n: int, crop: int) -> tuple:
        """The shape of ``batch(n, crop)``."""
        return (n, self.channels, crop // self.stride, crop // self.stride)

    def sample(self, crop: int) -> torch.Tensor:
        ys, k = self._latents(), crop // self.stride
        y = ys[self.rng.randrange(len(ys))]
        h, w = y.shape[-2:]
        if h < k or w < k:
            y = nn.functional.pad(y[None], (0, max(0, k - w), 0, max(0, k - h)), mode="replicate")[0]
            h, w = y.shape[-2:]
        i, j = self.rng.randrange(h - k + 1), self.rng.randrange(w - k + 1)
        return y[:, i:i + k, j:j + k]

    def batch(self, n: int, crop: int) -> torch.Tensor:
        return torch.stack([self.sample(crop) for _ in range(n)])

    def state(self):
        return self.rng.getstate()

    def set_state(self, state):
        self.rng.setstate(state)


def _train_hyper(model, data, cfg, checkpoint, hooks=(), progress=True, desc="hyper path"):
    return train(RatePath(model), data, cfg, checkpoint=checkpoint, hooks=hooks,
                 params=hyper_parameters(model), progress=progress, desc=desc)


def stage_configs(scale, lmbda, steps: int, finetune_steps: int):
    """(pruning stage, fine-tuning stage) configs: hyper path only, rate loss, no evaluation.

    Crops are the scale's *late* (large) crops, at the same pixels per batch: z is 1/64 of the
    crop's side, so a 128² crop gives h_s a 2×2 map its 5×5 kernels see mostly as padding. In a
    first cpu run with 128² crops, even the unpruned hyper path got 4 % worse at the λ whose base
    model had finished training on 256² crops."""
    crop = scale.late_crop or scale.crop
    batch = max(1, round(scale.batch * (scale.crop / crop) ** 2))
    common = dict(eval_every=0, late_crop=0, late_frac=0.0, crop=crop, batch=batch)
    return (TrainConfig.from_scale(scale, lmbda, steps=steps, lr=5e-4, lr_final=1e-4, **common),
            TrainConfig.from_scale(scale, lmbda, steps=finetune_steps, lr=1e-4, lr_final=1e-5, **common))


def erhp(base, lmbda, data, scale, run_dir, steps: int, finetune_steps: int, target=0.7,
         strength=1e-9, every=None, per_update=None, min_keep=1, progress=True, tag=""):
    """ERHP on a copy of ``base``: compactors, ResRep training of the hyper path (main path frozen),
    merge and removal, fine-tuning. Resumable per stage. ``data``: the training images (an
    :class:`lic.data.ImageFolder`) or, faster, their :class:`Latents`.

    Returns (fine-tuned model, merged model before fine-tuning, info: kept channels, widths, mask
    schedule, norms the removed rows still had)."""
    if not 0 < target < 1:
        raise ValueError(f"target is the share of hyper-path parameters to remove, in (0, 1); got {target}")
    run_dir = Path(run_dir)
    model = add_compactors(copy.deepcopy(base))
    every = every or max(1, steps // 30)
    channels = sum(c.weight.shape[0] for c in compactors(model).values())
    per_update = per_update or max(1, round(channels * 0.7 / 10))   # ~10 updates to the target
    hook = ResRep(target, strength, start=every, every=every, per_update=per_update, min_keep=min_keep)
    first, second = stage_configs(scale, lmbda, steps, finetune_steps)
    c1 = _train_hyper(model, data, first, run_dir / f"erhp{tag}-{lmbda:.4f}-resrep.state.pt", [hook],
                      progress, desc=f"ERHP ResRep λ={lmbda}")
    info = merge(model)
    info.update(mask_history=hook.history, widths=widths(model), every=every, per_update=per_update)
    merged = copy.deepcopy(model)
    c2 = _train_hyper(model, data, second, run_dir / f"erhp{tag}-{lmbda:.4f}-finetune.state.pt",
                      progress=progress, desc=f"ERHP fine-tune λ={lmbda}")
    info["train_seconds"] = _seconds(c1, c2)
    return model, merged, info


@torch.no_grad()
def uniform_widths(model, size: int) -> dict:
    """Uniform prunable widths (the same fraction of every layer) whose hyper path has the
    parameter count closest to ``size``."""
    full = {n: _out_channels(model.get_submodule(n)) for n in prunable_units(model)}

    def at(f):
        return {n: max(1, round(f * w)) for n, w in full.items()}
    best = min((abs(hyper_size_for(model, at(f / 512)) - size), f) for f in range(1, 513))
    return at(best[1] / 512)


@torch.no_grad()
def slice_uniform(model, kept_widths: dict) -> dict:
    """Keep, in every prunable unit, the ``kept_widths[unit]`` output channels with the largest
    filter L2 norm (in place; last to first). Returns the kept indices."""
    kept = {}
    for name in reversed(prunable_units(model)):
        unit = model.get_submodule(name)
        w = unit[0].weight if surgery.is_subpel(unit) else unit.weight
        if isinstance(unit, nn.ConvTranspose2d):
            norms = w.transpose(0, 1).flatten(1).norm(dim=1)
        else:
            norms = w.flatten(1).norm(dim=1)
            if surgery.is_subpel(unit):
                norms = norms.reshape(-1, unit[1].upscale_factor ** 2).norm(dim=1)
        keep = torch.argsort(norms, descending=True)[: kept_widths[name]].sort().values
        followers = ["entropy_bottleneck"] if name == z_unit(model) else []
        surgery.remove_channels(model, name, keep.tolist(), followers=followers,
                                consumers=[_consumer(model, name)])
        kept[name] = keep.tolist()
    return kept


def uniform(base, lmbda, data, scale, run_dir, kept_widths: dict, steps: int, finetune_steps: int,
            progress=True, tag="uniform"):
    """A uniform-width hyper path: the largest-norm channels of ``base`` kept per layer, trained
    with the same two stages (and budget) as ERHP, without compactors. ``kept_widths={}`` keeps
    every channel: the original model given the same extra training (a control). Returns the model
    and its training seconds (both stages, a resumed run's earlier sessions included)."""
    run_dir = Path(run_dir)
    model = copy.deepcopy(base)
    if kept_widths:
        slice_uniform(model, kept_widths)
    first, second = stage_configs(scale, lmbda, steps, finetune_steps)
    c1 = _train_hyper(model, data, first, run_dir / f"{tag}-{lmbda:.4f}-a.state.pt", progress=progress,
                      desc=f"{tag} λ={lmbda}")
    c2 = _train_hyper(model, data, second, run_dir / f"{tag}-{lmbda:.4f}-b.state.pt", progress=progress,
                      desc=f"{tag} fine-tune λ={lmbda}")
    return model, _seconds(c1, c2)


def _seconds(*curves) -> float:
    """Training seconds of stages from their learning curves (the last row's cumulative time)."""
    return round(sum(c[-1]["elapsed_s"] for c in curves if c), 3)


# ---------------------------------------------------------------------------------------------
# trained variants, kept with the chapter

CHAPTER = "02_luo"
RECIPE_VERSION = 1  # raise when the training procedure changes: kept variants are then trained again


def trained_dir(scale) -> Path:
    """Where the chapter keeps every variant it trained (committed at ``cpu``): the hyper path's
    changes on the zoo model (fp16, entropy models fp32), listed in the folder's ``manifest.json``
    with the recipe that trained them. A rerun on any machine trains only what is new: resumable
    states in ``runs/`` serve only the machine that wrote them, and 02 at cpu is longer than a session.
    A wider family's variants (``02_luo-N128``: two λ, ≈ 20 min of training) stay in ``runs/`` on the
    machine that trained them (:func:`lic.zoo.states_dir`): the chapter's committed weights stay within
    40 MB, and its points, committed, hold what 06 measures."""
    from . import store, zoo

    if scale.family:
        return zoo.states_dir(scale) / CHAPTER / "trained"
    return store.models_dir(CHAPTER, scale) / "trained"


def trained_variants(scale) -> dict:
    """The manifest of the kept variants: {name: file, sha256, bytes, recipe, training seconds, ...}."""
    from .store import read_json

    return read_json(trained_dir(scale) / "manifest.json")


def kept_variant(base, name: str, recipe: dict, scale):
    """(model, manifest entry) of the kept variant ``name`` if it was trained from ``base`` with
    ``recipe``, else None."""
    from . import points, store

    entry = trained_variants(scale).get(name)
    if not entry or entry["recipe"] != recipe:
        return None
    ck = store.read(trained_dir(scale) / entry["file"], entry["sha256"],
                    hint=f"Delete its entry in {trained_dir(scale) / 'manifest.json'} to train it again.")
    model = copy.deepcopy(base)
    points.apply(model, ck["delta"], what=name)
    model.update(force=True)
    return model.eval(), entry


def keep_variant(model, base, name: str, recipe: dict, scale, meta: dict, images=()):
    """Store ``model`` as its changes on ``base`` and list it; return it as stored (what the
    chapter then measures, so that the operating point 06 loads is the same model), with its entry.
    ``meta['fp16_check']``: forward-pass PSNR and bpp of the stored model minus the trained one
    on ``images``."""
    from . import points, store
    from .evaluate import evaluate

    state = {k: v.half() if v.is_floating_point() and not is_entropy(k) else v
             for k, v in points.delta(model, base).items()}
    path = trained_dir(scale) / f"{name}.pt"
    sha = store.write({"delta": state, "recipe": recipe}, path)
    manifest = trained_variants(scale)
    manifest[name] = {"file": path.name, "sha256": sha, "bytes": path.stat().st_size, "recipe": recipe, **meta}
    store.write_json(trained_dir(scale) / "manifest.json", manifest)
    kept, entry = kept_variant(base, name, recipe, scale)
    if len(images):
        a, b = (evaluate(m, images, real=False, progress=False)["mean"] for m in (model, kept))
        entry["fp16_check"] = {"delta_psnr_db": b["psnr"] - a["psnr"], "delta_bpp_pct": (b["bpp_est"] / a["bpp_est"] - 1) * 100}
        manifest[name] = entry
        store.write_json(trained_dir(scale) / "manifest.json", manifest)
    return kept, entry


def _trained(base, arch, lmbda, variant, recipe, scale, images, train_fn):
    """The kept variant if there is one for this recipe, else ``train_fn()`` → (model, meta), kept."""
    from .points import slug

    name = slug(arch, f"{lmbda:.4f}", variant)
    recipe = {"version": RECIPE_VERSION, "scale": scale.name, "base": fingerprint(base), "arch": arch,
              "lambda": float(lmbda), "variant": variant, **recipe}
    got = kept_variant(base, name, recipe, scale)
    if got is not None:
        return got
    model, meta = train_fn()  # meta["train_seconds"]: both stages, from their learning curves
    return keep_variant(model, base, name, recipe, scale, meta, images[:3])


def _measure(model, images, scale, variant, **extra) -> dict:
    """Quality, rate, size and MACs (kept in the shared measurement cache); times come later, from
    one interleaved run of all variants (:func:`_time_together`)."""
    from .evaluate import summarize_cached
    from .zoo import runs_dir

    row = summarize_cached(model, images, runs_dir(scale) / "measured", timed=0, progress=False)
    keep = ("psnr", "bpp", "bpp_est", "bpp_y", "bpp_z", "bpp_est_y", "bpp_est_z", "ms_ssim", "params", "macs")
    return {"variant": variant, **{k: row[k] for k in keep if k in row},
            "hyper_params": hyper_size(model), "widths": widths(model), **extra}


def _time_together(models: dict, rows: list, images, repeats: int) -> None:
    """Encode and decode times of every variant of one base model from one interleaved run
    (:func:`lic.evaluate.interleaved_times`), written into ``rows`` (a row that reuses another
    variant's run gets that run's times)."""
    from .evaluate import interleaved_times

    for m in models.values():
        m.update(force=True)
    t = interleaved_times(models, images, repeats=repeats, progress=False)
    for row in rows:
        src = t[row.get("same_run_as") or row["variant"]]
        row.update(encode_ms=src["encode_ms"], decode_ms=src["decode_ms"],
                   encode_spread_pct=src["encode_spread_pct"], decode_spread_pct=src["decode_spread_pct"])


def experiment(base, arch: str, lmbda: float, data, images, scale, run_dir, steps: int,
               finetune_steps: int, target=0.7, strength=1e-9, other_strengths=(), progress=True,
               keep=None, seed=0) -> list:
    """The chapter's runs for one base model, each measured with real bitstreams on ``images``:

    - ``original``: the base model;
    - ``ERHP``: compactors + ResRep (``steps``), merge, fine-tune (``finetune_steps``); also its
      forward-pass numbers right after the merge (``psnr_merged``, ``bpp_merged``);
    - ``uniform``: a uniform-width hyper path of ERHP's parameter count, same budget (Table 2);
    - ``half``: every prunable hyper layer at half width, same budget (Fig. 1);
    - ``original + training``: all channels, same budget (is a gain only the extra training?);
    - ``ERHP (β=…)``: ERHP again with each lasso strength in ``other_strengths`` (an ablation).

    Every variant trains its hyper path on the same latents of ``base``'s g_a, computed once
    (:class:`Latents`), and is kept (:func:`trained_dir`) under its recipe (``base``'s fingerprint,
    budget, target, β or widths, ``seed`` — the training data's): a rerun measures a kept
    variant without training it, and measures the stored (fp16) model in any case. Encode and
    decode times of all of them come from one interleaved run at the end. ``keep`` (a dict), when
    given, receives the models: {(arch, λ, variant): model}.
    """
    from .evaluate import evaluate

    # a retrained base model starts afresh; "latents": states trained on images every step are not resumed
    run_dir = Path(run_dir) / arch / f"{fingerprint(base)}-latents"
    common = dict(arch=arch, **{"lambda": lmbda})
    rows = [_measure(base, images, scale, "original", **common)]  # measurements are kept: a rerun resumes
    latents = []

    def data_once():  # computed only when some variant is not kept yet
        if not latents:
            latents.append(Latents.of(base, data, progress=progress, desc=f"latents {arch} λ={lmbda}"))
        return latents[0]

    budget = {"steps": steps, "finetune_steps": finetune_steps, "seed": seed}
    models = {"original": base}
    for i, beta in enumerate([strength, *other_strengths]):
        variant, tag = ("ERHP", "") if i == 0 else (f"ERHP (β={beta:g})", f"-beta{beta:g}")

        def train_erhp():
            model, merged, info = erhp(base, lmbda, data_once(), scale, run_dir, steps, finetune_steps, target,
                                       beta, progress=progress, tag=tag)
            quick = evaluate(merged, images, real=False, progress=False)["mean"]
            return model, {"psnr_merged": quick["psnr"], "bpp_merged": quick["bpp_est"],
                           **{k: info[k] for k in ("removed_norm_max", "removed_norm_mean", "kept_norm_min",
                                                   "mask_history", "train_seconds")}}
        model, meta = _trained(base, arch, lmbda, variant, {**budget, "target": target, "strength": beta},
                               scale, images, train_erhp)
        rows.append(_measure(model, images, scale, variant, strength=beta,
                             **{k: meta[k] for k in ("psnr_merged", "bpp_merged", "removed_norm_max",
                                                     "removed_norm_mean", "kept_norm_min", "mask_history")},
                             **common))
        models[variant] = model
        if i == 0:
            erhp_size = hyper_size(model)
    full = {n: w for n, w in widths(base).items() if n in prunable_units(base)}
    plans = [("uniform", uniform_widths(base, erhp_size)),
             ("half", {n: max(1, w // 2) for n, w in full.items()}),
             ("original + training", {})]
    done = {}
    for variant, kept in plans:
        key = tuple(sorted(kept.items()))
        if key in done:  # e.g. the uniform size equals half width: one run serves both
            rows.append({**done[key], "variant": variant, "same_run_as": done[key]["variant"]})
            continue
        tag = variant.replace(" + ", "-").replace(" ", "-")
        def train_uniform():
            model, secs = uniform(base, lmbda, data_once(), scale, run_dir, kept, steps, finetune_steps, progress, tag=tag)
            return model, {"train_seconds": secs}
        m, _ = _trained(base, arch, lmbda, variant, {**budget, "widths": dict(sorted(kept.items()))}, scale, images,
                        train_uniform)
        rows.append(_measure(m, images, scale, variant, **common))
        models[variant] = m
        done[key] = rows[-1]
    _time_together(models, rows, images[:3], scale.timing_repeats)
    if keep is not None:
        keep.update({(arch, lmbda, v): m for v, m in models.items()})
    return rows


POINT_METHODS = {"ERHP": "ERHP (Luo)", "uniform": "uniform hyper path (Luo's control)",
                 "half": "half-width hyper path (Luo's control)"}


def register_points(models: dict, bases: dict, scale, variants=tuple(POINT_METHODS)) -> list:
    """The chapter's operating points for 06_synthesis: ``variants`` of every (arch, λ) (``models``
    from :func:`experiment`'s ``keep``, ``bases`` {(arch, λ): zoo model}), each stored as its hyper
    path's changes on the zoo model. ERHP and its two controls, uniform and half width, each its own
    method (a half-width plan that is the uniform one was not trained again: no point of its own)."""
    from . import points

    return points.publish("02_luo", scale, [
        points.register("02_luo", scale, m, method=POINT_METHODS[v], arch=a, lmbda=lam, variant=v,
                        base=bases[a, lam], rebuild="lic.zoo:get", spec={"arch": a, "lmbda": lam, "train_missing": False})
        for (a, lam, v), m in models.items() if v in variants])


# ---------------------------------------------------------------------------------------------
# verdicts

TOL_BPP = 0.5    # % of bpp: what we call "equal rate"
TOL_PSNR = 0.05  # dB: "equal PSNR" (a context model decodes round(y - μ) + μ: μ comes from the hyper path)


def claims_for(res, share, paper1, paper2, papers_claims) -> list:
    """The chapter's claims (see :mod:`lic.claims`) from its rows ``res`` (variant, arch, λ, bpp,
    psnr, whole_reduction, bpp_change, psnr_change), the ``share`` rows (hyper share of parameters,
    z share of bits), the paper's Tables 1 and 2 and its claims in ``data/papers/claims.csv``."""
    import pandas as pd

    from . import claims

    res, share = pd.DataFrame(res), pd.DataFrame(share)
    E = res[res.variant == "ERHP"]
    U = res[res.variant == "uniform"].set_index(["arch", "lambda"])
    lo, hi = float(paper1.reduction_pct.min()), float(paper1.reduction_pct.max())
    red = E.whole_reduction * 100
    equal = (E.bpp_change * 100 <= TOL_BPP) & (E.psnr_change.abs() <= TOL_PSNR)
    wins = [r.bpp <= U.loc[(r.arch, r["lambda"]), "bpp"] for _, r in E.iterrows()]
    pc = papers_claims[papers_claims.chapter == "02_luo"].set_index("claim").value
    hyper_paper = float(pc["share of parameters in the hyper path"])
    z_paper = float(pc["share of bits spent on z"])
    hyper = share.groupby("arch")["hyper share of parameters"].first() * 100
    z = share["z share of bits"] * 100
    t2 = paper2.iloc[0]
    sec = "Paper vs ours"
    return [
        claims.make("luo-hyper-share", "the hyper path holds a large share of a hyperprior codec's parameters",
                    f"{hyper_paper:g} %", ", ".join(f"{a} {v:.1f} %" for a, v in hyper.items()),
                    claims.share(int(((hyper - hyper_paper).abs() <= 5).sum()), len(hyper)),
                    f"each architecture's share within 5 points of the paper's {hyper_paper:g} %", "Where the parameters and the bits are"),
        claims.make("luo-z-bits", "the hyper latent z costs only a small share of the bits",
                    f"{z_paper:g} %", f"{z.min():.1f}–{z.max():.1f} % over architectures and λ",
                    claims.share(int((z <= 2 * z_paper).sum()), len(z)),
                    f"z's share at most twice the paper's ({2 * z_paper:g} %) at every point", "Where the parameters and the bits are"),
        claims.make("luo-size", "ERHP removes 22.6–34.3 % of the whole model's parameters",
                    f"{lo:.1f}–{hi:.1f} %", f"{red.min():.1f}–{red.max():.1f} %",
                    "reproduced" if red.min() >= lo else "partly reproduced" if red.max() >= lo else "not reproduced",
                    f"every ERHP model must remove at least the paper's lowest {lo:.1f} % (reproduced), "
                    "or some of them (partly)", sec),
        claims.make("luo-rd", "ERHP keeps the rate–distortion performance (equal PSNR, equal or lower bpp)",
                    "equal PSNR, bpp equal or lower (Table 1)",
                    f"bpp {E.bpp_change.min() * 100:+.2f} to {E.bpp_change.max() * 100:+.2f} %, "
                    f"PSNR within {E.psnr_change.abs().max():.3f} dB",
                    claims.share(int(equal.sum()), len(E)),
                    f"bpp at most +{TOL_BPP} % and PSNR within {TOL_PSNR} dB of the original at each of the "
                    f"{len(E)} points ({int(equal.sum())} are)", sec),
        claims.make("luo-uniform", "ERHP's learned widths beat a uniform hyper path of the same size",
                    f"{t2.bpp_erhp:.3f} vs {t2.bpp_manual:.3f} bpp at {t2.psnr:.3f} dB ({t2.arch}, λ = {t2['lambda']:g})",
                    f"ERHP's bpp lower or equal in {sum(wins)} of {len(wins)} cases",
                    claims.share(sum(wins), len(wins)),
                    "ERHP's bpp must be at most the uniform path's at every (architecture, λ)", sec),
    ]


def bd_rate(res, arch: str, variant: str, anchor: str = "original") -> float:
    """BD-rate (%) of ``variant`` against ``anchor`` over the λ of ``arch`` in the rows ``res``."""
    from .evaluate import bd

    def curve(v):
        return res[(res.arch == arch) & (res.variant == v)][["bpp", "psnr"]].to_dict("list")
    return bd(curve(anchor), curve(variant))["bd_rate"]


def across_widths(rows_by_width: dict, variants=("ERHP", "uniform", "original + training")):
    """ERHP and its controls at each width, side by side: {label: the chapter's rows at that width}
    -> per width, architecture and variant: BD-rate against that width's original model, the share
    of hyper-path parameters removed, and the decode speed-up over the original (mean over λ, each
    λ's models timed together)."""
    import pandas as pd

    out = []
    for label, rows in rows_by_width.items():
        res = pd.DataFrame(rows)
        for arch, g in res.groupby("arch", sort=False):
            orig = g[g.variant == "original"].set_index("lambda")
            for v in variants:
                sel = g[g.variant == v].set_index("lambda")
                if sel.empty:
                    continue
                out.append({"width": label, "arch": arch, "variant": v, "BD-rate vs original (%)": bd_rate(res, arch, v),
                            "hyper params removed": float((1 - sel.hyper_params / orig.hyper_params).mean()),
                            "decode speed-up (x)": float((orig.decode_ms / sel.decode_ms).mean()),
                            "decode spread (%)": float(sel.decode_spread_pct.max())})
    return pd.DataFrame(out)


def findings(res, arch_list, betas, strength) -> tuple:
    """What the chapter's prose says, from its rows: ({name: value to glue}, the per-architecture
    verdict table). ``res`` has the derived columns (whole_reduction, bpp_change, psnr_change)."""
    import numpy as np
    import pandas as pd

    from .report import pct

    E = res[res.variant == "ERHP"]
    U = res[res.variant == "uniform"].set_index(["arch", "lambda"])
    C = res[res.variant == "original + training"].set_index(["arch", "lambda"])

    def le_uniform(rows):
        return sum(x.bpp <= U.loc[(x.arch, x["lambda"]), "bpp"] for _, x in rows.iterrows())

    abl = {b: res[res.variant == f"ERHP (β={b:g})"] for b in betas}
    abl_text = "; ".join(
        f"β={b:g}: masked rows cut at norm ≤ {float(r.removed_norm_max.max()):.3f}, bpp "
        f"{float(np.mean(r.bpp.values / E.bpp.values - 1)) * 100:+.2f} % vs ERHP at β={strength:g}, "
        f"lower or equal bpp than the uniform hyper path in {le_uniform(r)} of {len(r)} cases, BD-rate vs original "
        f"{', '.join(a + ' ' + pct(bd_rate(res, a, f'ERHP (β={b:g})'), 2) for a in arch_list)}"
        for b, r in abl.items()) or "not run"
    control_beats = all(bd_rate(res, a, "original + training") <= bd_rate(res, a, "ERHP") for a in arch_list)
    equal = (E.bpp_change * 100 <= TOL_BPP) & (E.psnr_change.abs() <= TOL_PSNR)

    def per_arch(a):
        e = E[E.arch == a]
        eq = (e.bpp_change * 100 <= TOL_BPP) & (e.psnr_change.abs() <= TOL_PSNR)
        row = {"arch": a, "whole-model params removed (%)": f"{100 * e.whole_reduction.min():.1f}–{100 * e.whole_reduction.max():.1f}",
               "bpp equal or lower": f"{int(eq.sum())} of {len(e)}",
               "BD-rate ERHP (%)": bd_rate(res, a, "ERHP"), "BD-rate control (%)": bd_rate(res, a, "original + training"),
               "BD-rate uniform (%)": bd_rate(res, a, "uniform"), "ERHP ≤ uniform": f"{le_uniform(e)} of {len(e)}"}
        for b, r in abl.items():
            r = r[r.arch == a]
            row[f"BD-rate ERHP β={b:g} (%)"] = bd_rate(res, a, f"ERHP (β={b:g})")
            row[f"ERHP β={b:g} ≤ uniform"] = f"{le_uniform(r)} of {len(r)}"
        return row

    glue = {
        "control_text": ("ERHP does not beat it: where ERHP \"improves\" on the original, the extra training does it, "
                         "not the pruning" if control_beats else "ERHP beats it: the pruning itself helps"),
        "lasso_text": ("the lasso had not separated masked from kept rows, so the cut removed live channels and "
                       "fine-tuning repaired it" if E.removed_norm_max.max() >= 0.5 * E.kept_norm_min.min() else
                       "the lasso had shrunk the masked rows well below the kept ones before the cut"),
        "abl_text": abl_text,
        "control_bd": "; ".join(f"{a} {pct(bd_rate(res, a, 'original + training'), 2)}" for a in arch_list),
        "uniform_bd": "; ".join(f"{a} {pct(bd_rate(res, a, 'uniform'), 2)}" for a in arch_list),
        "n_equal": f"{int(equal.sum())} of {len(E)}",
        "erhp_cut_norm": float(E.removed_norm_max.max()), "erhp_kept_norm": float(E.kept_norm_min.min()),
        "red_min": float(E.whole_reduction.min() * 100), "red_max": float(E.whole_reduction.max() * 100),
        "bpp_ch_max": float(E.bpp_change.max() * 100), "psnr_ch": float(E.psnr_change.abs().max()),
        "vs_control": float(np.mean([r.bpp / C.loc[(r.arch, r["lambda"]), "bpp"] - 1 for _, r in E.iterrows()]) * 100),
        "tol_bpp": TOL_BPP, "tol_psnr": TOL_PSNR, "wins": f"{le_uniform(E)} of {len(E)}",
        "erhp_bd": ", ".join(f"{a} {pct(bd_rate(res, a, 'ERHP'), 2)}" for a in arch_list),
        "archs_run": ", ".join(arch_list),
    }
    return glue, pd.DataFrame([per_arch(a) for a in arch_list])
