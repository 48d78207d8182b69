"""The ROS 2 shell (the only package that imports rclpy): node, conversions, tf, diagnostics."""
