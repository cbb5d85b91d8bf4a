"""Every chapter at smoke scale through papermill, asserting on the results file it writes, and
the smoke book built with -W (warnings are errors)."""
import json
import math
import shutil
import statistics

import pytest

from lic import book, evaluate, report
from nbtools import is_clean

pytestmark = pytest.mark.slow
CHAPTERS = book.chapters()


def test_source_notebooks_are_clean_and_parameterized():
    assert CHAPTERS, "no chapter notebooks found"
    for name in CHAPTERS:
        assert is_clean(book.NOTEBOOKS / f"{name}.ipynb"), f"{name}: outputs or no 'parameters' cell"


# CI's minutes: latency on one image and a shorter throughput run (smoke timings decide nothing);
# 03 on its two architectures without a context model: CompressAI's autoregressive decoder (one
# rANS call per latent position) took most of 03's and 06's smoke minutes, and mbt2018's gates
# are covered by test_yin's round trips. Passing them exercises the parameters a rerun would pass.
SMOKE_PARAMETERS = {"00_baselines": {"timed_images": 1, "speed_steps": 10},
                    "03_yin": {"timed_images": 1, "archs": "bmshj2018-hyperprior,mbt2018-mean"},
                    "04_yu": {"timed_images": 1}, "05_tao": {"timed_images": 1},
                    "06_synthesis": {"timed_images": 1, "width_check": 1},
                    # 07 at one ratio: its points are also measured and deployed by 06's smoke run
                    "07_controls": {"timed_images": 1, "runtimes": "eager", "ratios": "0.55"}}


@pytest.fixture(scope="module")
def executed():
    """Run every chapter once at smoke scale (module scope: the book test reuses the outputs)."""
    shutil.rmtree(book.kept_measurements("smoke"), ignore_errors=True)  # what these runs keep, tested below
    for name in CHAPTERS:
        book.run(name, "smoke", parameters=SMOKE_PARAMETERS.get(name), progress=False)
    return {name: report.load_results(name, "smoke") for name in CHAPTERS}


WIDE_PAGE = ("01_liao-N128", {"ratios": "0.33,0.55", "criteria": "activation range"})  # as its cpu page runs


@pytest.fixture(scope="module")
def wide(executed):
    """01 on the wider family, its own page (after the scale's own: it sets itself beside it)."""
    page, params = WIDE_PAGE
    book.run(page, "smoke", parameters=params, progress=False)
    return report.load_results("01_liao", "smoke-N128")


def test_a_chapter_on_a_wider_family_makes_its_own_page_models_and_results(wide, executed):
    from lic import points
    from lic.scales import get_scale

    smoke, wider = get_scale("smoke"), get_scale("smoke").at_width("N128")
    assert wide["scale"] == "smoke-N128" and executed["01_liao"]["scale"] == "smoke"  # the scale's own results stand
    assert book.executed_path("01_liao-N128", "smoke").exists() and book.executed_path("01_liao", "smoke").exists()
    assert {r["ratio"] for r in wide["rows"] if r["criterion"] == "activation range"} == {0.33, 0.55}
    assert points.entries(wider, ["01_liao"]) and points.entries(smoke, ["01_liao"])  # each family's points, apart
    assert points.points_dir("01_liao", wider) != points.points_dir("01_liao", smoke)
    base_params = {r["decoder_params"] for r in executed["01_liao"]["rows"] if r["criterion"] == "unpruned"}
    assert {r["decoder_params"] for r in wide["rows"] if r["criterion"] == "unpruned"}.isdisjoint(base_params)  # wider g_s
    import nbformat

    cells = nbformat.read(book.executed_path("01_liao-N128", "smoke"), as_version=4).cells
    html = "".join(o.get("data", {}).get("text/html", "") for c in cells if c.cell_type == "code" for o in c.outputs)
    assert "At both widths" in html and "(this run)" in html and "smoke page" in html  # beside the scale's own
    from lic import recipe

    assert recipe.status(book.executed_path("01_liao-N128", "smoke"), "01_liao", smoke)["up_to_date"]


