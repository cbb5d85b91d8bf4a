"""The deployment runtime keeps CompressAI's contract and the bitstream; the decode-time anatomy
accounts for the whole decode; the Amdahl bound is the arithmetic it says it is."""
import pytest
import torch

from lic import anatomy, data, deploy, zoo
from lic.data import pad_to, to_tensor
from lic.evaluate import evaluate, psnr

pytest.importorskip("openvino")


def _model(arch, smoke, seed=0):
    torch.manual_seed(seed)
    m = zoo.build_for(arch, smoke).eval()
    m.update(force=True)
    return m


@pytest.fixture(scope="module")
def images():
    return data.test_images(zoo.get_scale("smoke"))


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior", "mbt2018-mean"])
def test_a_deployed_model_codes_like_eager_and_bitstreams_cross_runtimes(arch, smoke, images):
    eager = _model(arch, smoke)
    fast = deploy.deploy(eager, "openvino")
    fast.update(force=True)
    assert fast.deployment["parts"] == ["g_a", "h_a", "g_s"] and fast.deployment["eager_parts"] == ["h_s"]
    assert isinstance(fast.g_s, deploy.OpenVINOModule) and not isinstance(eager.g_s, deploy.OpenVINOModule)
    # the one evaluation path: every image decodes to what forward() gives (it raises otherwise)
    a, b = (evaluate(m, images, progress=False)["mean"] for m in (eager, fast))
    assert abs(a["psnr"] - b["psnr"]) < 1e-3 and abs(a["bpp"] / b["bpp"] - 1) < 1e-3
    for _, img in images:
        x = pad_to(to_tensor(img), 64, 64)[0]
        for enc_by, dec_by in ((eager, fast), (fast, eager)):  # any encoder, any decoder
            enc = enc_by.compress(x)
            ref = enc_by.decompress(enc["strings"], enc["shape"])["x_hat"]
            out = dec_by.decompress(enc["strings"], enc["shape"])["x_hat"]
            assert psnr(out, ref) > 60  # float rounding of g_s only: the latents decoded identically


def test_two_deployments_of_one_model_never_share_a_kept_measurement(smoke, images, tmp_path):
    from lic.evaluate import defined_by_weights, quality_cached

    eager = _model("bmshj2018-hyperprior", smoke)
    f32 = deploy.deploy(eager, "openvino", parts=("g_s",))
    M = eager.g_s[0].weight.shape[0]
    int8 = deploy.deploy(eager, "openvino", parts=("g_s",), int8={"g_s": [torch.randn(1, M, 4, 4) * 4 for _ in range(4)]})
    assert defined_by_weights(eager) and not defined_by_weights(f32) and not defined_by_weights(int8)
    few = images[:1]
    a = quality_cached(f32, few, tmp_path, identity="f32")
    b = quality_cached(int8, few, tmp_path, identity="int8")  # same eager parts: kept apart by identity
    assert a["psnr"] != b["psnr"] and len(list(tmp_path.glob("*.json"))) == 2


def test_an_autoregressive_model_deploys_its_transforms_and_keeps_its_loop(smoke, images):
    fast = deploy.deploy(_model("mbt2018", smoke), "openvino")
    fast.update(force=True)
    assert evaluate(fast, images[:1], progress=False)["mean"]["psnr"] > 0
    rows = anatomy.anatomy({"ar": fast}, images[:1], repeats=1, progress=False)
    assert "autoregressive loop" in anatomy.shares(rows, "ar")


def test_bad_runtimes_and_parts_are_refused_in_one_line(smoke):
    m = _model("bmshj2018-hyperprior", smoke)
    with pytest.raises(deploy.DeployError, match="unknown runtime 'tensorrt'; valid: eager, openvino, auto"):
        deploy.deploy(m, "tensorrt")
    with pytest.raises(deploy.DeployError, match="unknown part 'g_z'"):
        deploy.deploy(m, "openvino", parts=("g_z",))
    assert deploy.deploy(m, "eager").deployment["parts"] == []


def test_a_part_that_does_not_export_is_named_and_falls_back_only_when_asked(smoke, monkeypatch):
    m = _model("bmshj2018-hyperprior", smoke)

    def refuse(self, module, example, threads=None, precision="f32", calibration=None):
        raise RuntimeError("unsupported operation aten::foo")
    monkeypatch.setattr(deploy.OpenVINOModule, "__init__", refuse)
    with pytest.raises(deploy.DeployError, match="g_a of ScaleHyperprior does not export to openvino: "
                                                 "RuntimeError: unsupported operation aten::foo"):
        deploy.deploy(m, "openvino")
    kept = deploy.deploy(m, "openvino", fallback=True)
    assert kept.deployment["failed"] == ["g_a", "h_a", "g_s"] and "eager for g_a" in deploy.describe(kept)


