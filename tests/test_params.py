"""Chapter parameters: declared once, checked before any cell runs, one vocabulary."""
import time

import pytest

from lic import book, params


def test_every_chapter_declares_exactly_its_parameters_cell():
    """Fails when someone adds a parameter to a notebook and forgets its check (or the reverse)."""
    assert set(params.CHECKS) == set(book.chapters())
    for name in book.chapters():
        assert set(params.declared(name)) == set(params.CHECKS[name]), name


def test_defaults_pass_their_own_checks():
    for name in book.chapters():
        for scale in ("smoke", "cpu"):
            params.check(name, {"scale": scale})


def test_one_vocabulary_across_chapters():
    names = {n for name in book.chapters() for n in params.declared(name)}
    assert not names & set(params.RENAMED), "an old name is still in use"
    fixed = {"04_yu", "05_tao",  # their own codecs (Yu: RNN + HiFiC-style; AdaNIC: the mean-scale supernet)
             "06_synthesis"}  # compares whatever architectures the chapters registered points on
    assert all("archs" in params.declared(n) for n in book.chapters() if n not in fixed)
    assert all("lambdas" in params.declared(n) for n in ("01_liao", "02_luo", "05_tao"))


@pytest.mark.parametrize("args, message", [
    (["-p", "arch=mbt2018-mean"], "now called 'archs'"),
    (["-p", "archz=mbt2018-mean"], "did you mean 'archs'"),
    (["-p", "noequals"], "needs the form NAME=VALUE"),
    (["-p", "ratios=0.2,1.5"], "'1.5' must be a number in (0, 1)"),
    (["-p", "archs=foo"], "unknown 'foo'"),
    (["-p", "lambdas=0.5,0.0067"], "λ=0.5 is not a λ of scale 'smoke'"),
    (["-p", "estimate_crops=many"], "must be an integer"),
])
def test_a_bad_parameter_is_one_line_exit_2_and_runs_nothing(args, message, capsys, tmp_zoo):
    from lic.scales import get_scale
    from lic.zoo import runs_dir

    t0 = time.perf_counter()
    assert book.main(["run", "01_liao", "--scale", "smoke", *args]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("error: ")
    assert not (runs_dir(get_scale("smoke")) / "executing").exists()


def test_luo_refuses_a_single_lambda_before_running(capsys, tmp_zoo):
    """02's BD-rates need two λ per curve: one λ is refused up front, not by a crash in cell 9."""
    assert book.main(["run", "02_luo", "--scale", "smoke", "-p", "lambdas=0.0067"]) == 2
    assert "needs at least 2 λ" in capsys.readouterr().err
    assert params.check("02_luo", {"scale": "smoke", "lambdas": "0.0067,0.025"}).lambdas == [0.0067, 0.025]


def test_every_chapter_is_checked_before_the_first_one_runs(capsys, tmp_zoo):
    assert book.main(["run", "all", "--scale", "smoke", "-p", "variants=gates"]) == 2  # only 03_yin has it...
    assert "has no parameter 'variants'" in capsys.readouterr().err  # ...so 00_baselines refuses it first


def test_cli_values_are_parsed_as_json_where_they_parse():
    assert params.parse_cli(["seed=3", "data_root=null", "archs=mbt2018", "lambdas=0.0067,0.025"]) == {
        "seed": 3, "data_root": None, "archs": "mbt2018", "lambdas": "0.0067,0.025"}


def test_the_notebook_checks_itself_in_its_first_code_cell(tmp_path):
    """Run directly with papermill (no lic.book): the bad value stops the notebook before any
    heavy cell, with the same one-line message."""
    import nbformat
    import papermill as pm

    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="now called 'lambdas'"):
        pm.execute_notebook(str(book.NOTEBOOKS / "01_liao.ipynb"), str(out), kernel_name="python3",
                            parameters={"scale": "smoke", "lmbda": 0.5}, progress_bar=False)
    nb = nbformat.read(str(out), as_version=4)
    ran = [c for c in nb.cells if c.cell_type == "code" and c.execution_count is not None]
    assert ran[-1].id == "check-params" and len(ran) == 3  # parameters, injected, the check


def test_dry_run_names_what_would_be_trained_on_a_fresh_clone(tmp_zoo, capsys):
    assert book.main(["run", "03_yin", "--scale", "smoke", "--dry-run", "-p", "archs=mbt2018"]) == 0
    out = capsys.readouterr().out
    assert "to TRAIN first: mbt2018-0.0067, mbt2018-0.0250" in out
    assert "0 of 3 trained; to TRAIN" in out and "mbt2018-vbr" in out
    assert ("trade-off curve (bmshj2018-hyperprior, α_t = 0, 0.5, 0.25): to TRAIN as well: bmshj2018-hyperprior-bm, "
            "bmshj2018-hyperprior-ecg+bm-s0.50, bmshj2018-hyperprior-ecg+bm-s0.25") in out
    assert "parameters: scale='smoke'" in out


def test_list_shows_each_chapters_parameters(capsys):
    assert book.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "01_liao" in out and "  archs = 'bmshj2018-hyperprior'" in out and "# the architecture to prune" in out
    assert "takes: exactly 1 of: bmshj2018-hyperprior, mbt2018-mean, mbt2018, cheng2020-attn" in out
    assert "takes: comma-separated numbers in (0, 1)" in out and "takes: number > 0" in out


