"""The controls (chapter 07): the uniform width at a pruned decoder's MACs, and a distilled narrow
decoder that keeps the zoo's bitstream and learns the zoo's reconstruction."""
import pytest
import torch

from lic import controls, data, liao, zoo


@pytest.fixture
def teacher(smoke):
    torch.manual_seed(0)
    return zoo.build_for("bmshj2018-hyperprior", smoke).eval()


def test_the_uniform_width_matches_the_pruned_decoders_macs(teacher):
    full = controls.full_width(teacher)
    w55, w33 = controls.width_at_ratio(teacher, 0.55), controls.width_at_ratio(teacher, 0.33)
    assert 1 <= w55 < w33 < full  # more pruning, a narrower decoder
    pruned = teacher.__class__(*[teacher.g_a[0].out_channels, teacher.g_a[-1].out_channels])
    pruned.load_state_dict(teacher.state_dict())
    liao.prune_decoder(pruned, 0.55, liao.channel_scores(pruned, liao.l1_norm))
    target = liao.decoder_macs(pruned, 512, 768)
    got = {w: liao.decoder_macs(controls.narrow_copy(teacher, w), 512, 768) for w in (w55 - 1, w55, w55 + 1)}
    assert abs(got[w55] - target) == min(abs(v - target) for v in got.values())  # the closest width
    assert abs(got[w55] - target) / target < 0.1


def test_a_distilled_decoder_keeps_the_bitstream_and_learns_the_teachers_reconstruction(teacher, smoke):
    teacher.update(force=True)
    w = controls.width_at_ratio(teacher, 0.55)
    torch.manual_seed(1)
    fresh = controls.narrow_copy(teacher, w)
    student = controls.distill(teacher, w, data.train_set(smoke), steps=40, lmbda=0.0067, scale=smoke, progress=False)
    assert controls.full_width(student) == w
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y_hat = torch.round(teacher.g_a(x))
        gap = {name: ((m.g_s(y_hat) - teacher.g_s(y_hat)) ** 2).mean().item()
               for name, m in (("fresh", fresh), ("distilled", student))}
    assert gap["distilled"] < gap["fresh"] / 2  # it learned the teacher's decoder
    student.update(force=True)
    a, b = teacher.compress(x), student.compress(x)
    assert a["strings"] == b["strings"]  # encoder, hyper path and entropy models are the teacher's
    assert student.decompress(b["strings"], b["shape"])["x_hat"].shape == x.shape


def test_one_method_beats_another_only_by_more_than_the_margin():
    rows = [{"method": "Liao", "lambda": 0.013, "ratio": 0.55, "rate_vs_zoo_pct": 5.0},
            {"method": "scratch", "lambda": 0.013, "ratio": 0.55, "rate_vs_zoo_pct": 5.4},  # a tie
            {"method": "Liao", "lambda": 0.0035, "ratio": 0.55, "rate_vs_zoo_pct": 3.0},
            {"method": "scratch", "lambda": 0.0035, "ratio": 0.55, "rate_vs_zoo_pct": 4.0},
            {"method": "Liao", "lambda": 0.0035, "ratio": 0.33, "rate_vs_zoo_pct": 1.0}]  # no scratch twin
    got = controls.beats(rows, "Liao", "scratch")
    assert [(g["lambda"], g["ratio"], g["met"]) for g in got] == [(0.0035, 0.55, True), (0.013, 0.55, False)]
    assert [g["met"] for g in controls.beats(rows, "scratch", "Liao")] == [False, False]


def test_the_three_questions_are_decided_at_liaos_own_budget():
    import pandas as pd

    bars = pd.DataFrame([{"chapter": controls.CHAPTER, "claim": "Δrate at equal PSNR lower than the control's by more than",
                          "value": 0.5},
                         {"chapter": controls.CHAPTER, "claim": "PSNR on the same bitstream higher than the control's by more than",
                          "value": 0.02}])
    row = lambda method, rate, budget=None: {"method": method, "lambda": 0.013, "ratio": 0.55,
                                             "rate_vs_zoo_pct": rate, "budget": budget}
    rows = [row(controls.LIAO, 5.0), row("scratch", 7.0), row("distilled", 4.0, 1), row("distilled", 1.0, 10),
            row(controls.DECAYED, 4.2, 1), row(controls.DECAYED, 0.5, 10)]
    got = {c["id"]: c for c in controls.claims_for(rows, bars)}
    assert got["controls-scratch"]["verdict"] == "reproduced"          # Liao 5.0 < scratch 7.0 - 0.5
    assert got["controls-distilled"]["verdict"] == "not reproduced"    # at budget 1 distillation wins (4.0)
    assert got["controls-mask-decay"]["verdict"] == "reproduced"       # 4.2 < 5.0 - 0.5; the 10x run not used
    assert "1 of 1" in got["controls-mask-decay"]["ours"]
    none = {c["id"]: c for c in controls.claims_for([row(controls.LIAO, 5.0)], bars)}
    assert "no mask decay decoder measured" in none["controls-mask-decay"]["ours"]


