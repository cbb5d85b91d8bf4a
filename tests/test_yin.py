"""Yin et al.: ECG and the bit-rate modulator — exact equivalences, real gated execution,
bitstreams at λ between the training points, and clear errors."""
import copy

import pytest
import torch

from lic import evaluate, yin, zoo
from lic.models.gated import GatedConv, RateModulator
from lic.train import TrainConfig, rd_loss, train


def _open_all(model):
    for g in model.gates():
        g.ecg.set_alpha(-1e9)
    return model


@pytest.mark.parametrize("arch", yin.ARCHS)
def test_with_every_gate_open_and_unit_gains_the_model_is_its_base(smoke, arch):
    torch.manual_seed(0)
    base = zoo.build_for(arch, smoke).eval()
    ref = copy.deepcopy(base)
    model = _open_all(yin.build(arch, smoke, "ecg+bm", base=base)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x, 0.01), ref(x)
    assert torch.equal(a["x_hat"], b["x_hat"])
    assert all(torch.equal(a["likelihoods"][k], b["likelihoods"][k]) for k in b["likelihoods"])
    assert a["sparsity"].sum() == 0 and len(model.gates()) > 0


@pytest.mark.parametrize("kind", ["conv", "tconv"])
def test_sliced_gated_convolution_equals_the_masked_one(kind):
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d(16, 8, 5, stride=2, padding=2) if kind == "conv"
            else torch.nn.ConvTranspose2d(16, 8, 5, stride=2, padding=2, output_padding=1))
    g = GatedConv(conv).eval()
    g.ecg.set_alpha(torch.randn(16))  # some gates shut
    x = torch.randn(1, 16, 12, 12) * torch.linspace(0.1, 3, 16)[None, :, None, None]
    with torch.no_grad():
        sliced = g(x)
        open_ = g.last_open.item()
        g.mode = "mask"
        masked = g(x)
    assert 0 < open_ < 16  # the test exercises a real slice
    assert torch.allclose(sliced, masked, atol=1e-5)


def test_a_layer_with_every_gate_shut_outputs_its_bias():
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    g = GatedConv(conv).eval()
    g.ecg.set_alpha(1e9)
    out = g(torch.randn(1, 4, 5, 5))
    assert torch.allclose(out, conv.bias[None, :, None, None].expand(1, 3, 5, 5))


@pytest.mark.parametrize("kind", ["conv", "tconv"])
def test_a_gated_convolution_costs_its_open_share_of_macs(kind):
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d(16, 8, 5, stride=2, padding=2, bias=False) if kind == "conv"
            else torch.nn.ConvTranspose2d(16, 8, 5, stride=2, padding=2, output_padding=1, bias=False))
    g = GatedConv(conv).eval()
    g.ecg.set_alpha(torch.randn(16))
    x = torch.randn(1, 16, 12, 12) * torch.linspace(0.1, 3, 16)[None, :, None, None]
    dense = evaluate.macs(conv, x)
    gated = evaluate.macs(g, x) - 16 * 3  # minus the 1D convolution across channels (k = 3)
    assert gated == dense * g.last_open.item() / 16


def test_a_model_with_every_gate_shut_costs_only_what_is_not_gated(smoke):
    torch.manual_seed(0)
    model = yin.build("bmshj2018-hyperprior", smoke, "ecg+bm").eval()
    img = (torch.rand(128, 128, 3) * 255).to(torch.uint8).numpy()
    dense = yin.image_macs(_open_all(copy.deepcopy(model)).at(0.01), [("x", img)])["macs"]
    for g in model.gates():
        g.ecg.set_alpha(1e9)  # every gated input shut
    shut = yin.image_macs(model.at(0.01), [("x", img)])
    first = evaluate.macs(model.base.g_a[0], torch.zeros(1, 3, 128, 128))  # the ungated RGB conv
    assert first <= shut["macs"] < 0.35 * dense  # what is left: that conv and the GDNs
    assert shut["gate_macs"] > 0


