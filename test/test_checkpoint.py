"""Checkpoint loading: formats, strictness, clear errors, and no unpickling without the opt-in."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from noposplat_ros.predictors.network.checkpoint import CheckpointError, deduplicate_aliases, load_checkpoint_into, load_state_dict_file
from noposplat_ros.cli import main as cli_main
from noposplat_ros.predictors.network import NoPoSplatConfig, build_model


@pytest.fixture(scope="module")
def tiny_weights(conformance_dir) -> dict[str, torch.Tensor]:
    return load_file(str(conformance_dir / "noposplat_tiny_weights.safetensors"))


@pytest.fixture(scope="module")
def golden(conformance_dir):
    return load_file(str(conformance_dir / "noposplat_tiny_io.safetensors"))


def _lightning(weights: dict[str, torch.Tensor]) -> dict:
    return {"state_dict": {"encoder." + k: v for k, v in weights.items()}, "epoch": 3, "global_step": 18751}


class _Evil:
    """Unpickling this calls open(marker, 'w'): a visible side effect of executing pickled code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_lightning_ckpt_and_safetensors_load_into_meta_model(tmp_path, tiny_weights, golden):
    ckpt = tmp_path / "tiny.ckpt"
    torch.save(_lightning(tiny_weights), ckpt)
    state = load_state_dict_file(ckpt)
    assert set(state) == set(tiny_weights)  # prefix stripped
    model = load_checkpoint_into(build_model(NoPoSplatConfig.tiny(), device="meta"), ckpt)
    assert not any(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())
    with torch.no_grad():
        out = model(golden["input.image"], golden["input.intrinsics"])
    torch.testing.assert_close(out.means, golden["out.means"], rtol=1e-4, atol=1e-4)

    # a de-duplicated safetensors file (no layer_rn.* aliases) loads too: aliases are restored
    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in deduplicate_aliases(tiny_weights).items()}, str(st))
    model2 = load_checkpoint_into(build_model(NoPoSplatConfig.tiny(), device="meta"), st)
    scratch = model2.gaussian_param_head2.dpt.scratch
    assert scratch.layer3_rn is scratch.layer_rn[2]
    torch.testing.assert_close(scratch.layer3_rn.weight, tiny_weights["gaussian_param_head2.dpt.scratch.layer3_rn.weight"])


def test_meta_load_assigns_file_tensors_without_copy(tmp_path, tiny_weights):
    # a zip .ckpt is memory-mapped; the meta model takes those tensors as its parameters
    ckpt = tmp_path / "tiny.ckpt"
    torch.save(_lightning(tiny_weights), ckpt)
    state = load_state_dict_file(ckpt)
    model = build_model(NoPoSplatConfig.tiny(), device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    assert model.backbone.patch_embed.proj.weight.data_ptr() == state["backbone.patch_embed.proj.weight"].data_ptr()


def test_one_key_removed(tmp_path, tiny_weights):
    bad = dict(tiny_weights)
    del bad["backbone.enc_blocks.1.attn.qkv.bias"]
    path = tmp_path / "missing.safetensors"
    save_file(bad, str(path))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_into(build_model(NoPoSplatConfig.tiny()), path)
    err = info.value
    assert err.missing == ["backbone.enc_blocks.1.attn.qkv.bias"] and not err.unexpected and not err.shape_mismatches
    assert str(path) in str(err) and "backbone.enc_blocks.1.attn.qkv.bias" in str(err)


def test_one_shape_changed_and_extra_key(tmp_path, tiny_weights):
    bad = dict(tiny_weights)
    bad["backbone.dec_norm.weight"] = torch.ones(47)
    bad["backbone.prediction_head.weight"] = torch.ones(3)
    path = tmp_path / "shape.ckpt"
    torch.save(_lightning(bad), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_into(build_model(NoPoSplatConfig.tiny()), path)
    err = info.value
    assert err.shape_mismatches == [("backbone.dec_norm.weight", (47,), (48,))]
    assert err.unexpected == ["backbone.prediction_head.weight"]
    assert "shape mismatch backbone.dec_norm.weight: file [47], model [48]" in str(err)


def test_full_size_model_rejects_tiny_weights(conformance_dir):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_into(build_model(NoPoSplatConfig.released(256), device="meta"),
                             conformance_dir / "noposplat_tiny_weights.safetensors")
    assert len(info.value.shape_mismatches) > 500


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_state_dict_file(path)


def test_truncated_files(tmp_path, tiny_weights):
    st = tmp_path / "full.safetensors"
    save_file(tiny_weights, str(st))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated or corrupt"):
        load_state_dict_file(cut)
    ck = tmp_path / "full.ckpt"
    torch.save(_lightning(tiny_weights), ck)
    cut2 = tmp_path / "cut.ckpt"
    cut2.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt.*truncated or corrupt"):
        load_state_dict_file(cut2)
    with pytest.raises(CheckpointError, match="file not found"):
        load_state_dict_file(tmp_path / "nope.ckpt")


def test_safe_loader_never_unpickles_without_opt_in(tmp_path, tiny_weights):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = _lightning(tiny_weights)
    payload["hyper_parameters"] = _Evil(str(marker))
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        load_state_dict_file(path)
    assert not marker.exists()
    # the conversion command refuses too, without the flag
    out = tmp_path / "evil.safetensors"
    assert cli_main(["convert-checkpoint", str(path), str(out), "--model-config", _tiny_cfg(tmp_path)]) == 1
    assert not marker.exists() and not out.exists()
    # the opt-in really unpickles (so the test above can detect it) and the file then converts
    assert cli_main(["convert-checkpoint", str(path), str(out), "--allow-pickle", "--model-config", _tiny_cfg(tmp_path)]) == 0
    assert marker.exists()
    converted = load_file(str(out))
    assert not any(".layer_rn." in k for k in converted)  # aliases dropped, restored on load
    load_checkpoint_into(build_model(NoPoSplatConfig.tiny(), device="meta"), out)


def _tiny_cfg(tmp_path) -> str:
    path = tmp_path / "tiny.json"
    NoPoSplatConfig.tiny().to_json(path)
    return str(path)


def test_convert_command_validates_keys(tmp_path, tiny_weights):
    path = tmp_path / "tiny.ckpt"
    torch.save(_lightning(tiny_weights), path)
    out = tmp_path / "tiny.safetensors"
    # default validation is against the released model: the tiny weights do not fit
    assert cli_main(["convert-checkpoint", str(path), str(out)]) == 1
    assert not out.exists()
    assert cli_main(["convert-checkpoint", str(path), str(out), "--model-config", _tiny_cfg(tmp_path)]) == 0
    assert cli_main(["convert-checkpoint", str(path), str(out), "--model-config", _tiny_cfg(tmp_path)]) == 2  # exists
