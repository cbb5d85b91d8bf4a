"""ERHP (Luo et al.): compactor folding is exact for every layer kind, removing masked channels
after the fold changes nothing, the rate-only path equals the model's own likelihoods, the mask
schedule meets its target, and pruned models survive save/load and real bitstreams."""
import copy
import json

import pytest
import torch
from torch import nn

from lic import luo, surgery, zoo
from lic.evaluate import evaluate
from lic.train import rd_loss, uses_channels_last

ARCHS = ["bmshj2018-hyperprior", "mbt2018-mean", "cheng2020-attn"]


def _random_compactor(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    comp = luo.Compactor(c)
    with torch.no_grad():
        comp.weight.add_(0.3 * torch.randn(comp.weight.shape, generator=g))
    return comp


@pytest.mark.parametrize("kind", ["conv", "deconv", "subpel"])
def test_folded_layer_equals_layer_then_compactor(kind):
    torch.manual_seed(0)
    if kind == "conv":
        layer, c = nn.Conv2d(5, 6, 3, stride=2, padding=1), 6
    elif kind == "deconv":
        layer, c = nn.ConvTranspose2d(5, 6, 5, stride=2, padding=2, output_padding=1), 6
    else:
        layer, c = nn.Sequential(nn.Conv2d(5, 6 * 4, 3, padding=1), nn.PixelShuffle(2)), 6
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    comp = _random_compactor(c)
    x = torch.randn(2, 5, 7, 9)
    with torch.no_grad():
        ref = comp(layer(x))
        folded = surgery.fold_1x1(layer, comp.weight)
        assert torch.allclose(folded(x), ref, atol=1e-5)
        keep = [0, 2, 3, 5]  # a cropped compactor R' (rows kept): the first rows of the same output
        cropped = surgery.fold_1x1(layer, comp.weight[keep])
        assert torch.allclose(cropped(x), ref[:, keep], atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_compactors_keep_the_function_and_merge_exactly(arch, smoke):
    torch.manual_seed(0)
    model = zoo.build_for(arch, smoke).eval()
    y = torch.randn(2, model.h_a[0].weight.shape[1], 16, 16)
    z = torch.randn(2, smoke.N, 4, 4)
    with torch.no_grad():
        before = model.h_a(y), model.h_s(z)
        luo.add_compactors(model)
        assert len(luo.compactors(model)) == len(luo.hyper_units(model)) - 1
        identity = model.h_a(y), model.h_s(z)
        for c in luo.compactors(model).values():  # any compactor, not just the identity
            c.weight.copy_(_random_compactor(c.weight.shape[0], seed=c.weight.shape[0]).weight)
        with_comp = model.h_a(y), model.h_s(z)
        merged = copy.deepcopy(model)
        info = luo.merge(merged)
        after = merged.h_a(y), merged.h_s(z)
    assert not luo.compactors(merged) and info["removed_norm_max"] == 0.0
    for a, b in zip(identity, before):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(after, with_comp):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_removing_masked_channels_after_merge_changes_nothing(arch, smoke):
    """Masked rows driven to zero (what ResRep's lasso aims at): removing them is exact for the
    hyper decoder's output; z loses only the removed (all-zero) channels."""
    torch.manual_seed(1)
    model = luo.add_compactors(zoo.build_for(arch, smoke).eval())
    dead = {}
    with torch.no_grad():
        for i, (name, c) in enumerate(luo.compactors(model).items()):
            c.weight.copy_(_random_compactor(c.weight.shape[0], seed=i).weight)
            dead[name] = [0, 3] if name != luo.z_unit(model) else []  # z: kept whole (see below)
            c.mask[dead[name]] = 0
            c.weight[dead[name]] = 0
    y = torch.randn(1, model.h_a[0].layer.weight.shape[1], 16, 16)
    full = luo.widths(model)
    with torch.no_grad():
        ref = model.h_s(model.h_a(y))
        info = luo.merge(model)
        out = model.h_s(model.h_a(y))
    assert torch.allclose(out, ref, atol=1e-5)
    for name, idx in dead.items():
        assert len(info["kept"][name]) + len(idx) == full[name] == luo.widths(model)[name] + len(idx)
        assert not set(idx) & set(info["kept"][name])


def test_z_channels_leave_with_their_entropy_model(smoke):
    torch.manual_seed(2)
    model = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    eb = model.entropy_bottleneck
    with torch.no_grad():
        for p in eb.parameters():
            p.add_(0.1 * torch.randn_like(p))
    keep = [1, 4, 5, 9]
    z = torch.randn(1, smoke.N, 4, 4)
    small = surgery.select_out(eb, keep).eval()
    with torch.no_grad():
        _, lik = eb(z, training=False)
        _, lik_small = small(z[:, keep], training=False)
    assert torch.allclose(lik_small, lik[:, keep], atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_rate_path_equals_the_models_own_likelihoods(arch, smoke):
    torch.manual_seed(0)
    model = zoo.build_for(arch, smoke).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        full = model(x)
        rate = luo.RatePath(model).eval()(x)
    assert rate["x_hat"] is None
    for k in ("y", "z"):
        assert torch.allclose(rate["likelihoods"][k], full["likelihoods"][k], atol=1e-6)
    terms = rd_loss(rate, x, 0.01)
    assert terms["mse"] == 0 and terms["loss"] == terms["bpp"]
    assert uses_channels_last(luo.RatePath(model)) == (arch != "cheng2020-attn")


@pytest.mark.parametrize("arch", ARCHS)
def test_training_on_cached_latents_is_training_on_the_images(arch, smoke):
    """An image the size of the crop: its latent window is the whole y, so the rate path on
    Latents gives the same likelihoods, bpp and loss as on the image (or its mirror image)."""
    import numpy as np

    from lic.data import ImageFolder

    torch.manual_seed(0)
    model = zoo.build_for(arch, smoke).eval()
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    data = ImageFolder([img], crop=64)
    lat = luo.Latents.of(model, data, progress=False)
    assert lat._y is None  # nothing computed before the first batch (a finished resume costs nothing)
    batch = lat.batch(6, 64)
    assert batch.shape == lat.shape(6, 64) == (6, model.g_a(torch.zeros(1, 3, 64, 64)).shape[1], 4, 4)
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]
    rate = luo.RatePath(model).eval()
    with torch.no_grad():
        views = {"image": x, "mirror": x.flip(-1)}
        seen = set()
        for y in batch:
            y = y[None]
            match = [k for k, v in views.items() if torch.equal(model.g_a(v), y)]
            assert match, "a latent window is neither the image's y nor its mirror's"
            seen.add(match[0])
            on_lat, on_img = rate(y), rate(views[match[0]])
            for k in ("y", "z"):
                assert torch.allclose(on_lat["likelihoods"][k], on_img["likelihoods"][k], atol=1e-6)
            a, b = rd_loss(on_lat, y, 0.01), rd_loss(on_img, views[match[0]], 0.01)
            assert torch.allclose(a["bpp"], b["bpp"], rtol=1e-6) and a["bpp"] > 0
    assert seen == {"image", "mirror"}


def test_latent_windows_are_random_crops_of_y(smoke):
    import numpy as np

    from lic.data import ImageFolder

    model = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    img = (np.random.default_rng(1).random((96, 160, 3)) * 255).astype(np.uint8)
    lat = luo.Latents.of(model, ImageFolder([img], crop=64), seed=3, progress=False)
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]
        y, mirror = model.g_a(x)[0], model.g_a(x.flip(-1))[0]
    ys = {(lat.sample(32).numpy().tobytes()) for _ in range(40)}
    windows = {v[:, i:i + 2, j:j + 2].numpy().tobytes() for v in (y, mirror) for i in range(5) for j in range(9)}
    assert ys <= windows and len(ys) > 10
    state = lat.state()
    first = lat.batch(3, 32)
    lat.set_state(state)
    assert torch.equal(lat.batch(3, 32), first)  # resumable like ImageFolder


def test_mask_schedule_reaches_its_target_in_steps_and_keeps_min(smoke):
    model = luo.add_compactors(zoo.build_for("bmshj2018-hyperprior", smoke))
    with torch.no_grad():
        for c in luo.compactors(model).values():
            c.weight.mul_(torch.linspace(0.5, 1.5, c.weight.shape[0]).reshape(-1, 1, 1, 1))
    first = luo.update_masks(model, target=0.7, per_update=5, min_keep=2)
    masked = sum(int((c.mask == 0).sum()) for c in luo.compactors(model).values())
    assert masked == 5 and 0 < first < 0.7
    removed = first
    for _ in range(40):
        removed = luo.update_masks(model, target=0.7, per_update=5, min_keep=2)
    assert removed >= 0.7
    for c in luo.compactors(model).values():
        assert int(c.mask.sum()) >= 2
    kept = {n: int(c.mask.sum()) for n, c in luo.compactors(model).items()}
    merged = copy.deepcopy(model)
    luo.merge(merged)
    assert luo.hyper_size(merged) == luo.hyper_size_for(model, kept)
    assert 1 - luo.hyper_size(merged) / luo.hyper_size(model) == pytest.approx(removed)


def test_resrep_gradient_rule():
    comp = luo.Compactor(4)
    hook = luo.ResRep(strength=0.5)
    comp.weight.grad = torch.ones_like(comp.weight)
    comp.mask[1] = 0
    hook.after_backward(_Holder(comp), 0)
    g = comp.weight.grad.flatten(1)
    w = comp.weight.detach().flatten(1)
    expected = torch.ones(4, 4)
    expected[1] = 0
    expected += 0.5 * w / w.norm(dim=1, keepdim=True)
    assert torch.allclose(g, expected)


class _Holder(nn.Module):
    """A stand-in model with one compactor at a prunable hyper-path position."""

    def __init__(self, comp):
        super().__init__()
        self.h_a = nn.Sequential(luo.Compacted(nn.Conv2d(3, 4, 1), 4), nn.ReLU(), nn.Conv2d(4, 4, 1))
        self.h_a[0].compactor = comp
        self.h_s = nn.Sequential(nn.Conv2d(4, 4, 1))


def test_erhp_prunes_trains_and_round_trips(smoke, tmp_path):
    from lic import data as lic_data

    torch.manual_seed(0)
    base = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    data = lic_data.train_set(smoke)
    model, merged, info = luo.erhp(base, 0.0067, data, smoke, tmp_path, steps=12, finetune_steps=4,
                                   target=0.5, every=2, per_update=10, progress=False)
    assert luo.hyper_size(model) < luo.hyper_size(base)
    assert info["mask_history"][-1]["removed"] >= 0.5
    assert all(p.requires_grad for p in model.parameters())
    # the main path did not move
    for k, v in base.g_a.state_dict().items():
        assert torch.equal(v, model.g_a.state_dict()[k])
    sha = zoo.save(model, tmp_path / "erhp.pt", "bmshj2018-hyperprior", smoke.widths("bmshj2018-hyperprior"))
    loaded = zoo.load(tmp_path / "erhp.pt", sha)
    assert surgery.channel_config(loaded) == surgery.channel_config(model)
    img = (torch.rand(192, 256, 3) * 255).to(torch.uint8).numpy()
    res = evaluate(loaded, [("noise", img)], progress=False)["mean"]
    assert res["decode_vs_forward_db"] > 40 and res["bpp"] > 0
    assert res["bpp_y"] + res["bpp_z"] == pytest.approx(res["bpp"])


def test_uniform_widths_match_a_parameter_budget(smoke):
    model = zoo.build_for("cheng2020-attn", smoke)
    size = luo.hyper_size(model) // 2
    w = luo.uniform_widths(model, size)
    sliced = copy.deepcopy(model)
    luo.slice_uniform(sliced, w)
    assert luo.hyper_size(sliced) == luo.hyper_size_for(model, w)
    assert abs(luo.hyper_size(sliced) - size) / size < 0.1
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert sliced.eval()(x)["x_hat"].shape == x.shape


def test_pruned_cheng2020_with_subpixel_units_round_trips(smoke, tmp_path):
    torch.manual_seed(3)
    model = luo.add_compactors(zoo.build_for("cheng2020-attn", smoke).eval())
    for c in luo.compactors(model).values():
        c.mask[: c.mask.numel() // 2] = 0
    luo.merge(model)
    assert "h_s.2" in luo.widths(model) and luo.widths(model)["h_s.2"] == smoke.N // 2  # sub-pixel unit
    sha = zoo.save(model, tmp_path / "c.pt", "cheng2020-attn", smoke.widths("cheng2020-attn"))
    loaded = zoo.load(tmp_path / "c.pt", sha)
    assert surgery.channel_config(loaded) == surgery.channel_config(model)
    img = (torch.rand(192, 256, 3) * 255).to(torch.uint8).numpy()
    res = evaluate(loaded, [("noise", img)], progress=False)["mean"]
    assert res["bpp"] > 0 and res["psnr"] > res["psnr_forward"] - 1


def test_bad_input_names_the_fix(smoke, tmp_path):
    with pytest.raises(TypeError, match="bmshj2018-hyperprior"):
        luo.hyper_units(nn.Sequential(nn.Conv2d(3, 3, 1)))
    base = zoo.build_for("bmshj2018-hyperprior", smoke)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        luo.erhp(base, 0.0067, None, smoke, tmp_path, steps=1, finetune_steps=1, target=70)


def test_a_rerun_measures_the_kept_variants_without_training(smoke, tmp_zoo, monkeypatch):
    from lic import data as lic_data
    from lic import points
    from lic.weights import fingerprint, is_entropy

    torch.manual_seed(0)
    base = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    data, images = lic_data.train_set(smoke), lic_data.test_images(smoke)[:1]
    kw = dict(steps=6, finetune_steps=2, target=0.5, other_strengths=(), progress=False)
    first_models, again_models = {}, {}
    first = luo.experiment(base, "bmshj2018-hyperprior", 0.0067, data, images, smoke, tmp_zoo / "run", keep=first_models, **kw)
    listed = json.loads((luo.trained_dir(smoke) / "manifest.json").read_text())
    assert len(listed) == 4  # ERHP, uniform, half, original + training
    assert all(abs(e["fp16_check"]["delta_psnr_db"]) < 0.01 for e in listed.values())
    assert all(e["train_seconds"] > 0 and e["recipe"]["steps"] == 6 for e in listed.values())
    # on another machine (no training states, no measurements): nothing is trained, not even the latents
    for name in ("erhp", "uniform", "Latents"):
        monkeypatch.setattr(luo, name, None)
    again = luo.experiment(base, "bmshj2018-hyperprior", 0.0067, data, images, smoke, tmp_zoo / "elsewhere",
                           keep=again_models, **kw)
    drop = ("encode_ms", "decode_ms", "encode_spread_pct", "decode_spread_pct")
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == \
           [{k: v for k, v in r.items() if k not in drop} for r in first]
    for key, m in first_models.items():  # the models measured are the ones kept: 06's points are them
        assert fingerprint(again_models[key]) == fingerprint(m)
        if key[2] == "original":
            continue
        changed = {k: v for k, v in points.delta(m, base).items() if v.is_floating_point() and not is_entropy(k)}
        assert changed and all(v.equal(v.half().float()) for v in changed.values())  # stored in fp16, measured so
    # another recipe (β) is trained again, not taken from the kept ERHP
    with pytest.raises((TypeError, AttributeError)):
        luo.experiment(base, "bmshj2018-hyperprior", 0.0067, data, images, smoke, tmp_zoo / "elsewhere",
                       **{**kw, "strength": 1e-4})


def test_a_wider_familys_trained_variants_stay_in_runs_and_the_scales_own_are_committed(smoke):
    from lic import store, zoo

    wide = smoke.at_width("N128")
    assert luo.trained_dir(wide) == zoo.states_dir(wide) / luo.CHAPTER / "trained"  # not committed: ≤ 40 MB
    assert luo.trained_dir(smoke) == store.models_dir(luo.CHAPTER, smoke) / "trained"
