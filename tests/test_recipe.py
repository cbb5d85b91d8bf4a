"""The book replays its recorded recipe and skips what has not changed; runs never trip over each other."""
import json
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

from lic import book, lock, recipe, zoo
from lic.scales import get_scale


def _page(path, params):
    """An executed-looking page: the clean notebook with papermill's injected-parameters cell."""
    nb = nbformat.read(book.NOTEBOOKS / "01_liao.ipynb", as_version=4)
    cell = nbformat.v4.new_code_cell("# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(1, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the notebooks and the package whose files a test may touch."""
    root = tmp_path / "project"
    shutil.copytree(book.NOTEBOOKS, root / "notebooks")
    shutil.copytree(recipe.LIC, root / "lic", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(recipe.PROJECT / "data" / "papers", root / "data" / "papers")
    monkeypatch.setattr(recipe, "PROJECT", root)
    monkeypatch.setattr(recipe, "LIC", root / "lic")
    monkeypatch.setenv("LIC_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("LIC_RUNS", str(tmp_path / "runs"))
    return root


def test_a_chapter_runs_the_modules_it_imports_and_06_all_of_them():
    liao = recipe.lic_modules("01_liao")
    assert {"lic/liao.py", "lic/zoo.py", "lic/train.py", "lic/__init__.py"} <= set(liao)  # zoo imports train
    assert "lic/tao.py" not in liao and "lic/deploy.py" not in liao
    assert "lic/tao.py" in recipe.lic_modules("05_tao")
    assert set(recipe.lic_modules("06_synthesis")) >= set(liao) | {"lic/tao.py", "lic/luo.py", "lic/yu.py"}


def test_a_page_is_up_to_date_until_its_notebook_code_or_models_change(project, tmp_path):
    smoke = get_scale("smoke")
    page = _page(tmp_path / "book" / "01_liao.ipynb", {"scale": "smoke", "lambdas": "0.0067"})
    rec = recipe.record(page, "01_liao", smoke)
    assert rec["parameters"] == {"scale": "smoke", "lambdas": "0.0067"} and rec["how"] == "executed"
    assert recipe.status(page, "01_liao", smoke) == {"up_to_date": True, "why": [], "recipe": rec,
                                                     "parameters": rec["parameters"]}
    (project / "lic" / "tao.py").write_text("# a module 01 does not run\n")
    assert recipe.status(page, "01_liao", smoke)["up_to_date"]
    (project / "lic" / "liao.py").write_text((project / "lic" / "liao.py").read_text() + "\n# touched\n")
    assert recipe.status(page, "01_liao", smoke)["why"] == ["changed: lic/liao.py"]
    recipe.record(page, "01_liao", smoke)
    nb = json.loads((project / "notebooks" / "01_liao.ipynb").read_text())
    nb["cells"][-1]["source"].append("\n# one more line")
    (project / "notebooks" / "01_liao.ipynb").write_text(json.dumps(nb))
    assert recipe.status(page, "01_liao", smoke)["why"] == ["changed: notebooks/01_liao.ipynb"]
    recipe.record(page, "01_liao", smoke)
    manifest = zoo.manifest_path(smoke)  # a committed base model changes
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"bmshj2018-hyperprior-0.0067": {}}')
    assert recipe.status(page, "01_liao", smoke)["why"] == [f"new: {manifest}"]
    # a module edited while the run executed: the page keeps the code the run started with, so it is stale
    started = recipe.inputs("01_liao", smoke, {"scale": "smoke", "lambdas": "0.0067"})
    (project / "lic" / "liao.py").write_text((project / "lic" / "liao.py").read_text() + "\n# edited mid-run\n")
    recipe.record(page, "01_liao", smoke, code=started)
    assert recipe.status(page, "01_liao", smoke)["why"] == ["changed: lic/liao.py"]
    recipe.record(page, "01_liao", smoke)
    # other parameters asked for: a rerun, saying which
    recipe.record(page, "01_liao", smoke)
    assert recipe.status(page, "01_liao", smoke, {"lambdas": "0.025"})["why"][0] == "parameters: lambdas='0.025'"


@pytest.fixture
def smoke_book(tmp_path, monkeypatch):
    """An empty smoke book and zoo of its own; returns the smoke scale."""
    monkeypatch.setenv("LIC_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("LIC_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(book, "book_root", lambda scale: tmp_path / "root")
    return get_scale("smoke")


def test_run_all_replays_each_pages_parameters_and_skips_the_unchanged(smoke_book, tmp_path, monkeypatch, capsys):
    smoke = smoke_book
    for name in book.chapters():
        _page(book.executed_path(name, "smoke"), {"scale": "smoke"})
    recorded = book.executed_path("03_yin", "smoke")
    _page(recorded, {"scale": "smoke", "archs": "bmshj2018-hyperprior"})  # run with other parameters
    for name in book.chapters():
        if name != "04_yu":  # 04's page has no recipe yet
            recipe.record(book.executed_path(name, "smoke"), name, smoke)
    (tmp_path / "zoo" / "03_yin" / "smoke").mkdir(parents=True)  # a model of 03 appears: 03 and 06 rerun
    (tmp_path / "zoo" / "03_yin" / "smoke" / "manifest.json").write_text("{}")
    calls = []
    monkeypatch.setattr(book, "run", lambda name, scale, params, announce=None: calls.append((name, params)) or print(announce))
    assert book.main(["run", "all", "--scale", "smoke"]) == 0
    assert calls == [("03_yin", {"archs": "bmshj2018-hyperprior"}), ("04_yu", {}), ("06_synthesis", {})]
    out = capsys.readouterr().out
    assert "00_baselines: up to date (executed" in out and "04_yu" in out and "no recorded recipe" in out
    calls.clear()
    assert book.main(["run", "00_baselines", "--scale", "smoke", "--force"]) == 0 and calls == [("00_baselines", {})]


def _holder(path, seconds=60):
    code = (f"import time, sys; sys.path.insert(0, {str(book.PROJECT)!r}); from lic.lock import held\n"
            f"with held({str(path)!r}, 'test'):\n    print('held', flush=True); time.sleep({seconds})")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_of_the_same_chapter_is_refused_and_a_dead_holders_lock_taken_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIC_RUNS", str(tmp_path / "runs"))
    path = zoo.runs_dir(get_scale("smoke")) / "locks" / "00_baselines.lock"
    first = _holder(path)
    try:
        t0 = time.time()
        assert book.main(["run", "00_baselines", "--scale", "smoke", "--force"]) == 2
        out, err = capsys.readouterr()
        err = err.strip()
        assert time.time() - t0 < 30 and len(err.splitlines()) == 1 and "running" not in out  # refused, not announced
        assert f"chapter 00_baselines at scale smoke is already running (pid {first.pid}" in err
        with lock.held(tmp_path / "other.lock", "another chapter"):  # a different lock is free
            pass
    finally:
        first.kill()
        first.wait()
    with lock.held(path, "chapter 00_baselines at scale smoke") as me:  # the dead holder's lock is taken over
        assert json.loads(path.read_text())["pid"] == me["pid"]
    assert f"took over the lock of chapter 00_baselines at scale smoke from pid {first.pid}" in capsys.readouterr().err
    assert not path.exists()


def test_two_trainers_of_one_model_refuse_in_one_line(smoke, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIC_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("LIC_RUNS", str(tmp_path / "runs"))
    name = zoo.model_name("bmshj2018-hyperprior", zoo.middle_lambda(smoke))
    first = _holder(zoo.states_dir(smoke) / f"{name}.state.pt.lock")
    try:
        code = lock.guarded(zoo.main, ["train", "--scale", "smoke", "--arch", "bmshj2018-hyperprior",
                                       "--lmbda", str(zoo.middle_lambda(smoke))])
    finally:
        first.kill()
        first.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"error: training of {name}.state.pt is already running (pid {first.pid}")


def test_a_chapter_with_a_width_parameter_has_a_page_per_wider_family():
    pages = book.pages()
    assert pages.index("01_liao-N128") == pages.index("01_liao") + 1 and "02_luo-N128" in pages
    assert "03_yin-N128" not in pages  # no `width` parameter: one page
    assert book.resolve("01_liao", {"width": "N128", "ratios": "0.55"}) == (
        "01_liao-N128", "01_liao", {"width": "N128", "ratios": "0.55"})
    assert book.resolve("01_liao-N128") == ("01_liao-N128", "01_liao", {"width": "N128"})
    assert book.resolve("01_liao", {"width": "N64"})[0] == "01_liao"  # the scale's own family: the chapter's page
    with pytest.raises(ValueError, match="asks for another page: run `01_liao`"):
        book.resolve("01_liao-N128", {"width": "N64"})
    with pytest.raises(ValueError, match="unknown chapter '03_yin-N128'.*01_liao-N128"):
        book.resolve("03_yin-N128")
    assert book.main(["run", "01_liao", "--scale", "smoke", "-p", "width=N256"]) == 2


def test_a_wider_familys_page_reads_its_own_models_and_the_scales_own_results(project):
    smoke = get_scale("smoke")
    ins = recipe.inputs("01_liao", smoke, {"width": "N128"})
    wide = smoke.at_width("N128")
    assert wide.key == "smoke-N128" and zoo.zoo_dir(wide) != zoo.zoo_dir(smoke)
    (zoo.zoo_dir(wide)).mkdir(parents=True)
    (zoo.zoo_dir(wide) / "manifest.json").write_text("{}")
    after = recipe.inputs("01_liao", smoke, {"width": "N128"})
    assert set(after) - set(ins) == {str(zoo.zoo_dir(wide) / "manifest.json")}
    assert recipe.inputs("01_liao", smoke, {}) == recipe.inputs("01_liao", smoke, {"width": "N64"})  # the N128 zoo is not the base page's input
    results = project / "data" / "results" / "01_liao" / "smoke.json"  # where lic.report writes
    results.parent.mkdir(parents=True)
    results.write_text("{}")  # the scale's own results: the wider page sets itself beside them
    assert str(results.relative_to(project)) in recipe.inputs("01_liao", smoke, {"width": "N128"})
    assert str(results.relative_to(project)) not in recipe.inputs("01_liao", smoke, {})


def test_run_all_replays_an_executed_wider_page_and_names_one_never_run(smoke_book, monkeypatch, capsys):
    smoke = smoke_book
    for name in book.chapters():
        recipe.record(_page(book.executed_path(name, "smoke"), {"scale": "smoke"}), name, smoke)
    wide = _page(book.executed_path("01_liao-N128", "smoke"), {"scale": "smoke", "width": "N128", "ratios": "0.55"})
    calls = []
    monkeypatch.setattr(book, "run", lambda name, scale, params, announce=None: calls.append((name, params)) or print(announce))
    assert book.main(["run", "all", "--scale", "smoke"]) == 0
    assert calls == [("01_liao-N128", {"width": "N128", "ratios": "0.55"})]  # no recipe yet: replayed as recorded
    assert "02_luo-N128: not executed at this scale; `python -m lic.book run 02_luo-N128 --scale smoke`" in capsys.readouterr().out
    recipe.record(wide, "01_liao", smoke)
    calls.clear()
    assert book.main(["run", "all", "--scale", "smoke"]) == 0 and calls == []
    assert "01_liao-N128: up to date" in capsys.readouterr().out


def test_a_pending_section_leaves_the_toc_with_its_chapter_kept():
    import yaml

    toc = yaml.safe_load((book.PROJECT / "_toc.yml").read_text())
    kept = book.toc_without(toc, ["01_liao-N128"])
    liao = next(c for part in kept["parts"] for c in part["chapters"] if c["file"] == "book/01_liao")
    luo = next(c for part in kept["parts"] for c in part["chapters"] if c["file"] == "book/02_luo")
    assert "sections" not in liao and luo["sections"] == [{"file": "book/02_luo-N128"}]


def test_run_all_names_a_chapter_never_run_at_a_scale_with_a_book_and_runs_every_chapter_on_a_fresh_one(
        smoke_book, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(book, "run", lambda name, scale, params, announce=None: calls.append(name))
    for name in book.chapters():
        book.executed_path(name, "smoke").unlink(missing_ok=True)
    assert book.main(["run", "all", "--scale", "smoke"]) == 0
    assert calls == book.chapters()  # nothing executed at this scale yet: a first build runs every chapter
    for name in book.chapters():
        if name != "07_controls":
            recipe.record(_page(book.executed_path(name, "smoke"), {"scale": "smoke"}), name, smoke_book)
    calls.clear()
    assert book.main(["run", "all", "--scale", "smoke"]) == 0 and calls == []
    assert "07_controls: not executed at this scale; `python -m lic.book run 07_controls --scale smoke`" in capsys.readouterr().out
