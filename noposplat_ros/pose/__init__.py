"""Pose and trajectory: two-view and PnP poses, SE(3) helpers, photometric refinement, keyframe trajectory."""
