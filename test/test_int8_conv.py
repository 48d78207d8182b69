"""int8 convolutions of the CPU default path (speed.quantize_conv_int8_): what is replaced, aliases,
accuracy against float32, and that the tiny conformance model stays exact."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from noposplat_ros.predictors.network import NoPoSplatConfig, build_model
from noposplat_ros.predictors.network.speed import Int8Conv2d, quantize_conv_int8_

pytestmark = pytest.mark.skipif(
    not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv_pointwise")),
    reason="torch build without oneDNN int8 convolution",
)

# a small network whose DPT convolutions have 256 channels (as the released model) at a 32x32 input
MID = NoPoSplatConfig(enc_dim=64, enc_depth=1, enc_heads=4, dec_dim=48, dec_depth=4, dec_heads=3,
                      layer_dims=(96, 192, 384, 768), feature_dim=256, last_dim=32, image_hw=(32, 32), name="mid")


@pytest.mark.parametrize("bias", [True, False])
def test_int8_conv_matches_float_conv(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(96, 256, 3, padding=1, bias=bias)
    x = torch.randn(2, 96, 20, 24)  # batch of 2, signed input (non-zero zero point), non-square
    with torch.inference_mode():
        ref = conv(x)
        out = Int8Conv2d(conv)(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    err = (out - ref).abs()
    # 7-bit activations, 8-bit per-channel weights: on Gaussian input (range ~±4.5 sigma in 127
    # steps) the error is ~2 % of the mean output magnitude, and below 3 % of the largest output
    assert float(err.max()) < 0.03 * float(ref.abs().max())
    assert float(err.mean()) < 0.03 * float(ref.abs().mean())
    # and it is not trivially the float result (the layer really runs in int8)
    assert float(err.max()) > 0


def test_quantize_conv_int8_picks_large_3x3_convs_and_keeps_aliases():
    torch.manual_seed(0)
    model = build_model(MID)
    model.rebuild_buffers("cpu")
    head = model.gaussian_param_head.dpt
    before = {n: type(m) for n, m in model.named_modules(remove_duplicate=False)}
    n = quantize_conv_int8_(model)
    after = dict(model.named_modules(remove_duplicate=False))
    replaced = {k for k, v in after.items() if isinstance(v, Int8Conv2d)}
    assert len(replaced) > 0 and all(before[k] is nn.Conv2d for k in replaced)
    # every replaced conv was 3x3 stride 1 with >= 256 outputs; 1x1, 7x7, stride-2 and the 256->32
    # point-head convs stay float
    for name in replaced:
        assert after[name].out_channels >= 256 and after[name].stride == [1, 1]
    assert type(head.scratch.refinenet1.out_conv) is nn.Conv2d  # 1x1
    assert type(head.input_merger[0]) is nn.Conv2d  # 7x7, 3 -> 256
    assert type(model.downstream_head1.dpt.head[2]) is nn.Conv2d  # 3x3, 128 -> 32
    assert isinstance(head.head[0], Int8Conv2d)  # the Gaussian head's 3x3 256 -> 256
    # aliased scratch convs: one replacement under both official names
    assert head.scratch.layer1_rn is head.scratch.layer_rn[0] and isinstance(head.scratch.layer1_rn, Int8Conv2d)
    assert n == len({id(after[k]) for k in replaced})


def test_int8_conv_network_stays_close_to_fp32():
    torch.manual_seed(0)
    model = build_model(MID)
    model.rebuild_buffers("cpu")
    fast = copy.deepcopy(model)
    assert quantize_conv_int8_(fast) > 0
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 2, 3, 32, 32, generator=g) * 2 - 1
    K = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).expand(1, 2, 3, 3).contiguous()
    with torch.inference_mode():
        ref = model(image, K)
        out = fast(image, K)
    # the bf16 tolerance of docs/readme_network.md: point maps and raw Gaussian channels within 3 %
    for field in ("pts3d", "gs_raw"):
        a, b = getattr(out, field), getattr(ref, field)
        assert float((a - b).abs().max()) < 0.03 * float(b.abs().max()), field
    assert not torch.equal(out.gs_raw, ref.gs_raw)


def test_tiny_conformance_model_has_no_int8_conv():
    # the golden tests run the CPU default path on the tiny model: it must stay exact
    model = build_model(NoPoSplatConfig.tiny())
    assert quantize_conv_int8_(model) == 0
    assert not any(isinstance(m, Int8Conv2d) for m in model.modules())
