"""The claims contract: every chapter's results file carries a ``claims`` list, one entry per
claim of its paper, and the rules that turn numbers into verdicts live here, not in notebooks.

A claim is a dict with :data:`FIELDS`:

- ``id``       stable, e.g. ``yin-flops-bmshj2018-hyperprior``
- ``claim``    one sentence: the paper's claim in our words
- ``paper``    the paper's number as text with units; every number in it must appear in
               ``data/papers/*.csv`` (the papers' numbers are transcribed once, there)
- ``ours``     our number as text with units
- ``verdict``  one of :data:`VERDICTS`
- ``rule``     one sentence: what decided the verdict
- ``section``  the chapter section that shows the evidence
"""
from __future__ import annotations

import re
from pathlib import Path

# chapters whose rows in claims.csv are this book's own (bars for its base models, the study's
# cross-method questions), each counted apart from the papers' claims: {chapter: summary sentence}
OWN = {"00_baselines": "This book's own bars for its base models: {met} of {n} met.",
       "06_synthesis": "The study's cross-method questions (06_synthesis): {met} of {n} hold at this scale.",
       "07_controls": "This book's controls for Liao's pruning (07_controls): {met} of {n} hold at this scale."}
STILL_IMPROVING = "not reproduced at this budget (still improving)"
VERDICTS = ("reproduced", "partly reproduced", "not reproduced", STILL_IMPROVING, "not testable here")
FIELDS = ("id", "claim", "paper", "ours", "verdict", "rule", "section")
PAPERS = Path(__file__).resolve().parents[1] / "data" / "papers"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _paper_numbers(papers=PAPERS) -> set:
    return {n for p in Path(papers).glob("*.csv") for n in _NUMBER.findall(p.read_text())}


def make(id, claim, paper, ours, verdict, rule, section) -> dict:
    """One claim, checked (see :func:`check`)."""
    c = {"id": id, "claim": claim, "paper": paper, "ours": ours, "verdict": verdict, "rule": rule,
         "section": section}
    check([c])
    return c


def check(claims, papers=PAPERS) -> list:
    """Raise ``ValueError`` naming the first malformed claim: a missing or empty field, an unknown
    verdict, a duplicate id, or a ``paper`` value with a number that no paper CSV holds."""
    known, seen = _paper_numbers(papers), set()
    for c in claims:
        name = c.get("id") or "<no id>"
        missing = [f for f in FIELDS if not str(c.get(f) or "").strip()]
        if missing:
            raise ValueError(f"claim {name}: missing {', '.join(missing)} (every claim needs {', '.join(FIELDS)})")
        if c["verdict"] not in VERDICTS:
            raise ValueError(f"claim {name}: unknown verdict {c['verdict']!r}; valid: {', '.join(VERDICTS)}")
        if name in seen:
            raise ValueError(f"claim {name}: the id is used twice")
        seen.add(name)
        stray = [n for n in _NUMBER.findall(c["paper"]) if n not in known]
        if stray:
            raise ValueError(f"claim {name}: paper value {c['paper']!r} has {', '.join(stray)}, which is in no "
                             f"table of {papers}: transcribe the paper's number there first")
    return list(claims)


def share(n_met: int, n: int) -> str:
    """All of ``n`` cases meet the bar → reproduced; some → partly; none → not; no cases →
    not testable here."""
    if n == 0:
        return "not testable here"
    return "reproduced" if n_met == n else "partly reproduced" if n_met else "not reproduced"


def table(claims):
    """The claims as the table a chapter page shows: claim, paper, ours, verdict, rule."""
    import pandas as pd

    return pd.DataFrame(list(claims))[["claim", "paper", "ours", "verdict", "rule"]]


def summary(claims) -> str:
    """One line: "k of n claims reproduced, … partly, … not, … not testable here"."""
    n = count(claims)
    still = f" ({n[STILL_IMPROVING]} more at this budget, still improving)" if n[STILL_IMPROVING] else ""
    return (f"{n['reproduced']} of {len(claims)} claims reproduced, {n['partly reproduced']} partly, "
            f"{n['not reproduced']} not{still}, {n['not testable here']} not testable here")


def count(claims) -> dict:
    """{verdict: how many}, in :data:`VERDICTS` order."""
    return {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}


