"""Where a chapter keeps the models it trains, and their manifest (sha256, steps, training time,
precision): ``data/checkpoints/<chapter>/cpu`` for the published scale (committed), under
``runs/<scale>/<chapter>/models`` for the others, or ``$LIC_ZOO/<chapter>/<scale>``; and how every
model file is written and read: the weights as :func:`stored_state` keeps them (fp16 transforms,
fp32 entropy models, no coder tables), written atomically (:func:`write`), read back with its
sha256 checked (:func:`read`) and loaded strictly (:func:`fill`). The zoo, 03 and 05 keep their
own payload keys (committed files); :func:`save_model` / :func:`load_model` are the format of
new chapters (``{"spec", "state_dict", "meta"}``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .data import sha256 as sha256_of
from .weights import is_coder_table, is_entropy, is_rebuilt

PROJECT = Path(__file__).resolve().parents[1]


def models_dir(chapter: str, scale) -> Path:
    """A chapter's committed models and points: ``data/checkpoints/<chapter>/cpu`` (``cpu-N128`` for
    the chapter run on a wider family, :attr:`lic.scales.Scale.key`); other scales under ``runs/``."""
    if "LIC_ZOO" in os.environ:
        return Path(os.environ["LIC_ZOO"]) / chapter / scale.key
    if scale.name == "cpu":
        return PROJECT / "data" / "checkpoints" / chapter / scale.key
    return PROJECT / "runs" / scale.name / chapter / ("models" + scale.family)


def read_json(path) -> dict:
    """The JSON object at ``path`` ({} when there is none). Under torchrun every rank gets rank 0's
    reading: a rank that read the file just after rank 0 rewrote it would otherwise take another
    branch, and the ranks' collectives (barriers) would no longer match."""
    from . import distributed as D

    path = Path(path)
    return D.broadcast(json.loads(path.read_text()) if path.exists() else {})


def read_manifest(chapter: str, scale) -> dict:
    return read_json(models_dir(chapter, scale) / "manifest.json")


def write_json(path, obj: dict) -> None:
    """Write ``obj`` as sorted, indented JSON, atomically (a killed run never leaves half a file)."""
    from . import distributed as D

    path = Path(path)
    if D.is_main():  # under torchrun rank 0 writes; every rank goes on once it is there
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    D.barrier()


def write_manifest(chapter: str, scale, manifest: dict) -> None:
    write_json(models_dir(chapter, scale) / "manifest.json", manifest)


class StoredModelError(RuntimeError):
    """A stored model that is missing, corrupt or does not fit its architecture; the message says
    how to get it back."""


def committed(path) -> dict | None:
    """Where git keeps ``path`` as it is now: {"commit", "path"} (the last commit touching it, whose
    blob equals the file; ``git show <commit>:<path>`` gives it back), None for a file outside the
    project's repository (a test's folder). Refuses a file of the repository not committed as it is."""
    import subprocess

    path = Path(path).resolve()
    try:
        rel = path.relative_to(PROJECT).as_posix()
    except ValueError:
        return None

    def git(*args):
        return subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True, text=True).stdout.strip()
    commit = git("log", "-1", "--format=%H", "--", rel)
    if not commit or git("rev-parse", f"{commit}:{rel}") != git("hash-object", rel):
        raise StoredModelError(f"{rel} is not committed as it is; commit it first (`git add {rel}`), so that git keeps it")
    return {"commit": commit, "path": rel}


def stored_state(model, half=True, keep_fp32=None) -> dict:
    """``model``'s weights as every chapter stores them: coder tables dropped (``update()`` rebuilds
    them), and the buffers construction rebuilds (:func:`lic.weights.is_rebuilt`); with ``half``, floating tensors in fp16 but the entropy models' and those of the keys
    ``keep_fp32(key)`` names."""
    def small(k, v):
        return half and v.is_floating_point() and not is_entropy(k) and not (keep_fp32 and keep_fp32(k))
    return {k: v.half() if small(k, v) else v.clone() for k, v in model.state_dict().items()
            if not is_coder_table(k) and not is_rebuilt(k)}


def write(payload: dict, path) -> str:
    """``torch.save(payload)`` to ``path`` atomically (a killed run never leaves half a file); its
    sha256. Under torchrun rank 0 writes and every rank returns once the file is there."""
    from . import distributed as D

    path = Path(path)
    if D.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
    D.barrier()
    return sha256_of(path)