def test_sparsity_term_closes_gates_on_a_toy_problem():
    torch.manual_seed(0)
    g = GatedConv(torch.nn.Conv2d(16, 4, 1))
    hook = yin.SparsityHook(target=0.75, gamma=1.0)
    opt = torch.optim.Adam(g.parameters(), lr=0.05)
    x = torch.randn(8, 16, 6, 6) * torch.linspace(0.2, 2, 16)[None, :, None, None]
    for _ in range(200):
        opt.zero_grad()
        g(x)
        hook.loss(None, {"sparsity": g.sparsity[None]}, x)["sparsity_term"].backward()
        opt.step()
    g.eval()
    g(x[:1])
    assert 1 - g.last_open.item() / 16 == pytest.approx(0.75, abs=0.07)


def test_modulator_is_continuous_in_lambda_and_refuses_outside_its_range():
    torch.manual_seed(0)
    bm = RateModulator(8, (0.0035, 0.025))
    for net in (bm.enc, bm.dec):
        torch.nn.init.normal_(net[-1].weight)
    lams = torch.logspace(torch.log10(torch.tensor(0.0035)), torch.log10(torch.tensor(0.025)), 200)
    enc, _ = bm(lams)
    assert (enc > 0).all() and (enc[1:] - enc[:-1]).abs().max() < 0.1 * enc.abs().max()
    with pytest.raises(ValueError, match=r"outside the trained range \[0.0035, 0.025\]"):
        bm(torch.tensor([0.05]))
    model = yin.build("bmshj2018-hyperprior", __import__("lic.scales").scales.get_scale("smoke"), "bm")
    with pytest.raises(ValueError, match="trained range"):
        model.at(0.001)


def test_unknown_architecture_or_variant_names_the_choices(smoke):
    with pytest.raises(ValueError, match="bmshj2018-hyperprior, mbt2018-mean, mbt2018"):
        yin.build("cheng2020-attn", smoke, "ecg+bm")
    with pytest.raises(ValueError, match="ecg\\+bm, bm"):
        yin.model_name("mbt2018", "gates")


