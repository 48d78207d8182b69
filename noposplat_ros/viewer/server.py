"""The browser side: a viser server that shows splats, keyframe frustums, the trajectory and a status.

``SplatViewer`` owns the ``viser.ViserServer`` (a three.js page that sorts and draws real Gaussian
splats); ``Pusher`` is the thread that turns the live state into pushes, throttled. No rclpy.
"""
from __future__ import annotations

import dataclasses
import socket
import threading
import time
from typing import Callable

import numpy as np

from noposplat_ros.viewer.scene import SplatArrays, ViewCamera, thin_for_display, trajectory_segments, \
    wxyz_from_rotation

FRUSTUM_COLOR = (255, 120, 0)
LATEST_FRUSTUM_COLOR = (0, 160, 255)
TRAJECTORY_COLOR = (255, 60, 60)


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (viser would otherwise silently take the next port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortInUseError(RuntimeError):
    pass


class SplatViewer:
    """A viser server with the layers ``map``, ``pair`` (toggleable), ``keyframes`` and ``trajectory``.

    host/port: where to serve; a taken port raises PortInUseError unless ``next_free_port`` (then
    viser binds the next free one; ``port`` says which). max_splats: display thinning per layer.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, next_free_port: bool = False,
                 max_splats: int = 0, title: str = "noposplat_ros") -> None:
        import viser  # lazily: only the viewer needs it

        if not next_free_port and not port_is_free(host, port):
            raise PortInUseError(f"port {port} on {host} is in use (another viewer?): pick --port N, "
                                 "or --next-free-port to take the next free one")
        self.requested_port = port
        self.max_splats = int(max_splats)
        self.server = viser.ViserServer(host=host, port=port, label=title, verbose=False)
        self.host = host
        self.port = int(self.server.get_port())
        self._lock = threading.Lock()
        self._view: ViewCamera | None = None
        self._pair_handle = None
        self._pushes = 0
        self._handles: dict[str, object] = {}  # layer name -> viser scene node
        self._keys: dict[str, object] = {}  # layer name -> key of what it shows (skip unchanged pushes)
        gui = self.server.gui
        self.status = gui.add_markdown("waiting for data ...")
        self.show_pair = gui.add_checkbox("Show latest pair", initial_value=False,
                                          hint="the latest pair's splats on top of the map")
        self.show_cameras = gui.add_checkbox("Show keyframe cameras", initial_value=True)
        self.follow = gui.add_checkbox("Follow the robot", initial_value=False,
                                       hint="move the view to the newest keyframe after each update")
        self.reset_view = gui.add_button("View from first keyframe")
        self.show_pair.on_update(lambda _: self._set_visible("/pair", self.show_pair.value))
        self.show_cameras.on_update(lambda _: self._set_visible("/keyframes", self.show_cameras.value))
        self.reset_view.on_click(lambda ev: self._apply_view(self._view, [ev.client] if ev.client else None))
        self.server.on_client_connect(lambda client: self._apply_view(self._view, [client]))
        self._latest_view: ViewCamera | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pushes(self) -> int:
        return self._pushes

    def stop(self) -> None:
        self.server.stop()

    # ------------------------------------------------------------------ camera
    def set_initial_view(self, view: ViewCamera) -> None:
        """The camera new clients start from; also the scene's up direction.

        Connected clients are moved too when the first keyframe or the fov changed (the first data,
        camera_info arriving after it, a restarted node), not for a mere change of the orbit distance.
        """
        with self._lock:
            old, self._view = self._view, view
        moved = old is None or not (np.allclose(old.position, view.position) and np.isclose(old.fov_rad, view.fov_rad)
                                    and np.allclose(old.up, view.up))
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.up, ic.fov = view.position, view.look_at, view.up, view.fov_rad
        if moved:
            self.server.scene.set_up_direction(tuple(float(x) for x in view.up))
            self._apply_view(view, None)

    def _apply_view(self, view: ViewCamera | None, clients: list | None) -> None:
        if view is None:
            return
        targets = list(self.server.get_clients().values()) if clients is None else clients
        for client in targets:
            with client.atomic():
                client.camera.up_direction = view.up
                client.camera.position = view.position
                client.camera.look_at = view.look_at
                client.camera.fov = view.fov_rad

    # ------------------------------------------------------------------ layers
    def _set_visible(self, name: str, visible: bool) -> None:
        handle = self._handles.get(name)
        if handle is not None:
            handle.visible = visible

    def _unchanged(self, name: str, key: object) -> bool:
        if key is not None and name in self._keys and self._keys[name] == key:
            return True
        self._keys[name] = key
        return False

    def show_splats(self, name: str, splats: SplatArrays, visible: bool = True, key: object = None) -> None:
        """Add or replace one splat layer (thinned to ``max_splats``); an empty layer is removed.

        key: identifies the content; a push with the key of what is shown sends nothing.
        """
        if self._unchanged(name, key):
            return
        old = self._handles.pop(name, None)
        if splats.num == 0:
            if old is not None:
                old.remove()
            return
        s = thin_for_display(splats, self.max_splats)
        self._handles[name] = self.server.scene.add_gaussian_splats(
            name, centers=s.centers, covariances=s.covariances, rgbs=s.rgbs, opacities=s.opacities, visible=visible)

    def show_cameras_and_path(self, T_world_from_cams: np.ndarray, fov_rad: float, aspect: float,
                              frustum_size: float) -> None:
        """Keyframe frustums (OpenCV frames: viser's frustums look down +z with +y down) and the path.

        T_world_from_cams: (M, 4, 4), oldest first; the newest is drawn in another colour.
        """
        if self._unchanged("/keyframes", (T_world_from_cams.tobytes(), fov_rad, aspect, frustum_size)):
            return
        old = self._handles.pop("/keyframes", None)
        if old is not None:
            old.remove()
        if len(T_world_from_cams) == 0:
            return
        visible = bool(self.show_cameras.value)
        frame = self.server.scene.add_frame("/keyframes", show_axes=False, visible=visible)
        for i, T in enumerate(T_world_from_cams):
            newest = i == len(T_world_from_cams) - 1
            self.server.scene.add_camera_frustum(
                f"/keyframes/{i:05d}", fov=fov_rad, aspect=aspect, scale=frustum_size,
                thickness=2.0, thickness_units="screen", color=LATEST_FRUSTUM_COLOR if newest else FRUSTUM_COLOR,
                wxyz=wxyz_from_rotation(T[:3, :3]), position=T[:3, 3])
        segments = trajectory_segments(T_world_from_cams[:, :3, 3])
        if len(segments):
            self.server.scene.add_line_segments("/keyframes/trajectory", points=segments, colors=TRAJECTORY_COLOR,
                                                thickness=3.0, thickness_units="screen")
        self._handles["/keyframes"] = frame

    def follow_latest(self, view: ViewCamera) -> None:
        """With "Follow the robot" on, move every client's camera to ``view``."""
        self._latest_view = view
        if self.follow.value:
            self._apply_view(view, None)

    def set_status(self, markdown: str) -> None:
        self.status.content = markdown

    def mark_pushed(self) -> None:
        self._pushes += 1


def seconds_until_push(now_s: float, last_push_s: float, period_s: float) -> float:
    """How long the pusher must still wait so that pushes are at least ``period_s`` apart (>= 0)."""
    return max(0.0, last_push_s + period_s - now_s)


@dataclasses.dataclass
class Pusher:
    """Thread: whenever the version changed, wait out ``period_s`` since the last push, then push.

    wait_for_change(seen_version, timeout_s) -> version: blocks until new data (LiveScene's method).
    push() -> version: builds and shows the scene (the slow part), returns the version it showed. Only the latest state is ever pushed, so a
    slow browser link or a 1M-splat map never backs up the ROS callbacks.
    """

    wait_for_change: Callable[[int, float], int]
    push: Callable[[], int]
    period_s: float
    on_error: Callable[[BaseException], None] = lambda exc: None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer-pusher", daemon=True)

    def start(self) -> "Pusher":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        seen, last_push = 0, -1e18
        while not self._stop.is_set():
            version = self.wait_for_change(seen, 0.2)
            if version == seen:
                continue
            delay = seconds_until_push(time.monotonic(), last_push, self.period_s)
            if delay > 0 and self._stop.wait(delay):
                return
            last_push = time.monotonic()
            try:
                seen = self.push()  # includes whatever arrived while waiting
            except Exception as exc:  # noqa: BLE001 - one bad message must not end the viewer
                seen = version
                self.on_error(exc)
