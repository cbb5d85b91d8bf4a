"""The training loop's precision: chosen by measurement, cached per CPU, overridable, resumable
across precisions, recorded everywhere, and never leaking into evaluation."""
import math

import pytest
import torch

from lic import data, precision, zoo
from lic.train import Hook, TrainConfig, _measurer, split_parameters, train


def _setup(smoke, **cfg):
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    ds = data.ImageFolder([img for _, img in data.skimage_photos(2)], crop=64, seed=0)
    return model, ds, TrainConfig(**{"lmbda": 0.01, "steps": 8, "batch": 2, "crop": 64, "checkpoint_every": 4, **cfg})


def _timings(**seconds):
    """A fake ``measure``: fixed seconds per step by loop name; records the loops it timed."""
    calls = []

    def measure(loop, best):
        calls.append(loop.name)
        return seconds[loop.name]
    return measure, calls


@pytest.mark.parametrize("bf16_s, picked", [(2.4, "fp32+channels_last"), (0.1, "bf16+channels_last")])
def test_auto_picks_the_fastest_measured_loop(smoke, tmp_zoo, bf16_s, picked):
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    measure, calls = _timings(**{"fp32": 0.30, "fp32+channels_last": 0.25, "bf16+channels_last": bf16_s})
    loop, times, how = precision.choose(model, 8, 128, 1000, measure, precision="auto")
    assert (loop.name, how) == (picked, "measured")
    assert calls == ["fp32", "fp32+channels_last", "bf16+channels_last"] and times["bf16+channels_last"] == bf16_s


def test_cheng2020_is_never_timed_with_channels_last(smoke):
    model = zoo.build_for("cheng2020-attn", smoke)
    assert [c.name for c in precision.candidates(model)] == ["fp32", "bf16"]


def test_the_choice_is_cached_per_cpu_model(smoke, tmp_zoo, monkeypatch):
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    measure, calls = _timings(**{"fp32": 0.3, "fp32+channels_last": 0.2, "bf16+channels_last": 0.1})
    precision.choose(model, 8, 128, 1000, measure, precision="auto")
    loop, times, how = precision.choose(model, 8, 128, 1000, measure, precision="auto")
    assert (loop.name, how, len(calls)) == ("bf16+channels_last", "cached", 3)  # second call: no timing
    assert times == {"fp32": 0.3, "fp32+channels_last": 0.2, "bf16+channels_last": 0.1}
    precision.choose(model, 8, 256, 1000, measure, precision="auto")  # another crop: another key
    assert len(calls) == 6
    monkeypatch.setattr(precision, "cpu_model", lambda: "AMD EPYC (family 23, model 49), AVX2")
    slow, _ = _timings(**{"fp32": 0.25, "fp32+channels_last": 0.25, "bf16+channels_last": 2.5})
    loop, _, how = precision.choose(model, 8, 128, 1000, slow, precision="auto")
    assert (loop.name, how) == ("fp32", "measured")  # the other CPU recalibrates (fp32 first wins a tie)
    assert len(precision.read_cache()) == 3


def test_explicit_precision_and_short_runs_do_not_calibrate(smoke, tmp_zoo, monkeypatch):
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    measure, calls = _timings()
    assert precision.choose(model, 8, 128, 10**6, measure, precision="fp32")[0].name == "fp32+channels_last"
    assert precision.choose(model, 8, 128, 10**6, measure, precision="bf16")[0].name == "bf16+channels_last"
    monkeypatch.setenv("LIC_PRECISION", "bf16")  # the notebooks' override
    assert precision.choose(model, 8, 128, 10**6, measure)[0].name == "bf16+channels_last"
    assert precision.choose(model, 8, 128, 10**6, measure, precision="fp32")[0].precision == "fp32"  # explicit wins
    monkeypatch.delenv("LIC_PRECISION")
    loop, _, how = precision.choose(model, 8, 128, precision.CALIBRATE_MIN_STEPS - 1, measure)
    assert loop.name == "fp32" and "not calibrated" in how and calls == []