def test_baselines_results(executed):
    res = executed["00_baselines"]
    models = res["models"]
    assert res["scale"] == "smoke" and len(models) == 4 * 2  # 4 architectures x 2 smoke lambdas
    for row in models:
        assert row["bpp"] > 0 and row["params"] > 0 and row["macs"] > 0
        assert 0 < row["ms_ssim"] <= 1 and row["psnr"] > 5
        assert row["bpp"] == pytest.approx(row["bpp_est"], rel=0.5)  # real vs estimated rate
    for arch in res["archs"]:  # a larger lambda buys quality with bits
        pts = sorted((r for r in models if r["arch"] == arch), key=lambda r: r["lambda"])
        assert pts[-1]["bpp"] > pts[0]["bpp"] or pts[-1]["psnr"] > pts[0]["psnr"]
    for arch in res["archs"]:  # the timing-noise figure is the spread of one architecture's times
        dec = [r["decode_ms"] for r in models if r["arch"] == arch]
        spread = (max(dec) - min(dec)) / statistics.median(dec) * 100
        assert res["timing_spread_pct"][arch]["decode_ms"] == pytest.approx(spread, abs=0.06)  # rounded to 0.1
        assert {r["steps"] for r in models if r["arch"] == arch} <= {120, 30}  # smoke schedule, from the manifest
    def family(arch):
        pts = sorted((r for r in models if r["arch"] == arch), key=lambda r: r["lambda"])
        return {"bpp": [r["bpp"] for r in pts], "psnr": [r["psnr"] for r in pts]}
    mean_vs = evaluate.bd(family("bmshj2018-hyperprior"), family("mbt2018-mean"))["bd_rate"]  # the second bar
    assert res["mean_vs_bmshj"] is None and math.isnan(mean_vs) or res["mean_vs_bmshj"] == pytest.approx(mean_vs)
    speed = res["train_speed"]  # the throughput measurement the chapter quotes
    assert speed["ratio"] == pytest.approx(speed["plain_fp32_s"] / speed["lic_s"]) and speed["steps"] == SMOKE_PARAMETERS["00_baselines"]["speed_steps"]
    assert speed["channels_last"]  # bmshj2018-hyperprior is not a cheng2020 model
    assert speed["lic_s"] == next(r["s_per_step"] for r in speed["loops"] if r["loop"] == speed["auto"])
    assert res["environment"]["cpu"] == speed["cpu"]  # the CPU named beside the figures
    ctx_vs = evaluate.bd(family("mbt2018-mean"), family("mbt2018"))["bd_rate"]  # what the context model buys
    assert res["ctx_vs_mean"] is None and math.isnan(ctx_vs) or res["ctx_vs_mean"] == pytest.approx(ctx_vs)
    for codec in ("jpeg", "webp"):
        bpps = [p["bpp"] for p in res["classical"][codec]]
        assert bpps == sorted(bpps)
    assert {r["anchor"] for r in res["bd"]} >= {"WebP (Pillow, here)"}
    bar = res["quality_bar"]  # the number behind the chapter's "met / not met"
    ours = [r["BD-rate %"] for r in res["bd"] if r["arch"] == bar["arch"] and r["anchor"] == bar["anchor"]]
    assert bar["anchor"] == "WebP (Pillow, here)" and len(ours) == 1
    if bar["bd_rate"] is None:  # curves overlap too little for a BD-rate
        assert ours[0] is None or math.isnan(ours[0])
    else:
        assert ours[0] == pytest.approx(bar["bd_rate"])


def test_liao_results(executed):
    res = executed["01_liao"]
    rows = res["rows"]
    for lam in res["lambdas"]:
        mine = [r for r in rows if r["lambda"] == lam]
        ref = next(r for r in mine if r["criterion"] == "unpruned")
        for name in res["criteria"]:
            sweep = sorted((r for r in mine if r["criterion"] == name), key=lambda r: r["ratio"])
            assert [r["ratio"] for r in sweep] == sorted(res["ratios"])
            params = [ref["decoder_params"]] + [r["decoder_params"] for r in sweep]
            assert all(a > b for a, b in zip(params, params[1:])), "parameters strictly decrease with r"
            macs = [ref["macs_384x256"]] + [r["macs_384x256"] for r in sweep]
            assert all(a > b for a, b in zip(macs, macs[1:]))
            for r in sweep:  # only g_s was fine-tuned: the bitstream and its rate are unchanged
                assert r["bpp"] == pytest.approx(ref["bpp"], abs=1e-9)
                assert abs(r["removed"] - r["ratio"]) < 0.05
    from lic import claims

    claims.check(res["claims"])
    assert {c["id"] for c in res["claims"]} == {"liao-quality", "liao-criterion", "liao-size", "liao-flops", "liao-time"}
    assert all(r["decode_ms"] > 0 and r["gs_seconds"] > 0 for r in rows)  # every model timed, in one interleaved run


