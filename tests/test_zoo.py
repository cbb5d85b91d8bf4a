import math

import pytest
import torch

from lic import zoo
from lic.scales import get_scale


def test_builds_every_architecture_at_scale_widths(smoke):
    for arch in ("bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-attn"):
        model = zoo.build_for(arch, smoke)
        out = model(torch.rand(1, 3, 64, 64))
        assert out["x_hat"].shape == (1, 3, 64, 64)


def test_paper_scale_loads_compressai_pretrained_from_the_hub_cache(tmp_path, monkeypatch):
    """The real compressai.zoo path, with the weights file placed where torch.hub caches it."""
    from compressai.models import ScaleHyperprior
    from compressai.zoo.image import model_urls

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    ref = ScaleHyperprior(128, 192)
    url = model_urls["bmshj2018-hyperprior"]["mse"][3]
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / url.rsplit("/", 1)[-1])
    model = zoo.get("bmshj2018-hyperprior", 0.0067, get_scale("paper"))
    assert torch.equal(model.g_s[0].weight, ref.g_s[0].weight)


def test_pretrained_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(zoo.CheckpointError) as err:
        zoo.pretrained("mbt2018-mean", 0.0130)
    from compressai.zoo.image import model_urls

    url = model_urls["mbt2018-mean"]["mse"][4]
    assert "\n" not in str(err.value) and f"download {url}" in str(err.value)
    assert f"put it at {tmp_path / 'hub' / 'checkpoints' / url.rsplit('/', 1)[-1]}" in str(err.value)


def test_unknown_lambda_and_missing_model(smoke, tmp_zoo):
    with pytest.raises(ValueError, match="lambda for scale 'smoke'"):
        zoo.get("mbt2018", 0.5, smoke)
    with pytest.raises(zoo.CheckpointError, match="python -m lic.zoo train --scale smoke --arch mbt2018"):
        zoo.get("mbt2018", smoke.lambdas[0], smoke, train_missing=False)


