"""Model configuration of the NoPoSplat network: every size is a value here.

The official code hard-codes several sizes that equal the released ViT-L dims (intrinsics Linear
output, DPT layer_dims/feature_dim/last_dim, image-merger channels); here they are configuration so
that the reduced conformance model and the released model share one implementation.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

MODEL_DIR = pathlib.Path(__file__).resolve().parents[3] / "model"


@dataclasses.dataclass(frozen=True)
class NoPoSplatConfig:
    """Sizes of the network. Defaults are the released 256x256 model (re10k/acid/mixRe10kDl3dv)."""

    patch_size: int = 16
    enc_dim: int = 1024
    enc_depth: int = 24
    enc_heads: int = 16
    dec_dim: int = 768
    dec_depth: int = 12
    dec_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    rope_base: float = 100.0
    # DPT
    hooks: tuple[int, int, int, int] | None = None  # None -> [0, 2L//4, 3L//4, L]
    layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    feature_dim: int = 256
    last_dim: int = 128
    # intrinsics token Linear(9 -> intrinsics_dim); must equal enc_dim to be appended as a token
    intrinsics_dim: int | None = None  # None -> enc_dim
    merger_dim: int | None = None  # Gaussian-head image-merger conv output; None -> feature_dim
    sh_degree: int = 4
    # Gaussian adapter constants (official values)
    scale_multiplier: float = 0.001
    scale_max: float = 0.3
    # network input resolution (H, W), multiples of patch_size
    image_hw: tuple[int, int] = (256, 256)
    name: str = "noposplat_256"

    def __post_init__(self) -> None:
        # store resolved values so that equal models compare equal
        object.__setattr__(self, "hooks", self.resolved_hooks)
        object.__setattr__(self, "intrinsics_dim", self.resolved_intrinsics_dim)
        object.__setattr__(self, "merger_dim", self.resolved_merger_dim)
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        object.__setattr__(self, "image_hw", tuple(int(v) for v in self.image_hw))
        object.__setattr__(self, "layer_dims", tuple(int(v) for v in self.layer_dims))
        if self.enc_dim % self.enc_heads or self.dec_dim % self.dec_heads:
            raise ValueError("dims must be divisible by the number of heads")
        for dim, heads in ((self.enc_dim, self.enc_heads), (self.dec_dim, self.dec_heads)):
            if (dim // heads) % 4:
                raise ValueError("2-D RoPE needs a head dim divisible by 4")
        if self.resolved_intrinsics_dim != self.enc_dim:
            raise ValueError("intrinsics_dim must equal enc_dim (the token is appended to the sequence)")
        if self.resolved_merger_dim != self.feature_dim:
            raise ValueError("merger_dim must equal feature_dim (it is added to the DPT features)")
        h, w = self.image_hw
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image_hw {self.image_hw} must be multiples of patch_size {self.patch_size}")
        hooks = self.resolved_hooks
        if len(hooks) != 4 or hooks[0] != 0 or max(hooks) > self.dec_depth or min(hooks[1:]) < 1:
            raise ValueError(f"bad DPT hooks {hooks} for dec_depth {self.dec_depth}")

    @property
    def resolved_hooks(self) -> tuple[int, ...]:
        if self.hooks is not None:
            return tuple(int(h) for h in self.hooks)
        depth = self.dec_depth
        return (0, (2 * depth) // 4, (3 * depth) // 4, depth)

    @property
    def resolved_intrinsics_dim(self) -> int:
        return self.enc_dim if self.intrinsics_dim is None else int(self.intrinsics_dim)

    @property
    def resolved_merger_dim(self) -> int:
        return self.feature_dim if self.merger_dim is None else int(self.merger_dim)

    @property
    def d_sh(self) -> int:
        return (self.sh_degree + 1) ** 2

    @property
    def gaussian_channels(self) -> int:
        """Raw Gaussian-head width: opacity 1 + scale 3 + rotation 4 + 3 * d_sh."""
        return 1 + 3 + 4 + 3 * self.d_sh

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_hw"] = list(self.image_hw)
        d["layer_dims"] = list(self.layer_dims)
        d["hooks"] = None if self.hooks is None else list(self.hooks)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NoPoSplatConfig":
        data = dict(data)
        if "reduced_config" in data:  # the conformance JSON (shared/conformance/noposplat_tiny_config.json)
            data = _from_conformance_json(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"comment", "_comment"})
        if unknown:
            raise ValueError(f"unknown model-config keys: {unknown}")
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("image_hw", "layer_dims", "hooks"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | pathlib.Path) -> "NoPoSplatConfig":
        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read model config {path}: {exc}") from exc
        return cls.from_dict(data)

    def to_json(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def released(cls, resolution: int = 256) -> "NoPoSplatConfig":
        """The released ViT-L configuration at 256 (re10k, acid, mixRe10kDl3dv) or 512 px."""
        if resolution not in (256, 512):
            raise ValueError("released models exist at 256 and 512 px")
        return cls(image_hw=(resolution, resolution), name=f"noposplat_{resolution}")

    @classmethod
    def tiny(cls) -> "NoPoSplatConfig":
        """The reduced conformance configuration (shared/conformance)."""
        return cls(
            enc_dim=64, enc_depth=3, enc_heads=4, dec_dim=48, dec_depth=6, dec_heads=3,
            layer_dims=(8, 16, 24, 32), feature_dim=32, last_dim=16, image_hw=(32, 48),
            name="noposplat_tiny",
        )


def _from_conformance_json(data: dict[str, Any]) -> dict[str, Any]:
    rc = data["reduced_config"]
    inp = data.get("input", {})
    return {
        "patch_size": rc["patch_size"],
        "enc_dim": rc["enc_embed_dim"],
        "enc_depth": rc["enc_depth"],
        "enc_heads": rc["enc_num_heads"],
        "dec_dim": rc["dec_embed_dim"],
        "dec_depth": rc["dec_depth"],
        "dec_heads": rc["dec_num_heads"],
        "mlp_ratio": rc["mlp_ratio"],
        "norm_eps": rc["layernorm_eps"],
        "hooks": rc["dpt"]["hooks"],
        "layer_dims": rc["dpt"]["layer_dims"],
        "feature_dim": rc["dpt"]["feature_dim"],
        "last_dim": rc["dpt"]["last_dim"],
        "intrinsics_dim": rc["intrinsics_embedding"]["linear_out"],
        "merger_dim": rc["gs_head"]["input_merger_out"],
        "sh_degree": rc["gaussian_adapter"]["sh_degree"],
        "image_hw": [inp.get("H", 32), inp.get("W", 48)],
        "name": "noposplat_tiny",
    }
