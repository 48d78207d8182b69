"""Sub-commands of the `noposplat-ros` CLI (see noposplat_ros.cli)."""
