"""Deployment: a model's transforms run in an inference runtime, everything else stays CompressAI.

    from lic import deploy
    fast = deploy.deploy(model, "openvino")    # same contract: forward, compress, decompress, update
    deploy.evaluate(fast, images)              # ... so the one evaluation and timing path serves it

What is deployed: the analysis and synthesis transforms (``g_a``, ``h_a``, ``g_s``) by default. The
hyper synthesis ``h_s`` stays eager PyTorch, because both sides of the codec compute the entropy
coder's indexes from its output: a runtime that rounds ``h_s`` differently on the encoder and the
decoder moves a scale across a table boundary and the y decode goes wrong from there (CompressAI's
cross-platform reports describe this). Keeping it eager costs little (``h_s`` is a few per cent of
decode time: :func:`lic.evaluate.anatomy`) and lets a bitstream made by any runtime be decoded by
any other. ``parts=`` changes the choice. The entropy models, context models and autoregressive
loops are never exported: they are CompressAI's code either way.

Known hazard: after OpenVINO has run in a process, a SIGCONT arriving while torch trains in that
process (a paused job continued: :class:`lic.train._Stopped`) crashed it with a segmentation fault
(torch 2.14.1, OpenVINO 2026.4.1; blocking SIGCONT around OpenVINO's calls did not help). Deploy and
train in separate processes; the tests run OpenVINO last (``tests/conftest.py``).

Runtimes (:data:`RUNTIMES`): ``eager`` (nothing changes) and ``openvino`` (f32, precision hint
explicit, as many threads as torch). :func:`choose` picks per machine by measurement and caches
the choice (``runs/deploy.json``), like the training precision; ``LIC_RUNTIME`` overrides it.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

RUNTIMES = ("eager", "openvino")
DEFAULT_PARTS = ("g_a", "h_a", "g_s")
TRANSFORMS = ("g_a", "h_a", "h_s", "g_s")
PROJECT = Path(__file__).resolve().parents[1]


class DeployError(RuntimeError):
    """A runtime that is unknown or not installed, or a part that does not export; the message
    says which and what to do."""


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES + ("auto",):
        raise DeployError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES + ('auto',))}")
    if runtime == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError as err:
            raise DeployError("runtime 'openvino' is not installed here (pip install openvino); "
                              f"valid here: eager ({err})") from err


def runtime_version(runtime: str) -> str:
    if runtime == "openvino":
        import openvino as ov
        return ov.__version__.split("-")[0]
    return str(torch.__version__)


def _in_channels(module: nn.Module) -> int:
    for m in module.modules():
        if hasattr(m, "in_channels"):
            return m.in_channels
    raise DeployError(f"{type(module).__name__} has no layer with in_channels to shape an example input")


def _example(part: str, module: nn.Module) -> torch.Tensor:
    """A small input of the right channel count (spatial sizes are left dynamic in the export)."""
    side = 64 if part == "g_a" else 4
    return torch.rand(1, _in_channels(module), side, side)


class OpenVINOModule(nn.Module):
    """``module`` compiled by OpenVINO for the CPU (f32, dynamic height and width), called like it."""

    def __init__(self, module: nn.Module, example: torch.Tensor, threads=None, precision="f32", calibration=None):
        super().__init__()
        import openvino as ov

        shape = ov.PartialShape([1, example.shape[1], -1, -1])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.trace.*deprecated", category=FutureWarning)
            model = ov.convert_model(module.eval(), example_input=example, input=[shape])
        if calibration is not None:  # its int8 layers run int8, the others f32
            cached = _int8_cache(module, calibration)
            if cached.exists():
                model = ov.Core().read_model(cached)
            else:
                model = _int8(model, calibration)
                cached.parent.mkdir(parents=True, exist_ok=True)
                ov.save_model(model, cached.with_suffix(".tmp.xml"), compress_to_fp16=False)
                for ext in (".bin", ".xml"):  # the .xml last: it is what marks the pair complete
                    os.replace(cached.with_suffix(".tmp" + ext), cached.with_suffix(ext))
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.description = (f"OpenVINO {runtime_version('openvino')} "
                            f"{'int8 (NNCF)' if calibration is not None else precision}")

    def forward(self, x):
        if x.shape[0] != 1:  # the export has batch 1: one image at a time, as a codec runs
            return torch.cat([self(x[i:i + 1]) for i in range(x.shape[0])])
        out = self.request.infer([np.ascontiguousarray(x.detach().float().cpu().numpy())])
        return torch.from_numpy(np.array(next(iter(out.values())), copy=True))  # the buffer is reused


def _int8_cache(module: nn.Module, calibration) -> Path:
    """Where the NNCF-quantized model of ``module`` with ``calibration`` is kept on this machine
    (``runs/openvino-int8/<key>.xml``, not committed): quantizing with accuracy control takes minutes,
    and the same decoder is quantized by 04 and again when 06 rebuilds its point. The key holds
    everything the result depends on — the weights, the calibration and validation tensors, the
    drop allowed, the NNCF and OpenVINO versions — so any change quantizes afresh."""
    import hashlib

    import nncf

    spec = calibration if isinstance(calibration, Int8) else Int8(list(calibration))
    h = hashlib.sha256(f"{nncf.__version__} {runtime_version('openvino')} {spec.max_drop_db} "
                       f"{len(spec.calibration)} {len(spec.validation)}".encode())
    for t in [*module.state_dict().values(), *spec.calibration, *(t for pair in spec.validation for t in pair)]:
        h.update(np.ascontiguousarray(t.detach().float().cpu().numpy()).tobytes())
    return Path(os.environ.get("LIC_RUNS", PROJECT / "runs")) / "openvino-int8" / f"{h.hexdigest()[:24]}.xml"


def _int8(model, calibration):
    """NNCF post-training quantization of an OpenVINO model on ``calibration`` inputs, with NNCF's
    defaults (per-channel symmetric weights, per-tensor activations, fast bias correction).
    Measured on the validation images (zoo bmshj2018-hyperprior λ = 0.013, g_s int8): −0.84 dB;
    keeping GDN's norm convolutions (of x²) in f32 gave the same −0.84 dB, so no exception is made.

    ``calibration`` may instead be an :class:`Int8` with validation pairs: then NNCF's quantization
    *with accuracy control* keeps in f32 the layers that cost the most PSNR on them, until the
    int8 synthesis loses at most ``max_drop_db`` against the f32 one."""
    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    spec = calibration if isinstance(calibration, Int8) else Int8(list(calibration))
    data = nncf.Dataset([np.ascontiguousarray(x.float().numpy()) for x in spec.calibration])
    if not spec.validation:
        return nncf.quantize(model, data, subset_size=len(spec.calibration))
    pairs = [(np.ascontiguousarray(y.float().numpy()), x.float().numpy()) for y, x in spec.validation]
    return nncf.quantize_with_accuracy_control(
        model, data, nncf.Dataset(pairs), _synthesis_psnr, max_drop=spec.max_drop_db,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(spec.calibration))


def _synthesis_psnr(compiled, pairs) -> tuple:
    """NNCF's validation function for a synthesis transform: (mean PSNR, per pair) of its output
    for ŷ against the image (higher is better)."""
    per = []
    for y, x in pairs:
        out = np.clip(np.asarray(compiled(y)[0]), 0, 1)[..., : x.shape[-2], : x.shape[-1]]
        per.append(float(10 * np.log10(1 / max(np.mean((out - x) ** 2), 1e-12))))
    return float(np.mean(per)), per


class Int8:
    """What NNCF needs to quantize one part: ``calibration`` inputs (ŷ of training crops); with
    ``validation`` pairs (ŷ, image) of the validation images, quantization with accuracy control
    keeps the int8 part within ``max_drop_db`` of the f32 one on them."""

    def __init__(self, calibration, validation=(), max_drop_db: float = 0.1):
        self.calibration, self.validation, self.max_drop_db = list(calibration), list(validation), max_drop_db


@torch.no_grad()
def validation_pairs(model, images) -> list:
    """(ŷ, image) of ``images`` (the validation images, never the test set), padded as the codec pads."""
    from .data import pad_to, to_tensor
    from .evaluate import MIN_SIZE, PAD

    model.eval()
    out = []
    for _, img in images:
        x = pad_to(to_tensor(img), PAD, MIN_SIZE)[0]
        out.append((torch.round(model.g_a(x)), x))
    return out


@torch.no_grad()
def calibration_latents(model, crops) -> list:
    """The inputs of ``g_s`` for int8 calibration: the quantized latents ŷ = round(g_a(x)) of
    ``crops`` (training crops, never test images), one tensor of batch 1 per crop."""
    model.eval()
    return [torch.round(model.g_a(x[None])) for x in crops]


def deploy(model, runtime: str = "openvino", parts=DEFAULT_PARTS, fallback=False, threads=None, int8=None):
    """A copy of ``model`` whose ``parts`` run in ``runtime``; CompressAI's contract is kept (the
    copy's ``forward``/``compress``/``decompress``/``update`` are the original code calling the
    runtime). ``model.deployment`` records what runs where. A part that does not export raises
    :class:`DeployError` naming it, unless ``fallback``: then it stays eager and is listed.
    ``int8``: {part: calibration inputs} of the parts NNCF quantizes to int8 (e.g. ``{"g_s":
    calibration_latents(model, crops)}``: a decoder-only int8 model, whose bitstream is the f32
    one's), or {part: :class:`Int8`} to quantize with accuracy control; openvino only."""
    int8 = int8 or {}
    runtime = choose(model) if runtime == "auto" else runtime
    check_runtime(runtime)
    unknown = [p for p in parts if p not in TRANSFORMS]
    if unknown:
        raise DeployError(f"unknown part {unknown[0]!r}; valid: {', '.join(TRANSFORMS)}")
    out = copy.deepcopy(model).eval()
    done, eager = [], []
    for part in parts:
        module = getattr(out, part, None)
        if module is None or runtime == "eager":
            continue
        try:
            setattr(out, part, OpenVINOModule(module, _example(part, module), threads, calibration=int8.get(part)))
            done.append(part)
        except Exception as err:  # noqa: BLE001 - any export failure is reported the same way
            if not fallback:
                raise DeployError(f"{part} of {type(model).__name__} does not export to {runtime}: "
                                  f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                                  "(deploy(..., fallback=True) keeps it eager)") from err
            eager.append(part)
    out.deployment = {"runtime": runtime, "version": runtime_version(runtime), "parts": done,
                      "eager_parts": [p for p in TRANSFORMS if p not in done and hasattr(out, p)],
                      "failed": eager, "int8": [p for p in done if p in int8],
                      "threads": int(threads or torch.get_num_threads())}
    return out


def describe(model) -> str:
    """One line: what runs where (eager for a model that was never deployed)."""
    d = getattr(model, "deployment", None)
    if not d or d["runtime"] == "eager":
        return "eager PyTorch"
    f32 = [p for p in d["parts"] if p not in d.get("int8", [])]
    where = ([f"f32 for {', '.join(f32)}"] if f32 else []) + ([f"int8 (NNCF) for {', '.join(d['int8'])}"]
                                                               if d.get("int8") else [])
    return f"{d['runtime']} {d['version']} {'; '.join(where)}; eager for {', '.join(d['eager_parts']) or 'nothing'}"


# ---------------------------------------------------------------------------------------------
# the choice per machine


def _cache_file() -> Path:
    return Path(os.environ.get("LIC_RUNS", PROJECT / "runs")) / "deploy.json"


def _key(model) -> str:
    from .precision import cpu_model
    from .surgery import channel_config

    return json.dumps([cpu_model(), type(model).__name__, channel_config(model), torch.get_num_threads()])


def synthesis_seconds(model, runtimes=RUNTIMES, repeats=5, shape=(512, 768)) -> dict:
    """Median seconds of ``g_s`` on a latent of a ``shape`` image under each runtime, interleaved."""
    y = torch.rand(1, _in_channels(model.g_s), shape[0] // 16, shape[1] // 16)
    mods = {r: model.g_s if r == "eager" else deploy(model, r, parts=("g_s",)).g_s for r in runtimes}
    times = {r: [] for r in runtimes}
    with torch.no_grad():
        for m in mods.values():
            m(y)
        for _ in range(repeats):
            for r, m in mods.items():
                t0 = time.perf_counter()
                m(y)
                times[r].append(time.perf_counter() - t0)
    return {r: statistics.median(t) for r, t in times.items()}


def choose(model, refresh=False) -> str:
    """The runtime for ``model`` here: ``$LIC_RUNTIME`` if set, else the fastest g_s of the
    installed runtimes, measured once per CPU, architecture, widths and thread count and cached."""
    forced = os.environ.get("LIC_RUNTIME")
    if forced and forced != "auto":
        check_runtime(forced)
        return forced
    available = [r for r in RUNTIMES if r == "eager" or _installed(r)]
    cache, key = _read(_cache_file()), _key(model)
    if key in cache and not refresh:
        return cache[key]["runtime"]
    secs = synthesis_seconds(model, available)
    best = min(secs, key=secs.get)
    cache[key] = {"runtime": best, "g_s_seconds": secs, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    from .store import write_json
    write_json(_cache_file(), cache)
    return best


def _installed(runtime: str) -> bool:
    try:
        check_runtime(runtime)
        return True
    except DeployError:
        return False


def _read(p: Path) -> dict:
    return json.loads(p.read_text()) if p.exists() else {}
