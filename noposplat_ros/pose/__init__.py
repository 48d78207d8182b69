"""Relative pose of a keyframe pair: PnP on predicted centres, SE(3) helpers, photometric refinement."""