def test_luo_results(executed):
    res = executed["02_luo"]
    rows = res["rows"]
    variants = {"original", "ERHP", "uniform", "half", "original + training"}
    for arch in res["archs"]:
        for lam in res["lambdas"]:
            mine = {r["variant"]: r for r in rows if r["arch"] == arch and r["lambda"] == lam}
            assert variants <= set(mine) and any(v.startswith("ERHP (β=") for v in mine)
            orig, erhp = mine["original"], mine["ERHP"]
            assert erhp["hyper_params"] < orig["hyper_params"] and erhp["params"] < orig["params"]
            assert mine["original + training"]["params"] == orig["params"]
            assert abs(mine["uniform"]["hyper_params"] / erhp["hyper_params"] - 1) < 0.1  # same size
            for r in mine.values():
                assert r["bpp_y"] + r["bpp_z"] == pytest.approx(r["bpp"])
                if arch != "cheng2020-attn":  # frozen main path, no context model: same image
                    assert r["psnr"] == pytest.approx(orig["psnr"], abs=1e-9)
    assert {row["arch"] for row in res["table1"] if row.get("bpp_erhp (ours)") is not None} == set(res["archs"])
    from lic import claims

    claims.check(res["claims"])
    assert {c["id"] for c in res["claims"]} == {"luo-hyper-share", "luo-z-bits", "luo-size", "luo-rd", "luo-uniform"}
    assert all(r["decode_ms"] > 0 and "decode_spread_pct" in r for r in res["rows"])  # timed together
    per_arch = {r["arch"]: r for r in res["per_arch"]}
    assert set(per_arch) == set(res["archs"])
    for arch, r in per_arch.items():  # "k of n" counts over this architecture's λ only
        assert r["ERHP ≤ uniform"].endswith(f"of {len(res['lambdas'])}")
        # the chapter says "the same model" exactly where the uniform and half widths agree
        same = all(u["widths"] == h["widths"] for lam in res["lambdas"]
                   for u in rows if u["arch"] == arch and u["lambda"] == lam and u["variant"] == "uniform"
                   for h in rows if h["arch"] == arch and h["lambda"] == lam and h["variant"] == "half")
        assert same == (arch in res["uniform_is_half"])


def test_yin_results(executed):
    from lic import claims, yin

    res = executed["03_yin"]
    rows, lo_hi = res["rows"], res["lambda_range"]
    for arch in res["archs"]:
        for lam in {r["lambda"] for r in rows}:
            mine = {r["model"]: r for r in rows if r["arch"] == arch and r["lambda"] == lam}
            ref = mine.pop("zoo (one per λ)")
            assert set(mine) == set(yin.VARIANTS)  # smoke runs every variant
            for v, r in mine.items():
                assert r["psnr_drop_pct"] == pytest.approx(100 * (ref["psnr"] - r["psnr"]) / ref["psnr"])
                assert r["flop_reduction"] == pytest.approx(ref["macs"] / r["macs"])
            assert mine["ecg+bm"]["gate_macs"] > 0 and mine["bm"]["gate_macs"] == 0
        for v in yin.VARIANTS:  # the continuous-rate sweep covers the trained range
            lams = sorted(r["lambda"] for r in res["sweep"] if r["arch"] == arch and r["model"] == v)
            assert lams[0] == pytest.approx(lo_hi[0]) and lams[-1] == pytest.approx(lo_hi[1]) and len(lams) == 4
    for r in res["storage"]:
        assert r["saving_pct"] == pytest.approx(100 * (1 - r["variable_bytes"] / r["fixed_bytes"]))
    assert {(r["arch"], r["model"]) for r in res["latency"]} == {(a, v) for a in res["archs"] for v in yin.VARIANTS}
    for r in res["latency"]:  # stage by stage through the λ view: g_s is timed; no serial loop in these two
        assert r["g_s speed-up"] > 0 and r["loop share of decode (%)"] == r["loop share of zoo decode (%)"] == 0
    assert res["budget_curve"][0]["steps"] == res["steps"] and res["budget_curve"][0]["model"].endswith("s0.50")
    assert all(0 <= r["closed"] <= 1 for r in res["sparsity"])
    trade = res["tradeoff"]  # BM alone, then ECG + BM at each target sparsity, ascending
    assert [(r["model"], r["target sparsity"]) for r in trade] == [("bm", 0.0), ("ecg+bm", 0.25), ("ecg+bm", 0.5)]
    assert trade[0]["closed (mean)"] == 0 and all(0 <= r["closed (mean)"] <= 1 for r in trade)
    assert all(r["FLOP reduction min (×)"] <= r["FLOP reduction (×)"] <= r["FLOP reduction max (×)"] for r in trade)
    main = {(r["arch"], r["model"]): r for r in res["bd"]}  # the α_t = 0.5 model is the chapter's ECG + BM
    bd_05 = main[res["tradeoff_arch"], "ecg+bm"]["BD-rate vs zoo (%)"]
    mine = trade[2]["BD-rate vs zoo (%)"]  # None where the curves overlap too little (JSON has no NaN)
    assert (mine is None and bd_05 is None) or mine == pytest.approx(bd_05)
    claims.check(res["claims"])
    assert {c["id"] for c in res["claims"]} == {"yin-flops", "yin-psnr", "yin-storage", "yin-sparsity",
                                               "yin-continuous"}