def test_rd_loss_weighs_each_image_by_its_own_lambda():
    x = torch.zeros(2, 3, 4, 4)
    x_hat = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.2)])
    out = {"x_hat": x_hat, "likelihoods": {"y": torch.full((2, 2, 2, 2), 0.5)}, "lmbda": torch.tensor([0.01, 0.02])}
    t = rd_loss(out, x, lmbda=123.0)  # ignored
    expect = ((0.5 + 0.01 * 255 ** 2 * 0.01) + (0.5 + 0.02 * 255 ** 2 * 0.04)) / 2
    assert t["loss"].item() == pytest.approx(expect) and t["bpp"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("arch", yin.ARCHS)
def test_real_bitstreams_round_trip_between_the_training_lambdas(smoke, arch):
    torch.manual_seed(0)
    model = yin.build(arch, smoke, "ecg+bm")
    for g in model.gates():
        g.ecg.set_alpha(0.5 * torch.randn(g.conv.in_channels))  # a mixed gate pattern
    for net in (model.bm.enc, model.bm.dec):
        torch.nn.init.normal_(net[-1].weight, 0.0, 0.3)
    img = (torch.rand(192, 192, 3) * 255).to(torch.uint8).numpy()
    rows = [evaluate.evaluate(model.at(lam), [("x", img)], real=True, progress=False)["mean"]
            for lam in (0.008, 0.0151)]  # neither is a training point of the zoo
    for r in rows:
        assert r["bpp"] > 0 and r["psnr"] > 0
        # λ travels in the bitstream: 4 bytes on top of y and z
        assert r["bpp"] == pytest.approx(r["bpp_y"] + r["bpp_z"] + 32 / (192 * 192))


def test_the_decode_of_a_model_at_one_lambda_is_timed_stage_by_stage_through_its_wrappers(smoke):
    torch.manual_seed(0)
    model = yin.build("mbt2018", smoke, "ecg+bm").eval()
    model.update(force=True)
    img = (torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()
    t = evaluate.interleaved_times({"gated": model.at(0.01)}, [("x", img)], repeats=1, progress=False)["gated"]
    stages = t["decode_stages_ms"]
    # the stages of the mbt2018 inside the λ view and the BM/ECG wrapper, not one opaque "other"
    assert {"g_s", "h_s", "autoregressive loop"} <= set(stages) and stages["autoregressive loop"] > 0
    assert sum(stages.values()) == pytest.approx(t["decode_ms"], rel=0.05)


def test_the_sweep_of_a_serial_decoder_is_the_zoo_lambdas_and_the_geometric_means_between_them():
    from lic.scales import get_scale

    S = get_scale("cpu")
    lams = yin.sweep_lambdas(S, None, "mbt2018")
    zoo_lams = sorted(S.lambdas)
    assert len(lams) == 2 * len(zoo_lams) - 1 and lams[::2] == zoo_lams  # the zoo's, measured for the table anyway
    assert all(a < b for a, b in zip(lams, lams[1:]))
    assert lams[1] == pytest.approx((zoo_lams[0] * zoo_lams[1]) ** 0.5)
    assert len(yin.sweep_lambdas(S, None, "bmshj2018-hyperprior")) == yin.SWEEP_POINTS
    assert len(yin.sweep_lambdas(S, 5, "mbt2018")) == 5  # an explicit count applies to every architecture
    text = yin.sweep_text({"bmshj2018-hyperprior": yin.sweep_lambdas(S), "mbt2018": lams}, S)
    assert f"{yin.SWEEP_POINTS} λ log-spaced" in text and "geometric mean" in text and f"({len(lams)} λ" in text


def test_the_loop_text_gives_the_serial_loops_share_for_the_architectures_that_have_one():
    import pandas as pd

    row = {"model": "ecg+bm", "decode speed-up": 1.1, "loop share of decode (%)": 0.0, "loop share of zoo decode (%)": 0.0}
    lat = pd.DataFrame([{**row, "arch": "bmshj2018-hyperprior"},
                        {**row, "arch": "mbt2018", "loop share of zoo decode (%)": 81.0, "loop share of decode (%)": 88.4},
                        {**row, "arch": "mbt2018", "loop share of zoo decode (%)": 79.2, "loop share of decode (%)": 86.0,
                         "decode speed-up": 1.02}])
    text = yin.loop_text(lat)
    assert text.startswith("on mbt2018,") and "bmshj2018" not in text
    assert "79–81 % of the zoo model's decode" in text and "86–88 % of the gated one's" in text and "1.02–1.10×" in text
    assert "no architecture" in yin.loop_text(lat[lat.arch != "mbt2018"])
    same = lat.assign(**{"loop share of zoo decode (%)": 97.9, "loop share of decode (%)": 98.2})
    assert "takes 98 % of the zoo model's decode and 98 % of the gated one's" in yin.loop_text(same)  # not "98–98 %"
    tie = same.assign(**{"decode speed-up": [1.1, 0.998, 1.003]})
    assert "whose decode is 1.00× as fast" in yin.loop_text(tie)  # not "1.00–1.00×"


def test_views_at_different_lambdas_have_different_fingerprints(smoke):
    model = yin.build("bmshj2018-hyperprior", smoke, "bm")
    assert zoo.fingerprint(model.at(0.008)) != zoo.fingerprint(model.at(0.01))


def test_training_samples_lambda_and_saves_a_loadable_model(smoke, tmp_zoo):
    model = yin.get("bmshj2018-hyperprior", smoke, "ecg+bm", progress=False)
    entry = yin.read_manifest(smoke)[yin.model_name("bmshj2018-hyperprior", "ecg+bm")]
    assert entry["steps"] == smoke.vr_steps and entry["started_from"] == zoo.model_name(
        "bmshj2018-hyperprior", zoo.middle_lambda(smoke))
    assert entry["precision"] and entry["train_seconds"] > 0 and len(entry["sha256"]) == 64
    import pandas as pd

    from lic import budget

    curve = pd.read_csv(yin.models_dir(smoke) / entry["curve"])  # the validation curve tells convergence
    assert {f"val_psnr@{lam}" for lam in smoke.lambdas} <= set(curve.columns)
    assert budget.rd_cost(curve, 0.0).notna().all()
    lc = yin.learning_curve(yin.model_name("bmshj2018-hyperprior", "ecg+bm"), smoke)  # from step 0 (issue 41)
    assert lc.step.tolist()[0] == 0 and len(lc) == 1 + len(curve) and set(curve.columns) <= set(lc.columns)
    lam = zoo.middle_lambda(smoke)
    assert lc[f"psnr@{lam}"].notna().all() and lc[f"psnr@{lam}"].iloc[0] != lc[f"psnr@{lam}"].iloc[-1]
    fig = yin.curve_figure({"ecg+bm": lc}, smoke.lambdas)
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[0].lines[0].get_xdata()) == len(lc)
    again = yin.get("bmshj2018-hyperprior", smoke, "ecg+bm", train_missing=False)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, 0.01)["x_hat"], again(x, 0.01)["x_hat"])
    # a budget curve: the stored model trained on, kept beside it (issue 39)
    more = smoke.vr_steps + 20
    longer = yin.continue_model("bmshj2018-hyperprior", smoke, "ecg+bm", more, progress=False)
    m = yin.read_manifest(smoke)
    name = yin.model_name("bmshj2018-hyperprior", "ecg+bm")
    e = m[yin.budget_name(name, more)]
    assert e["steps"] == more and e["continued_from"] == name and e["continued_at_step"] == smoke.vr_steps
    assert m[name] == entry  # the chapter's own model is untouched
    cont = pd.read_csv(yin.models_dir(smoke) / e["curve"])
    assert cont.step.max() == more and (cont.step <= smoke.vr_steps).sum() == len(curve)  # the curve goes on
    with torch.no_grad():
        assert not torch.equal(longer(x, 0.01)["x_hat"], again(x, 0.01)["x_hat"])
    with pytest.raises(ValueError, match="continue it to more than that"):
        yin.continue_model("bmshj2018-hyperprior", smoke, "ecg+bm", smoke.vr_steps, progress=False)
    assert yin.budgets("bmshj2018-hyperprior", "ecg+bm", smoke) == [(smoke.vr_steps, name), (more, yin.budget_name(name, more))]
    from lic import data

    rows = yin.budget_curve("bmshj2018-hyperprior", "ecg+bm", smoke, data.test_images(smoke), tmp_zoo / "measured")
    assert [r["steps"] for r in rows] == [smoke.vr_steps, more] and all(r["FLOP reduction (×)"] > 0 for r in rows)
    assert all(r["PSNR drop (%), max"] == r["PSNR drop (%), max"] for r in rows)  # measured, not NaN
    fig = budget.curve_figure(rows, "BD-rate vs zoo (%)", paper=5.0)
    assert [t.get_text() for t in fig.axes[0].texts][-1] == "paper"
    # retiring an intermediate budget: its file goes, its rows stay the same (the chapter's 40 MB)
    with pytest.raises(ValueError, match="largest budget of its model: continue it first .*--arch bmshj2018-hyperprior "
                       "--variant ecg\\+bm --steps S"):
        yin.retire(yin.budget_name(name, more), smoke, data.test_images(smoke), tmp_zoo / "measured")
    with pytest.raises(ValueError, match="only those are retired"):
        yin.retire(name, smoke, data.test_images(smoke), tmp_zoo / "measured")
    yin.continue_model("bmshj2018-hyperprior", smoke, "ecg+bm", more + 10, progress=False, start_steps=more)
    assert yin.main(["retire", yin.budget_name(name, more), "--scale", "smoke"]) == 0
    gone = yin.read_manifest(smoke)[yin.budget_name(name, more)]
    assert not (yin.models_dir(smoke) / gone["file"]).exists() and "git" not in gone["retired"]  # not in the repo
    again_rows = yin.budget_curve("bmshj2018-hyperprior", "ecg+bm", smoke, data.test_images(smoke), tmp_zoo / "measured")
    assert pd.DataFrame(again_rows[:2]).equals(pd.DataFrame(rows)) and again_rows[2]["steps"] == more + 10  # NaN = NaN
    with pytest.raises(zoo.CheckpointError, match="retired with rows for other images.*retraining it"):
        yin.budget_curve("bmshj2018-hyperprior", "ecg+bm", smoke, data.test_images(smoke)[:1], tmp_zoo / "measured")
    with pytest.raises(zoo.CheckpointError, match="was retired .*restore them by retraining it, then continue it"):
        yin.continue_model("bmshj2018-hyperprior", smoke, "ecg+bm", more + 50, progress=False, start_steps=more)
    with pytest.raises(zoo.CheckpointError, match="python -m lic.yin train --scale smoke --arch mbt2018 --variant bm"):
        yin.get("mbt2018", smoke, "bm", train_missing=False)


