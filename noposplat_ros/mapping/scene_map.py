"""The scene map: every keyframe pair's Gaussians fused into one bounded map (no rclpy).

    smap = SceneMap(MapConfig(max_gaussians=1_000_000))
    smap.update_poses(trajectory.poses())                # re-optimised keyframe poses move the map
    smap.insert(gaussians_cam0, K_grid0, grid_hw, stamp0_ns, T_world_from_cam0, segment)
    g = smap.fused()                                     # types.Gaussians in the world (odom) frame

Storage: each Gaussian lives in the optical frame of the keyframe that added it (its *owner*, camera 0
of a pair, in the trajectory step's units) with a confidence (opacity x viewing-distance weight x pose
weight, accumulated over merges and capped at ``max_weight``). The world map is built from the
current keyframe poses, so a pose-graph update moves the Gaussians without re-running a predictor.

Fusion of a pair (``fusion``): the map (current segment) is z-buffered into the pair's camera-0 grid;
a new Gaussian whose depth agrees with the map's within ``depth_tolerance`` (relative) in a
(2 ``assoc_radius_px`` + 1)^2 window is merged into that map Gaussian (confidence-weighted mean of
position, log-scale, rotation, opacity, colour); one lying behind the map surface is dropped (occluded
in this view); the rest are deduplicated per pixel (the nearest wins, others within the tolerance merge
into it) and added. Pruned on the way in: low opacity, oversized (largest std > ``max_scale_px`` pixel
footprints) and isolated ones (fewer than ``min_neighbors`` depth-consistent neighbours in 3x3 px —
flying pixels at depth edges). A still camera or a revisit therefore adds ~nothing.

Bounds: at most ``max_gaussians`` (evicting the lowest confidence x recency first), optionally only
within ``radius_m`` of the newest keyframe. Segments: a pair of a new trajectory segment (after a
LOST) starts a new submap; association and ``fused()`` work per segment (default: the newest), so two
unconnected frames are never mixed. Colour: the SH DC term only (degree 0) — higher bands would
have to be rotated between keyframe frames.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time

import numpy as np
import torch

from noposplat_ros.mapping import fusion
from noposplat_ros.transforms import matrix_to_quat_xyzw
from noposplat_ros.types import Gaussians, covariances_from_columns


@dataclasses.dataclass
class MapConfig:
    """max_gaussians: hard cap on the map's Gaussians (all submaps together).
    radius_m: keep only Gaussians within this distance of the newest keyframe (trajectory units:
      metres when the scale is metric); 0 = no radius.
    depth_tolerance: relative depth gap under which a new Gaussian and a map Gaussian are one surface.
    assoc_radius_px: association window half-size in pixels of the pair's grid.
    min_opacity: Gaussians below this opacity are not put into the map.
    max_scale_px: Gaussians whose largest std exceeds this many pixel footprints (depth / f) are pruned.
    min_neighbors: a new Gaussian needs this many depth-consistent neighbours in its 3x3 px window.
    max_weight: cap on the accumulated confidence, so that a changed scene can still update the map.
    age_tau_pairs: recency time constant (pairs) of the eviction score.
    device: torch device of the map storage ("cpu", "cuda", ...).
    cpu_threads: torch threads while fusing on the CPU (0 = leave torch's setting). Fusion is gathers and
      scatters over memory; with 2 threads on a shared, loaded CPU every op waited on an OpenMP
      barrier (a pair's fusion in the node: 4 s with 2 threads vs ~0.2 s with 1, measured).
    """

    max_gaussians: int = 1_000_000
    radius_m: float = 0.0
    depth_tolerance: float = 0.05
    assoc_radius_px: int = 1
    min_opacity: float = 0.1
    max_scale_px: float = 8.0
    min_neighbors: int = 2
    max_weight: float = 20.0
    age_tau_pairs: float = 500.0
    device: str = "cpu"
    cpu_threads: int = 1

    def validate(self) -> "MapConfig":
        checks = [
            (self.max_gaussians >= 1, f"map max_gaussians must be >= 1, got {self.max_gaussians}"),
            (self.radius_m >= 0 and math.isfinite(self.radius_m), f"map radius_m must be >= 0, got {self.radius_m}"),
            (0 < self.depth_tolerance < 1, f"map depth_tolerance must be in (0, 1), got {self.depth_tolerance}"),
            (0 <= self.assoc_radius_px <= 5, f"map assoc_radius_px must be in 0..5, got {self.assoc_radius_px}"),
            (0 <= self.min_opacity < 1, f"map min_opacity must be in [0, 1), got {self.min_opacity}"),
            (self.max_scale_px > 0, f"map max_scale_px must be > 0, got {self.max_scale_px}"),
            (0 <= self.min_neighbors <= 8, f"map min_neighbors must be in 0..8, got {self.min_neighbors}"),
            (self.max_weight > 0, f"map max_weight must be > 0, got {self.max_weight}"),
            (self.age_tau_pairs > 0, f"map age_tau_pairs must be > 0, got {self.age_tau_pairs}"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise ValueError("; ".join(bad))
        return self


@dataclasses.dataclass
class InsertStats:
    """What one ``insert`` did: counts of Gaussians and its wall time."""

    offered: int = 0
    pruned: int = 0
    merged: int = 0
    occluded: int = 0
    added: int = 0
    evicted: int = 0
    total: int = 0
    fusion_s: float = 0.0


# Storage is packed column-major: one (14, capacity) float32 tensor, a Gaussian per column, so a merge
# gathers and scatters each Gaussian once (not once per field) and every elementwise op and the
# index_add_ of a merge run over contiguous rows (a row-major (N, 14) index_add_ loops per row, ~8x
# slower on the CPU). Rows of each field:
_COLS = {"means": slice(0, 3), "log_scales": slice(3, 6), "rotations_xyzw": slice(6, 10), "opacities": 10,
         "dc": slice(11, 14)}
_ROW = 14
_MEANS, _ROT = _COLS["means"], _COLS["rotations_xyzw"]


def _affine_cols(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per column n: c0 x0 + c1 x1 + c2 x2 + t. A (12, N) = columns c0, c1, c2 of a 3x3 matrix, then t
    (one affine map per point); x (3, N). Elementwise over contiguous rows on purpose: a batched
    (N, 3, 3) matmul is several times slower on the CPU."""
    out = torch.addcmul(A[9:12], A[0:3], x[0:1])
    out.addcmul_(A[3:6], x[1:2])
    return out.addcmul_(A[6:9], x[2:3])


def _per_owner(table: torch.Tensor, owner: torch.Tensor, fn, *xs: torch.Tensor) -> torch.Tensor:
    """fn(table[:, owner], *xs) -> (D, N), with a per-keyframe table (R, S), owner (N,) slots and xs
    (·, N) columns (fn may overwrite them). The most common owner's column is broadcast (no gather: a
    pair's matches mostly belong to one keyframe), the other points are gathered and computed apart."""
    counts = torch.bincount(owner, minlength=table.shape[1])
    o = int(counts.argmax())
    part = None
    if int(counts[o]) < owner.numel():  # gathered before fn runs (fn may work in place)
        other = fusion.flatnonzero(owner != o)
        part = fn(fusion.take_columns(table, owner.index_select(0, other)),
                  *(fusion.take_columns(x, other) for x in xs))
    out = fn(table[:, o:o + 1], *xs)
    if part is not None:
        out.index_copy_(1, other, part)
    return out


class _PairColumns:
    """A pair's kept Gaussians as packed columns (see ``_COLS``; log-scales, unit quaternions) in camera
    0's frame, gathered on demand: ``take(index)`` -> (14, K) for indices into the N kept ones. The
    merge and the add each gather only their own Gaussians, straight from the predictor's tensors
    (no full (14, N) copy gathered first and then gathered again: 14 passes over the pair saved)."""

    def __init__(self, rows: list[torch.Tensor], kept: torch.Tensor) -> None:
        self.rows = rows  # 14 (M,) views of the pair's fields (scales linear), in _COLS order
        self.kept = kept  # (N,) int64 indices of the kept Gaussians among the pair's M

    def take(self, index: torch.Tensor) -> torch.Tensor:
        src = self.kept.index_select(0, index)
        out = torch.empty(_ROW, src.numel(), device=src.device)
        for row, x in enumerate(self.rows):  # each row gathered straight into place
            torch.index_select(x, 0, src, out=out[row])
        out[_COLS["log_scales"]].log_()
        fusion.normalize_columns_(out[_ROT])
        return out


def _owner_from_cam(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Packed columns x (14, N) camera 0 -> owner frame: means by the affine map A[:12], rotations by
    the quaternion product with A[12:16] (A (16, N or 1), ``SceneMap._owner_from_cam_table``), in place."""
    x[_MEANS] = _affine_cols(A[:12], x[_MEANS])
    x[_ROT] = fusion.quat_multiply_xyzw(A[12:16], x[_ROT], dim=0)
    return x


def _quat_multiply_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(S, 4) x (S or 1, 4) Hamilton product of (x, y, z, w) quaternions in float64 (a after b)."""
    ax, ay, az, aw = a.T
    bx, by, bz, bw = b.T
    return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], axis=1)


@contextlib.contextmanager
def _torch_threads(n: int, device: torch.device):
    """Run the block with ``n`` torch threads on the CPU (0 or a GPU device: unchanged)."""
    if n <= 0 or device.type != "cpu" or torch.get_num_threads() == n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SceneMap:
    """Bounded, fused Gaussian map over keyframes (see module doc). Thread-safe (one lock)."""

    def __init__(self, config: MapConfig | None = None) -> None:
        self.config = (config or MapConfig()).validate()
        self.device = torch.device(self.config.device)
        self._lock = threading.RLock()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every Gaussian and keyframe."""
        with self._lock:
            dev = self.device
            self._cap = 0
            self._used = 0  # high-water mark of slots; slots < _used with alive False are free
            self._data = torch.zeros(_ROW, 0, device=dev)  # packed Gaussians, owner frames (see _COLS)
            self._conf = torch.zeros(0, device=dev)
            self._owner = torch.zeros(0, dtype=torch.long, device=dev)
            self._last = torch.zeros(0, dtype=torch.long, device=dev)
            self._alive = torch.zeros(0, dtype=torch.bool, device=dev)
            self._means_w = torch.zeros(3, 0, device=dev)  # world means, column-major like _data
            self._slot_of: dict[int, int] = {}
            self._kf_T = np.zeros((0, 4, 4))
            self._kf_seg = np.zeros(0, dtype=np.int64)
            self._kf_R = torch.zeros(0, 3, 3, device=dev)
            self._kf_t = torch.zeros(0, 3, device=dev)
            self._kf_world = torch.zeros(12, 0, device=dev)  # per keyframe (column): columns of R, then t
            self._kf_q = torch.zeros(0, 4, device=dev)
            self._kf_q_np = np.zeros((0, 4))
            self._kf_seg_t = torch.zeros(0, dtype=torch.long, device=dev)
            self._pairs = 0
            self._segment = -1
            self.last_stamp_ns = 0  # keyframe 0 stamp of the newest pair (the map's stamp)
            self._z_ref: float | None = None
            self.version = getattr(self, "version", -1) + 1  # never repeats, so a reset map is re-published
            self._cache: tuple[int, int, Gaussians] | None = None
            self.last_stats = InsertStats()
            self._evicted = 0
            self._n_alive = 0
            # per keyframe: bounding sphere of its Gaussians in its own frame (frustum culling)
            self._kf_centre = np.zeros((0, 3))
            self._kf_radius = np.zeros(0)

    @property
    def num_gaussians(self) -> int:
        return self._n_alive

    @property
    def current_segment(self) -> int:
        return self._segment

    def segments(self) -> list[int]:
        """Segments (submaps) that hold Gaussians, oldest first."""
        with self._lock:
            if not self._used:
                return []
            segs = self._kf_seg_t[self._owner[: self._used][self._alive[: self._used]]]
            return [int(s) for s in torch.unique(segs).tolist()]

    def memory_bytes(self) -> int:
        """Bytes held by the map's tensors (storage capacity, not just live Gaussians)."""
        ts = [self._data, self._conf, self._owner, self._last, self._alive, self._means_w,
              self._kf_R, self._kf_t, self._kf_q, self._kf_seg_t]
        return int(sum(t.numel() * t.element_size() for t in ts) + self._kf_T.nbytes + self._kf_seg.nbytes)

    # ------------------------------------------------------------------ keyframes and poses
    def _set_kf_arrays(self, slots: np.ndarray) -> None:
        """Refresh the device copies after keyframe ``slots`` were added or moved (quaternions only for
        those: a long run has thousands of keyframes)."""
        dev = self.device
        T = torch.as_tensor(self._kf_T, dtype=torch.float32, device=dev)
        self._kf_R, self._kf_t = T[:, :3, :3].contiguous(), T[:, :3, 3].contiguous()
        self._kf_world = torch.cat([self._kf_R.transpose(1, 2).reshape(-1, 9), self._kf_t], 1).T.contiguous()
        if len(self._kf_q_np) < len(self._kf_T):
            self._kf_q_np = np.concatenate([self._kf_q_np, np.zeros((len(self._kf_T) - len(self._kf_q_np), 4))])
        for s in np.atleast_1d(slots):  # a few keyframes per call
            self._kf_q_np[s] = matrix_to_quat_xyzw(self._kf_T[s, :3, :3])
        self._kf_q = torch.as_tensor(self._kf_q_np, dtype=torch.float32, device=dev)
        self._kf_seg_t = torch.as_tensor(self._kf_seg, dtype=torch.long, device=dev)

    def _keyframe_slot(self, stamp_ns: int, T_world_from_cam: np.ndarray, segment: int) -> int:
        slot = self._slot_of.get(int(stamp_ns))
        if slot is None:
            slot = len(self._kf_T)
            self._slot_of[int(stamp_ns)] = slot
            self._kf_T = np.concatenate([self._kf_T, np.asarray(T_world_from_cam, np.float64)[None]])
            self._kf_seg = np.append(self._kf_seg, int(segment))
            self._kf_centre = np.concatenate([self._kf_centre, np.zeros((1, 3))])
            self._kf_radius = np.append(self._kf_radius, -1.0)  # no Gaussians yet
            self._set_kf_arrays(np.array([slot]))
        else:
            self._move_keyframes(np.array([slot]), np.asarray(T_world_from_cam, np.float64)[None],
                                 np.array([int(segment)]))
        return slot

    def _move_keyframes(self, slots: np.ndarray, T: np.ndarray, seg: np.ndarray | None) -> bool:
        """Set the poses (and segments) of keyframe ``slots``; moves their Gaussians. True if any changed."""
        changed = np.abs(self._kf_T[slots] - T).reshape(len(slots), -1).max(1) > 1e-9
        if seg is not None:
            changed |= self._kf_seg[slots] != seg
            self._kf_seg[slots] = seg
        if not changed.any():
            return False
        self._kf_T[slots] = T
        self._set_kf_arrays(slots[changed])
        if self._used:
            moved = torch.zeros(len(self._kf_T), dtype=torch.bool, device=self.device)
            moved[torch.as_tensor(slots[changed], device=self.device)] = True
            sel = fusion.flatnonzero(moved[self._owner[: self._used]] & self._alive[: self._used])
            self._means_w.index_copy_(1, sel, self._to_world(fusion.take_columns(self._data[_MEANS], sel),
                                                             self._owner.index_select(0, sel)))
        self.version += 1
        return True

    def update_poses(self, poses: list[tuple[int, np.ndarray]], segments: dict[int, int] | None = None) -> bool:
        """Current keyframe poses [(stamp_ns, T_world_from_cam (4, 4))], e.g. ``Trajectory.poses()``
        after a pose-graph update; optional {stamp_ns: segment} when segments were connected.
        Unknown stamps are ignored. Returns True when the map moved."""
        with self._lock:
            known = [(self._slot_of[int(s)], T, int(s)) for s, T in poses if int(s) in self._slot_of]
            if not known:
                return False
            slots = np.array([k[0] for k in known])
            T = np.stack([np.asarray(k[1], np.float64) for k in known])
            if not np.isfinite(T).all():
                raise ValueError("update_poses: non-finite keyframe pose")
            seg = None
            if segments is not None:
                seg = np.array([segments.get(k[2], self._kf_seg[k[0]]) for k in known], dtype=np.int64)
            return self._move_keyframes(slots, T, seg)

    def _keyframes_in_view(self, T_cam_from_world: np.ndarray, K: np.ndarray, hw: tuple[int, int],
                           segment: int) -> np.ndarray:
        """(S,) bool: keyframes of ``segment`` whose bounding sphere meets the camera's frustum."""
        H, W = hw
        c_w = np.einsum("sij,sj->si", self._kf_T[:, :3, :3], self._kf_centre) + self._kf_T[:, :3, 3]
        c = c_w @ T_cam_from_world[:3, :3].T + T_cam_from_world[:3, 3]
        r = self._kf_radius
        # side planes through the optical centre: x <= z tan(max), x >= z tan(min), same for y
        tx0, tx1 = -K[0, 2] / K[0, 0], (W - 1 - K[0, 2]) / K[0, 0]
        ty0, ty1 = -K[1, 2] / K[1, 1], (H - 1 - K[1, 2]) / K[1, 1]
        x, y, z = c[:, 0], c[:, 1], c[:, 2]
        ok = (z + r > 0) & (r >= 0) & (self._kf_seg == segment)
        for a, t, sgn in ((x, tx1, 1), (x, tx0, -1), (y, ty1, 1), (y, ty0, -1)):
            ok &= sgn * (a - t * z) / np.sqrt(1 + t * t) <= r  # signed distance to the plane
        return ok

    def _to_world(self, means_local: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """(3, N) means in their owner keyframes' frames, owner (N,) slots -> (3, N) world means."""
        return _per_owner(self._kf_world, owner, _affine_cols, means_local)

    def _owner_from_cam_table(self, T_world_from_cam: np.ndarray, slots: np.ndarray) -> torch.Tensor:
        """(16, S) float32, a column per keyframe: the affine map (columns of R, then t; 12) and the
        quaternion (x, y, z, w; 4) of T_owner_from_cam = T_world_from_owner^-1 T_world_from_cam, composed in
        float64; columns of keyframes not in ``slots`` are zero."""
        tab = np.zeros((len(self._kf_T), 16))
        if len(slots):
            Ro, to = self._kf_T[slots, :3, :3], self._kf_T[slots, :3, 3]
            R = np.einsum("sji,jk->sik", Ro, T_world_from_cam[:3, :3])
            t = np.einsum("sji,sj->si", Ro, T_world_from_cam[:3, 3] - to)
            q = _quat_multiply_np(self._kf_q_np[slots] * np.array([-1.0, -1.0, -1.0, 1.0]),
                                  matrix_to_quat_xyzw(T_world_from_cam[:3, :3])[None])
            tab[slots] = np.concatenate([R.transpose(0, 2, 1).reshape(-1, 9), t, q], axis=1)
        return torch.as_tensor(tab.T, dtype=torch.float32, device=self.device).contiguous()

    # ------------------------------------------------------------------ storage
    def _ensure_capacity(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = min(max(need, 2 * self._cap, 4096), self.config.max_gaussians)
        cap = max(cap, need)
        dev = self.device

        def grow(t: torch.Tensor, fill=0) -> torch.Tensor:  # along the last dimension
            out = torch.full((*t.shape[:-1], cap), fill, dtype=t.dtype, device=dev)
            out[..., : t.shape[-1]] = t
            return out

        self._data = grow(self._data)
        self._conf, self._owner, self._last = grow(self._conf), grow(self._owner), grow(self._last)
        self._alive, self._means_w = grow(self._alive, False), grow(self._means_w)
        self._cap = cap

    def _allocate(self, k: int) -> torch.Tensor:
        """k free slot indices (reusing evicted slots first)."""
        if self._n_alive < self._used:  # some slot below the high-water mark is free
            free = fusion.flatnonzero(~self._alive[: self._used])[:k]
        else:
            free = torch.zeros(0, dtype=torch.long, device=self.device)
        extra = k - free.numel()
        if extra > 0:
            self._ensure_capacity(self._used + extra)
            free = torch.cat([free, torch.arange(self._used, self._used + extra, device=self.device)])
            self._used += extra
        return free

    def _evict(self, k: int) -> int:
        """Drop the k least valuable live Gaussians (confidence x recency)."""
        if k <= 0:
            return 0
        n = self._used
        age = (self._pairs - self._last[:n]).float()
        score = self._conf[:n] * torch.exp(-age / self.config.age_tau_pairs)
        score = torch.where(self._alive[:n], score, torch.full_like(score, float("inf")))
        k = min(k, int(self._alive[:n].sum()))
        drop = torch.topk(score, k, largest=False).indices
        self._alive[drop] = False
        self._n_alive -= k
        return k

    # ------------------------------------------------------------------ fusion
    def insert(
        self,
        gaussians: Gaussians,
        K: np.ndarray,
        hw: tuple[int, int],
        stamp_ns: int,
        T_world_from_cam0: np.ndarray,
        segment: int = 0,
        pose_covariance: np.ndarray | None = None,
    ) -> InsertStats:
        """Fuse one pair's Gaussians into the map.

        gaussians: (N,) in camera 0's optical frame, trajectory units (the pair's scale applied).
        K: (3, 3) pixel intrinsics of camera 0's grid of size hw = (H, W) (association image).
        stamp_ns: keyframe 0's stamp (the owner keyframe). T_world_from_cam0: (4, 4) its pose.
        segment: trajectory segment; a new value starts a new submap.
        pose_covariance: (6, 6) of the pair's relative pose (translation first); lowers the weight of
          uncertain pairs. None = certain.
        """
        t_start = time.perf_counter()
        cfg = self.config
        K = np.asarray(K, dtype=np.float64)
        T_wc = np.asarray(T_world_from_cam0, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"insert: K must be a finite (3, 3) pinhole matrix, got {K.tolist()}")
        if T_wc.shape != (4, 4) or not np.isfinite(T_wc).all():
            raise ValueError("insert: T_world_from_cam0 must be a finite (4, 4) transform")
        H, W = int(hw[0]), int(hw[1])
        if H <= 0 or W <= 0:
            raise ValueError(f"insert: grid size must be positive, got {hw}")
        st = InsertStats(offered=gaussians.num)
        with self._lock, _torch_threads(self.config.cpu_threads, self.device):
            dev = self.device
            self._pairs += 1
            self._segment = int(segment)
            self.last_stamp_ns = int(stamp_ns)
            slot = self._keyframe_slot(stamp_ns, T_wc, segment)
            g = gaussians  # only the fields fusion reads move to the map's device (not the covariances)
            means = g.means.to(dev, torch.float32)
            opac = g.opacities.to(dev, torch.float32)
            Kt = torch.as_tensor(K, dtype=torch.float32, device=dev)
            f = float(K[0, 0] + K[1, 1]) / 2
            pix, z = fusion.project(means, Kt, (H, W))
            # per column: reductions over a short last dimension are slow on the CPU
            scales = [c.clamp_min(1e-9) for c in g.scales.to(dev, torch.float32).unbind(1)]
            # pix >= 0 implies finite means: project() rejects a non-finite z, and an inf/NaN x or y
            # gives an inf/NaN pixel coordinate, which fails its bounds test
            keep = (pix >= 0) & (opac >= cfg.min_opacity)
            keep &= torch.maximum(torch.maximum(scales[0], scales[1]), scales[2]) <= cfg.max_scale_px * z / f
            if self._z_ref is None and bool(keep.any()):
                self._z_ref = float(z[keep].median())
            z_ref = self._z_ref or 1.0
            # confidence: opacity x viewing distance (triangulated depth error grows ~ z^2) x pose
            w = opac * (z_ref / z.clamp_min(1e-6)).pow(2).clamp(0.01, 100.0)
            if pose_covariance is not None:
                var_t = float(np.trace(np.asarray(pose_covariance, dtype=np.float64)[:3, :3]))
                w = w * float(np.clip(1.0 / (1.0 + var_t / (0.01 * z_ref) ** 2), 1e-3, 1.0))
            idx_new = fusion.flatnonzero(keep)
            pix, z, w = pix.index_select(0, idx_new), z.index_select(0, idx_new), w.index_select(0, idx_new)
            new = _PairColumns([*means.unbind(1), *scales, *g.rotations_xyzw.to(dev, torch.float32).unbind(1),
                                opac, *g.harmonics[:, :, 0].to(dev, torch.float32).unbind(1)], idx_new)
            tol = cfg.depth_tolerance

            # ---- association with the map (this segment) in camera 0's grid
            n_used = self._used
            target = torch.full_like(pix, -1)
            gap = torch.full_like(z, float("inf"))
            if n_used and idx_new.numel():
                T_cw_np = np.linalg.inv(T_wc)
                seen_np = self._keyframes_in_view(T_cw_np, K, (H, W), int(segment))
                if not seen_np.any():
                    cand = None
                elif self._n_alive == n_used and seen_np[self._kf_radius >= 0].all():
                    cand = torch.arange(n_used, device=dev)  # every Gaussian: no gather of the map
                    pts = self._means_w[:, :n_used]
                else:
                    seen = torch.as_tensor(seen_np, device=dev)
                    cand = fusion.flatnonzero(self._alive[:n_used] & seen.index_select(0, self._owner[:n_used]))
                    pts = fusion.take_columns(self._means_w, cand)
                if cand is not None and cand.numel():
                    mpix, mz = fusion.transform_project(pts, T_cw_np, Kt, (H, W))
                    zb, zi = fusion.zbuffer(mpix, mz, H * W)
                    if cand.numel() != n_used:  # -> storage slots
                        zi = torch.where(zi >= 0, cand.index_select(0, zi.clamp_min(0)), zi)
                    target, gap, tpix = fusion.associate(pix, z, zb, zi, (H, W), tol, cfg.assoc_radius_px)
            matched = target >= 0
            st.merged = int(matched.sum())
            if st.merged:
                self._merge_into_map(new, w, matched, tpix, zi, T_wc, np.flatnonzero(seen_np), H * W)
            occluded = ~matched & torch.isfinite(gap) & (gap > tol * z)  # behind the map's surface: this view adds nothing there
            st.occluded = int(occluded.sum())

            # ---- the rest: one Gaussian per pixel (nearest; others within tolerance merge into it)
            rest = fusion.flatnonzero(~matched & ~occluded)
            added = self._add_new(new, w, pix, z, rest, (H, W), slot)
            st.added = added
            st.pruned = st.offered - st.merged - st.occluded - added  # filters, isolation, in-pixel merges
            st.evicted = self._bound(T_wc, int(segment))
            self.version += 1
            st.total = self.num_gaussians
            st.fusion_s = time.perf_counter() - t_start
            self.last_stats = st
            return st

    def _merge_into_map(self, new: _PairColumns, w: torch.Tensor, matched: torch.Tensor, tpix: torch.Tensor,
                        slot_of_pixel: torch.Tensor, T_wc: np.ndarray, seen_slots: np.ndarray,
                        num_pixels: int) -> None:
        """Merge the matched new Gaussians into their map targets.

        new: the pair's N kept Gaussians (camera 0's frame), w (N,) their weights, matched (N,) bool, tpix (N,)
        the z-buffer pixel of each one's target, slot_of_pixel (P,) the storage slot each pixel shows.
        Every target shows in exactly one pixel, so targets are grouped by pixel (no sort)."""
        dev = self.device
        sel = fusion.flatnonzero(matched)
        qm = tpix.index_select(0, sel)
        upix = fusion.flatnonzero(torch.zeros(num_pixels, dtype=torch.bool, device=dev).index_fill_(0, qm, True))
        rank = torch.empty(num_pixels, dtype=torch.long, device=dev)
        rank.index_copy_(0, upix, torch.arange(upix.numel(), device=dev))
        group = rank.index_select(0, qm)
        uniq = slot_of_pixel.index_select(0, upix)  # target slots, one per group
        owner_g = self._owner.index_select(0, uniq)
        # new Gaussians: camera 0 -> the owner keyframe's frame, one composed transform per keyframe
        add = _per_owner(self._owner_from_cam_table(T_wc, seen_slots), owner_g.index_select(0, group),
                         _owner_from_cam, new.take(sel))
        merged, Wsum = fusion.weighted_merge_packed(fusion.take_columns(self._data, uniq),
                                                    self._conf.index_select(0, uniq), add, w.index_select(0, sel),
                                                    group, _ROT)
        self._data.index_copy_(1, uniq, merged)
        self._conf.index_copy_(0, uniq, Wsum.clamp_max_(self.config.max_weight))
        self._last.index_fill_(0, uniq, self._pairs)
        self._means_w.index_copy_(1, uniq, self._to_world(merged[_MEANS], owner_g))

    def _add_new(self, new: _PairColumns, w: torch.Tensor, pix: torch.Tensor, z: torch.Tensor,
                 rest: torch.Tensor, hw: tuple[int, int], slot: int) -> int:
        """Add the new Gaussians ``rest`` (indices into the pair's N kept Gaussians ``new``, w, pix,
        z (N,)): one per pixel, isolated ones pruned. Returns how many were added."""
        if rest.numel() == 0:
            return 0
        cfg = self.config
        dev = self.device
        H, W = hw
        tol = cfg.depth_tolerance
        p, d = pix.index_select(0, rest), z.index_select(0, rest)
        zb, zi = fusion.zbuffer(p, d, H * W)
        rep_of = zi.index_select(0, p)  # the nearest new Gaussian in the same pixel (index into rest)
        within = (d - zb.index_select(0, p)) <= tol * d
        is_rep = rep_of == torch.arange(rest.numel(), device=dev)
        # isolation: depth-consistent neighbours among the pixel representatives (3x3 window)
        if cfg.min_neighbors > 0:
            v0, u0 = p // W, p % W
            count = torch.zeros_like(d)
            td = tol * d
            for dv in (-1, 0, 1):
                for du in (-1, 0, 1):
                    if dv == 0 and du == 0:
                        continue
                    v, u = v0 + dv, u0 + du
                    inside = (v >= 0) & (v < H) & (u >= 0) & (u < W)
                    q = v.clamp(0, H - 1) * W + u.clamp(0, W - 1)
                    count += (inside & ((zb.index_select(0, q) - d).abs_() <= td)).float()
            is_rep &= count >= cfg.min_neighbors
        reps = fusion.flatnonzero(is_rep)
        if reps.numel() == 0:
            return 0
        # members (same pixel, within tolerance, incl. the representative) -> their representative
        rep_pos = torch.full((rest.numel(),), -1, dtype=torch.long, device=dev)
        rep_pos.index_copy_(0, reps, torch.arange(reps.numel(), device=dev))
        members = fusion.flatnonzero(within & (rep_pos.index_select(0, rep_of) >= 0) & ~is_rep)
        r_rep, r_mem = rest.index_select(0, reps), rest.index_select(0, members)
        merged, Wsum = fusion.weighted_merge_packed(
            new.take(r_rep), w.index_select(0, r_rep), new.take(r_mem),
            w.index_select(0, r_mem),
            rep_pos.index_select(0, rep_of.index_select(0, members)), _ROT)
        k = reps.numel()
        if k > cfg.max_gaussians:  # a single pair larger than the cap: keep its most confident
            top = torch.topk(Wsum, cfg.max_gaussians).indices
            merged, Wsum, k = merged.index_select(1, top), Wsum.index_select(0, top), cfg.max_gaussians
        overflow = self.num_gaussians + k - cfg.max_gaussians
        if overflow > 0:  # evict first (with 1% headroom, so eviction is not needed on every pair)
            self._evicted += self._evict(overflow + cfg.max_gaussians // 100)
        slots = self._allocate(k)
        self._data.index_copy_(1, slots, merged)
        self._conf.index_copy_(0, slots, Wsum.clamp_max_(cfg.max_weight))
        self._owner.index_fill_(0, slots, slot)
        self._last.index_fill_(0, slots, self._pairs)
        self._alive.index_fill_(0, slots, True)
        self._n_alive += k
        # grow this keyframe's bounding sphere (margin: merges move Gaussians by < the depth tolerance)
        m = merged[_MEANS].T.double().cpu().numpy()
        if self._kf_radius[slot] < 0:
            self._kf_centre[slot] = m.mean(0)
        r = float(np.linalg.norm(m - self._kf_centre[slot], axis=1).max())
        zmax = float(np.abs(m[:, 2]).max())
        self._kf_radius[slot] = max(self._kf_radius[slot], r * 1.05 + 2 * cfg.depth_tolerance * zmax)
        self._means_w.index_copy_(1, slots, self._to_world(merged[_MEANS], self._owner.index_select(0, slots)))
        return k

    def _bound(self, T_wc: np.ndarray, segment: int) -> int:
        evicted, self._evicted = self._evicted, 0
        n = self._used
        if self.config.radius_m > 0 and n:
            c = torch.as_tensor(T_wc[:3, 3], dtype=torch.float32, device=self.device)
            far = self._alive[:n] & (self._kf_seg_t[self._owner[:n]] == segment) & \
                ((self._means_w[:, :n] - c.unsqueeze(1)).norm(dim=0) > self.config.radius_m)
            n_far = int(far.sum())
            evicted += n_far
            self._n_alive -= n_far
            self._alive[:n] &= ~far
        return evicted

    # ------------------------------------------------------------------ output
    def fused(self, segment: int | None = None) -> Gaussians:
        """The map of ``segment`` (default: the newest) as Gaussians in the world frame: means (M, 3),
        scales, rotations_xyzw, opacities, harmonics (M, 3, 1) (DC), covariances. Cached per version."""
        with self._lock, _torch_threads(self.config.cpu_threads, self.device):
            seg = self._segment if segment is None else int(segment)
            if self._cache is not None and self._cache[0] == self.version and self._cache[1] == seg:
                return self._cache[2]
            n = self._used
            dev = self.device
            if n == 0:
                z = lambda *s: torch.zeros(*s, device=dev)  # noqa: E731
                g = Gaussians(z(0, 3), z(0, 3), z(0, 4), z(0), z(0, 3, 1), z(0, 3, 3))
            else:
                sel = fusion.flatnonzero(self._alive[:n] & (self._kf_seg_t[self._owner[:n]] == seg))
                owner = self._owner.index_select(0, sel)
                cols = fusion.take_columns(self._data, sel)
                # world rotations and scales as contiguous rows (4, M) / (3, M): the quaternion product and
                # the covariances run over rows (strided (M, 4) components are several times slower)
                rot = fusion.quat_multiply_xyzw(fusion.take_columns(self._kf_q.T.contiguous(), owner),
                                                cols[_ROT], dim=0)
                scales = cols[_COLS["log_scales"]].exp()
                g = Gaussians(
                    means=fusion.take_columns(self._means_w, sel).T.contiguous(),
                    scales=scales.T.contiguous(),
                    rotations_xyzw=rot.T.contiguous(),
                    opacities=cols[_COLS["opacities"]].contiguous(),
                    harmonics=cols[_COLS["dc"]].T.unsqueeze(-1).contiguous(),
                    covariances=covariances_from_columns(scales, rot),
                )
            self._cache = (self.version, seg, g)
            return g

    def confidences(self, segment: int | None = None) -> torch.Tensor:
        """(M,) accumulated confidence of ``fused(segment)``'s Gaussians, same order."""
        with self._lock:
            seg = self._segment if segment is None else int(segment)
            n = self._used
            sel = fusion.flatnonzero(self._alive[:n] & (self._kf_seg_t[self._owner[:n]] == seg))
            return self._conf[sel].clone()


def map_config_from_params(p: dict) -> tuple[MapConfig, bool]:
    """(MapConfig, map_enabled) from node-style parameters (``map_*`` names, defaults for missing
    ones), so the node and process-bag read one parameters file the same way."""
    d = MapConfig()
    cfg = MapConfig(
        max_gaussians=int(p.get("map_max_gaussians", d.max_gaussians)),
        radius_m=float(p.get("map_radius_m", d.radius_m)),
        depth_tolerance=float(p.get("map_depth_tolerance", d.depth_tolerance)),
        min_opacity=float(p.get("map_min_opacity", d.min_opacity)),
        device=str(p.get("map_device", d.device)),
    )
    return cfg.validate(), bool(p.get("map_enabled", True))


def rigid_transform(g: Gaussians, T_b_from_a: np.ndarray) -> Gaussians:
    """Gaussians in frame a -> frame b (means, rotations, covariances; scales unchanged).
    T_b_from_a: (4, 4) rigid transform, e.g. the odom frame from the trajectory's world frame."""
    T = np.asarray(T_b_from_a, dtype=np.float64)
    if np.allclose(T, np.eye(4)):
        return g
    dev = g.means.device
    R = torch.as_tensor(T[:3, :3], dtype=g.means.dtype, device=dev)
    t = torch.as_tensor(T[:3, 3], dtype=g.means.dtype, device=dev)
    q = torch.as_tensor(matrix_to_quat_xyzw(T[:3, :3]), dtype=g.means.dtype, device=dev)
    return Gaussians(
        means=g.means @ R.T + t,
        scales=g.scales,
        rotations_xyzw=fusion.quat_multiply_xyzw(q.expand_as(g.rotations_xyzw), g.rotations_xyzw),
        opacities=g.opacities,
        harmonics=g.harmonics,
        covariances=R @ g.covariances @ R.T,
    )