def test_decoders_on_the_same_bitstream_without_a_delta_rate_are_compared_by_psnr():
    import pandas as pd

    nan = float("nan")
    row = lambda method, lam, rate, bpp, psnr: {"method": method, "lambda": lam, "ratio": 0.55, "budget": 1,
                                                "rate_vs_zoo_pct": rate, "bpp": bpp, "psnr": psnr}
    rows = [row(controls.LIAO, 0.013, 16.0, 0.52, 31.0), row("distilled", 0.013, nan, 0.52, 28.0),   # off the zoo's range
            row(controls.LIAO, 0.0035, 10.0, 0.25, 28.0), row("distilled", 0.0035, nan, 0.25, 27.99),  # a tie: 0.01 dB
            row(controls.LIAO, 0.0067, 8.0, 0.40, 30.0), row("distilled", 0.0067, nan, 0.41, 25.0)]   # a bitstream of its own
    got = controls.beats(rows, controls.LIAO, "distilled", margin_db=0.02)
    assert [(g["lambda"], g["by"], g["met"]) for g in got] == [(0.0035, "PSNR", False), (0.013, "PSNR", True)]
    assert got[1]["gap"] == pytest.approx(3.0)
    bars = pd.read_csv(controls_claims_csv())
    c = {c["id"]: c for c in controls.claims_for(rows, bars)}["controls-distilled"]
    assert c["verdict"] == "partly reproduced" and "1 of 2" in c["ours"]
    assert "PSNR on the same bitstream (2), Liao (decoder pruning) minus distilled: +0.01 to +3.00 dB" in c["ours"]
    rows[1]["rate_vs_zoo_pct"] = None  # a results file's row: NaN stored as null
    assert len(controls.beats(rows, controls.LIAO, "distilled")) == 2


def controls_claims_csv():
    from lic import report

    return report.PROJECT / "data" / "papers" / "claims.csv"


def _measured(method, lam, ratio, rate, steps, budget=None, seconds=None, speedup=1.3):
    return {"method": method, "lambda": lam, "ratio": ratio, "rate_vs_zoo_pct": rate, "decode_macs": 2e9,
            "decode_speedup": speedup, "decode_spread_pct": 4.0, "decode_speedup@openvino": 1.1,
            "steps": steps, "budget": budget, "train_seconds": seconds, "psnr_vs_zoo_db": -rate / 10}


def test_the_table_lists_each_decoder_once_in_the_chapters_order_and_the_figure_has_a_panel_per_case():
    import matplotlib.pyplot as plt

    rows = [_measured(controls.DECAYED, 0.013, 0.55, 6.0, 10000, 10, 600), _measured("zoo", 0.013, None, 0, None),
            _measured("distilled", 0.013, 0.55, 9.0, 1000, 1, 60), _measured(controls.LIAO, 0.013, 0.55, 7.0, 1000, 1),
            _measured("scratch", 0.013, 0.55, 4.0, 60000, None, 3600), _measured(controls.LIAO, 0.0035, 0.55, 5.0, 1000, 1)]
    t = controls.table(rows)
    assert list(zip(t.method, t["λ"])) == [(controls.LIAO, 0.013), ("scratch", 0.013), ("distilled", 0.013),
                                           (controls.DECAYED, 0.013), (controls.LIAO, 0.0035)]  # zoo left out
    assert t["training (min)"].tolist()[:2] == [pytest.approx(float("nan"), nan_ok=True), 60.0]
    assert t["speed-up, openvino g_s (x)"].iloc[0] == 1.1
    assert t["ΔPSNR at equal rate (dB)"].iloc[0] == pytest.approx(-0.7)  # Liao's at λ = 0.013
    text = controls.findings(t)
    assert text.startswith("at λ = 0.013 and r = 0.55, the cheapest is scratch (+4.0 %), Liao's pruning +7.0 % "
                           "(2 of 3 controls cost less); at λ = 0.0035")
    assert controls.speed_text(t) == "decode speed-ups against the zoo model of 1.30–1.30× at r = 0.55 (eager; timing spread up to 4 %)"
    fig = controls.figure(t)
    assert len(fig.axes) == 2 and fig.axes[0].get_title().startswith("λ = 0.013, r = 0.55")
    plt.close(fig)
    far = {**_measured("distilled", 0.013, 0.55, 167.0, 1000, 1, 60), "extrapolated": True}  # far off the zoo's curve
    fig = controls.figure(controls.table(rows + [far]))
    assert 9.0 < fig.axes[0].get_xlim()[1] < 100  # the axis fits the others; the far one is clipped, its value printed
    assert any(a.get_text() == "+167.0 % (extrap.) ▸" for a in fig.axes[0].texts)
    plt.close(fig)


