"""The claims contract: malformed claims fail, verdict rules say what they should."""
import json

import pytest

from lic import claims, ledger


def _ok(**change):
    c = {"id": "yin-psnr", "claim": "the PSNR drop stays below 1 %", "paper": "< 1 %", "ours": "0.4 %",
         "verdict": "reproduced", "rule": "every point below 1 %", "section": "The paper's table"}
    c.update(change)
    return c


def test_a_well_formed_claim_passes():
    assert claims.check([_ok()]) == [_ok()]
    assert claims.make(**_ok())["verdict"] == "reproduced"


@pytest.mark.parametrize("change, message", [
    ({"rule": ""}, "missing rule"),
    ({"section": None}, "missing section"),
    ({"verdict": "mostly"}, "unknown verdict 'mostly'; valid: reproduced, partly reproduced"),
    ({"paper": "2.77×"}, "has 2.77, which is in no table"),  # a number nobody transcribed
])
def test_a_malformed_claim_names_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        claims.check([_ok(**change)])


def test_ids_are_unique():
    with pytest.raises(ValueError, match="used twice"):
        claims.check([_ok(), _ok()])


def test_paper_numbers_come_from_the_papers_csvs(tmp_path):
    (tmp_path / "t.csv").write_text("# a paper\narch,x\na,2.86\n")
    claims.check([_ok(paper="2.86×")], papers=tmp_path)
    with pytest.raises(ValueError, match="2.87"):
        claims.check([_ok(paper="2.87×")], papers=tmp_path)


def test_share_rule_and_counts():
    assert [claims.share(k, 3) for k in (3, 1, 0)] == ["reproduced", "partly reproduced", "not reproduced"]
    assert claims.share(0, 0) == "not testable here"
    assert claims.count([_ok(), _ok(id="b", verdict="not reproduced")]) == {
        "reproduced": 1, "partly reproduced": 0, "not reproduced": 1, claims.STILL_IMPROVING: 0, "not testable here": 0}


def test_the_ledger_is_built_from_the_results_files(tmp_path):
    import json

    (tmp_path / "03_yin").mkdir()
    (tmp_path / "03_yin" / "cpu.json").write_text(json.dumps({"claims": [
        _ok(), _ok(id="yin-flops", claim="FLOPs fall 2.0–2.9×", paper="2.03–2.86×", ours="1.6×",
                   verdict="not reproduced")]}))
    (tmp_path / "01_liao").mkdir()
    (tmp_path / "01_liao" / "cpu.json").write_text(json.dumps({"verdicts": {"quality": "partly reproduced"}}))
    page = ledger.ledger("cpu", results_root=tmp_path)
    assert "**1 of 2 claims under the contract reproduced** at `cpu` scale, 0 partly, 1 not" in page
    assert "{doc}`03_yin`" in page and "| FLOPs fall 2.0–2.9× | 2.03–2.86× | 1.6× |" in page
    assert "| quality | partly reproduced |" in page  # recorded before the contract
    assert "not yet reproduced: 00_baselines, 02_luo, 04_yu, 05_tao, 06_synthesis, 07_controls." in page  # from data/papers/claims.csv
    (tmp_path / "06_synthesis").mkdir()  # the study's own questions are counted apart from the papers' claims
    (tmp_path / "06_synthesis" / "cpu.json").write_text(json.dumps({"claims": [
        _ok(id="synth-stack", paper="Δrate within 0.5 pp of the sum", verdict="not reproduced")]}))
    page = ledger.ledger("cpu", results_root=tmp_path)
    assert "**1 of 2 claims under the contract reproduced**" in page
    assert "The study's cross-method questions (06_synthesis): 0 of 1 hold at this scale." in page
    (tmp_path / "03_yin" / "cpu.json").write_text(json.dumps({"claims": [_ok(verdict="works")]}))
    with pytest.raises(ValueError, match="unknown verdict"):
        ledger.ledger("cpu", results_root=tmp_path)


