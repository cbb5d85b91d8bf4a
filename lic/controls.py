"""The controls a pruning study owes its reader (chapter ``07_controls``): the narrow decoder a
practitioner wants, obtained without pruning, at the decode MACs of Liao's pruned decoders.

- **Scratch** (Liu et al., ICLR 2019): the zoo architecture with a narrow g_s trained from scratch
  with the zoo's own schedule — ``python -m lic.zoo train --decoder-width W``
  (:func:`lic.surgery.narrow_synthesis`); this module only finds ``W``.
- **Distilled**: a freshly initialised narrow g_s learns to reproduce the zoo model's
  reconstruction from the zoo's ŷ (encoder, hyper path and entropy models frozen: the bitstream is
  the zoo's), then a short fine-tune against the image, as Liao's fine-tune does — the same frozen
  parts, the same learning rate, the same loop (:func:`lic.train.train`), the same total steps
  (and 10× them).

    from lic import controls
    W = controls.width_at_ratio(zoo_model, 0.55)              # Liao's r = 0.55 decoder MACs, uniform
    student = controls.distill(zoo_model, W, data, steps=1000, lmbda=0.013, scale=S)
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from . import liao, surgery
from .train import TrainConfig, train

# of a distilled decoder's steps, this share reproduces the teacher; the rest fine-tunes on the image
DISTILL_SHARE = 0.5


def full_width(model) -> int:
    """The hidden width of ``model``'s g_s (its narrowest hidden layer)."""
    return min(surgery.shape_of(model.get_submodule(conv))[1] for conv, _, _ in surgery.hidden_layers(model))


def narrow_copy(model, width: int):
    """A copy of ``model`` whose g_s has ``width`` hidden channels, freshly initialised."""
    return surgery.narrow_synthesis(copy.deepcopy(model), width)


def width_at_ratio(model, ratio: float, size=(512, 768)) -> int:
    """The uniform hidden width whose g_s MACs (at ``size``, GDN included) are closest to those of
    Liao's decoder pruned by ``ratio`` (the share of decoder parameters removed, same kept
    fraction per layer: :func:`lic.liao.keep_counts`)."""
    pruned = copy.deepcopy(model)
    liao.prune_decoder(pruned, ratio, {c: torch.arange(surgery.shape_of(pruned.get_submodule(c))[1], 0, -1).float()
                                       for c, _, _ in surgery.hidden_layers(pruned)})
    target = liao.decoder_macs(pruned, *size)
    return min(range(1, full_width(model) + 1),
               key=lambda w: abs(liao.decoder_macs(narrow_copy(model, w), *size) - target))


class Distill(nn.Module):
    """The student's training view: ŷ from the frozen teacher's analysis (rounded, as the decoder
    sees it), the teacher's reconstruction as the target. ``forward`` returns the loop's contract
    (:func:`lic.train.rd_loss`): no rate (the bitstream is the teacher's) and, as the distortion,
    λ·255²·MSE between the student's and the teacher's reconstructions; the reported ``mse`` is
    the student's against the image."""

    def __init__(self, teacher, student, lmbda: float):
        super().__init__()
        self.teacher, self.student, self.lmbda = teacher, student, lmbda
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        with torch.no_grad():
            y_hat = torch.round(self.teacher.g_a(x.float()))
            target = self.teacher.g_s(y_hat)
        x_hat = self.student.g_s(y_hat)
        d = self.lmbda * 255 ** 2 * ((x_hat.float() - target.float()) ** 2).flatten(1).mean(1)
        return {"x_hat": x_hat, "likelihoods": {"none": torch.ones(x.shape[0], 1, device=x.device)},
                "distortion": d}


def distill(teacher, width: int, data, steps: int, lmbda: float, scale, run_dir=None, progress=True):
    """The zoo model ``teacher`` with its g_s replaced by a ``width``-channel one that was trained
    for ``steps`` in all: :data:`DISTILL_SHARE` of them reproducing the teacher's reconstruction
    (:class:`Distill`), the rest against the image (g_s only; encoder, hyper path and entropy
    models are the teacher's, so is the bitstream). Resumable from ``run_dir``."""
    teacher = copy.deepcopy(teacher).eval()
    student = narrow_copy(teacher, width)
    first = int(round(steps * DISTILL_SHARE))
    tag = f"w{width}-{steps}-{lmbda:.4f}"
    state = (lambda part: Path(run_dir) / f"{tag}-{part}.state.pt") if run_dir else (lambda part: None)
    if first:
        view = Distill(teacher, student, lmbda)
        cfg = TrainConfig.from_scale(scale, lmbda, steps=first, lr=liao.FINETUNE_LR,
                                     lr_final=liao.FINETUNE_LR_FINAL, eval_every=0, late_crop=0, late_frac=0.0)
        train(view, data, cfg, checkpoint=state("distill"), params=list(student.g_s.parameters()),
              progress=progress, desc=f"distil g_s w={width} λ={lmbda}")
    if steps - first:
        cfg = TrainConfig.from_scale(scale, lmbda, steps=steps - first, lr=liao.FINETUNE_LR,
                                     lr_final=liao.FINETUNE_LR_FINAL, eval_every=0, late_crop=0, late_frac=0.0)
        train(student, data, cfg, checkpoint=state("finetune"), params=list(student.g_s.parameters()),
              progress=progress, desc=f"fine-tune g_s w={width} λ={lmbda}")
    return student.eval()


