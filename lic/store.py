"""Where a chapter keeps the models it trains, and their manifest (sha256, steps, training time,
precision): ``data/checkpoints/<chapter>/cpu`` for the published scale (committed), under
``runs/<scale>/<chapter>/models`` for the others, or ``$LIC_ZOO/<chapter>/<scale>``; and the one
file format of a stored model (its constructor's arguments, its weights, its meta)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .data import sha256 as sha256_of
from .weights import is_coder_table, is_entropy

PROJECT = Path(__file__).resolve().parents[1]


def models_dir(chapter: str, scale) -> Path:
    if "LIC_ZOO" in os.environ:
        return Path(os.environ["LIC_ZOO"]) / chapter / scale.name
    if scale.name == "cpu":
        return PROJECT / "data" / "checkpoints" / chapter / "cpu"
    return PROJECT / "runs" / scale.name / chapter / "models"


def read_manifest(chapter: str, scale) -> dict:
    p = models_dir(chapter, scale) / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else {}


def write_json(path, obj: dict) -> None:
    """Write ``obj`` as sorted, indented JSON, atomically (a killed run never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_manifest(chapter: str, scale, manifest: dict) -> None:
    write_json(models_dir(chapter, scale) / "manifest.json", manifest)


class StoredModelError(RuntimeError):
    """A stored model that is missing, corrupt or does not fit its architecture; the message says
    how to get it back."""


def save_model(model, path, spec: dict, meta: dict, half=True) -> str:
    """Store ``model`` as ``{"spec", "state_dict", "meta"}`` (``spec``: what rebuilds it): floating
    tensors in fp16 with ``half``, entropy models always fp32, coder tables never (``update()``
    rebuilds them). Returns the file's sha256."""
    state = {k: v.half() if half and v.is_floating_point() and not is_entropy(k) else v.clone()
             for k, v in model.state_dict().items() if not is_coder_table(k)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"spec": dict(spec), "state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, path)
    return sha256_of(path)


def load_model(path, build, sha256=None, hint=""):
    """The model stored by :func:`save_model`, rebuilt with ``build(**spec)``, in fp32 and eval
    mode, its coder tables rebuilt; ``sha256`` (from the manifest) is checked when given."""
    path, hint = Path(path), f" {hint}" if hint else ""
    if not path.is_file():
        raise StoredModelError(f"{path} does not exist.{hint}")
    if sha256 and sha256_of(path) != sha256:
        raise StoredModelError(f"{path} is corrupt or truncated (sha256 does not match the manifest).{hint}")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = build(**ck["spec"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    missing, unexpected = torch.nn.Module.load_state_dict(model, state, strict=False)
    missing = [k for k in missing if not is_coder_table(k)]
    if missing or unexpected:
        raise StoredModelError(f"{path} does not fit {type(model).__name__}: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}.{hint}")
    model.update(force=True)
    return model.eval()
