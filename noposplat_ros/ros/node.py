"""``noposplat_node``: the live ROS 2 shell around ``pipeline.Pipeline`` (lifecycle node).

Threads: the executor thread runs the subscriptions (decode, undistort, keyframe test: cheap), the
timers and the services; one worker thread runs the predictor on the latest keyframe pair (a newer
pair replaces a pending one, so no stale work queues up) and publishes the results.

Lifecycle: configure = read parameters and load the predictor (a checkpoint that fails to load
fails the transition, with the reason logged and on /diagnostics); activate = subscribe and start
the worker; deactivate = unsubscribe, stop the worker and free the predictor (GPU); cleanup = drop
everything. With ``auto_activate`` (default) the node configures and activates itself.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
import time
import traceback

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from noposplat_msgs.msg import SplatPair
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger

from noposplat_ros.heap import HeapTrimmer
from noposplat_ros.ingest.input_gate import InputGate, Rejected
from noposplat_ros.keyframes.selector import KeyframeConfig
from noposplat_ros.mapping.scene_map import MapConfig, rigid_transform
from noposplat_ros.outputs import pointcloud
from noposplat_ros.outputs.records import cloud_record
from noposplat_ros.outputs.records import OutputFrames, build_outputs
from noposplat_ros.pipeline import PairResult, Pipeline, PipelineConfig
from noposplat_ros.ros import conversions as conv
from noposplat_ros.ros.diagnostics import NodeHealth, health_to_diagnostics
from noposplat_ros.ros.odometry_buffer import OdometryBuffer
from noposplat_ros.ros.parameters import KEYFRAME_PREFIX, all_parameters
from noposplat_ros.ros.tf import StaticTfBuffer, TfPublisher
from noposplat_ros.types import Frame, KeyframePair, PoseStatus, format_stamp

NODE_NAME = "noposplat_node"
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LOG_THROTTLE_S = 5.0


class _Throttle:
    """Per-key log throttle: the first message of a kind always, then at most one per period."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}

    def ok(self, kind: str, message: str = "") -> bool:
        # one key per kind and reason (digits dropped), so a new reason is logged at once
        key = kind + "|" + "".join(c for c in message[:80] if not c.isdigit())
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self.period_s:
            self._last[key] = now
            return True
        return False


class NoPoSplatNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._specs = {p.name: p for p in all_parameters()}
        for spec in self._specs.values():
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.add_on_set_parameters_callback(self._validate_parameters)

        self.health = NodeHealth()
        self._throttle = _Throttle(LOG_THROTTLE_S)
        self.pipeline: Pipeline | None = None
        self._pipeline_cfg: PipelineConfig | None = None
        # input rules (shared with the bag reader): faults that keep a frame are logged, restarts reset
        self._gate = InputGate(on_fault=self._fault, on_reset=self._reset_pipeline,
                               on_restart_message=lambda m: self.get_logger().warning(m))
        self._camera_info_time = -1.0  # monotonic time of the last valid camera_info
        self._last_image_time = -1.0
        self._missing_warned_at = -1.0
        self._no_info_since = -1.0  # monotonic time of the first image that found no valid camera_info
        self._last_result: PairResult | None = None
        self._subs: list = []
        self._pubs: dict[str, object] = {}
        self._tf_pub: TfPublisher | None = None
        self._odom_buffer = OdometryBuffer()
        self._odom_child_frame = ""
        # worker: one slot, latest pair wins
        self._cv = threading.Condition()
        self._heap = HeapTrimmer()
        self._pending: KeyframePair | None = None
        self._stop = False
        self._worker: threading.Thread | None = None
        # scene map: published by the worker at most every map_publish_period_s, only when changed
        self._map_due = False
        self._map_pub_lock = threading.Lock()
        self._map_published: tuple[int, object] | None = None  # (map version, Gaussians in odom)
        self._map_last_pub = -1e18
        self._T_odom_from_world = np.eye(4)

        # always-on parts (also while unconfigured, so failures are visible)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE_QOS)
        self._diag_timer = self.create_timer(float(self.get_parameter("diagnostics_period_s").value),
                                             self._on_diag_timer)
        self._static_tf = StaticTfBuffer(self)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/save_ply", self._on_save_ply)
        self.create_service(Trigger, "~/save_map", self._on_save_map)
        self._map_timer = self.create_timer(0.25, self._on_map_timer)

    # ------------------------------------------------------------------ parameters
    def _validate_parameters(self, params) -> SetParametersResult:
        """Checks ranges/choices of our parameters; keyframe and splat parameters apply at once."""
        kf_changes, splat_changes = {}, {}
        for p in params:
            spec = self._specs.get(p.name)
            if spec is None:
                continue  # not ours (e.g. use_sim_time, qos overrides)
            reason = spec.check(p.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if p.name.startswith(KEYFRAME_PREFIX):
                kf_changes[p.name[len(KEYFRAME_PREFIX):]] = p.value
            elif p.name in ("include_sh", "min_opacity"):
                splat_changes[p.name] = p.value
        if self.pipeline is not None and kf_changes:
            try:  # cross-field rules (min_overlap <= target_overlap, ...)
                cfg = dataclasses.replace(self.pipeline.cfg.keyframes, **kf_changes).validate()
            except ValueError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            from noposplat_ros.keyframes.selector import KeyframeSelector

            self.pipeline.cfg.keyframes = cfg
            self.pipeline.selector = KeyframeSelector(cfg)
            self.get_logger().info(f"keyframe parameters {kf_changes}: keyframe selection restarted")
        if self.pipeline is not None:
            for name, value in splat_changes.items():
                setattr(self.pipeline.cfg, name, type(getattr(self.pipeline.cfg, name))(value))
        return SetParametersResult(successful=True)

    def _p(self, name: str):
        return self.get_parameter(name).value

    def pipeline_config(self) -> PipelineConfig:
        """The core's configuration from the parameters; ValueError naming every invalid one."""
        bad = [r for r in (spec.check(self._p(name)) for name, spec in self._specs.items()) if r]
        if bad:
            raise ValueError("invalid parameters: " + "; ".join(bad))
        kf_values = {}
        for f in dataclasses.fields(KeyframeConfig):
            full = KEYFRAME_PREFIX + f.name
            if full in self._specs:
                kf_values[f.name] = self._p(full)
        opts: dict = {}
        backend_choice = self._p("predictor")
        checkpoint = self._p("checkpoint") or None
        resolved = "noposplat" if (backend_choice == "noposplat" or (backend_choice == "auto" and checkpoint)) \
            else "geometry"
        if resolved == "noposplat":
            if self._p("model_config"):
                opts["model_config"] = self._p("model_config")
            opts["device"] = self._p("device")
            opts["precision"] = self._p("precision")
            if self._p("allow_pickle"):
                opts["allow_pickle"] = True
        refine = {"auto": None, "enabled": True, "disabled": False}[self._p("refine")]
        baseline = float(self._p("metric_baseline_m"))
        return PipelineConfig(
            keyframes=KeyframeConfig(**kf_values),
            predictor=backend_choice,
            predictor_options=opts,
            checkpoint=checkpoint,
            metric_baseline_m=baseline if baseline > 0 else None,
            refine=refine,
            include_sh=bool(self._p("include_sh")),
            min_opacity=float(self._p("min_opacity")),
            map=MapConfig(max_gaussians=int(self._p("map_max_gaussians")), radius_m=float(self._p("map_radius_m")),
                          depth_tolerance=float(self._p("map_depth_tolerance")),
                          min_opacity=float(self._p("map_min_opacity")), device=str(self._p("map_device"))),
            map_enabled=bool(self._p("map_enabled")),
        )

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            cfg = self.pipeline_config()
            cfg.validate()
        except ValueError as exc:
            reason = f"configure failed: {exc}"
            self.get_logger().error(reason)
            self.health.fault("invalid_parameters", reason)
            self.health.error = reason
            return TransitionCallbackReturn.FAILURE
        try:
            self.get_logger().info(f"loading predictor backend '{cfg.resolved_backend()}'"
                                   + (f" from {cfg.checkpoint}" if cfg.checkpoint else ""))
            t0 = time.perf_counter()
            self.pipeline = Pipeline(cfg)
        except Exception as exc:  # noqa: BLE001 - any load failure must fail the transition, not the node
            reason = f"configure failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(reason)
            self.health.fault("checkpoint_load", reason)
            self.health.error = reason
            self.pipeline = None
            return TransitionCallbackReturn.FAILURE
        self._pipeline_cfg = cfg
        self.health.error = ""
        self.health.backend = self.pipeline.backend
        self.health.stage("load_predictor", time.perf_counter() - t0)
        self.get_logger().info(f"predictor '{self.pipeline.backend}' ready in {time.perf_counter() - t0:.2f} s")
        over = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()}  # qos_overrides.<topic>.*
        self._pubs = {
            "splats": self.create_lifecycle_publisher(PointCloud2, "~/splats", LATCHED_QOS, **over),
            "splat_pair": self.create_lifecycle_publisher(SplatPair, "~/splat_pair", LATCHED_QOS, **over),
            "odometry": self.create_lifecycle_publisher(Odometry, "~/odometry", RELIABLE_QOS, **over),
            "preview": self.create_lifecycle_publisher(Image, "~/preview", LATCHED_QOS, **over),
            "map": self.create_lifecycle_publisher(PointCloud2, "~/map", LATCHED_QOS, **over),
        }
        self._tf_pub = TfPublisher(self)
        self.health.state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.pipeline is None:
            return TransitionCallbackReturn.FAILURE
        if self.pipeline.predictor is None:  # freed on deactivate: load again
            try:
                self.pipeline = Pipeline(self._pipeline_cfg)
            except Exception as exc:  # noqa: BLE001
                reason = f"activate failed: {type(exc).__name__}: {exc}"
                self.get_logger().error(reason)
                self.health.fault("checkpoint_load", reason)
                self.health.error = reason
                return TransitionCallbackReturn.FAILURE
        qos = qos_profile_sensor_data if self._p("input_qos") == "sensor_data" else RELIABLE_QOS
        over = {"qos_overriding_options": QoSOverridingOptions.with_default_policies()}  # qos_overrides.<topic>.*
        if self._p("image_transport") == "compressed":
            self._subs.append(self.create_subscription(CompressedImage, "image/compressed", self._on_compressed, qos,
                                                       **over))
        else:
            self._subs.append(self.create_subscription(Image, "image", self._on_image, qos, **over))
        self._subs.append(self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos, **over))
        if self._p("scale_odometry_topic"):
            # best effort matches both reliable and best-effort odometry publishers
            self._subs.append(self.create_subscription(Odometry, self._p("scale_odometry_topic"), self._on_odometry,
                                                       qos_profile_sensor_data))
        self._stop = False
        self._worker = threading.Thread(target=self._worker_loop, name="noposplat_worker", daemon=True)
        self._worker.start()
        self.health.state = "active"
        self.get_logger().info(
            f"active: subscribed to '{self._subs[0].topic_name}' and '{self._subs[1].topic_name}' "
            f"({self._subs[0].qos_profile.reliability.name.lower()}, depth {self._subs[0].qos_profile.depth}), "
            f"publishing on {self.get_fully_qualified_name()}/splats")
        return super().on_activate(state)

    def _stop_worker(self) -> None:
        with self._cv:
            self._stop = True
            self._pending = None
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=60.0)
            self._worker = None

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        self._stop_worker()
        if self.pipeline is not None:
            self.pipeline.close()  # frees GPU memory; activate loads again
        _empty_cuda_cache()
        self.health.state = "inactive"
        return super().on_deactivate(state)

    def _teardown(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        self._stop_worker()
        if self.pipeline is not None and self.pipeline.predictor is not None:
            self.pipeline.close()
        self.pipeline = None
        _empty_cuda_cache()
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._tf_pub is not None:
            self._tf_pub.destroy()
            self._tf_pub = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.health.state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.health.state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("lifecycle error: cleaning up")
        self._teardown()
        self.health.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ faults
    def _fault(self, kind: str, message: str, warn: bool = True) -> None:
        n = self.health.fault(kind, message)
        if self._throttle.ok(kind, message):
            # two call sites on purpose: rclpy's logger keys its context by the calling line and
            # raises when one line logs at two severities (that killed the worker on worker_error)
            if warn:
                self.get_logger().warning(f"[{kind}] {message} (count {n})")
            else:
                self.get_logger().error(f"[{kind}] {message} (count {n})")

    # ------------------------------------------------------------------ input (executor thread)
    def _on_camera_info(self, msg: CameraInfo) -> None:
        topic = self._subs[1].topic_name if len(self._subs) > 1 else "camera_info"
        rejected = self._gate.camera_info(conv.camera_info_fields(msg), conv.time_to_ns(msg.header.stamp),
                                          source=f"camera_info on '{topic}'")
        if rejected is not None:  # frames are dropped until a valid camera_info arrives
            self._fault(rejected.kind, rejected.message)
            return
        self._camera_info_time = time.monotonic()
        self._no_info_since = -1.0
        if "camera_info" in self.health.warning:
            self.health.warning = ""

    def _on_odometry(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        self._odom_child_frame = msg.child_frame_id
        self._odom_buffer.add(conv.time_to_ns(msg.header.stamp), np.array([p.x, p.y, p.z]),
                              np.array([q.x, q.y, q.z, q.w]))

    def _odometry_baseline_m(self, pair: KeyframePair) -> float | None:
        """Camera motion between the keyframes from the robot's odometry (None: not available)."""
        if not self._p("scale_odometry_topic"):
            return None
        gap_ns = int(float(self._p("scale_odometry_max_gap_s")) * 1e9)
        s0, s1 = pair.kf0.stamp_ns, pair.kf1.stamp_ns
        deadline = time.monotonic() + gap_ns / 1e9  # odometry at kf1's stamp may still be on its way
        T_base_from_cam = None
        while True:
            cam = pair.kf0.frame_id
            base = self._odom_child_frame
            if base and base != cam:
                T_base_from_cam = self._static_tf.lookup(base, cam)
            if base and base != cam and T_base_from_cam is None:
                baseline = None
            else:
                baseline = self._odom_buffer.camera_baseline_m(s0, s1, T_base_from_cam, gap_ns)
            if baseline is not None or time.monotonic() >= deadline or self._stop:
                break
            time.sleep(0.01)
        if baseline is None:
            self._fault("scale_odometry_missing", f"no odometry on '{self._p('scale_odometry_topic')}' covering "
                        f"keyframe stamps {format_stamp(s0)} and {format_stamp(s1)}"
                        + (f" or no static transform {self._odom_child_frame} <- {pair.kf0.frame_id}"
                           if self._odom_child_frame and self._odom_child_frame != pair.kf0.frame_id else "")
                        + "; pair not metric")
            return None
        if baseline < float(self._p("scale_odometry_min_m")):
            return None
        return baseline

    def _on_image(self, msg: Image) -> None:
        t0 = time.perf_counter()
        stamp_ns = conv.time_to_ns(msg.header.stamp)
        self._note_arrival(stamp_ns)
        if self.pipeline is None:
            return
        out = self._gate.image(encoding=msg.encoding, height=msg.height, width=msg.width, step=msg.step,
                               is_bigendian=bool(msg.is_bigendian), data=msg.data, stamp_ns=stamp_ns,
                               frame_id=self._p("camera_frame") or msg.header.frame_id)
        self._handle_frame(out, t0)

    def _on_compressed(self, msg: CompressedImage) -> None:
        t0 = time.perf_counter()
        stamp_ns = conv.time_to_ns(msg.header.stamp)
        self._note_arrival(stamp_ns)
        if self.pipeline is None:
            return
        out = self._gate.compressed(format=msg.format, data=msg.data, stamp_ns=stamp_ns,
                                    frame_id=self._p("camera_frame") or msg.header.frame_id)
        self._handle_frame(out, t0)

    def _note_arrival(self, stamp_ns: int) -> None:
        self._last_image_time = time.monotonic()
        now_ns = self.get_clock().now().nanoseconds
        self.health.frame_arrived((now_ns - stamp_ns) / 1e9)

    def _handle_frame(self, out: Frame | Rejected, t0: float) -> None:
        if isinstance(out, Rejected):
            if out.kind == "camera_info_missing":
                if self._no_info_since < 0:
                    self._no_info_since = time.monotonic()
                return  # counted by the camera_info watchdog (warning after camera_info_timeout_s)
            self._fault(out.kind, out.message)
            return
        t1 = time.perf_counter()
        pair = self.pipeline.offer(out)
        t2 = time.perf_counter()
        self.health.frames_used += 1
        self.health.stage("decode_undistort", t1 - t0)
        self.health.stage("keyframe_test", t2 - t1)
        self.health.keyframes = self.pipeline.selector.stats.keyframes
        if pair is not None:
            self.health.pairs_selected += 1
            with self._cv:
                if self._pending is not None:
                    self.health.pairs_dropped += 1  # superseded: latest pair wins
                self._pending = pair
                self._cv.notify()

    def _reset_pipeline(self) -> None:
        with self._cv:
            self._pending = None
        if self.pipeline is not None:
            self.pipeline.reset()
        self._gate.forget_stamp()
        if self._tf_pub is not None:
            self._tf_pub.reset()

    # ------------------------------------------------------------------ worker
    def _worker_loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._stop and not self._map_due:
                    self._cv.wait()
                if self._stop:
                    return
                pair, self._pending = self._pending, None
                self._map_due = False
            try:
                if pair is not None:
                    self._process_and_publish(pair)
                self._publish_map()
                if pair is not None:  # freed pair buffers back to the OS (RSS flat on long runs)
                    dt = self._heap.maybe_trim(float(self._p("heap_trim_period_s")))
                    if dt is not None:
                        self.health.stage("heap_trim", dt)
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker silently
                self._fault("worker_error", f"{type(exc).__name__}: {exc}", warn=False)
                self.get_logger().error(traceback.format_exc())

    def _output_frames(self, camera_frame: str) -> OutputFrames | None:
        base = self._p("base_frame")
        T_base_from_cam = None
        if base and base != camera_frame:
            T_base_from_cam = self._static_tf.lookup(base, camera_frame)
            if T_base_from_cam is None:
                self._fault("extrinsic_missing", f"no static transform {base} <- {camera_frame} on /tf_static; "
                            "odometry and tf skipped for this pair")
                return None
        return OutputFrames(odom_frame=self._p("odom_frame"), base_frame=base,
                            T_base_from_cam=T_base_from_cam, publish_tf=bool(self._p("publish_tf")))

    def _process_and_publish(self, pair: KeyframePair) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        t0 = time.perf_counter()
        result = pipeline.process(pair, odom_baseline_m=self._odometry_baseline_m(pair))
        for k, v in result.timings_s.items():
            self.health.stage(k, v)
        if result.status == PoseStatus.LOST:
            self._fault("prediction_lost", f"pair {result.index} ({result.stamp0_ns} -> {result.stamp1_ns}) lost: "
                        f"{result.message}")
        t1 = time.perf_counter()
        frames = self._output_frames(result.frame_id)
        if frames is not None and frames.T_base_from_cam is not None:
            self._T_odom_from_world = np.asarray(frames.T_base_from_cam, dtype=np.float64)
        smap = pipeline.scene_map
        if "map" in result.timings_s:
            self.health.set_map(gaussians=smap.num_gaussians, memory_mib=smap.memory_bytes() / 2**20,
                                fusion_s=smap.last_stats.fusion_s, merged=smap.last_stats.merged,
                                added=smap.last_stats.added, evicted=smap.last_stats.evicted,
                                max_gaussians=smap.config.max_gaussians, submaps=len(smap.segments()))
        # keyframe 0's transform too: after a start, reset or a new trajectory segment it places the
        # cloud; when the chain continues it equals the last one sent and TfPublisher drops it
        outs = build_outputs(result, frames or OutputFrames(publish_tf=False), first_pair=True)
        cloud_msg = conv.cloud_to_msg(outs.cloud)
        pair_msg = conv.splat_pair_to_msg(outs.splat_pair, cloud_msg)
        t2 = time.perf_counter()
        pubs = self._pubs
        if not pubs:
            return  # deactivated/cleaned up meanwhile
        # tf first: a viewer receiving the cloud can then place it at once
        if outs.transforms and self._tf_pub is not None:
            self._tf_pub.publish(outs.transforms)
        if outs.odometry is not None and frames is not None:
            pubs["odometry"].publish(conv.odometry_to_msg(outs.odometry))
        pubs["splats"].publish(cloud_msg)
        pubs["splat_pair"].publish(pair_msg)
        if self._p("publish_preview") and result.gaussians is not None:
            self._publish_preview(result, pair)
        t3 = time.perf_counter()
        self._last_result = result
        self.health.pairs_published += 1
        self.health.stage("to_messages", t2 - t1)
        self.health.stage("publish", t3 - t2)
        self.health.stage("pair_total", t3 - t0)
        self.get_logger().info(
            f"pair {result.index}: {result.status.name}, {result.num_splats} splats, scale {result.scale_kind.value}, "
            f"|t| {np.linalg.norm(result.T_cam0_from_cam1[:3, 3]):.3f}, predict {result.timings_s.get('predict', 0):.2f} s")

    # ------------------------------------------------------------------ scene map
    def _on_map_timer(self) -> None:
        """Executor thread: only wakes the worker, which converts and publishes."""
        pipeline = self.pipeline
        if pipeline is None or not self._pubs or self._map_published_version() == pipeline.scene_map.version:
            return
        if time.monotonic() - self._map_last_pub >= float(self._p("map_publish_period_s")):
            with self._cv:
                self._map_due = True
                self._cv.notify()

    def _map_published_version(self) -> int:
        pub = self._map_published
        return -1 if pub is None else pub[0]

    def _publish_map(self, force: bool = False):
        """Publish ~/map when it changed and the period passed (or ``force``). Returns the published
        (version, Gaussians in odom_frame), or None when there is no map."""
        pipeline = self.pipeline
        if pipeline is None or not pipeline.cfg.map_enabled:
            return None
        with self._map_pub_lock:
            smap = pipeline.scene_map
            version = smap.version
            due = time.monotonic() - self._map_last_pub >= float(self._p("map_publish_period_s"))
            if version == self._map_published_version() or not (due or force):
                return self._map_published
            pub = self._pubs.get("map")
            if pub is None:
                return self._map_published
            t0 = time.perf_counter()
            g = rigid_transform(smap.fused(), self._T_odom_from_world).to("cpu")
            cloud = pointcloud.gaussians_to_structured(g, include_sh=False)
            msg = conv.cloud_to_msg(cloud_record(cloud, smap.last_stamp_ns, self._p("odom_frame")))
            pub.publish(msg)
            self._map_published = (version, g)
            self._map_last_pub = time.monotonic()
            self.health.stage("map_publish", time.perf_counter() - t0)
            return self._map_published

    def _on_save_map(self, request, response):
        pipeline = self.pipeline
        if pipeline is None or not pipeline.cfg.map_enabled:
            response.success, response.message = False, "no scene map (node not configured or map_enabled false)"
            return response
        published = self._publish_map(force=True)  # what is saved is what ~/map carries
        if published is None or published[1].num == 0:
            response.success, response.message = False, "the scene map is empty (no pair fused since start/reset)"
            return response
        from noposplat_ros.io.ply import write_ply

        d = self._p("save_dir") or os.path.join(os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "noposplat")
        try:
            pathlib.Path(d).mkdir(parents=True, exist_ok=True)
            path = pathlib.Path(d) / "map.ply"
            write_ply(path, published[1])
        except OSError as exc:
            response.success, response.message = False, f"cannot write the map PLY in {d}: {exc}"
            return response
        response.success, response.message = True, str(path)
        self.get_logger().info(f"saved the scene map ({published[1].num} Gaussians) to {path}")
        return response

    def _publish_preview(self, result: PairResult, pair: KeyframePair) -> None:
        from noposplat_ros.render import render  # torch rasteriser: only when previews are on
        from noposplat_ros.transforms import invert_T

        kf1 = pair.kf1
        out = render(result.gaussians, kf1.K, invert_T(result.T_cam0_from_cam1), kf1.height, kf1.width)
        rgb = out.rgb.detach().clamp(0, 1).mul(255).round().to("cpu").numpy().astype(np.uint8)
        self._pubs["preview"].publish(conv.rgb_to_image_msg(rgb, result.stamp1_ns, kf1.frame_id))

    # ------------------------------------------------------------------ timers / services
    def _on_diag_timer(self) -> None:
        now = time.monotonic()
        timeout = float(self._p("camera_info_timeout_s"))
        images_flowing = self._last_image_time > 0 and now - self._last_image_time < timeout
        if self.health.state == "active" and images_flowing and now - self._missing_warned_at >= timeout:
            info_age = now - self._camera_info_time if self._camera_info_time > 0 else float("inf")
            what = ""
            info_topic = self._camera_info_topic()
            if self._gate.model is None and self._no_info_since > 0 and now - self._no_info_since >= timeout:
                what = (f"no camera_info received on '{info_topic}'" if self._camera_info_time < 0 else
                        f"no valid camera_info on '{info_topic}' for {now - self._no_info_since:.1f} s") \
                    + f" while images arrive on '{self._image_topic()}'; frames are dropped"
            elif self._gate.model is not None and info_age > timeout:
                what = (f"camera_info on '{info_topic}' stopped {info_age:.1f} s ago while images arrive; "
                        "frames use the last one")
            if what:
                self._missing_warned_at = now
                self.health.warning = what
                self._fault("camera_info_missing", f"{what} (camera_info_timeout_s {timeout:.1f})")
        snap = self.health.snapshot()
        self._diag_pub.publish(health_to_diagnostics(snap, self.get_name(), self.get_fully_qualified_name(),
                                                     self.get_clock().now().nanoseconds))

    def _image_topic(self) -> str:
        return self._subs[0].topic_name if self._subs else self.resolve_topic_name("image")

    def _camera_info_topic(self) -> str:
        return self._subs[1].topic_name if len(self._subs) > 1 else self.resolve_topic_name("camera_info")

    def _on_reset(self, request, response):
        self._reset_pipeline()
        response.success = True
        response.message = "keyframes, trajectory and scene map reset"
        self.get_logger().info(response.message)
        return response

    def _on_save_ply(self, request, response):
        result = self._last_result
        if result is None or result.gaussians is None:
            response.success, response.message = False, "no splats yet (no pair reconstructed since start)"
            return response
        from noposplat_ros.io.ply import write_ply

        d = self._p("save_dir") or os.path.join(os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "noposplat")
        try:
            pathlib.Path(d).mkdir(parents=True, exist_ok=True)
            path = pathlib.Path(d) / f"splats_{result.stamp0_ns}.ply"
            write_ply(path, result.gaussians)
        except OSError as exc:
            response.success, response.message = False, f"cannot write PLY in {d}: {exc}"
            return response
        response.success = True
        response.message = str(path)
        self.get_logger().info(f"saved {result.num_splats} splats to {path} (scale {result.scale_kind.value})")
        return response


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = NoPoSplatNode()
    rc = 0
    try:
        if node.get_parameter("auto_activate").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().error(
                    "not activated: configure failed (see above); the node stays up, unconfigured, and reports "
                    "the reason on /diagnostics; fix the parameters and call the change_state service")
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node._teardown()
        except Exception:  # noqa: BLE001
            pass
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
