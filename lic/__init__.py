"""lic: an executable reproducibility book for efficient learned image compression.

Modules (one idea each): ``scales`` (smoke/cpu/paper), ``data`` (images and data sets),
``zoo`` (base models and checkpoints), ``surgery`` (channel removal, resizing to saved widths),
``train`` (the one training loop), ``evaluate`` (the one evaluation path), ``classical``
(JPEG/WebP with Pillow), ``report`` (paper-vs-ours tables, RD figures, results files) and
``book`` (papermill runs of the chapters).
"""
__version__ = "0.1.0"