def test_runtime_choice_is_measured_once_and_can_be_forced(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("LIC_RUNS", str(tmp_path))
    monkeypatch.delenv("LIC_RUNTIME", raising=False)
    m = _model("bmshj2018-hyperprior", smoke)
    calls = []
    monkeypatch.setattr(deploy, "synthesis_seconds", lambda model, runtimes: calls.append(runtimes) or
                        {"eager": 2.0, "openvino": 1.0})
    assert deploy.choose(m) == "openvino" and deploy.choose(m) == "openvino" and len(calls) == 1
    monkeypatch.setenv("LIC_RUNTIME", "eager")
    assert deploy.choose(m) == "eager"
    monkeypatch.setenv("LIC_RUNTIME", "onnx")
    with pytest.raises(deploy.DeployError, match="unknown runtime 'onnx'"):
        deploy.choose(m)


def test_anatomy_accounts_for_the_whole_decode_and_leaves_the_model_as_it_was(smoke, images):
    m = _model("bmshj2018-hyperprior", smoke)
    rows = anatomy.anatomy({"zoo": m}, images, repeats=2, progress=False)
    for phase in ("encode", "decode"):
        parts = [r for r in rows if r["model"] == "zoo" and r["phase"] == phase]
        total = next(r["ms"] for r in parts if r["stage"] == "total")
        stages = {r["stage"]: r["ms"] for r in parts if r["stage"] != "total"}
        assert sum(stages.values()) == pytest.approx(total, rel=0.1)  # medians of parts vs of totals
    assert set(anatomy.shares(rows, "zoo")) == {"z decode", "h_s", "index table", "y decode", "g_s", "other"}
    assert "forward" not in vars(m.g_s) and "compress" not in vars(m.entropy_bottleneck)


def test_amdahl_bound_scales_only_the_transform_stages():
    rows = [{"model": "zoo", "phase": "decode", "stage": s, "ms": ms}
            for s, ms in (("g_s", 80.0), ("h_s", 5.0), ("y decode", 15.0), ("total", 100.0))]
    ref = {"g_a": 10, "h_a": 1, "h_s": 1, "g_s": 10}
    assert anatomy.amdahl_bound(rows, "zoo", ref, {**ref, "g_s": 5}) == pytest.approx(100 / 60)
    assert anatomy.amdahl_bound(rows, "zoo", ref, {**ref, "h_s": 0}) == pytest.approx(100 / 95)  # ERHP's ceiling
    assert anatomy.amdahl_bound(rows, "zoo", ref, ref) == pytest.approx(1.0)
    assert anatomy.savings_in(ref, {**ref, "h_s": 0}) == "h_s" and anatomy.savings_in(ref, ref) == "none"


def test_stage_macs_put_each_transforms_macs_in_its_stage_and_reach_through_wrappers(smoke, images):
    from lic.evaluate import macs
    from lic.models.slimmable import AtCapacity, SlimMeanScale
    from lic.stages import stage_macs

    m = _model("bmshj2018-hyperprior", smoke)
    x = pad_to(to_tensor(images[0][1])[..., :64, :64], 64, 64)[0]
    got = stage_macs(m, x)
    y_hat = torch.round(m.g_a(x))
    assert got["decode"]["g_s"] == macs(m.g_s, y_hat) and got["encode"]["g_a"] == macs(m.g_a, x)
    assert sum(v for s, v in got["decode"].items() if s != "total") == got["decode"]["total"]
    assert got["decode"]["other"] == 0  # a hyperprior's decode: every MAC is in a transform
    torch.manual_seed(0)
    net = SlimMeanScale(32, 48, (0.5, 1.0)).eval()
    net.update(force=True)
    slim, full = (stage_macs(AtCapacity(net, c), x)["decode"] for c in (0, 1))
    assert 0 < slim["g_s"] < 0.5 * full["g_s"] and slim["h_s"] == full["h_s"]  # only g_s is slimmed
    assert "forward" not in vars(net.g_s)  # the wrappers are gone after the block


def test_the_synthesis_times_a_deployed_twin_of_every_point_and_says_which_do_not_deploy(smoke, images, monkeypatch):
    from lic import synthesis

    ok, bad = _model("bmshj2018-hyperprior", smoke), _model("bmshj2018-hyperprior", smoke, seed=1)
    real = deploy.deploy

    def deploy_or_refuse(model, runtime, **kw):  # e.g. 04's int8 torch models, which do not export
        if model is bad:
            raise deploy.DeployError("g_a of ScaleHyperprior does not export to openvino: RuntimeError: packed weights")
        return real(model, runtime, **kw)
    monkeypatch.setattr(deploy, "deploy", deploy_or_refuse)
    got, refused = synthesis.deployed({"a": ok, "b": bad}, "openvino")
    assert list(got) == ["a@openvino"] and isinstance(got["a@openvino"].g_s, deploy.OpenVINOModule)
    assert list(refused) == ["b"] and refused["b"].startswith("not deployed: g_a of ScaleHyperprior")
    again, refused = synthesis.deployed(got, "openvino")  # a deployment is not deployed twice
    assert not again and "openvino model already" in refused["a@openvino"]
    from lic.evaluate import interleaved_times
    t = interleaved_times({"a": ok, **got}, images[:1], repeats=1, progress=False)
    check = synthesis.decode_check(t["a"], t["a@openvino"])
    assert check["text"].startswith("ok: PSNR within 0.0") and check["psnr_db"] < 0.01 and check["bpp_pct"] == 0


def test_int8_with_accuracy_control_stays_within_its_drop_on_the_validation_pairs(smoke, images):
    m = _model("bmshj2018-hyperprior", smoke)
    crops = data.train_set(smoke, seed=1).batch(8, 64)
    calib = deploy.calibration_latents(m, crops)
    with torch.no_grad():  # the f32 synthesis' own output as the target: any int8 error shows (random weights)
        pairs = [(y, m.g_s(y).clamp(0, 1)) for y, _ in deploy.validation_pairs(m, images)]
    plain = deploy.deploy(m, "openvino", parts=("g_s",), int8={"g_s": calib})
    ctrl = deploy.deploy(m, "openvino", parts=("g_s",), int8={"g_s": deploy.Int8(calib, pairs, max_drop_db=0.5)})

    def mean_psnr(model):  # NNCF's own validation function, on the same pairs
        with torch.no_grad():
            return deploy._synthesis_psnr(lambda y: [model.g_s(torch.from_numpy(y)).numpy()],
                                          [(y.numpy(), x.numpy()) for y, x in pairs])[0]
    ref = mean_psnr(m)
    assert ref - mean_psnr(plain) > 1.0  # plain int8 loses more than the drop allowed (measured: 33 dB)
    assert ref - mean_psnr(ctrl) <= 0.5  # NNCF kept in f32 what the drop needed
    assert ctrl.deployment["int8"] == ["g_s"] and plain.deployment["int8"] == ["g_s"]


def test_a_quantized_decoder_is_kept_by_its_inputs_and_read_back_not_quantized_again(smoke, images, tmp_path, monkeypatch):
    monkeypatch.setenv("LIC_RUNS", str(tmp_path))
    m = _model("bmshj2018-hyperprior", smoke)
    calib = deploy.calibration_latents(m, data.train_set(smoke, seed=1).batch(4, 64))
    first = deploy.deploy(m, "openvino", parts=("g_s",), int8={"g_s": calib})
    kept = sorted(p.name for p in (tmp_path / "openvino-int8").iterdir())
    assert len(kept) == 2 and {p.rsplit(".", 1)[1] for p in kept} == {"xml", "bin"}  # no .tmp left

    def quantize_again(*a, **k):
        raise AssertionError("quantized again")
    monkeypatch.setattr(deploy, "_int8", quantize_again)
    again = deploy.deploy(m, "openvino", parts=("g_s",), int8={"g_s": calib})
    y = calib[0]
    with torch.no_grad():
        assert torch.equal(first.g_s(y), again.g_s(y))
    other = _model("bmshj2018-hyperprior", smoke, seed=1)  # other weights: another key, quantized afresh
    with pytest.raises(deploy.DeployError, match="quantized again"):
        deploy.deploy(other, "openvino", parts=("g_s",), int8={"g_s": calib})
    with pytest.raises(deploy.DeployError, match="quantized again"):  # other calibration: the same
        deploy.deploy(m, "openvino", parts=("g_s",), int8={"g_s": calib[:2]})
