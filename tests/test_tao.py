"""Tao et al. (AdaNIC): the slimmable supernet, its tiled spatially adaptive execution, JUMC labels,
the capacity map in the bitstream, the routing agents."""
import math

import pytest
import torch
import torch.nn.functional as F
from compressai.layers import GDN
from compressai.models import MeanScaleHyperprior

from lic import tao
from lic.models import agents, slimmable
from lic.models.slimmable import SlimConvTranspose2d, from_mean_scale, uniform_router


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    base = MeanScaleHyperprior(16, 24).eval()
    with torch.no_grad():  # a trained-looking GDN: off-diagonal γ, varied β
        for m in base.modules():
            if isinstance(m, GDN):
                m.gamma.add_(0.05 * torch.rand_like(m.gamma))
                m.beta.add_(0.1 * torch.rand_like(m.beta))
    return base, from_mean_scale(base).eval()


def _x(n=2, h=128, w=192, seed=1):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_capacities_follow_the_papers_fractions():
    assert slimmable.capacities(64) == (38, 45, 51, 58, 64)
    assert slimmable.capacities(160) == (96, 112, 128, 144, 160)  # the paper's Table 2
    with pytest.raises(ValueError, match="too narrow"):
        slimmable.capacities(3)


def test_widest_capacity_is_the_original_model_exactly(nets):
    base, net = nets
    x = _x()
    with torch.no_grad():
        a, b = base(x), net(x)
    assert torch.equal(a["x_hat"], b["x_hat"])
    assert torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])


def test_slim_gdn_at_full_width_is_gdn():
    g = GDN(12)
    s = slimmable.SlimGDN(12, 5)
    s.load_state_dict(g.state_dict(), strict=False)
    x = torch.randn(2, 12, 8, 8)
    assert torch.equal(g(x), s(x, 4))
    assert s(x[:, :7], 0).shape == (2, 7, 8, 8)  # sliced to the input's width


@torch.no_grad()
def test_full_capacity_map_equals_the_dense_operators(nets):
    _, net = nets
    x = _x()
    full = torch.full((2, 2, 3), 4)
    y = net.g_a(x)
    assert (net.analysis(x, tcm=full) - y).abs().max() < 1e-5           # SA-Conv + SA-GDN
    assert (net.synthesis(y, tcm=full) - net.g_s(y)).abs().max() < 1e-5  # SA-TConv + SA-IGDN
    assert (net(x, tcm=full)["x_hat"] - net(x)["x_hat"]).abs().max() < 1e-5  # the whole codec


@torch.no_grad()
@pytest.mark.parametrize("c", range(5))
def test_uniform_map_equals_the_slim_sub_model(nets, c):
    _, net = nets
    x = _x()
    tiled = net(x, tcm=torch.full((2, 2, 3), c))["x_hat"]
    assert (tiled - net(x, capacity=c)["x_hat"]).abs().max() < 1e-5


