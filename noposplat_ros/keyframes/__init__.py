"""Keyframes: pick sparse keyframe pairs from a stream of ``Frame`` objects."""