# ---------------------------------------------------------------------------------------------
# operating points (06_synthesis measures them beside every other chapter's) and the questions

CHAPTER = "07_controls"
LIAO = "Liao (decoder pruning)"  # 01_liao's method name on its points
DECAYED = "mask decay"  # the EVC control's method name (lic.maskdecay)
MARGIN_PP = 0.5  # one method beats another when its Δrate at equal PSNR is lower by more than this (percentage points)


def scratch_view(arch: str, lmbda: float, width: int, scale, root=None):
    """The zoo architecture with a ``width``-channel g_s trained from scratch with the zoo's schedule
    (``python -m lic.zoo train --decoder-width W``): an operating point's rebuild."""
    from . import zoo

    return zoo.get(arch, lmbda, scale.with_(decoder=width), root=root, train_missing=False)


def register_scratch(arch: str, lmbda: float, width: int, ratio: float, scale) -> dict:
    from . import points

    return points.register(CHAPTER, scale, method="scratch", arch=arch, lmbda=lmbda, variant=f"w={width}",
                           rebuild="lic.controls:scratch_view", spec={"arch": arch, "lmbda": lmbda, "width": width},
                           meta={"ratio": ratio, "width": width})


def register_distilled(student, teacher, arch: str, lmbda: float, width: int, ratio: float, steps: int, scale) -> dict:
    """A distilled decoder as a point: only its g_s is stored (the rest is the zoo model's)."""
    from . import points

    return points.register(CHAPTER, scale, student, method="distilled", arch=arch, lmbda=lmbda,
                           variant=f"w={width}, {steps} steps", base=teacher, rebuild="lic.zoo:get",
                           spec={"arch": arch, "lmbda": lmbda, "train_missing": False},
                           meta={"ratio": ratio, "width": width, "steps": steps})


def register_decayed(model, teacher, arch: str, lmbda: float, ratio: float, steps: int, scale) -> dict:
    """A mask-decayed decoder (:func:`lic.maskdecay.decay`) as a point: its g_s is stored (the rest
    is the zoo model's)."""
    from . import points

    return points.register(CHAPTER, scale, model, method=DECAYED, arch=arch, lmbda=lmbda,
                           variant=f"r={ratio:g}, {steps} steps", base=teacher, rebuild="lic.zoo:get",
                           spec={"arch": arch, "lmbda": lmbda, "train_missing": False},
                           meta={"ratio": ratio, "steps": steps})


# (claim id, winner, loser, which rows, the question): the controls at Liao's own fine-tune budget
QUESTIONS = (
    ("controls-scratch", LIAO, "scratch", None,
     "Liao's pruned decoder costs less rate than the same decoder width trained from scratch with the zoo's schedule"),
    ("controls-distilled", LIAO, "distilled", 1,
     "Liao's pruned decoder costs less rate than the same decoder width distilled from the zoo model"),
    ("controls-mask-decay", DECAYED, LIAO, 1,
     "mask decay costs less rate than Liao's pruning, for the same decoder and the same training steps"),
)


def claims_for(rows: list, bars) -> list:
    """The chapter's questions as claims (this book's own, :data:`QUESTIONS`; the margin from
    ``data/papers/claims.csv``), each decided per (λ, ratio) with :func:`lic.claims.share`; a
    control trained for several budgets is compared at Liao's own (``budget`` 1)."""
    from . import claims

    b = bars[bars.chapter == CHAPTER].set_index("claim").value.astype(float)
    margin = b["Δrate at equal PSNR lower than the control's by more than"]
    out = []
    for cid, winner, loser, budget, question in QUESTIONS:
        sub = [r for r in rows if budget is None or r.get("budget") in (None, budget)]
        cases = beats(sub, winner, loser, margin)
        gaps = [c[f"{winner} Δrate (%)"] - c[f"{loser} Δrate (%)"] for c in cases]
        control = loser if winner == LIAO else winner
        out.append(claims.make(
            cid, f"{question}, at equal decode MACs", f"Δrate lower by > {margin:g} pp",
            (f"{sum(c['met'] for c in cases)} of {len(cases)} (λ, r); {winner} minus {loser}: "
             f"{min(gaps):+.2f} to {max(gaps):+.2f} pp" if cases else f"no {control} decoder measured"),
            claims.share(sum(c["met"] for c in cases), len(cases)),
            f"per (λ, r): {winner}'s Δrate at equal PSNR vs the zoo lower than {loser}'s by more than "
            f"{margin:g} percentage points", "Paper vs ours"))
    return out


def beats(rows: list, winner: str, loser: str, margin: float = MARGIN_PP) -> list:
    """Per (λ, Liao ratio) where both exist: {"lambda", "ratio", winner's and loser's Δrate at equal
    PSNR vs the zoo (%), "met": the winner's is lower by more than ``margin`` pp}. Rows are
    :func:`lic.synthesis.measure`'s; a row's ratio is in its ``meta``-derived ``ratio`` field."""
    def pick(method):
        return {(r["lambda"], round(r["ratio"], 2)): r for r in rows if r["method"] == method and r.get("ratio")}
    a, b = pick(winner), pick(loser)
    return [{"lambda": k[0], "ratio": k[1], f"{winner} Δrate (%)": a[k]["rate_vs_zoo_pct"],
             f"{loser} Δrate (%)": b[k]["rate_vs_zoo_pct"],
             "met": a[k]["rate_vs_zoo_pct"] < b[k]["rate_vs_zoo_pct"] - margin} for k in sorted(set(a) & set(b))]
