import pytest

from lic import classical
from lic import data as lic_data
from lic.scales import get_scale


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_higher_quality_costs_bits_and_gains_psnr(codec):
    images = lic_data.test_images(get_scale("smoke"))[:1]
    pts = classical.evaluate_codec(images, codec, qualities=(20, 60, 90))
    assert [p["bpp"] for p in pts] == sorted(p["bpp"] for p in pts)
    assert [p["psnr"] for p in pts] == sorted(p["psnr"] for p in pts)
    assert 0 < pts[0]["ms_ssim"] < pts[-1]["ms_ssim"] <= 1


def test_unknown_codec():
    with pytest.raises(ValueError, match="jpeg, webp"):
        classical.encode(None, "avif", 50)