@pytest.mark.parametrize("where", ["config", "env"])
def test_a_bad_precision_is_one_line_naming_the_choices(smoke, tmp_zoo, monkeypatch, where):
    model, ds, cfg = _setup(smoke)
    if where == "env":
        monkeypatch.setenv("LIC_PRECISION", "fp16")
    else:
        cfg.precision = "fp16"
    with pytest.raises(ValueError) as err:
        train(model, ds, cfg, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "'fp16'" in msg and "fp32, bf16, auto" in msg
    assert ("LIC_PRECISION" in msg) == (where == "env")


def test_zoo_cli_refuses_a_bad_precision(tmp_zoo, capsys):
    with pytest.raises(SystemExit) as err:
        zoo.main(["train", "--scale", "smoke", "--precision", "fp16"])
    assert err.value.code == 2
    assert "'fp32', 'bf16', 'auto'" in capsys.readouterr().err


@pytest.mark.parametrize("first, then", [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_checkpoint_resumes_under_the_other_precision(smoke, tmp_path, first, then):
    model, ds, cfg = _setup(smoke, precision=first)
    train(model, ds, cfg, checkpoint=tmp_path / "s.pt", progress=False, stop_after=4)  # "killed"
    state = torch.load(tmp_path / "s.pt", weights_only=False)
    assert state["step"] == 4 and [lp["loop"] for lp in state["loops"]] == [f"{first}+channels_last"]
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert all(t.dtype == torch.float32 for s in state["optimizer"]["state"].values()
               for k, t in s.items() if k != "step")  # Adam's moments stay fp32 under autocast

    model, ds, cfg = _setup(smoke, precision=then)  # the next part, on another machine
    curve = train(model, ds, cfg, checkpoint=tmp_path / "s.pt", progress=False)
    state = torch.load(tmp_path / "s.pt", weights_only=False)
    assert curve[-1]["step"] == cfg.steps == state["step"] and math.isfinite(curve[-1]["loss"])
    assert [(lp["from_step"], lp["loop"]) for lp in state["loops"]] == [(0, f"{first}+channels_last"),
                                                                       (4, f"{then}+channels_last")]
    assert curve[-1]["precision"] == f"{then}+channels_last"


def test_calibration_leaves_the_run_as_it_was(smoke, tmp_zoo, monkeypatch):
    """A run that calibrates (here: timing fp32 only) ends with the same weights as one that was
    told fp32: the timing runs on a copy, with every RNG restored."""
    monkeypatch.setattr(precision, "CALIBRATE_MIN_STEPS", 1)
    monkeypatch.setattr(precision, "candidates", lambda model, channels_last=True: [precision.Loop("fp32", False)])
    a, ds_a, cfg_a = _setup(smoke, precision="auto")
    train(a, ds_a, cfg_a, progress=False)
    assert "fp32" in precision.read_cache()[next(iter(precision.read_cache()))]["s_per_step"]
    b, ds_b, cfg_b = _setup(smoke, precision="fp32", channels_last=False)
    train(b, ds_b, cfg_b, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_evaluation_inside_training_runs_in_fp32(smoke):
    seen = []

    def evaluate(model):
        seen.append((torch.is_autocast_enabled("cpu"), {p.dtype for p in model.parameters()}))
        x = torch.rand(1, 3, 64, 64)
        seen.append(model(x)["x_hat"].dtype)
        return {}

    model, ds, cfg = _setup(smoke, precision="bf16", eval_every=4)
    train(model, ds, cfg, evaluate=evaluate, progress=False)
    assert seen and all(s in ((False, {torch.float32}), torch.float32) for s in seen)


def test_zoo_records_the_loop_in_manifest_and_curve(tmp_zoo, monkeypatch):
    """``--precision`` overrides $LIC_PRECISION; the manifest and the learning curve say which
    loop trained the model."""
    monkeypatch.setenv("LIC_PRECISION", "bf16")
    assert zoo.main(["train", "--scale", "smoke", "--arch", "bmshj2018-hyperprior", "--lmbda", "0.025",
                     "--steps", "6", "--precision", "fp32"]) == 0
    from lic.scales import get_scale

    smoke = get_scale("smoke")
    entry = zoo.read_manifest(smoke)[zoo.model_name("bmshj2018-hyperprior", 0.025)]
    assert [(p["from_step"], p["loop"], p["how"]) for p in entry["precision"]] == [(0, "fp32+channels_last", "asked for")]
    assert entry["precision"][0]["cpu"] == precision.cpu_model()
    curve = zoo.learning_curve("bmshj2018-hyperprior", 0.025, smoke)
    assert set(curve["precision"]) == {"fp32+channels_last"}


class _BreaksUnderAutocast(Hook):
    """A loss term that overflows only in bf16, like HiFiC's MS-SSIM term did before it was kept fp32."""

    def loss(self, model, out, x):
        return {"fragile": torch.tensor(-math.inf if torch.is_autocast_enabled("cpu") else 0.0)}


def test_a_loop_whose_loss_is_not_finite_is_never_chosen(smoke, tmp_zoo):
    """The probe runs the hooks' loss terms too: a bf16 loop that is fast but breaks the loss
    scores inf and auto keeps an fp32 loop (the HiFiC run that failed at step 1)."""
    model, ds, cfg = _setup(smoke)
    main, aux = split_parameters(model)
    measure = _measurer(model, main, aux, cfg, 2, 64, ds.shape, warmup=0, steps=1, hooks=[_BreaksUnderAutocast()])
    loop, times, how = precision.choose(model, 2, 64, 1000, measure, precision="auto")
    assert how == "measured" and times["bf16+channels_last"] == math.inf
    assert loop.precision == "fp32" and all(math.isfinite(v) for k, v in times.items() if k.startswith("fp32"))
    plain = _measurer(model, main, aux, cfg, 2, 64, ds.shape, warmup=0, steps=1)
    assert math.isfinite(plain(precision.Loop("bf16", True), None))  # the hook, not the loop, breaks it


def test_on_a_gpu_bf16_is_a_candidate_only_where_supported_and_the_loop_names_the_gpu(monkeypatch):
    # no GPU here: the device and CUDA's answers are stubbed; what is tested is the choice made from them
    from lic import precision as P

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3))
    monkeypatch.setattr(P, "device_type", lambda model=None: "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert [c.name for c in P.candidates(model)] == ["fp32", "fp32+channels_last"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert [c.name for c in P.candidates(model)][-1] == "bf16+channels_last"
    assert P.device_name(model).startswith("NVIDIA V100 (CUDA")
    assert P.cache_key(model, 8, 128).startswith("NVIDIA V100")  # a GPU's choice is cached apart from the CPU's
    assert P.autocast(P.Loop("bf16", True), "cuda").device == "cuda"
    assert P.autocast(P.Loop("bf16", True)).device == "cpu"
