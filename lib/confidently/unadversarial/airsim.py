"""Evaluating unadversarial textures in AirSim through its official client (thesis App. C.1.2–C.1.3).

Evaluation only: the simulator never enters a gradient loop. Two experiments:

- :func:`grid_eval` — an object at N locations; around each, the camera on an n×n×n grid, aimed at the
  object; every frame classified; top-1 and top-k correct per frame, per texture arm and weather setting.
- :func:`land_episode` — a drone above a landing pad with a downward camera; a regressor maps each frame
  to the pad's position relative to the drone; a PID controller (``v = Kp·e + Kd·de/dt + Ki·∫e``) turns
  that into velocity commands until the drone is low enough to land; :func:`land_episodes` flies them for
  each texture arm × weather setting.

The client module is imported lazily (this module imports without it): Microsoft's ``airsim`` first,
else ``cosysairsim`` (the maintained fork's client, same API; the ``sim`` extra). Neither installed →
:class:`~confidently.errors.MissingBackend` (exit 3); no simulator at ``host:port`` →
:class:`SimulatorUnreachable` (exit 3), after ``connect_timeout`` seconds at most.

Conventions are AirSim's: world frame NED in metres (x north, y east, z down), quaternions (w, x, y, z),
a camera looks along its body x axis. Images come back as BGR uint8 ``height×width×3`` and are returned
here as RGB float ``3×H×W`` in [0, 1].

Pad regressors: a model file in the project's format whose 2 outputs are read as the pad's position
minus the drone's, world x (north) and y (east), in metres — ``num_classes == 2``, ``classes ==
["x_m", "y_m"]`` and ``training["task"] == "pad-xy-regression"`` (see :func:`mark_regressor`). The
``oracle`` regressor reads the same quantity from the simulator's ground truth instead of the image.

A server that answers the extra RPC ``confidentlyFakeInfo`` is this project's test double
(:mod:`confidently.unadversarial.airsim_fake`); records from it carry ``"simulator": "fake"``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import math
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from confidently.errors import ConfidentlyError, InvalidInput, MissingBackend, UsageError
from confidently.models.classifier import Classifier
from confidently.run.console import progress

CLIENT_MODULES = ("airsim", "cosysairsim")
DEFAULT_PORT = 41451
FAKE_INFO_RPC = "confidentlyFakeInfo"
# AirSim's WeatherParameter enum (identical in airsim 1.8 and cosysairsim).
WEATHER = {"rain": 0, "roadwetness": 1, "snow": 2, "roadsnow": 3, "mapleleaf": 4, "roadleaf": 5, "dust": 6,
           "fog": 7}
REGRESSOR_TASK = "pad-xy-regression"
REGRESSOR_OUTPUTS = ["x_m", "y_m"]


class SimulatorUnreachable(MissingBackend):
    """No simulator answered at the given address (exit 3)."""


class SimulatorError(ConfidentlyError):
    """A call to a connected simulator failed (exit 1)."""


def client_module() -> ModuleType:
    """The AirSim client module: ``airsim`` if installed, else ``cosysairsim``."""
    for name in CLIENT_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingBackend("the AirSim client is not installed: pip install 'confidently[sim]' (cosysairsim), "
                         "or airsim (see the README)")


# ----------------------------------------------------------------------------------------- geometry

def euler_quaternion(pitch: float, roll: float, yaw: float) -> tuple[float, float, float, float]:
    """(w, x, y, z) of yaw-pitch-roll angles in radians — AirSim's ``to_quaternion(pitch, roll, yaw)``."""
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    return (cy * cr * cp + sy * sr * sp, cy * sr * cp - sy * cr * sp, cy * cr * sp + sy * sr * cp,
            sy * cr * cp - cy * sr * sp)