def test_a_claim_decided_again_on_a_wider_family_stands_beside_its_verdict_and_is_not_counted(tmp_path):
    import json

    (tmp_path / "01_liao").mkdir()
    (tmp_path / "01_liao" / "cpu.json").write_text(json.dumps({"claims": [_ok(id="liao-time", verdict="not reproduced")]}))
    before = ledger.ledger("cpu", results_root=tmp_path)
    (tmp_path / "01_liao" / "cpu-N128.json").write_text(json.dumps({"claims": [_ok(id="liao-time", ours="1.9×")]}))
    page = ledger.ledger("cpu", results_root=tmp_path)
    assert "Decided again on the N128 family ({doc}`01_liao-N128`; not counted above)" in page
    row = next(line for line in page.splitlines() if line.startswith("| ") and "1.9×" in line)
    assert "**reproduced**" in row.split("|")[3] and "**not reproduced**" in row.split("|")[4]
    summary = lambda text: next(line for line in text.splitlines() if line.startswith("**"))  # noqa: E731
    assert summary(page) == summary(before)  # one count per claim


def test_at_least_rule_for_speed_and_flop_factors():
    assert claims.at_least(2.9, 3.17) == "reproduced"          # within 10 %
    assert claims.at_least(2.2, 3.17) == "partly reproduced"   # more than half the gain (2.09×)
    assert claims.at_least(1.5, 3.17) == "not reproduced"
    assert "(2.00×)" in claims.at_least_rule(3.0)


def _liao_rows(drop_main, drop_second, drop_l1):
    rows = []
    for lam, drop in ((0.013, drop_main), (0.0035, drop_second)):
        rows.append({"lambda": lam, "criterion": "unpruned", "ratio": 0.0, "psnr": 31.0, "decoder_params": 1000,
                     "macs_384x256": 900e6, "decode_speedup": 1.0})
        rows.append({"lambda": lam, "criterion": "activation range", "ratio": 0.55, "psnr": 31.0 - drop,
                     "decoder_params": 450, "macs_384x256": 300e6, "decode_speedup": 1.3})
        rows.append({"lambda": lam, "criterion": "L1-norm", "ratio": 0.55, "psnr": 31.0 - drop_l1,
                     "decoder_params": 450, "macs_384x256": 300e6, "decode_speedup": 1.3})
    return rows


def test_liao_claims_follow_the_rules_from_the_papers_table():
    from lic import liao, report

    paper = report.paper_table("liao_table")  # 0.41 dB at r = 0.55, 3618 -> 1141 M, 0.71 -> 0.48 s
    c, facts = liao.claims_for(_liao_rows(0.45, 0.30, 2.0), [0.013, 0.0035], paper)
    v = {x["id"]: x["verdict"] for x in c}
    assert abs(facts["paper_drop"] - 0.41) < 1e-9
    assert v == {"liao-quality": "reproduced", "liao-criterion": "reproduced", "liao-size": "reproduced",
                 "liao-flops": "reproduced", "liao-time": "partly reproduced"}   # 3.0× ≥ 0.9·3.17×; 1.3× between 1.24× and 0.9·1.48×
    v = {x["id"]: x["verdict"] for x in liao.claims_for(_liao_rows(0.60, 0.30, 0.65), [0.013, 0.0035], paper)[0]}
    assert v["liao-quality"] == "partly reproduced" and v["liao-criterion"] == "not reproduced"  # a tie is not a win


def test_baseline_bars_state_a_tie_against_the_other_anchor():
    import pandas as pd

    from lic import zoo

    bars = pd.read_csv(claims.PAPERS / "claims.csv")
    bd = [{"arch": "bmshj2018-hyperprior", "anchor": "WebP (published)", "BD-rate %": -2.8},
          {"arch": "bmshj2018-hyperprior", "anchor": "WebP (Pillow, here)", "BD-rate %": -0.07}]
    c = {x["id"]: x for x in zoo.claims_for(bd, 1.0, {"ratio": 2.0, "auto": "fp32", "cpu": "x"}, bars)}
    assert c["bar-webp"]["verdict"] == "reproduced" and "a tie" in c["bar-webp"]["ours"]
    assert c["bar-mean"]["verdict"] == "not reproduced" and c["bar-train-speed"]["verdict"] == "not reproduced"


def test_committed_results_of_every_run_chapter_carry_valid_claims():
    import json

    for chapter in ("00_baselines", "01_liao", "02_luo", "03_yin"):
        res = json.loads((claims.PAPERS.parent / "results" / chapter / "cpu.json").read_text())
        assert res.get("claims"), f"{chapter} has no claims"
        claims.check(res["claims"])


