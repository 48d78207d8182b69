"""The node's parameters: one table with defaults, descriptions, ranges and choices.

The node declares exactly these (plus the ``keyframe.*`` group generated from
``keyframes.KeyframeConfig``); tests compare the YAML and launch files against this table, and
``docs/readme_node.md`` documents it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from noposplat_ros.keyframes.selector import KeyframeConfig


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None  # inclusive bounds for int/float
    choices: tuple[str, ...] | None = None  # allowed string values
    read_only: bool = False  # needs a restart (or a cleanup/configure cycle)

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if isinstance(self.default, bool):
            d.type = ParameterType.PARAMETER_BOOL
        elif isinstance(self.default, int):
            d.type = ParameterType.PARAMETER_INTEGER
            if self.range:
                d.integer_range = [IntegerRange(from_value=int(self.range[0]), to_value=int(self.range[1]), step=0)]
        elif isinstance(self.default, float):
            d.type = ParameterType.PARAMETER_DOUBLE
            if self.range:
                d.floating_point_range = [FloatingPointRange(from_value=float(self.range[0]),
                                                             to_value=float(self.range[1]), step=0.0)]
        elif isinstance(self.default, str):
            d.type = ParameterType.PARAMETER_STRING
            if self.choices:
                d.additional_constraints = "one of: " + ", ".join(repr(c) for c in self.choices)
        return d

    def check(self, value: Any) -> str | None:
        """None if ``value`` is acceptable, else the reason."""
        if isinstance(self.default, bool):
            return None if isinstance(value, bool) else f"{self.name} must be a bool"
        if isinstance(self.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(self.default):
            return f"{self.name} must be of type {type(self.default).__name__}, got {type(value).__name__}"
        if self.range and isinstance(value, (int, float)):
            if not (math.isfinite(value) and self.range[0] <= value <= self.range[1]):
                return f"{self.name}={value} outside [{self.range[0]}, {self.range[1]}]"
        if self.choices and value not in self.choices:
            return f"{self.name}={value!r} is not one of {self.choices}"
        return None


NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    # input
    ParamSpec("image_transport", "raw", "Subscribe to `image` (raw) or `image/compressed` (JPEG/PNG).",
              choices=("raw", "compressed"), read_only=True),
    ParamSpec("input_qos", "sensor_data",
              "QoS of the image and camera_info subscriptions: sensor_data (best effort, depth 5) or reliable.",
              choices=("sensor_data", "reliable"), read_only=True),
    ParamSpec("camera_frame", "", "Optical frame of the camera; empty = the image header's frame_id."),
    ParamSpec("camera_info_timeout_s", 5.0,
              "Warn (and count a fault) when images arrive without a valid camera_info for this long.",
              range=(0.1, 3600.0)),
    # predictor
    ParamSpec("predictor", "auto", "Backend: geometry (training-free), noposplat (needs checkpoint), or auto "
              "(noposplat when a checkpoint is set, else geometry).", choices=("auto", "geometry", "noposplat"),
              read_only=True),
    ParamSpec("checkpoint", "", "NoPoSplat checkpoint: official .ckpt or converted .safetensors (`noposplat-ros convert-checkpoint`).", read_only=True),
    ParamSpec("model_config", "", "NoPoSplat model config JSON (empty = released config matching the checkpoint).",
              read_only=True),
    ParamSpec("allow_pickle", False, "Let an official .ckpt that needs full unpickling load (only files you trust).",
              read_only=True),
    ParamSpec("device", "auto", "Torch device for the predictor: auto, cpu, cuda, cuda:N.", read_only=True),
    ParamSpec("precision", "auto", "Network precision: auto (bf16/fp16 on GPU, int8 Linear layers on CPU), fp32, bf16, fp16, int8 (CPU).",
              choices=("auto", "fp32", "bf16", "fp16", "int8"), read_only=True),
    ParamSpec("refine", "auto", "Photometric pose refinement of the noposplat backend: auto (on CUDA only), enabled, disabled.",
              choices=("auto", "enabled", "disabled"), read_only=True),
    ParamSpec("metric_baseline_m", 0.0,
              "Known distance between the cameras of every pair in metres (stereo rig); 0 = unknown "
              "(chained scale).", range=(0.0, 100.0), read_only=True),
    ParamSpec("scale_odometry_topic", "",
              "nav_msgs/Odometry topic of the robot (wheel/IMU odometry) that makes each pair metric from the "
              "distance the camera moved between the keyframes; empty = off.", read_only=True),
    ParamSpec("scale_odometry_max_gap_s", 0.5,
              "Largest gap between two odometry samples that bracket a keyframe stamp (else no metric scale).",
              range=(0.001, 10.0)),
    ParamSpec("scale_odometry_min_m", 0.02,
              "Camera motion below this (odometry) is too small to set the scale: the pair stays chained.",
              range=(0.0, 100.0)),
    # splats
    ParamSpec("include_sh", False, "Add the higher-order SH coefficients to the splat cloud (schema v1 sh_* fields)."),
    ParamSpec("min_opacity", 0.0, "Drop splats below this opacity from the published cloud.", range=(0.0, 0.99)),
    # scene map (mapping.scene_map.MapConfig)
    ParamSpec("map_enabled", True, "Fuse every non-LOST pair into the scene map (~/map, ~/save_map).", read_only=True),
    ParamSpec("map_max_gaussians", 1_000_000, "Hard cap on the map's Gaussians (least confident / oldest evicted).",
              range=(1000, 50_000_000), read_only=True),
    ParamSpec("map_radius_m", 0.0, "Keep only map Gaussians within this distance of the newest keyframe "
              "(trajectory units: metres when metric); 0 = no radius.", range=(0.0, 10000.0), read_only=True),
    ParamSpec("map_publish_period_s", 1.0, "~/map is re-published at most this often, and only when it changed.",
              range=(0.05, 3600.0)),
    ParamSpec("map_depth_tolerance", 0.05, "Relative depth gap under which a new Gaussian merges with the map's.",
              range=(0.005, 0.5), read_only=True),
    ParamSpec("map_min_opacity", 0.1, "Gaussians below this opacity are not put into the map.", range=(0.0, 0.99),
              read_only=True),
    ParamSpec("map_device", "cpu", "Torch device of the map storage and fusion: cpu, cuda, cuda:N.", read_only=True),
    # frames / tf
    ParamSpec("odom_frame", "odom", "Parent frame of the published odometry and tf edge."),
    ParamSpec("base_frame", "", "Child frame of odometry/tf; empty = the camera's optical frame. Otherwise the "
              "static base_frame <- camera transform is read from /tf_static."),
    ParamSpec("publish_tf", True, "Publish odom_frame -> base_frame on /tf (turn off when an EKF owns it)."),
    ParamSpec("publish_preview", False, "Render a view of the splats from keyframe 1 on ~/preview (costly on CPU)."),
    # node
    ParamSpec("save_dir", "", "Directory for ~/save_ply; empty = $ROS_HOME/noposplat (~/.ros/noposplat)."),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics.", range=(0.1, 60.0)),
    ParamSpec("heap_trim_period_s", 1.0, "Return the C heap's free pages to the OS at most this often, after a pair "
              "(glibc malloc_trim; keeps RSS flat on long runs); 0 = never.", range=(0.0, 3600.0)),
    ParamSpec("auto_activate", True, "Configure and activate on start (no lifecycle manager needed).",
              read_only=True),
)

KEYFRAME_PREFIX = "keyframe."


def keyframe_parameters() -> tuple[ParamSpec, ...]:
    """``keyframe.<field>`` parameters from KeyframeConfig (defaults, ranges, descriptions)."""
    cfg = KeyframeConfig()
    ranges, docs = KeyframeConfig.ranges(), KeyframeConfig.descriptions()
    out = []
    for f in dataclasses.fields(KeyframeConfig):
        value = getattr(cfg, f.name)
        lo, hi = ranges[f.name]
        out.append(ParamSpec(KEYFRAME_PREFIX + f.name, value, docs.get(f.name, f.name), range=(lo, hi)))
    return tuple(out)


def all_parameters() -> tuple[ParamSpec, ...]:
    return NODE_PARAMETERS + keyframe_parameters()


def parameter_names() -> set[str]:
    return {p.name for p in all_parameters()}
