"""lic: an executable reproducibility book for efficient learned image compression.

Modules (one idea each): ``scales`` (smoke/cpu/paper), ``data`` (images and data sets),
``weights`` (coder tables, weight fingerprints), ``zoo`` (base models and checkpoints),
``surgery`` (channel removal, resizing to saved widths), ``precision`` (the fastest training loop
on this CPU), ``train`` (the one training loop), ``evaluate`` (the one evaluation path),
``classical`` (JPEG/WebP with Pillow), ``report`` (paper-vs-ours tables, RD figures, results
files, tables for people), ``claims`` (the verdict contract), ``params`` (every chapter's
parameters, checked), ``store`` (where chapters keep their trained models), ``quantize`` (int8
three ways), ``book`` (papermill runs of the chapters) and ``browser`` (the built book read in
headless Chromium); one module per paper: ``liao``, ``luo``, ``yin``, ``yu``, ``tao``; new
architectures in ``models``.
"""
import warnings

# CompressAI 1.2.8 calls torch.jit.script at import; torch 2.14 warns about it on every import.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=FutureWarning)

__version__ = "0.1.0"
