"""A loopback stand-in for an AirSim simulator — a TEST DOUBLE, never a source of AirSim results.

No AirSim/Unreal binary can be installed here, so the client path is tested against this
msgpack-rpc server (``msgpackrpc.Server``, the RPC library the client itself uses). It implements
exactly the RPC names the adapter in :mod:`confidently.unadversarial.airsim` calls, with AirSim's
argument encodings, plus ``confidentlyFakeInfo`` so that every record made against it says
``"simulator": "fake"``.

The scene: a procedural ground plane (z = 0, NED) under a sky, and flat textured squares lying on it
("Target" at the origin, "LandingPad" 20 m north). A texture set with ``simSetObjectMaterialFromTexture``
is read with the project's image loader; texture row 0 is the square's north edge (+x), column 0 its
west edge (−y). Frames come from a small numpy pinhole renderer (90° horizontal field of view,
2×2 supersampling) with a synthetic post-process for the weather parameters (fog, dust: distance
haze; snow: haze and flakes; rain: darkening and streaks; the rest are accepted and ignored). The
vehicle is a kinematic point: ``moveByVelocity`` integrates the commanded velocity through a
first-order lag (``response_time``, 0.5 s), like a multirotor's inner velocity loop; the simulated
clock advances by the commanded duration without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from confidently.errors import MissingBackend
from confidently.unadversarial.airsim import WEATHER, rotation_matrix

FAKE_NAME = "confidently-fake-airsim"
SERVER_VERSION = 4  # >= what airsim 1.8 (1) and cosysairsim (4) require
MIN_CLIENT_VERSION = 1
WEATHER_NAMES = {index: name for name, index in WEATHER.items()}
SKY_HORIZON = np.array([0.78, 0.86, 0.94])
SKY_ZENITH = np.array([0.42, 0.58, 0.85])
HAZE = {"fog": ((0.80, 0.81, 0.83), 0.30), "dust": ((0.66, 0.55, 0.38), 0.30), "snow": ((0.93, 0.94, 0.96), 0.12)}


@dataclass
class SceneObject:
    position: np.ndarray
    orientation: np.ndarray  # (w, x, y, z)
    size: float  # side of the square, metres
    texture: np.ndarray  # H×W×3 float in [0, 1]


def target_texture(size: int = 32) -> np.ndarray:
    """The default "Target" material: orange and white concentric squares."""
    yy, xx = np.mgrid[:size, :size]
    ring = (np.maximum(abs(yy - (size - 1) / 2), abs(xx - (size - 1) / 2)) // max(1, size // 8)).astype(int) % 2
    return np.where(ring[..., None] == 0, np.array([0.95, 0.45, 0.1]), np.array([0.95, 0.95, 0.92]))


def pad_texture(size: int = 32) -> np.ndarray:
    """The default "LandingPad" material: a white H on dark grey, top row = north."""
    texture = np.full((size, size, 3), 0.18)
    a, b, c = size // 5, 2 * size // 5, size - size // 5
    texture[a:c, a:a + size // 8] = 0.95
    texture[a:c, c - size // 8:c] = 0.95
    texture[b:b + size // 8 + 1, a:c] = 0.95
    return texture


def default_objects() -> dict[str, SceneObject]:
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    return {"Target": SceneObject(np.zeros(3), identity.copy(), 1.0, target_texture()),
            "LandingPad": SceneObject(np.array([20.0, 0.0, 0.0]), identity.copy(), 1.5, pad_texture())}


def _vec(v: np.ndarray | Sequence[float]) -> dict[str, float]:
    return {"x_val": float(v[0]), "y_val": float(v[1]), "z_val": float(v[2])}


def _quat(q: np.ndarray | Sequence[float]) -> dict[str, float]:
    return {"w_val": float(q[0]), "x_val": float(q[1]), "y_val": float(q[2]), "z_val": float(q[3])}


def _pose(position, orientation) -> dict[str, Any]:
    return {"position": _vec(position), "orientation": _quat(orientation)}


def _read_pose(pose: dict, position: np.ndarray, orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A msgpack'd Pose; NaN components keep the current value (AirSim's convention)."""
    p, q = pose.get("position", {}), pose.get("orientation", {})
    new_p = np.array([float(p.get(k, np.nan)) for k in ("x_val", "y_val", "z_val")])
    new_q = np.array([float(q.get(k, np.nan)) for k in ("w_val", "x_val", "y_val", "z_val")])
    new_p = np.where(np.isnan(new_p), position, new_p)
    new_q = orientation.copy() if np.isnan(new_q).any() else new_q / (np.linalg.norm(new_q) or 1.0)
    return new_p, new_q


