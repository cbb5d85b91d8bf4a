"""Operating points (lic.points): a stored delta rebuilds the exact model, stacking refuses overlaps,
and a broken point says how to make it again."""
import copy

import pytest
import torch

from lic import liao, points, zoo
from lic.scales import get_scale

S = get_scale("smoke")
ARCH = "bmshj2018-hyperprior"


def seeded_model(seed=0):
    """The start of every point below: the same random model for the same seed (a rebuild recipe)."""
    torch.manual_seed(seed)
    return zoo.build(ARCH, N=16, M=24).eval()


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.setattr(points, "points_dir", lambda chapter, scale: tmp_path / chapter / "points")
    return tmp_path


def _fp16_exact(model):
    with torch.no_grad():  # stored deltas are fp16: make the weights fp16 numbers so equality is exact
        for k, v in model.state_dict().items():
            if v.is_floating_point() and not zoo.is_entropy(k):
                v.copy_(v.half().float())
    return model


def _pruned(base, ratio=0.4, shift=0.01):
    m = copy.deepcopy(base)
    liao.prune_decoder(m, ratio, liao.channel_scores(m, liao.l1_norm))
    with torch.no_grad():
        for p in m.g_s.parameters():
            p.add_(shift)
    return _fp16_exact(m)


def _register(model, base, variant, chapter="01_liao"):
    return points.register(chapter, S, model, method="test", arch=ARCH, lmbda=0.0067, variant=variant, base=base,
                           rebuild="test_points:seeded_model", spec={"seed": 0})


def test_delta_point_rebuilds_the_pruned_model_exactly(where):
    base = _fp16_exact(seeded_model())
    pruned = _pruned(base)
    entry = _register(pruned, base, "r=0.40")
    stored = torch.load(where / "01_liao" / "points" / entry["file"], weights_only=True)["delta"]
    assert stored and all(k.startswith(("g_s.", "entropy_bottleneck.")) for k in stored)  # g_s alone changed
    # the rebuild starts from seeded_model(0), whose fp16 rounding the delta does not carry: compare on g_s
    loaded = points.load(entry, S)
    y = torch.randn(1, 24, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded.g_s(y), pruned.g_s(y))
    assert [m.weight.shape for m in loaded.g_s if hasattr(m, "weight")] == \
        [m.weight.shape for m in pruned.g_s if hasattr(m, "weight")]
    assert points.entries(S, ["01_liao"]) == []  # registered, not yet published
    points.publish("01_liao", S, [entry])
    assert points.entries(S, ["01_liao"]) == [entry]
    other = _register(_pruned(base, ratio=0.2), base, "r=0.20")
    points.publish("01_liao", S, [other])  # a rerun's points replace the last run's, files included
    assert points.entries(S, ["01_liao"]) == [other]
    assert sorted(f.name for f in (where / "01_liao" / "points").glob("*.pt")) == [other["file"]]


def test_a_point_without_a_file_is_its_rebuild(where):
    e = points.register("00_baselines", S, method="zoo", arch=ARCH, lmbda=0.0067, variant="zoo",
                        rebuild="test_points:seeded_model", spec={"seed": 3})
    assert e["file"] is None
    a, b = points.load(e, S), seeded_model(3)
    ref = dict(b.named_parameters())  # update() rebuilt the coder tables; the parameters are the rebuild's
    assert all(torch.equal(v, ref[k]) for k, v in a.named_parameters())


def test_stack_applies_disjoint_deltas_and_refuses_overlaps(where):
    base = _fp16_exact(seeded_model())
    dec = _pruned(base)
    hyper = copy.deepcopy(base)
    with torch.no_grad():
        for p in hyper.h_s.parameters():
            p.add_(0.5)
    a, b = _register(dec, base, "dec"), _register(_fp16_exact(hyper), base, "hyper", chapter="02_luo")
    both = points.stack([a, b], S)
    y, z = torch.randn(1, 24, 4, 4), torch.randn(1, 16, 1, 1)
    with torch.no_grad():
        assert torch.equal(both.g_s(y), dec.g_s(y)) and torch.equal(both.h_s(z), hyper.h_s(z))
    with pytest.raises(points.PointError, match="do not stack"):
        points.stack([a, _register(_pruned(base, shift=0.02), base, "dec2")], S)


