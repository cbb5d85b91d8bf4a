"""A method's decoder geometry carries over to other widths as fractions of the zoo's channels."""
import pytest
import torch

from lic import controls, surgery, widths, zoo


def test_a_narrow_decoder_keeps_its_fractions_at_compressais_widths(smoke):
    base = zoo.build_for("bmshj2018-hyperprior", smoke).eval()
    narrow = controls.narrow_copy(base, 8)  # half the smoke zoo's 16 hidden channels
    geom = widths.geometry(narrow, base)
    assert set(geom) == {f"g_s.{i}" for i in range(7)} and geom["g_s.0"] == (1.0, 0.5) and geom["g_s.6"] == (0.5, 1.0)
    assert widths.geometry(base, base) == {}
    big = widths.build("bmshj2018-hyperprior", 128, 192, geom)
    cfg = surgery.channel_config(big)
    assert cfg["g_s.0"] == [192, 64] and cfg["g_s.2"] == [64, 64] and cfg["g_s.6"] == [64, 3] and cfg["h_s.0"] == [128, 128]
    with torch.no_grad():
        z, y = widths._inputs(big, 64, 64)
        assert big.g_s(y).shape == (1, 3, 64, 64) and big.h_s(z).shape[1] == 192


def test_a_supernets_capacity_is_its_uniform_fraction(smoke):
    from lic.models.slimmable import AtCapacity, SlimMeanScale

    net = SlimMeanScale(32, 48, (0.5, 1.0)).eval()
    base = zoo.build("mbt2018-mean", N=32, M=48)
    geom = widths.geometry(AtCapacity(net, 0), base)
    assert geom["g_s.0"] == (1.0, 0.5) and geom["g_s.2"] == (0.5, 0.5) and widths.geometry(AtCapacity(net, 1), base) == {}


def test_each_width_is_one_interleaved_run_against_its_own_full_decoder():
    geom = {f"g_s.{i}": (1.0 if i == 0 else 0.5, 1.0 if i == 6 else 0.5) for i in range(7)}
    rows = widths.timings("bmshj2018-hyperprior", {"half": geom}, widths=((16, 24), (32, 48)), repeats=2, progress=False)
    assert [(r["N"], r["geometry"]) for r in rows] == [(16, "full"), (16, "half"), (32, "full"), (32, "half")]
    assert all(r["speedup"] == 1.0 for r in rows if r["geometry"] == "full") and all(r["ms"] > 0 for r in rows)
    assert widths.text(rows).startswith("eager: ") and " at 16/24, " in widths.text(rows)
    fig = widths.figure(rows)
    assert [t.get_text() for t in fig.axes[0].texts] == ["half"]  # the line labelled in place, no legend
    assert fig.axes[0].get_legend() is None
