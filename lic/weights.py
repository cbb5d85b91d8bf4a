"""What identifies a model's weights, below every module that stores, measures or trains models:
the entropy-coder tables that ``update()`` rebuilds (never stored, never part of an identity), the
buffers construction rebuilds (never stored) and a short fingerprint of everything else."""
from __future__ import annotations

import hashlib

# buffers rebuilt by update(force=True); never stored
CODER_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def is_coder_table(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in CODER_TABLES


def is_rebuilt(key: str) -> bool:
    """A buffer every construction of the module rebuilds the same (the causal mask of mbt2018's
    context model, as large as its weights): never stored."""
    return key.endswith("context_prediction.mask")


def is_entropy(key: str) -> bool:
    """Entropy-model parameters: stored in fp32 even in fp16 checkpoints."""
    return "entropy_bottleneck" in key or "gaussian_conditional" in key


def fingerprint(model, length: int = 12) -> str:
    """A short hash of ``model``'s weights and buffers (coder tables excluded). Chapters keep their
    resumable runs and cached measurements under it, so a retrained model never reuses another
    model's stale states or numbers."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        if is_coder_table(k):
            continue
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]