def test_broken_points_name_the_fix(where):
    base = seeded_model()
    e = _register(_pruned(base), base, "r=0.40")
    path = where / "01_liao" / "points" / e["file"]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(points.PointError, match=r"corrupt.*python -m lic.book run 01_liao --scale smoke"):
        points.load(e, S)
    path.unlink()
    with pytest.raises(points.PointError, match="does not exist"):
        points.load(e, S)
    with pytest.raises(points.PointError, match="module:function"):
        points.register("01_liao", S, method="m", arch=ARCH, lmbda=0.01, variant="v", rebuild="lic.zoo:nope", spec={})


# ---------------------------------------------------------------------------------------------
# lic.synthesis: the comparisons it prints

def test_rate_at_interpolates_log_bpp_and_refuses_to_extrapolate():
    from lic import synthesis

    curve = {"bpp": [0.2, 0.4, 0.8], "psnr": [28.0, 30.0, 32.0]}
    assert synthesis.rate_at(curve, 30.0) == pytest.approx(0.4)
    assert synthesis.rate_at(curve, 29.0) == pytest.approx((0.2 * 0.4) ** 0.5)  # geometric mean: log-linear
    assert synthesis.rate_at(curve, 27.0) == pytest.approx(0.2 / 2 ** 0.5)  # end segment extended 1 dB
    assert synthesis.rate_at(curve, 26.9) != synthesis.rate_at(curve, 26.9)  # nan farther out
    assert synthesis.rate_at(curve, 33.1) != synthesis.rate_at(curve, 33.1)
    assert synthesis.psnr_at(curve, 0.4) == pytest.approx(30.0)
    assert synthesis.psnr_at(curve, (0.4 * 0.8) ** 0.5) == pytest.approx(31.0)


def test_compare_measures_against_the_zoo_of_the_same_architecture():
    from lic import synthesis

    def row(method, lam, bpp, psnr, dec, macs=100):
        return {"method": method, "arch": "a", "lambda": lam, "bpp": bpp, "psnr": psnr, "decode_ms": dec,
                "encode_ms": 10.0, "decode_macs": macs, "name": f"{method}{lam}",
                "decode_stages_ms": {"y decode": 10.0, "g_s": 40.0},
                "decode_stage_macs": {"h_s": 0, "g_s": macs, "other": 0}}
    zoo = [row("zoo", 1, 0.2, 28.0, 50.0), row("zoo", 2, 0.4, 30.0, 50.0), row("zoo", 3, 0.8, 32.0, 50.0)]
    p = row("m", 2, 0.44, 30.0, 40.0, macs=50)  # 10 % more bits for the zoo's PSNR at λ=2, 1.25x faster
    out = {r["name"]: r for r in synthesis.compare(zoo + [p])}
    assert out["m2"]["rate_vs_zoo_pct"] == pytest.approx(10.0)
    assert out["m2"]["decode_speedup"] == pytest.approx(1.25)
    assert out["m2"]["decode_mac_reduction"] == pytest.approx(2.0)
    assert out["m2"]["amdahl_bound"] == pytest.approx(50 / (10 + 20)) and out["m2"]["savings_in"] == "g_s"
    assert out["zoo2"]["amdahl_bound"] == pytest.approx(1.0) and out["zoo2"]["savings_in"] == "none"
    assert out["zoo2"]["rate_vs_zoo_pct"] == pytest.approx(0.0, abs=1e-9)
    use = synthesis.what_to_use([{"method": "m", "arch": "a", "variant": "v", "BD-rate vs zoo (%)": float("nan"),
                                  "Δrate at equal PSNR (%)": 1.0, "decode speed-up (x)": 1.25, "decode spread (%)": 5.0}],
                                budget=2.0)
    assert use[0]["speed-up % per 1 % rate"] == pytest.approx(25.0)
    assert "on a, m (v) decodes 1.25x" in synthesis.advice(use, 2.0) and "more than the timing spread" in synthesis.advice(use, 2.0)
    assert synthesis.what_to_use([{**use[0], "BD-rate vs zoo (%)": 3.0, "Δrate at equal PSNR (%)": 3.0}], 2.0) == []


