"""The benchmark scripts run end to end at smoke scale (their numbers are measured at cpu scale)."""
import importlib.util

import pytest

from conftest import PROJECT
from lic import report


def _script(name):
    spec = importlib.util.spec_from_file_location(name, PROJECT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_speed_reports_every_loop_and_auto_s_choice(tmp_zoo, capsys):
    r = _script("train_speed").main(["--scale", "smoke", "--steps", "2"])
    assert r["plain_fp32_s"] > 0 and r["lic_s"] > 0 and r["steps"] == 2 and r["repeats"] == 2
    assert [row["loop"] for row in r["loops"]] == ["plain fp32 eager", "fp32", "fp32+channels_last",
                                                   "bf16+channels_last"]
    assert all(len(row["runs"]) == 2 and row["s_per_step"] > 0 for row in r["loops"])
    chosen = [row for row in r["loops"] if row["auto"]]
    assert [row["loop"] for row in chosen] == [r["auto"]] and r["lic_s"] == chosen[0]["s_per_step"]
    assert r["ratio"] == pytest.approx(r["plain_fp32_s"] / r["lic_s"])
    # auto's choice is its calibration's fastest loop, cached for the next run
    assert r["auto"] == min(r["calibration_s_per_step"], key=r["calibration_s_per_step"].get)
    out = capsys.readouterr().out
    assert r["cpu"] in out and f"auto picks {r['auto']}" in out


def test_bf16_quality_trains_both_ways_and_saves_what_it_prints(tmp_zoo, capsys):
    res = _script("bf16_quality").main(["--scale", "smoke", "--steps", "3", "--results", str(tmp_zoo / "results")])
    assert set(res) == {"fp32 eager", "bf16 + channels_last"}
    for r in res.values():
        assert r["bpp"] > 0 and r["psnr"] > 5 and r["rd"] > r["bpp"]
    assert res["fp32 eager"]["psnr"] != res["bf16 + channels_last"]["psnr"]  # the two runs really differ
    states = sorted(p.name for p in (tmp_zoo / "runs").rglob("*.state.pt"))
    assert len(states) == 2 and "fp32" in states[0] + states[1] and "bf16" in states[0] + states[1]
    assert "bf16 vs fp32" in capsys.readouterr().out
    saved = report.load_results("bench_bf16_quality", "smoke", root=tmp_zoo / "results")  # what the chapter quotes
    assert saved["steps"] == 3 and saved["runs"]["fp32 eager"]["psnr"] == pytest.approx(res["fp32 eager"]["psnr"])


def test_tiles_times_every_variant_against_the_dense_transform(capsys):
    med = _script("tiles").main(["--scale", "smoke", "--height", "128", "--width", "192", "--blocks", "64",
                                 "--repeats", "1"])
    assert set(med) == {"block 64: C5 tiled", "block 64: C3 tiled", "block 64: random mixed map", "C5 dense", "C3 dense"}
    assert all(v > 0 for v in med.values())
    assert "vs C5 dense" in capsys.readouterr().out


def test_hyper_latents_times_both_sources_in_one_run(capsys):
    r = _script("hyper_latents").main(["--scale", "smoke", "--steps", "1", "--repeats", "2",
                                       "--arch", "bmshj2018-hyperprior"])
    row = r["bmshj2018-hyperprior"]
    assert set(row["runs"]) == {"images", "latents"} and all(len(v) == 2 for v in row["runs"].values())
    assert row["ratio"] == pytest.approx(row["s_per_step"]["images"] / row["s_per_step"]["latents"])
    assert "images / latents" in capsys.readouterr().out
