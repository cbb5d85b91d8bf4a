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

VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "not testable here")
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


def count(claims) -> dict:
    """{verdict: how many}, in :data:`VERDICTS` order."""
    return {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