COLOURS = {"reproduced": "#1a7f37", "partly reproduced": "#9a6700", "not reproduced": "#cf222e",
           STILL_IMPROVING: "#bc4c00", "not testable here": "#57606a", "not yet reproduced": "#57606a"}


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def verdict_html(verdict: str) -> str:
    """A verdict as the book shows it: bold, in its colour."""
    return f"<span style=\"color:{COLOURS[verdict]}\">**{verdict}**</span>"


def findings(claims, scale: str) -> str:
    """The block a chapter page opens with (MyST markdown): its claims' summary line and one row
    per claim — the claim, the paper's number, ours, the verdict; rules and evidence are in the
    chapter's "Paper vs ours" section and on the claims ledger page."""
    check(claims)
    rows = [f"| {_cell(c['claim'])} | {_cell(c['paper'])} | {_cell(c['ours'])} | {verdict_html(c['verdict'])} |"
            for c in claims]
    return "\n".join([f":::{{admonition}} Findings at `{scale}` scale", ":class: tip", "",
                      f"**{summary(claims)}.** Each verdict's rule and its evidence are in the sections below "
                      "and on the {doc}`claims ledger <claims>`.", "",
                      "| claim | paper | ours | verdict |", "|---|---|---|---|", *rows, ":::"])


def at_least(ours: float, paper: float, tol: float = 0.1) -> str:
    """A "× faster / × fewer" claim: ``ours`` within ``tol`` (relative) of the paper's factor or
    above → reproduced; at least half of the paper's gain (1 + (paper − 1)/2) → partly; else not."""
    if ours >= (1 - tol) * paper:
        return "reproduced"
    return "partly reproduced" if ours >= 1 + (paper - 1) / 2 else "not reproduced"


AT_LEAST_RULE = ("within {tol:.0%} of the paper's {paper:.2f}× or above; at least half its gain "
                 "({half:.2f}×) is partly")


def at_least_rule(paper: float, tol: float = 0.1) -> str:
    return AT_LEAST_RULE.format(tol=tol, paper=paper, half=1 + (paper - 1) / 2)


def still_improving(steps, values, higher_is_better=True, tail=0.2, k=2.0, first_step=None) -> dict:
    """Whether a learning curve still improves over its last ``tail`` (a fifth) beyond its noise.

    A least-squares line through the points of the last fifth of the steps (at least three); the
    gain it predicts over that stretch must exceed ``k`` times the standard error of that predicted
    gain (from the residuals' spread), in the better direction. Decided on validation curves,
    never test ones. ``first_step``: where the run began when only its later points carry the
    value (a curve continued after validation evaluation was added); the last fifth is of the
    whole run. Returns {"improving", "gain", "se", "points"}; fewer than three points in the tail
    cannot decide (``improving`` None)."""
    import numpy as np

    s, v = np.asarray(steps, float), np.asarray(values, float)
    keep = np.isfinite(v)
    s, v = s[keep], v[keep]
    if len(s) < 3:
        return {"improving": None, "gain": float("nan"), "se": float("nan"), "points": int(len(s))}
    first = s.min() if first_step is None else min(float(first_step), s.min())
    start = s.max() - tail * (s.max() - first)
    m = s >= start
    s, v = s[m], v[m]
    if len(s) < 3:
        return {"improving": None, "gain": float("nan"), "se": float("nan"), "points": int(len(s))}
    slope, icept = np.polyfit(s, v, 1)
    resid = v - (slope * s + icept)
    sxx = ((s - s.mean()) ** 2).sum()
    se_slope = np.sqrt((resid ** 2).sum() / (len(s) - 2) / sxx) if sxx > 0 else float("inf")
    span = s.max() - s.min()
    gain = slope * span * (1 if higher_is_better else -1)
    se = se_slope * span
    return {"improving": bool(gain > k * se), "gain": float(gain), "se": float(se), "points": int(len(s))}


def qualified(verdict: str, improving) -> str:
    """A "not reproduced" verdict of a method whose validation curve still improves becomes
    "not reproduced at this budget (still improving)"; other verdicts are unchanged."""
    return STILL_IMPROVING if verdict == "not reproduced" and improving else verdict