def test_the_budget_text_decides_at_the_largest_budget_and_says_how_fast_the_gap_closes():
    row = lambda steps, bd: {"steps": steps, "BD-rate vs zoo (%)": bd, "PSNR drop (%), max": 2.5}
    closing = yin.budget_text([row(20000, 18.0), row(40000, 14.0), row(80000, 10.0)], 2.0)
    assert "+18.0 % at 20,000 steps; +14.0 % at 40,000 steps; +10.0 % at 80,000 steps" in closing
    assert "the bar is not met" in closing and "closes by 4.0 points per doubling" in closing
    assert "8.0 points away, is ≈ 2.0 more doublings off (≈ 320,000 steps in all)" in closing
    far = yin.budget_text([row(20000, 18.0), row(80000, 13.1)], 0.0)  # 2.45 points per doubling, 13.1 away
    assert "≈ 5.3 more doublings off (≈ 3.3 million steps in all)" in far
    assert "did not close" in yin.budget_text([row(20000, 18.0), row(40000, 18.5)], 2.0)
    # three budgets whose last pair keeps another pace: both paces, and the projection spans them
    faster = yin.budget_text([row(20000, 18.0), row(40000, 18.7), row(80000, 13.1)], 0.0)
    assert "2.5 points per doubling of steps over the whole range, 5.6 between the last two budgets (speeding up)" in faster
    assert "13.1 points away, is ≈ 2.3–5.3 more doublings off at those paces (≈ 400,000–3.3 million steps in all)" in faster
    stalled = yin.budget_text([row(20000, 18.0), row(40000, 14.0), row(80000, 14.5)], 2.0)
    assert "the gap stopped closing" in stalled and "-0.5 between the last two budgets (slowing)" in stalled
    assert "the bar is met" in yin.budget_text([row(20000, 3.0), row(40000, 1.0)], 2.0)
    assert "one budget only" in yin.budget_text([row(20000, 18.0)], 2.0)
    nan = float("nan")
    off = yin.budget_text([row(40, nan)], 2.0)  # smoke: curves that overlap too little
    assert "nan" not in off and "n/a (the curves overlap too little) at 40 steps" in off and "the bar is not told" in off
    assert "too few budgets" in yin.budget_text([row(40, nan), row(80, 3.0)], 2.0)


