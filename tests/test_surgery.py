"""Model surgery and checkpoints of non-uniform widths."""
import pytest
import torch

from lic import surgery, zoo


def _pruned_hyperprior(smoke, keep=(0, 2, 5, 7, 11)):
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    # g_s = [deconv, IGDN, deconv, IGDN, deconv, IGDN, deconv]: prune the first deconv's output
    surgery.remove_channels(model, "g_s.0", list(keep), followers=["g_s.1"], consumers=["g_s.2"])
    return model


def test_removing_channels_with_zero_outgoing_weights_changes_nothing(smoke):
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    dead = [1, 3, 4]
    with torch.no_grad():
        # every path out of a dead channel: the next deconv (weight in x out x k x k) and IGDN's
        # cross-channel terms gamma[k, dead] (a channel's square normalises the others)
        model.g_s[2].weight[dead] = 0
        model.g_s[1].gamma[:, dead] = 0
    y = torch.randn(2, smoke.M, 4, 5)
    before = model.g_s(y)
    keep = [c for c in range(smoke.N) if c not in dead]
    surgery.remove_channels(model, "g_s.0", keep, followers=["g_s.1"], consumers=["g_s.2"])
    after = model.g_s(y)
    assert model.g_s[0].weight.shape[1] == smoke.N - 3 and model.g_s[2].weight.shape[0] == smoke.N - 3
    assert torch.allclose(before, after, atol=1e-5)


def test_gdn_keeps_beta_k_and_gamma_k_k():
    from compressai.layers import GDN

    torch.manual_seed(0)
    gdn = GDN(6, inverse=True)
    with torch.no_grad():
        gdn.gamma.add_(torch.rand(6, 6))
        gdn.beta.add_(torch.rand(6))
    keep = [0, 2, 3]
    small = surgery.select_out(gdn, keep)
    assert torch.equal(small.beta, gdn.beta[keep])
    assert torch.equal(small.gamma, gdn.gamma[keep][:, keep])
    x = torch.randn(1, 6, 3, 3)
    x[:, [1, 4, 5]] = 0  # with the removed channels silent, the kept outputs are identical
    assert torch.allclose(gdn(x)[:, keep], small(x[:, keep]), atol=1e-6)


def test_pruned_model_saves_and_loads_with_its_widths(smoke, tmp_path):
    model = _pruned_hyperprior(smoke)
    sha = zoo.save(model, tmp_path / "p.pt", "bmshj2018-hyperprior", smoke.widths("bmshj2018-hyperprior"))
    loaded = zoo.load(tmp_path / "p.pt", sha)
    assert loaded.g_s[0].weight.shape[1] == 5 and loaded.g_s[1].beta.shape[0] == 5
    assert surgery.channel_config(loaded) == surgery.channel_config(model)
    x = torch.rand(1, 3, 128, 128)
    model.update(force=True)
    with torch.no_grad():
        assert torch.allclose(model(x)["x_hat"], loaded(x)["x_hat"], atol=1e-6)
        enc = loaded.compress(x)
        dec = loaded.decompress(enc["strings"], enc["shape"])
    assert dec["x_hat"].shape == x.shape


def test_compressai_from_state_dict_cannot_load_a_pruned_model(smoke):
    from compressai.models import ScaleHyperprior

    model = _pruned_hyperprior(smoke)
    with pytest.raises(RuntimeError, match="size mismatch"):
        ScaleHyperprior.from_state_dict(model.state_dict())


def test_corrupt_and_truncated_checkpoints_are_refused(smoke, tmp_path):
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    path = tmp_path / "m.pt"
    sha = zoo.save(model, path, "bmshj2018-hyperprior", smoke.widths("bmshj2018-hyperprior"))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    hint = "python -m lic.zoo train --scale smoke"
    with pytest.raises(zoo.CheckpointError, match="corrupt or truncated.*Retrain it with `python -m lic.zoo"):
        zoo.load(path, sha, hint)
    with pytest.raises(zoo.CheckpointError, match="cannot be read"):
        zoo.load(path, None, hint)
    with pytest.raises(zoo.CheckpointError, match="does not exist"):
        zoo.load(tmp_path / "missing.pt", sha, hint)


def test_fp16_storage_keeps_entropy_models_fp32(smoke, tmp_path):
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    zoo.save(model, tmp_path / "h.pt", "bmshj2018-hyperprior", smoke.widths("bmshj2018-hyperprior"), half=True)
    state = torch.load(tmp_path / "h.pt", weights_only=True)["state_dict"]
    assert state["g_a.0.weight"].dtype == torch.float16
    assert state["entropy_bottleneck.quantiles"].dtype == torch.float32
    assert not any(k.endswith("_quantized_cdf") for k in state)
