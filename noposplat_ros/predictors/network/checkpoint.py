"""Loading the official NoPoSplat weights: Lightning ``.ckpt`` or ``.safetensors``.

Safety: the default path never runs pickled code. ``.safetensors`` holds tensors only; a ``.ckpt`` is
read with ``torch.load(weights_only=True)`` (tensors and plain containers only). A Lightning file whose
extra entries need full unpickling is refused unless the caller opts in with ``allow_pickle=True``
(``noposplat-ros convert-checkpoint --allow-pickle`` does that once and writes a safetensors file).

Memory: weights are read once (safetensors / mmap'ed zip) and, for a model built on the meta device,
become the parameters themselves (``load_state_dict(assign=True)``): no second copy.
"""
from __future__ import annotations

import pathlib
import pickle
import re
import zipfile

import torch
from torch import nn

LIGHTNING_PREFIX = "encoder."
_ALIAS_RE = re.compile(r"^(?P<head>.*\.dpt\.scratch)\.(?:layer(?P<k>[1-4])_rn|layer_rn\.(?P<i>[0-3]))\.weight$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: names the file and what is wrong with it."""

    def __init__(
        self,
        path: str | pathlib.Path,
        reason: str,
        *,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None,
    ) -> None:
        self.path = str(path)
        self.reason = reason
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.shape_mismatches = list(shape_mismatches or [])
        lines = [f"checkpoint {self.path}: {reason}"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"  unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        for key, got, want in self.shape_mismatches:
            lines.append(f"  shape mismatch {key}: file {list(got)}, model {list(want)}")
        super().__init__("\n".join(lines))


def _is_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header size, then a JSON object
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0


def _read_safetensors(path: pathlib.Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def _read_torch(path: pathlib.Path, head: bytes, allow_pickle: bool) -> object:
    is_zip = zipfile.is_zipfile(path)
    if head[:4] == b"PK\x03\x04" and not is_zip:
        raise CheckpointError(path, "a damaged zip archive: not a readable PyTorch checkpoint (truncated or corrupt?)")
    is_pickle = head[:1] == b"\x80" and 2 <= head[1] <= 5  # legacy torch.save / plain pickle
    if not (is_zip or is_pickle):
        raise CheckpointError(
            path, "neither safetensors nor a PyTorch checkpoint (zip or pickle): unknown format (truncated or corrupt?)"
        )
    try:
        # weights_only: only tensors and plain containers are rebuilt; no arbitrary code runs.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise CheckpointError(
                path,
                "the file needs full unpickling (it holds more than tensors), which can run arbitrary "
                "code. If you trust it, convert it once: `noposplat-ros convert-checkpoint IN.ckpt "
                f"OUT.safetensors --allow-pickle` (or pass allow_pickle=True). Details: {exc}".replace("\n", " ")[:800],
            ) from exc
    except Exception as exc:  # torch raises RuntimeError/EOFError/ValueError... for bad bytes
        raise CheckpointError(path, f"not a readable PyTorch checkpoint (truncated or corrupt?): {type(exc).__name__}: {exc}"[:800]) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=is_zip)
    except Exception as exc:
        raise CheckpointError(path, f"unpickling failed: {type(exc).__name__}: {exc}"[:800]) from exc


def load_state_dict_file(path: str | pathlib.Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors: ``.safetensors`` or a (Lightning) ``.ckpt``/``.pt``.

    Returns a flat key -> tensor dict with the Lightning ``encoder.`` prefix stripped and the aliased
    DPT keys completed (``scratch.layerK_rn`` <-> ``scratch.layer_rn.(K-1)``). Raises CheckpointError.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    with path.open("rb") as f:
        head = f.read(16)
    if _is_safetensors(head):
        state = _read_safetensors(path)
    else:
        obj = _read_torch(path, head, allow_pickle)
        if isinstance(obj, dict) and "state_dict" in obj:
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not obj:
            raise CheckpointError(path, "no state_dict (a dict of tensors) in the file")
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(path, f"non-tensor entries in the state_dict: {bad[:10]}")
        state = dict(obj)
    state = {(k[len(LIGHTNING_PREFIX):] if k.startswith(LIGHTNING_PREFIX) else k): v for k, v in state.items()}
    return complete_aliases(state, path)


def complete_aliases(state: dict[str, torch.Tensor], path: str | pathlib.Path = "<memory>") -> dict[str, torch.Tensor]:
    """Fill in whichever alias of each DPT scratch conv is absent; both present must be equal."""
    groups: dict[tuple[str, int], list[str]] = {}
    for key in state:
        m = _ALIAS_RE.match(key)
        if m:
            idx = int(m["k"]) - 1 if m["k"] else int(m["i"])
            groups.setdefault((m["head"], idx), []).append(key)
    out = dict(state)
    for (head, idx), keys in groups.items():
        names = (f"{head}.layer{idx + 1}_rn.weight", f"{head}.layer_rn.{idx}.weight")
        if len(keys) == 2:
            a, b = state[names[0]], state[names[1]]
            if a.shape != b.shape or not torch.equal(a, b):
                raise CheckpointError(path, f"aliased keys {names[0]} and {names[1]} hold different values")
        else:
            present = keys[0]
            for name in names:
                out.setdefault(name, state[present])
    return out


def deduplicate_aliases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``scratch.layer_rn.i`` alias keys (safetensors stores no shared tensors)."""
    out = {}
    for key, value in state.items():
        m = _ALIAS_RE.match(key)
        if m and m["i"] is not None and f"{m['head']}.layer{int(m['i']) + 1}_rn.weight" in state:
            continue
        out[key] = value
    return out


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: str | pathlib.Path) -> None:
    """Raise CheckpointError listing missing / unexpected keys and shape mismatches."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        (k, tuple(state[k].shape), expected[k]) for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            path, "does not match the model configuration", missing=missing, unexpected=unexpected, shape_mismatches=mismatched
        )


def load_checkpoint_into(model: nn.Module, path: str | pathlib.Path, *, allow_pickle: bool = False) -> nn.Module:
    """Strictly load a checkpoint file into ``model`` (built on any device, ``meta`` included).

    A model on the meta device takes the file's tensors as its parameters (no second copy); call
    ``.to(device)`` afterwards. Non-persistent buffers are rebuilt. Returns the model.
    """
    state = load_state_dict_file(path, allow_pickle=allow_pickle)
    check_state_dict(model, state, path)
    state = {k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v) for k, v in state.items()}
    on_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(state, strict=True, assign=on_meta)
    if hasattr(model, "rebuild_buffers"):
        model.rebuild_buffers()
    return model
