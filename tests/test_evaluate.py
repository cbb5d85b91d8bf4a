import math

import numpy as np
import pytest
import torch

from lic import evaluate as ev
from lic import zoo


def test_psnr_known_values():
    a = np.zeros((8, 8, 3), np.uint8)
    assert ev.psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2), abs=1e-9)  # 48.13 dB
    assert ev.psnr(a, a) == float("inf")
    b = a.copy()
    b[:4] = 10  # half the pixels off by 10: MSE 50
    assert ev.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 50))


def test_psnr_rounds_tensors_to_8_bit():
    x = torch.full((1, 3, 4, 4), 100 / 255)
    assert ev.psnr(x, x + 0.4 / 255) == float("inf")  # same 8-bit image


def test_bd_rate_of_a_10_percent_cheaper_codec():
    anchor = {"bpp": [0.1, 0.2, 0.4, 0.8], "psnr": [28.0, 30.0, 32.5, 35.0]}
    test = {"bpp": [0.09, 0.18, 0.36, 0.72], "psnr": anchor["psnr"]}
    res = ev.bd(anchor, test)
    assert res["bd_rate"] == pytest.approx(-10.0, abs=1e-6)
    assert res["method"] == "akima"
    better = ev.bd(anchor, {"bpp": anchor["bpp"], "psnr": [p + 0.5 for p in anchor["psnr"]]})
    assert better["bd_psnr"] == pytest.approx(0.5, abs=1e-6)


def test_bd_rate_of_a_short_curve_against_a_long_sweep():
    """A 4-point codec inside a 12-point classical sweep: trimmed to the overlap, still exact."""
    import numpy as np

    bpp = np.geomspace(0.05, 3.0, 12)
    anchor = {"bpp": bpp, "psnr": 10 * np.log10(bpp) + 40}  # log-linear: interpolation is exact
    psnr = np.array([31.0, 32.0, 33.5, 35.0])
    test = {"bpp": 0.8 * 10 ** ((psnr - 40) / 10), "psnr": psnr}
    res = ev.bd(anchor, test)
    assert res["overlap_psnr"] > 0.75
    assert res["bd_rate"] == pytest.approx(-20.0, abs=1e-6)


def test_bd_without_overlap_is_nan_not_an_error():
    res = ev.bd({"bpp": [0.1, 0.2], "psnr": [20, 22]}, {"bpp": [1.0, 2.0], "psnr": [40, 42]})
    assert math.isnan(res["bd_rate"]) and res["overlap_psnr"] == 0
    with pytest.raises(ValueError, match="at least two"):
        ev.bd({"bpp": [0.1], "psnr": [20]}, {"bpp": [0.1, 0.2], "psnr": [20, 22]})


def test_bd_of_a_curve_whose_quality_falls_with_rate_is_nan():
    good = {"bpp": [0.1, 0.2, 0.4], "psnr": [28.0, 30.0, 32.0]}
    bent = {"bpp": [0.1, 0.2, 0.4], "psnr": [28.0, 31.0, 30.5]}
    res = ev.bd(good, bent)
    assert not res["monotonic"] and math.isnan(res["bd_rate"]) and math.isnan(res["bd_psnr"])
    assert ev.bd(good, good)["monotonic"] and ev.bd(good, good)["bd_rate"] == pytest.approx(0, abs=1e-9)


def test_macs_of_conv_and_transposed_conv_match_a_hand_count():
    conv = torch.nn.Conv2d(3, 8, 5, stride=2, padding=2)
    assert ev.macs(conv, torch.zeros(1, 3, 32, 32)) == 8 * 16 * 16 * 3 * 5 * 5
    deconv = torch.nn.ConvTranspose2d(8, 3, 5, stride=2, padding=2, output_padding=1)
    # a transposed conv multiplies every *input* pixel by k*k*C_out weights
    assert ev.macs(deconv, torch.zeros(1, 8, 16, 16)) == 8 * 16 * 16 * 3 * 5 * 5


def test_ms_ssim_refuses_small_images():
    with pytest.raises(ValueError, match="160"):
        ev.ms_ssim(torch.rand(1, 3, 128, 256), torch.rand(1, 3, 128, 256))
    x = torch.rand(1, 3, 192, 192)
    assert ev.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018"])
