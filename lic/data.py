"""Images: Kodak, BSDS500, scikit-image photographs, and a generic image-folder dataset.

The data root comes from a parameter or the ``LIC_DATA`` environment variable. When a data set is
missing there, :func:`ensure` downloads it from the official source and verifies every file's
sha256 (checksums in ``lic/checksums/``); offline it fails with one message saying what to do.

    python -m lic.data download kodak bsds500 --root DIR
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .scales import check_choice

CHECKSUMS = Path(__file__).with_name("checksums")
DATASETS = ("kodak", "bsds500")
KODAK_URL = "http://r0k.us/graphics/kodak/kodak/{name}"
BSDS500_URL = ("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/"
               "BSR_bsds500.tgz")
BSDS500_MEMBER = "BSR/BSDS500/data/images/"
# scikit-image sample photographs (colour, short side >= 161 px so MS-SSIM works).
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
DEFAULT_ROOT = Path("data") / "datasets"


class DataUnavailable(RuntimeError):
    """A data set (or one of its files) is missing, unreadable, or neither on disk nor downloadable."""


# --------------------------------------------------------------------------------------------
# image conversion


def to_rgb8(img) -> np.ndarray:
    """Any PIL image or array (gray, RGBA, palette, 16-bit, float in [0,1]) -> HxWx3 uint8."""
    if isinstance(img, Image.Image):
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img).astype(np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            return to_rgb8(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
        if img.mode == "P":
            img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        if img.mode in ("RGBA", "LA"):
            bg = Image.new("RGB", img.size, (255, 255, 255))
            bg.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
            img = bg
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    arr = np.asarray(img)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype.kind == "f":
        if arr.max() > 1.0 + 1e-6:
            raise ValueError("float images must lie in [0, 1]; divide by 255 first")
        arr = (np.clip(arr, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3:
        raise ValueError(f"an image must be HxW or HxWxC, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[..., 3:].astype(np.float64) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    elif arr.shape[2] != 3:
        raise ValueError(f"an image needs 1, 3 or 4 channels, got {arr.shape[2]}")
    return np.ascontiguousarray(arr)


def load_image(path) -> np.ndarray:
    """An image file as HxWx3 uint8; an unreadable or truncated file is refused with its name."""
    try:
        with Image.open(path) as im:
            return to_rgb8(im)
    except (OSError, ValueError) as err:
        raise DataUnavailable(f"cannot read image {path}: {err}; replace the file (for the data sets: "
                              "`python -m lic.data download NAME --root DIR` checks every file's sha256)") from err


def to_tensor(rgb8: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float in [0, 1]."""
    return torch.from_numpy(np.array(rgb8, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def pad_to(x: torch.Tensor, multiple: int = 64, min_size: int = 64):
    """Pad ``x`` (NCHW) on the right/bottom to a multiple of ``multiple``; return (padded, (H, W)).

    Images smaller than ``min_size`` on either side are refused: the codec's receptive field and
    MS-SSIM need more pixels than that.
    """
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"image of {h}x{w} px is smaller than this model's minimum "
                         f"{min_size}x{min_size}; use a larger image")
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def crop_back(x: torch.Tensor, size) -> torch.Tensor:
    return x[..., : size[0], : size[1]]


# --------------------------------------------------------------------------------------------
# data sets on disk


def data_root(root=None) -> Path:
    """The data root: ``root`` if given, else ``$LIC_DATA``, else ``./data/datasets``."""
    return Path(root or os.environ.get("LIC_DATA") or DEFAULT_ROOT).expanduser()


def _checksums(name: str) -> dict:
    lines = (CHECKSUMS / f"{name}.sha256").read_text().split("\n")
    return {rel: digest for digest, rel in (ln.split() for ln in lines if ln.strip())}


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(name: str, root=None, deep: bool = False) -> list:
    """Files of data set ``name`` missing under ``root/name`` (or, if ``deep``, also corrupt)."""
    base = data_root(root) / name
    bad = []
    for rel, digest in _checksums(name).items():
        p = base / rel
        if not p.is_file() or (deep and sha256(p) != digest):
            bad.append(rel)
    return bad


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (fixed official URLs)
        return r.read()


def download(name: str, root=None) -> Path:
    """Download data set ``name`` from its official source into ``root/name``, checking sha256."""
    check_choice("data set", name, DATASETS)
    base = data_root(root) / name
    sums = _checksums(name)
    base.mkdir(parents=True, exist_ok=True)
    try:
        if name == "kodak":
            for rel in sums:
                if not (base / rel).is_file():
                    (base / rel).write_bytes(_fetch(KODAK_URL.format(name=rel)))
        else:
            blob = _fetch(BSDS500_URL)
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                for member in tar.getmembers():
                    if member.name.startswith(BSDS500_MEMBER) and member.name.endswith(".jpg"):
                        rel = member.name[len(BSDS500_MEMBER):]
                        (base / rel).parent.mkdir(parents=True, exist_ok=True)
                        (base / rel).write_bytes(tar.extractfile(member).read())
    except OSError as err:
        raise DataUnavailable(_unavailable(name, root, f"download failed: {err}")) from err
    bad = verify(name, root, deep=True)
    if bad:
        raise DataUnavailable(_unavailable(name, root, f"{len(bad)} files failed the sha256 check "
                                                       f"(first: {bad[0]})"))
    return base


def _unavailable(name, root, why) -> str:
    return (f"{name} is not under {data_root(root) / name} and could not be fetched ({why}). "
            f"Point LIC_DATA at a folder holding {name}/ (e.g. LIC_DATA=../shared/data), or run "
            f"`python -m lic.data download {name} --root DIR` on a machine with internet access.")


def ensure(name: str, root=None, allow_download: bool = True) -> Path:
    """Path of data set ``name``, downloading it if it is missing."""
    check_choice("data set", name, DATASETS)
    if not verify(name, root):
        return data_root(root) / name
    if not allow_download:
        raise DataUnavailable(_unavailable(name, root, "download not allowed"))
    return download(name, root)


def kodak_files(root=None, limit: int = 0) -> list:
    base = ensure("kodak", root)
    files = sorted(base / rel for rel in _checksums("kodak"))
    return files[:limit] if limit else files


def bsds500_files(root=None, splits=("train", "val", "test")) -> list:
    base = ensure("bsds500", root)
    return sorted(base / rel for rel in _checksums("bsds500") if rel.split("/")[0] in splits)


def skimage_photos(limit: int = 0) -> list:
    """The colour photographs shipped inside scikit-image, as (name, HxWx3 uint8)."""
    from skimage import data as skdata

    names = SKIMAGE_PHOTOS[:limit] if limit else SKIMAGE_PHOTOS
    return [(n, to_rgb8(getattr(skdata, n)())) for n in names]


def test_images(scale, root=None) -> list:
    """(name, HxWx3 uint8) test images of a scale: Kodak, or scikit-image photos at smoke scale."""
    if scale.test_set == "skimage":
        images = skimage_photos(scale.test_limit)
    else:
        images = [(p.stem, load_image(p)) for p in kodak_files(root, scale.test_limit)]
    return [(n, center_crop(img, scale.test_crop)) for n, img in images] if scale.test_crop else images


def validation_images(scale, root=None) -> list:
    """(name, HxWx3 uint8) images that decide choices (a schedule, a threshold): never trained on,
    never the test set. At ``cpu`` and ``paper`` (trained on BSDS500, tested on Kodak) these are
    scikit-image's four colour photographs; at ``smoke``, where those photographs are the training
    and test images, the smoke test images (a smoke run decides nothing)."""
    if scale.train_set == "skimage" or scale.test_set == "skimage":
        return test_images(scale, root)
    return skimage_photos()


def center_crop(img: np.ndarray, size) -> np.ndarray:
    """The central ``size`` = (H, W) window of an HxWxC image (the whole image if smaller)."""
    h, w = img.shape[:2]
    ch, cw = min(size[0], h), min(size[1], w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y:y + ch, x:x + cw])


