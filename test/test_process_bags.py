"""`noposplat-ros process-bags`: many bags on a (local, 2-CPU) Ray cluster give exactly what
process-bag gives on each bag alone; a corrupt bag or a missing topic fails alone; --resume skips
finished bags; Ctrl-C leaves no partial output. Plus the Ray-free fleet core (output dirs, summary,
progress) tested directly."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from noposplat_ros.cli import main as cli_main
from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence
from noposplat_ros.fleet import output_dirs
from noposplat_ros.fleet.summary import FleetProgress, BagOutcome, build_summary, ply_vertex_count
from noposplat_ros.io import bag_io

# ------------------------------------------------------------------------------ fleet core, no Ray


def test_output_names_are_unique_and_clear(tmp_path):
    a, b = tmp_path / "r1" / "day", tmp_path / "r2" / "day"
    assert output_dirs.output_names([a, b, tmp_path / "x"]) == ["r1_day", "r2_day", "x"]
    with pytest.raises(ValueError, match="more than once"):
        output_dirs.output_names([a, a])
    with pytest.raises(ValueError, match="reserved"):
        output_dirs.output_names([tmp_path / "summary.json"])
    with pytest.raises(ValueError, match="reserved"):
        output_dirs.output_names([tmp_path / ".hidden"])


def _job(tmp_path, name="bag", run_id="r1"):
    (tmp_path / "in" / name).mkdir(parents=True, exist_ok=True)
    return output_dirs.plan_jobs([tmp_path / "in" / name], tmp_path / "out", run_id)[0]


def _fill(job, text):
    job.temp_dir.mkdir(parents=True)
    (job.temp_dir / "trajectory.tum").write_text(text)


def test_commit_is_a_rename_with_the_marker_written_first(tmp_path):
    job = _job(tmp_path)
    assert job.final_dir == tmp_path / "out" / "bag" and job.temp_dir.name == ".bag.partial-r1"
    assert output_dirs.output_state(job) == output_dirs.ABSENT
    _fill(job, "one")
    output_dirs.commit(job, {"frames": 3}, replace=False)
    assert not job.temp_dir.exists() and (job.final_dir / "trajectory.tum").read_text() == "one"
    assert output_dirs.read_marker(job.final_dir) == {"frames": 3, "input": str(job.input_path)}
    assert output_dirs.output_state(job) == output_dirs.COMPLETE
    # a second run may not replace it unless asked; then the swap leaves nothing aside
    job2 = _job(tmp_path, run_id="r2")
    _fill(job2, "two")
    with pytest.raises(FileExistsError, match="--overwrite"):
        output_dirs.commit(job2, {}, replace=False)
    output_dirs.commit(job2, {}, replace=True)
    assert (job.final_dir / "trajectory.tum").read_text() == "two"
    assert output_dirs.leftovers(tmp_path / "out") == []
    # a directory without the marker, or the output of another bag, is not this bag's output
    (job.final_dir / output_dirs.DONE_MARKER).unlink()
    assert output_dirs.output_state(job) == output_dirs.OTHER


def test_recover_removes_partials_and_restores_a_cut_swap(tmp_path):
    job = _job(tmp_path)
    _fill(job, "half")  # a run killed while writing
    out = tmp_path / "out"
    (out / ".other.old-r0").mkdir()  # an --overwrite swap killed between its two renames
    (out / ".other.old-r0" / "trajectory.tum").write_text("previous")
    (out / "done").mkdir()
    (out / ".done.old-r0").mkdir()  # a swap killed after both renames
    actions = output_dirs.recover(out)
    assert len(actions) == 3 and output_dirs.leftovers(out) == []
    assert (out / "other" / "trajectory.tum").read_text() == "previous"
    assert sorted(p.name for p in out.iterdir()) == ["done", "other"]


def test_summary_and_progress_line(tmp_path):
    outcomes = [BagOutcome("a", "/a", "done", frames=10, pairs=2, seconds=4.0),
                BagOutcome("b", "/b", "failed", error="BagError: cannot read bag /b"),
                BagOutcome("c", "/c", "skipped", frames=7, pairs=1)]
    s = build_summary(outcomes, wall_s=5.0, interrupted=False)
    assert s["totals"] == {"done": 1, "failed": 1, "skipped": 1, "cancelled": 0, "bags": 3, "frames": 10, "pairs": 2,
                           "seconds": 5.0, "frames_per_s": 2.0}
    assert [b["status"] for b in s["bags"]] == ["done", "failed", "skipped"] and s["bags"][1]["error"].startswith("BagError")
    p = FleetProgress(total_bags=6, skipped=1)
    line = p.line(done=2, running=1, failed=1, frames=40, now_s=p.t_start + 20.0)
    # 3 finished in 20 s, 2 left: ETA 2 * 20 / 3 s
    assert line == ("process-bags: 3/6 bags done, 1 skipped, 1 running, 1 failed, 1 queued | 40 frames, 2.0 frames/s"
                    " | ETA 00:00:13")
    ply = tmp_path / "m.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1234\nproperty float x\nend_header\n")
    assert ply_vertex_count(ply) == 1234 and ply_vertex_count(tmp_path / "none.ply") is None


# ------------------------------------------------------------------------------ on a local Ray

BAG_FRAMES = (10, 9, 11)  # three robots' short bags (320x240, a pair about every 4 frames)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """{name: path}: three good bags, a truncated one and one without camera_info."""
    d = tmp_path_factory.mktemp("bags")
    seq = MotorcycleSequence(scale=0.5, frames_per_view=4)
    out = {}
    for i, n in enumerate(BAG_FRAMES):
        frames = MotorcycleSequence(scale=0.5, frames_per_view=4, start_ns=1_700_000_000_000_000_000 + i * 10**9).frames(n)
        out[f"robot{i}"] = d / f"robot{i}"
        bag_io.frames_to_bag(out[f"robot{i}"], frames, storage="mcap" if i != 1 else "sqlite3")
    out["corrupt"] = d / "corrupt"
    bag_io.frames_to_bag(out["corrupt"], seq.frames(4))
    (data,) = out["corrupt"].glob("*.mcap")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    out["no_info"] = d / "no_info"
    bag_io.frames_to_bag(out["no_info"], seq.frames(3), camera_info_topic=None)
    return out


@pytest.fixture(scope="module")
def fleet_run(ray_local, bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet") / "out"
    rc = cli_main(["process-bags", *map(str, bags.values()), "--out", str(out), "--predictor", "geometry"])
    return rc, out


def _tree(d: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.parent.name != "bag"}


def test_same_outputs_as_process_bag_alone(fleet_run, bags, tmp_path):
    rc, out = fleet_run
    assert rc == 2  # two bags failed, the others are done
    summary = json.loads((out / "summary.json").read_text())
    status = {b["name"]: b for b in summary["bags"]}
    for name in ("robot0", "robot1", "robot2"):
        ref = tmp_path / name
        assert cli_main(["process-bag", str(bags[name]), str(ref), "--predictor", "geometry"]) == 0
        got, want = _tree(out / name), _tree(ref)
        assert got.pop(output_dirs.DONE_MARKER)
        ref_summary, got_summary = (json.loads(t.pop("summary.json")) for t in (want, got))
        assert sorted(got) == sorted(want) and any(k.startswith("ply/") for k in got)
        for k in want:  # trajectory.tum and every PLY, byte for byte
            assert got[k] == want[k], k
        for d in (ref_summary, got_summary):
            d.pop("seconds")
        assert got_summary == ref_summary
        assert sorted(p.name for p in (out / name / "bag").iterdir()) == sorted(p.name for p in (ref / "bag").iterdir())
        b = status[name]
        assert b["status"] == "done" and b["error"] is None and b["seconds"] > 0
        assert (b["frames"], b["pairs"]) == (ref_summary["frames"], ref_summary["pairs"]) and b["pairs"] >= 1
        assert b["map_splats"] == ply_vertex_count(ref / "map.ply")  # the scene map's size (map.ply compared above)
        assert "map.ply" not in want or b["map_splats"] > 0
    assert status["corrupt"]["status"] == "failed" and "cannot read bag" in status["corrupt"]["error"]
    assert status["no_info"]["status"] == "failed" and "no CameraInfo topic" in status["no_info"]["error"]
    assert not (out / "corrupt").exists() and not (out / "no_info").exists()
    assert output_dirs.leftovers(out) == []
    assert summary["totals"]["done"] == 3 and summary["totals"]["failed"] == 2 and not summary["interrupted"]
    # the predictor is loaded once per worker (2 workers for 5 bags), not once per bag
    loads: dict[str, int] = {}
    for b in summary["bags"]:
        if b["worker"]:
            loads[b["worker"]] = max(loads.get(b["worker"], 0), b["predictor_loads"])
    assert 1 <= len(loads) <= 2 and set(loads.values()) == {1}


def test_resume_skips_finished_bags(fleet_run, bags, capsys):
    rc, out = fleet_run
    markers = {n: (out / n / output_dirs.DONE_MARKER).stat().st_mtime_ns for n in ("robot0", "robot1", "robot2")}
    args = ["process-bags", *map(str, bags.values()), "--out", str(out), "--predictor", "geometry"]
    assert cli_main(args) == 1  # finished outputs are in the way without --resume / --overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli_main([*args, "--resume"]) == 2  # the two bad bags are retried and fail again
    summary = json.loads((out / "summary.json").read_text())
    assert [b["status"] for b in summary["bags"]] == ["skipped"] * 3 + ["failed"] * 2
    assert [b["frames"] for b in summary["bags"][:3]] == list(BAG_FRAMES)
    assert {n: (out / n / output_dirs.DONE_MARKER).stat().st_mtime_ns for n in markers} == markers  # untouched
    # --overwrite replaces a complete output by a swap: same content, new marker, nothing left aside
    before = _tree(out / "robot0")
    assert cli_main(["process-bags", str(bags["robot0"]), "--out", str(out), "--predictor", "geometry", "--overwrite"]) == 0
    after = _tree(out / "robot0")
    assert (out / "robot0" / output_dirs.DONE_MARKER).stat().st_mtime_ns != markers["robot0"]
    for k in before:
        if k not in (output_dirs.DONE_MARKER, "summary.json"):
            assert after[k] == before[k], k
    assert output_dirs.leftovers(out) == []


def test_bad_usage_is_one_line(tmp_path, bags, capsys):
    rc = cli_main(["process-bags", str(bags["robot0"]), "--out", str(tmp_path / "o"), "--keyframe", "no_such=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no_such" in err[0] and not (tmp_path / "o").exists()
    rc = cli_main(["process-bags", str(bags["robot0"]), str(bags["robot0"]), "--out", str(tmp_path / "o")])
    assert rc == 1 and "more than once" in capsys.readouterr().err


def test_ctrl_c_leaves_no_partial_output(ray_local, tmp_path):
    """SIGINT to a process-bags that joined this module's Ray (--ray-address): running bags are
    cancelled, their temp dirs removed, summary says interrupted; only complete outputs remain."""
    seq = MotorcycleSequence(scale=0.5, frames_per_view=4)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"long{i}")
        bag_io.frames_to_bag(paths[-1], seq.frames(60))
    out = tmp_path / "out"
    address = ray_local.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "noposplat-ros"), "process-bags", *map(str, paths), "--out", str(out),
         "--ray-address", address, "--predictor", "geometry", "--progress-interval-s", "0.5"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_DEDUP_LOGS": "0"},
    )
    deadline = time.monotonic() + 240  # generous: the workers import torch, slow on a loaded machine
    while time.monotonic() < deadline and not output_dirs.leftovers(out) and proc.poll() is None:
        time.sleep(0.2)
    if not output_dirs.leftovers(out):
        proc.kill()
        pytest.fail(f"no bag started (exit {proc.poll()}):\n{proc.communicate()[1][-3000:]}")
    time.sleep(1.0)  # well inside the bag (60 frames take far longer)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    time.sleep(1.0)  # the killed workers write nothing more
    assert output_dirs.leftovers(out) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["totals"]["cancelled"] >= 1
    for p in out.iterdir():  # whatever is there is complete
        assert p.name == "summary.json" or output_dirs.read_marker(p) is not None, p


def test_ray_is_imported_only_when_process_bags_runs():
    code = ("import sys; from noposplat_ros.cli import build_parser; build_parser(); "
            "import noposplat_ros.fleet.worker, noposplat_ros.fleet.output_dirs; print('ray' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "False", res.stderr


def _bag_worker_pids() -> list[int]:
    """Ray names its worker processes after the actor task they run (``ray::BagWorker.run``)."""
    pids = []
    for p in pathlib.Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "cmdline").read_bytes().startswith(b"ray::BagWorker.run"):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


def test_a_worker_crash_fails_only_its_bag(ray_local, bags, tmp_path):
    """The worker process dies (SIGKILL) in the middle of a bag: that bag fails with the reason,
    a new worker processes the next bags."""
    import threading

    victim = tmp_path / "victim"
    bag_io.frames_to_bag(victim, MotorcycleSequence(scale=0.5, frames_per_view=4).frames(60))
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_when_started() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if any(p.name.startswith(".victim.partial-") for p in output_dirs.leftovers(out)):
                for pid in _bag_worker_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.1)

    t = threading.Thread(target=kill_when_started, daemon=True)
    t.start()
    rc = cli_main(["process-bags", str(victim), str(bags["robot0"]), str(bags["robot1"]), "--out", str(out),
                   "--predictor", "geometry", "--workers", "1"])
    t.join()
    assert killed, "the worker was never seen running the bag"
    summary = json.loads((out / "summary.json").read_text())
    by_name = {b["name"]: b for b in summary["bags"]}
    assert rc == 2 and by_name["victim"]["status"] == "failed" and "worker died" in by_name["victim"]["error"]
    assert by_name["robot0"]["status"] == by_name["robot1"]["status"] == "done", summary
    assert not (out / "victim").exists() and output_dirs.leftovers(out) == []

