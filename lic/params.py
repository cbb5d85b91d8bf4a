"""Every chapter's parameters, declared once and checked before any cell runs.

Names and defaults live in each notebook's ``parameters`` cell (read with papermill's
``inspect_notebook``); what a value may be lives here, in :data:`CHECKS`, one table per chapter.
The same call serves the command line (``python -m lic.book run``, before papermill starts) and the
notebook itself (its first code cell), so a typo costs seconds, not a chapter's run:

    p = params.check("03_yin", globals())     # in the notebook: parsed values, or one-line error

One vocabulary across chapters: ``archs`` (comma-separated architectures, or "all"), ``lambdas``
(comma-separated λ of the scale), ``timed_images``, ``seed``, ``data_root``, ``scale``. Old names
are refused with a message naming the new one (:data:`RENAMED`).
"""
from __future__ import annotations

import difflib
import inspect
import math
from pathlib import Path
from types import SimpleNamespace

from .scales import ARCHS, SCALES, WIDTHS, get_scale

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RENAMED = {"arch": "archs", "lmbda": "lambdas", "second_lmbda": "lambdas", "lambda": "lambdas"}
# names a kernel defines by itself (IPython), never parameters
_KERNEL = {"In", "Out", "get_ipython", "exit", "quit", "open"}


class ParamError(ValueError):
    """A chapter parameter that is unknown, renamed, of the wrong type or out of range."""


# ---------------------------------------------------------------------------------------------
# value checks: (name, value, scale) -> parsed value, or ParamError with one line


def _fail(name, value, why):
    raise ParamError(f"parameter {name}={value!r}: {why}")


def integer(lo=None, hi=None, optional=False):
    def check(name, value, scale):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            _fail(name, value, "must be an integer")
        try:
            v = int(value)
        except ValueError:
            _fail(name, value, "must be an integer")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            _fail(name, value, f"must be in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]")
        return v
    check.doc = f"integer ≥ {lo}" if lo is not None and hi is None else f"integer in [{lo}, {hi}]"
    check.doc += " or None" if optional else ""
    return check


def _listed(one, what: str, allow_empty: bool):
    """A check of a comma-separated list whose items each pass ``one``; ``what`` names a valid item."""
    def check(name, value, scale):
        items = [s.strip() for s in str(value).split(",") if s.strip()] if value is not None else []
        if not items and not allow_empty:
            _fail(name, value, f"must name at least one {what.split()[1]}")
        out = []
        for s in items:
            try:
                out.append(one(name, s, scale))
            except ParamError:
                _fail(name, value, f"{s!r} must be {what}")
        return out
    return check


def integers(lo=None):
    """A comma-separated list of integers ≥ ``lo``; returns the list."""
    check = _listed(integer(lo), f"an integer ≥ {lo}", allow_empty=False)
    check.doc = f"comma-separated integers ≥ {lo}"
    return check


def _bound(lo, hi, open_lo, open_hi) -> str:
    """A range as a reader writes it: "≥ 16", "≤ 1", "in (0, 1)"."""
    if hi is None:
        return f"{'>' if open_lo else '≥'} {lo}" if lo is not None else ""
    if lo is None:
        return f"{'<' if open_hi else '≤'} {hi}"
    return f"in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"


def _range_doc(what, lo, hi, open_lo, open_hi) -> str:
    return f"{what} {_bound(lo, hi, open_lo, open_hi)}".rstrip()


def number(lo=None, hi=None, open_lo=False, open_hi=False, optional=False):
    def check(name, value, scale):
        if value is None and optional:
            return None
        try:
            v = float(value)
        except (TypeError, ValueError):
            _fail(name, value, "must be a number")
        bad = ((lo is not None and (v < lo or (open_lo and v == lo)))
               or (hi is not None and (v > hi or (open_hi and v == hi))) or not math.isfinite(v))
        if bad:
            _fail(name, value, f"must be {_bound(lo, hi, open_lo, open_hi)}")
        return v
    check.doc = _range_doc("number", lo, hi, open_lo, open_hi)
    return check


def numbers(lo=None, hi=None, open_lo=False, open_hi=False, allow_empty=False):
    """A comma-separated list of numbers in a range; returns the list."""
    check = _listed(number(lo, hi, open_lo, open_hi), f"a number {_bound(lo, hi, open_lo, open_hi)}", allow_empty)
    check.doc = _range_doc("comma-separated numbers", lo, hi, open_lo, open_hi)
    return check