def test_yu_results(executed):
    from lic import claims, yu

    res = executed["04_yu"]
    t1, t2 = res["table1"], res["table2"]
    assert [r["pruned"] for r in t1] == ["unpruned", "E", "D", "E+D", yu.DECODER_ONLY] and len(t2) == 8
    rnn = {r["pruned"]: r for r in t1}
    assert rnn[yu.DECODER_ONLY]["bytes"] == rnn["unpruned"]["bytes"]  # the encoder kept its own decoder
    for r in t1 + t2:
        assert 0 < r["ssim"] <= 1 and r["bytes"] > 0 and r["total_s"] > 0
        assert r["bytes"] == pytest.approx(r["bpp"] * 192 * 256 / 8)  # smoke test images: 192x256
    h = {r["pruned"]: r for r in t2}
    assert h["G"]["bytes"] == h["unpruned"]["bytes"]  # the HiFiC generator takes no part in encoding
    sw = res["sweep"]
    assert {(r["codec"], r["component"]) for r in sw} == {("rnn", "E"), ("rnn", "D"), ("hific", "E"), ("hific", "G"),
                                                           ("hific", "P")}
    assert res["eager"]["rnn_uncalibrated"]["residual_zero_fraction"] == 1.0
    assert "ConvTranspose" in res["eager"]["hific_default"]["error"]
    assert res["dynamic_touched"] == {"rnn": [], "hific": []}
    q = res["quantization"]
    assert {r["kind"] for r in q} == {"compressai", "rnn", "hific"} and all(r["MB int8"] < r["MB float"] for r in q)
    assert all(c["encode_threads"] != c["decode_threads"] for c in res["thread_checks"])
    assert {r["variant"] for r in q if r["kind"] == "hific"} == {"int8", "int8, latent layers float"}
    assert {"g_a.0", "g_s.0", "h_s.0"} <= {r["layer"] for r in res["int8_layers"]}
    for r in res["storage"]:
        assert r["fp16_bytes"] < r["fp32_bytes"]
    nncf = res["nncf"]  # the NNCF decoders: every architecture, λ and variant; the f32 encoder's bitstream
    assert {(r["arch"], r["variant"]) for r in nncf} == {(a, v) for a in yu.NNCF_ARCHS for v in (yu.NNCF_F32,) + yu.NNCF_VARIANTS}
    for r in nncf:
        assert r["bpp"] == pytest.approx(r["bpp_float"], rel=0.02) and r["psnr"] > 5 and r["decode_ms"] > 0
    assert {(r["arch"], r["variant"]) for r in res["nncf_bd"]} == {(r["arch"], r["variant"]) for r in nncf}
    n_lam = len({r["lambda"] for r in nncf})
    assert len(res["points"]) == 2 * n_lam + len(yu.NNCF_ARCHS) * len(yu.NNCF_VARIANTS) * n_lam  # torch.ao's and NNCF's
    st = {(r["codec"], r["model"]): r for r in res["storage"]}
    for c in yu.CODECS:
        full = "+".join(yu.components(c))
        assert st[c, f"{full} pruned"]["fp32_bytes"] == st[c, "unpruned"]["fp32_bytes"]
        assert st[c, f"{full} pruned"]["sparse_fp16_zlib_bytes"] < st[c, "unpruned"]["sparse_fp16_zlib_bytes"]
    for r in res["finetune"]:
        assert r["still sparse"] == pytest.approx(res["ratio"], abs=0.01)  # fine-tuning kept the zeros
    claims.check(res["claims"])
    assert {c["id"] for c in res["claims"]} == {"yu-rnn-quality", "yu-rnn-size", "yu-hific-generator", "yu-hific-size",
                                               "yu-rnn-time", "yu-hific-time", "yu-rnn-int8-zero", "yu-hific-int8",
                                               "yu-dynamic"}


