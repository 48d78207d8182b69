"""File writers and readers for reconstructions: INRIA-layout PLY, safetensors Gaussians, pose JSON."""
from noposplat_ros.io.gaussians_file import load_gaussians, save_gaussians, write_pose_json
from noposplat_ros.io.ply import read_ply, write_ply

__all__ = ["load_gaussians", "read_ply", "save_gaussians", "write_ply", "write_pose_json"]
