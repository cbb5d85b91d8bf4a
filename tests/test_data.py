import numpy as np
import pytest
import torch
from PIL import Image

from lic import data
from lic.scales import get_scale


def test_gray_rgba_palette_16bit_become_rgb8():
    gray = Image.fromarray(np.full((8, 9), 100, np.uint8), "L")
    assert data.to_rgb8(gray).shape == (8, 9, 3) and data.to_rgb8(gray).dtype == np.uint8
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # transparent pixel -> white background
    out = data.to_rgb8(Image.fromarray(rgba, "RGBA"))
    assert tuple(out[1, 1]) == (200, 0, 0) and tuple(out[0, 0]) == (255, 255, 255)
    pal = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "L").convert("P")
    assert data.to_rgb8(pal).shape == (4, 4, 3)
    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert data.to_rgb8(sixteen).max() == 255
    assert data.to_rgb8(np.full((4, 4), 0.5)).max() == 128  # float in [0, 1]
    assert data.to_rgb8(np.full((2, 2, 3), 65535, np.uint16)).min() == 255


def test_bad_images_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        data.to_rgb8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.to_rgb8(np.full((4, 4), 3.0))
    with pytest.raises(ValueError, match="dtype"):
        data.to_rgb8(np.zeros((4, 4), np.int64))


def test_pad_to_multiple_of_64_and_crop_back():
    x = torch.rand(1, 3, 100, 130)
    xp, size = data.pad_to(x, 64)
    assert xp.shape[-2:] == (128, 192)
    assert torch.equal(data.crop_back(xp, size), x)


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="smaller than this model's minimum 64x64"):
        data.pad_to(torch.rand(1, 3, 40, 300), 64, 64)


def test_image_folder_crops_and_pads_small_images():
    ds = data.ImageFolder([np.zeros((50, 70, 3), np.uint8), np.ones((300, 300), np.uint8)], crop=64)
    b = ds.batch(6)
    assert b.shape == (6, 3, 64, 64) and b.dtype == torch.float32
    assert 0.0 <= b.min() and b.max() <= 1.0
    with pytest.raises(ValueError, match="at least one image"):
        data.ImageFolder([], crop=64)


def test_skimage_smoke_photos_are_msssim_sized():
    photos = data.skimage_photos()
    assert len(photos) >= 2
    assert all(min(img.shape[:2]) >= 161 and img.shape[2] == 3 for _, img in photos)
    smoke = data.test_images(get_scale("smoke"))
    assert all(img.shape[:2] == (192, 256) for _, img in smoke)


def test_data_root_from_parameter_then_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LIC_DATA", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"
    assert data.data_root(tmp_path / "param") == tmp_path / "param"


def test_offline_missing_data_names_lic_data_and_command(monkeypatch, tmp_path):
    def offline(url):
        raise OSError("network unreachable")

    monkeypatch.setattr(data, "_fetch", offline)
    with pytest.raises(data.DataUnavailable) as err:
        data.kodak_files(tmp_path)
    msg = str(err.value)
    assert "LIC_DATA" in msg and "python -m lic.data download kodak" in msg


def test_download_rejects_files_failing_sha256(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "_fetch", lambda url: b"not a kodak image")
    with pytest.raises(data.DataUnavailable, match="sha256"):
        data.download("kodak", tmp_path)


def test_checksums_cover_the_data_sets():
    assert len(data._checksums("kodak")) == 24
    splits = [rel.split("/")[0] for rel in data._checksums("bsds500")]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (200, 100, 200)


def test_shared_data_verifies_when_present():
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "kodak").exists():
        pytest.skip("../shared/data not beside the checkout")
    assert data.verify("kodak", SHARED_DATA, deep=True) == []
    files = data.kodak_files(SHARED_DATA)
    assert len(files) == 24 and data.load_image(files[0]).shape in {(512, 768, 3), (768, 512, 3)}


def test_a_truncated_image_is_refused_with_its_name(tmp_path):
    import numpy as np
    from PIL import Image

    from lic import data

    path = tmp_path / "kodim99.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.DataUnavailable, match="kodim99.png"):
        data.load_image(path)


def test_validation_images_are_neither_trained_on_nor_tested_on():
    """Choices (a schedule, a threshold) are made on images outside both the training and test sets."""
    from lic.data import SKIMAGE_PHOTOS, validation_images

    cpu = get_scale("cpu")
    assert (cpu.train_set, cpu.test_set) == ("bsds500", "kodak")
    assert [n for n, _ in validation_images(cpu)] == list(SKIMAGE_PHOTOS)
    smoke = get_scale("smoke")  # smoke decides nothing: its validation images are its test images
    assert [n for n, _ in validation_images(smoke)] == [n for n, _ in data.test_images(smoke)]