def look_at_quaternion(position: Sequence[float], target: Sequence[float]) -> tuple[float, float, float, float]:
    """The orientation (w, x, y, z) whose body x axis points from ``position`` to ``target`` (no roll)."""
    dx, dy, dz = (float(t) - float(p) for p, t in zip(position, target, strict=True))
    yaw = math.atan2(dy, dx)
    pitch = math.atan2(-dz, math.hypot(dx, dy))  # NED: a target below (dz > 0) pitches the nose down
    return euler_quaternion(pitch, 0.0, yaw)


def rotation_matrix(quaternion: Sequence[float]) -> np.ndarray:
    """Body→world rotation of a (w, x, y, z) quaternion."""
    w, x, y, z = (float(v) for v in quaternion)
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def parse_weather(specs: Sequence[str] | None) -> list[dict[str, float]]:
    """``["fog:0,0.25,0.5", "dust:0.3"]`` → ``[{"fog":0}, {"fog":0.25}, {"fog":0.5}, {"dust":0.3}]``.

    Each setting varies one parameter (the others at 0); no spec → one clear-weather setting ``{}``.
    Several specs may share one string, separated by spaces.
    """
    settings: list[dict[str, float]] = []
    for spec in (part for text in specs or [] for part in text.split()):
        name, _, values = spec.partition(":")
        name = name.strip().lower()
        if name not in WEATHER or not values:
            raise UsageError(f"--weather {spec!r}: expected NAME:V1,V2,... with NAME one of {', '.join(WEATHER)}")
        try:
            levels = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--weather {spec!r}: severities are numbers in [0, 1]") from None
        if not levels or any(not 0 <= v <= 1 for v in levels):
            raise UsageError(f"--weather {spec!r}: severities are numbers in [0, 1]")
        settings.extend({name: v} for v in levels)
    return settings or [{}]


# ----------------------------------------------------------------------------------------- the adapter