def names(choices, count=None, all_word="all"):
    """A comma-separated subset of ``choices`` (or ``all_word`` for every one); returns the list."""
    def check(name, value, scale):
        valid = tuple(choices() if callable(choices) else choices)
        if value == all_word and count is None:
            return list(valid)
        if not isinstance(value, str) or not value.strip():
            _fail(name, value, f"must be comma-separated names from: {', '.join(valid)}")
        items = [s.strip() for s in value.split(",")]
        bad = [s for s in items if s not in valid]
        if bad:
            close = difflib.get_close_matches(bad[0], valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(name, value, f"unknown {bad[0]!r}{hint}; valid: {', '.join(valid)}"
                  + (f", or {all_word!r}" if count is None else ""))
        if count is not None and len(items) != count:
            _fail(name, value, f"needs exactly {count} name{'s' if count > 1 else ''}")
        return items

    def doc():
        valid = ", ".join(choices() if callable(choices) else choices)
        return (f"exactly {count} of: {valid}" if count is not None
                else f"comma-separated, from: {valid}; or {all_word!r}")
    check.doc = doc
    return check


def choice(choices):
    """One name from ``choices``; returns it."""
    def check(name, value, scale):
        valid = tuple(choices)
        if value not in valid:
            close = difflib.get_close_matches(str(value), valid, n=1)
            _fail(name, value, f"valid: {', '.join(valid)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return value
    check.doc = "one of: " + ", ".join(choices)
    return check


def lambdas(count=None, at_least=1):
    """Comma-separated λ of the scale (None: the chapter's default); ``count`` exactly, or at least
    ``at_least`` of them."""
    def check(name, value, scale):
        if value is None:
            return None
        items = [s.strip() for s in str(value).split(",") if s.strip()]
        try:
            vals = [float(s) for s in items]
        except ValueError:
            _fail(name, value, "must be comma-separated numbers")
        bad = [v for v in vals if not any(math.isclose(v, lam, rel_tol=1e-9) for lam in scale.lambdas)]
        if bad:
            _fail(name, value, f"λ={bad[0]:g} is not a λ of scale {scale.name!r}; valid: "
                               f"{', '.join(map(str, scale.lambdas))}")
        if count is not None and len(vals) != count:
            _fail(name, value, f"needs exactly {count} λ")
        if len(vals) < at_least:
            _fail(name, value, f"needs at least {at_least} λ (a BD-rate needs {at_least} points per curve)")
        return vals
    check.doc = ((f"exactly {count} " if count else "comma-separated ") + "λ of the scale"
                 + (f", at least {at_least}" if at_least > 1 else "") + ", or None (the chapter's default)")
    return check


def text(optional=True):
    def check(name, value, scale):
        if value is None and optional:
            return None
        if not isinstance(value, str):
            _fail(name, value, "must be text")
        return value
    check.doc = "text" + (" or None" if optional else "")
    return check


def _scale(name, value, scale):
    if value not in SCALES:
        _fail(name, value, f"valid: {', '.join(SCALES)}")
    return value


_scale.doc = "one of: " + ", ".join(SCALES)


def choices_of(chapter: str) -> dict:
    """{name: what values it takes}, for ``lic.book list``."""
    return {n: (fn.doc() if callable(fn.doc) else fn.doc) for n, fn in CHECKS[chapter].items()}


def _criteria():
    from .liao import CRITERIA
    return tuple(CRITERIA)


def _yin_archs():
    from .yin import ARCHS as YIN_ARCHS
    return YIN_ARCHS


def _yin_variants():
    from .yin import VARIANTS
    return VARIANTS


RUNTIMES = ("eager", "openvino")  # lic.deploy.RUNTIMES (not imported: every chapter reads this module)


def _point_chapters():
    from .points import CHAPTERS  # not lic.synthesis: a chapter's recipe would then hold all of it
    return CHAPTERS


COMMON = {"scale": _scale, "data_root": text(), "seed": integer(0)}
CHECKS = {
    "00_baselines": {**COMMON, "archs": names(ARCHS), "timed_images": integer(0), "speed_steps": integer(1)},
    "01_liao": {**COMMON, "width": choice(WIDTHS), "archs": names(ARCHS, count=1), "lambdas": lambdas(count=2),
                "ratios": numbers(0, 1, open_lo=True, open_hi=True), "criteria": names(_criteria),
                "finetune_steps": integer(0, optional=True), "estimate_iters": integer(1, optional=True),
                "estimate_crops": integer(1)},
    "02_luo": {**COMMON, "width": choice(WIDTHS), "archs": names(ARCHS), "lambdas": lambdas(at_least=2), "target": number(0, 1, True, True),
               "strength": number(0, open_lo=True), "other_strengths": numbers(0, open_lo=True, allow_empty=True),
               "resrep_steps": integer(0, optional=True), "finetune_steps": integer(0, optional=True)},
    "03_yin": {**COMMON, "archs": names(_yin_archs), "variants": names(_yin_variants),
               "sweep_points": integer(2, optional=True), "timed_images": integer(1),
               "tradeoff_arch": names(_yin_archs, count=1),
               "tradeoff_targets": numbers(0, 1, open_lo=True, open_hi=True, allow_empty=True)},
    "04_yu": {**COMMON, "ratio": number(0, 1, open_hi=True), "sweep_ratios": numbers(0, 1, open_hi=True),
              "sweep_images": integer(1), "lambdas": lambdas(), "timed_images": integer(1),
              "finetune_steps": integer(0, optional=True)},
    "05_tao": {**COMMON, "lambdas": lambdas(), "epsilon": number(0), "eps_sweep": numbers(0),
               "blocks": numbers(16), "label_crops": integer(8, optional=True),
               "agent_steps": integer(1, optional=True), "timed_images": integer(1)},
    "06_synthesis": {**COMMON, "chapters": names(_point_chapters), "timed_images": integer(1),
                     "rate_budget": number(0, open_lo=True), "runtimes": names(RUNTIMES),
                     "width_check": integer(0, 3)},
    "07_controls": {**COMMON, "archs": names(ARCHS, count=1), "lambdas": lambdas(count=2),
                    "ratios": numbers(0, 1, open_lo=True, open_hi=True),
                    "scratch_ratios": numbers(0, 1, open_lo=True, open_hi=True, allow_empty=True),
                    "budgets": integers(1), "runtimes": names(RUNTIMES), "timed_images": integer(1)},
}


def _scratch_among_ratios(p):
    extra = [r for r in p.scratch_ratios if not any(math.isclose(r, q) for q in p.ratios)]
    if extra:
        raise ParamError(f"parameter scratch_ratios: {extra[0]:g} is not one of ratios "
                         f"({', '.join(f'{q:g}' for q in p.ratios)}); add it to ratios or leave it out")
    if p.scratch_ratios and get_scale(p.scale).pretrained:
        raise ParamError(f"parameter scratch_ratios: the {p.scale} scale's base models are pretrained, so are not "
                         "trained from scratch here; pass -p scratch_ratios= (none) for the other controls")


# checks across a chapter's parameters, after each was checked alone
ACROSS = {"07_controls": _scratch_among_ratios}


# ---------------------------------------------------------------------------------------------


def declared(chapter: str) -> dict:
    """{name: default} of the chapter's ``parameters`` cell (papermill's own reading)."""
    import ast

    import papermill as pm

    path = NOTEBOOKS / f"{chapter}.ipynb"
    if not path.exists():
        raise ParamError(f"unknown chapter {chapter!r}; valid: {', '.join(sorted(CHECKS))}")
    out = {}
    for name, p in pm.inspect_notebook(str(path)).items():
        try:
            out[name] = ast.literal_eval(p["default"])
        except (ValueError, SyntaxError):
            out[name] = p["default"]
    return out


def helps(chapter: str) -> dict:
    """{name: the comment beside it in the parameters cell}."""
    import papermill as pm

    return {n: p["help"] for n, p in pm.inspect_notebook(str(NOTEBOOKS / f"{chapter}.ipynb")).items()}


def _unknown(chapter, name, valid):
    if name in RENAMED and RENAMED[name] in valid:
        return ParamError(f"parameter {name!r} of {chapter} is now called {RENAMED[name]!r} (one name "
                          f"across chapters); use -p {RENAMED[name]}=...")
    close = difflib.get_close_matches(name, valid, n=2)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ParamError(f"{chapter} has no parameter {name!r}{hint} (valid: {', '.join(valid)})")


def check(chapter: str, values: dict, defaults: dict | None = None) -> SimpleNamespace:
    """Check ``values`` (given names; in a notebook, ``globals()``) against the chapter's
    declaration; returns every parameter parsed (lists for comma-separated ones). Raises
    :class:`ParamError` (one line) for an unknown or renamed name or a bad value."""
    if chapter not in CHECKS:
        raise ParamError(f"unknown chapter {chapter!r}; valid: {', '.join(sorted(CHECKS))}")
    spec = CHECKS[chapter]
    if isinstance(values, dict) and "__name__" in values:  # a notebook's globals()
        values = {k: v for k, v in values.items() if not k.startswith("_") and k not in _KERNEL
                  and not (inspect.ismodule(v) or inspect.isclass(v) or callable(v))}
    for name in values:
        if name not in spec:
            raise _unknown(chapter, name, list(spec))
    merged = {**(declared(chapter) if defaults is None else defaults), **values}
    scale = get_scale(_scale("scale", merged.get("scale", "cpu"), None))
    out = SimpleNamespace(**{name: fn(name, merged.get(name), scale) for name, fn in spec.items()})
    if chapter in ACROSS:
        ACROSS[chapter](out)
    return out


def parse_cli(pairs) -> dict:
    """``["k=v", ...]`` from ``-p`` into {k: value}: JSON where it parses (numbers, null, true),
    else text. A pair without ``=`` is a :class:`ParamError`."""
    import json

    out = {}
    for kv in pairs:
        if "=" not in kv:
            raise ParamError(f"-p {kv!r} needs the form NAME=VALUE (e.g. -p archs=mbt2018-mean)")
        k, _, v = kv.partition("=")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out
