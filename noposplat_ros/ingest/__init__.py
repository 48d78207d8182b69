"""Ingest: camera messages -> ``types.Frame`` (decode, camera model and undistortion, input rules)."""