def _describe_socket_error(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or type(exc).__name__


class Simulator:
    """A connected AirSim client with the handful of calls the experiments use.

    Build it with :meth:`connect`. ``kind`` is ``"fake"`` for this project's test double, else
    ``"airsim"``; every record written from a session carries it.
    """

    def __init__(self, client: Any, module: ModuleType, host: str, port: int, fake_info: dict | None):
        self.client = client
        self.module = module
        self.host = host
        self.port = port
        self.fake_info = fake_info
        self._weather_set: set[str] = set()

    @property
    def kind(self) -> str:
        return "fake" if self.fake_info is not None else "airsim"

    @classmethod
    def connect(cls, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, connect_timeout: float = 10.0,
                timeout: float = 60.0) -> Simulator:
        """Connect, or raise :class:`SimulatorUnreachable` naming ``host:port`` within ``connect_timeout``."""
        module = client_module()
        where = f"{host}:{port}"
        hint = "start the simulator (or `unadv-patch airsim serve-fake`) and check --host/--port"
        try:  # the client retries silently; a plain socket gives a fast, clear answer
            with socket.create_connection((host, port), timeout=connect_timeout):
                pass
        except OSError as exc:
            raise SimulatorUnreachable(f"no AirSim simulator answers at {where} ({_describe_socket_error(exc)}, "
                                       f"--connect-timeout {connect_timeout:g} s); {hint}") from None
        client = module.MultirotorClient(ip=host, port=port, timeout_value=max(1, math.ceil(timeout)))
        rpc = client.client
        saved = getattr(rpc, "_timeout", None)
        try:
            if saved is not None:  # the handshake waits connect_timeout, later calls `timeout`
                rpc._timeout = max(1, math.ceil(connect_timeout))
            client.ping()
        except Exception as exc:  # noqa: BLE001 - msgpackrpc's errors share no useful base class
            _close_client(client)
            raise SimulatorUnreachable(f"{where} accepts connections but does not answer AirSim's ping "
                                       f"({type(exc).__name__}: {exc}); {hint}") from None
        finally:
            if saved is not None:
                rpc._timeout = saved
        try:
            info = rpc.call(FAKE_INFO_RPC)
            fake_info = dict(info) if isinstance(info, dict) else None
        except Exception:  # noqa: BLE001 - a real AirSim answers "no such function"
            fake_info = None
        return cls(client, module, host, port, fake_info)

    def close(self) -> None:
        _close_client(self.client)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, *args: Any) -> Any:
        """``client.method(*args)`` with failures turned into one-line :class:`SimulatorError` s."""
        try:
            return getattr(self.client, method)(*args)
        except ConfidentlyError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SimulatorError(f"AirSim call {method} at {self.host}:{self.port} failed: "
                                 f"{type(exc).__name__}: {exc}") from None

    def confirm(self) -> str:
        """The client's ``confirmConnection()`` handshake; returns what it printed (never on stdout)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.call("confirmConnection")
        return out.getvalue().strip()

    # poses ----------------------------------------------------------------------------------------
    def pose(self, xyz: Sequence[float], quaternion: Sequence[float] = (1.0, 0.0, 0.0, 0.0)) -> Any:
        w, x, y, z = (float(v) for v in quaternion)
        m = self.module
        return m.Pose(m.Vector3r(*(float(v) for v in xyz)), m.Quaternionr(x, y, z, w))

    @staticmethod
    def _xyz(pose: Any) -> np.ndarray:
        p = pose.position
        return np.array([float(p.x_val), float(p.y_val), float(p.z_val)])

    def set_vehicle_pose(self, xyz: Sequence[float], quaternion: Sequence[float] = (1.0, 0.0, 0.0, 0.0)) -> None:
        self.call("simSetVehiclePose", self.pose(xyz, quaternion), True)

    def vehicle_position(self) -> np.ndarray:
        return self._xyz(self.call("simGetVehiclePose"))

    def set_camera(self, camera: str = "0", pitch: float = 0.0, roll: float = 0.0, yaw: float = 0.0) -> None:
        """The camera's orientation relative to the vehicle (e.g. ``pitch=-π/2``: a downward gimbal)."""
        self.call("simSetCameraPose", camera, self.pose((0, 0, 0), euler_quaternion(pitch, roll, yaw)))

    def look_at(self, position: Sequence[float], target: Sequence[float]) -> None:
        """Move the vehicle (the free camera in ComputerVision mode) to ``position`` facing ``target``."""
        self.set_vehicle_pose(position, look_at_quaternion(position, target))

    def object_position(self, name: str) -> np.ndarray:
        xyz = self._xyz(self.call("simGetObjectPose", name))
        if not np.isfinite(xyz).all():
            raise InvalidInput(f"the simulator at {self.host}:{self.port} has no object named {name!r}",
                               field="object")
        return xyz

    def set_object_position(self, name: str, xyz: Sequence[float]) -> None:
        pose = self.call("simGetObjectPose", name)
        pose.position = self.module.Vector3r(*(float(v) for v in xyz))
        if not self.call("simSetObjectPose", name, pose, True):
            raise SimulatorError(f"the simulator did not move object {name!r} (is its Mobility 'movable'?)")

    def set_texture(self, name: str, png_path: str) -> None:
        """``simSetObjectMaterialFromTexture``; the path is read by the simulator, on its host."""
        if not self.call("simSetObjectMaterialFromTexture", name, str(png_path)):
            raise InvalidInput(f"the simulator did not apply texture {png_path} to object {name!r} "
                               "(the PNG must exist on the simulator's host)", field="texture")

    # images and weather ----------------------------------------------------------------------------
    def image(self, camera: str = "0") -> torch.Tensor:
        """One uncompressed Scene frame as RGB float 3×H×W in [0, 1] (AirSim sends BGR bytes)."""
        m = self.module
        responses = self.call("simGetImages", [m.ImageRequest(camera, m.ImageType.Scene, False, False)])
        if not responses:
            raise SimulatorError(f"the simulator returned no image for camera {camera!r}")
        return decode_frame(responses[0])

    def set_weather(self, weather: dict[str, float]) -> None:
        """Enable weather and set each named parameter; ones set before and absent now go to 0; ``{}`` disables."""
        if weather:
            self.call("simEnableWeather", True)
        for name in sorted(self._weather_set - set(weather)):
            self.call("simSetWeatherParameter", WEATHER[name], 0.0)
        for name, value in weather.items():
            self.call("simSetWeatherParameter", WEATHER[name], float(value))
        if not weather:  # also clears weather a previous session left behind
            self.call("simEnableWeather", False)
        self._weather_set = set(weather)

    # the drone -------------------------------------------------------------------------------------
    def arm(self) -> None:
        self.call("enableApiControl", True)
        self.call("armDisarm", True)

    def takeoff(self) -> None:
        self.call("takeoffAsync").join()

    def move_by_velocity(self, vx: float, vy: float, vz: float, duration: float) -> None:
        self.call("moveByVelocityAsync", float(vx), float(vy), float(vz), float(duration)).join()

    def land(self) -> None:
        self.call("landAsync").join()