def test_real_bitstream_round_trip(arch, smoke):
    torch.manual_seed(0)
    model = zoo.build_for(arch, smoke).eval()
    img = np.random.default_rng(0).integers(0, 256, (170, 200, 3), dtype=np.uint8)
    model.update(force=True)
    row = ev.evaluate_image(model, img, real=True)
    assert row["bpp"] > 0 and row["encode_ms"] > 0 and row["decode_ms"] > 0
    # the real rate is close to the likelihood estimate (headers and coder overhead only)
    assert row["bpp"] == pytest.approx(row["bpp_est"], rel=0.25, abs=0.05)
    assert row["height"] == 170 and row["width"] == 200


def test_decoder_that_differs_from_forward_is_detected(smoke):
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    model.update(force=True)
    decompress = model.decompress

    def tampered(strings, shape):  # a decoder whose bitstream path went wrong
        out = decompress(strings, shape)
        return {"x_hat": torch.rand(out["x_hat"].shape, generator=torch.Generator().manual_seed(0))}

    model.decompress = tampered
    img = np.random.default_rng(1).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="does not match the forward reconstruction"):
        ev.evaluate_image(model, img, real=True)


def test_summarize_reports_size_and_macs(smoke):
    from lic import data as lic_data

    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    row = ev.summarize(model, lic_data.test_images(smoke)[:1], height=64, width=64, progress=False)
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["macs"] > 0 and row["bytes_fp32"] > 4 * row["params"] * 0.9
    assert {"psnr", "bpp", "bpp_est", "ms_ssim", "encode_ms", "decode_ms", "threads"} <= set(row)


def test_compressai_json_layout(tmp_path):
    pts = [{"psnr": 30.0, "ms_ssim": 0.95, "bpp": 0.3, "encode_ms": 10.0, "decode_ms": 20.0}]
    d = ev.to_compressai_json("ours", pts)
    assert d["results"]["psnr-rgb"] == [30.0] and d["results"]["decoding_time"] == [0.02]
    import json

    (tmp_path / "x.json").write_text(json.dumps(d))
    assert ev.read_compressai_json(tmp_path / "x.json")["bpp"] == [0.3]


def test_summarize_cached_measures_each_model_once(smoke, tmp_path, monkeypatch):
    from lic import data as lic_data

    images = lic_data.test_images(smoke)[:1]
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    calls = []
    real = ev.summarize
    monkeypatch.setattr(ev, "summarize", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "measured"
    first = ev.summarize_cached(model, images, cache, height=64, width=64, progress=False)
    again = ev.summarize_cached(model, images, cache, height=64, width=64, progress=False)
    assert again == first and len(calls) == 1
    with torch.no_grad():  # other weights: measured again
        model.g_s[0].weight.mul_(0.5)
    other = ev.summarize_cached(model, images, cache, height=64, width=64, progress=False)
    assert len(calls) == 2 and other.keys() == first.keys()
    ev.summarize_cached(model, images, cache, height=128, width=128, progress=False)  # other arguments
    assert len(calls) == 3 and len(list(cache.glob("*.json"))) == 3  # one file per key
    # a new measurement version measures again what the old code measured
    ev.summarize_cached(model, images, cache, height=128, width=128, progress=False,
                        version=ev.MEASUREMENT_VERSION + 1)
    assert len(calls) == 4 and len(list(cache.glob("*.json"))) == 4


def test_quality_cached_reuses_any_row_measured_for_the_same_weights(smoke, tmp_path, monkeypatch):
    from lic import data as lic_data

    images = lic_data.test_images(smoke)[:1]
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    cache = tmp_path / "measured"
    timed = ev.summarize_cached(model, images, cache, repeats=2, timed=1, height=64, width=64, progress=False)
    calls = []
    real = ev.summarize
    monkeypatch.setattr(ev, "summarize", lambda *a, **k: calls.append(k) or real(*a, **k))
    got = ev.quality_cached(model, images, cache)  # another chapter's timed row serves
    assert calls == [] and got == timed
    with torch.no_grad():  # other weights: measured once, untimed, then kept
        model.g_s[0].weight.mul_(0.5)
    other = ev.quality_cached(model, images, cache)
    assert len(calls) == 1 and calls[0]["timed"] == 0 and {"psnr", "ms_ssim", "bpp"} <= other.keys()
    assert ev.quality_cached(model, images, cache) == other and len(calls) == 1
    # another measurement version does not serve
    ev.quality_cached(model, images, cache, version=ev.MEASUREMENT_VERSION + 1)
    assert len(calls) == 2


def test_an_int8_model_with_packed_weights_is_not_fingerprintable(smoke):
    q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(4, 4)), {torch.nn.Linear})
    assert not ev.fingerprintable(q)
    assert ev.fingerprintable(zoo.build_for("bmshj2018-hyperprior", smoke))