def test_what_to_use_holds_a_deployed_family_against_the_zoo_in_the_same_runtime():
    """An NNCF int8 decoder in OpenVINO is 1.70x as fast as the eager zoo, but the zoo in OpenVINO
    f32 is 1.63x: the method buys 1.04x, inside the spread — the rest is the runtime's."""
    from lic import synthesis

    zoo = {"method": synthesis.ZOO, "arch": "a", "variant": "zoo", "runtime": "eager", "BD-rate vs zoo (%)": 0.0,
           "Δrate at equal PSNR (%)": 0.0, "decode speed-up (x)": 1.0, "decode spread (%)": 10.0,
           "decode speed-up (x)@openvino": 1.63, "decode spread (%)@openvino": 20.0, "decode MACs (x fewer)": 1.0,
           "max |ΔPSNR| deployed (dB)@openvino": 0.0, "max |Δbpp| deployed (%)@openvino": 0.0}
    int8 = {"method": "int8", "arch": "a", "variant": "ac", "runtime": "openvino", "BD-rate vs zoo (%)": 1.7,
            "Δrate at equal PSNR (%)": 1.7, "decode speed-up (x)": 1.70, "decode spread (%)": 5.0,
            "decode speed-up (x)@openvino": None}
    liao = {"method": "liao", "arch": "a", "variant": "r", "runtime": "eager", "BD-rate vs zoo (%)": 1.5,
            "Δrate at equal PSNR (%)": 1.5, "decode speed-up (x)": 1.30, "decode spread (%)": 5.0,
            "decode speed-up (x)@openvino": 1.63 * 1.5, "decode spread (%)@openvino": 8.0}
    use = {u["method"]: u for u in synthesis.what_to_use([zoo, int8, liao], 2.0)}
    assert use["int8"]["runtime"] == "openvino" and use["int8"]["decode speed-up (x)"] == pytest.approx(1.70 / 1.63)
    assert use["int8"]["decode spread (%)"] == 20.0  # the larger of the two
    assert use["liao"]["runtime"] == "openvino" and use["liao"]["decode speed-up (x)"] == pytest.approx(1.5)
    text = synthesis.advice(list(use.values()), 2.0)
    assert "liao (r) in openvino decodes 1.50x as fast as the zoo model in openvino" in text
    import pandas as pd

    from lic import claims

    bars = pd.read_csv(claims.PAPERS / "claims.csv")
    budget = {c["id"]: c for c in synthesis.claims_for([zoo, {**int8, "decode MACs (x fewer)": 1.0}], [], bars)}["synth-budget"]
    assert budget["verdict"] == "not reproduced" and "in openvino on a, 1.04×" in budget["ours"]



def test_a_spread_is_that_of_the_speed_up_paired_within_each_repeat():
    """A repeat that slowed every model alike (the second here) widens the spread of the times, not
    that of the ratio within the repeat; a run kept without per-repeat times keeps its own spread."""
    from lic import synthesis

    def row(method, reps, spread):
        return {"method": method, "arch": "a", "lambda": 2, "bpp": 0.4, "psnr": 30.0, "name": method,
                "decode_ms": sorted(reps)[1], "encode_ms": 10.0, "decode_macs": 1, "decode_spread_pct": spread,
                "decode_ms_repeats": reps, "decode_ms_repeats@openvino": [r / 2 for r in reps],
                "decode_spread_pct@openvino": spread}
    zoo, m = row("zoo", [50.0, 80.0, 52.0], 60.0), row("m", [40.0, 64.0, 40.0], 60.0)
    old = {**row("old", [40.0, 64.0, 40.0], 60.0), "decode_ms_repeats": None, "decode_ms_repeats@openvino": None}
    out = {r["name"]: r for r in synthesis.compare([zoo, m, old])}
    assert out["m"]["decode_spread_pct"] == pytest.approx(100 * (1.3 - 1.25) / 1.25)  # ratios 1.25, 1.25, 1.3
    assert out["m"]["decode_spread_pct@openvino"] == pytest.approx(100 * (2.6 - 2.5) / 2.5)
    assert out["m"]["spread_kind"] == "paired" and out["zoo"]["decode_spread_pct"] == 0.0
    assert out["old"]["decode_spread_pct"] == 60.0 and out["old"]["spread_kind"] == "of the times"
    assert "where the timing run kept per-repeat times" in synthesis.spread_text(list(out.values()))