def read(path, sha256=None, hint="") -> dict:
    """What :func:`write` stored at ``path``, after checking that it exists, matches ``sha256``
    (from a manifest, when given) and can be read; each failure is one message ending in ``hint``."""
    path, hint = Path(path), f" {hint}" if hint else ""
    if not path.is_file():
        raise StoredModelError(f"checkpoint {path} does not exist.{hint}")
    if sha256 and sha256_of(path) != sha256:
        raise StoredModelError(f"checkpoint {path} is corrupt or truncated (sha256 does not match the manifest).{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise StoredModelError(f"checkpoint {path} cannot be read ({err}).{hint}") from err


def fill(model, state: dict, path, hint=""):
    """``model`` with the stored ``state`` (back in fp32), its coder tables rebuilt, in eval mode.
    Only coder tables and rebuilt buffers may be missing from ``state``; anything else missing or
    unexpected is refused."""
    hint = f" {hint}" if hint else ""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = torch.nn.Module.load_state_dict(model, state, strict=False)
    missing = [k for k in missing if not is_coder_table(k) and not is_rebuilt(k)]
    if missing or unexpected:
        raise StoredModelError(f"checkpoint {path} does not fit {type(model).__name__}: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}.{hint}")
    model.update(force=True)
    return model.eval()


# no committed file may exceed 8 MiB: a model file over this is written in parts (see save_model)
MAX_FILE_BYTES = 7 * 2**20


def _groups(state: dict, limit: int) -> list:
    """``state`` split, in order, into dicts of at most ``limit`` bytes of tensor data each."""
    groups, size = [{}], 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if groups[-1] and size + n > limit:
            groups.append({})
            size = 0
        groups[-1][k] = v
        size += n
    return groups


def part_path(path, i: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.part{i}{path.suffix}")


def model_files(path) -> list:
    """The files one stored model occupies: ``path`` and its parts, if any."""
    path = Path(path)
    return [path] + sorted(path.parent.glob(f"{path.stem}.part*{path.suffix}"))


def save_model(model, path, spec: dict, meta: dict, half=True, keep_fp32=None, max_bytes=None) -> str:
    """Store ``model`` as ``{"spec", "state_dict", "meta"}`` (``spec``: what rebuilds it), its weights
    as :func:`stored_state` keeps them. Weights over ``max_bytes`` go to part files beside it
    (``name.part1.pt``, …), each listed with its sha256 under ``parts``, so one manifest sha256
    still vouches for every byte. Returns the (main) file's sha256."""
    first, parts = write_parts(stored_state(model, half, keep_fp32), path, max_bytes)
    return write({"spec": dict(spec), "state_dict": first, "parts": parts, "meta": meta}, path)


def write_parts(state: dict, path, max_bytes=None) -> tuple:
    """Split ``state`` for the file ``path``: (what the main file holds, [{"file", "sha256"}] of the
    part files written beside it, ``name.part1.pt``, …), each file at most ``max_bytes`` of tensors."""
    first, *rest = _groups(state, max_bytes or MAX_FILE_BYTES)
    if is_main():
        for old in model_files(path)[1:]:
            old.unlink()  # parts of an earlier, larger save
    return first, [{"file": part_path(path, i).name, "sha256": write(g, part_path(path, i))} for i, g in enumerate(rest, 1)]


def read_state(ck: dict, path, hint="") -> dict:
    """The whole state dict of a stored file ``ck`` (read from ``path``): its own tensors and its
    parts', each part checked against the sha256 the main file lists."""
    state = dict(ck["state_dict"])
    for part in ck.get("parts", []):
        state.update(read(Path(path).parent / part["file"], part["sha256"], hint))
    return state


def is_main() -> bool:
    from .distributed import is_main as main

    return main()


def load_model(path, build, sha256=None, hint=""):
    """The model stored by :func:`save_model`, rebuilt with ``build(**spec)``, in fp32 and eval
    mode, its coder tables rebuilt; ``sha256`` (from the manifest) is checked when given, and each
    part's own sha256 (from the main file)."""
    ck = read(path, sha256, hint)
    return fill(build(**ck["spec"]), read_state(ck, path, hint), path, hint)
