"""00's bars as numbers and sentences, from known curves."""
import pandas as pd
import pytest

from lic import baselines


def _curve(arch, bpp_scale, decode_ms):
    bpp = [0.2, 0.4, 0.8, 1.6]
    psnr = [28.0, 31.0, 34.0, 37.0]  # log-linear: a family at bpp_scale × the bits has BD-rate bpp_scale - 1
    return [{"arch": arch, "bpp": b * bpp_scale, "bpp_est": b * bpp_scale * 0.98, "psnr": p, "decode_ms": decode_ms}
            for b, p in zip(bpp, psnr)]


def test_summary_states_each_bar_from_the_curves():
    models = pd.DataFrame(_curve("bmshj2018-hyperprior", 1.0, 10) + _curve("mbt2018-mean", 0.9, 11)
                          + _curve("mbt2018", 0.8, 44))
    bd_table = pd.DataFrame([{"arch": a, "anchor": "WebP (Pillow, here)", "BD-rate %": v}
                             for a, v in [("bmshj2018-hyperprior", -5.0), ("mbt2018-mean", -12.0), ("mbt2018", -20.0)]])
    out = baselines.summary(models, bd_table, ["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018"], on_kodak=False)
    t = out["texts"]
    assert out["bar"] == -5.0 and t["bar_verdict"] == "met" and t["best_arch"] == "mbt2018"
    assert out["mean_vs"] == pytest.approx(-10.0, abs=0.01) and t["mean_verdict"] == "met"
    assert out["ctx_bd"] == pytest.approx(100 * (0.8 / 0.9 - 1), abs=0.01) and "4.0× its median decode time" in t["ctx_note"]
    assert t["max_est_gap"] == pytest.approx(100 * (1 / 0.98 - 1))
    assert t["price"].startswith("not measured")  # no CompressAI anchor off Kodak


def test_summary_says_what_is_not_in_the_run():
    models = pd.DataFrame(_curve("bmshj2018-hyperprior", 1.0, 10))
    bd_table = pd.DataFrame([{"arch": "bmshj2018-hyperprior", "anchor": "WebP (published)", "BD-rate %": float("nan")}])
    out = baselines.summary(models, bd_table, ["bmshj2018-hyperprior"], on_kodak=True)
    assert out["bar"] is None and out["texts"]["bar_verdict"] == "not measured"
    assert out["texts"]["best_bd_webp"].startswith("n/a") and out["texts"]["mean_bd"] == "not in this run"
    assert "needs both" in out["texts"]["ctx_note"]
