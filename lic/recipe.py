"""A page's recipe: the parameters its chapter was executed with and a fingerprint of its inputs,
so ``python -m lic.book run all`` replays the book and skips what has not changed.

The inputs of a chapter (:func:`inputs`), each hashed:
- its notebook source (cell sources only: a clean notebook has no outputs);
- the ``lic`` modules it runs: the modules the notebook imports and, transitively, every module
  those import, lazily inside functions too (read from the source, so a module touched anywhere
  on that path counts: we err on the side of rerunning);
- the committed models it reads, through their manifests (every model file is checked against the
  sha256 its manifest holds when loaded): the zoo's families and the chapter's own models and points;
  06_synthesis reads every chapter's points and results, so all of them (07_controls: 01's, and the
  narrow decoders trained from scratch);
- the papers' tables and the published reference curves.

Jupyter Book's own execution cache (jupyter-cache) keys a notebook on its code cells alone; our
pages depend as much on the ``lic`` code and the committed models they load, which it cannot see,
so the fingerprint is our own. It is kept in the executed page's metadata (``metadata.lic.recipe``),
with every input's hash, so a dry run names what changed.
"""
from __future__ import annotations

import ast
import hashlib
import json
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
LIC = PROJECT / "lic"
SYNTHESIS = "06_synthesis"
# chapters whose points and results a chapter reads besides its own (06 reads every chapter's)
READS = {"07_controls": ("01_liao",)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def notebook_source(path: Path) -> bytes:
    nb = json.loads(Path(path).read_text())
    return json.dumps([[c["cell_type"], "".join(c["source"])] for c in nb["cells"]]).encode()


def _imports(source: str, package: str) -> set:
    """Names of ``lic`` modules a piece of Python imports (absolute or relative, anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lic")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to ``package``
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("lic"):
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}  # ``from lic import zoo``: a module
    return found


def _file_of(module: str):
    rel = Path(*module.split("."))
    for cand in (PROJECT / rel.with_suffix(".py"), PROJECT / rel / "__init__.py"):
        if cand.exists():
            return cand
    return None  # a name imported from a module, not a module


def lic_modules(name: str) -> list:
    """The ``lic`` source files chapter ``name`` runs (sorted, relative to the project). 06_synthesis
    rebuilds every chapter's points by module name (``lic.points``): all of ``lic``."""
    if name == SYNTHESIS:
        return sorted(str(f.relative_to(PROJECT)) for f in LIC.rglob("*.py"))
    nb = json.loads((PROJECT / "notebooks" / f"{name}.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    todo, seen = list(_imports(code, "")), set()
    todo.append("lic")  # the package's __init__ runs whenever any part of it is imported
    while todo:
        mod = todo.pop()
        f = _file_of(mod)
        if f is None or f in seen:
            continue
        seen.add(f)
        package = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        todo.extend(_imports(f.read_text(), package))
        if "." in mod:
            todo.append(mod.rsplit(".", 1)[0])  # importing lic.models.gated runs lic.models too
    return sorted(str(f.relative_to(PROJECT)) for f in seen)


def _model_folders(name: str, scale, parameters: dict) -> list:
    from . import store, zoo

    from .scales import WIDER

    # the family a `width` parameter names; 06_synthesis reads every family's points and zoo
    families = [scale.at_width(w) for w in ("", *WIDER)] if name == SYNTHESIS else [scale.at_width(parameters.get("width") or "")]
    chapters = [p.stem for p in sorted((PROJECT / "notebooks").glob("[0-9]*.ipynb"))]
    folders = []
    for at in families:
        mine = [store.models_dir(ch, at) for ch in (chapters if name == SYNTHESIS else [name])]
        if name == SYNTHESIS and at.family and not any((f / "points").exists() for f in mine):
            continue  # a wider family no chapter has run on: 06 reads nothing of it
        folders += [zoo.zoo_dir(at), *mine]
    folders += [store.models_dir(ch, scale) for ch in READS.get(name, ())]
    if name == "07_controls" or (name == SYNTHESIS and (store.models_dir("07_controls", scale) / "points").exists()):
        z = zoo.zoo_dir(scale)  # the narrow decoders trained from scratch: read through 07's points
        folders += sorted(z.parent.glob(f"{z.name}-gs*"))
    return folders


def inputs(name: str, scale, parameters=None) -> dict:
    """{input: hash} of everything chapter ``name`` at ``scale`` with ``parameters`` depends on
    (see the module doc)."""
    out = {f"notebooks/{name}.ipynb": _sha(notebook_source(PROJECT / "notebooks" / f"{name}.ipynb"))}
    for f in lic_modules(name):
        out[f] = _sha((PROJECT / f).read_bytes())
    files = sorted((PROJECT / "data" / "papers").glob("*")) + sorted((PROJECT / "data" / "reference").rglob("*"))
    for folder in _model_folders(name, scale, parameters or {}):
        files += sorted(folder.rglob("*.json")) if folder.exists() else []
    root = PROJECT / "data" / "results"  # where lic.report.save_results writes, at every scale
    if name == SYNTHESIS:  # the chapters' results it reads
        files += sorted(p for p in root.glob(f"*/{scale.name}.json") if p.parent.name != name)
    elif scale.at_width((parameters or {}).get("width") or "").family:  # a wider family's page sets itself beside the scale's own
        files.append(root / name / f"{scale.name}.json")
    files += [root / ch / f"{scale.name}.json" for ch in READS.get(name, ())]
    for f in files:
        if f.is_file():
            try:
                key = str(f.relative_to(PROJECT))
            except ValueError:  # outside the project (LIC_ZOO, LIC_RUNS)
                key = str(f)
            out[key] = _sha(f.read_bytes())
    return out


def fingerprint(ins: dict, parameters: dict) -> str:
    return _sha(json.dumps({"inputs": ins, "parameters": parameters}, sort_keys=True).encode())


def injected_parameters(page: Path) -> dict:
    """The parameters an executed page was run with (papermill's injected-parameters cell)."""
    nb = json.loads(Path(page).read_text())
    for cell in nb["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body
                    if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name)}
    return {}


def recorded(page: Path):
    """The recipe kept in an executed page, or None."""
    if not Path(page).exists():
        return None
    return json.loads(Path(page).read_text()).get("metadata", {}).get("lic", {}).get("recipe")


CODE = ("notebooks/", "lic/")  # inputs a run executes (hashed when it starts), not data it may write


def record(page: Path, name: str, scale, how: str = "executed", code=None) -> dict:
    """Keep the recipe of ``page`` (its injected parameters, the inputs as they are now) in its
    metadata. ``how``: "executed" right after a run; "stamped" when an existing page is declared
    to be the current inputs' page without executing it (the page says so on the status page).
    ``code``: :func:`inputs` taken when the run started; its notebook and ``lic`` hashes are kept
    (what the run executed), the data's are taken now (a chapter writes its own models and points)."""
    import nbformat

    page = Path(page)
    params = injected_parameters(page)
    ins = inputs(name, scale, params)
    if code:
        ins = {k: v for k, v in ins.items() if not k.startswith(CODE)} | {k: v for k, v in code.items() if k.startswith(CODE)}
    recipe = {"parameters": params, "fingerprint": fingerprint(ins, params), "inputs": ins, "how": how,
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    nb = nbformat.read(page, as_version=4)
    nb.metadata.setdefault("lic", {})["recipe"] = recipe
    nbformat.write(nb, page)
    return recipe


def status(page: Path, name: str, scale, parameters=None) -> dict:
    """{"up_to_date": bool, "parameters": what to run with, "why": [reasons to rerun], "recipe"}.
    ``parameters``: those asked for, over the page's recorded ones (which are replayed by default)."""
    rec = recorded(page)
    base = rec["parameters"] if rec else (injected_parameters(page) if Path(page).exists() else {})
    params = {**base, **(parameters or {}), "scale": scale.name}
    if rec is None:
        return {"up_to_date": False, "parameters": params, "recipe": None,
                "why": ["no executed page" if not Path(page).exists() else "the page has no recorded recipe"]}
    now = inputs(name, scale, params)
    if fingerprint(now, params) == rec["fingerprint"]:
        return {"up_to_date": True, "parameters": params, "why": [], "recipe": rec}
    old = rec["inputs"]
    why = [f"changed: {k}" for k in sorted(now) if k in old and old[k] != now[k]]
    why += [f"new: {k}" for k in sorted(now) if k not in old]
    why += [f"gone: {k}" for k in sorted(old) if k not in now]
    if params != rec["parameters"]:
        why.insert(0, "parameters: " + ", ".join(f"{k}={v!r}" for k, v in params.items()
                                                 if rec["parameters"].get(k) != v))
    return {"up_to_date": False, "parameters": params, "why": why, "recipe": rec}