def _masked(seq, x, tcm, block, stride_in):
    """Reference for a mixed map: every layer runs densely at every capacity on the whole map,
    and each block keeps its own capacity's output (what tiles compute, without tiles)."""
    stride = stride_in
    units = seq.units()
    for j, (conv, gdn) in enumerate(units):
        t = isinstance(conv, SlimConvTranspose2d)
        stride = stride // conv.stride[0] if t else stride * conv.stride[0]
        out = None
        for c in range(len(seq.widths)):
            cin = x.shape[1] if j == 0 else seq.widths[c]
            y = conv(x[:, :cin], None if j == len(units) - 1 else seq.widths[c])
            if gdn is not None:
                y = gdn(y, c)
            y = F.pad(y, (0, 0, 0, 0, 0, conv.out_channels - y.shape[1]))
            mask = (tcm == c).float().repeat_interleave(block // stride, 1).repeat_interleave(block // stride, 2)
            out = y * mask[:, None] if out is None else out + y * mask[:, None]
        x = out
    return x


@torch.no_grad()
def test_tiles_of_a_mixed_map_equal_the_masked_reference(nets):
    _, net = nets
    x = _x(h=192, w=256)
    tcm = torch.randint(0, 5, (2, 3, 4), generator=torch.Generator().manual_seed(3))
    y = net.analysis(x, tcm=tcm)
    assert (y - _masked(net.g_a, x, tcm, 64, 1)).abs().max() < 1e-5
    assert (net.synthesis(y, tcm=tcm) - _masked(net.g_s, y, tcm, 64, 16)).abs().max() < 1e-5


@torch.no_grad()
def test_border_effect_stays_within_the_neighbouring_blocks(nets):
    """A block whose neighbours all share its capacity decodes as that capacity's sub-model would:
    the paper's border effect (narrower neighbours' missing channels) reaches at most one block."""
    _, net = nets
    y = net.g_a(_x(n=1, h=320, w=320))
    tcm = torch.full((1, 5, 5), 1)
    tcm[0, 0, 0] = 4                      # one differing block in a corner
    mixed = net.synthesis(y, tcm=tcm)
    uniform = net.g_s(y, 1)
    diff = (mixed - uniform).abs().amax(1)[0]
    assert diff[128:, :].max() < 1e-5 and diff[:, 128:].max() < 1e-5   # two blocks away: exact
    assert diff[:64, :64].max() > 1e-3                                   # the differing block differs


@torch.no_grad()
def test_mixed_capacity_bitstream_round_trips_and_pays_for_its_map(nets):
    _, net = nets
    net.update(force=True)
    x = _x(n=1)
    tcm = torch.tensor([[[0, 4, 2], [1, 3, 0]]])
    enc = net.compress(x, tcm=tcm)
    assert len(enc["strings"]) == 3 and len(enc["strings"][2][0]) == slimmable.tcm_bytes((2, 3))
    dec = net.decompress(enc["strings"], enc["shape"])
    ref = net(x, tcm=tcm)["x_hat"].clamp(0, 1)
    assert (dec["x_hat"] - ref).abs().max() < 1e-4
    routed = slimmable.Routed(net, uniform_router(2, 64))
    enc = routed.compress(x)
    assert (routed.decompress(enc["strings"], enc["shape"])["x_hat"] - net(x, capacity=2)["x_hat"].clamp(0, 1)).abs().max() < 1e-4


def test_capacity_map_packs_three_bits_a_block():
    tcm = torch.tensor([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
    data = slimmable.pack_tcm(tcm)
    assert len(data) == 4  # 10 blocks x 3 bits = 30 bits
    assert torch.equal(slimmable.unpack_tcm(data, (2, 5)), tcm)


@pytest.mark.parametrize("tcm, x, message", [
    (torch.zeros(1, 3, 3, dtype=torch.long), _x(n=1), r"must be \(1, 2, 3\)"),
    (torch.full((1, 2, 3), 5), _x(n=1), "capacities 0..4"),
    (torch.zeros(1, 1, 1, dtype=torch.long), _x(n=1, h=32, w=32), "smaller than one 64x64 block"),
    (torch.zeros(1, 1, 1, dtype=torch.long), _x(n=1, h=96, w=64), "whole number of 64x64 blocks"),
])
def test_bad_capacity_maps_say_what_fits(nets, tcm, x, message):
    _, net = nets
    with pytest.raises(ValueError, match=message):
        net.compress(x, tcm=tcm)


def test_unknown_capacity_is_a_clear_error(nets):
    _, net = nets
    with pytest.raises(ValueError, match="C1..C5"):
        net(_x(n=1), capacity=7)


def test_jumc_picks_the_narrowest_admissible_capacity():
    # costs for capacities C1..C5 of four blocks (bpp units), ε = 0.02
    costs = torch.tensor([[1.10, 1.00, 1.015, 1.50],   # C1
                          [1.01, 1.00, 1.030, 1.30],   # C2
                          [1.01, 1.00, 1.000, 1.10],   # C3
                          [1.00, 1.00, 1.000, 1.02],   # C4
                          [1.00, 1.00, 1.000, 1.00]])  # C5
    labels = tao.jumc(costs, 0.02)
    # block 0: C1 too costly, C2..C5 fine -> C2; block 1: all equal -> C1;
    # block 2: C1 within ε but C2 is not -> C3 (every wider capacity must be admissible); block 3: C4
    assert labels.tolist() == [1, 0, 2, 3]
    assert tao.jumc(costs, 0.0).tolist() == [3, 0, 2, 4]
    assert tao.delta_costs(costs).shape == (4, 4)
    with pytest.raises(ValueError, match="ε"):
        tao.jumc(costs, -1)


def test_picture_level_labels_use_the_mean_cost():
    costs = torch.zeros(5, 1, 2, 2)
    costs[0, 0, 0, 0] = 1.0  # one expensive block: the mean ΔCost of C1 is 0.25 > ε
    assert tao.picture_labels(costs, 0.02).tolist() == [1]
    assert tao.jumc(costs, 0.02)[0].tolist() == [[1, 0], [0, 0]]


@torch.no_grad()
def test_block_costs_add_up_to_the_picture_loss(nets):
    _, net = nets
    x = _x(n=1)
    costs = tao.block_costs(net, x, 0.01)
    out = net(x, capacity=4)
    bits = sum(-torch.log2(v.clamp_min(1e-9)).sum() for v in out["likelihoods"].values())
    mse = ((out["x_hat"].clamp(0, 1) - x) ** 2).mean()
    assert costs.shape == (5, 1, 2, 3)
    assert abs(costs[4].mean() - (bits / x[0, 0].numel() + 0.01 * 255 ** 2 * mse)) < 1e-3


def test_agents_predict_one_capacity_per_block():
    x = _x(n=2, h=256, w=192)
    for agent in (agents.teacher(), agents.teacher(input_scale=0.5), agents.student()):
        out = agent.eval()(x)
        assert out["logits"].shape == (2, 5, 4, 3)
        assert agent.predict(x).shape == (2, 4, 3)
    assert agents.teacher()(x)["delta"].shape == (2, 4, 4, 3)
    assert "delta" not in agents.student()(x)


def test_agents_learn_a_simple_labelling():
    """Flat patches get C1, textured ones C5: a teacher learns it from costs alone."""
    torch.manual_seed(0)
    n = 64
    x = torch.full((n, 3, 64, 64), 0.5)
    x[n // 2:] = torch.rand(n // 2, 3, 64, 64)
    costs = torch.zeros(5, n, 1, 1)
    costs[:4, n // 2:] = 1.0                      # textured: every narrower capacity costs 1 bpp more
    labels = {"x": (x * 255).to(torch.uint8), "costs": costs}
    agent = tao.train_agent(agents.teacher(), labels, 0.02, steps=60, batch=16, lr=3e-3, progress=False)
    assert tao.agent_scores(agent, labels)["accuracy"] > 0.9


def test_supernet_loss_covers_the_capacities_it_names(nets):
    _, net = nets
    x = _x(n=1, h=64, w=64)
    net.train()
    try:
        terms = tao.SlimHook(0.01, 5, sandwich=False).loss(net, None, x)
        assert set(terms) == {"rd_C1", "rd_C2", "rd_C3", "rd_C4"}
        torch.manual_seed(0)
        picks = [tuple(tao.SlimHook(0.01, 5, sandwich=True).capacities()) for _ in range(30)]
        assert all(p[0] == 0 and 1 <= p[1] <= 3 for p in picks) and len({p[1] for p in picks}) == 3
        terms["rd_C1"].backward()  # the narrow loss reaches the shared weights
        assert net.g_s[0].weight.grad is not None and net.g_s[0].weight.grad[:, :slimmable.capacities(16)[0]].abs().sum() > 0
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()


@pytest.mark.slow
def test_a_stored_supernet_trains_on_to_a_larger_budget_beside_the_original(smoke, tmp_zoo):
    import pandas as pd

    from lic import store

    lam = smoke.slim_lambdas[0]
    net = tao.get(smoke, lam, progress=False)  # the zoo model, then the supernet (smoke: minutes)
    more = smoke.slim_steps + 10
    longer = tao.continue_supernet(smoke, lam, more, progress=False)
    m = store.read_manifest(tao.CHAPTER, smoke)
    e = m[tao.budget_name(tao.model_name(lam), more)]
    assert e["steps"] == more and e["continued_at_step"] == smoke.slim_steps and m[tao.model_name(lam)]["steps"] == smoke.slim_steps
    curve = pd.read_csv(tao.models_dir(smoke) / e["curve"])
    assert curve.step.max() == more and any(c.startswith("val_psnr@C") for c in curve.columns)
    assert [lp["loop"] for lp in e["precision"]][-1] != "restart" and any(lp["loop"] == "restart" for lp in e["precision"])
    assert not torch.equal(longer.g_s[0].weight, net.g_s[0].weight)
    # the learning curve from step 0: the supernet as built from the zoo model, its widest capacity that model
    from lic import data, zoo
    from lic.evaluate import evaluate

    lc = tao.learning_curve(smoke, lam)
    assert lc.step.tolist()[0] == 0 and lc.step.is_monotonic_increasing and len(lc) == 1 + len(
        pd.read_csv(tao.models_dir(smoke) / m[tao.model_name(lam)]["curve"]))
    assert tao.budgets(smoke, lam)[-1] == (more, tao.budget_name(tao.model_name(lam), more))
    whole = tao.learning_curve(smoke, lam, name=tao.budgets(smoke, lam)[-1][1])  # the figure's: to the largest budget
    assert whole.step.tolist()[0] == 0 and whole.step.max() == more and whole.step.is_monotonic_increasing
    zoo_psnr = evaluate(zoo.get(tao.ARCH, lam, smoke, train_missing=False), data.test_images(smoke)[:4], real=False,
                        progress=False)["mean"]["psnr"]
    assert lc[f"psnr@C{net.n_capacities}"].iloc[0] == pytest.approx(zoo_psnr, abs=1e-4)
    # the budget curve: Table 3's quality side at each budget, read against C5 through the zoo's curve
    from lic.evaluate import quality_cached, rate_at
    from lic.models.slimmable import AtCapacity

    images = data.test_images(smoke)
    rows = tao.budget_curve(smoke, lam, images, tmp_zoo / "measured")
    assert [(r["steps"], r["model"]) for r in rows] == [(smoke.slim_steps, tao.model_name(lam)),
                                                       (more, tao.budget_name(tao.model_name(lam), more))]
    zoo_q = [quality_cached(zoo.get(tao.ARCH, x, smoke), images, tmp_zoo / "measured") for x in smoke.lambdas]
    c5 = quality_cached(AtCapacity(longer, -1), images, tmp_zoo / "measured", identity="test C5")
    want = 100 * (c5["bpp"] / rate_at({"bpp": [q["bpp"] for q in zoo_q], "psnr": [q["psnr"] for q in zoo_q]},
                                      c5["psnr"]) - 1)
    assert rows[1]["C5 vs zoo (%)"] == pytest.approx(want, nan_ok=True)  # the stored weights at that budget
    assert {"C1 vs C5 (%)", "C3 vs C5 (%)", "JUMC true vs C5 (%)"} <= set(rows[1])


def test_the_tao_budget_text_decides_the_jumc_bar_at_the_largest_budget_and_gives_the_pace():
    from lic import report

    row = lambda steps, c1, jumc: {"steps": steps, "C1 vs C5 (%)": c1, "JUMC true vs C5 (%)": jumc, "C5 vs zoo (%)": 12.0}
    text = tao.budget_text([row(3000, 40.0, 3.0), row(12000, 30.0, 0.8)], report.paper_table("tao_table3"))
    assert "3,000 steps: C1 +40.0 %, JUMC labels +3.0 %" in text and "the paper's BD-rates: C1 +9.8 %" in text
    assert "(within 1 % of C5) is met" in text
    assert "closes by 5.0 points per doubling of steps: at that pace the bar, 20.2 points away" in text
    assert "is not met" in tao.budget_text([row(3000, 40.0, 3.0)], report.paper_table("tao_table3"))
    assert "one budget only so far" in tao.budget_text([row(3000, 40.0, 3.0)], report.paper_table("tao_table3"))
    slowing = tao.budget_text([row(3000, 82.8, 5.4), row(10000, 34.4, 6.1), row(30000, 12.1, 5.0)],
                              report.paper_table("tao_table3"))
    assert "21.3 points per doubling of steps over the whole range, 14.1 between the last two budgets (slowing)" in slowing
    assert "≈ 0.1–0.2 more doublings off at those paces (≈ 32,000–34,000 steps in all)" in slowing
    from lic import budget

    fig = budget.curve_figure([row(3000, float("nan"), 3.0), row(12000, 30.0, 0.8)], "C1 vs C5 (%)", paper=9.8)
    assert [t.get_text() for t in fig.axes[0].texts] == ["30.0", "paper"]  # no "nan" written on the figure
    ax = fig.axes[0]  # steps on a log₂ axis, ticks at the budgets: the pace is stated per doubling
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["3k", "12k"]
    assert budget._steps_label(1_600_000) == "1.6M" and budget._steps_label(500) == "500"


def test_the_supernet_curves_have_a_panel_per_lambda_and_label_each_capacity_in_place():
    import pandas as pd

    def psnr(c, step):  # as built C1–C4 far below, C5 the zoo model just above; trained capacities 0.01 dB apart
        if step == 0:
            return 30.2 if c == 5 else 15 + c * 0.5
        return 30 + c * 0.01 + step / 1e5

    rows = [{"λ": lam, "step": step, **{f"psnr@C{c}": psnr(c, step) for c in range(1, 6)}}
            for lam in (0.0035, 0.013, 0.025) for step in (0, 2500, 3000)]
    fig = tao.curve_figure(pd.DataFrame(rows))
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 3 and all(ax.get_legend() is None for ax in shown)
    assert [t.get_text() for t in shown[0].texts] == ["C1", "C2", "C3", "C4", "C5"]
    ys = [t.get_position()[1] for t in shown[0].texts]  # spread apart in axes fractions, in capacity order
    assert all(b - a > 0.03 for a, b in zip(ys, ys[1:]))
    assert shown[0].lines[0].get_xdata()[0] == 0  # from step 0 ...
    lo, hi = shown[0].get_ylim()  # ... but the y-range is the trained rows' and C5's start (the zoo model):
    assert 29.9 < lo < 30.02 and 30.2 < hi < 30.3  # the capacities below it are named in the title
    step0 = "\nstep 0 (as built): C1–C4 at 15.5–17.0 dB, below the axis"
    assert [ax.get_title() for ax in shown] == [f"λ = {lam}, to step 3,000{step0}" for lam in (0.0035, 0.013, 0.025)]
    longer = pd.DataFrame(rows + [{"λ": 0.013, "step": 30000, **{f"psnr@C{c}": 30.5 for c in range(1, 6)}}])
    shown = [ax for ax in tao.curve_figure(longer).axes if ax.get_visible()]
    assert shown[1].get_title() == f"λ = 0.013, to step 30,000{step0}" and shown[0].get_xlim()[1] < 5000  # no shared axis
    gap = pd.DataFrame([{**r, "psnr@C2": 30.2} if r["step"] == 0 else r for r in rows])  # C2 as built on the axis
    assert tao.curve_figure(gap).axes[0].get_title().endswith("C1, C3, C4 at 15.5–17.0 dB, below the axis")
    no_start = pd.DataFrame([r for r in rows if r["step"] > 0])  # no step-0 row: nothing said about it
    assert tao.curve_figure(no_start).axes[0].get_title() == "λ = 0.0035, to step 3,000"


def test_speed_ups_paired_within_repeats_give_a_range_and_a_capacity_within_it_is_partly_not_a_coin_flip():
    import pandas as pd

    from lic import report

    def row(method, lam, bpp, psnr, enc, dec):
        return {"lambda": lam, "method": method, "bpp": bpp, "psnr": psnr, "macs": 10.0, "mean_capacity": 5,
                "encode_ms": float(pd.Series(enc).median()), "decode_ms": float(pd.Series(dec).median()),
                "decode_spread_pct": 0.0, "encode_ms_repeats": enc, "decode_ms_repeats": dec}
    rows = [row("C5", lam, b, p, [10, 10, 10], [10, 12, 10]) for lam, b, p in ((0.0035, 0.3, 29.0), (0.013, 0.6, 32.0))]
    rows += [row("C4", lam, b * 1.1, p, [5, 5, 5], [5, 5, 7]) for lam, b, p in ((0.0035, 0.3, 29.0), (0.013, 0.6, 32.0))]
    c4 = {r["method"]: r for r in tao.summarize(rows)}["C4"]
    # per repeat (10 + 10) / (5 + 5) = 2, (10 + 12) / (5 + 5) = 2.2, (10 + 10) / (5 + 7) = 1.67
    assert c4["codec speed-up, paired low (%)"] == pytest.approx(100 * (20 / 12 - 1))
    assert c4["codec speed-up, paired high (%)"] == pytest.approx(120.0)
    no_repeats = [{k: v for k, v in r.items() if not k.endswith("_repeats")} for r in rows]
    assert math.isnan({r["method"]: r for r in tao.summarize(no_repeats)}["C4"]["codec speed-up, paired high (%)"])

    p3 = report.paper_table("tao_table3").set_index("method")  # bars (90 % of the paper's): 12.6, 24.5, 38.8, 56.6
    caps = ["C4", "C3", "C2", "C1"]

    def t3(speeds, highs):
        return pd.DataFrame([{"method": c, "codec speed-up (%)": s, "codec speed-up, paired high (%)": h}
                             for c, s, h in zip(caps, speeds, highs)]).set_index("method")
    assert tao.uniform_verdict(t3([20, 30, 40, 60], [25, 35, 45, 65]), p3, caps)[0] == "reproduced"
    verdict, met, noise = tao.uniform_verdict(t3([20, 30, 30, 60], [25, 35, 42, 65]), p3, caps)
    assert verdict == "partly reproduced" and noise == ["C2"] and met == ["C4", "C3", "C1"]
    verdict, met, noise = tao.uniform_verdict(t3([0, 0, 30, 0], [5, 5, 42, 5]), p3, caps)
    assert verdict == "partly reproduced" and met == [] and noise == ["C2"]  # only noise: still not "not"
    assert tao.uniform_verdict(t3([0, 0, 30, 0], [5, 5, 35, 5]), p3, caps)[0] == "not reproduced"
