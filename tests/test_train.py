import math

import pytest
import torch

from lic import data, zoo
from lic.train import Hook, TrainConfig, lr_at, rd_loss, train


def _setup(smoke):
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    ds = data.ImageFolder([img for _, img in data.skimage_photos(2)], crop=64, seed=0)
    cfg = TrainConfig(lmbda=0.01, steps=12, batch=2, crop=64, checkpoint_every=4, seed=3)
    return model, ds, cfg


def test_rd_loss_known_value():
    x = torch.zeros(1, 3, 4, 4)
    out = {"x_hat": torch.full_like(x, 0.1), "likelihoods": {"y": torch.full((1, 2, 2, 2), 0.5)}}
    t = rd_loss(out, x, lmbda=0.01)
    assert t["bpp"].item() == pytest.approx(8 / 16)  # 8 symbols of 1 bit over 16 pixels
    assert t["mse"].item() == pytest.approx(0.01)
    assert t["loss"].item() == pytest.approx(0.5 + 0.01 * 255 ** 2 * 0.01)


def test_resumed_training_continues_identically(smoke, tmp_path):
    model_a, ds_a, cfg = _setup(smoke)
    train(model_a, ds_a, cfg, checkpoint=tmp_path / "a.pt", progress=False)

    model_b, ds_b, _ = _setup(smoke)
    train(model_b, ds_b, cfg, checkpoint=tmp_path / "b.pt", progress=False, stop_after=4)  # "killed"
    model_c, ds_c, _ = _setup(smoke)  # a new process: fresh model, data, RNGs
    torch.manual_seed(1234)
    curve = train(model_c, ds_c, cfg, checkpoint=tmp_path / "b.pt", progress=False)
    assert curve[-1]["step"] == cfg.steps
    for (k, va), vc in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(va, vc), k


def test_a_checkpoint_refuses_another_configuration_but_not_a_longer_run(smoke, tmp_path):
    """A changed learning rate once resumed a collapsed run as if it were the new one; now it is
    refused with the field, both values and the fix. More steps (or another precision) resume."""
    model, ds, cfg = _setup(smoke)
    train(model, ds, cfg, checkpoint=tmp_path / "s.pt", progress=False, stop_after=4)
    model, ds, _ = _setup(smoke)
    with pytest.raises(ValueError, match=r"lr=0\.0005 there, 0\.0001 now.*move it away"):
        train(model, ds, TrainConfig(**{**cfg.__dict__, "lr": 1e-4}), checkpoint=tmp_path / "s.pt", progress=False)
    longer = TrainConfig(**{**cfg.__dict__, "steps": 16, "precision": "fp32"})
    assert train(model, ds, longer, checkpoint=tmp_path / "s.pt", progress=False)[-1]["step"] == 16


def test_training_reduces_the_loss(smoke):
    model, ds, cfg = _setup(smoke)
    cfg.steps, cfg.lr = 40, 1e-3
    x = ds.batch(4)
    with torch.no_grad():
        before = rd_loss(model(x), x, cfg.lmbda)["loss"].item()
    train(model, ds, cfg, progress=False)
    model.train()
    with torch.no_grad():
        after = rd_loss(model(x), x, cfg.lmbda)["loss"].item()
    assert after < 0.5 * before


def test_hooks_add_loss_terms_and_see_gradients(smoke):
    class L1OnSynthesis(Hook):
        def __init__(self):
            self.calls = 0

        def loss(self, model, out, x):
            return {"l1": 1e-4 * sum(p.abs().sum() for p in model.g_s.parameters())}

        def after_backward(self, model, step):
            assert model.g_s[0].weight.grad is not None
            self.calls += 1

    model, ds, cfg = _setup(smoke)
    hook = L1OnSynthesis()
    curve = train(model, ds, cfg, hooks=[hook], progress=False)
    assert hook.calls == cfg.steps and curve[-1]["l1"] > 0


def test_only_the_given_parameters_move(smoke):
    model, ds, cfg = _setup(smoke)
    g_a = {k: v.clone() for k, v in model.g_a.state_dict().items()}
    g_s = {k: v.clone() for k, v in model.g_s.state_dict().items()}
    train(model, ds, cfg, params=list(model.g_s.parameters()), progress=False)
    assert all(torch.equal(v, model.g_a.state_dict()[k]) for k, v in g_a.items())
    assert not all(torch.equal(v, model.g_s.state_dict()[k]) for k, v in g_s.items())


def test_cosine_schedule_ends_at_lr_final():
    cfg = TrainConfig(lmbda=0.01, steps=100, lr=1e-3, lr_final=1e-5)
    assert lr_at(0, cfg) == pytest.approx(1e-3) and lr_at(100, cfg) == pytest.approx(1e-5)
    assert lr_at(50, cfg) == pytest.approx((1e-3 + 1e-5) / 2)


def test_divergence_names_the_fix(smoke):
    model, ds, cfg = _setup(smoke)

    class Blowup(Hook):
        def loss(self, model, out, x):
            return {"nan": torch.tensor(math.nan)}

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        train(model, ds, cfg, hooks=[Blowup()], progress=False)


def test_a_paused_job_does_not_count_the_pause_as_training_time(smoke):
    """A job stopped with SIGSTOP and continued with SIGCONT: the step that spans the pause counts
    as long as the step before it. (The pause is simulated: a hook sleeps, then SIGCONT arrives.)"""
    import os
    import signal
    import time

    class Pause(Hook):
        def after_step(self, model, step):
            if step == 2:
                time.sleep(1.5)
                os.kill(os.getpid(), signal.SIGCONT)

    model, ds, cfg = _setup(smoke)
    cfg.steps, cfg.checkpoint_every = 4, 10**6
    curve = train(model, ds, cfg, hooks=[Pause()], progress=False)
    assert curve[-1]["elapsed_s"] < 1.0
    assert signal.getsignal(signal.SIGCONT) == signal.SIG_DFL  # the handler is put back


def test_a_model_with_pruning_masks_on_can_be_copied_for_the_precision_probe():
    import torch.nn as nn
    from torch.nn.utils import prune

    from lic.train import copy_model

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.ConvTranspose2d(4, 3, 3))
    for m in (net[0], net[2]):
        prune.l1_unstructured(m, "weight", amount=0.3)
    x = torch.rand(1, 3, 8, 8)
    net(x).sum().backward()  # the masked weights are now non-leaf tensors
    twin = copy_model(net)
    assert torch.equal(twin(x), net(x))
    assert torch.equal(twin[0].weight_mask, net[0].weight_mask) and (twin[0].weight == 0).sum() == 32
    net.zero_grad()
    net(x).sum().backward()  # the original still trains through its masks
    assert net[0].weight_orig.grad is not None and (net[0].weight_orig.grad[net[0].weight_mask == 0] == 0).all()