def test_tao_results(executed):
    from lic import claims

    res = executed["05_tao"]
    levels, lams = res["levels"], res["lambdas"]
    methods = {"C5", "C4", "C3", "C2", "C1", "C5 tiled", "JUMC true", "JUMC pred", "picture-level pred"}
    assert {r["method"] for r in levels} == methods and {r["lambda"] for r in levels} == set(lams)
    for r in levels:
        shares = [r[f"share_C{i}"] for i in range(1, 6)]
        assert sum(shares) == pytest.approx(1) and r["bpp"] > 0 and r["decode_ms"] > 0
        if r["method"] in ("C1", "C2", "C3", "C4", "C5"):  # a uniform row runs one capacity
            assert shares[int(r["method"][1]) - 1] == pytest.approx(1)
    for lam in lams:  # narrower uniform capacities need fewer MACs; the tiles do the same MACs as C5
        m = {r["method"]: r["macs"] for r in levels if r["lambda"] == lam}
        assert m["C1"] < m["C2"] < m["C3"] < m["C4"] < m["C5"] == pytest.approx(m["C5 tiled"])
    t3 = {r["method"]: r for r in res["table3"]}
    assert t3["C5"]["BD-rate (%)"] == 0 and t3["C5"]["codec speed-up (%)"] == pytest.approx(0)
    assert res["exact_full_map"] < 1e-4  # a full-capacity map is the dense supernet
    assert {r["agent"] for r in res["table6"]} == {"teacher", "teacher (routing head only)", "teacher (ΔCost head only)",
                                                  "teacher (low-res input)", "student", "student (no KD)",
                                                  "student (low-res input)"}
    assert all(0 <= r["accuracy"] <= 1 and r["degradation"] <= 1 - r["accuracy"] + 1e-9 for r in res["table6"])
    assert {r["input"] for r in res["table5"]} == {"256x256", "128x128"}
    eps = {r["ε"] for r in res["eps_sweep"]}
    assert res["epsilon"] in eps
    macs = [r["MACs vs C5 (%)"] for r in sorted(res["eps_sweep"], key=lambda r: r["ε"])]
    assert macs == sorted(macs, reverse=True)  # a larger tolerance never asks for wider blocks
    claims.check(res["claims"])
    assert {"tao-jumc-true", "tao-jumc-pred", "tao-uniform", "tao-exact", "tao-headline"} <= {c["id"] for c in res["claims"]}
    bc = res["budget_curve"]  # the supernet at the main λ, not continued at smoke: one budget
    assert res["budget_lambda"] in lams and [r["steps"] for r in bc] == [res["slim_steps"]]
    assert {"C5 vs zoo (%)", "C1 vs C5 (%)", "JUMC true vs C5 (%)"} <= set(bc[0])


