"""Architectures the papers need beyond CompressAI's: one per file, each keeping CompressAI's
model contract (``forward``, ``compress``, ``decompress``, ``update``) so the one evaluation path
(:mod:`lic.evaluate`) measures them. ``gated``: Yin et al.'s ECG and bit-rate modulator; ``rate``/``vbr``: the fixed-λ view and
CompressAI's variable-rate peer; ``slimmable``/``spatial``: Tao et al.'s supernet and its tiled,
spatially adaptive execution; ``agents``: their routing agents; ``rnn``: Toderici's RNN codec and
``hific``: a HiFiC-style generative codec (Yu et al.'s two codecs)."""