def test_the_chapters_figures_have_a_panel_per_architecture_and_say_what_they_show():
    import matplotlib.pyplot as plt
    import pandas as pd

    archs = ["bmshj2018-hyperprior", "mbt2018"]
    sp = pd.DataFrame([{"arch": a, "λ": lam, "layer": f"g_s.{i}", "closed": 0.4} for a in archs
                       for lam in (0.0035, 0.025) for i in range(3)])
    fig = yin.sparsity_figure(sp, archs)
    assert [ax.get_title() for ax in fig.axes] == archs
    plt.close(fig)
    pts = lambda model, lams: [{"arch": a, "model": model, "lambda": lam, "bpp": 20 * lam + 0.1, "psnr": 30 + 100 * lam}
                               for a in archs for lam in lams]
    sweep = pd.DataFrame(pts("ecg+bm", (0.0035, 0.007, 0.013, 0.025)))
    res = pd.DataFrame(pts("zoo (one per λ)", (0.0035, 0.025)))
    fig = yin.rd_figure(sweep, res, archs, ["ecg+bm"], kodak=False)
    assert [ax.get_title() for ax in fig.axes] == archs
    assert "ecg+bm (ours, 4 λ)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    lat = pd.DataFrame([{"arch": a, "model": m, "FLOP reduction": 2.0, "encode speed-up": 1.2, "decode speed-up": 1.1}
                        for a in archs for m in ("ecg+bm", "bm")])
    fig = yin.speed_figure(lat)
    assert [ax.get_title() for ax in fig.axes] == archs  # each architecture named in place
    assert fig.axes[0].get_xlabel().startswith("FLOP reduction")
    assert {"encode", "decode"} <= {t.get_text() for t in fig.axes[1].texts}  # kinds labelled beside their points
    assert all(ax.get_legend() is None for ax in fig.axes)
    plt.close(fig)


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018"])
def test_the_fp16_check_uses_real_bitstreams_and_fewer_images_for_a_serial_decoder(smoke, tmp_path, arch):
    torch.manual_seed(0)
    model = yin.build(arch, smoke, "bm").eval()
    model.update(force=True)
    images = [(f"x{i}", (torch.rand(192, 192, 3) * 255).to(torch.uint8).numpy()) for i in range(6)]
    meta = {"variant": "bm", "arch": arch, "widths": smoke.widths(arch)}
    yin.save_checked(model, tmp_path / "m.pt", meta, images, lambdas=(0.01,))
    check = meta["fp16_check"]
    assert check["images"] == (yin.FP16_CHECK_SERIAL if arch == "mbt2018" else 6)
    assert set(check["per_lambda"]) == {"0.01"} and check["max_abs_delta_psnr_db"] >= 0