@dataclass
class FakeSimulator:
    """Scene state and the RPC methods (msgpackrpc dispatches a call to the attribute of its name)."""

    width: int = 64
    height: int = 64
    fov_deg: float = 90.0
    supersample: int = 2
    response_time: float = 0.5
    seed: int = 0
    objects: dict[str, SceneObject] = field(default_factory=default_objects)

    def __post_init__(self):
        self.position = np.zeros(3)
        self.orientation = np.array([1.0, 0.0, 0.0, 0.0])
        self.velocity = np.zeros(3)
        self.cameras: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.weather_enabled = False
        self.weather: dict[str, float] = {}
        self.api_control = False
        self.armed = False
        self.clock_ns = 0
        self.calls: Counter[str] = Counter()  # every RPC served, by name (for tests)
        self.texture_paths: dict[str, str] = {}
        self.lock = threading.Lock()

    # connection -----------------------------------------------------------------------------------
    def ping(self) -> bool:
        self.calls["ping"] += 1
        return True

    def getServerVersion(self) -> int:  # noqa: N802 - AirSim's RPC names
        self.calls["getServerVersion"] += 1
        return SERVER_VERSION

    def getMinRequiredClientVersion(self) -> int:  # noqa: N802
        self.calls["getMinRequiredClientVersion"] += 1
        return MIN_CLIENT_VERSION

    def confidentlyFakeInfo(self) -> dict[str, Any]:  # noqa: N802
        from confidently import __version__

        self.calls["confidentlyFakeInfo"] += 1
        return {"name": FAKE_NAME, "version": __version__, "renderer": "numpy",
                "note": "test double for the AirSim client path; not AirSim, not Unreal"}

    # vehicle, camera, objects -----------------------------------------------------------------------
    def simSetVehiclePose(self, pose: dict, ignore_collision: bool = True, *rest: Any) -> None:  # noqa: N802
        self.calls["simSetVehiclePose"] += 1
        with self.lock:
            self.position, self.orientation = _read_pose(pose, self.position, self.orientation)
            self.velocity = np.zeros(3)

    def simGetVehiclePose(self, *rest: Any) -> dict[str, Any]:  # noqa: N802
        self.calls["simGetVehiclePose"] += 1
        return _pose(self.position, self.orientation)

    def simSetCameraPose(self, camera_name: str, pose: dict, *rest: Any) -> None:  # noqa: N802
        self.calls["simSetCameraPose"] += 1
        self.cameras[str(camera_name)] = _read_pose(pose, np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))

    def simGetObjectPose(self, object_name: str, *rest: Any) -> dict[str, Any]:  # noqa: N802
        self.calls["simGetObjectPose"] += 1
        obj = self.objects.get(object_name)
        if obj is None:
            return _pose([math.nan] * 3, [math.nan] * 4)
        return _pose(obj.position, obj.orientation)

    def simSetObjectPose(self, object_name: str, pose: dict, *rest: Any) -> bool:  # noqa: N802
        self.calls["simSetObjectPose"] += 1
        obj = self.objects.get(object_name)
        if obj is None:
            return False
        obj.position, obj.orientation = _read_pose(pose, obj.position, obj.orientation)
        return True

    def simListSceneObjects(self, name_regex: str = ".*") -> list[str]:  # noqa: N802
        import re

        self.calls["simListSceneObjects"] += 1
        return [name for name in self.objects if re.fullmatch(name_regex, name)]

    def simSetObjectMaterialFromTexture(self, object_name: str, texture_path: str, *rest: Any) -> bool:  # noqa: N802
        from confidently.errors import InvalidInput
        from confidently.io.images import decode_file

        self.calls["simSetObjectMaterialFromTexture"] += 1
        obj = self.objects.get(object_name)
        if obj is None:
            return False
        try:
            image = decode_file(texture_path, 3)
        except InvalidInput:
            return False
        obj.texture = image.permute(1, 2, 0).numpy().astype(np.float64)
        self.texture_paths[object_name] = str(texture_path)
        return True

    # weather -----------------------------------------------------------------------------------------
    def simEnableWeather(self, enable: bool) -> None:  # noqa: N802
        self.calls["simEnableWeather"] += 1
        self.weather_enabled = bool(enable)

    def simSetWeatherParameter(self, param: int, value: float) -> None:  # noqa: N802
        self.calls["simSetWeatherParameter"] += 1
        name = WEATHER_NAMES.get(int(param))
        if name is None:
            raise ValueError(f"unknown WeatherParameter {param}")
        self.weather[name] = min(1.0, max(0.0, float(value)))

    # images ----------------------------------------------------------------------------------------
    def simGetImages(self, requests: list[dict], *rest: Any) -> list[dict[str, Any]]:  # noqa: N802
        self.calls["simGetImages"] += 1
        return [self._response(request) for request in requests]

    def _response(self, request: dict) -> dict[str, Any]:
        camera = str(request.get("camera_name", "0"))
        rgb, origin, rotation = self.render(camera)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        compress = bool(request.get("compress", False))
        data = _png(rgb) if compress else bgr.tobytes()
        return {"image_data_uint8": data, "image_data_float": [], "camera_position": _vec(origin),
                "camera_orientation": _quat(_matrix_quaternion(rotation)), "time_stamp": self.clock_ns,
                "message": FAKE_NAME, "pixels_as_float": False, "compress": compress, "width": self.width,
                "height": self.height, "image_type": int(request.get("image_type", 0)),
                "annotation_name": request.get("annotation_name", "")}

    def render(self, camera: str = "0") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The camera's frame as RGB uint8 height×width×3, with its world position and rotation."""
        cam_p, cam_q = self.cameras.get(camera, (np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])))
        body = rotation_matrix(self.orientation)
        rotation = body @ rotation_matrix(cam_q)
        origin = self.position + body @ cam_p
        s = max(1, int(self.supersample))
        h, w = self.height * s, self.width * s
        focal = (w / 2) / math.tan(math.radians(self.fov_deg) / 2)
        u = (np.arange(w) + 0.5 - w / 2) / focal
        v = (np.arange(h) + 0.5 - h / 2) / focal
        rays = np.stack(np.broadcast_arrays(np.ones((h, w)), u[None, :], v[:, None]), axis=-1) @ rotation.T
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        up = np.clip(-rays[..., 2], 0, 1)[..., None]
        colour = SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * up
        distance = np.full((h, w), np.inf)
        down = rays[..., 2] > 1e-6
        if origin[2] < 0:
            t = np.where(down, -origin[2] / np.where(down, rays[..., 2], 1), np.inf)
            hit = np.isfinite(t)
            points = origin + rays * np.where(hit, t, 0)[..., None]
            colour = np.where(hit[..., None], _ground(points), colour)
            distance = np.where(hit, t, distance)
        for obj in self.objects.values():
            plane = obj.position[2] - 1e-3  # a hair above the ground
            if origin[2] >= plane:
                continue
            t = np.where(down, (plane - origin[2]) / np.where(down, rays[..., 2], 1), np.inf)
            points = origin + rays * np.where(np.isfinite(t), t, 0)[..., None]
            yaw_c, yaw_s = _yaw(obj.orientation)
            dx, dy = points[..., 0] - obj.position[0], points[..., 1] - obj.position[1]
            a, b = yaw_c * dx + yaw_s * dy, -yaw_s * dx + yaw_c * dy  # object frame: a forward, b right
            half = obj.size / 2
            inside = np.isfinite(t) & (t < distance) & (abs(a) < half) & (abs(b) < half)
            th, tw = obj.texture.shape[:2]
            rows = np.clip(((0.5 - a / obj.size) * th).astype(int), 0, th - 1)
            cols = np.clip(((0.5 + b / obj.size) * tw).astype(int), 0, tw - 1)
            colour = np.where(inside[..., None], obj.texture[rows, cols], colour)
            distance = np.where(inside, t, distance)
        if self.weather_enabled:
            colour = self._weather(colour, distance, origin, rotation)
        colour = colour.reshape(self.height, s, self.width, s, 3).mean(axis=(1, 3))
        return (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8), origin, rotation

    def _weather(self, colour: np.ndarray, distance: np.ndarray, origin: np.ndarray,
                 rotation: np.ndarray) -> np.ndarray:
        far = np.where(np.isfinite(distance), distance, 1e6)[..., None]
        for name, (tint, density) in HAZE.items():
            level = self.weather.get(name, 0.0)
            if level > 0:
                colour = colour + (np.array(tint) - colour) * (1 - np.exp(-density * level * far))
        rng = np.random.default_rng(zlib.crc32(np.concatenate([origin, rotation.ravel()]).tobytes()) + self.seed)
        snow = self.weather.get("snow", 0.0)
        if snow > 0:
            colour = np.where(rng.random(colour.shape[:2])[..., None] < 0.05 * snow, 0.97, colour)
        rain = self.weather.get("rain", 0.0)
        if rain > 0:
            streaks = rng.random(colour.shape[1]) < 0.15 * rain
            colour = colour * (1 - 0.3 * rain) + 0.25 * rain * streaks[None, :, None]
        return colour

    # the drone ---------------------------------------------------------------------------------------
    def enableApiControl(self, is_enabled: bool, *rest: Any) -> None:  # noqa: N802
        self.calls["enableApiControl"] += 1
        self.api_control = bool(is_enabled)

    def isApiControlEnabled(self, *rest: Any) -> bool:  # noqa: N802
        return self.api_control

    def armDisarm(self, arm: bool, *rest: Any) -> bool:  # noqa: N802
        self.calls["armDisarm"] += 1
        self.armed = bool(arm)
        return True

    def takeoff(self, *rest: Any) -> bool:
        self.calls["takeoff"] += 1
        with self.lock:
            self.position = np.array([self.position[0], self.position[1], min(self.position[2], -3.0)])
            self.velocity = np.zeros(3)
            self.clock_ns += 3 * 10**9
        return True

    def land(self, *rest: Any) -> bool:
        self.calls["land"] += 1
        with self.lock:
            self.position = np.array([self.position[0], self.position[1], 0.0])
            self.velocity = np.zeros(3)
        return True

    def moveByVelocity(self, vx: float, vy: float, vz: float, duration: float, *rest: Any) -> bool:  # noqa: N802
        self.calls["moveByVelocity"] += 1
        command = np.array([vx, vy, vz], dtype=float)
        steps = max(1, round(float(duration) / 0.01))
        h = float(duration) / steps
        blend = 1 - math.exp(-h / self.response_time) if self.response_time > 0 else 1.0
        with self.lock:
            for _ in range(steps):
                self.velocity = self.velocity + (command - self.velocity) * blend
                self.position = self.position + self.velocity * h
                if self.position[2] > 0:  # the ground
                    self.position[2] = 0.0
                    self.velocity[2] = 0.0
            self.clock_ns += int(float(duration) * 1e9)
        return True

    def getMultirotorState(self, *rest: Any) -> dict[str, Any]:  # noqa: N802
        self.calls["getMultirotorState"] += 1
        zero = _vec(np.zeros(3))
        return {"collision": {"has_collided": False}, "timestamp": self.clock_ns,
                "kinematics_estimated": {"position": _vec(self.position), "orientation": _quat(self.orientation),
                                         "linear_velocity": _vec(self.velocity), "angular_velocity": zero,
                                         "linear_acceleration": zero, "angular_acceleration": zero},
                "gps_location": {"latitude": 0.0, "longitude": 0.0, "altitude": 0.0},
                "landed_state": 0 if self.position[2] >= -1e-3 else 1, "rc_data": {}, "ready": True,
                "ready_message": "", "can_arm": True}