# --------------------------------------------------------------------------------------------
# training data


class ImageFolder(torch.utils.data.Dataset):
    """Random ``crop`` x ``crop`` patches with random horizontal flip, images held in memory.

    ``images`` is a list of paths or HxWx3 uint8 arrays. Images smaller than the crop are
    padded by reflection so every patch has the requested size.
    """

    def __init__(self, images, crop: int, seed: int = 0):
        if not images:
            raise ValueError("ImageFolder needs at least one image")
        self.images = [load_image(i) if isinstance(i, (str, Path)) else to_rgb8(i) for i in images]
        self.crop = crop
        self.rng = random.Random(seed)

    def __len__(self):
        return len(self.images)

    def sample(self, crop=None) -> torch.Tensor:
        """One random patch, 3 x crop x crop in [0, 1]."""
        crop = crop or self.crop
        img = self.images[self.rng.randrange(len(self.images))]
        h, w = img.shape[:2]
        if h < crop or w < crop:
            img = np.pad(img, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        y, x = self.rng.randrange(h - crop + 1), self.rng.randrange(w - crop + 1)
        patch = img[y:y + crop, x:x + crop]
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float().div(255.0)

    def __getitem__(self, i):
        return self.sample()

    def batch(self, n: int, crop=None) -> torch.Tensor:
        return torch.stack([self.sample(crop) for _ in range(n)])

    def shape(self, n: int, crop=None) -> tuple:
        """The shape of ``batch(n, crop)``."""
        crop = crop or self.crop
        return (n, 3, crop, crop)

    def shard(self, rank: int, world: int) -> None:
        """Keep only this rank's share of the images (every ``world``-th from ``rank``) for
        data-parallel training (:mod:`lic.distributed`); each rank samples its own."""
        if world > len(self.images):
            raise ValueError(f"{world} processes need at least {world} training images; this set has {len(self.images)}")
        self.images = self.images[rank::world]

    def state(self):
        return self.rng.getstate()

    def set_state(self, state):
        self.rng.setstate(state)


def train_set(scale, root=None, seed: int = 0) -> ImageFolder:
    """The training patches of a scale: all 500 BSDS500 images, or scikit-image photos (smoke)."""
    if scale.train_set == "skimage":
        return ImageFolder([img for _, img in skimage_photos()], scale.crop, seed)
    return ImageFolder(bsds500_files(root), scale.crop, seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lic.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="fetch data sets from their official sources")
    d.add_argument("names", nargs="+", choices=DATASETS)
    d.add_argument("--root", default=None, help="data root (default: $LIC_DATA or ./data/datasets)")
    v = sub.add_parser("verify", help="check every file's sha256")
    v.add_argument("names", nargs="+", choices=DATASETS)
    v.add_argument("--root", default=None)
    args = ap.parse_args(argv)
    status = 0
    for name in args.names:
        if args.cmd == "download":
            print(ensure(name, args.root))
        else:
            bad = verify(name, args.root, deep=True)
            print(f"{name}: {'ok' if not bad else f'{len(bad)} missing or corrupt'}")
            status |= bool(bad)
    return status


if __name__ == "__main__":
    sys.exit(main())
