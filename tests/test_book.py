import json

import pytest

from lic import book, report


def test_chapters_are_found_in_order_the_cross_method_chapter_last():
    names = book.chapters()
    assert names[0] == "00_baselines" and names[-1] == "06_synthesis"  # it reads every other chapter's points
    assert names[:-1] == sorted(names[:-1]) and "07_controls" in names


def test_bad_scale_or_chapter_lists_the_choices():
    with pytest.raises(ValueError, match="smoke, cpu, paper"):
        book.run("00_baselines", "gpu")
    with pytest.raises(ValueError, match="00_baselines"):
        book.run("99_missing", "smoke")


def test_a_failed_run_leaves_the_book_copy_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("LIC_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(book, "book_root", lambda scale: tmp_path / "root")
    page = book.executed_path("00_baselines", "smoke")
    page.parent.mkdir(parents=True)
    page.write_text("the published copy")
    # a run that fails inside the notebook (lic.book's own parameter check would refuse it first)
    monkeypatch.setattr(book.lic_params, "check", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="book's copy .* is unchanged"):
        book.run("00_baselines", "smoke", parameters={"archs": "no-such-arch"}, progress=False)
    assert page.read_text() == "the published copy"
    assert book.executing_path("00_baselines", "smoke").exists()  # kept for debugging
    assert not json.loads(book.runs_log("smoke").read_text())["00_baselines"]["ok"]


def test_cpu_book_builds_in_place_and_other_scales_apart():
    assert book.book_root("cpu") == book.PROJECT
    assert book.executed_path("00_baselines", "smoke").is_relative_to(book.PROJECT / "runs" / "smoke")


def test_results_round_trip_and_are_json_safe(tmp_path):
    import numpy as np

    path = report.save_results("nb", "smoke", {"x": np.float32(1.5), "bad": float("nan"), "n": np.int64(3)},
                               root=tmp_path)
    res = report.load_results("nb", "smoke", root=tmp_path)
    assert path.exists() and res["x"] == 1.5 and res["bad"] is None and res["n"] == 3
    assert res["environment"]["threads"] >= 1
    with pytest.raises(FileNotFoundError, match="python -m lic.book run nb --scale cpu"):
        report.load_results("nb", "cpu", root=tmp_path)


def test_published_curves_and_paper_tables_are_readable():
    webp = report.published("WebP")
    assert len(webp["bpp"]) == len(webp["psnr"]) > 5
    with pytest.raises(ValueError, match="valid choices"):
        report.published("HEIF")
    claims = report.paper_table("claims")
    assert {"paper", "claim", "value", "source"} <= set(claims.columns)


def test_rd_plot_zooms_on_the_points_inside_the_x_limits():
    import matplotlib

    matplotlib.use("Agg")
    curves = [{"name": "a", "bpp": [0.2, 0.5, 3.0], "psnr": [28.0, 31.0, 45.0]},
              {"name": "b", "bpp": [0.3, 0.8], "psnr": [29.0, 33.0], "kind": "published"}]
    ax = report.rd_plot(curves, xlim=(0, 1.0))
    lo, hi = ax.get_ylim()
    assert lo < 28.0 and 33.0 < hi < 34.0  # the 45 dB point beyond 1 bpp does not stretch the axis


def test_rd_plot_puts_the_legend_where_it_is_asked():
    import matplotlib

    matplotlib.use("Agg")
    curves = [{"name": "a", "bpp": [0.2, 0.5], "psnr": [28.0, 31.0]}]
    assert report.rd_plot(curves, legend="upper left").get_legend()._loc == 2  # matplotlib's code for it
    assert report.rd_plot(curves, legend="inside").get_legend()._loc == 4  # lower right
    assert report.rd_plot(curves, legend=None).get_legend() is None


def test_tidy_drops_progress_bars_but_keeps_other_stderr(tmp_path):
    import nbformat

    from lic import book

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\r 40%|████ | 4/10 [00:01<00:02, 2.0it/s]"),
                    nbformat.v4.new_output("stream", name="stderr", text="\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="\x1b[A"),  # a closed nested bar's cursor-up
                    nbformat.v4.new_output("stream", name="stderr", text=2 * "[W1205 08:29:44.807405362 qrelu.cpp:207] "
                                           "Warning: inplace=True is not supported for quantized::leaky_relu yet\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something real\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="wrote data/results/x.json\n")]
    path = tmp_path / "page.ipynb"
    params = nbformat.v4.new_code_cell("scale = 'cpu'", metadata={"tags": ["parameters"]})
    check = nbformat.v4.new_code_cell("from lic import params\n\np = params.check('x', globals())")
    nb.cells = [params, check, cell]
    nbformat.write(nb, path)
    assert book.tidy(path) == 4
    cells = nbformat.read(path, as_version=4).cells
    assert [o.text for o in cells[2].outputs] == ["UserWarning: something real\n", "wrote data/results/x.json\n"]
    # the page starts with the story: parameters and their check removed, other code folded
    assert [c.metadata["tags"] for c in cells] == [["parameters", "remove-cell"], ["remove-cell"], ["hide-input"]]
    assert book.tidy(path) == 0


def test_status_page_reads_in_hours_and_counts_the_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "book_root", lambda scale: tmp_path)
    log = book.runs_log("cpu")
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"00_baselines": {"wall_seconds": 3 * 3600 + 7 * 60 + 20, "ok": True, "date": "d",
                                                "cpu": "AMD EPYC (family 25, model 1), AVX2", "threads": 2,
                                                "torch": "t", "compressai": "c"}}))
    page = book.write_status("cpu", pending=["04_yu"]).read_text()
    assert "| 00_baselines | yes | 3:07 | d | AMD EPYC (family 25, model 1), AVX2 | defaults; no recipe recorded |" in page
    assert "Every run: 2 threads, torch t, CompressAI c." in page  # the versions once, under the table
    assert "python -m lic.book run 04_yu --scale cpu" in page
    train = book.training_seconds("cpu")  # the committed manifests: the zoo's 16 models at least
    assert train["the zoo (base models)"] > 3600
    assert train["02_luo models"] > 600  # 02's trained hyper paths keep their own manifest (02_luo/cpu/trained)
    assert f"**{book.hm(sum(train.values()) + 3 * 3600 + 7 * 60 + 20)}**" in page
    assert [book.hm(s) for s in (0, 59, 60 * 61, 7200)] == ["0:00", "0:01", "1:01", "2:00"]
    # a long CPU name keeps the table inside the column (an Intel name made it 744 px in 740)
    assert book.short_cpu("Intel(R) Xeon(R) Processor (family 6, model 167), AVX512") == \
        "Intel Xeon (family 6, model 167), AVX512"
    assert book.short_cpu("AMD EPYC 7B13 64-Core Processor (family 25, model 1), AVX2") == \
        "AMD EPYC 7B13 64-Core (family 25, model 1), AVX2"