def test_zoo_trains_middle_lambda_then_finetunes_and_records_manifest(smoke, tmp_zoo):
    smoke = smoke.with_(late_crop=128, late_frac=0.25)  # the cpu recipe's late large crops
    low = smoke.lambdas[0]
    model = zoo.get("bmshj2018-hyperprior", low, smoke, progress=False)
    manifest = zoo.read_manifest(smoke)
    mid, fine = (manifest[zoo.model_name("bmshj2018-hyperprior", lam)] for lam in (zoo.middle_lambda(smoke), low))
    assert fine["started_from"] == zoo.model_name("bmshj2018-hyperprior", zoo.middle_lambda(smoke))
    assert mid["steps"] == smoke.steps and fine["steps"] == smoke.finetune_steps
    # the middle λ ends on large crops; fine-tunes stay on them with the same pixels per batch
    assert (mid["schedule"]["crop"], mid["schedule"]["late_crop"]) == (smoke.crop, 128)
    assert (fine["schedule"]["crop"], fine["schedule"]["batch"], fine["schedule"]["late_crop"]) == (128, 1, 0)
    assert fine["bpp"] > 0 and fine["psnr"] > 0 and len(fine["sha256"]) == 64
    # wall time covers all the training (summed over resumes) plus the save and evaluation
    assert 0 < fine["train_seconds"] < fine["wall_seconds"]
    # loading again comes from the zoo (no training) and verifies the sha256
    again = zoo.get("bmshj2018-hyperprior", low, smoke, train_missing=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert zoo.learning_curve("bmshj2018-hyperprior", low, smoke) is not None


def test_fingerprint_follows_weights_not_coder_tables(smoke):
    import copy

    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    fp = zoo.fingerprint(model)
    twin = copy.deepcopy(model)
    twin.update(force=True)  # rebuilds the entropy coder's tables only
    assert zoo.fingerprint(twin) == fp and len(fp) == 12
    with torch.no_grad():
        twin.h_s[0].weight[0, 0, 0, 0] += 1e-3
    assert zoo.fingerprint(twin) != fp


def test_cli_step_overrides_are_recorded(tmp_zoo):
    """A schedule trial from the shell (into its own LIC_ZOO) records the steps it ran."""
    assert zoo.main(["train", "--scale", "smoke", "--arch", "bmshj2018-hyperprior", "--steps", "6",
                     "--finetune-steps", "3"]) == 0
    smoke = get_scale("smoke")
    manifest = zoo.read_manifest(smoke)
    steps = {lam: manifest[zoo.model_name("bmshj2018-hyperprior", lam)]["steps"] for lam in smoke.lambdas}
    assert steps == {lam: 6 if lam == zoo.middle_lambda(smoke) else 3 for lam in smoke.lambdas}


def test_list_states_the_quality_bar_vs_webp(tmp_zoo, capsys):
    """`zoo list` gives each family's BD-rate against published WebP, from the manifest's points."""
    import json

    from lic import report

    cpu = get_scale("cpu")
    webp = report.published("WebP")
    pts = sorted(zip(webp["bpp"], webp["psnr"]))[2:6]
    manifest = {f"a-{i}": {"arch": "a", "lambda": i, "bpp": b, "psnr": p, "steps": 1} for i, (b, p) in enumerate(pts)}
    manifest.update({f"b-{i}": {"arch": "b", "lambda": i, "bpp": b, "psnr": p + 1.0, "steps": 1}
                     for i, (b, p) in enumerate(pts)})
    zoo.manifest_path(cpu).parent.mkdir(parents=True)
    zoo.manifest_path(cpu).write_text(json.dumps(manifest))
    rates = zoo.bd_vs_webp(cpu)
    assert rates["a"] == pytest.approx(0, abs=0.05)  # WebP's own points (interpolated from 4 of them)
    assert rates["b"] < -10  # 1 dB better at every rate: clearly fewer bits
    assert zoo.bd_vs_webp(get_scale("smoke")) == {}  # not tested on Kodak: no published anchor
    assert zoo.main(["list", "--scale", "cpu"]) == 0
    assert f"{rates['b']:+.1f} %" in capsys.readouterr().out


def test_each_family_stands_beside_compressais_model_of_the_same_quality(tmp_zoo):
    """CompressAI's own point at a quality costs +0 % over its curve; ours at the same PSNR with
    10 % more bits costs +10 %; at CompressAI's widths (N=128, M=192 for quality 4) the sentence says
    so, beside our narrower model of the same λ."""
    import json

    from lic import report

    cpu = get_scale("cpu")
    pub = report.published("bmshj2018-hyperprior")
    q4 = {"arch": "bmshj2018-hyperprior", "lambda": 0.013, "steps": 60000,
          "psnr": pub["psnr"][3], "bpp": pub["bpp"][3]}
    for at, entry in ((cpu, {**q4, "widths": {"N": 64, "M": 96}, "bpp": 1.1 * pub["bpp"][3]}),
                      (cpu.at_width("N128"), {**q4, "widths": {"N": 128, "M": 192}}),
                      (cpu.at_width("N128"), {**q4, "lambda": 0.001, "widths": {"N": 128, "M": 192}})):  # no quality
        path = zoo.manifest_path(at)
        path.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps(old | {f"m-{entry['lambda']}": entry}))
    rows = {r["N, M (ours)"]: r for r in zoo.at_compressai_widths(cpu)}
    assert set(rows) == {"64, 96", "128, 192"} and rows["128, 192"]["quality"] == 4
    assert rows["128, 192"]["rate over CompressAI at equal PSNR (%)"] == pytest.approx(0, abs=1e-6)
    assert rows["64, 96"]["rate over CompressAI at equal PSNR (%)"] == pytest.approx(10)
    assert rows["64, 96"]["N, M (CompressAI)"] == "128, 192"
    text = zoo.at_compressai_widths_text(list(rows.values()))
    assert "N, M = 128, 192, λ = 0.013 (quality 4, 60,000 steps): +0.0 % rate" in text and "+10.0 % for ours at N, M = 64, 96" in text
    assert zoo.at_compressai_widths(get_scale("smoke")) == []  # not Kodak: no published point


