"""Toderici et al.'s full-resolution RNN codec (CVPR 2017, "one-shot" additive reconstruction),
re-implemented small, the codec Yu et al. prune and quantize.

Reference facts (``1zb/pytorch-image-comp-rnn``, read, not copied; ``METHOD_NOTES.md``): a stride-2
convolution and three stride-2 ConvLSTMs encode, a 1x1 convolution + tanh + sign binarizes to 32
bits per 16x16 block (0.125 bpp), a 1x1 convolution and four ConvLSTMs with pixel shuffle decode
to ``tanh/2``; no biases. Every iteration codes the current residual, the decoded residual is
added to the reconstruction, and the LSTM states carry over between iterations, so ``k``
iterations cost exactly ``k * 32 * H/16 * W/16`` bits. Widths are the reference's times
``width`` (1: ~35 M parameters). There is no learned entropy coder, as in the reference: the bits
are packed and zlib-compressed, and that is the bitstream.

CompressAI's contract, so the one evaluation path measures it: ``forward`` gives ``x_hat``, a
``likelihoods`` entry of 0.5 per coded bit (so the estimated rate is the exact raw bit count)
and, for the training loop, Toderici's loss (mean L1 of the residual over iterations) as
``distortion``; ``compress``/``decompress`` code ``self.iterations`` iterations.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BITS = 32          # bits per 16x16 block and iteration
FACTOR = 16        # the encoder's total downsampling
ENCODER = (64, 256, 512, 512)             # reference widths: conv, then three ConvLSTMs
DECODER = (512, 512, 512, 256, 128)       # 1x1 conv, then four ConvLSTMs (pixel shuffle x2 after each)


class ConvLSTM(nn.Module):
    """A convolutional LSTM cell: gates from a (strided) convolution of the input plus one of the
    hidden state. ``forward(x, h, c)`` with explicit states (zeros at the first iteration) keeps
    the cell traceable for FX quantization."""

    def __init__(self, cin, hidden, stride=1, kernel=3, hidden_kernel=1):
        super().__init__()
        self.hidden = hidden
        self.conv_x = nn.Conv2d(cin, 4 * hidden, kernel, stride, kernel // 2, bias=False)
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, hidden_kernel, 1, hidden_kernel // 2, bias=False)

    def forward(self, x, h, c):
        i, f, g, o = (self.conv_x(x) + self.conv_h(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class Encoder(nn.Module):
    def __init__(self, widths):
        super().__init__()
        c0, c1, c2, c3 = widths
        self.conv = nn.Conv2d(3, c0, 3, 2, 1, bias=False)
        self.rnn1 = ConvLSTM(c0, c1, stride=2)
        self.rnn2 = ConvLSTM(c1, c2, stride=2)
        self.rnn3 = ConvLSTM(c2, c3, stride=2)

    def forward(self, x, h1, c1, h2, c2, h3, c3):
        x = self.conv(x)
        h1, c1 = self.rnn1(x, h1, c1)
        h2, c2 = self.rnn2(h1, h2, c2)
        h3, c3 = self.rnn3(h2, h3, c3)
        return h3, (h1, c1, h2, c2, h3, c3)


class Binarizer(nn.Module):
    """1x1 convolution, tanh, sign: stochastic with a straight-through gradient in training
    (P(+1) = (1 + t) / 2), deterministic (t >= 0 -> +1) otherwise."""

    def __init__(self, cin):
        super().__init__()
        self.conv = nn.Conv2d(cin, BITS, 1, bias=False)

    def forward(self, x):
        t = torch.tanh(self.conv(x))
        if self.training:
            b = torch.where(torch.rand_like(t) < (1 + t) / 2, 1.0, -1.0).to(t)
            return t + (b - t).detach()
        return torch.where(t >= 0, 1.0, -1.0).to(t)


class Decoder(nn.Module):
    def __init__(self, widths):
        super().__init__()
        c0, c1, c2, c3, c4 = widths
        self.conv1 = nn.Conv2d(BITS, c0, 1, bias=False)
        self.rnn1 = ConvLSTM(c0, c1)
        self.rnn2 = ConvLSTM(c1 // 4, c2)
        self.rnn3 = ConvLSTM(c2 // 4, c3, hidden_kernel=3)
        self.rnn4 = ConvLSTM(c3 // 4, c4, hidden_kernel=3)
        self.conv2 = nn.Conv2d(c4 // 4, 3, 1, bias=False)

    def forward(self, b, h1, c1, h2, c2, h3, c3, h4, c4):
        x = self.conv1(b)
        h1, c1 = self.rnn1(x, h1, c1)
        h2, c2 = self.rnn2(F.pixel_shuffle(h1, 2), h2, c2)
        h3, c3 = self.rnn3(F.pixel_shuffle(h2, 2), h3, c3)
        h4, c4 = self.rnn4(F.pixel_shuffle(h3, 2), h4, c4)
        return torch.tanh(self.conv2(F.pixel_shuffle(h4, 2))) / 2, (h1, c1, h2, c2, h3, c3, h4, c4)


def _widths(base, width: float) -> tuple:
    out = tuple(int(round(c * width)) for c in base)
    if any(c < 4 or c % 4 for c in out):
        raise ValueError(f"width {width:g} gives channels {out}: each must be a multiple of 4 "
                         "(pixel shuffle); use a width such as 1, 1/2, 1/4, 1/8 or 1/16")
    return out


class RNNCodec(nn.Module):
    """Toderici's RNN codec at ``width`` times the reference widths, coding ``iterations``
    iterations of 0.125 bpp each (set ``iterations`` to choose the rate)."""

    def __init__(self, width: float = 1.0, iterations: int = 16):
        super().__init__()
        self.width = float(width)
        self.iterations = int(iterations)
        self.trained_iterations = int(iterations)  # what it was built (and trained) with
        self.encoder = Encoder(_widths(ENCODER, width))
        self.binarizer = Binarizer(self.encoder.rnn3.hidden)
        self.decoder = Decoder(_widths(DECODER, width))
        e, d = self.encoder, self.decoder
        self._hidden = [(cell.hidden, stride) for cell, stride in
                        zip((e.rnn1, e.rnn2, e.rnn3, d.rnn1, d.rnn2, d.rnn3, d.rnn4), (4, 8, 16, 16, 8, 4, 2))]

    # -- states (widths kept here: a quantized cell is a GraphModule without them) ---------------
    def _states(self, x):
        n, _, h, w = x.shape
        zeros = []
        for hidden, stride in self._hidden:
            z = x.new_zeros(n, hidden, h // stride, w // stride)
            zeros += [z, z]
        return tuple(zeros[:6]), tuple(zeros[6:])

    def _check(self, x):
        h, w = x.shape[-2:]
        if h % FACTOR or w % FACTOR:
            raise ValueError(f"image size {h}x{w} is not a multiple of {FACTOR}; pad it first "
                             "(lic.data.pad_to)")

    # -- CompressAI's contract -------------------------------------------------------------------
    def forward(self, x, iterations=None):
        """Code ``iterations`` (default ``self.iterations``) residuals; ``distortion`` is the mean
        L1 of the residual over iterations, per image (Toderici's training loss)."""
        self._check(x)
        k = self.iterations if iterations is None else int(iterations)
        enc, dec = self._states(x)
        res, x_hat, l1, codes = x - 0.5, torch.full_like(x, 0.5), 0, []
        for _ in range(k):
            y, enc = self.encoder(res, *enc)
            b = self.binarizer(y)
            r, dec = self.decoder(b, *dec)
            x_hat = x_hat + r
            res = x - x_hat
            l1 = l1 + res.abs().flatten(1).mean(1)
            codes.append(b)
        n, _, h, w = x.shape
        lik = x.new_full((n, k * BITS, h // FACTOR, w // FACTOR), 0.5)
        return {"x_hat": x_hat, "likelihoods": {"codes": lik}, "distortion": l1 / k,
                "codes": torch.cat(codes, 1)}

    def aux_loss(self):
        return torch.zeros(())

    def update(self, scale_table=None, force=False):
        return False  # no entropy model

    @torch.no_grad()
    def compress(self, x):
        self._check(x)
        if self.training:
            raise RuntimeError("call model.eval() before compress(): training binarizes stochastically")
        out = self.forward(x)
        bits = (out["codes"] > 0).cpu().numpy().astype(np.uint8)
        strings = [zlib.compress(np.packbits(b.ravel()).tobytes(), 9) for b in bits]
        return {"strings": [strings], "shape": tuple(bits.shape[1:])}

    def decode_codes(self, codes):
        """The reconstruction from ±1 ``codes`` (N, iterations·32, H/16, W/16): the decoder alone."""
        n, kc, h, w = codes.shape
        proto = codes.new_zeros(n, 3, h * FACTOR, w * FACTOR)
        _, dec = self._states(proto)
        x_hat = torch.full_like(proto, 0.5)
        for i in range(kc // BITS):
            r, dec = self.decoder(codes[:, i * BITS:(i + 1) * BITS], *dec)
            x_hat = x_hat + r
        return x_hat

    @torch.no_grad()
    def decompress(self, strings, shape):
        kc, h, w = shape
        n = len(strings[0])
        bits = np.stack([np.unpackbits(np.frombuffer(zlib.decompress(s), np.uint8))[:kc * h * w]
                         for s in strings[0]]).reshape(n, kc, h, w)
        codes = torch.from_numpy(bits.astype(np.float32) * 2 - 1)
        return {"x_hat": self.decode_codes(codes).clamp_(0, 1)}  # clamped, as CompressAI's decoders


class SplitRNNCodec(nn.Module):
    """The encoder side of one RNN codec with the decoder of another: what ships when only the
    decoding program's decoder is changed (e.g. pruned) while the encoder keeps its own copy for
    the residuals. ``forward`` gives what the decoder really reconstructs from the encoder's bits."""

    def __init__(self, encoder_side: RNNCodec, decoder_side: RNNCodec):
        super().__init__()
        self.enc, self.dec = encoder_side, decoder_side

    @property
    def iterations(self):
        return self.enc.iterations

    @iterations.setter
    def iterations(self, k):
        self.enc.iterations = self.dec.iterations = k

    def forward(self, x):
        out = self.enc(x)
        return {**out, "x_hat": self.dec.decode_codes(out["codes"])}

    def compress(self, x):
        return self.enc.compress(x)

    def decompress(self, strings, shape):
        return self.dec.decompress(strings, shape)

    def update(self, scale_table=None, force=False):
        return False
