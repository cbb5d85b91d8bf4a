"""The claims ledger page (``book/claims.md``): every chapter's claims (:mod:`lic.claims`) beside
the papers' numbers, each paper's training budget beside ours and whether our training still
improved where it stopped (:mod:`lic.budget`), generated when the book is built."""
from __future__ import annotations

import json
from pathlib import Path

from .claims import COLOURS, OWN, PAPERS, STILL_IMPROVING, VERDICTS, _cell, check, qualified, verdict_html


def ledger(scale: str, results_root=None, papers=PAPERS) -> str:
    """The claims ledger page (MyST markdown) of ``scale``, from every chapter's results file:
    one table per paper, and one summary line. Chapters without results show the papers' claims
    from ``data/papers/claims.csv`` as not yet reproduced; results written before the claims
    contract show the verdicts they recorded."""
    import json

    import pandas as pd

    from .report import RESULTS

    root = Path(results_root or RESULTS)
    papers_claims = pd.read_csv(Path(papers) / "claims.csv", comment=None)
    out = ["# Claims ledger", "",
           f"Every claim of the five papers, with our number beside the paper's and the verdict at the "
           f"`{scale}` scale. Generated from the chapters' results files when the book is built, so it "
           "cannot drift from them; each verdict's rule is the chapter's, in `lic`. The first table holds "
           "the bars this book sets its own base models, which every later chapter stands on; the last two, the "
           "study's own cross-method questions and its controls for Liao's pruning (\"reproduced\": the answer "
           "is yes at this scale). They are counted apart from the papers' claims.", ""]
    counted, untestable, before, pending = [], [], [], []
    own = {chapter: [] for chapter in OWN}
    for chapter, grp in papers_claims.groupby("chapter", sort=True):
        path = root / chapter / f"{scale}.json"
        res = json.loads(path.read_text()) if path.exists() else None
        title = grp.paper.iloc[0]
        link = f" ({{doc}}`{chapter}`)" if res is not None else ""
        out += [f"## {title}{link}", ""]
        if res is not None and res.get("claims"):
            check(res["claims"], papers)
            res["claims"] = qualify(res["claims"], chapter, scale)
            if res.get("claims_from"):
                out += [f"Claims computed from {res['claims_from']}.", ""]
            out += ["| claim | paper | ours | verdict | rule |", "|---|---|---|---|---|"]
            for c in res["claims"]:
                out.append(f"| {_cell(c['claim'])} | {_cell(c['paper'])} | {_cell(c['ours'])} | "
                           f"{verdict_html(c['verdict'])} | "
                           f"{_cell(c['rule'])} (section: {_cell(c['section'])}) |")
                own.get(chapter, counted).append(c["verdict"])
                if c["verdict"] == "not testable here":
                    untestable.append(c["claim"])
        elif res is not None:
            out += ["Verdicts this chapter recorded before the claims contract (its rules are in the chapter):", "",
                    "| what | verdict |", "|---|---|"]
            out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in (res.get("verdicts") or {}).items()]
            before.append(chapter)
        else:
            out += ["Not yet reproduced. The paper's claims (the paper's numbers):", "",
                    "| claim | paper | verdict |", "|---|---|---|"]
            for r in grp.itertuples():
                unit = "" if pd.isna(r.unit) else f" {r.unit}"
                out.append(f"| {_cell(r.claim)} | {_cell(r.value)}{unit} | "
                           f"<span style=\"color:{COLOURS['not yet reproduced']}\">not yet reproduced</span> |")
            pending.append(chapter)
        out.append("")
        out += _wider(root, chapter, scale, res)
        budget_line = _budget(chapter, scale, papers)
        if budget_line:
            out += [budget_line, ""]
        converged = _convergence(chapter, scale)
        if converged:
            out += [converged, ""]
    n = {v: counted.count(v) for v in VERDICTS}
    still = f" ({n[STILL_IMPROVING]} more at this budget only: still improving)" if n[STILL_IMPROVING] else ""
    summary = (f"**{n['reproduced']} of {len(counted)} claims under the contract reproduced** at `{scale}` "
               f"scale, {n['partly reproduced']} partly, {n['not reproduced']} not{still}, "
               f"{n['not testable here']} not testable here"
               + (f" ({'; '.join(untestable)})" if untestable else "")
               + (f"; chapters run before the contract, their verdicts shown as recorded: {', '.join(before)}" if before else "")
               + (f"; not yet reproduced: {', '.join(pending)}" if pending else "") + "."
               + "".join(" " + OWN[ch].format(met=v.count("reproduced"), n=len(v)) for ch, v in own.items() if v))
    out.insert(4, summary)
    out.insert(5, "")
    return "\n".join(out) + "\n"


def _wider(root: Path, chapter: str, scale: str, res) -> list:
    """The same claims decided again on a wider family's page (``01_liao-N128``), beside the
    verdict at the scale's own width; not counted in the summary (one count per claim)."""
    from .scales import WIDER

    out = []
    for width in WIDER:
        path = root / chapter / f"{scale}-{width}.json"
        wide = json.loads(path.read_text()).get("claims") if path.exists() else None
        if not wide:
            continue
        own = {c["id"]: c["verdict"] for c in (res or {}).get("claims") or []}
        out += [f"Decided again on the {width} family ({{doc}}`{chapter}-{width}`; not counted above):", "",
                "| claim | ours | verdict | at the scale's own width |", "|---|---|---|---|"]
        out += [f"| {_cell(c['claim'])} | {_cell(c['ours'])} | {verdict_html(c['verdict'])} | "
                f"{verdict_html(own[c['id']]) if c['id'] in own else '–'} |" for c in wide]
        out.append("")
    return out


def _convergence(chapter: str, scale: str) -> str:
    from .budget import convergence_line
    from .scales import get_scale

    return convergence_line(chapter, get_scale(scale))


def qualify(claims, chapter: str, scale: str) -> list:
    """The chapter's claims with every "not reproduced" qualified (:func:`qualified`) when one of
    the learning curves its verdicts rest on still improves at the end of its run
    (:func:`lic.budget.improving`, on the validation images); the rule says so."""
    from .budget import NOT_QUALIFIED, improving
    from .scales import get_scale

    if (chapter in NOT_QUALIFIED or not any(c["verdict"] == "not reproduced" for c in claims)
            or not improving(chapter, get_scale(scale))):
        return list(claims)
    return [{**c, "verdict": qualified(c["verdict"], True), "rule": c["rule"] + "; the method's validation curve "
             "still improves at the end of our run, so this holds at our budget only"} if c["verdict"] == "not reproduced"
            else c for c in claims]


def _budget(chapter: str, scale: str, papers) -> str:
    from .budget import line
    from .scales import get_scale

    return line(chapter, get_scale(scale), papers)
