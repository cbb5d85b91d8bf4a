"""Classical codecs (JPEG, WebP) through Pillow, measured on the same images and the same way as
the learned codecs (8-bit PSNR, MS-SSIM, bits per pixel of the real file)."""
from __future__ import annotations

import io

import numpy as np
import PIL
from PIL import Image

from .data import to_tensor
from .evaluate import ms_ssim, psnr
from .scales import check_choice

CODECS = {"jpeg": "JPEG", "webp": "WEBP"}
DEFAULT_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def encode(img8: np.ndarray, codec: str, quality: int) -> bytes:
    check_choice("codec", codec, tuple(CODECS))
    buf = io.BytesIO()
    kw = {"subsampling": 0} if codec == "jpeg" else {"method": 6}
    Image.fromarray(img8).save(buf, format=CODECS[codec], quality=int(quality), **kw)
    return buf.getvalue()


def decode(blob: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def evaluate_codec(images, codec: str, qualities=DEFAULT_QUALITIES) -> list:
    """Mean bpp / PSNR / MS-SSIM per quality: a list of dicts, one RD point each."""
    points = []
    for q in qualities:
        rows = []
        for _, img in images:
            blob = encode(img, codec, q)
            rec = decode(blob)
            h, w = img.shape[:2]
            rows.append({"bpp": 8 * len(blob) / (h * w), "psnr": psnr(rec, img),
                         "ms_ssim": ms_ssim(to_tensor(rec), to_tensor(img))})
        points.append({"quality": q, **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}})
    return points


def description(codec: str) -> str:
    return f"{CODECS[codec]} via Pillow {PIL.__version__}" + (
        " (4:4:4)" if codec == "jpeg" else " (method 6)")
