import copy

import pytest
import torch

from lic import evaluate as ev
from lic import liao, zoo


@pytest.fixture
def model(smoke):
    torch.manual_seed(0)
    return zoo.build_for("bmshj2018-hyperprior", smoke).eval()


def test_hidden_layers_of_the_hyperprior_decoder(model):
    assert liao.hidden_layers(model) == [("g_s.0", "g_s.1", "g_s.2"), ("g_s.2", "g_s.3", "g_s.4"),
                                         ("g_s.4", "g_s.5", "g_s.6")]


def test_estimator_ranks_a_narrow_channel_below_a_wide_one(model, smoke):
    with torch.no_grad():
        model.g_s[0].weight[:, 0] *= 0.01  # channel 0 barely responds to its input
        model.g_s[0].weight[:, 1] *= 10.0  # channel 1 responds strongly
    x0 = torch.round(torch.randn(2, smoke.M, 3, 3) * 2)
    e = liao.activation_range(model, 0, x0, iters=30)
    assert e.shape == (smoke.N,) and (e >= 0).all()
    assert e[0] < e[1]
    assert e[0] == e.min() and e[1] == e.max()


def test_scores_do_not_depend_on_pruning_later_layers(model, smoke):
    x0 = torch.round(torch.randn(2, smoke.M, 2, 2) * 2)
    before = liao.activation_range(model, 0, x0, iters=10)
    pruned = copy.deepcopy(model)
    conv, gdn, nxt = liao.hidden_layers(pruned)[2]
    from lic import surgery

    surgery.remove_channels(pruned, conv, list(range(5)), followers=[gdn], consumers=[nxt])
    assert torch.allclose(before, liao.activation_range(pruned, 0, x0, iters=10))


def test_keep_counts_meet_the_parameter_ratio(model):
    full = liao.decoder_parameters(model)
    sizes = []
    for r in (0.0, 0.2, 0.33, 0.4, 0.55):
        m = copy.deepcopy(model)
        liao.prune_decoder(m, r, liao.channel_scores(m, liao.l1_norm))
        sizes.append(liao.decoder_parameters(m))
        assert 1 - sizes[-1] / full == pytest.approx(r, abs=0.04)
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        liao.keep_counts(model, 1.2)
    with pytest.raises(ValueError, match="x0"):
        liao.activation_range(model, 0, None)


def test_pruned_decoder_is_smaller_cheaper_and_still_codes(model, smoke, tmp_path):
    m = copy.deepcopy(model)
    info = liao.prune_decoder(m, 0.4, liao.channel_scores(m, liao.random_scores(1)))
    assert liao.decoder_macs(m, 256, 384) < liao.decoder_macs(model, 256, 384)
    sha = zoo.save(m, tmp_path / "p.pt", "bmshj2018-hyperprior", smoke.widths("bmshj2018-hyperprior"))
    loaded = zoo.load(tmp_path / "p.pt", sha)
    assert [loaded.get_submodule(c).weight.shape[1] for c in info["kept"]] == [info["counts"][i] for i in (2, 1, 0)]
    img = (torch.rand(176, 192, 3) * 255).to(torch.uint8).numpy()
    row = ev.evaluate(loaded, [("x", img)], progress=False)["mean"]
    assert row["bpp"] > 0 and row["decode_vs_forward_db"] >= ev.MATCH_DB


def test_l1_criterion_prefers_the_heavier_filter(model):
    with torch.no_grad():
        model.g_s[2].weight[:, 3] = 0
    assert liao.l1_norm(model, 1).argmin() == 3


def test_paper_setup_facts_of_compressai_quality_3_decoder():
    """The slides' 1.49 M parameters and 3618 M FLOPs are CompressAI's bmshj2018-hyperprior
    (N=128, M=192) g_s: its parameter count and transposed-conv MACs at 384x256."""
    from compressai.models import ScaleHyperprior

    m = ScaleHyperprior(128, 192)
    assert liao.decoder_parameters(m) == 1_493_123
    assert round(liao.decoder_macs(m, 256, 384, gdn=False) / 1e6) == 3618


def test_sweep_uses_given_scores_instead_of_estimating_them(model, smoke, tmp_path, monkeypatch):
    from lic import data as lic_data

    data = lic_data.train_set(smoke, seed=0)
    images = lic_data.test_images(smoke)[:1]
    given = {"L1-norm": liao.channel_scores(model, liao.l1_norm)}
    estimated = []
    real = liao.channel_scores
    monkeypatch.setattr(liao, "channel_scores", lambda m, fn, x=None: estimated.append(fn) or real(m, fn, x))
    kept = {}
    rows = liao.sweep(model, 0.013, {"L1-norm": liao.l1_norm}, [0.5], None, data, images, smoke, tmp_path, 2,
                      liao.timing_latent(model, images[0][1]), progress=False, keep=kept, scores=given)
    assert estimated == []  # the given scores were used, not estimated again
    assert [(r["criterion"], r["ratio"]) for r in rows] == [("unpruned", 0.0), ("L1-norm", 0.5)]
    assert set(kept) == {("unpruned", 0.0), ("L1-norm", 0.5)}
    assert rows[1]["decoder_params"] < rows[0]["decoder_params"]
    assert len(list(tmp_path.rglob("L1-norm-0.50-0.0130.state.pt"))) == 1  # its fine-tune is resumable
