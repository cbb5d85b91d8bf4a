"""Mask decay (07's EVC control): the schedule, the exact removal of decayed channels, and a
trained decoder with exactly Liao's pruned architecture that keeps the zoo's bitstream."""
import pytest
import torch

from lic import data, liao, maskdecay, surgery, zoo


@pytest.fixture
def base(smoke):
    torch.manual_seed(0)
    return zoo.build_for("bmshj2018-hyperprior", smoke).eval()


def test_the_dropped_masks_fall_linearly_to_zero_halfway_and_stay_there():
    assert [maskdecay.mask_value(s, 100) for s in (0, 25, 50, 75, 100)] == [1.0, 0.5, 0.0, 0.0, 0.0]
    assert maskdecay.mask_value(1, 1) == 0.0  # a one-step run still ends narrow


def test_removing_zeroed_channels_gives_exactly_the_masked_decoder(base):
    scores = liao.channel_scores(base, liao.l1_norm)
    counts = liao.keep_counts(base, 0.55)
    M = surgery.shape_of(base.g_s[0])[0]
    drop = maskdecay.add_masks(base, 0.55, scores)
    with torch.no_grad():
        for conv, channels in drop.items():
            base.get_submodule(conv).mask[channels] = 0.0
        y = torch.randn(1, M, 4, 6)
        masked = base.g_s(y)
        kept = maskdecay.remove_masked(base)
        assert torch.allclose(base.g_s(y), masked, atol=1e-6)
    layers = [c for c, _, _ in surgery.hidden_layers(base)]
    assert [surgery.shape_of(base.get_submodule(c))[1] for c in layers] == [len(kept[c]) for c in layers] == counts
    assert all(not set(kept[c]) & set(drop[c]) for c in drop)  # the dropped channels are the ones gone


def test_a_mask_still_decaying_is_refused(base):
    drop = maskdecay.add_masks(base, 0.55, liao.channel_scores(base, liao.l1_norm))
    conv = next(iter(drop))
    base.get_submodule(conv).mask[drop[conv]] = 0.5
    with pytest.raises(ValueError, match="still decaying"):
        maskdecay.remove_masked(base)


def test_a_decayed_decoder_has_liaos_architecture_and_the_zoos_bitstream(base, smoke):
    base.update(force=True)
    scores = liao.channel_scores(base, liao.l1_norm)
    pruned = zoo.build_for("bmshj2018-hyperprior", smoke)
    pruned.load_state_dict(base.state_dict())
    liao.prune_decoder(pruned, 0.55, scores)
    narrow = maskdecay.decay(base, 0.55, scores, data.train_set(smoke), steps=6, lmbda=0.0067, scale=smoke,
                             progress=False)
    assert not any(isinstance(m, maskdecay.Decaying) for m in narrow.modules())
    assert liao.decoder_macs(narrow, 64, 64) == liao.decoder_macs(pruned, 64, 64)
    assert surgery.channel_config(narrow) == surgery.channel_config(pruned)
    narrow.update(force=True)
    x = torch.rand(1, 3, 64, 64)
    a, b = base.compress(x), narrow.compress(x)
    assert a["strings"] == b["strings"]  # g_s alone trained
    with torch.no_grad():
        moved = [not torch.equal(p, q) for p, q in zip(narrow.g_s.parameters(), pruned.g_s.parameters())
                 if p.shape == q.shape]
    assert any(moved)  # it trained (the kept weights moved from the zoo's)