def test_adopt_takes_a_trials_models_and_refuses_a_corrupt_one(tmp_zoo, monkeypatch):
    """A schedule trial trains into its own zoo; `zoo adopt` copies its verified models over."""
    smoke = get_scale("smoke")
    trial, home = tmp_zoo / "trial", tmp_zoo / "home"
    monkeypatch.setenv("LIC_ZOO", str(trial))
    assert zoo.main(["train", "--scale", "smoke", "--arch", "bmshj2018-hyperprior", "--steps", "6",
                     "--finetune-steps", "3"]) == 0
    trained = {lam: zoo.fingerprint(zoo.get("bmshj2018-hyperprior", lam, smoke, train_missing=False))
               for lam in smoke.lambdas}
    monkeypatch.setenv("LIC_ZOO", str(home))
    with pytest.raises(zoo.CheckpointError, match="no finished models of mbt2018"):
        zoo.adopt(trial, smoke, archs=["mbt2018"])
    victim = trial / "smoke" / f"{zoo.model_name('bmshj2018-hyperprior', smoke.lambdas[0])}.pt"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(zoo.CheckpointError, match="corrupt or truncated"):
        zoo.main(["adopt", str(trial), "--scale", "smoke"])
    assert zoo.read_manifest(smoke) == {}  # nothing copied when one file is bad
    victim.write_bytes(good)
    assert zoo.main(["adopt", str(trial), "--scale", "smoke"]) == 0
    for lam, fp in trained.items():  # the same weights load from this zoo, with their curves
        assert zoo.fingerprint(zoo.get("bmshj2018-hyperprior", lam, smoke, train_missing=False)) == fp
        assert zoo.learning_curve("bmshj2018-hyperprior", lam, smoke) is not None
    assert zoo.read_manifest(smoke)[zoo.model_name("bmshj2018-hyperprior", smoke.lambdas[0])]["steps"] == 3
    assert zoo.superseded(smoke) == {}
    # a second trial replaces them: the replaced records and learning curves are kept, not the weights
    monkeypatch.setenv("LIC_ZOO", str(tmp_zoo / "trial2"))
    assert zoo.main(["train", "--scale", "smoke", "--arch", "bmshj2018-hyperprior", "--steps", "8",
                     "--finetune-steps", "4"]) == 0
    monkeypatch.setenv("LIC_ZOO", str(home))
    real_bd = zoo.validation_bd
    monkeypatch.setattr(zoo, "validation_bd", lambda *a, **k: {**real_bd(*a, **k), "bd_rate": 3.0})  # a worse trial
    with pytest.raises(zoo.CheckpointError, match=r"validation images \(astronaut, coffee\): BD-rate \+3.00 %.*--force"):
        zoo.main(["adopt", str(tmp_zoo / "trial2"), "--scale", "smoke"])
    assert zoo.superseded(smoke) == {}  # refused: nothing replaced
    monkeypatch.setattr(zoo, "validation_bd", lambda *a, **k: {**real_bd(*a, **k), "bd_rate": float("nan")})
    with pytest.raises(zoo.CheckpointError, match=r"BD-rate n/a \(the curves overlap too little\).*--force"):
        zoo.adopt(tmp_zoo / "trial2", smoke)  # no BD-rate is no evidence: refused too
    assert zoo.main(["adopt", str(tmp_zoo / "trial2"), "--scale", "smoke", "--force"]) == 0
    old = zoo.superseded(smoke)
    assert {e["validation"]["images"][0] for e in old.values()} == {"astronaut"}  # decided on validation images
    assert all(e["validation"]["forced"] for e in old.values())
    low, mid = (zoo.model_name("bmshj2018-hyperprior", lam) for lam in (smoke.lambdas[0], zoo.middle_lambda(smoke)))
    assert set(old) == {f"{low}@3", f"{mid}@6"}
    assert old[f"{mid}@6"]["superseded_by"] == zoo.read_manifest(smoke)[mid]["sha256"] != old[f"{mid}@6"]["sha256"]
    assert len(zoo.superseded_curve(old[f"{mid}@6"], smoke)) < len(zoo.learning_curve("bmshj2018-hyperprior", zoo.middle_lambda(smoke), smoke))
    rows = {r["zoo"]: r for r in zoo.schedule_comparison(smoke)}
    assert (rows["replaced"]["steps (middle λ)"], rows["replaced"]["steps (others)"]) == (6, 3)
    assert (rows["current"]["steps (middle λ)"], rows["current"]["steps (others)"]) == (8, 4)
    assert rows["current"]["models"] == len(smoke.lambdas) and math.isnan(rows["current"]["BD-rate vs WebP %"])