def test_unexecuted_chapters_leave_the_toc_and_so_do_emptied_parts():
    """The cpu book builds from what has run: a part whose chapters are all pending disappears
    (Jupyter Book refuses an empty part: the cpu build failed on 'Across the papers')."""
    import yaml

    toc = yaml.safe_load((book.PROJECT / "_toc.yml").read_text())
    kept = book.toc_without(toc, ["04_yu", "06_synthesis"])
    files = [c["file"] for part in kept["parts"] for c in part["chapters"]]
    assert "book/04_yu" not in files and "book/05_tao" in files and "book/06_synthesis" not in files
    assert "Across the papers" not in [part["caption"] for part in kept["parts"]]
    assert all(part["chapters"] for part in kept["parts"]) and kept["root"] == toc["root"]
    assert book.toc_without(toc, []) == toc


def test_tidy_opens_the_page_with_the_findings_of_the_results_file(tmp_path):
    import copy

    import nbformat

    from lic import book, report

    claims = report.load_results("01_liao", "cpu")["claims"]
    results = tmp_path / "results"
    (results / "ch").mkdir(parents=True)
    (results / "ch" / "cpu.json").write_text(json.dumps({"claims": claims}))
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"scale": "cpu"}}
    nb.cells = [nbformat.v4.new_code_cell("scale = 'cpu'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_markdown_cell("# Title\n\n**Claim.** the paper's"),
                nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "ch.ipynb"
    nbformat.write(nb, path)
    book.tidy(path, results_root=results)
    cells = nbformat.read(path, as_version=4).cells
    assert [c.cell_type for c in cells] == ["code", "markdown", "markdown", "code"]
    block = cells[2].source
    assert block.startswith(":::{admonition} Findings at `cpu` scale") and cells[2].metadata[book.FINDINGS]
    from lic.claims import summary
    assert summary(claims) in block
    assert all(c["ours"].replace("|", "\\|") in block for c in claims)
    assert block.count("**reproduced**") == sum(c["verdict"] == "reproduced" for c in claims)
    book.tidy(path, results_root=results)  # again: still one findings cell
    assert len(nbformat.read(path, as_version=4).cells) == 4
    changed = copy.deepcopy(claims)
    changed[0]["verdict"] = "not reproduced" if changed[0]["verdict"] != "not reproduced" else "reproduced"
    (results / "ch" / "cpu.json").write_text(json.dumps({"claims": changed}))
    book.tidy(path, results_root=results)  # a new run's results replace the old findings
    cells = nbformat.read(path, as_version=4).cells
    assert len(cells) == 4 and f"**{changed[0]['verdict']}**" in cells[2].source


def test_findings_refuse_a_malformed_claim():
    from lic import claims as lic_claims
    from lic import report

    bad = [dict(report.load_results("01_liao", "cpu")["claims"][0], verdict="sort of")]
    with pytest.raises(ValueError):
        lic_claims.findings(bad, "cpu")


def test_a_run_starts_from_the_kept_measurements_and_keeps_what_it_measured(tmp_path, monkeypatch):
    import papermill as pm

    from lic import zoo
    from lic.scales import get_scale

    monkeypatch.setenv("LIC_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(book, "book_root", lambda scale: tmp_path / "root")
    monkeypatch.setattr(book, "PROJECT", tmp_path)
    kept = book.kept_measurements("smoke")
    kept.mkdir(parents=True)
    untimed = {"key": {"args": {"timed": 0}}, "row": {"psnr": 30.0}}
    (kept / "old-1.json").write_text(json.dumps(untimed))
    measured = zoo.runs_dir(get_scale("smoke")) / "measured"

    def chapter(source, out, **kw):  # a run that finds the kept row and measures two more
        assert (measured / "old-1.json").exists()
        (measured / "new-1.json").write_text(json.dumps(untimed))
        (measured / "new-2.json").write_text(json.dumps({"key": {"args": {"timed": 3}}, "row": {}}))
        raise RuntimeError("the chapter fails after measuring")

    monkeypatch.setattr(pm, "execute_notebook", chapter)
    with pytest.raises(RuntimeError, match="failed at scale smoke"):
        book.run("02_luo", "smoke", progress=False, record=False)
    assert sorted(p.name for p in kept.glob("*.json")) == ["new-1.json", "old-1.json"]  # no time kept


def test_a_chapters_second_page_gets_its_own_figure_labels(tmp_path):
    """One book may not hold a label twice: the N128 page of 01 renamed fig-liao-sweep (a -W build failed)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"),
                nbformat.v4.new_markdown_cell("```{glue:figure} liao_sweep\n:name: fig-liao-sweep\n\nCaption.\n```"),
                nbformat.v4.new_markdown_cell("As {numref}`fig-liao-sweep` shows, and {ref}`text <fig-liao-sweep>`.")]
    for page in ("01_liao-N128", "01_liao"):
        nbformat.write(nb, tmp_path / f"{page}.ipynb")
        book.tidy(tmp_path / f"{page}.ipynb", "01_liao", results_root=tmp_path)
        book.tidy(tmp_path / f"{page}.ipynb", "01_liao", results_root=tmp_path)  # twice: no second suffix
    wide = nbformat.read(tmp_path / "01_liao-N128.ipynb", as_version=4).cells
    assert ":name: fig-liao-sweep-N128\n" in wide[1].source
    assert wide[2].source == "As {numref}`fig-liao-sweep-N128` shows, and {ref}`text <fig-liao-sweep-N128>`."
    own = nbformat.read(tmp_path / "01_liao.ipynb", as_version=4).cells
    assert ":name: fig-liao-sweep\n" in own[1].source and "fig-liao-sweep-N128" not in own[2].source
