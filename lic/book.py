"""Run the chapters with papermill and build the book with Jupyter Book (1.x).

    python -m lic.book run 00_baselines --scale cpu      # one chapter (progress bar per cell)
    python -m lic.book run all --scale smoke             # every chapter (and every page executed before)
    python -m lic.book run 01_liao-N128 --scale cpu      # a chapter on a wider family: its own page
    python -m lic.book run 03_yin --scale cpu --dry-run  # what it would train and reuse, and how long
    python -m lic.book list                              # chapters and their parameters
    python -m lic.book build --scale cpu                 # HTML from the executed notebooks
    python -m lic.book tidy book/*.ipynb                 # pages: drop progress bars, findings after the title
    python -m lic.book claims 02_luo --scale cpu         # add claims to a results file written before them

Parameters (``-p NAME=VALUE``) are checked before any cell runs (:mod:`lic.params`): an unknown or
renamed name, a malformed ``-p`` or a bad value is one line on stderr and exit status 2.

Clean sources live in ``notebooks/``. Executed copies go to ``book/`` for the default ``cpu``
scale (what the published book renders) and to ``runs/<scale>/book/`` for other scales, where a
complete book source (config, toc, pages) is assembled so that scale builds on its own.
Wall times of every run are kept (``data/results/runs.json`` for cpu) for the status page.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import params as lic_params
from .report import RESULTS, environment
from .scales import SCALES, WIDER, check_choice, get_scale

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOKS = PROJECT / "notebooks"
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")


SYNTHESIS = "06_synthesis"  # lic.recipe.SYNTHESIS (not imported here: recipe is loaded lazily)


def chapters() -> list:
    """Names of the chapter notebooks, in the order they run: by number, the cross-method chapter
    last (it reads every other chapter's points, 07_controls' too)."""
    return sorted((p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")), key=lambda n: (n == SYNTHESIS, n))


def pages() -> list:
    """Every page the chapter notebooks make, in order: each chapter at its scale's own widths, then,
    for a chapter with a ``width`` parameter, one page per wider family (``01_liao-N128``: the same
    notebook run with ``width=N128``). Each page has its own executed copy, recipe and lock."""
    out = []
    for ch in chapters():
        out.append(ch)
        if "width" in lic_params.CHECKS.get(ch, {}):
            out += [f"{ch}-{w}" for w in WIDER]
    return out


def page_of(chapter: str, parameters=None) -> str:
    """The page a run of ``chapter`` with ``parameters`` makes (a wider ``width``: its own page)."""
    width = (parameters or {}).get("width")
    return f"{chapter}-{width}" if width in WIDER else chapter


def resolve(name: str, parameters=None) -> tuple:
    """(page, chapter, parameters) of a run asked for as ``name`` (a chapter or a page) with
    ``parameters``: ``01_liao-N128`` is chapter 01_liao with ``width=N128``, and so is ``01_liao``
    asked for with ``-p width=N128``. Raises ``ValueError`` (naming the pages) for anything else."""
    parameters = dict(parameters or {})
    for ch in chapters():
        if name == ch:
            return page_of(ch, parameters), ch, parameters
        width = name[len(ch) + 1:] if name.startswith(ch + "-") else None
        if width in WIDER and f"{ch}-{width}" in pages():
            if parameters.get("width", width) != width:
                raise ValueError(f"page {name} is {ch} at width={width}; -p width={parameters['width']} "
                                 f"asks for another page: run `{page_of(ch, parameters)}`")
            return name, ch, {**parameters, "width": width}
    check_choice("chapter", name, tuple(pages()))
    raise AssertionError  # check_choice raised


def chapter_of(page: str) -> str:
    return resolve(page)[1]


def book_root(scale: str) -> Path:
    """The folder whose ``_config.yml`` Jupyter Book builds for ``scale``."""
    return PROJECT if scale == "cpu" else PROJECT / "runs" / scale / "book"


def executed_path(name: str, scale: str) -> Path:
    return book_root(scale) / "book" / f"{name}.ipynb"


def executing_path(name: str, scale: str) -> Path:
    """Where a chapter executes before its copy moves into the book (runs are not committed)."""
    from .zoo import runs_dir

    return runs_dir(get_scale(scale)) / "executing" / f"{name}.ipynb"


def output_log(name: str, scale: str) -> Path:
    """The chapter's live output while it runs — its progress bars and prints, which the page does
    not keep (:func:`tidy`): follow it with ``tail -f``. Not committed."""
    from .zoo import runs_dir

    return runs_dir(get_scale(scale)) / "logs" / f"{name}.log"


def runs_log(scale: str) -> Path:
    """Wall times of the chapter runs of ``scale`` (committed for cpu: the status page)."""
    return book_root(scale) / "data" / "results" / "runs.json"


def _record(name, scale, seconds, ok):
    path = runs_log(scale)
    log = json.loads(path.read_text()) if path.exists() else {}
    log[name] = {"wall_seconds": round(seconds, 1), "ok": ok, **environment()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(log, indent=1, sort_keys=True) + "\n")


def kept_measurements(scale: str) -> Path:
    """Untimed measurements kept with the book (committed at ``cpu``: a few hundred bytes each):
    quality, rate and MACs of a model's weights on the test images, whichever chapter or machine
    measured them. A chapter run starts from them and adds what it measured
    (:func:`lic.evaluate.share_untimed`), so a rerun elsewhere — 06_synthesis above all, which
    measures every chapter's points — codes only what is new. Times are never kept here."""
    return book_root(scale) / "data" / "measured" / scale


