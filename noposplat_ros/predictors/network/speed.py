"""Inference speed-ups of the NoPoSplat network that change the module in place.

- ``quantize_linear_int8_``: dynamic int8 quantisation of the large nn.Linear layers (weights int8
  per channel, activations quantised per call). On a CPU without native bf16 this is the fast path:
  the transformer's GEMMs are about 40 % of the forward (measured numbers in docs/readme_network.md).
- ``quantize_conv_int8_``: int8 for the large 3x3 convolutions of the DPT heads (oneDNN kernels; weights
  int8 per output channel, activations quantised per call to 7 bits, output float32). They are about
  40 % of the forward and measured ~2x faster in int8 at 256 channels.
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
# int8 convolutions: 3x3, stride 1, groups 1, at least this many output channels. Measured (2 cores,
# AVX2): 256->256 at 256^2 ~2x faster, at 16^2..64^2 1.2-1.5x, 96->256 at 64^2 1.4x; 256->128 at 128^2,
# 1x1 and the 7x7 3->256 image merger were slower in int8 (quantisation overhead), so they stay fp32.
# The tiny conformance model (32 channels) has none, so it stays exact.
INT8_CONV_MIN_OUT_CHANNELS = 256
# 7-bit activations: without VNNI (AVX2) the u8 x s8 pair products are summed in int16 and 8-bit
# activations can saturate (fbgemm's reduce_range for the same reason)
_ACT_QMAX = 127


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


def _onednn_qconv_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv_prepack") \
        and hasattr(torch.ops.onednn, "qconv_pointwise")


def _quantize_u8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """uint8 codes round(x / scale) + zero_point, clamped to [0, 255], in x's memory format.

    One native pass through torch.quantize_per_tensor (deprecated in torch >= 2.12, hence the filter);
    where it is gone, the same codes from element-wise ops (a few more passes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr()
    except (AttributeError, RuntimeError):
        return (x / scale).round_().add_(zero_point).clamp_(0, 255).to(torch.uint8)


class Int8Conv2d(nn.Module):
    """Inference-only int8 replacement of a float nn.Conv2d (CPU, oneDNN).

    Weights: symmetric int8 per output channel (scale = max |w| / 127), packed once. Activations:
    asymmetric uint8 per tensor with 7-bit range (see _ACT_QMAX), min/max taken per call. Bias and
    output float32 (channels-last). forward: x (B, C_in, H, W) float32 -> (B, C_out, H', W') float32.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        w = conv.weight.detach().float().contiguous()
        amax = w.abs().flatten(1).amax(dim=1)
        w_scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)).to(torch.float64).float()
        qw = torch.round(w / w_scale[:, None, None, None]).clamp(-127, 127).to(torch.int8)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.w_scale = w_scale
        self.w_zero_point = torch.zeros(conv.out_channels, dtype=torch.int64)
        self.bias = None if conv.bias is None else conv.bias.detach().float().clone()
        # oneDNN's blocked int8 weight (opaque); x_scale / x_zp here only describe the primitive
        self.packed = torch.ops.onednn.qconv_prepack(
            qw, w_scale, 1.0, 0, self.stride, self.padding, self.dilation, self.groups, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous(memory_format=torch.channels_last)
        # min/max over the contiguous NHWC view (a reduction over the NCHW-strided view is ~20x slower)
        lo_t, hi_t = torch.aminmax(x.permute(0, 2, 3, 1).reshape(-1))
        lo, hi = min(float(lo_t), 0.0), max(float(hi_t), 0.0)
        scale = (hi - lo) / _ACT_QMAX if hi > lo else 1.0
        zero_point = int(round(-lo / scale))
        qx = _quantize_u8(x, scale, zero_point)
        return torch.ops.onednn.qconv_pointwise(
            qx, scale, zero_point, self.packed, self.w_scale, self.w_zero_point, self.bias,
            self.stride, self.padding, self.dilation, self.groups, 1.0, 0, torch.float32, "none", [], "")

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={tuple(self.stride)}, padding={tuple(self.padding)}, int8"


def _int8_conv_candidate(m: nn.Module, min_out_channels: int) -> bool:
    return (type(m) is nn.Conv2d and m.weight.device.type == "cpu" and m.kernel_size == (3, 3)
            and m.stride == (1, 1) and m.dilation == (1, 1) and m.groups == 1
            and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and m.out_channels >= min_out_channels)


def quantize_conv_int8_(model: nn.Module, min_out_channels: int = INT8_CONV_MIN_OUT_CHANNELS) -> int:
    """Replace every 3x3 stride-1 nn.Conv2d with >= ``min_out_channels`` outputs by Int8Conv2d, in place.

    A module registered under several names (the DPT's aliased scratch convs) gets one replacement
    under all of them. CPU only; where oneDNN's int8 convolution is missing or fails a self-check
    the model is left unchanged. Returns the number of replaced convolutions.
    """
    if not _onednn_qconv_available():
        return 0
    try:  # self-check on a small input: the kernel runs and agrees with the float conv
        probe = nn.Conv2d(8, 8, 3, padding=1)
        x = torch.randn(1, 8, 6, 6)
        with torch.no_grad():
            err = (Int8Conv2d(probe)(x) - probe(x)).abs().max()
            ref = probe(x).abs().max()
        if not bool(err <= 0.05 * ref):
            return 0
    except Exception:  # noqa: BLE001 - any failure of the optional kernel keeps the float model
        return 0
    replaced: dict[int, nn.Module] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replaced:
                setattr(parent, name, replaced[id(child)])
            elif _int8_conv_candidate(child, min_out_channels):
                replaced[id(child)] = Int8Conv2d(child)
                setattr(parent, name, replaced[id(child)])
    return len(replaced)


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