def _close_client(client: Any) -> None:
    rpc = getattr(client, "client", None)
    with contextlib.suppress(Exception):
        rpc._loop.dettach_periodic_callback()  # the client polls its timeouts every second
    with contextlib.suppress(Exception):
        rpc.close()


def decode_frame(response: Any) -> torch.Tensor:
    """An ``ImageResponse`` (uint8 BGR or BGRA, height×width) → RGB float 3×H×W in [0, 1]."""
    data = response.image_data_uint8
    height, width = int(response.height), int(response.width)
    if isinstance(data, str):
        data = data.encode("latin-1")
    buffer = np.frombuffer(bytes(data), dtype=np.uint8) if isinstance(data, bytes | bytearray | memoryview) \
        else np.asarray(data, dtype=np.uint8)
    if height <= 0 or width <= 0 or buffer.size not in (height * width * 3, height * width * 4):
        raise SimulatorError(f"the simulator sent an image of {buffer.size} bytes for {height}×{width} pixels "
                             "(asked for an uncompressed Scene frame)")
    pixels = buffer.reshape(height, width, -1)[..., 2::-1]  # BGR(A) → RGB
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255.0)


def fit_to_model(images: torch.Tensor, model: Classifier) -> torch.Tensor:
    """Frames (N×3×H×W) resized (antialiased) and channel-matched to the model's input."""
    from confidently.io.images import to_channels

    channels, height, width = model.input_size
    if images.shape[1] != channels:
        images = torch.stack([to_channels(image, channels) for image in images])
    if tuple(images.shape[-2:]) != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1)


# ----------------------------------------------------------------------------------------- grid evaluation

@dataclass(frozen=True)
class GridSpec:
    """Where the object and the camera go (thesis: 5 locations × a 10×10×10 camera grid)."""

    locations: int = 5
    grid: int = 10
    spread: float = 5.0  # object locations: uniform in ±spread metres (x, y) around its starting place
    radius: float = 4.0  # camera grid half-width in x and y around the object, metres
    heights: tuple[float, float] = (2.0, 6.0)  # camera heights above the object, metres

    def __post_init__(self):
        if self.locations < 1 or self.grid < 1:
            raise UsageError("--locations and --grid must be at least 1")
        if not 0 < self.heights[0] <= self.heights[1]:
            raise UsageError(f"--heights {self.heights}: expected 0 < LOW <= HIGH metres above the object")


def object_locations(start: Sequence[float], spec: GridSpec, seed: int) -> list[np.ndarray]:
    """``spec.locations`` places for the object, each from (seed, location index): uniform in the square."""
    from confidently.run import record_generator

    places = []
    for index in range(spec.locations):
        offset = (torch.rand(2, generator=record_generator(seed, "airsim-location", index)) * 2 - 1) * spec.spread
        places.append(np.asarray(start, dtype=float) + np.array([float(offset[0]), float(offset[1]), 0.0]))
    return places