def test_advice_breaks_a_speed_tie_by_rate_and_says_so():
    from lic import synthesis

    def u(method, speed, cost, spread=8.0):
        return {"arch": "a", "method": method, "variant": method, "rate cost (%)": cost,
                "decode speed-up (x)": speed, "decode spread (%)": spread}
    tied = synthesis.advice([u("fast", 1.022, 1.95), u("cheap", 1.020, 0.78)], 2.0)
    assert tied.startswith("on a, cheap decodes 1.02x") and "within the timing spread (8 %)" in tied
    assert "; fast, at 1.02x, is no faster beyond that spread and costs +1.95 %" in tied
    apart = synthesis.advice([u("fast", 1.30, 1.95), u("cheap", 1.02, 0.78)], 2.0)  # 27 % apart: no tie
    assert apart.startswith("on a, fast decodes 1.30x") and "more than the timing spread" in apart
    assert "cheap" not in apart

def test_additivity_text_never_prints_nan():
    from lic import synthesis

    a = {"lambda": 0.0067, "Δrate stacked (%)": float("nan"), "Δrate sum of parts (%)": 1.5,
         "decode speed-up stacked (x)": 1.2, "decode speed-up product of parts (x)": 1.1}
    text = synthesis.additivity_text([a])
    assert "nan" not in text and "n/a (outside the zoo curve) stacked vs +1.50 % summed" in text


def test_synthesis_estimates_its_timing_from_the_zoos_times():
    from lic import synthesis

    entries = [{"arch": "a"}, {"arch": "a"}, {"arch": "b"}, {"arch": "rnn"}]
    secs, unknown = synthesis.timing_seconds(entries, timed=3, repeats=5, image_ms={"a": 500.0, "b": 8000.0})
    assert secs == (2 * 500 + 8000) * 3 * 6 / 1000 and unknown == 1
    both, _ = synthesis.timing_seconds(entries, timed=3, repeats=5, image_ms={"a": 500.0, "b": 8000.0}, runtimes=2)
    assert both == 2 * secs  # every point timed again, deployed


def test_synthesis_times_each_architecture_in_one_run_and_resumes_at_the_next(tmp_path, monkeypatch):
    """06 times the points of one architecture together (every speed-up is against the zoo model of
    the same architecture) and keeps each finished run: a rerun after a kill times only what is
    left, and a changed model is timed again with the rest of its architecture."""
    from lic import synthesis

    calls = []

    def fake_times(group, images, repeats, progress, desc):
        calls.append(sorted(group))
        return {n: {"encode_ms": 1.0 + i, "decode_ms": 2.0 + i, "encode_spread_pct": 0.0, "decode_spread_pct": 0.0,
                    "repeats": repeats} for i, n in enumerate(group)}

    monkeypatch.setattr(synthesis, "interleaved_times", fake_times)
    models = {"p1": seeded_model(0), "p2": seeded_model(1), "p3": seeded_model(2)}
    archs = {"p1": "a", "p3": "b", "p2": "a"}
    images = [("kodim01", None)]
    first = synthesis.timed_per_arch(models, archs, images, repeats=2, cache_dir=tmp_path)
    assert calls == [["p1", "p2"], ["p3"]] and set(first) == {"p1", "p2", "p3"}
    assert all(t["timed_at"].endswith("UTC") for t in first.values())
    calls.clear()
    assert synthesis.timed_per_arch(models, archs, images, repeats=2, cache_dir=tmp_path) == first and calls == []
    with torch.no_grad():
        next(models["p2"].parameters()).add_(1.0)  # retrained: its architecture is timed again, whole
    synthesis.timed_per_arch(models, archs, images, repeats=2, cache_dir=tmp_path)
    assert calls == [["p1", "p2"]]
    calls.clear()
    synthesis.timed_per_arch(models, archs, images, repeats=3, cache_dir=tmp_path)  # other repeats: not the same run
    assert calls == [["p1", "p2"], ["p3"]]
    calls.clear()
    synthesis.timed_per_arch(models, archs, images, repeats=2)  # nowhere to keep runs: every one is timed
    assert len(calls) == 2
    assert "a, 2 points: run ended" in synthesis.timing_runs([{"arch": "a", "name": n, "timed_at": "t"} for n in "xy"])


