"""noposplat_ros: 3D Gaussian splats and relative camera poses from keyframe pairs.

The functional core (everything outside ``noposplat_ros.ros``) imports no rclpy.
"""

__version__ = "0.1.0"
