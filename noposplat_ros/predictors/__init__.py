"""Predictor backends: a keyframe pair -> PairReconstruction (see ``types.PairReconstruction``).

- ``geometry``: training-free (SIFT + essential matrix + dense flow triangulation); the default.
- ``noposplat``: our NoPoSplat network; needs the user's checkpoint. Imported lazily, so the
  geometry backend works without the network code's heavier imports.
"""
from __future__ import annotations

import dataclasses
from typing import Any

BACKENDS = ("geometry", "noposplat")

# Options of the noposplat backend. A uniform caller may pass them for every backend: the geometry
# backend ignores them when unset (None), and always ignores device/precision (it runs on the CPU).
_NOPOSPLAT_ONLY = ("checkpoint", "model_config", "device", "precision", "refine", "pnp_method")
_GEOMETRY_IGNORES = ("device", "precision")


def make_predictor(backend: str, **options: Any) -> Any:
    """Build a predictor by name.

    backend: "geometry" or "noposplat" (case-insensitive).
    options:
      geometry: ``config=GeometryConfig(...)`` and/or GeometryConfig field names as keywords (they
        override ``config``'s fields). noposplat-only options set to None are ignored.
      noposplat: ``checkpoint`` (required), ``model_config``, ``device``, ``precision``, ``refine``,
        ``pnp_method`` ("poselib" default | "official"), ``allow_pickle``.
    Raises ValueError for an unknown backend, unknown options, or noposplat without a checkpoint.
    """
    name = str(backend).strip().lower()
    if name == "geometry":
        from noposplat_ros.predictors.geometry import GeometryConfig, GeometryPredictor

        opts = dict(options)
        for key in _NOPOSPLAT_ONLY:
            if key in opts and (opts[key] is None or key in _GEOMETRY_IGNORES):
                del opts[key]
        config = opts.pop("config", None) or GeometryConfig()
        if not isinstance(config, GeometryConfig):
            raise ValueError(f"geometry backend: config must be a GeometryConfig, got {type(config).__name__}")
        fields = {f.name for f in dataclasses.fields(GeometryConfig)}
        unknown = sorted(set(opts) - fields)
        if unknown:
            raise ValueError(
                f"geometry backend: unknown option(s) {unknown}"
                + (" (a checkpoint needs backend 'noposplat')" if "checkpoint" in unknown else "")
                + f"; valid: config, {sorted(fields)}"
            )
        return GeometryPredictor(dataclasses.replace(config, **opts))
    if name == "noposplat":
        if not options.get("checkpoint"):
            raise ValueError(
                "backend 'noposplat' needs a checkpoint (checkpoint=PATH to the official .ckpt or a "
                "converted .safetensors); use backend 'geometry' to run without weights"
            )
        from noposplat_ros.predictors.noposplat import NoPoSplatPredictor

        allowed = set(_NOPOSPLAT_ONLY) | {"allow_pickle"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"noposplat backend: unknown option(s) {unknown}; valid: {sorted(allowed)}")
        return NoPoSplatPredictor(**options)
    raise ValueError(f"unknown predictor backend {backend!r}; expected one of {BACKENDS}")