def _ground(points: np.ndarray) -> np.ndarray:
    """Grass-grey 1 m checker with 25 cm value noise (deterministic in the point)."""
    x, y = points[..., 0], points[..., 1]
    checker = (np.floor(x).astype(np.int64) + np.floor(y).astype(np.int64)) % 2
    cells = (np.floor(x * 4).astype(np.int64) * 73856093) ^ (np.floor(y * 4).astype(np.int64) * 19349663)
    noise = (cells % 1000) / 1000.0 - 0.5
    value = 0.04 * (checker - 0.5) + 0.05 * noise
    return np.array([0.40, 0.46, 0.34]) + value[..., None]


def _yaw(quaternion: np.ndarray) -> tuple[float, float]:
    forward = rotation_matrix(quaternion)[:, 0]
    yaw = math.atan2(forward[1], forward[0])
    return math.cos(yaw), math.sin(yaw)


def _matrix_quaternion(m: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a rotation matrix (Shepperd's method)."""
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2 * math.sqrt(trace + 1)
        return np.array([s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s])
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2 * math.sqrt(max(1e-12, 1 + m[i, i] - m[j, j] - m[k, k]))
    q = np.zeros(4)
    q[0] = (m[k, j] - m[j, k]) / s
    q[1 + i] = s / 4
    q[1 + j] = (m[j, i] + m[i, j]) / s
    q[1 + k] = (m[k, i] + m[i, k]) / s
    return q


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


# ----------------------------------------------------------------------------------------- the server

class FakeServer:
    """``msgpackrpc.Server`` over a :class:`FakeSimulator`, bound to ``host:port`` (``port=0``: a free one).

    ``serve_forever()`` blocks the calling thread; ``start()`` serves from a daemon thread and
    returns once the port is bound; ``stop()`` ends either.
    """

    def __init__(self, sim: FakeSimulator | None = None, host: str = "127.0.0.1", port: int = 0):
        self.sim = sim if sim is not None else FakeSimulator()
        self.host = host
        self.port = port
        self._server = None
        self._ioloop = None
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._error: BaseException | None = None

    def _bind(self) -> None:
        try:
            import msgpackrpc
            from msgpackrpc.transport import tcp
            from tornado.netutil import bind_sockets
        except ImportError:
            raise MissingBackend("serve-fake needs msgpackrpc (installed with the AirSim client: "
                                 "pip install 'confidently[sim]')") from None

        outer = self

        class BoundTransport(tcp.ServerTransport):
            """msgpackrpc's transport listens on every interface; this one binds the host asked for."""

            def listen(self, server):
                self._server = server
                self._mp_server = tcp.MessagePackServer(self)
                sockets = bind_sockets(outer.port, address=outer.host)
                outer.port = sockets[0].getsockname()[1]
                self._mp_server.add_sockets(sockets)

        class Builder:
            ServerTransport = BoundTransport

        self._server = msgpackrpc.Server(self.sim, builder=Builder)
        self._server.listen(msgpackrpc.Address(self.host, self.port))
        self._ioloop = self._server._loop._ioloop

    def serve_forever(self) -> None:
        if self._server is None:
            self._bind()
        self._bound.set()
        self._server.start()

    def start(self) -> FakeServer:
        def run() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            try:
                self._bind()
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                self._error = exc
                self._bound.set()
                return
            self.serve_forever()

        self._thread = threading.Thread(target=run, name="fake-airsim", daemon=True)
        self._thread.start()
        self._bound.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._ioloop is None:
            return

        def halt() -> None:
            with contextlib.suppress(Exception):
                self._server.close()
            self._server.stop()

        self._ioloop.add_callback(halt)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeServer:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_fake(host: str = "127.0.0.1", port: int = 0, *, sim: FakeSimulator | None = None,
               background: bool = False) -> FakeServer:
    """Bind a fake simulator; ``background=True`` serves from a thread and returns at once,
    otherwise the caller runs ``serve_forever()`` (after reading ``.port``)."""
    server = FakeServer(sim, host, port)
    if background:
        return server.start()
    server._bind()
    return server