def run(name: str, scale: str = "cpu", parameters=None, progress=True, record=True, announce=None) -> Path:
    """Execute chapter ``name`` (or one of its pages, :func:`pages`) at ``scale`` with papermill;
    return the executed notebook, which keeps its recipe (:mod:`lic.recipe`). One run per page and
    scale at a time (:mod:`lic.lock`); ``announce`` is printed once the run holds its lock."""
    check_choice("scale", scale, tuple(SCALES))
    name, chapter, parameters = resolve(name, parameters)
    lic_params.check(chapter, {"scale": scale, **parameters})  # before papermill starts
    from .lock import held
    from .zoo import runs_dir

    with held(runs_dir(get_scale(scale)) / "locks" / f"{name}.lock", f"chapter {name} at scale {scale}"):
        if announce:
            print(announce)
        return _run(name, scale, parameters, progress, record, chapter)


def _run(name, scale, parameters, progress, record, chapter) -> Path:
    import papermill as pm

    from . import recipe

    out = executed_path(name, scale)
    # papermill writes as it goes: execute elsewhere, so a failed or killed run never leaves a
    # half-executed page in the book (the copy stays where the error says, for debugging)
    partial = executing_path(name, scale)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log = output_log(name, scale)
    log.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"live output (progress bars): tail -f {log}", file=sys.stderr)
    from .evaluate import share_untimed
    from .zoo import runs_dir

    measured, kept = runs_dir(get_scale(scale)) / "measured", kept_measurements(scale)
    share_untimed(kept, measured)
    # the code the run executes, hashed now: a module edited while it runs makes the page stale
    code = recipe.inputs(chapter, get_scale(scale), {"scale": scale, **(parameters or {})})
    t0 = time.time()
    ok = False
    try:
        with open(log, "w") as stream:
            pm.execute_notebook(str(NOTEBOOKS / f"{chapter}.ipynb"), str(partial),
                                parameters={"scale": scale, **(parameters or {})},
                                progress_bar=progress, kernel_name="python3", cwd=str(PROJECT),
                                stdout_file=stream, stderr_file=stream)
        ok = True
    except Exception as err:
        raise RuntimeError(f"chapter {name} failed at scale {scale}: {err}\nThe partly executed notebook "
                           f"is {partial} (its output: {log}); the book's copy {out} is unchanged.") from err
    finally:
        if record:
            _record(name, scale, time.time() - t0, ok)
        n = share_untimed(measured, kept)  # a failed run's measurements hold as well
        if n and progress:
            print(f"kept {n} new untimed measurements in {kept.relative_to(PROJECT)}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    tidy(partial, chapter)
    shutil.move(partial, out)
    recipe.record(out, chapter, get_scale(scale), code=code)  # its parameters and inputs: a replay skips it while they hold
    return out


_PROGRESS = re.compile(r"\d+/\d+ \[|it/s|s/it|cell/s|s/cell|TqdmWarning|IProgress not found")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal codes, e.g. the cursor-up nested tqdm bars leave alone
_CPP_WARNING = re.compile(r"\[W\d{4} [\d:.]+ \S+\.cpp:\d+\] Warning: ")  # torch's C++ TORCH_WARN lines


def _is_noise(text: str) -> bool:
    """Progress-bar redraws (tqdm writes them to stderr with carriage returns), blank stderr (terminal
    codes only, such as the cursor-up a nested bar leaves when it closes),
    tqdm's warning that the notebook has no widgets, and output made only of torch's C++ warnings
    (printed once per call, e.g. 138 times by 04's int8 runs; the run's log keeps them): what a
    reader of the page does not want."""
    lines = [line for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return not lines or bool(_PROGRESS.search(text)) or all(_CPP_WARNING.match(line) for line in lines)


def _page_tags(cell) -> list:
    """How the page shows a code cell: the parameters cells (the notebook's and papermill's) and
    the parameter check are removed from the page (they stay in the notebook, for papermill);
    every other cell's code is folded (``hide-input``), its output shown."""
    tags = list(cell.metadata.get("tags", []))
    if {"parameters", "injected-parameters"} & set(tags) or cell.source.startswith("from lic import params"):
        want = "remove-cell"
    else:
        want = "hide-input"
    return tags if want in tags or "remove-cell" in tags else tags + [want]


FINDINGS = "lic-findings"  # the metadata key of the findings cell :func:`tidy` keeps after the title


def _findings_source(nb, name: str, results_root=None):
    """The findings block of chapter ``name`` (:func:`lic.claims.findings`) from the results file
    of the scale the notebook ran at, or None where that file has no claims."""
    from .claims import findings

    ran = nb.metadata.get("papermill", {}).get("parameters", {})
    scale = ran.get("scale")
    key = get_scale(scale).at_width(ran.get("width") or "").key if scale in SCALES else scale
    path = Path(results_root or RESULTS) / name / f"{key}.json"
    claims = json.loads(path.read_text()).get("claims") if scale and path.exists() else None
    return findings(claims, key) if claims else None  # "cpu-N128" on a wider family's page


def tidy(path, name=None, results_root=None) -> int:
    """Make an executed notebook a page: remove progress bars and torch's C++ warnings from its stderr
    outputs (:func:`_is_noise`; other stderr, Python warnings included, is kept), tag its code cells (:func:`_page_tags`), and put the
    chapter's findings (its claims and verdicts, from the results file the run wrote) right after
    the title cell, replacing an older findings cell. In place; ``name``: the chapter (default: the
    file's stem). Returns how many outputs were removed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    removed, changed = 0, False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = [o for o in cell.get("outputs", [])
                if not (o.get("output_type") == "stream" and o.get("name") == "stderr" and _is_noise(o.get("text", "")))]
        removed += len(cell.get("outputs", [])) - len(keep)
        cell.outputs = keep
        tags = _page_tags(cell)
        if tags != list(cell.metadata.get("tags", [])):
            cell.metadata["tags"] = tags
            changed = True
    changed |= _own_labels(nb, path.stem, name or _chapter_or_stem(path.stem))
    source = _findings_source(nb, name or _chapter_or_stem(path.stem), results_root)
    old = [i for i, c in enumerate(nb.cells) if c.metadata.get(FINDINGS)]
    if source is not None and [nb.cells[i].source for i in old] != [source]:
        for i in reversed(old):
            del nb.cells[i]
        title = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
        cell = nbformat.v4.new_markdown_cell(source, metadata={FINDINGS: True})
        if nb.nbformat_minor < 5:  # cell ids came with nbformat 4.5
            cell.pop("id", None)
        nb.cells.insert(title + 1, cell)
        changed = True
    if removed or changed:
        nbformat.write(nb, path)
    return removed


_LABEL = re.compile(r"^(:name:\s*)(\S+)\s*$", re.M)


def _own_labels(nb, page: str, chapter: str) -> bool:
    """A chapter's second page (``01_liao-N128``: the same notebook) gets its own figure labels —
    ``fig-liao-sweep-N128`` — and its references to them follow: one book may not hold a label twice."""
    suffix = page[len(chapter):] if page != chapter and page.startswith(chapter) else ""
    mine = {m.group(2) for c in nb.cells if c.cell_type == "markdown" for m in _LABEL.finditer(c.source)}
    mine = {label for label in mine if not label.endswith(suffix)} if suffix else set()
    changed = False
    for c in nb.cells:
        if c.cell_type != "markdown" or not mine:
            continue
        new = _LABEL.sub(lambda m: m.group(1) + m.group(2) + (suffix if m.group(2) in mine else ""), c.source)
        for label in mine:
            new = re.sub(r"(\{(?:num)?ref\}`(?:[^`<]*<)?)" + re.escape(label) + r"(>?`)", r"\g<1>" + label + suffix + r"\2", new)
        if new != c.source:
            c.source, changed = new, True
    return changed


def _chapter_or_stem(stem: str) -> str:
    try:
        return chapter_of(stem)
    except ValueError:
        return stem


def assemble(scale: str) -> Path:
    """Copy the book's config, toc and pages beside the executed notebooks of ``scale``."""
    root = book_root(scale)
    if root == PROJECT:
        return root
    (root / "book").mkdir(parents=True, exist_ok=True)
    for f in BOOK_FILES:
        shutil.copy(PROJECT / f, root / f)
    shutil.copytree(PROJECT / "_static", root / "_static", dirs_exist_ok=True)
    for page in (PROJECT / "book").glob("*.md"):
        if page.name not in ("status.md", "claims.md", "chapters.md"):
            shutil.copy(page, root / "book" / page.name)
    shutil.copytree(PROJECT / "data" / "papers", root / "data" / "papers", dirs_exist_ok=True)
    return root


def hm(seconds: float) -> str:
    """Seconds as h:mm (a reader's unit for runs that take minutes to hours)."""
    m = int(round(seconds / 60))
    return f"{m // 60}:{m % 60:02d}"


def training_seconds(scale: str) -> dict:
    """{what: seconds} of recorded training at ``scale``: the zoo and each chapter's own models, from
    their manifests (what rebuilding from scratch would cost on the machines that trained them)."""
    from . import store, zoo

    S = get_scale(scale)
    out = {"the zoo (base models)": sum(e.get("train_seconds", 0) for e in zoo.read_manifest(S).values())}
    from .luo import CHAPTER as LUO, trained_variants

    for chapter in chapters():
        m = store.read_manifest(chapter, S)
        if chapter == LUO:  # 02 keeps its trained hyper paths in a manifest of their own
            m = {**m, **trained_variants(S)}
        total = sum(e.get("train_seconds", 0) for e in m.values() if isinstance(e, dict))
        if total:
            out[f"{chapter} models"] = total
    return out


def short_cpu(name: str) -> str:
    """A CPU's name for a table column: without trademarks and filler words ("Intel(R) Xeon(R)
    Processor (family 6, model 167), AVX512" → "Intel Xeon (family 6, model 167), AVX512")."""
    for word in ("(R)", "(TM)", "(tm)", " Processor", " CPU"):
        name = name.replace(word, "")
    return " ".join(name.split())


def write_status(scale: str, pending=()) -> Path:
    """``book/status.md``: what ran, when, where, how long (from :func:`runs_log`), the chapters
    not yet executed at this scale (``pending``) with the command that runs them, and what it costs
    to rebuild everything from scratch (training included, from the manifests)."""
    path = runs_log(scale)
    log = json.loads(path.read_text()) if path.exists() else {}
    lines = ["# Status of this build", "",
             "Generated by `python -m lic.book build` from the run log: the last papermill run of "
             "every chapter at this scale, on the machine that ran it (wall time, h:mm). A run reuses "
             "the trained models committed with the book and the measurements kept under `runs/`, so a "
             "rerun can take minutes where a first run takes hours.", "",
             "| chapter | ok | wall time (h:mm) | date | CPU | recipe |",
             "|---|---|---|---|---|---|"]
    from . import recipe

    for name, r in sorted(log.items()):
        st = recipe.status(executed_path(name, scale), chapter_of(name), get_scale(scale)) if name in pages() else None
        lines.append(f"| {name} | {'yes' if r['ok'] else 'no'} | {hm(r['wall_seconds'])} | {r['date']} | "
                     f"{short_cpu(r['cpu'])} | {_recipe_cell(st)} |")
    soft = {(r["threads"], r["torch"], r["compressai"]) for r in log.values()}
    if soft:
        lines += ["", "Every run: " + "; ".join(f"{t} threads, torch {tv}, CompressAI {c}" for t, tv, c in sorted(soft))
                  + ". *Recipe*: the parameters the page was executed with and whether its inputs (notebook, "
                  "the `lic` code it runs, the committed models it reads) are unchanged since; `python -m "
                  "lic.book run all` reruns exactly the chapters that are not. *Stamped*: the page was declared "
                  "current for its inputs on that date without being executed again."]
    if pending:
        lines += ["", "Not yet executed at this scale, so not in this book: "
                  + "; ".join(f"{n} (`python -m lic.book run {n} --scale {scale}`)" for n in pending) + "."]
    train = training_seconds(scale)
    runs = sum(r["wall_seconds"] for r in log.values())
    if sum(train.values()):
        lines += ["", "## Rebuilding from scratch", "",
                  "What the book cost to make, from the manifests of the committed models (training time on "
                  "the machines that trained them, two threads) and the chapter runs above:", "",
                  "| part | h:mm |", "|---|---|"]
        lines += [f"| training: {k} | {hm(v)} |" for k, v in train.items()]
        lines += [f"| running the chapters (last runs) | {hm(runs)} |",
                  f"| **total** | **{hm(sum(train.values()) + runs)}** |"]
    env = environment()
    lines += ["", f"This page was generated on {env['date']} with Python {env['python']}, torch "
              f"{env['torch']}, CompressAI {env['compressai']}, on `{env['cpu']}` with "
              f"{env['threads']} threads. The book shows the `{scale}` scale.", ""]
    path = book_root(scale) / "book" / "status.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


PAPER_CHAPTERS = {
    "01_liao": ("Liao et al.", "structured pruning of the decoder by activation-range channel effectiveness"),
    "02_luo": ("Luo et al. (ERHP)", "ResRep compactor pruning of the hyperprior path"),
    "03_yin": ("Yin et al.", "energy-based channel gating and a bit-rate modulator (variable rate)"),
    "04_yu": ("Yu et al.", "unstructured pruning per component and int8 quantization"),
    "05_tao": ("Tao et al. (AdaNIC)", "slimmable supernet with spatially-adaptive operators and routing agents"),
}


def write_chapters(scale: str, pending=()) -> Path:
    """``book/chapters.md`` (included by the intro): the five papers' chapters, linked where
    executed at this scale, named without a link where not (a link to a page the build leaves
    out would break the strict build)."""
    lines = ["| chapter | paper | method |", "|---|---|---|"]
    for i, (name, (paper, method)) in enumerate(PAPER_CHAPTERS.items(), 1):
        where = f"{{doc}}`{name}`" if name not in pending else f"`{name}`, not yet run at this scale"
        lines.append(f"| {i} | {paper} ({where}) | {method} |")
    syn = "{doc}`06_synthesis`" if "06_synthesis" not in pending else "`06_synthesis` (not yet run at this scale)"
    ctl = "{doc}`07_controls`" if "07_controls" not in pending else "`07_controls` (not yet run at this scale)"
    lines += ["", f"{ctl} asks whether Liao's pruning beats the same narrow decoder obtained without pruning "
              "(trained from scratch, distilled, mask-decayed). Across the papers, "
              f"{syn} measures every chapter's models on the same base models and the "
              "same CPU, in one timing run, and says which method to use."]
    path = book_root(scale) / "book" / "chapters.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ledger(scale: str) -> Path:
    """``book/claims.md``: the claims ledger (:mod:`lic.ledger`), from every chapter's results file."""
    from .ledger import ledger

    path = book_root(scale) / "book" / "claims.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ledger(scale, results_root=book_root(scale) / "data" / "results"
                           if scale == "cpu" else None))
    return path