def test_zoo_follows_the_architectures_own_schedule(tmp_zoo):
    """A scale's per-architecture steps (cheng2020-attn's shorter cpu schedule) reach training."""
    smoke = get_scale("smoke").with_(arch_steps=(("bmshj2018-hyperprior", 5, 2),))
    zoo.get("bmshj2018-hyperprior", smoke.lambdas[0], smoke, progress=False)
    manifest = zoo.read_manifest(smoke)
    steps = {lam: manifest[zoo.model_name("bmshj2018-hyperprior", lam)]["steps"]
             for lam in (smoke.lambdas[0], zoo.middle_lambda(smoke))}
    assert steps == {smoke.lambdas[0]: 2, zoo.middle_lambda(smoke): 5}


@pytest.mark.parametrize("tol_db, stored", [(math.inf, torch.float16), (-1.0, torch.float32)])
def test_fp16_weights_are_kept_only_within_the_psnr_tolerance(smoke, tmp_path, tol_db, stored):
    """save_checked measures fp32 and the fp16 file on real bitstreams; beyond the tolerance
    (here forced with a negative one) the file is rewritten in fp32 and its results are fp32's."""
    import numpy as np

    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    images = [("noise", np.random.default_rng(0).integers(0, 256, (170, 200, 3), dtype=np.uint8))]
    meta = {"arch": "bmshj2018-hyperprior", "widths": smoke.widths("bmshj2018-hyperprior")}
    sha, loaded, res = zoo.save_checked(model, tmp_path / "m.pt", meta, images, tol_db=tol_db,
                                        progress=False)
    check = meta["fp16_check"]
    assert check["within_tolerance"] == (stored == torch.float16)
    state = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert state["g_a.0.weight"].dtype == stored
    assert state["entropy_bottleneck.matrices.0"].dtype == torch.float32  # entropy models stay fp32
    assert zoo.load(tmp_path / "m.pt", sha) is not None  # the manifest's sha256 is the final file's
    if stored == torch.float16:
        assert res["psnr"] - check["psnr_fp32"] == pytest.approx(check["delta_psnr_db"])
    else:
        assert meta["weights"] == "fp32" and res["psnr"] == check["psnr_fp32"]
        assert torch.equal(loaded.g_a[0].weight, model.g_a[0].weight)


def test_check_fp16_measures_stored_models_against_their_own_fp32_state(smoke, tmp_zoo):
    """check-fp16 uses a training state only if it finished the model's steps and rounds to the
    stored fp16 weights; it records the same comparison save_checked makes."""
    from lic import data as lic_data

    torch.manual_seed(0)
    arch, name = "bmshj2018-hyperprior", zoo.model_name("bmshj2018-hyperprior", smoke.lambdas[0])
    model = zoo.build_for(arch, smoke)
    meta = {"arch": arch, "widths": smoke.widths(arch), "steps": 7, "weights": "fp16 transforms, fp32 entropy models"}
    images = lic_data.test_images(smoke)
    path = zoo.zoo_dir(smoke) / f"{name}.pt"
    sha, _, _ = zoo.save_checked(model, path, meta, images, tol_db=math.inf, progress=False)
    expected = meta.pop("fp16_check")
    zoo._write_manifest(smoke, {name: {**meta, "file": path.name, "sha256": sha}})
    other, unfinished, good = (tmp_zoo / d for d in ("other", "unfinished", "good"))
    for folder, weights, step in ((other, zoo.build_for(arch, smoke), 7), (unfinished, model, 6), (good, model, 7)):
        folder.mkdir()
        torch.save({"model": weights.state_dict(), "step": step}, folder / f"{name}.state.pt")
    assert zoo.check_stored_fp16(smoke, [other, unfinished], progress=False) == {}
    found = zoo.check_stored_fp16(smoke, [other, unfinished, good], progress=False)
    assert found[name]["delta_psnr_db"] == pytest.approx(expected["delta_psnr_db"])
    assert zoo.read_manifest(smoke)[name]["fp16_check"] == found[name]


