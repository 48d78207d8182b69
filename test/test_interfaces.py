"""Our interface packages as built by tools/setup_env.sh (rosidl, into the venv).

- tf2_msgs/TFMessage is rebuilt here from its .msg because tf2_msgs is not on PyPI; to interoperate
  with real ROS 2 nodes its RIHS01 type hash must equal the one a real Kilted install reports.
- noposplat_msgs/SplatPair's constants must mean what the core's enums mean.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys

from noposplat_ros.outputs.records import SCALE_KIND_CODES
from noposplat_ros.types import PoseStatus, ScaleKind

# `ros2 topic info -v /tf` of a real Kilted amcl node (reference value in shared/docs/ros2_pip.md §3a).
REAL_TFMESSAGE_RIHS01 = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"


def _type_hash(package: str, name: str) -> str:
    """RIHS01 hash from rosidl's generated type description in the ament prefix that has it."""
    prefixes = [sys.prefix, *filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep))]
    for prefix in prefixes:
        desc = pathlib.Path(prefix) / "share" / package / "msg" / f"{name}.json"
        if desc.exists():
            return json.loads(desc.read_text())["type_hashes"][0]["hash_string"]
    raise AssertionError(f"no type description of {package}/{name} in {prefixes}")


def test_rebuilt_tfmessage_has_the_real_ros2_type_hash():
    assert _type_hash("tf2_msgs", "TFMessage") == REAL_TFMESSAGE_RIHS01


def test_splat_pair_constants_match_core_enums():
    from noposplat_msgs.msg import SplatPair

    assert SplatPair.STATUS_OK == PoseStatus.OK
    assert SplatPair.STATUS_DEGRADED == PoseStatus.DEGRADED
    assert SplatPair.STATUS_LOST == PoseStatus.LOST
    assert SCALE_KIND_CODES == {
        ScaleKind.UNIT_BASELINE: SplatPair.SCALE_UNIT_BASELINE,
        ScaleKind.CHAINED: SplatPair.SCALE_CHAINED,
        ScaleKind.METRIC: SplatPair.SCALE_METRIC,
    }
    fields = SplatPair.get_fields_and_field_types()
    for name in ("header", "stamp0", "stamp1", "splats", "schema_version", "t_cam0_from_cam1", "covariance",
                 "scale_kind", "status", "backend", "num_inliers", "residual_px"):
        assert name in fields
    assert fields["covariance"] == "double[36]"
