"""The three scales of the study, defined in one place.

``smoke``  CI: tiny models, a few steps, two photographs shipped with scikit-image.
``cpu``    the published book: our own N=64/M=96 models trained on BSDS500, tested on Kodak.
``paper``  the papers' widths and CompressAI's pretrained weights (network and GPU advised).

Every notebook takes ``scale`` as a papermill parameter and calls :func:`get_scale`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

ARCHS = ("bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-attn")

# CompressAI qualities 1..8 and their MSE lambdas (compressai.zoo docs / training script).
QUALITY_LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932, 8: 0.1800}


@dataclass(frozen=True)
class Scale:
    """Everything that changes between smoke, cpu and paper runs."""

    name: str
    N: int                      # main-path / hyper width (CompressAI's N)
    M: int                      # latent width (CompressAI's M); cheng2020 uses N for both
    lambdas: tuple              # rate-distortion trade-offs, ascending
    train_set: str              # "skimage" | "bsds500"
    test_set: str               # "skimage" | "kodak"
    crop: int                   # training crop (square)
    batch: int
    steps: int                  # steps from scratch (the middle lambda)
    finetune_steps: int         # steps for the other lambdas, started from the middle one
    lr: float = 5e-4
    lr_final: float = 5e-5      # cosine decay floor
    aux_lr: float = 1e-3
    clip: float = 1.0
    late_crop: int = 0          # larger crop for the last ``late_frac`` of steps (0 = off)
    late_frac: float = 0.0
    eval_every: int = 0         # learning-curve evaluation period (0 = only at the end)
    checkpoint_every: int = 500
    test_limit: int = 0         # use only the first k test images (0 = all)
    test_crop: tuple = ()       # centre-crop test images to (H, W) (smoke: keeps CI fast)
    timing_repeats: int = 5
    mac_size: int = 256         # side of the crop whose real encode/decode MACs are counted (06_synthesis;
                                # smoke: 64, an autoregressive decode counted latent by latent is slow)
    pretrained: bool = False    # paper scale: compressai.zoo(pretrained=True)
    prune_finetune_steps: int = 0  # fine-tuning budget of a pruned model (every pruning chapter)
    estimate_iters: int = 50       # gradient steps of iterative importance estimates (Liao)
    resrep_steps: int = 0          # ResRep training of the hyper path before the merge (Luo)
    vr_steps: int = 0              # variable-rate training from the zoo's middle-λ model (Yin)
    vr_lr: float = 2e-4            # its peak learning rate (cosine decay to a tenth)
    slim_steps: int = 0            # slimmable supernet training from the zoo model, per λ (Tao)
    slim_lr: float = 1e-4          # its peak learning rate (cosine decay to a tenth)
    slim_lambdas: tuple = ()       # the quality levels that get a supernet (zoo λ)
    label_crops: int = 0           # training patches with JUMC labels for the routing agents (Tao)
    agent_steps: int = 0           # routing-agent training steps
    rnn_width: float = 1.0         # Toderici's RNN codec: fraction of the reference widths (Yu)
    rnn_iterations: int = 16       # its iterations in training (0.125 bpp each)
    rnn_steps: int = 0             # its training steps (64x64 crops, batch 8)
    hific_width: float = 1.0       # the HiFiC-style codec: fraction of the reference widths (Yu)
    hific_steps: int = 0           # its rate-distortion warm-up steps
    hific_gan_steps: int = 0       # its GAN-stage steps, from the warm-up model
    hific_late_steps: int = 0      # then rate-distortion steps on crops twice as large (half the batch)
    hific_late_gan_steps: int = 0  # and GAN steps on those crops
    arch_steps: tuple = ()      # ((arch, steps, finetune_steps), ...): per-architecture schedules
    width: str = ""             # "" the scale's own widths; a key of WIDER: that family (its own zoo folder)
    decoder: int = 0            # g_s hidden width trained from scratch (0: the architecture's; 07_controls)

    @property
    def family(self) -> str:
        """The suffix that keeps this family's models and results apart from the scale's own:
        ``""``, ``"-N128"`` (a wider family), ``"-gs38"`` (a narrow decoder trained from scratch)."""
        return (f"-{self.width}" if self.width else "") + (f"-gs{self.decoder}" if self.decoder else "")

    @property
    def key(self) -> str:
        """The scale and family as one name, for folders and results files: ``cpu``, ``cpu-N128``."""
        return self.name + self.family

    def schedule(self, arch: str) -> tuple:
        """(steps from scratch, fine-tune steps) of ``arch``'s zoo models at this scale."""
        check_choice("arch", arch, ARCHS)
        for a, steps, finetune_steps in self.arch_steps:
            if a == arch:
                return steps, finetune_steps
        return self.steps, self.finetune_steps

    def widths(self, arch: str) -> dict:
        """Constructor widths for ``arch`` at this scale."""
        check_choice("arch", arch, ARCHS)
        if arch == "cheng2020-attn":
            return {"N": self.N}
        return {"N": self.N, "M": self.M}

    def with_(self, **changes) -> "Scale":
        return replace(self, **changes)

    def at_width(self, width: str) -> "Scale":
        """This scale with the base models of another width family: ``"N128"`` is CompressAI's
        own architecture for qualities 1-5 (N=128, M=192) at ``cpu``/``paper``, and twice the
        smoke widths at ``smoke`` (so CI runs the same code in minutes). ``""`` or ``"N64"`` (the
        name of every scale's own family, the cpu zoo's N=64/M=96) changes nothing."""
        check_choice("width", width, ("",) + WIDTHS)
        if width in ("", BASE_WIDTH):
            return replace(self, width="")
        N, M = WIDER[width].get(self.name, WIDER[width]["cpu"])
        return replace(self, N=N, M=M, width=width)


