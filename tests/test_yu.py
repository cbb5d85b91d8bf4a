"""Yu et al.: the RNN and HiFiC-style codecs, component pruning, and what int8 quantization does."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from lic import quantize, yu
from lic.models.hific import ChannelNorm, HiFiC
from lic.models.rnn import BITS, RNNCodec


def _x(n=1, h=64, w=96, seed=1):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def rnn():
    torch.manual_seed(0)
    return RNNCodec(1 / 16, iterations=3).eval()


@pytest.fixture(scope="module")
def hific():
    torch.manual_seed(0)
    m = HiFiC(1 / 16).eval()
    m.update(force=True)
    return m


# -- the RNN codec ------------------------------------------------------------------------------

def test_rnn_bit_count_is_iterations_times_codes(rnn):
    x = _x(h=64, w=96)
    for k in (1, 3):
        rnn.iterations = k
        enc = rnn.compress(x)
        codes = k * BITS * (64 // 16) * (96 // 16)
        assert enc["shape"] == (k * BITS, 4, 6)
        out = rnn(x)
        assert out["codes"].numel() == codes
        # the likelihood entry counts exactly one bit per code: estimated bits = raw bits
        bits = -torch.log2(out["likelihoods"]["codes"]).sum().item()
        assert bits == codes
    rnn.iterations = 3


def test_rnn_bitstream_decodes_to_the_forward_reconstruction(rnn):
    x = _x(h=64, w=64, seed=3)
    enc = rnn.compress(x)
    dec = rnn.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.equal(dec, rnn(x)["x_hat"].clamp(0, 1))


def test_rnn_refuses_sizes_and_training_mode_it_cannot_code(rnn):
    with pytest.raises(ValueError, match="multiple of 16"):
        rnn(torch.rand(1, 3, 40, 64))
    rnn.train()
    with pytest.raises(RuntimeError, match="eval"):
        rnn.compress(_x())
    rnn.eval()
    with pytest.raises(ValueError, match="multiple of 4"):
        RNNCodec(0.3)


def test_rnn_reconstruction_improves_with_iterations():
    """After a short training on four crops, every further iteration lowers the error."""
    torch.manual_seed(0)
    m = RNNCodec(1 / 16, iterations=3)
    x = _x(n=4, h=32, w=32, seed=5)
    opt = torch.optim.Adam(m.parameters(), 5e-3)
    for _ in range(200):
        loss = m(x)["distortion"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        errors = [float((m(x, iterations=k)["x_hat"] - x).abs().mean()) for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2], errors


# -- the HiFiC-style codec ------------------------------------------------------------------------

def test_channel_norm_normalises_each_pixel_over_channels():
    cn = ChannelNorm(8)
    y = cn(torch.randn(2, 8, 5, 5) * 3 + 1)
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 5), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 5, 5), atol=1e-2)


def test_hific_keeps_compressais_contract(hific):
    x = _x(h=128, w=128)
    out = hific(x)
    assert out["x_hat"].shape == x.shape and set(out["likelihoods"]) == {"y", "z"}
    assert out["y_hat"].shape[-2:] == (8, 8)  # /16
    enc = hific.compress(x)
    dec = hific.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.allclose(dec, out["x_hat"].clamp(0, 1), atol=1e-5)


# -- component pruning ----------------------------------------------------------------------------

@pytest.mark.parametrize("codec", yu.CODECS)
def test_pruning_a_component_touches_only_its_layers(codec, rnn, hific):
    model = rnn if codec == "rnn" else hific
    for combo in yu.combinations(codec)[1:]:
        pruned = yu.prune(model, codec, combo, 0.3)
        inside = {f"{n}.weight" for c in combo for n, _ in yu.component_modules(model, codec, c)}
        before, after = model.state_dict(), pruned.state_dict()
        for k, v in before.items():
            if k in inside:
                n = v.numel()
                assert int((after[k] == 0).sum()) == round(0.3 * n), k  # exactly the requested fraction
                kept = after[k] != 0
                assert torch.equal(after[k][kept], v[kept])  # the rest unchanged
                # the smallest magnitudes went
                assert v[~kept].abs().max() <= v[kept].abs().min()
            elif not any(t in k for t in ("_quantized_cdf", "_offset", "_cdf_length")):
                assert torch.equal(after[k], v), k  # other layers bit-identical
        sp = yu.sparsity(pruned, codec)
        for c in yu.components(codec):
            assert (sp[c] == pytest.approx(0.3, abs=0.01)) == (c in combo)


def test_pruning_refuses_unknown_components_and_ratios(rnn):
    with pytest.raises(ValueError, match="valid: E, D"):
        yu.prune(rnn, "rnn", ("G",), 0.3)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            yu.prune(rnn, "rnn", ("E",), bad)
    with pytest.raises(ValueError, match="valid choices: rnn, hific"):
        yu.components("toderici")


def test_paper_rows_are_every_combination():
    assert yu.combinations("rnn") == [(), ("E",), ("D",), ("E", "D")]
    assert len(yu.combinations("hific")) == 8 and yu.combinations("hific")[-1] == ("E", "G", "P")


def test_sparse_storage_needs_a_sparse_format(rnn):
    pruned = yu.prune(rnn, "rnn", ("E", "D"), 0.5)
    dense, sparse = yu.storage(rnn, "rnn"), yu.storage(pruned, "rnn")
    assert sparse["fp32_bytes"] == dense["fp32_bytes"]  # zeros cost as much as any weight
    assert sparse["sparse_fp16_zlib_bytes"] < 0.8 * dense["sparse_fp16_zlib_bytes"]


# -- quantization -------------------------------------------------------------------------------

def test_dynamic_int8_touches_no_convolution(rnn, hific):
    for m in (rnn, hific):
        q, touched = quantize.dynamic_int8(m)
        assert touched == [] and quantize.int8_modules(q) == 0


def test_eager_int8_without_calibration_outputs_zero_residuals(rnn):
    x = _x(h=64, w=64)
    q = quantize.eager_static_int8(rnn, ("encoder", "decoder"), [])
    assert quantize.int8_modules(q) > 0
    assert torch.all(q(x)["x_hat"] == 0.5)  # every decoded residual is 0: the paper's "all zero"
    q = quantize.eager_static_int8(rnn, ("encoder", "decoder"), [x])
    assert not torch.all(q(x)["x_hat"] == 0.5)


def test_eager_int8_of_transposed_convs_needs_per_tensor_weights(hific):
    x = _x(h=128, w=128)
    with pytest.raises(AssertionError, match="ConvTranspose"):
        quantize.eager_static_int8(hific, ("g_s",), [x])
    q = quantize.eager_static_int8(hific, ("g_s",), [x], transposed="per-tensor")
    assert any(isinstance(m, torch.ao.nn.quantized.ConvTranspose2d) for m in q.modules())


def test_fx_int8_keeps_float_modules_and_round_trips(hific):
    x = _x(h=128, w=128)
    q = yu.int8(hific, "hific", [x])
    assert any(isinstance(m, torch.ao.nn.quantized.ConvTranspose2d) for m in q.modules())
    assert any(isinstance(m, ChannelNorm) for m in q.modules())  # left in float
    enc = q.compress(x)
    dec = q.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.allclose(dec, q(x)["x_hat"].clamp(0, 1), atol=1e-5)
    check = yu.thread_check(q, (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert check["identical"], check


def test_fx_int8_of_a_trained_codec_needs_its_latent_layers_in_float():
    """The committed zoo model at λ=0.013, real bitstreams on a 192x256 crop of a photograph,
    observers calibrated on the other photographs. Every conv in int8 puts y on a grid coarser than
    the codec's rounding; with the two latent layers float, int8 stays within 1 dB and 5 % bpp."""
    from lic import data, zoo
    from lic.evaluate import evaluate
    from lic.scales import get_scale

    model = zoo.get("bmshj2018-hyperprior", 0.013, get_scale("cpu"), train_missing=False, progress=False)
    img = data.center_crop(data.skimage_photos()[0][1], (192, 256))
    calib = [data.to_tensor(data.center_crop(im, (128, 128))) for _, im in data.skimage_photos()[1:]]
    assert quantize.latent_layers(model) == ("g_a.6", "g_s.0")
    ref = evaluate(model, [("a", img)], real=True, progress=False)["mean"]
    every = evaluate(yu.int8(model, "compressai", calib), [("a", img)], real=True, progress=False)["mean"]
    latent = evaluate(yu.int8(model, "compressai", calib, latent_float=True), [("a", img)], real=True,
                      progress=False)["mean"]
    assert abs(latent["psnr"] - ref["psnr"]) < 1.0 and abs(latent["bpp"] / ref["bpp"] - 1) < 0.05, (ref, latent)
    assert every["bpp"] / ref["bpp"] - 1 > 2 * abs(latent["bpp"] / ref["bpp"] - 1)  # the latent grid costs rate
    with pytest.raises(ValueError, match="not inside the quantized parts"):
        quantize.fx_int8(model, ("g_s",), calib, float_layers=("g_a.6",))


