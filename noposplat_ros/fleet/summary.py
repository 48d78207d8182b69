"""Per-bag outcomes, the fleet ``summary.json`` and the progress line of process-bags (no Ray)."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Iterable

DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"  # --resume: complete output from an earlier run
CANCELLED = "cancelled"  # Ctrl-C before the bag finished


@dataclasses.dataclass
class BagOutcome:
    """What happened to one bag. ``map_splats`` is None when process-bag wrote no map."""

    name: str
    input: str
    status: str
    frames: int = 0
    pairs: int = 0
    map_splats: int | None = None
    seconds: float = 0.0
    error: str | None = None
    worker: str | None = None  # host:pid of the process that ran it
    predictor_loads: int = 0  # predictor (checkpoint) loads of that worker so far

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BagOutcome":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def ply_vertex_count(path: pathlib.Path) -> int | None:
    """Vertex count from a PLY header (the file is not read further); None when absent or not PLY."""
    try:
        with open(path, "rb") as f:
            if f.readline().strip() != b"ply":
                return None
            for _ in range(256):  # a 3DGS header has ~62 lines
                line = f.readline()
                if not line or line.strip() == b"end_header":
                    return None
                parts = line.split()
                if parts[:2] == [b"element", b"vertex"] and len(parts) == 3:
                    return int(parts[2])
    except (OSError, ValueError):
        return None
    return None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (errors go into JSON and a progress log)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_summary(outcomes: Iterable[BagOutcome], wall_s: float, interrupted: bool) -> dict[str, Any]:
    """The fleet summary: totals and one entry per bag (in the order given)."""
    bags = [o.as_dict() for o in outcomes]
    count = {s: sum(b["status"] == s for b in bags) for s in (DONE, FAILED, SKIPPED, CANCELLED)}
    frames = sum(b["frames"] for b in bags if b["status"] == DONE)
    return {
        "bags": bags,
        "totals": {**count, "bags": len(bags), "frames": frames, "pairs": sum(b["pairs"] for b in bags if b["status"] == DONE),
                   "seconds": round(wall_s, 3), "frames_per_s": round(frames / wall_s, 3) if wall_s > 0 else 0.0},
        "interrupted": interrupted,
    }


def write_summary(path: pathlib.Path, summary: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file; rewritten after every bag)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, path)


class FleetProgress:
    """``process-bags: 3/8 bags done, 2 running, 1 failed, 2 queued | 410 frames, 12.3 frames/s | ETA 00:01:05``.

    ETA: the mean wall time per finished bag so far times the bags left (already in parallel)."""

    def __init__(self, total_bags: int, skipped: int = 0) -> None:
        self.total, self.skipped = int(total_bags), int(skipped)
        self.t_start = time.monotonic()

    def line(self, done: int, running: int, failed: int, frames: int, now_s: float | None = None) -> str:
        elapsed = max((time.monotonic() if now_s is None else now_s) - self.t_start, 1e-9)
        finished = done + failed
        left = self.total - self.skipped - finished
        if finished and left > 0:
            eta = time.strftime("%H:%M:%S", time.gmtime(elapsed / finished * left))
        elif left <= 0:
            eta = "00:00:00"
        else:
            eta = "--:--:--"
        queued = max(left - running, 0)
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (f"process-bags: {done + self.skipped}/{self.total} bags done{skipped}, {running} running, {failed} failed, "
                f"{queued} queued | {frames} frames, {frames / elapsed:.1f} frames/s | ETA {eta}")