def camera_grid(center: Sequence[float], spec: GridSpec) -> list[np.ndarray]:
    """The n×n×n camera positions around ``center``: x and y in ±radius, height in ``heights`` (NED: z up is −)."""
    n = spec.grid
    sides = np.linspace(-spec.radius, spec.radius, n) if n > 1 else np.zeros(1)
    heights = np.linspace(*spec.heights, n) if n > 1 else np.array([sum(spec.heights) / 2])
    center = np.asarray(center, dtype=float)
    return [center + np.array([dx, dy, -h]) for dx, dy, h in itertools.product(sides, sides, heights)]


def _classify(model: Classifier, frames: list[torch.Tensor], class_id: int, topk: int) -> list[dict[str, Any]]:
    device = model.normalize.mean.device
    with torch.no_grad():
        logits = model(fit_to_model(torch.stack(frames), model).to(device)).float().cpu()
    top = logits.topk(min(topk, logits.shape[1]), dim=1).indices
    return [{"pred": int(row[0]), "top1": bool(row[0] == class_id), f"top{topk}_correct": bool((row == class_id).any())}
            for row in top]


def each_arm_and_weather(sim: Simulator, target: str, arms: dict[str, str | None],
                         weather: Sequence[dict[str, float]]) -> Iterator[tuple[str, dict[str, float]]]:
    """Every arm × weather setting in order, with the arm's texture put on ``target`` (None: left as it is)
    and the weather set in the simulator before it is yielded."""
    for arm, texture in arms.items():
        if texture is not None:
            sim.set_texture(target, texture)
        for setting in weather:
            sim.set_weather(setting)
            yield arm, setting


def grid_eval(sim: Simulator, model: Classifier, object_name: str, class_id: int, *,
              arms: dict[str, str | None], weather: Sequence[dict[str, float]] = ({},),
              spec: GridSpec = GridSpec(), topk: int = 5, seed: int = 0, batch_size: int = 64,
              camera: str = "0") -> Iterator[dict[str, Any]]:
    """One record per frame: the object at each location, the camera at each grid point aimed at it.

    ``arms`` maps an arm name to a texture PNG (on the simulator's host) or ``None`` (keep the scene's
    material); arms run in order, so put ``original`` first. The object goes back where it was.
    Record: ``{"cmd":"airsim-eval","simulator","arm","weather","location","object_xyz","cam_xyz",
    "grid_index","pred","top1",f"top{k}_correct"}`` (``top1``: the top-1 prediction is ``class_id``).
    """
    if not 0 <= class_id < model.num_classes:
        raise UsageError(f"--class-id {class_id}: the model has classes 0..{model.num_classes - 1}")
    model.eval()
    start = sim.object_position(object_name)
    places = object_locations(start, spec, seed)
    sim.set_camera(camera)  # straight along the vehicle's axis: look_at aims the vehicle

    def frames() -> Iterator[dict[str, Any]]:
        for arm, setting in each_arm_and_weather(sim, object_name, arms, weather):
            for location, place in enumerate(places):
                sim.set_object_position(object_name, place)
                pending: list[tuple[dict[str, Any], torch.Tensor]] = []
                for index, cam in enumerate(camera_grid(place, spec)):
                    sim.look_at(cam, place)
                    pending.append(({"cmd": "airsim-eval", "simulator": sim.kind, "object": object_name,
                                     "class_id": class_id, "arm": arm, "weather": dict(setting),
                                     "location": location, "object_xyz": _rounded(place),
                                     "cam_xyz": _rounded(cam), "grid_index": index}, sim.image(camera)))
                    if len(pending) >= batch_size:
                        yield from _flush(model, pending, class_id, topk)
                        pending = []
                yield from _flush(model, pending, class_id, topk)

    total = len(arms) * len(weather) * len(places) * len(camera_grid(start, spec))
    try:
        yield from progress(frames(), total, "frames")
    finally:
        with contextlib.suppress(ConfidentlyError):
            sim.set_object_position(object_name, start)
        with contextlib.suppress(ConfidentlyError):
            sim.set_weather({})