def test_fx_int8_parts_give_one_output_whatever_the_memory_layout_of_their_input():
    """The committed cpu HiFiC-style codec, its latent layers float: forward() hands g_s a
    channels_last ŷ (from g_a's int8 output), decompress() a contiguous one. A float layer's kernel
    depends on the layout and the int8 layer after it turns the last-bit difference into whole
    quantization steps, so the decoded image left forward's by 36-40 dB on 14 of 24 Kodak images."""
    from lic import data
    from lic.scales import get_scale

    model = yu.get("hific", get_scale("cpu"), train_missing=False, progress=False)
    photos = [data.to_tensor(data.center_crop(im, (256, 384))) for _, im in data.skimage_photos()]
    q = yu.int8(model, "hific", [p[..., :128, :128] for p in photos], latent_float=True)
    q.update(force=True)
    with torch.no_grad():
        for x in photos:
            y_hat = q(x)["y_hat"]
            flat = q.g_s(y_hat.contiguous())
            assert torch.equal(q.g_s(y_hat.contiguous(memory_format=torch.channels_last)), flat)
            enc = q.compress(x)
            assert torch.equal(q.decompress(enc["strings"], enc["shape"])["x_hat"], flat.clamp(0, 1))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x  # data-dependent: FX cannot trace it


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.part = _Branchy()

    def forward(self, x):
        return self.part(x)