def test_committed_cpu_zoo_loads_without_training_and_fp16_was_checked(monkeypatch):
    """What a clean clone holds: every manifest entry's file exists, matches its sha256, loads as its
    architecture at the cpu widths, and fp16 storage was measured within the tolerance."""
    monkeypatch.delenv("LIC_ZOO", raising=False)
    cpu = get_scale("cpu")
    manifest = zoo.read_manifest(cpu)
    assert manifest, "no committed cpu zoo"
    for name, entry in manifest.items():
        model = zoo.get(entry["arch"], entry["lambda"], cpu, train_missing=False, progress=False)
        assert isinstance(model, zoo.CLASSES[entry["arch"]]) and entry["widths"] == cpu.widths(entry["arch"])
        if entry["weights"].startswith("fp16"):
            assert abs(entry["fp16_check"]["delta_psnr_db"]) <= zoo.FP16_TOLERANCE_DB, name
    committed = sum(f.stat().st_size for f in zoo.zoo_dir(cpu).rglob("*") if f.is_file())
    assert committed <= 80e6, f"cpu zoo is {committed / 1e6:.1f} MB; the issue's budget is 80 MB"


@pytest.mark.parametrize("argv, message", [
    (["train", "--arch", "bmshj2018"], "invalid choice: 'bmshj2018'"),
    (["train", "--scale", "gpu"], "invalid choice: 'gpu'"),
    (["train", "--scale", "smoke", "--lmbda", "0.5"], "λ=0.5 is not a λ of scale smoke"),
    (["train", "--scale", "smoke", "--width", "N96"], "invalid choice: 'N96'"),
    (["train", "--scale", "smoke", "--stop-at", "0"], "--stop-at must be a positive step"),
    (["train", "--scale", "smoke", "--device", "tpu"], "unknown device 'tpu'; valid: cpu, cuda"),
    (["train", "--scale", "smoke", "--device", "cuda"], "no CUDA device is visible here"),
])
def test_cli_refuses_bad_arguments_in_one_line(argv, message, capsys):
    from lic import zoo

    with pytest.raises(SystemExit) as exit_:
        zoo.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_wider_family_has_its_own_folder_and_widths(smoke):
    wide = smoke.at_width("N128")
    assert (wide.N, wide.M, wide.width) == (32, 48, "N128")
    cpu = get_scale("cpu")
    cpu_wide = cpu.at_width("N128")
    assert (cpu_wide.N, cpu_wide.M) == (128, 192)  # CompressAI's bmshj2018-hyperprior, qualities 1-5
    assert zoo.zoo_dir(cpu_wide).name == "cpu-N128" and zoo.zoo_dir(cpu_wide) != zoo.zoo_dir(cpu)
    assert smoke.at_width("N64") == smoke and "--width N128" in zoo.train_command("mbt2018", 0.0067, wide)
    with pytest.raises(ValueError, match="unknown width 'N256'"):
        smoke.at_width("N256")