def test_controls_results(executed):
    """07_controls: at Liao's two λ and each ratio, Liao's pruned decoder beside the same narrow g_s
    trained without pruning (scratch where asked, distilled and mask-decayed at each budget), one
    architecture (the same decode MACs), and the three questions decided."""
    from lic import controls

    res = executed["07_controls"]
    assert book.chapters()[-1] == "06_synthesis"  # 06 runs after 07: it reads 07's points
    t = res["table"]
    lams, ratios = set(res["lambdas"]), set(res["ratios"])
    assert len(lams) == 2 and ratios == {0.55} and res["scratch_ratios"] == [0.55] and res["budgets"] == [1, 10]
    got = {(r["method"], r["λ"], r["Liao's r"], r["training steps"]) for r in t}
    steps = res["finetune_steps"]
    for lam in lams:
        for r in ratios:
            assert (controls.LIAO, lam, r, steps) in got
            for b in res["budgets"]:
                assert ("distilled", lam, r, b * steps) in got and (controls.DECAYED, lam, r, b * steps) in got
        assert any(m == "scratch" and x == lam and q == 0.55 and n > steps for m, x, q, n in got)  # the zoo's schedule
    for r in ratios:  # one architecture per ratio: every decoder at Liao's decode MACs
        macs = {round(x["decode MACs (G)"], 9) for x in t if x["Liao's r"] == r}
        assert len(macs) == 1, (r, macs)
    assert [c["id"] for c in res["claims"]] == ["controls-scratch", "controls-distilled", "controls-mask-decay"]
    from lic.claims import VERDICTS

    # smoke decoders often fall off the zoo's PSNR range (no Δrate): such a question is "not testable here"
    for c in res["claims"]:
        assert c["verdict"] in VERDICTS and (c["verdict"] == "not testable here") == c["ours"].startswith("no "), c


def test_synthesis_results(executed):
    """06_synthesis measured every point the chapters registered, against the zoo, in one run."""
    res = executed["06_synthesis"]
    rows = {r["name"]: r for r in res["rows"]}
    for ch in ("00_baselines", "01_liao", "02_luo", "03_yin", "04_yu", "05_tao", "07_controls"):
        listed = executed[ch]["points"]
        assert listed and set(listed) <= set(rows), ch  # every registered point was measured
    assert not res["missing"]
    repeats = {r["decode_spread_pct"] >= 0 and r["decode_ms"] > 0 for r in rows.values()}
    assert repeats == {True}
    for r in rows.values():
        if r["method"] == "zoo":  # the anchors: on their own curve, as fast as themselves
            assert r["rate_vs_zoo_pct"] == pytest.approx(0, abs=1e-6) and r["decode_speedup"] == 1
        assert r["macs"] == r["encode_macs"] + r["decode_macs"] > 0
    liao = [r for r in rows.values() if r["chapter"] == "01_liao"]
    zoo = {(r["arch"], r["lambda"]): r for r in rows.values() if r["method"] == "zoo"}
    for r in liao:  # g_s pruned and fine-tuned alone: the encoder's bitstream, so the rate, is the zoo's
        assert r["bpp"] == pytest.approx(zoo[r["arch"], r["lambda"]]["bpp"], rel=1e-9)
        assert r["decode_macs"] < zoo[r["arch"], r["lambda"]]["decode_macs"]
    for r in rows.values():
        if r["chapter"] == "04_yu":  # int8 does the float model's multiply-accumulates, in int8
            assert r["decode_macs"] == zoo[r["arch"], r["lambda"]]["decode_macs"]
    luo_variants = {r["variant"] for r in rows.values() if r["chapter"] == "02_luo"}
    assert {"ERHP", "uniform"} <= luo_variants  # ERHP and its same-size control, each its own method
    assert res["stacked"], "ERHP + Liao was not stacked"
    for a in res["stacked"]:
        s, parts = rows[a["stacked"]], [rows[n] for n in a["parts"]]
        liao_part = next(p for p in parts if p["chapter"] == "01_liao")
        erhp_part = next(p for p in parts if p["chapter"] == "02_luo")
        assert erhp_part["variant"] == "ERHP"  # only ERHP is stacked, not its controls
        assert s["psnr"] == pytest.approx(liao_part["psnr"], abs=1e-6)  # g_s from Liao, y unchanged
        assert s["bpp"] == pytest.approx(erhp_part["bpp"], rel=1e-9)  # the hyper path (the rate) from ERHP
    assert [c["id"] for c in res["claims"]] == ["synth-budget", "synth-macs-to-time", "synth-stack", "synth-runtime",
                                                "synth-int8"]
    # deployed: every zoo model timed in OpenVINO too, decoding what eager decodes; the NNCF points time as they are
    for r in rows.values():
        if r["method"] == "zoo":
            assert r["decode_ms@openvino"] > 0 and r["deploy@openvino"].startswith("ok: PSNR within")
            assert r["deploy_dpsnr_db@openvino"] < 0.05 and r["amdahl_bound"] == pytest.approx(1.0)
            stages = set(r["decode_stages_ms"])  # an autoregressive decode codes y inside its loop
            assert {"g_s", "z decode"} <= stages and ("y decode" in stages or "autoregressive loop" in stages)
        if r["method"] == "int8 g_s (NNCF)":
            assert r["runtime"] == "openvino" and "openvino model already" in r["deploy@openvino"]
        if r["chapter"] == "01_liao":
            assert r["amdahl_bound"] > 1 and r["savings_in"] == "g_s"
    assert {o["runtime"] for o in res["options"]} == {"eager", "openvino"}
    assert [d["decode budget (x zoo eager)"] for d in res["decisions"]][:3] == [1.0, 0.75, 0.5]
    assert {r["model"] for r in res["anatomy"]} >= {"bmshj2018-hyperprior, eager", "bmshj2018-hyperprior, openvino"}
    assert res["widths"] and {r["N"] for r in res["widths"]} == {64}  # width_check=1
    assert all(r["speedup"] == 1.0 for r in res["widths"] if r["geometry"] == "full")
    assert next(c for c in res["claims"] if c["id"] == "synth-stack")["verdict"] != "not testable here"  # stacked above


