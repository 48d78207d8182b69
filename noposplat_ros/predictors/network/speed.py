"""Inference speed-ups of the NoPoSplat network that change the module in place.

- ``quantize_linear_int8_``: dynamic int8 quantisation of the large nn.Linear layers (weights int8
  per channel, activations quantised per call). On a CPU without native bf16 this is the fast path:
  the transformer's GEMMs are about 40 % of the forward (measured numbers in docs/readme_network.md).
- ``channels_last_convs_``: DPT conv weights in channels-last (NHWC) layout; oneDNN (CPU) and cuDNN
  (tensor cores) then run the convolutions in NHWC, which measured faster for the 3x3 head convs.
- ``cpu_has_native_bf16``: whether bf16 autocast can be fast on this CPU (AVX512-BF16 or AMX).
"""
from __future__ import annotations

import functools
import pathlib
import warnings

import torch
from torch import nn

# Smaller layers measured no faster in int8 (per-call quantisation overhead); the tiny conformance
# model has none this large, so it stays exact.
INT8_MIN_IN_FEATURES = 512


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty set where it cannot be read)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls run natively (AVX512-BF16 or AMX-BF16); without them bf16 autocast
    is emulated and measured ~5x slower than fp32 here."""
    flags = cpu_flags()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")
    except Exception:  # older torch without get_cpu_capability
        return False


def int8_supported() -> bool:
    """Whether this torch build has a quantised CPU engine (fbgemm/x86/onednn/qnnpack) for int8 Linear."""
    try:
        engines = set(torch.backends.quantized.supported_engines)
    except Exception:
        return False
    return bool(engines & {"x86", "fbgemm", "onednn", "qnnpack"})


def quantize_linear_int8_(model: nn.Module, min_in_features: int = INT8_MIN_IN_FEATURES) -> int:
    """Replace every nn.Linear with in_features >= ``min_in_features`` by a dynamic int8 Linear, in place.

    CPU only (the quantised kernels have no CUDA implementation). Returns the number of replaced layers.
    """
    names = {
        name for name, m in model.named_modules()
        if type(m) is nn.Linear and m.in_features >= min_in_features
    }
    if not names:
        return 0
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it moves to torchao; the dynamic Linear still works here
        warnings.simplefilter("ignore")
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(model, {name: default_dynamic_qconfig for name in names}, dtype=torch.qint8, inplace=True)
    return len(names)


def channels_last_convs_(model: nn.Module) -> int:
    """Store the 4-D weights of every Conv2d / ConvTranspose2d channels-last, in place (values unchanged).

    The convolutions then pick NHWC kernels and return NHWC activations; the following element-wise
    ops and bilinear upsampling keep that layout. Returns the number of converted layers.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.weight.ndim == 4 and m.weight.device.type != "meta":
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
            n += 1
    return n