def texture_arms(texture_png: str | None, original_png: str | None = None) -> dict[str, str | None]:
    """Arm → texture PNG as the simulator will read it: ``original`` (None: the scene's own material) first, then
    ``unadv`` when a texture is given. A path that exists here is made absolute, for a simulator on this machine;
    any other is passed on as a path on the simulator's host."""
    def on_host(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    arms = {"original": on_host(original_png)}
    if texture_png:
        arms["unadv"] = on_host(texture_png)
    return arms


def grid_eval_with_summaries(sim: Simulator, model: Classifier, object_name: str, class_id: int, *, topk: int = 5,
                             **grid: Any) -> Iterator[dict[str, Any]]:
    """:func:`grid_eval`'s frame records as they come (``grid``: its keyword arguments), then
    :func:`summarize_frames`' accuracy per arm × weather."""
    frames = []
    for record in grid_eval(sim, model, object_name, class_id, topk=topk, **grid):
        frames.append(record)
        yield record
    yield from summarize_frames(frames, topk)


def _flush(model, pending, class_id, topk):
    if not pending:
        return
    for (record, _), result in zip(pending, _classify(model, [f for _, f in pending], class_id, topk), strict=True):
        yield {**record, **result}


def _rounded(xyz: Sequence[float]) -> list[float]:
    return [round(float(v), 4) for v in xyz]


def summarize_frames(records: Sequence[dict[str, Any]], topk: int = 5) -> list[dict[str, Any]]:
    """Accuracy per (arm, weather) over grid-eval frame records, in first-seen order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        key = (record["arm"], repr(sorted(record["weather"].items())))
        groups.setdefault(key, []).append(record)
    rows = []
    for rows_of in groups.values():
        n = len(rows_of)
        rows.append({"cmd": "airsim-eval-summary", "simulator": rows_of[0]["simulator"], "arm": rows_of[0]["arm"],
                     "weather": rows_of[0]["weather"], "n": n,
                     "top1_acc": sum(r["top1"] for r in rows_of) / n,
                     f"top{topk}_acc": sum(r[f"top{topk}_correct"] for r in rows_of) / n})
    return rows


# ----------------------------------------------------------------------------------------- landing

@dataclass
class PID:
    """``v = Kp·e + Kd·de/dt + Ki·∫e`` per axis; de/dt by finite difference (0 on the first step)."""

    kp: float = 5.0
    kd: float = 5.0
    ki: float = 0.0

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        self._previous: np.ndarray | None = None
        self._integral = np.zeros(2)

    def step(self, error: Sequence[float], dt: float) -> np.ndarray:
        error = np.asarray(error, dtype=float)
        derivative = np.zeros_like(error) if self._previous is None else (error - self._previous) / dt
        self._integral = self._integral + error * dt
        self._previous = error.copy()
        return self.kp * error + self.kd * derivative + self.ki * self._integral


@dataclass(frozen=True)
class LandingConfig:
    """One landing episode: start above the pad, PID on the regressed offset while descending."""

    kp: float = 5.0
    kd: float = 5.0
    ki: float = 0.0
    dt: float = 0.1  # control period = duration of each velocity command, seconds
    start_alt: float = 5.0  # metres above the pad
    start_radius: float = 2.0  # horizontal start offset, uniform in a disc, metres
    descent: float = 0.5  # vertical speed while above land_alt, m/s
    land_alt: float = 0.5  # below this height the controller hands over to landAsync
    max_time: float = 30.0  # control time limit, seconds
    max_speed: float = 5.0  # horizontal speed limit, m/s
    success_radius: float = 0.5  # landed within this horizontal distance of the pad centre
    camera: str = "0"

    def __post_init__(self):
        if self.dt <= 0 or self.max_time <= 0 or self.descent <= 0 or self.start_alt <= self.land_alt:
            raise UsageError("landing needs --dt, --max-time, --descent > 0 and --start-alt > --land-alt")


class OracleRegressor:
    """The pad's offset from the simulator's ground truth (ignores the image): the controller's upper bound."""

    name = "oracle"

    def __init__(self, sim: Simulator, pad: str):
        self.sim, self.pad = sim, pad
        self.pad_xyz = sim.object_position(pad)

    def __call__(self, image: torch.Tensor) -> tuple[float, float]:
        offset = self.pad_xyz - self.sim.vehicle_position()
        return float(offset[0]), float(offset[1])


def mark_regressor(model: Classifier) -> Classifier:
    """Label a 2-output model as a pad regressor (outputs x_m, y_m) before ``save_model``."""
    if model.num_classes != 2:
        raise UsageError(f"a pad regressor has 2 outputs (x, y metres); this model has {model.num_classes}")
    model.classes = list(REGRESSOR_OUTPUTS)
    model.training_info.update({"task": REGRESSOR_TASK, "outputs": list(REGRESSOR_OUTPUTS),
                                "target": "pad position minus drone position, world x/y (NED), metres"})
    return model


class ModelRegressor:
    """A model file read as a regressor: output 0 = x (north), output 1 = y (east), metres."""

    def __init__(self, model: Classifier, name: str = "model"):
        if model.num_classes != 2 or model.training_info.get("task") != REGRESSOR_TASK:
            raise InvalidInput(f"{name} is not a pad regressor: expected 2 outputs and training.task "
                               f"{REGRESSOR_TASK!r} (see confidently.unadversarial.airsim.mark_regressor)",
                               field="regressor")
        self.model = model.eval()
        self.name = name

    def __call__(self, image: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            out = self.model(fit_to_model(image[None], self.model).to(self.model.normalize.mean.device))[0]
        return float(out[0]), float(out[1])


def load_regressor(path: str, device: str | torch.device = "cpu") -> ModelRegressor:
    from confidently.models import load_model

    return ModelRegressor(load_model(path, device), str(path))


def start_offset(seed: int, episode: int, radius: float) -> np.ndarray:
    """The episode's horizontal start offset, uniform in a disc, from (seed, episode) alone."""
    from confidently.run import record_generator

    u = torch.rand(2, generator=record_generator(seed, "airsim-land", episode), dtype=torch.float64)
    r, angle = radius * math.sqrt(float(u[0])), 2 * math.pi * float(u[1])
    return np.array([r * math.cos(angle), r * math.sin(angle)])


def land_episode(sim: Simulator, regressor: Callable[[torch.Tensor], Sequence[float]], pad: str,
                 config: LandingConfig = LandingConfig(), offset: Sequence[float] = (0.0, 0.0),
                 trace: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Fly one episode and land; returns ``landed``, ``final_err_m``, ``time_s`` (control time), ``steps``.

    ``landed``: the drone got below ``land_alt`` within ``max_time`` and touched down within
    ``success_radius`` of the pad centre (ground truth). ``trace`` (optional) collects per-step
    estimates, true errors and commands.
    """
    pad_xyz = sim.object_position(pad)
    sim.arm()
    sim.takeoff()
    sim.set_camera(config.camera, pitch=-math.pi / 2)  # gimballed, looking straight down, image top = north
    start = pad_xyz + np.array([offset[0], offset[1], -config.start_alt])
    sim.set_vehicle_pose(start)
    pid = PID(config.kp, config.kd, config.ki)
    steps, elapsed, started = 0, 0.0, time.perf_counter()
    while True:
        position = sim.vehicle_position()
        height = pad_xyz[2] - position[2]
        if height <= config.land_alt or elapsed >= config.max_time - 1e-9:
            break
        estimate = np.asarray(regressor(sim.image(config.camera)), dtype=float)[:2]
        velocity = pid.step(estimate, config.dt)
        speed = float(np.hypot(*velocity))
        if speed > config.max_speed:
            velocity *= config.max_speed / speed
        sim.move_by_velocity(velocity[0], velocity[1], config.descent, config.dt)
        if trace is not None:
            trace.append({"t": round(elapsed, 4), "estimate": estimate.tolist(), "v": velocity.tolist(),
                          "true": (pad_xyz[:2] - position[:2]).tolist(), "height": float(height)})
        steps += 1
        elapsed = steps * config.dt
    reached = height <= config.land_alt
    sim.land()
    final = sim.vehicle_position()
    error = float(np.hypot(*(final[:2] - pad_xyz[:2])))
    return {"landed": bool(reached and error <= config.success_radius), "final_err_m": round(error, 4),
            "time_s": round(elapsed, 4), "steps": steps, "reached_land_alt": bool(reached),
            "start_xyz": _rounded(start), "pad_xyz": _rounded(pad_xyz),
            "wall_s": round(time.perf_counter() - started, 3)}


def land_episodes(sim: Simulator, regressor: Callable[[torch.Tensor], Sequence[float]] | None, pad: str,
                  config: LandingConfig = LandingConfig(), *, arms: dict[str, str | None], episodes: int = 1,
                  weather: Sequence[dict[str, float]] = ({},), seed: int = 0) -> Iterator[dict[str, Any]]:
    """For each arm (the pad's texture, as :func:`texture_arms` gives them) × weather setting, ``episodes``
    landings from the same seeded starts (:func:`start_offset`), one record each, then a summary: the success
    rate, the mean control time of the landed ones and the mean final error. ``regressor`` None: the
    :class:`OracleRegressor`. The weather is cleared at the end, keeping the error that ended the run."""
    estimator = regressor if regressor is not None else OracleRegressor(sim, pad)
    try:
        for arm, setting in each_arm_and_weather(sim, pad, arms, weather):
            rows = []
            for episode in range(episodes):
                result = land_episode(sim, estimator, pad, config, start_offset(seed, episode, config.start_radius))
                rows.append(result)
                yield {"cmd": "airsim-land", "simulator": sim.kind, "pad": pad, "arm": arm, "weather": setting,
                       "episode": episode, **result}
            landed = [r for r in rows if r["landed"]]
            yield {"cmd": "airsim-land-summary", "simulator": sim.kind, "pad": pad, "arm": arm, "weather": setting,
                   "n": len(rows), "success_rate": len(landed) / len(rows),
                   "mean_time_s": sum(r["time_s"] for r in landed) / len(landed) if landed else None,
                   "mean_final_err_m": round(sum(r["final_err_m"] for r in rows) / len(rows), 4)}
    finally:
        with contextlib.suppress(Exception):
            sim.set_weather({})


def landing_views(sim: Simulator, pad: str, count: int, *, seed: int = 0, heights: tuple[float, float] = (1.0, 5.0),
                  cone_deg: float = 30.0, camera: str = "0") -> tuple[torch.Tensor, torch.Tensor]:
    """Training data for a pad regressor (thesis: images in a cone above the pad): N×3×H×W frames and
    N×2 targets (pad minus drone, x/y metres), each view from (seed, index)."""
    from confidently.run import record_generator

    pad_xyz = sim.object_position(pad)
    sim.set_camera(camera, pitch=-math.pi / 2)
    images, targets = [], []
    for index in range(count):
        u = torch.rand(3, generator=record_generator(seed, "airsim-view", index), dtype=torch.float64).tolist()
        height = heights[0] + (heights[1] - heights[0]) * u[0]
        r, angle = height * math.tan(math.radians(cone_deg)) * math.sqrt(u[1]), 2 * math.pi * u[2]
        offset = np.array([r * math.cos(angle), r * math.sin(angle)])
        sim.set_vehicle_pose(pad_xyz + np.array([offset[0], offset[1], -height]))
        images.append(sim.image(camera))
        targets.append(-offset)
    return torch.stack(images), torch.tensor(np.array(targets), dtype=torch.float32)
