"""Mapping: per-keyframe Gaussians fused into one bounded scene map in the odom frame."""
