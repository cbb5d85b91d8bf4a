"""Tables and figures for people: the shared helpers every chapter uses."""
import math

import numpy as np
import pandas as pd

from lic import report


def test_table_hides_the_index_formats_numbers_and_marks_gaps():
    d = pd.DataFrame({"arch": ["a", "b"], "psnr_db": [31.1234, 30.5], "bytes": [17545.666, 1234567.0],
                      "bpp": [0.51234, np.nan]}, index=[7, 8])
    html = report.table(d).data
    assert ">7<" not in html and ">8<" not in html          # no index column
    assert "psnr db" in html and "psnr_db" not in html      # headers in words
    assert "31.12" in html and "31.1234" not in html        # decimals by magnitude
    assert "1,234,567" in html and "17,546" in html         # thousands separated, no false precision
    assert "0.512" in html and "–" in html                  # small values keep 3 decimals; NaN is a dash
    assert "nan" not in html.lower()


def test_counts_read_as_whole_numbers():
    d = pd.DataFrame({"test_images": [24], "threads": [2], "steps": [1000], "psnr": [31.5]})
    html = report.table(d).data
    assert ">24<" in html and ">2<" in html and ">1,000<" in html and "24.00" not in html
    assert "31.50" in html
    assert ">24.0<" in report.table(d, decimals={"test_images": 1}).data  # asked for: given decimals win


def test_long_tables_fold_behind_a_toggle():
    d = pd.DataFrame({"x": range(30)})
    html = report.table(d, max_rows=10).data
    assert "<details><summary>show all 30 rows</summary>" in html
    short = report.table(d.head(5), max_rows=10).data
    assert "<details>" not in short


def test_a_thing_keeps_its_colour():
    assert report.color_of("mbt2018-mean") == report.color_of("mbt2018-mean")
    assert report.color_of("bmshj2018-hyperprior") != report.color_of("mbt2018-mean")
    assert report.color_of("some variant") == report.color_of("some variant")  # hashed, stable


def test_figures_are_drawn_at_the_column_width():
    fig, axes = report.figure(2, 1)
    w, h = fig.get_size_inches()
    assert math.isclose(w, report.COLUMN_INCHES) and axes.shape == (1, 2)


def test_a_label_column_keeps_labels_apart_and_each_at_its_point_where_there_is_room():
    fig, axes = report.figure(1, 1, height=3.0)
    ax = axes[0, 0]
    ax.set_ylim(0, 10)
    pts = [(1, 5.0), (1, 5.01), (1, 5.02), (1, 9.0)]
    report.label_column(ax, pts, ["a", "b", "c", "far"])
    ys = [t.xyann[1] for t in ax.texts]  # axes fractions
    gap = 1.25 * 7 / 72 / (ax.get_position().height * fig.get_figheight())
    assert all(b - a >= gap - 1e-9 for a, b in zip(ys[:3], ys[1:3]))  # the three crowded ones spread upwards
    assert math.isclose(ys[0], 0.5) and math.isclose(ys[3], 0.9)  # the lowest and the lone one stay put
    assert all(t.xyann[0] == 1.04 for t in ax.texts)


def test_a_meaningful_index_becomes_a_column():
    d = pd.DataFrame({"arch": ["a", "a", "b"], "q": [1, 2, 1], "v": [0.5, 0.6, 0.7]})
    html = report.table(d.pivot(index="arch", columns="q", values="v")).data
    assert ">arch<" in html and ">a<" in html and ">b<" in html
    html = report.table(d.pivot(index="arch", columns="q", values=["v"])).data  # two header levels
    assert "v 1" in html and "v 2" in html