def test_the_study_questions_are_decided_per_case_with_the_bars_of_claims_csv():
    import pandas as pd

    from lic import claims, synthesis

    bars = pd.read_csv(claims.PAPERS / "claims.csv")

    def fam(arch, speed, macs, bd, spread=5.0):
        return {"method": "m", "arch": arch, "variant": f"v{speed}", "BD-rate vs zoo (%)": bd,
                "Δrate at equal PSNR (%)": bd, "decode speed-up (x)": speed, "decode MACs (x fewer)": macs,
                "decode spread (%)": spread}
    zoo = [{**fam(a, 1.0, 1.0, 0.0), "method": synthesis.ZOO} for a in ("a", "b")]
    add = {"Δrate stacked (%)": 10.3, "Δrate sum of parts (%)": 10.0, "decode speed-up stacked (x)": 1.50,
           "decode speed-up product of parts (x)": 1.52, "decode spread (%)": 5.0}
    fams = zoo + [fam("a", 1.10, 1.1, 1.5),   # within 2 %, 10 % faster with 5 % spread: measurable; keeps all its MAC gain
                  fam("b", 1.03, 1.0, 1.0),   # within 2 % but inside its spread
                  fam("b", 1.30, 2.0, 9.0)]   # fast, too costly; keeps 30 % of its MAC gain
    got = {c["id"]: c for c in synthesis.claims_for(fams, [add, {**add, "Δrate stacked (%)": 11.0}], bars)}
    assert got["synth-budget"]["verdict"] == "partly reproduced" and got["synth-budget"]["ours"].startswith("1 of 2")
    assert got["synth-macs-to-time"]["verdict"] == "partly reproduced"
    assert got["synth-macs-to-time"]["ours"] == ("1 of 2 families; they keep 30–100 % of their bound's gain "
                                                 "(1 of 2 keep 0.5 of the plain MAC gain)")
    # measured stage times bound family b's 2x fewer MACs at 1.5x (its cut lands in a stage of ~2/3 of
    # the decode): 1.30x keeps 60 % of what the cut can buy
    bound = {c["id"]: c for c in synthesis.claims_for(fams[:-1] + [{**fams[-1], "Amdahl bound (x)": 1.5}], [add], bars)}
    assert bound["synth-macs-to-time"]["verdict"] == "reproduced"
    assert "synth-runtime" not in got  # nothing deployed: no runtime claim
    assert got["synth-stack"]["verdict"] == "partly reproduced"  # +0.3 pp holds, +1.0 pp does not
    claims.check(list(got.values()))
    none = {c["id"]: c["verdict"] for c in synthesis.claims_for(zoo, [], bars)}
    assert set(none.values()) == {"not testable here"}


def test_the_runtime_claim_needs_speed_beyond_the_spread_and_the_same_decode():
    import pandas as pd

    from lic import claims, synthesis

    bars = pd.read_csv(claims.PAPERS / "claims.csv")

    def zoo(arch, speed, dpsnr, spread=5.0):
        return {"method": synthesis.ZOO, "arch": arch, "variant": "zoo", "BD-rate vs zoo (%)": 0.0,
                "Δrate at equal PSNR (%)": 0.0, "decode speed-up (x)": 1.0, "decode MACs (x fewer)": 1.0,
                "decode spread (%)": spread, "decode speed-up (x)@openvino": speed, "decode spread (%)@openvino": spread,
                "max |ΔPSNR| deployed (dB)@openvino": dpsnr, "max |Δbpp| deployed (%)@openvino": 0.0}
    c = synthesis.runtime_claim([zoo("a", 1.7, 0.0), zoo("b", 1.03, 0.0), zoo("c", 2.0, 0.3)], bars)
    assert c["verdict"] == "partly reproduced"  # b: inside its spread; c: decodes to something else
    assert c["ours"] == "1 of 3 architectures; the zoo models decode 1.03–2.00× faster"
    assert synthesis.runtime_claim([zoo("a", 1.7, 0.0)], bars)["verdict"] == "reproduced"
    claims.check([c])


def _row(method, variant, rate, eager, ov=None, spread=5.0):
    return {"method": method, "arch": "bmshj2018-hyperprior", "variant": variant, "lambda": 0.013, "bpp": 0.5,
            "psnr": 30.0, "rate_vs_zoo_pct": rate, "psnr_vs_zoo_db": 0.0, "decode_speedup": eager,
            "encode_speedup": 1.0, "decode_mac_reduction": 1.0, "decode_spread_pct": spread,
            "decode_speedup@openvino": float("nan") if ov is None else ov, "decode_spread_pct@openvino": spread}