def test_fx_int8_names_the_fix_for_untraceable_parts():
    with pytest.raises(ValueError, match="skip="):
        quantize.fx_int8(_Holder(), ("part",), [torch.rand(1, 3, 8, 8)])
    with pytest.raises(ValueError, match="no part 'nope'"):
        quantize.fx_int8(_Holder(), ("nope",), [torch.rand(1, 3, 8, 8)])
    with pytest.raises(ValueError, match="calibration"):
        quantize.fx_int8(_Holder(), ("part",), [])


# -- training the HiFiC-style codec -------------------------------------------------------------

def test_hific_ends_on_crops_twice_as_large(smoke):
    stages = {name: (steps, cfg) for name, steps, cfg in yu._stages("hific", smoke)}
    assert list(stages) == ["rd", "gan", "rd-late", "gan-late"]
    for name in ("rd-late", "gan-late"):
        assert stages[name][1]["crop"] == 2 * smoke.crop and stages[name][1]["batch"] == smoke.batch // 2


def test_hific_continues_from_a_stored_model_without_rerunning_its_stages(smoke, tmp_zoo):
    first = smoke.with_(hific_late_steps=0, hific_late_gan_steps=0)
    yu.train_codec("hific", first, progress=False)
    path = yu.models_dir(smoke) / "hific.pt"
    done = path.with_name("first.pt")
    path.rename(done)
    model = yu.train_codec("hific", smoke, progress=False, init=(done, "gan", 12.5))
    runs = {p.name for p in (tmp_zoo / "runs" / "smoke" / yu.CHAPTER).glob("hific-init-*/*.state.pt")}
    assert runs == {"rd-late.state.pt", "gan-late.state.pt"}  # rd and gan came with the file
    entry = yu.store.read_manifest(yu.CHAPTER, smoke)["hific"]
    assert yu.lic_data.sha256(done) in entry["start"] and entry["train_seconds"] > 12.5
    assert entry["steps"] == {"rd": smoke.hific_steps, "gan": smoke.hific_gan_steps,
                              "rd-late": smoke.hific_late_steps, "gan-late": smoke.hific_late_gan_steps}
    assert [r["size"] for r in entry["init_rate_by_size"]] == ["128 px", "256 px", "whole"]
    assert isinstance(model, HiFiC)
    with pytest.raises(ValueError, match="stage of --init.*rd-late"):
        yu.train_codec("hific", smoke, progress=False, init=(done, "warmup"))


def test_init_refuses_a_missing_file_in_one_line(capsys):
    with pytest.raises(SystemExit) as err:
        yu.main(["train", "--scale", "smoke", "--codec", "hific", "--init", "nowhere.pt", "--init-stage", "gan"])
    assert err.value.code == 2 and "nowhere.pt: no such file" in capsys.readouterr().err
