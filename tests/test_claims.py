"""The claims contract: malformed claims fail, verdict rules say what they should."""
import pytest

from lic import claims


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
        "reproduced": 1, "partly reproduced": 0, "not reproduced": 1, "not testable here": 0}


def test_the_ledger_is_built_from_the_results_files(tmp_path):
    import json

    (tmp_path / "03_yin").mkdir()
    (tmp_path / "03_yin" / "cpu.json").write_text(json.dumps({"claims": [
        _ok(), _ok(id="yin-flops", claim="FLOPs fall 2.0–2.9×", paper="2.03–2.86×", ours="1.6×",
                   verdict="not reproduced")]}))
    (tmp_path / "01_liao").mkdir()
    (tmp_path / "01_liao" / "cpu.json").write_text(json.dumps({"verdicts": {"quality": "partly reproduced"}}))
    page = claims.ledger("cpu", results_root=tmp_path)
    assert "**1 of 2 claims under the contract reproduced** at `cpu` scale, 0 partly, 1 not" in page
    assert "{doc}`03_yin`" in page and "| FLOPs fall 2.0–2.9× | 2.03–2.86× | 1.6× |" in page
    assert "| quality | partly reproduced |" in page  # recorded before the contract
    assert "not yet reproduced: 02_luo, 04_yu, 05_tao" in page  # from data/papers/claims.csv
    (tmp_path / "03_yin" / "cpu.json").write_text(json.dumps({"claims": [_ok(verdict="works")]}))
    with pytest.raises(ValueError, match="unknown verdict"):
        claims.ledger("cpu", results_root=tmp_path)