def test_every_run_streams_its_output_to_a_log(executed):
    for name in executed:
        log = book.output_log(name, "smoke").read_text()
        assert f"wrote data/results/{name}/smoke.json" in log, name  # the notebook's last print, live


def test_the_runs_kept_their_untimed_measurements_with_the_book(executed):
    kept = [json.loads(f.read_text()) for f in book.kept_measurements("smoke").glob("*.json")]
    assert kept, "no measurement kept with the smoke book"  # 02, 03 and 06 measure untimed
    assert {m["key"]["args"]["timed"] for m in kept} == {0}  # 00's timed rows stay in runs/


def test_every_chapter_wrote_its_environment(executed):
    for name, res in executed.items():
        assert res["notebook"] == name and res["environment"]["threads"] >= 1


def test_every_page_with_claims_opens_with_its_findings(executed):
    import nbformat

    from lic.claims import summary

    for name, res in executed.items():
        cells = nbformat.read(book.executed_path(name, "smoke"), as_version=4).cells
        found = [i for i, c in enumerate(cells) if c.metadata.get(book.FINDINGS)]
        if not res.get("claims"):
            assert found == [], name
            continue
        title = next(i for i, c in enumerate(cells) if c.cell_type == "markdown")
        assert found == [title + 1], name  # right after the title, once
        assert summary(res["claims"]) in cells[title + 1].source, name


def test_smoke_book_builds_without_warnings(executed, wide):
    html = book.build("smoke", strict=True)
    assert html.exists()
    assert (html.parent / "book" / "01_liao-N128.html").exists()  # a section under its chapter
    page = (html.parent / "book" / "00_baselines.html").read_text()
    assert "The price of the scale" in page and "img" in page
    ledger = (html.parent / "book" / "claims.html").read_text()  # generated from the results files
    assert "Claims ledger" in ledger and "claims under the contract reproduced" in ledger
    assert "2.03–2.86×" in ledger  # 03_yin's claims (the paper's range over the smoke run's two architectures)
    assert "cross-method questions (06_synthesis):" in ledger and "hold at this scale" in ledger  # 06 counted apart
    runs = json.loads(book.runs_log("smoke").read_text())
    assert runs["00_baselines"]["ok"] and runs["00_baselines"]["wall_seconds"] > 0


def test_every_smoke_page_reads_well_in_a_browser(executed):
    """Every page of the smoke book in headless Chromium at 1280 px: it loads, its images load, its
    internal links resolve, no raw glue or math, no nan/None glued, no table wider than the column,
    the title before any code (lic.browser)."""
    from lic import browser

    try:
        browser.find_browser()
    except browser.BrowserUnavailable as err:
        pytest.skip(str(err))
    html = book.book_root("smoke") / "_build" / "html"
    if not (html / "index.html").exists():
        book.build("smoke", strict=True)
    found = browser.check_book(html)
    assert {"index.html", "book/claims.html", "book/00_baselines.html"} <= set(found)
    bad = {page: issues for page, issues in found.items() if issues}
    assert not bad, "\n".join(f"{p}: {'; '.join(i)}" for p, i in bad.items())

