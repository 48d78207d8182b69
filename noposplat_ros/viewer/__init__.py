"""Viewer: Gaussians, poses and status -> a live splat scene in a web browser (viser); no rclpy."""