def test_a_scratch_decoders_budget_counts_the_model_it_was_fine_tuned_from(tmp_zoo, smoke):
    from lic import store

    narrow = smoke.with_(decoder=8)
    path = zoo.manifest_path(narrow)
    path.parent.mkdir(parents=True)
    store.write_json(path, {zoo.model_name("bmshj2018-hyperprior", 0.025): {"arch": "bmshj2018-hyperprior", "steps": 120, "train_seconds": 30.0},
                            zoo.model_name("bmshj2018-hyperprior", 0.0067): {"arch": "bmshj2018-hyperprior", "steps": 30, "train_seconds": 5.0,
                                                                             "started_from": zoo.model_name("bmshj2018-hyperprior", 0.025)}})
    assert controls.scratch_budget("bmshj2018-hyperprior", 0.0067, 8, smoke) == {"steps": 150, "train_seconds": 35.0}
    assert controls.scratch_budget("bmshj2018-hyperprior", 0.025, 8, smoke) == {"steps": 120, "train_seconds": 30.0}
    assert controls.scratch_budget("bmshj2018-hyperprior", 0.013, 8, smoke)["steps"] == 0  # not trained


def test_the_dry_run_names_the_narrow_widths_and_what_it_would_train(tmp_zoo):
    from lic import book

    lines = "\n".join(book.plan("07_controls", "smoke", {"budgets": "1,3"}))
    assert "narrow g_s: r = 0.55 → width" in lines and "r = 0.33 → width" in lines
    assert "0 of 2 trained; to TRAIN (`python -m lic.zoo train --scale smoke --arch bmshj2018-hyperprior --decoder-width" in lines
    assert "distilled and mask-decayed decoders: 16," in lines  # 2 methods x 2 λ x 2 ratios x 2 budgets


def test_a_decoder_without_a_delta_rate_is_not_compared_and_is_named_so():
    nan = float("nan")
    rows = [{"method": controls.LIAO, "lambda": 0.013, "ratio": 0.55, "rate_vs_zoo_pct": 5.0},
            {"method": "scratch", "lambda": 0.013, "ratio": 0.55, "rate_vs_zoo_pct": nan}]
    assert controls.beats(rows, controls.LIAO, "scratch") == []
    t = controls.table([_measured(controls.LIAO, 0.013, 0.55, 5.0, 1000, 1), _measured("scratch", 0.013, 0.55, nan, 60000)])
    assert controls.findings(t) == "at λ = 0.013 and r = 0.55, the cheapest is Liao's pruning itself (+5.0 %)"


def test_a_distilled_decoder_learns_at_the_zoos_rate_then_fine_tunes_at_liaos(teacher, smoke, monkeypatch):
    seen = []

    def fake_train(model, data, cfg, **kw):  # records each phase's schedule instead of training
        seen.append((cfg.steps, cfg.lr, cfg.lr_final))
        return [{"elapsed_s": 1.5}]

    monkeypatch.setattr(controls, "train", fake_train)
    student = controls.distill(teacher, 4, None, steps=10, lmbda=0.0067, scale=smoke, progress=False)
    assert seen == [(5, smoke.lr, smoke.lr_final), (5, liao.FINETUNE_LR, liao.FINETUNE_LR_FINAL)]  # fresh g_s: the zoo's rate
    assert student.train_seconds == 3.0 and controls.full_width(student) == 4
