"""Operating points: the models each chapter offers the cross-method chapter (``06_synthesis``).

A point is one codec a practitioner could deploy — the zoo's model, Liao's decoder pruned at r,
ERHP's hyper path, a slimmable sub-model, … — with the words that name it (chapter, method,
architecture, λ, variant) and a recipe that rebuilds it:

- ``rebuild`` names a function ``"module:function"`` called as ``function(**spec)`` (plus ``scale``
  and ``root`` when it takes them); it returns the model the point starts from (usually the zoo's, for a view of a
  chapter's model the view itself);
- the point's file, when it has one, holds only the tensors that differ from that start (a pruned
  decoder: g_s alone), fp16 except the entropy models; :func:`load` reshapes the start to fit them
  (:func:`lic.surgery.resize_to`) and loads them.

Points live beside the chapter's models, ``store.models_dir(chapter, scale)/points`` with an
``index.json`` (committed at ``cpu``, like the models). 06_synthesis re-measures every point
itself, in one run, so the fp16 rounding of a stored delta is inside what it measures.

    e = points.register("01_liao", S, model, method="Liao", arch=..., lmbda=..., variant="r=0.40",
                        base=zoo_model, rebuild="lic.zoo:get", spec={"arch": ..., "lmbda": ...})
    points.publish("01_liao", S, [e, ...])       # the chapter's points: exactly these
    for entry in points.entries(S): model = points.load(entry, S)
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from pathlib import Path

import torch

from . import store
from .data import sha256 as sha256_of
from .weights import is_coder_table, is_entropy

FIELDS = ("chapter", "name", "method", "arch", "lambda", "variant", "rebuild", "spec")
# the chapters whose points 06_synthesis compares (the zoo's first: the anchors)
CHAPTERS = ("00_baselines", "01_liao", "02_luo", "03_yin", "04_yu", "05_tao", "07_controls")


class PointError(RuntimeError):
    """A point that is missing, corrupt or cannot be rebuilt; the message names the command that
    makes it again."""


def points_dir(chapter: str, scale) -> Path:
    return store.models_dir(chapter, scale) / "points"


def slug(*parts) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9.=-]+", "-", "-".join(str(p) for p in parts))).strip("-")


def delta(model, base) -> dict:
    """The tensors of ``model`` that ``base`` lacks or holds with another shape or value (coder
    tables left out: ``update()`` rebuilds them)."""
    ref = base.state_dict() if base is not None else {}
    out = {}
    for k, v in model.state_dict().items():
        if is_coder_table(k):
            continue
        r = ref.get(k)
        if r is None or r.shape != v.shape or not torch.equal(r, v):
            out[k] = v.detach().clone()
    return out


def read_index(chapter: str, scale) -> dict:
    p = points_dir(chapter, scale) / "index.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _write_index(chapter: str, scale, index: dict) -> None:
    store.write_json(points_dir(chapter, scale) / "index.json", index)


def register(chapter: str, scale, model=None, *, method: str, arch: str, lmbda: float, variant: str,
             rebuild: str, spec: dict, base=None, meta=None) -> dict:
    """One operating point of ``chapter``: with ``model``, its tensors that differ from ``base`` (all
    of them without ``base``) are stored; without, the point is ``rebuild(**spec)`` itself (a zoo
    model, a view of a chapter's stored model). Returns its entry; :func:`publish` the chapter's
    entries together."""
    _resolve(rebuild)  # refuse a recipe that cannot be called back
    name = slug(method, arch, f"{lmbda:.4f}", variant)
    entry = {"chapter": chapter, "name": name, "method": method, "arch": arch, "lambda": float(lmbda),
             "variant": variant, "rebuild": rebuild, "spec": dict(spec), "meta": dict(meta or {}),
             "file": None, "sha256": None, "bytes": 0}
    if model is not None:
        state = {k: v.half() if v.is_floating_point() and not is_entropy(k) else v
                 for k, v in delta(model, base).items()}
        path = points_dir(chapter, scale) / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save({"delta": state, "entry": {k: entry[k] for k in FIELDS}}, tmp)
        os.replace(tmp, path)
        entry.update(file=path.name, sha256=sha256_of(path), bytes=path.stat().st_size)
    return entry


def publish(chapter: str, scale, entries_: list) -> list:
    """Make ``entries_`` (from :func:`register`) the chapter's points: its index holds exactly
    them, and stored files no entry names are deleted (a rerun leaves no stale point behind)."""
    names = [e["name"] for e in entries_]
    if len(set(names)) != len(names):
        raise PointError(f"{chapter}: two points share a name: {sorted(n for n in names if names.count(n) > 1)[:3]}")
    _write_index(chapter, scale, {e["name"]: e for e in entries_})
    keep = {e["file"] for e in entries_ if e["file"]}
    for f in points_dir(chapter, scale).glob("*.pt"):
        if f.name not in keep:
            f.unlink()
    return list(entries_)


def entries(scale, chapters=None) -> list:
    """Every registered point of ``chapters`` (default: every chapter notebook), in chapter order."""
    names = chapters if chapters is not None else sorted(p.stem for p in (store.PROJECT / "notebooks").glob("*.ipynb"))
    return [e for ch in names for e in read_index(ch, scale).values()]


def _resolve(rebuild: str):
    module, _, fn = rebuild.partition(":")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as err:
        raise PointError(f"rebuild recipe {rebuild!r} does not name a function ('module:function')") from err


def load(entry: dict, scale, root=None, hint=None):
    """The point's codec: its start rebuilt, reshaped to fit its stored tensors and loaded with
    them, coder tables rebuilt, in eval mode."""
    hint = hint or f"Re-run its chapter: `python -m lic.book run {entry['chapter']} --scale {scale.name}`."
    model = _start(entry, scale, root)
    if entry.get("file"):
        apply(model, _read_delta(entry, scale, hint), what=entry["name"], hint=hint)
    model.update(force=True)
    return model.eval()


def stack(entries_: list, scale, root=None):
    """Several points that start from the same model, their stored tensors applied in turn (e.g.
    ERHP's hyper path onto Liao's pruned decoder). Refuses points whose tensors overlap."""
    first = entries_[0]
    if any((e["rebuild"], e["spec"]) != (first["rebuild"], first["spec"]) for e in entries_):
        raise PointError("stacked points must start from the same model: " + ", ".join(e["name"] for e in entries_))
    model = _start(first, scale, root)
    seen = {}
    for e in entries_:
        d = _read_delta(e, scale, f"Re-run `python -m lic.book run {e['chapter']} --scale {scale.name}`.") if e.get("file") else {}
        clash = sorted(k for k in d if k in seen)
        if clash:
            raise PointError(f"{e['name']} and {seen[clash[0]]} both change {clash[:3]}: they do not stack")
        seen.update({k: e["name"] for k in d})
        apply(model, d, what=e["name"])
    model.update(force=True)
    return model.eval()


def _start(entry: dict, scale, root):
    """``rebuild(**spec)``, given ``scale`` and ``root`` when it takes them."""
    fn = _resolve(entry["rebuild"])
    accepts = inspect.signature(fn).parameters
    extra = {k: v for k, v in (("scale", scale), ("root", root)) if k in accepts}
    return fn(**extra, **entry["spec"])


def _read_delta(entry, scale, hint) -> dict:
    path = points_dir(entry["chapter"], scale) / entry["file"]
    if not path.is_file():
        raise PointError(f"{path} does not exist. {hint}")
    if entry.get("sha256") and sha256_of(path) != entry["sha256"]:
        raise PointError(f"{path} is corrupt or truncated (sha256 does not match its index). {hint}")
    return torch.load(path, map_location="cpu", weights_only=True)["delta"]


def apply(model, state: dict, what="point", hint="") -> None:
    """Reshape ``model`` to fit ``state`` and load it (fp32); every stored tensor must land."""
    from .surgery import resize_to

    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    resize_to(model, state)
    _, unexpected = torch.nn.Module.load_state_dict(model, state, strict=False)
    if unexpected:
        raise PointError(f"{what} does not fit {type(model).__name__}: unexpected {unexpected[:3]}. {hint}")