SCALES = {
    "smoke": Scale(
        name="smoke", N=16, M=24, lambdas=(0.0067, 0.0250), train_set="skimage", test_set="skimage",
        crop=64, batch=4, steps=120, finetune_steps=30, lr=1e-3, lr_final=1e-4, checkpoint_every=40,
        eval_every=40, test_limit=2, test_crop=(192, 256), timing_repeats=1, mac_size=64,
        prune_finetune_steps=10, estimate_iters=5, resrep_steps=20, vr_steps=40, vr_lr=1e-3,
        slim_steps=20, slim_lr=1e-3, slim_lambdas=(0.0067, 0.0250), label_crops=16, agent_steps=10,
        rnn_width=1 / 16, rnn_iterations=4, rnn_steps=20, hific_width=1 / 16, hific_steps=20, hific_gan_steps=10,
        hific_late_steps=4, hific_late_gan_steps=4,
    ),
    "cpu": Scale(
        name="cpu", N=64, M=96, lambdas=(0.0035, 0.0067, 0.0130, 0.0250), train_set="bsds500",
        test_set="kodak", crop=128, batch=8, steps=60000, finetune_steps=16000, lr=5e-4, lr_final=2e-5,
        late_crop=256, late_frac=0.15, eval_every=2500, checkpoint_every=500, timing_repeats=5,
        prune_finetune_steps=1000, estimate_iters=50, resrep_steps=3000, vr_steps=20000,
        slim_steps=3000, slim_lambdas=(0.0035, 0.0067, 0.0130, 0.0250),
        label_crops=2400, agent_steps=1500,
        rnn_width=0.25, rnn_iterations=4, rnn_steps=8000, hific_width=0.2, hific_steps=8000, hific_gan_steps=2000,
        hific_late_steps=1500, hific_late_gan_steps=1000,
        # cheng2020-attn steps ~4.5x slower; its 30k + 8k-step family already beats WebP
        arch_steps=(("cheng2020-attn", 30000, 8000),),
    ),
    "paper": Scale(
        name="paper", N=128, M=192, lambdas=(0.0035, 0.0067, 0.0130, 0.0250), train_set="bsds500",
        test_set="kodak", crop=256, batch=16, steps=0, finetune_steps=0, pretrained=True,
        timing_repeats=5, prune_finetune_steps=20000, estimate_iters=100, resrep_steps=30000,
        vr_steps=200000, vr_lr=1e-4, slim_steps=1600000, slim_lambdas=(0.0035, 0.0067, 0.0130, 0.0250),
        label_crops=20000, agent_steps=50000,
        rnn_width=1.0, rnn_iterations=16, rnn_steps=200000, hific_width=1.0, hific_steps=1000000,
        hific_gan_steps=1000000,
    ),
}

# the wider base-model families: (N, M) per scale; the zoo of each lives in its own folder
WIDER = {"N128": {"cpu": (128, 192), "paper": (128, 192), "smoke": (32, 48)}}


# CompressAI's pretrained widths differ by quality (bmshj2018-hyperprior: N=128, M=192 for q<=5).
PAPER_QUALITY = {lam: q for q, lam in QUALITY_LAMBDAS.items()}


BASE_WIDTH = "N64"  # the name of each scale's own family (the cpu zoo: N=64, M=96)
WIDTHS = (BASE_WIDTH,) + tuple(WIDER)  # what the `width` parameter accepts


def check_choice(what: str, value, choices) -> None:
    """Raise ``ValueError`` naming the valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(map(str, choices))}")


def get_scale(name: str) -> Scale:
    """Return the :class:`Scale` called ``name`` (``smoke``, ``cpu`` or ``paper``)."""
    check_choice("scale", name, tuple(SCALES))
    return SCALES[name]