def test_a_stage_kept_on_one_machine_is_continued_on_another(smoke, tmp_zoo, capsys):
    """--stop-at keeps the unfinished model (stored weights, curve, stages.json); on a machine
    without the training state the same command continues from the stage (fresh optimizers, warm-up)
    and the finished model's manifest lists every part."""
    wide, lam = smoke.at_width("N128"), zoo.middle_lambda(smoke)
    argv = ["train", "--scale", "smoke", "--width", "N128", "--arch", "bmshj2018-hyperprior", "--lmbda", str(lam)]
    assert zoo.main(argv + ["--stop-at", "50"]) == 0
    assert "stopped at step 50 of 120" in capsys.readouterr().out
    name = zoo.model_name("bmshj2018-hyperprior", lam)
    stage = zoo.read_stages(wide)[name]
    assert (stage["step"], stage["of_steps"], len(stage["stages"])) == (50, smoke.steps, 1)
    assert name not in zoo.read_manifest(wide) and (zoo.zoo_dir(wide) / stage["file"]).is_file()
    kept = zoo.load(zoo.zoo_dir(wide) / stage["file"], stage["sha256"])
    assert kept.g_s[0].weight.shape[:2] == (48, 32)  # the wide family's widths
    for f in zoo.states_dir(wide).glob("*.state.pt"):  # another machine: no training state
        f.unlink()
    assert zoo.main(argv) == 0
    entry = zoo.read_manifest(wide)[name]
    assert entry["steps"] == smoke.steps and [p["to_step"] for p in entry["stages"]] == [50]
    assert any(lp["loop"] == "restart" and lp["from_step"] == 50 for lp in entry["precision"])
    assert name not in zoo.read_stages(wide) and not (zoo.zoo_dir(wide) / stage["file"]).exists()
    curve = zoo.learning_curve("bmshj2018-hyperprior", lam, wide)
    assert curve.step.min() <= 50 and curve.step.max() == smoke.steps  # one curve over both parts


def test_a_narrow_decoder_family_trains_from_scratch_in_its_own_folder(smoke, tmp_zoo):
    """07_controls' scratch control: the zoo's recipe with g_s at a pruned decoder's width."""
    from lic import liao, surgery

    narrow = smoke.with_(decoder=8)
    fresh = zoo.build_for("bmshj2018-hyperprior", narrow)
    assert [surgery.shape_of(fresh.get_submodule(c))[1] for c, _, _ in liao.hidden_layers(fresh)] == [8, 8, 8]
    assert fresh.g_a[0].weight.shape[0] == smoke.N and fresh.g_s[-1].weight.shape[0] == 8  # encoder untouched
    lam = zoo.middle_lambda(smoke)
    assert zoo.main(["train", "--scale", "smoke", "--decoder-width", "8", "--arch", "bmshj2018-hyperprior",
                     "--lmbda", str(lam)]) == 0
    assert zoo.zoo_dir(narrow).name == "smoke-gs8" and zoo.zoo_dir(narrow) != zoo.zoo_dir(smoke)
    entry = zoo.read_manifest(narrow)[zoo.model_name("bmshj2018-hyperprior", lam)]
    assert entry["decoder_width"] == 8 and entry["steps"] == smoke.steps
    model = zoo.get("bmshj2018-hyperprior", lam, narrow, train_missing=False)
    assert liao.decoder_macs(model, 64, 64) < liao.decoder_macs(zoo.build_for("bmshj2018-hyperprior", smoke), 64, 64)
    with pytest.raises(ValueError, match=r"decoder width must be in \[1, 16\]"):
        surgery.narrow_synthesis(zoo.build_for("bmshj2018-hyperprior", smoke), 17)


def test_a_zoo_file_over_the_size_limit_is_stored_in_checked_parts(smoke, tmp_path, monkeypatch):
    """No committed file over 7 MiB (an N=128/M=192 model is 9.7 MiB in fp16): the weights go to part
    files, each vouched for by the main file's sha256 list."""
    from lic import store

    monkeypatch.setattr(store, "MAX_FILE_BYTES", 20_000)
    torch.manual_seed(0)
    model = zoo.build_for("bmshj2018-hyperprior", smoke)
    path = tmp_path / "m.pt"
    sha = zoo.save(model, path, "bmshj2018-hyperprior", smoke.widths("bmshj2018-hyperprior"), half=True)
    files = store.model_files(path)
    assert len(files) > 2 and all(f.stat().st_size < 40_000 for f in files)
    loaded = zoo.load(path, sha)
    assert all(torch.equal(v.half().float() if not zoo.is_entropy(k) else v, loaded.state_dict()[k])
               for k, v in model.state_dict().items() if v.is_floating_point() and k.rsplit(".", 1)[-1] not in zoo.CODER_TABLES)
    files[1].write_bytes(files[1].read_bytes()[:-10])
    with pytest.raises(zoo.CheckpointError, match="corrupt or truncated"):
        zoo.load(path, sha)
