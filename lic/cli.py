"""What the command-line tools share: the ``train`` sub-command every trainer has (``python -m
lic.zoo``, ``lic.yin``, ``lic.tao``, ``lic.yu``), with the same option names and help."""
from __future__ import annotations

import argparse

from .precision import PRECISIONS
from .scales import SCALES


def train_parser(prog: str, description: str, help: str = "train (or resume) every missing model"):
    """(parser, sub-parsers, the ``train`` sub-parser) with ``--scale``, ``--data`` and
    ``--precision``; each tool adds its own options to the third."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help=help)
    t.add_argument("--scale", default="cpu", choices=tuple(SCALES))
    t.add_argument("--data", default=None, help="data root (default: $LIC_DATA)")
    t.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="training loop: fp32, bf16 (autocast) or auto (the fastest measured here; "
                        "default: $LIC_PRECISION, else auto)")
    t.add_argument("--device", type=_device, default=None, metavar="{cpu,cuda}",
                   help="train on this device (default: CUDA when one is visible, else the CPU; "
                        "$LIC_DEVICE); under torchrun each process takes its local GPU")
    return ap, sub, t


def _device(value: str) -> str:
    """``--device``: checked at parse time (a one-line usage error), then used by every process."""
    import os

    import torch

    if value not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}; valid: cpu, cuda")
    if value == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda asked for, but no CUDA device is visible here; use --device cpu")
    os.environ["LIC_DEVICE"] = value
    return value


def check_lambdas(ap: argparse.ArgumentParser, lambdas, scale) -> None:
    """Exit with a one-line usage error when a requested λ is not one of ``scale``'s."""
    bad = [lam for lam in lambdas or () if lam not in scale.lambdas]
    if bad:
        ap.error(f"λ={bad[0]} is not a λ of scale {scale.name}; valid: {', '.join(map(str, scale.lambdas))}")