def test_variable_rate_training_draws_one_lambda_per_image(smoke):
    torch.manual_seed(0)
    model = yin.build("bmshj2018-hyperprior", smoke, "bm").train()
    out = model(torch.rand(4, 3, 64, 64))
    lo, hi = yin.lmbda_range(smoke)
    assert out["lmbda"].shape == (4,) and len(set(out["lmbda"].tolist())) == 4
    assert ((out["lmbda"] >= lo) & (out["lmbda"] <= hi)).all()
    model.eval()
    with pytest.raises(ValueError, match="give λ"):
        model(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("arch", yin.ARCHS)
def test_compressai_vbr_peer_starts_from_the_zoo_model_and_round_trips(smoke, arch):
    torch.manual_seed(0)
    base = zoo.build_for(arch, smoke)
    model = yin.build(arch, smoke, "vbr", base=base).eval()
    assert torch.equal(model.base.g_s[0].weight, base.g_s[0].weight)
    # gain ∝ √λ with gain 1 at the zoo's middle λ, the start model's own
    assert model.gain(zoo.middle_lambda(smoke)) == pytest.approx(1.0)
    assert model.gain(0.025) / model.gain(0.0067) == pytest.approx((0.025 / 0.0067) ** 0.5)
    img = (torch.rand(192, 192, 3) * 255).to(torch.uint8).numpy()
    r = evaluate.evaluate(model.at(0.0151), [("x", img)], real=True, progress=False)["mean"]
    assert r["bpp"] == pytest.approx(r["bpp_y"] + r["bpp_z"] + 32 / (192 * 192))
    with pytest.raises(ValueError, match=r"outside the trained range \[0.0067, 0.025\]"):
        model.at(0.05)
    model.train()
    out = model(torch.rand(2, 3, 64, 64))  # one of the trained levels per step
    assert min(abs(out["lmbda"][0].item() - v) for v in model.levels) < 1e-8
    assert out["lmbda"][0] == out["lmbda"][1]


def test_training_calibrates_again_when_the_late_crops_start(smoke, tmp_path, monkeypatch):
    """The late-crop phase times the loops on a copy of the model mid-run: nothing of the last
    forward pass (gains, gate sparsity with their graphs) may stay on the modules."""
    from lic import data, precision

    monkeypatch.setenv("LIC_RUNS", str(tmp_path))
    monkeypatch.setattr(precision, "CALIBRATE_MIN_STEPS", 1)
    torch.manual_seed(0)
    model = yin.build("bmshj2018-hyperprior", smoke, "ecg+bm")
    ds = data.ImageFolder([img for _, img in data.skimage_photos(2)], crop=64, seed=0)
    cfg = TrainConfig(lmbda=0.01, steps=4, batch=2, crop=64, late_crop=128, late_frac=0.5, precision="auto")
    train(model, ds, cfg, checkpoint=tmp_path / "s.pt", hooks=[yin.SparsityHook()], progress=False)
    loops = torch.load(tmp_path / "s.pt", weights_only=False)["loops"]
    assert [(lp["from_step"], lp["how"]) for lp in loops] == [(0, "measured"), (2, "measured")]


def test_committed_cpu_models_load_and_stay_in_budget():
    """The chapter's committed `cpu` models: each loads from its file with the manifest's sha256
    (no training), says how it was trained, and the folder stays within the chapter's 40 MB."""
    from lic.scales import get_scale

    cpu = get_scale("cpu")
    folder = yin.models_dir(cpu)
    manifest = yin.read_manifest(cpu)
    if not manifest:
        pytest.skip("no committed cpu models yet")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 40e6
    for name, e in manifest.items():
        if e.get("continued_from"):  # a budget curve's model (<name>@<steps>): continues a committed one
            base = e["continued_from"].split("@")[0]  # from the chapter's model or from a smaller budget of it
            assert name == f"{base}@{e['steps']}" and e["continued_from"] in manifest
            assert e["steps"] > e["continued_at_step"] == manifest[e["continued_from"]]["steps"]
            assert e["train_seconds"] > 0 and e["precision"]
            if e.get("retired"):  # its weights in git, its rows at every zoo λ in the manifest
                assert not (folder / e["file"]).exists() and set(e["retired"]["rows"]) == {str(x) for x in cpu.lambdas}
                assert any(x.get("continued_from") == name for x in manifest.values())
            else:
                yin.load(folder / e["file"], e["sha256"])
            continue
        model = yin.get(e["arch"], cpu, e["variant"], e["target_sparsity"] or yin.TARGET_SPARSITY,
                        train_missing=False)
        assert yin.model_name(e["arch"], e["variant"], e["target_sparsity"] or yin.TARGET_SPARSITY) == name
        assert e["steps"] == cpu.vr_steps and e["train_seconds"] > 0 and e["precision"]
        assert model.lmbda_range == pytest.approx(yin.lmbda_range(cpu))


def test_tradeoff_rows_follow_the_gates_that_close(smoke, tmp_zoo, monkeypatch):
    """yin.tradeoff: BM alone closes nothing and costs the zoo's MACs (plus its two tiny FC layers);
    ECG + BM with a share t of every layer's gates shut closes exactly that share, and costs fewer
    MACs the more it closes. Models are built, not trained: the curve is about what ran."""
    import math

    from lic import data

    torch.manual_seed(0)
    base = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    base.update(force=True)
    monkeypatch.setattr(zoo, "get", lambda arch, lam, scale, **kw: base)

    def fake_get(arch, scale, variant, target=yin.TARGET_SPARSITY, **kw):
        model = yin.build(arch, scale, variant, base=copy.deepcopy(base)).eval()
        for g in model.gates():
            n = g.conv.in_channels
            g.ecg.set_alpha(torch.tensor([1e9 if i < math.floor(target * n) else -1e9 for i in range(n)]))
        model.update(force=True)
        return model
    monkeypatch.setattr(yin, "get", fake_get)
    images = data.test_images(smoke)[:1]
    rows = yin.tradeoff("bmshj2018-hyperprior", smoke, [0.5, 0.25], images, tmp_zoo / "measured")
    assert [(r["model"], r["target sparsity"]) for r in rows] == [("bm", 0.0), ("ecg+bm", 0.25), ("ecg+bm", 0.5)]
    assert rows[0]["closed (mean)"] == 0 and rows[0]["FLOP reduction (×)"] == pytest.approx(1, abs=1e-3)
    gated = fake_get("bmshj2018-hyperprior", smoke, "ecg+bm", 0.25).gates()
    expected = sum(math.floor(0.25 * g.conv.in_channels) / g.conv.in_channels for g in gated) / len(gated)
    assert rows[1]["closed (mean)"] == pytest.approx(expected)
    assert 1 < rows[1]["FLOP reduction (×)"] < rows[2]["FLOP reduction (×)"]
    assert rows[1]["FLOP reduction min (×)"] <= rows[1]["FLOP reduction (×)"] <= rows[1]["FLOP reduction max (×)"]


def test_the_chapters_tables_say_what_the_gates_cost_and_whether_rate_rises_with_lambda():
    import pandas as pd

    lams = (0.0035, 0.007, 0.013, 0.025)

    def rows(model, shift):  # a curve of PSNR against bpp; `shift` of the rate at equal PSNR
        return [{"arch": "a", "model": model, "lambda": lam, "bpp": (10 * lam + 0.1) * (1 + shift),
                 "psnr": 30 + 200 * lam, "psnr_drop_pct": 1.0 + i, "flop_reduction": 1.5} for i, lam in enumerate(lams)]
    res = pd.DataFrame(rows("zoo (one per λ)", 0.0) + rows("ecg+bm", 0.10) + rows("bm", 0.0))
    table = yin.bd_table(res, ["a"], ["ecg+bm", "bm"])
    bd_ = table.set_index("model")["BD-rate vs zoo (%)"]
    assert bd_["ecg+bm"] == pytest.approx(10.0, abs=0.01) and bd_["bm"] == pytest.approx(0.0, abs=0.01)
    assert table.set_index("model").loc["bm", "PSNR drop (%), range"] == "1.00 – 4.00"
    assert "a: BM alone +0.0 %, ECG + BM +10.0 %, so the gates cost +10.0 points" == yin.gate_cost_text(table)
    assert "not measured" in yin.gate_cost_text(table[table.model != "bm"])
    sweep = pd.DataFrame([{"arch": "a", "model": "bm", "lambda": lam, "bpp": b} for lam, b in zip(lams, (0.2, 0.3, 0.5, 0.9))]
                         + [{"arch": "a", "model": "vbr", "lambda": lam, "bpp": b} for lam, b in zip(lams, (0.2, 0.4, 0.3, 0.9))])
    assert yin.monotone(sweep) == {("a", "bm"): True, ("a", "vbr"): False}
    trade = pd.DataFrame([{"target sparsity": t, "closed (mean)": t, "FLOP reduction (×)": 1 + t, "BD-rate vs zoo (%)": 40 * t}
                          for t in (0.0, 0.25, 0.5)])
    points, shape = yin.tradeoff_text(trade)
    assert points.startswith("BM alone: 0.00 of the inputs closed, 1.00× fewer FLOPs at +0.0 % BD-rate; αₜ = 0.25")
    assert shape.startswith("rises with the target")
    assert "does not rise steadily" in yin.tradeoff_text(trade.assign(**{"BD-rate vs zoo (%)": [0.0, 30.0, 20.0]}))[1]
    fig = yin.tradeoff_figure(trade, "a")
    assert [t.get_text() for t in fig.axes[0].texts] == ["BM alone", "αₜ = 0.25", "αₜ = 0.50"]
