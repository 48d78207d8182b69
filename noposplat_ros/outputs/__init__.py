"""Outputs: message-agnostic records (PointCloud2 layout, SplatPair, odometry, tf) of a pair's result."""