def _yu_tables(ssim2):
    """Tables 1 and 2 rows as lic.yu.pruned_table writes them: unpruned SSIM 0.6, every row the same
    size and time except Table 2's SSIM, given per row."""
    from lic import yu

    row = lambda pruned, ssim: {"pruned": pruned, "ssim": ssim, "bytes": 1000.0, "total_s": 10.0, "spread_pct": 5.0}
    t1 = [row(yu.label(c), 0.6) for c in yu.combinations("rnn")]
    t2 = [row(yu.label(c), ssim2.get(yu.label(c), 0.6)) for c in yu.combinations("hific")]
    return t1, t2


@pytest.mark.parametrize("ssim2, verdict", [
    ({"G": 0.4, "E+G": 0.4, "G+P": 0.4, "E+G+P": 0.4}, "reproduced"),  # only G costs
    ({"G": 0.4, "E+G": 0.3, "G+P": 0.4, "E+G+P": 0.3, "E": 0.45, "E+P": 0.45}, "partly reproduced"),  # E costs too
    ({"E": 0.45, "E+P": 0.45}, "not reproduced"),  # G costs nothing, E does
])
def test_yu_hific_generator_claim_needs_both_halves(ssim2, verdict):
    """Yu et al.: pruning G costs quality AND pruning E or P does not; ours at cpu lost 0.15 SSIM to E."""
    from lic import report, yu

    t1, t2 = _yu_tables(ssim2)
    eager = {"rnn_uncalibrated": {"residual_zero_fraction": 1.0, "output_unique": 1},
             "rnn_calibrated": {"psnr": 21.0}, "hific_default": {"error": "AssertionError: x"},
             "hific_per_tensor": {"psnr": 21.0}}
    got = yu.claims_for(t1, t2, eager, {"rnn": [], "hific": []}, [],
                        report.paper_table("yu_table1"), report.paper_table("yu_table2"))
    assert {c["id"]: c["verdict"] for c in got}["yu-hific-generator"] == verdict


def test_a_curve_still_improving_is_told_from_a_converged_noisy_one():
    import numpy as np

    from lic.claims import qualified, still_improving

    steps = np.arange(0, 20001, 500)
    rng = np.random.default_rng(0)
    rising = 30 + 2 * (1 - np.exp(-steps / 30000)) + rng.normal(0, 0.01, len(steps))  # far from its plateau
    flat = 32 + rng.normal(0, 0.05, len(steps))  # converged: noise only
    assert still_improving(steps, rising)["improving"] is True
    assert still_improving(steps, flat)["improving"] is False
    assert still_improving(steps, -rising, higher_is_better=False)["improving"] is True  # a loss falling
    assert still_improving(steps[:2], rising[:2])["improving"] is None  # too few points to decide
    assert qualified("not reproduced", True) == "not reproduced at this budget (still improving)"
    assert qualified("not reproduced", False) == "not reproduced" and qualified("reproduced", True) == "reproduced"


def test_the_ledger_prints_each_chapters_budget_beside_the_papers():
    from lic import budget
    from lic.ledger import ledger
    from lic.scales import get_scale

    cpu = get_scale("cpu")
    assert budget.patches(100, {"batch": 8, "crop": 128, "late_crop": 256, "late_frac": 0.15}) == 85 * 8 + 15 * 2
    assert budget.patches(10, {"batch": 2, "crop": 256}) == 20
    tao = budget.ours("05_tao", cpu)
    assert tao["steps"] == cpu.slim_steps and tao["cpu_hours"] > 0  # the committed supernets' manifest
    assert "1.6 M iterations at batch 8" in budget.paper("05_tao")
    page = ledger("cpu")
    assert page.count("**Budget.**") >= 5 and "The paper: not stated [the slides give no training schedule]" in page


def test_a_not_reproduced_verdict_is_qualified_in_the_ledger_when_the_methods_curve_still_improves(tmp_path, monkeypatch):
    import json

    from lic import budget

    (tmp_path / "03_yin").mkdir()
    (tmp_path / "03_yin" / "cpu.json").write_text(json.dumps({"claims": [
        _ok(), _ok(id="yin-flops", claim="FLOPs fall 2.0–2.9×", paper="2.03–2.86×", ours="1.6×", verdict="not reproduced")]}))
    monkeypatch.setattr(budget, "improving", lambda chapter, scale: chapter == "03_yin")
    page = ledger.ledger("cpu", results_root=tmp_path)
    assert claims.verdict_html(claims.STILL_IMPROVING) in page and "holds at our budget only" in page
    assert "1 of 2 claims under the contract reproduced** at `cpu` scale, 0 partly, 0 not (1 more at this budget only: still improving)" in page
    monkeypatch.setattr(budget, "improving", lambda chapter, scale: False)  # converged: the verdict stands
    page = ledger.ledger("cpu", results_root=tmp_path)
    assert claims.STILL_IMPROVING not in page and ", 0 partly, 1 not," in page


