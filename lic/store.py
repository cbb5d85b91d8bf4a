"""Where a chapter keeps the models it trains, and their manifest (sha256, steps, training time,
precision): ``data/checkpoints/<chapter>/cpu`` for the published scale (committed), under
``runs/<scale>/<chapter>/models`` for the others, or ``$LIC_ZOO/<chapter>/<scale>``."""
from __future__ import annotations

import json
import os
from pathlib import Path

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


def write_manifest(chapter: str, scale, manifest: dict) -> None:
    p = models_dir(chapter, scale) / "manifest.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)