def test_the_decision_guide_ships_the_cheapest_option_inside_each_decode_budget():
    from lic import synthesis

    rows = [_row("zoo", "zoo", 0.0, 1.0, ov=1.7), _row("Liao", "r=0.55", 5.0, 1.3, ov=2.5),
            _row("Yin", "ecg+bm", 20.0, 1.05)]  # Yin's model does not deploy (no OpenVINO time)
    opts = synthesis.options(rows)
    assert {(o["method"], o["runtime"]) for o in opts} == {("zoo", "eager"), ("zoo", "openvino"), ("Liao", "eager"),
                                                           ("Liao", "openvino"), ("Yin", "eager")}
    pick = {d["decode budget (x zoo eager)"]: d for d in synthesis.decision(opts)}
    assert pick[1.0]["ship"] == "zoo, openvino"  # free, and faster than the zoo eager it ties with on rate
    assert pick[0.75]["ship"] == "zoo, openvino" and pick[0.75]["decode time (x zoo eager)"] == pytest.approx(1 / 1.7)
    assert pick[0.5]["ship"] == "Liao (r=0.55), openvino" and pick[0.5]["rate cost (%)"] == 5.0
    assert synthesis.decision(opts, budgets=(0.3,))[0]["ship"] == "nothing measured meets it"
    front = synthesis.pareto(opts)
    assert [(o["method"], o["runtime"]) for o in front] == [("Liao", "openvino"), ("zoo", "openvino")]
    fig = synthesis.pareto_figure(opts)
    assert len(fig.axes) == 1 and len(fig.axes[0].texts) == 2  # the front's two options, labelled in place


def test_every_method_of_the_synthesis_has_a_colour_of_its_own():
    """report.color_of hashes unknown names, and "zoo"/"Yin (bm)" (and two more pairs) once shared one."""
    from lic import points, synthesis

    colours = [tuple(synthesis.method_color(m)) for m in synthesis.METHODS]
    assert len(set(colours)) == len(colours)
    registered = {e["method"] for e in points.entries(get_scale("cpu"))}
    assert registered <= set(synthesis.METHODS), registered - set(synthesis.METHODS)  # a new method: name its colour


def test_the_anatomy_figure_stacks_each_models_stages_and_labels_the_wide_ones():
    from lic import anatomy

    rows = [{"model": m, "phase": "decode", "stage": s, "ms": ms}
            for m, parts in (("eager", {"y decode": 18.0, "g_s": 147.0, "h_s": 2.6}), ("openvino", {"y decode": 18.0, "g_s": 73.0, "h_s": 2.6}))
            for s, ms in list(parts.items()) + [("total", sum(parts.values()))]]
    fig = anatomy.figure(rows)
    ax = fig.axes[0]
    assert len(ax.patches) == 6 and [t.get_text() for t in ax.get_yticklabels()] == ["eager", "openvino"]
    texts = sorted(t.get_text() for t in ax.texts)  # shares labelled in place (h_s too thin), totals at the ends
    assert texts == ["168 ms", "94 ms", "g_s", "g_s", "y decode", "y decode"]
    widths = {round(p.get_width(), 1) for p in ax.patches}
    assert round(100 * 147.0 / 167.6, 1) in widths  # g_s's share of the eager decode, in %


def test_each_cpu_keeps_its_ratios_and_the_page_reads_them_side_by_side(tmp_path, monkeypatch):
    import json

    from lic import synthesis
    from lic.scales import get_scale

    S = get_scale("smoke")
    fam = {"method": "Liao", "arch": "a", "variant": "r=0.55", "decode speed-up (x)": 1.3, "decode spread (%)": 4.0,
           "decode speed-up (x)@openvino": 2.4, "BD-rate vs zoo (%)": 5.0}
    zoo = {"method": synthesis.ZOO, "arch": "a", "variant": "zoo", "decode speed-up (x)": 1.0,
           "decode speed-up (x)@openvino": 1.8}
    monkeypatch.setattr(synthesis, "cpu_model", lambda: "AMD EPYC (family 25, model 17), AVX512")
    first = synthesis.keep_speedups([zoo, fam], S, root=tmp_path)
    monkeypatch.setattr(synthesis, "cpu_model", lambda: "Intel Xeon (family 6, model 143), AVX512")
    synthesis.keep_speedups([{**fam, "decode speed-up (x)": 1.1}], S, root=tmp_path)
    kept = json.loads(first.read_text())
    assert first.name.startswith("amd-epyc-family-25-model-17-avx512-") and "BD-rate vs zoo (%)" not in kept["families"][1]
    assert not any("_ms" in k for f in kept["families"] for k in f)  # ratios only, never times
    rows = {r["family"]: r for r in synthesis.speedups_by_cpu(S, root=tmp_path)}
    liao = rows["Liao (r=0.55)"]
    assert sorted(v for k, v in liao.items() if "threads" in k) == [1.1, 1.3]
    assert sum("threads" in k for k in rows["zoo (zoo)"]) == 1  # the second CPU kept no deployed zoo


