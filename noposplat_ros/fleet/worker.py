"""Process bags one after another in one process with one predictor (no Ray here).

The predictor (the checkpoint, for noposplat) is loaded on the first bag and kept: a Ray actor
wrapping a ``BagWorker`` loads it once per worker, not once per bag. Each bag runs exactly
process-bag's core into its temp dir, which is renamed into place only when complete.
"""
from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from noposplat_ros.fleet import output_dirs
from noposplat_ros.fleet.summary import DONE, BagOutcome, ply_vertex_count


class BagWorker:
    """options: process-bag's options (``vars(args)`` without input/output), the same for every bag."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = {k: v for k, v in options.items() if k not in ("input", "output", "overwrite")}
        self.predictor: Any = None
        self.predictor_loads = 0
        self.id = f"{socket.gethostname()}:{os.getpid()}"

    def _args(self, job: output_dirs.BagJob) -> argparse.Namespace:
        return argparse.Namespace(**self.options, input=str(job.input_path), output=str(job.temp_dir), overwrite=False)

    def run(self, job: output_dirs.BagJob, replace: bool) -> dict[str, Any]:
        """Process one bag into ``job.temp_dir`` and rename it to ``job.final_dir``; the outcome as a dict.

        Raises what process-bag raises (BagError, ValueError, ...): the caller marks the bag failed.
        Never leaves the temp dir behind."""
        from noposplat_ros.commands.process_bag import MAP_FILE, load_predictor, process_bag

        args = self._args(job)
        try:
            if self.predictor is None:
                self.predictor = load_predictor(args)
                self.predictor_loads += 1
            output_dirs.discard(job)  # start clean, whatever an earlier attempt left
            stats = process_bag(args, predictor=self.predictor)
            outcome = BagOutcome(
                name=job.name, input=str(job.input_path), status=DONE, frames=stats.frames, pairs=stats.pairs,
                map_splats=ply_vertex_count(job.temp_dir / MAP_FILE), seconds=stats.seconds, worker=self.id,
                predictor_loads=self.predictor_loads)
            output_dirs.commit(job, outcome.as_dict(), replace)
        except BaseException:
            output_dirs.discard(job)
            raise
        return outcome.as_dict()