def test_views_of_one_supernet_never_share_a_cached_measurement(smoke, tmp_path, monkeypatch):
    from lic import data as lic_data
    from lic.models.slimmable import AtCapacity, from_mean_scale

    images = lic_data.test_images(smoke)[:1]
    net = from_mean_scale(zoo.build_for("mbt2018-mean", smoke)).eval()
    narrow, wide = AtCapacity(net, 0), AtCapacity(net, net.n_capacities - 1)
    assert ev.fingerprintable(narrow) and not ev.defined_by_weights(narrow)  # same weights, other widths
    assert ev.defined_by_weights(zoo.build_for("mbt2018-mean", smoke)) and not ev.defined_by_weights(net)
    cache = tmp_path / "measured"
    calls = []
    real = ev.summarize
    monkeypatch.setattr(ev, "summarize", lambda *x, **k: calls.append(1) or real(*x, **k))
    a = ev.quality_cached(narrow, images, cache, identity="C1")
    b = ev.quality_cached(wide, images, cache, identity="C5")
    assert len(calls) == 2  # the wide view was measured, not served the narrow view's row
    assert ev.quality_cached(wide, images, cache, identity="C5") == b and len(calls) == 2  # its own row, kept
    assert ev.quality_cached(narrow, images, cache, identity="C1") == a and len(calls) == 2
    before = len(list(cache.glob("*.json")))
    ev.quality_cached(wide, images, cache)  # no identity: measured, never kept
    assert len(list(cache.glob("*.json"))) == before


def test_only_untimed_measurements_are_shared(smoke, tmp_path, monkeypatch):
    from lic import data as lic_data

    images = lic_data.test_images(smoke)[:1]
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    here, kept = tmp_path / "runs" / "measured", tmp_path / "kept"
    ev.summarize_cached(model, images, here, repeats=2, timed=1, height=64, width=64, progress=False)  # a time
    with torch.no_grad():
        model.g_s[0].weight.mul_(0.5)
    untimed = ev.quality_cached(model, images, here)
    (here / "cut-short.json").write_text('{"key": {"args": {"tim')  # a kill mid-write
    assert ev.share_untimed(here, kept) == 1  # the timed row stays on its machine
    assert ev.share_untimed(here, kept) == 0  # already there: not copied again
    assert ev.share_untimed(tmp_path / "nowhere", kept) == 0
    # on another machine: the kept row serves without coding an image
    elsewhere = tmp_path / "elsewhere"
    assert ev.share_untimed(kept, elsewhere) == 1
    monkeypatch.setattr(ev, "summarize", lambda *a, **k: pytest.fail("measured again"))
    assert ev.quality_cached(model, images, elsewhere) == untimed


def test_interleaved_times_say_where_each_decode_went(smoke):
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    model.update(force=True)
    img = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    t = ev.interleaved_times({"m": model}, [("x", img)], repeats=3, progress=False)["m"]
    stages = t["decode_stages_ms"]
    assert set(stages) == {"z decode", "h_s", "index table", "y decode", "g_s", "other"}
    assert all(v >= 0 for k, v in stages.items() if k != "other")
    for parts, total in zip(t["decode_stages_ms_repeats"], t["decode_ms_repeats"]):  # each repeat adds up exactly
        assert set(parts) == set(stages) and sum(parts.values()) == pytest.approx(total, rel=1e-9)
    assert 0 < stages["g_s"] < t["decode_ms"]  # (medians of parts need not add up: a preemption moves between stages)
    assert len(t["decode_ms_repeats"]) == 3 and sorted(t["decode_ms_repeats"])[1] == t["decode_ms"]  # kept for paired ratios
    assert "forward" not in vars(model.g_s)