def test_the_synthesis_takes_a_wider_familys_points_with_that_familys_zoo_and_never_mixes_widths(monkeypatch):
    from lic import synthesis, zoo

    def entry(chapter, method, variant, lam=0.025, **meta):
        return {"chapter": chapter, "name": points.slug(method, "bmshj2018-hyperprior", f"{lam:.4f}", variant),
                "method": method, "arch": "bmshj2018-hyperprior", "lambda": lam, "variant": variant,
                "rebuild": "lic.zoo:get", "spec": {"arch": "bmshj2018-hyperprior", "lmbda": lam, "train_missing": False},
                "meta": meta, "file": None, "sha256": None, "bytes": 0}
    index = {("smoke", "00_baselines"): [entry("00_baselines", "zoo", "zoo")],
             ("smoke", "02_luo"): [entry("02_luo", "ERHP (Luo)", "ERHP")],
             ("smoke-N128", "01_liao"): [entry("01_liao", "Liao (decoder pruning)", "r=0.55", ratio=0.55)]}
    monkeypatch.setattr(points, "entries", lambda scale, chs: [e for ch in chs for e in index.get((scale.key, ch), [])])
    monkeypatch.setattr(zoo, "read_manifest", lambda scale: {"bmshj2018-hyperprior-0.0250": {
        "arch": "bmshj2018-hyperprior", "lambda": 0.025}} if scale.key == "smoke-N128" else {})
    found, missing = synthesis.collect(S, ("00_baselines", "01_liao", "02_luo"))
    assert missing == {"01_liao": "python -m lic.book run 01_liao --scale smoke"}  # at the scale's own width
    wide = [e for e in found if e.get("width") == "N128"]
    assert [(e["method"], e["arch"]) for e in wide] == [("zoo", "bmshj2018-hyperprior N128"),
                                                       ("Liao (decoder pruning)", "bmshj2018-hyperprior N128")]
    assert len({e["name"] for e in found}) == len(found) and all(e["name"].endswith("-N128") for e in wide)
    assert synthesis.family_of(wide[1], S).key == "smoke-N128" and synthesis.family_of(found[0], S) == S
    assert synthesis.stack_candidates(found) == []  # ERHP at N64 and Liao at N128 start from different models


def test_across_widths_pairs_each_family_with_its_twin_at_the_other_width():
    from lic import synthesis

    def fam(method, arch, variant, rate, speed):
        return {"method": method, "arch": arch, "variant": variant, "λ": 2, "Δrate at equal PSNR (%)": rate,
                "BD-rate vs zoo (%)": float("nan"), "decode MACs (x fewer)": 1.5, "decode speed-up (x)": speed,
                "decode spread (%)": 10.0}

    fams = [fam("liao", "b N128", "r=0.55", 9.0, 1.8), fam(synthesis.ZOO, "b", "zoo", 0.0, 1.0),
            fam("liao", "b", "r=0.55", 14.0, 1.5), fam("liao", "b", "r=0.20", 2.0, 1.1), fam("erhp", "c", "ERHP", 2.0, 1.0)]
    rows = synthesis.across_widths(fams)
    assert [(r["width"], r["variant"]) for r in rows] == [("N64", "r=0.55"), ("N128", "r=0.55")]  # only pairs, base first
    assert synthesis.width_of("b N128") == ("b", "N128") and synthesis.width_of("b") == ("b", "N64")
    text = synthesis.across_widths_text(rows)
    assert "liao r=0.55 on b: +14.0 % rate for 1.50× (spread 10 %) at N64, +9.0 % rate for 1.80×" in text
    assert "no method was run on a wider family" in synthesis.across_widths_text([])
    rows[0]["Δrate at equal PSNR (%)"] = float("nan")  # PSNR off the zoo curve: said so, never "nan"
    assert "n/a (PSNR off the zoo curve) rate for 1.50×" in synthesis.across_widths_text(rows)