def toc_without(toc: dict, pending) -> dict:
    """The table of contents ``toc`` (``_toc.yml``, parsed) without the chapters in ``pending``,
    and without any part left with no chapter (Jupyter Book refuses an empty part)."""
    drop = {f"book/{n}" for n in pending}

    def keep(entries):
        out = []
        for c in entries:
            if c.get("file") in drop:
                continue
            if "sections" in c:
                c = {**c, "sections": keep(c["sections"])}
                if not c["sections"]:
                    del c["sections"]
            out.append(c)
        return out
    parts = [{**part, "chapters": keep(part["chapters"])} for part in toc.get("parts", [])]
    return {**toc, "parts": [part for part in parts if part["chapters"]]}


def build(scale: str = "cpu", strict=True) -> Path:
    """Build the HTML book of ``scale`` from its executed notebooks (no execution)."""
    check_choice("scale", scale, tuple(SCALES))
    pending = [n for n in pages() if not executed_path(n, scale).exists()]
    if not set(chapters()) - set(pending):
        raise FileNotFoundError(f"no chapter is executed at scale {scale}; run "
                                f"`python -m lic.book run all --scale {scale}` first")
    root = assemble(scale)
    write_status(scale, pending)
    write_ledger(scale)
    write_chapters(scale, pending)
    shutil.rmtree(root / "_build", ignore_errors=True)
    toc = root / "_toc.yml"
    if pending:  # the book shows what has run; the status page names the rest and how to run it
        import yaml

        toc = root / "_build_toc.yml"
        toc.write_text(yaml.safe_dump(toc_without(yaml.safe_load((PROJECT / "_toc.yml").read_text()), pending),
                                      sort_keys=False, allow_unicode=True))
    cmd = [sys.executable, "-m", "jupyter_book", "build", str(root), "--path-output", str(root), "--toc", str(toc)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb:
        cmd = [jb] + cmd[3:]
    subprocess.run(cmd, check=True)
    html = root / "_build" / "html" / "index.html"
    print(f"book: {html}")
    return html


def plan(name: str, scale: str, parameters=None) -> list:
    """What running ``name`` at ``scale`` would do: its resolved parameters, the base and chapter
    models it needs (present or to train), the states and measurements it would reuse, and the last
    run's wall time. Returns the lines it prints."""
    from . import zoo

    page, name, parameters = resolve(name, parameters)
    p = lic_params.check(name, {"scale": scale, **parameters})
    S = get_scale(scale).at_width(getattr(p, "width", "") or "")
    lines = [f"{page} at scale {scale}:", "  parameters: " + ", ".join(f"{k}={v!r}" for k, v in vars(p).items())]
    archs = getattr(p, "archs", None) or []
    lams = getattr(p, "lambdas", None) or list(S.lambdas)
    if name in ("01_liao", "07_controls") and not getattr(p, "lambdas", None):  # Liao's: the middle λ, then the smallest
        from .zoo import middle_lambda

        lams = [middle_lambda(S), min(S.lambdas)]
    if S.pretrained:
        if not archs:  # 05 starts from one architecture; 06 rebuilds every chapter's points
            from . import tao

            archs = [tao.ARCH] if name == "05_tao" else sorted(
                {a for ch in chapters() if ch != name for a in (getattr(lic_params.check(ch, {"scale": scale}), "archs", None)
                                                               or [])} | {tao.ARCH}) if name == "06_synthesis" else []
            lams = list(S.slim_lambdas) if name == "05_tao" else lams
        files = [(zoo.model_name(a, lam), *zoo.pretrained_file(a, lam)) for a in archs for lam in lams
                 if lam in zoo.PAPER_QUALITY]
        missing = [f for f in files if not f[2].exists()]
        lines.append(f"  base models: CompressAI's pretrained weights, {len(files) - len(missing)} of {len(files)} "
                     f"in torch.hub's cache ({files[0][2].parent})" if files else
                     "  base models: CompressAI's pretrained weights (network, first use)")
        lines += [f"    {name}: {'present' if path.exists() else 'MISSING, fetch ' + url}" for name, url, path in files]
    elif archs:
        manifest = zoo.read_manifest(S)
        have = [zoo.model_name(a, lam) for a in archs for lam in lams if zoo.model_name(a, lam) in manifest]
        miss = [(a, lam) for a in archs for lam in lams if zoo.model_name(a, lam) not in manifest]
        hours = sum(_hours_like(manifest, a) or 0 for a, _ in miss)
        lines.append(f"  base models: {len(have)} in the zoo" + (
            f"; to TRAIN first: {', '.join(zoo.model_name(a, lam) for a, lam in miss)}"
            + (f" (≈ {hours:.1f} h, from the manifest's training times)" if hours else "") if miss else ""))
    if name == "02_luo":
        from . import luo

        per = 4 + len(p.other_strengths)  # ERHP, its β ablations, uniform, half, original + training
        kept = luo.trained_variants(S)
        lines.append(f"  trained variants: {len(kept)} kept in {luo.trained_dir(S)} (measured without training; "
                     f"up to {len(archs) * len(lams) * per} in all, fewer where half width is the uniform plan)")
    if name == "03_yin":
        from . import yin

        m = yin.read_manifest(S)
        want = [yin.model_name(a, v) for a in archs for v in dict.fromkeys(["ecg+bm", *p.variants])]
        miss = [n for n in want if n not in m]
        per = [e["train_seconds"] / e["steps"] for e in m.values() if e.get("steps")]
        est = f", ≈ {len(miss) * S.vr_steps * sum(per) / len(per) / 3600:.1f} h at the s/step of the trained ones" if per else ""
        lines.append(f"  chapter models: {len(want) - len(miss)} of {len(want)} trained"
                     + (f"; to TRAIN ({S.vr_steps} steps each{est}): {', '.join(miss)}" if miss else ""))
        curve = [yin.model_name(p.tradeoff_arch[0], "bm")] + [  # the trade-off curve's models
            yin.model_name(p.tradeoff_arch[0], "ecg+bm", t) for t in [yin.TARGET_SPARSITY, *p.tradeoff_targets]]
        more = [n for n in dict.fromkeys(curve) if n not in m and n not in want]
        lines.append(f"  trade-off curve ({p.tradeoff_arch[0]}, α_t = 0, "
                     + ", ".join(f"{t:g}" for t in [yin.TARGET_SPARSITY, *p.tradeoff_targets]) + ")"
                     + (f": to TRAIN as well: {', '.join(more)}" if more else ": nothing more to train"))
    if name == "04_yu":
        from . import yu

        m = yu.read_manifest(S)
        miss = [c for c in yu.CODECS if c not in m]
        lines.append(f"  codecs: {len(yu.CODECS) - len(miss)} of {len(yu.CODECS)} trained" + (
            f"; to TRAIN (`python -m lic.yu train --scale {scale}`): {', '.join(miss)}"
            f" (RNN {S.rnn_steps} steps, HiFiC-style {S.hific_steps} + {S.hific_gan_steps}"
            f" + {S.hific_late_steps} + {S.hific_late_gan_steps})" if miss else ""))
    if name == "05_tao":
        from . import store, tao

        m = store.read_manifest(tao.CHAPTER, S)
        lams_t = getattr(p, "lambdas", None) or list(S.slim_lambdas)
        miss = [tao.model_name(lam) for lam in lams_t if tao.model_name(lam) not in m]
        per = [e["train_seconds"] / e["steps"] for e in m.values() if e.get("steps") and "widths" in e]
        est = f", ≈ {len(miss) * S.slim_steps * sum(per) / len(per) / 3600:.1f} h at the s/step of the trained ones" if per else ""
        lines.append(f"  supernets: {len(lams_t) - len(miss)} of {len(lams_t)} trained"
                     + (f"; to TRAIN ({S.slim_steps} steps each{est}; `python -m lic.tao train --scale {scale}`): "
                        f"{', '.join(miss)}" if miss else ""))
        agents = [k for k in m if k.startswith("agent-")]
        lines.append(f"  routing agents: {len(agents)} recorded (trained in the chapter, minutes each)")
    if name == "07_controls":
        from . import controls

        lines += controls.plan(p, S)
    if name == "06_synthesis":
        from . import data as lic_data
        from . import synthesis

        found, missing = synthesis.collect(S, p.chapters)
        lines.append(f"  operating points: {len(found)} registered"
                     + "".join(f"; none from {ch} (`{cmd}`)" for ch, cmd in missing.items()))
        image_ms = synthesis.zoo_image_ms(S)
        if image_ms and found:
            points = found + synthesis.stack_candidates(found)
            secs, unknown = synthesis.timing_seconds(points, p.timed_images, S.timing_repeats, image_ms, len(p.runtimes))
            done = sorted(f.name.rsplit("-", 1)[0] for f in (zoo.runs_dir(S) / name / "timing").glob("*.json"))
            lines.append(f"  timing: ≤ {secs / 60:.0f} min for {len(points)} points × {len(p.runtimes)} runtime"
                         f"{'s' * (len(p.runtimes) > 1)} ({', '.join(p.runtimes)}), one interleaved run per "
                         f"architecture, each kept on this machine when it ends ({p.timed_images} images, "
                         f"{S.timing_repeats} repeats + a warm-up, at 00_baselines' encode + decode time of each "
                         "architecture" + (f"; {unknown} points of other codecs not estimated" if unknown else "")
                         + f"); kept here: {', '.join(done) if done else 'none'} (reused if their points are unchanged)")
            n = len(lic_data.test_images(S, p.data_root))
            secs, _ = synthesis.timing_seconds(points, n, 0, image_ms)
            lines.append(f"  quality and rate: up to ≈ {secs / 60:.0f} min more, for the points never measured "
                         f"(each codes the {n} test images once; what is kept in {kept_measurements(scale).relative_to(PROJECT)} "
                         "or cached on this machine is reused)")
    runs = zoo.runs_dir(S)
    runs = runs / f"zoo{S.family}" if S.family else runs  # a wider family's chapter runs keep their states there
    states = sorted((runs / name).rglob("*.state.pt")) if (runs / name).exists() else []
    cached = len(list((runs / "measured").glob("*.json"))) if (runs / "measured").exists() else 0
    kept = len(list(kept_measurements(scale).glob("*.json")))
    lines.append(f"  reuses: {len(states)} training states under {runs / name}, {cached} cached measurements, "
                 f"{kept} kept with the book")
    log = json.loads(runs_log(scale).read_text()) if runs_log(scale).exists() else {}
    last = log.get(page)
    lines.append(f"  last run: {last['wall_seconds'] / 60:.0f} min on {last['date']} ({last['cpu']})" if last
                 else "  last run: none recorded at this scale")
    return lines


def _recipe_cell(st) -> str:
    if st is None:
        return ""
    # plain text with spaces after commas, so a long value wraps inside the column
    params = "; ".join(f"{k} = {str(v).replace(',', ', ')}" for k, v in st["parameters"].items() if k != "scale") or "defaults"
    if st["up_to_date"]:
        how = st["recipe"]["how"]
        return f"{params}; up to date" + (f" (stamped {st['recipe']['when'][:10]})" if how == "stamped" else "")
    return f"{params}; reruns: {len(st['why'])} input(s) changed" if st["recipe"] else f"{params}; no recipe recorded"


def _recipe_line(st: dict) -> str:
    """A page's recipe state in a few words: up to date, or why it reruns (the first reasons)."""
    rec = st.get("recipe")
    params = ", ".join(f"{k}={v!r}" for k, v in st["parameters"].items() if k != "scale") or "defaults"
    if st["up_to_date"]:
        return f"{rec['how']} {rec['when']}, parameters: {params}"
    why = st["why"]
    return f"reruns with {params}: " + "; ".join(why[:3]) + (f"; and {len(why) - 3} more" if len(why) > 3 else "")


def _hours_like(manifest: dict, arch: str):
    """Mean training hours of the zoo models of ``arch`` in ``manifest`` (None if none)."""
    t = [e["train_seconds"] for e in manifest.values() if e["arch"] == arch and e.get("train_seconds")]
    return sum(t) / len(t) / 3600 if t else None


def describe(name: str) -> list:
    """The chapter's parameters: name = default, the comment beside it, and what values it takes."""
    defaults, helps, takes = lic_params.declared(name), lic_params.helps(name), lic_params.choices_of(name)
    return [name] + [f"  {k} = {v!r}" + (f"    # {helps[k]}" if helps.get(k) else "") + f"\n      takes: {takes[k]}"
                     for k, v in defaults.items()]


def recompute_claims(name: str, scale: str = "cpu") -> list:
    """Add the ``claims`` list to a chapter's results file written before the claims contract,
    by the chapter's own rules (the ``claims_for`` its notebook now calls) applied to the numbers
    that file recorded. The file says so (``claims_from``); the chapter's next run replaces both."""
    import pandas as pd

    from . import liao, luo, report, zoo

    res = report.load_results(name, scale)
    claims_csv = pd.read_csv(report.PROJECT / "data" / "papers" / "claims.csv")
    if name == "00_baselines":
        claims = zoo.claims_for(res["bd"], res.get("mean_vs_bmshj"), res.get("train_speed"), claims_csv)
    elif name == "01_liao":
        claims = liao.claims_for(res["rows"], res["lambdas"], report.paper_table("liao_table"))[0]
    elif name == "02_luo":
        claims = luo.claims_for(res["rows"], res["share"], report.paper_table("luo_table1"),
                                report.paper_table("luo_table2"), claims_csv)
    else:
        raise ValueError(f"{name} writes its claims itself; rerun it (`python -m lic.book run {name}`)")
    res["claims"] = claims
    res["claims_from"] = (f"the numbers recorded by the run of {res['environment']['date']}, by the chapter's "
                          f"rules in lic, on {time.strftime('%Y-%m-%d')}; the page itself predates them")
    path = report.RESULTS / name / f"{scale}.json"
    path.write_text(json.dumps(res, indent=1) + "\n")
    return claims


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lic.book", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute chapters with papermill")
    r.add_argument("names", nargs="+", help="chapter names (e.g. 00_baselines) or 'all'")
    r.add_argument("--scale", default="cpu", choices=tuple(SCALES))
    r.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="notebook parameter (value parsed as JSON when possible); `list` shows them")
    r.add_argument("--dry-run", action="store_true", help="print what would run, train and be reused; run nothing")
    r.add_argument("--force", action="store_true", help="rerun chapters whose page is up to date with its inputs")
    st = sub.add_parser("stamp", help="record the current inputs as an existing page's recipe without executing it")
    st.add_argument("names", nargs="+", help="chapter names or 'all'")
    st.add_argument("--scale", default="cpu", choices=tuple(SCALES))
    b = sub.add_parser("build", help="build the HTML book of one scale")
    b.add_argument("--scale", default="cpu", choices=tuple(SCALES))
    sub.add_parser("list", help="list the chapters and their parameters")
    c = sub.add_parser("claims", help="add claims to a results file written before the claims contract")
    c.add_argument("names", nargs="+")
    c.add_argument("--scale", default="cpu", choices=tuple(SCALES))
    t = sub.add_parser("tidy", help="make executed notebooks pages: drop progress bars, put the findings after the title (run does it itself)")
    t.add_argument("paths", nargs="+")
    k = sub.add_parser("check", help="open every page of the built book in headless Chromium and list problems")
    k.add_argument("--scale", default="cpu", choices=tuple(SCALES))
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for name in chapters():
            print("\n".join(describe(name)))
    elif args.cmd == "claims":
        for name in args.names:
            print(f"{name}: {len(recompute_claims(name, args.scale))} claims written")
    elif args.cmd == "check":
        from .browser import BrowserUnavailable, check_book

        html = book_root(args.scale) / "_build" / "html"
        if not (html / "index.html").exists():
            print(f"error: no built book at {html}; run `python -m lic.book build --scale {args.scale}`", file=sys.stderr)
            return 2
        try:
            found = check_book(html)
        except BrowserUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for page, issues_ in found.items():
            print(f"{page}: {'ok' if not issues_ else ''}")
            for i in issues_:
                print(f"  - {i}")
        return 1 if any(found.values()) else 0
    elif args.cmd == "stamp":
        from . import recipe

        for name in pages() if args.names == ["all"] else args.names:
            page, chapter, _ = resolve(name)
            if not executed_path(page, args.scale).exists():
                if args.names == ["all"]:
                    continue  # a page never executed has nothing to stamp
                print(f"error: no executed page {executed_path(page, args.scale)} to stamp", file=sys.stderr)
                return 2
            rec = recipe.record(executed_path(page, args.scale), chapter, get_scale(args.scale), how="stamped")
            print(f"{name}: recipe stamped ({rec['fingerprint']}, {len(rec['inputs'])} inputs)")
    elif args.cmd == "tidy":
        for path in args.paths:
            print(f"{path}: {tidy(path)} progress outputs removed")
    elif args.cmd == "run":
        try:
            params = lic_params.parse_cli(args.param)
            if args.names == ["all"]:  # every page, each with the parameters it fixes
                todo = [resolve(page, {k: v for k, v in params.items() if k != "width"}) for page in pages()]
            else:
                todo = [resolve(name, params) for name in args.names]
            for _, chapter, ps in todo:  # every page's parameters are checked before the first one runs
                lic_params.check(chapter, {"scale": args.scale, **ps})
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        from . import recipe
        from .lock import Busy

        S = get_scale(args.scale)
        # `run all` replays the book at this scale: a page never executed here (a wider family's, or a
        # chapter new since the book was made) can cost hours of training, so it is named, not started;
        # on a scale with no page at all, every chapter runs (a first build)
        started = any(executed_path(page, args.scale).exists() for page in chapters())
        for name, chapter, ps in todo:
            if (args.names == ["all"] and not executed_path(name, args.scale).exists()
                    and (name not in chapters() or started)):
                print(f"{name}: not executed at this scale; `python -m lic.book run {name} --scale {args.scale}` "
                      f"makes it (`--dry-run` shows what it would train)")
                continue
            st = recipe.status(executed_path(name, args.scale), chapter, S, ps)
            replay = {k: v for k, v in st["parameters"].items() if k != "scale"}
            if args.dry_run:
                from .data import DataUnavailable

                try:
                    print("\n".join(plan(name, args.scale, replay)))
                except DataUnavailable as err:
                    print(f"error: {err}", file=sys.stderr)
                    return 2
                print(f"  recipe: {_recipe_line(st)}")
                continue
            if st["up_to_date"] and not args.force:
                print(f"{name}: up to date ({_recipe_line(st)}); skipped, `--force` reruns it")
                continue
            try:
                run(name, args.scale, replay, announce=f"running {name} at scale {args.scale} -> "
                                                      f"{executed_path(name, args.scale)} ({_recipe_line(st)})")
            except Busy as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
    else:
        build(args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