def test_convergence_is_told_on_the_validation_rd_cost_of_each_curve(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    from lic import budget
    from lic.scales import get_scale

    monkeypatch.setenv("LIC_ZOO", str(tmp_path))
    S = get_scale("cpu")
    d = tmp_path / "cpu"
    d.mkdir()
    steps = np.arange(2500, 60001, 2500)
    rng = np.random.default_rng(0)
    rising = 30 + 2 * (1 - np.exp(-steps / 60000)) + rng.normal(0, 0.005, len(steps))
    flat = 32 + rng.normal(0, 0.05, len(steps))
    pd.DataFrame({"step": steps, "val_psnr": rising, "val_bpp_est": 0.5}).to_csv(d / "a.curve.csv", index=False)
    pd.DataFrame({"step": steps, "val_psnr": flat, "val_bpp_est": 0.5}).to_csv(d / "b.curve.csv", index=False)
    pd.DataFrame({"step": steps, "test_psnr": rising}).to_csv(d / "c.curve.csv", index=False)  # Kodak only
    (d / "manifest.json").write_text(json.dumps({n: {"curve": f"{n}.curve.csv", "lambda": 0.013} for n in "abc"}))
    got = {r["model"]: r["improving"] for r in budget.convergence("00_baselines", S)}
    assert got == {"a": True, "b": False, "c": None}
    assert budget.improving("00_baselines", S) is True
    line = budget.convergence_line("00_baselines", S)
    assert "still improving at the end of its run: a" in line and "converged (flat within noise): b" in line
    assert "not told for 1 of 3 models: their curves were logged on the test images only" in line
    # R + λD from PSNR: bpp + λ·255²·MSE, per logged λ (a suffix that is no number takes the model's λ)
    row = pd.DataFrame({"val_psnr@0.0035": [30.0], "val_bpp_est@0.0035": [0.2], "val_psnr@C5": [40.0], "val_bpp_est@C5": [1.0]})
    want = ((0.2 + 0.0035 * 255 ** 2 * 1e-3) + (1.0 + 0.013 * 255 ** 2 * 1e-4)) / 2
    assert budget.rd_cost(row, 0.013)[0] == pytest.approx(want)


def test_the_scratch_decoders_curves_are_told_but_qualify_no_control_verdict(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    from lic import budget, ledger
    from lic.scales import get_scale

    monkeypatch.setenv("LIC_ZOO", str(tmp_path))
    S = get_scale("cpu")
    d = tmp_path / "cpu-gs38"  # the zoo's family with a 38-channel g_s trained from scratch
    d.mkdir()
    steps = np.arange(2500, 60001, 2500)
    pd.DataFrame({"step": steps, "val_psnr": 30 + 2 * (1 - np.exp(-steps / 60000)), "val_bpp_est": 0.5}).to_csv(
        d / "m.curve.csv", index=False)
    (d / "manifest.json").write_text(json.dumps({"m": {"curve": "m.curve.csv", "lambda": 0.013}}))
    assert [r["model"] for r in budget.convergence("07_controls", S)] == ["m (g_s width 38)"]
    line = budget.convergence_line("07_controls", S)
    assert "still improving at the end of its run: m (g_s width 38)" in line and "hold at this budget only" not in line
    claims = [_ok(id="controls-scratch", verdict="not reproduced")]
    assert ledger.qualify(claims, "07_controls", "cpu") == claims  # a control still improving could move it either way


def test_the_last_fifth_is_of_the_whole_run_when_validation_began_late():
    import numpy as np

    from lic.claims import still_improving

    steps = np.arange(22500, 40001, 2500)  # validation logged only after a continuation from step 20,000
    rising = 30 + steps / 1e4
    assert still_improving(steps, rising)["points"] == 2  # the last fifth of its own span: two points
    assert still_improving(steps, rising, first_step=0)["points"] == 4 and still_improving(
        steps, rising, first_step=0)["improving"] is True
