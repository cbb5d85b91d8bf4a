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
                          "value": 0.5}])
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