def test_dry_run_estimates_training_time_from_the_manifests(tmp_zoo, capsys, monkeypatch):
    import json

    from lic import yin
    from lic.scales import get_scale

    smoke = get_scale("smoke")
    folder = yin.models_dir(smoke)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"x": {"steps": 40, "train_seconds": 3600.0}}))
    assert book.main(["run", "03_yin", "--scale", "smoke", "--dry-run", "-p", "archs=mbt2018"]) == 0
    # 3 models of 40 steps at 90 s/step
    assert f"≈ {3 * smoke.vr_steps * 90 / 3600:.1f} h at the s/step of the trained ones" in capsys.readouterr().out


def test_dry_run_of_the_synthesis_estimates_timing_and_quality_from_the_zoos_times(tmp_zoo, capsys, monkeypatch):
    from lic import data, synthesis

    pts = [{"arch": "a", "name": "p1"}, {"arch": "a", "name": "p2"}, {"arch": "b", "name": "p3"}]
    monkeypatch.setattr(synthesis, "collect", lambda S, chapters: (pts, {"02_luo": "python -m lic.book run 02_luo"}))
    monkeypatch.setattr(synthesis, "stack_candidates", lambda found: [])
    monkeypatch.setattr(synthesis, "zoo_image_ms", lambda S: {"a": 1000.0, "b": 4000.0})
    monkeypatch.setattr(data, "test_images", lambda S, root=None: [("x", None)] * 30)
    assert book.main(["run", "06_synthesis", "--scale", "smoke", "--dry-run", "-p", "timed_images=2"]) == 0
    out = capsys.readouterr().out
    assert "3 registered; none from 02_luo (`python -m lic.book run 02_luo`)" in out
    # timing: (1 + 1 + 4 s) x 2 images x (repeats + a warm-up) x 2 runtimes (each point timed again,
    # deployed: an upper bound); quality: (1 + 1 + 4 s) x 30 images once
    from lic.scales import get_scale
    minutes = 6 * 2 * (get_scale('smoke').timing_repeats + 1) * 2 / 60
    assert f"≤ {minutes:.0f} min for 3 points × 2 runtimes (eager, openvino)" in out
    assert "quality and rate: up to ≈ 3 min more, for the points never measured" in out
    assert "codes the 30 test images once" in out


def test_dry_run_of_02_counts_the_kept_variants(tmp_zoo, capsys):
    import json

    from lic import luo
    from lic.scales import get_scale

    folder = luo.trained_dir(get_scale("smoke"))
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"a": {}, "b": {}}))
    assert book.main(["run", "02_luo", "--scale", "smoke", "--dry-run", "-p", "other_strengths=1e-4,1e-3"]) == 0
    out = capsys.readouterr().out
    assert "trained variants: 2 kept in" in out
    assert f"up to {len(get_scale('smoke').lambdas) * 2 * 6} in all" in out  # 2 archs x λ x (3 ERHP + 3 controls)


def test_a_one_sided_bound_reads_as_a_reader_writes_it(capsys, tmp_zoo):
    assert book.main(["run", "05_tao", "--scale", "smoke", "-p", "blocks=8"]) == 2
    err = capsys.readouterr().err
    assert "'8' must be a number ≥ 16" in err and "None" not in err


def test_dry_run_at_paper_scale_lists_the_pretrained_files_and_what_is_missing(tmp_path, capsys, monkeypatch):
    from compressai.zoo.image import model_urls

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    present = model_urls["bmshj2018-hyperprior"]["mse"][4].rsplit("/", 1)[-1]  # λ = 0.013
    (cache / present).write_bytes(b"")
    assert book.main(["run", "01_liao", "--scale", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out  # 01 runs at two λ: the middle one and the smallest
    assert f"CompressAI's pretrained weights, 1 of 2 in torch.hub's cache ({cache})" in out
    assert "bmshj2018-hyperprior-0.0130: present" in out
    missing = model_urls["bmshj2018-hyperprior"]["mse"][2]
    assert f"bmshj2018-hyperprior-0.0035: MISSING, fetch {missing}" in out
    assert book.main(["run", "02_luo", "--scale", "paper", "--dry-run"]) == 0  # 02: every λ of each architecture
    assert "bmshj2018-hyperprior-0.0250: MISSING, fetch" in capsys.readouterr().out
    assert book.main(["run", "05_tao", "--scale", "paper", "--dry-run"]) == 0  # 05: its one architecture
    assert "mbt2018-mean-0.0130: MISSING, fetch https://" in capsys.readouterr().out


def test_the_runtime_names_are_lic_deploys():
    from lic import deploy, params

    assert params.RUNTIMES == deploy.RUNTIMES  # kept apart so that no chapter's recipe reads lic.deploy


@pytest.mark.parametrize("args, message", [
    (["-p", "scratch_ratios=0.4"], "scratch_ratios: 0.4 is not one of ratios (0.55, 0.33)"),
    (["-p", "budgets=1,2.5"], "'2.5' must be an integer ≥ 1"),
    (["-p", "budgets=0"], "'0' must be an integer ≥ 1"),
    (["-p", "lambdas=0.0067"], "needs exactly 2 λ"),
])
def test_the_controls_refuse_a_scratch_ratio_they_do_not_match_and_fractional_budgets(args, message, capsys, tmp_zoo):
    assert book.main(["run", "07_controls", "--scale", "smoke", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("error: ")
    assert params.check("07_controls", {"scale": "smoke", "scratch_ratios": ""}).scratch_ratios == []  # none from scratch
    with pytest.raises(params.ParamError, match="pass -p scratch_ratios= "):  # pretrained base models: none from scratch
        params.check("07_controls", {"scale": "paper"})
    assert params.check("07_controls", {"scale": "paper", "scratch_ratios": ""}).ratios == [0.55, 0.33]
