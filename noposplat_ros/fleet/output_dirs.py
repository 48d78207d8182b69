"""Where process-bags writes each bag's output, and how it gets there without ever leaving
half-done output in place of a complete one. Plain filesystem code (no Ray).

    DIR/<name>/                    a bag's complete output: process-bag's layout + DONE_MARKER (written last)
    DIR/.<name>.partial-<run_id>/  being written; renamed to DIR/<name> once complete
    DIR/.<name>.old-<run_id>/      the previous output during an --overwrite swap (removed right after)
    DIR/summary.json               the fleet summary

A rename within one directory is atomic on POSIX file systems, so DIR/<name> is either absent,
the previous complete output, or the new complete output. One process-bags run per DIR at a time.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from collections import Counter
from typing import Any, Sequence

DONE_MARKER = "fleet_done.json"
FLEET_SUMMARY = "summary.json"
_PARTIAL = ".partial-"
_OLD = ".old-"

# State of a bag's output directory before a run.
ABSENT = "absent"  # nothing there
COMPLETE = "complete"  # finished output of this bag (marker names this input)
OTHER = "other"  # a directory without our marker, or the output of another input


@dataclasses.dataclass(frozen=True)
class BagJob:
    """One bag of a run: where it is read from and where its output goes."""

    name: str  # output directory name under DIR
    input_path: pathlib.Path  # absolute
    final_dir: pathlib.Path  # DIR/<name>
    temp_dir: pathlib.Path  # DIR/.<name>.partial-<run_id>


def output_names(bags: Sequence[pathlib.Path]) -> list[str]:
    """One unique output name per bag: its directory name, or ``<parent>_<name>`` for bags whose
    names clash (two robots recording ``rosbag2_2026_11_30``). Raises ValueError when that still clashes."""
    paths = [pathlib.Path(os.path.abspath(b)) for b in bags]
    seen = Counter(paths)
    twice = [str(p) for p, n in seen.items() if n > 1]
    if twice:
        raise ValueError(f"bag given more than once: {', '.join(twice)}")
    base = Counter(p.name for p in paths)
    names = [f"{p.parent.name}_{p.name}" if base[p.name] > 1 else p.name for p in paths]
    clash = [n for n, c in Counter(names).items() if c > 1]
    if clash:
        raise ValueError(f"bags share the output name {clash[0]!r} even with their parent directory; rename one")
    for n, p in zip(names, paths):
        if not n or n.startswith(".") or n == FLEET_SUMMARY:
            raise ValueError(f"bag {p} gives the output name {n!r}, which is reserved (hidden names, {FLEET_SUMMARY})")
    return names


def plan_jobs(bags: Sequence[str | os.PathLike], out_dir: pathlib.Path, run_id: str) -> list[BagJob]:
    """A job per bag, in the given order. Bags are not opened here (a missing or corrupt bag fails
    on its own when processed, without stopping the others)."""
    if not run_id or not run_id.isalnum():
        raise ValueError(f"run_id must be alphanumeric, got {run_id!r}")
    out_dir = pathlib.Path(os.path.abspath(out_dir))
    paths = [pathlib.Path(os.path.abspath(b)) for b in bags]
    return [
        BagJob(name, p, out_dir / name, out_dir / f".{name}{_PARTIAL}{run_id}")
        for name, p in zip(output_names(paths), paths)
    ]


def read_marker(output_dir: pathlib.Path) -> dict[str, Any] | None:
    """The completion marker of an output directory, or None when absent or unreadable."""
    try:
        marker = json.loads((output_dir / DONE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def output_state(job: BagJob) -> str:
    """ABSENT, COMPLETE (this bag's finished output) or OTHER."""
    if not (job.final_dir.exists() or job.final_dir.is_symlink()):
        return ABSENT
    marker = read_marker(job.final_dir)
    if marker is not None and marker.get("input") == str(job.input_path):
        return COMPLETE
    return OTHER


def _write_json_atomic(path: pathlib.Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def commit(job: BagJob, marker: dict[str, Any], replace: bool) -> None:
    """Finish a bag: write the marker into its temp dir (last), then rename it to DIR/<name>.

    replace: swap out an existing DIR/<name> (kept until the new one is in place). Without it an
    existing DIR/<name> raises FileExistsError and the temp dir stays for the caller to discard."""
    _write_json_atomic(job.temp_dir / DONE_MARKER, {**marker, "input": str(job.input_path)})
    if job.final_dir.exists() or job.final_dir.is_symlink():
        if not replace:
            raise FileExistsError(f"output {job.final_dir} exists (use --overwrite to replace it)")
        old = job.temp_dir.with_name(job.temp_dir.name.replace(_PARTIAL, _OLD))
        os.rename(job.final_dir, old)
        os.rename(job.temp_dir, job.final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(job.temp_dir, job.final_dir)


def discard(job: BagJob) -> None:
    """Remove a job's temp dir (whatever a failed or cancelled run left)."""
    shutil.rmtree(job.temp_dir, ignore_errors=True)


def recover(out_dir: pathlib.Path) -> list[str]:
    """Clean up after a run that died (SIGKILL, power loss): remove partial outputs, and put back a
    previous output an interrupted --overwrite swap left aside (or remove it when the new one made
    it). Returns one line per action."""
    actions: list[str] = []
    if not out_dir.is_dir():
        return actions
    for p in sorted(out_dir.iterdir()):
        if not (p.name.startswith(".") and p.is_dir()):
            continue
        if _PARTIAL in p.name:
            shutil.rmtree(p, ignore_errors=True)
            actions.append(f"removed partial output {p.name}")
        elif _OLD in p.name:
            final = out_dir / p.name[1:].rsplit(_OLD, 1)[0]
            if final.exists():
                shutil.rmtree(p, ignore_errors=True)
                actions.append(f"removed replaced output {p.name}")
            else:
                os.rename(p, final)
                actions.append(f"restored {final.name} from an interrupted --overwrite")
    return actions


def leftovers(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Partial or set-aside directories in DIR (none after a run, even an interrupted one)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if p.name.startswith(".") and (_PARTIAL in p.name or _OLD in p.name))
