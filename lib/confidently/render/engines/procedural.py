"""What the real render engines share, in numpy only: the built-in meshes, the procedural environment maps,
and the camera and object poses a ``SceneState`` asks for.

Both the Mitsuba and the Blender engine draw the *same* triangles with the *same* UVs for a built-in object
(Blender gets them through ``from_pydata``, Mitsuba through ``mi.Mesh``), so a texture fitted by one engine —
or by ``unadv-patch``, whose ``builtin:cube`` is Mitsuba's cube — lands on the same texels in the other.
Texture convention everywhere: texel row = floor(v·s), column = floor(u·s).

Built-in objects (same names and proportions as the ``null`` engine's, plus ``rectangle``):

* ``cube`` — [-1, 1]³ with Mitsuba's own per-face UV layout.
* ``sphere`` — UV sphere, u = φ/2π, v = θ/π (θ from +z): Mitsuba's analytic sphere's parametrisation.
* ``cylinder`` (radius 0.6, capped), ``cone`` (apex up), ``torus`` — surfaces of revolution, u = angle/2π,
  v = arc length along the profile from the bottom.
* ``mug`` — hollow body with a handle on +x: not symmetric about z, so its silhouette follows rotations.
* ``hammer`` — head and handle boxes (not symmetric either).
* ``rectangle`` — 2×2, standing in the x-z plane and facing −y (the default camera), u = (x+1)/2, v = (z+1)/2:
  Mitsuba's ``rectangle`` turned upright, so texture row 0 is at the bottom edge.

Environments are equirectangular maps (rows top→bottom, u = 0.5 looking along +x, as Blender's Environment
Texture reads them); Mitsuba's ``envmap`` gets ``ENVMAP_TO_WORLD`` to match.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from confidently.errors import InvalidInput, UsageError
from confidently.render.scene import SceneState

BUILTIN_OBJECTS = ("cube", "sphere", "cylinder", "cone", "torus", "mug", "hammer", "rectangle")
PROCEDURAL_ENVIRONMENTS = ("gradient", "checker", "stripes", "noise")
SENSOR_MM = 36.0
MAX_BOUNCES = 3  # light paths: direct light plus up to three bounces (Cycles' max_bounces; Mitsuba's max_depth − 1)
MARGIN = 1.1  # at zoom 1 the bounding sphere fills 1/MARGIN of the frame's half-width (as the null engine)
ENVMAP_SHAPE = (128, 256)  # rows × columns of a procedural environment map
# Mitsuba's envmap is y-up with u = 0.5 along its local +z; these columns send local x, y, z to world y, z, x.
ENVMAP_TO_WORLD = ((0.0, 0.0, 1.0, 0.0), (1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


@dataclass(frozen=True)
class TriangleMesh:
    """Triangles with per-vertex normals and UVs (vertices are split wherever normals or UVs jump)."""

    positions: np.ndarray  # V×3 float64
    normals: np.ndarray  # V×3, unit
    uvs: np.ndarray  # V×2
    faces: np.ndarray  # F×3 int64, counter-clockwise seen from where the normal points

    @staticmethod
    def join(*parts: TriangleMesh) -> TriangleMesh:
        offsets = np.cumsum([0] + [len(p.positions) for p in parts[:-1]])
        return TriangleMesh(np.concatenate([p.positions for p in parts]), np.concatenate([p.normals for p in parts]),
                            np.concatenate([p.uvs for p in parts]),
                            np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)]))

    def transformed(self, matrix: np.ndarray, translation=(0.0, 0.0, 0.0)) -> TriangleMesh:
        normals = self.normals @ np.linalg.inv(matrix)  # inverse transpose, applied to row vectors
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        faces = self.faces if np.linalg.det(matrix) > 0 else self.faces[:, ::-1]
        return TriangleMesh(self.positions @ matrix.T + np.asarray(translation), normals, self.uvs, faces.copy())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


def _drop_degenerate(mesh: TriangleMesh) -> TriangleMesh:
    p = mesh.positions[mesh.faces]
    area = np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    return TriangleMesh(mesh.positions, mesh.normals, mesh.uvs, mesh.faces[area > 1e-12])


def _revolve(strips: list[np.ndarray], segments: int, arc: tuple[float, float] = (0.0, 2 * math.pi),
             v_total: float | None = None) -> TriangleMesh:
    """A surface of revolution about z. Each strip is K×4 (r, z, n_r, n_z): profile points, bottom to top,
    with their outward normals in the profile plane; normals are smooth along a strip and jump between
    strips. u follows the angle over ``arc``, v the arc length along all strips (from the bottom)."""
    lengths = [np.linalg.norm(np.diff(s[:, :2], axis=0), axis=1) for s in strips]
    total = v_total or sum(float(x.sum()) for x in lengths)
    angles = np.linspace(arc[0], arc[1], segments + 1)
    parts, start = [], 0.0
    for strip, seg in zip(strips, lengths, strict=True):
        v = (start + np.concatenate([[0.0], np.cumsum(seg)])) / total
        start += float(seg.sum())
        c, s = np.cos(angles)[None, :], np.sin(angles)[None, :]
        r, z, nr, nz = (strip[:, i][:, None] for i in range(4))
        positions = np.stack([r * c, r * s, np.broadcast_to(z, (len(strip), len(angles)))], -1).reshape(-1, 3)
        normals = _unit(np.stack([nr * c, nr * s, np.broadcast_to(nz, (len(strip), len(angles)))], -1)).reshape(-1, 3)
        u = (angles - arc[0]) / (arc[1] - arc[0])
        uvs = np.stack([np.broadcast_to(u[None, :], (len(strip), len(angles))),
                        np.broadcast_to(v[:, None], (len(strip), len(angles)))], -1).reshape(-1, 2)
        k, j = np.meshgrid(np.arange(len(strip) - 1), np.arange(segments), indexing="ij")
        a, b = k * len(angles) + j, k * len(angles) + j + 1
        cc, d = b + len(angles), a + len(angles)
        faces = np.concatenate([np.stack([a, b, cc], -1).reshape(-1, 3), np.stack([a, cc, d], -1).reshape(-1, 3)])
        parts.append(TriangleMesh(positions, normals, uvs, faces.astype(np.int64)))
    return _drop_degenerate(TriangleMesh.join(*parts))


def _flat(points: list[tuple[float, float]]) -> np.ndarray:
    """A straight profile segment (or polyline of collinear points) with its constant outward normal."""
    p = np.asarray(points, dtype=np.float64)
    dr, dz = p[-1] - p[0]
    n = np.array([dz, -dr]) / math.hypot(dr, dz)
    return np.concatenate([p, np.broadcast_to(n, p.shape)], 1)


def _arc(center: tuple[float, float], radius: float, start: float, stop: float, steps: int) -> np.ndarray:
    """A circular profile arc, angles measured in the (r, z) plane from +r; normals point away from the centre."""
    t = np.linspace(start, stop, steps + 1)
    n = np.stack([np.cos(t), np.sin(t)], 1)
    return np.concatenate([np.asarray(center) + radius * n, n], 1)


# Mitsuba's cube: per face, four corners (position, uv); the face normal is the common coordinate.
_CUBE_FACES = (
    ((0, -1, 0), ((1, -1, -1), (1, -1, 1), (-1, -1, 1), (-1, -1, -1))),
    ((0, 1, 0), ((1, 1, -1), (-1, 1, -1), (-1, 1, 1), (1, 1, 1))),
    ((1, 0, 0), ((1, -1, -1), (1, 1, -1), (1, 1, 1), (1, -1, 1))),
    ((0, 0, 1), ((1, -1, 1), (1, 1, 1), (-1, 1, 1), (-1, -1, 1))),
    ((-1, 0, 0), ((-1, -1, 1), (-1, 1, 1), (-1, 1, -1), (-1, -1, -1))),
    ((0, 0, -1), ((1, 1, -1), (1, -1, -1), (-1, -1, -1), (-1, 1, -1))),
)
_CUBE_UVS = ((0, 1), (1, 1), (1, 0), (0, 0))


def _box(half=(1.0, 1.0, 1.0), center=(0.0, 0.0, 0.0)) -> TriangleMesh:
    positions, normals, uvs, faces = [], [], [], []
    for index, (normal, corners) in enumerate(_CUBE_FACES):
        positions += corners
        normals += [normal] * 4
        uvs += _CUBE_UVS
        faces += [(4 * index, 4 * index + 1, 4 * index + 2), (4 * index + 3, 4 * index, 4 * index + 2)]
    mesh = TriangleMesh(np.asarray(positions, dtype=np.float64), np.asarray(normals, dtype=np.float64),
                        np.asarray(uvs, dtype=np.float64), np.asarray(faces, dtype=np.int64))
    return mesh.transformed(np.diag(half), center)


def _sphere(segments: int) -> TriangleMesh:
    mesh = _revolve([_arc((0.0, 0.0), 1.0, -math.pi / 2, math.pi / 2, segments // 2)], segments)
    theta = np.arccos(np.clip(mesh.positions[:, 2], -1, 1))
    uvs = np.stack([mesh.uvs[:, 0], theta / math.pi], 1)  # Mitsuba's sphere: v = θ/π, 0 at the north pole
    return TriangleMesh(mesh.positions, _unit(mesh.positions), uvs, mesh.faces)


def _mug(segments: int) -> TriangleMesh:
    outer, inner, bottom, top = 0.6, 0.54, -0.8, 0.8
    body = _revolve([_flat([(0.0, bottom), (outer, bottom)]), _flat([(outer, bottom), (outer, top)]),
                     _flat([(outer, top), (inner, top)]), _flat([(inner, top), (inner, bottom + 0.08)]),
                     _flat([(inner, bottom + 0.08), (0.0, bottom + 0.08)])], segments)
    # the handle: part of a torus (major 0.35, minor 0.09) standing in the x-z plane at x = 0.75, whose ends
    # sink into the wall
    sweep = math.radians(118)
    tube = _revolve([_arc((0.35, 0.0), 0.09, -math.pi, math.pi, 12)], max(8, segments // 2), arc=(-sweep, sweep))
    upright = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # torus axis z → y
    return TriangleMesh.join(body, tube.transformed(upright, (0.75, 0.0, 0.0)))


def builtin_mesh(name: str, segments: int = 64) -> TriangleMesh:
    """The triangles of a built-in object, before normalisation to the unit bounding sphere."""
    if name == "cube":
        return _box()
    if name == "sphere":
        return _sphere(segments)
    if name == "cylinder":
        return _revolve([_flat([(0.0, -1.0), (0.6, -1.0)]), _flat([(0.6, -1.0), (0.6, 1.0)]),
                         _flat([(0.6, 1.0), (0.0, 1.0)])], segments)
    if name == "cone":
        slant = _flat([(1.0, -1.0), (0.0, 1.0)])
        return _revolve([_flat([(0.0, -1.0), (1.0, -1.0)]), slant], segments)
    if name == "torus":
        return _revolve([_arc((1.0, 0.0), 0.35, -math.pi, math.pi, 24)], segments)
    if name == "mug":
        return _mug(segments)
    if name == "hammer":
        return TriangleMesh.join(_box((0.7, 0.22, 0.22), (0.0, 0.0, 0.8)), _box((0.09, 0.09, 1.0), (0.0, 0.0, -0.2)))
    if name == "rectangle":
        return TriangleMesh(np.array([[-1.0, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]]), np.tile([0.0, -1, 0], (4, 1)),
                            np.array([[0.0, 0], [1, 0], [1, 1], [0, 1]]), np.array([[0, 1, 2], [0, 2, 3]]))
    raise UsageError(f"unknown built-in object {name!r}; choose {', '.join(BUILTIN_OBJECTS)}")


def bounding_sphere(positions: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (of the bounding box) and radius (farthest vertex from it): what normalisation divides by."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    center = (positions.min(0) + positions.max(0)) / 2
    return center, max(float(np.linalg.norm(positions - center, axis=1).max()), 1e-12)


# ---------------------------------------------------------------------------------------------- environments

def _colours(environment_id: str, procedural: str) -> tuple[np.ndarray, np.ndarray]:
    digest = hashlib.sha256(f"env:{environment_id}:{procedural}".encode()).digest()
    hue = int.from_bytes(digest[:4], "little") / 2**32
    one = np.array(colorsys.hsv_to_rgb(hue, 0.5, 0.9), dtype=np.float32)
    two = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1, 0.6, 0.35), dtype=np.float32)
    return one, two


def environment_map(environment_id: str, procedural: str, shape: tuple[int, int] = ENVMAP_SHAPE) -> np.ndarray:
    """An equirectangular H×W×3 float32 map (rows top→bottom, linear radiance) for ``NAME[:FREQUENCY]``."""
    name, _, arg = procedural.partition(":")
    if name not in PROCEDURAL_ENVIRONMENTS:
        raise UsageError(f"environment {environment_id!r}: unknown procedural environment {procedural!r}; choose "
                         f"{', '.join(PROCEDURAL_ENVIRONMENTS)} (optionally NAME:FREQUENCY)")
    try:
        freq = float(arg) if arg else 4.0
    except ValueError:
        raise UsageError(f"environment {environment_id!r}: frequency {arg!r} is not a number") from None
    height, width = shape
    v = (np.arange(height) + 0.5)[:, None] / height  # 0 at the zenith
    u = (np.arange(width) + 0.5)[None, :] / width
    one, two = _colours(environment_id, procedural)
    if name == "gradient":  # a sky: light at the horizon, darker towards the zenith and the ground
        weight = np.broadcast_to(np.abs(1 - 2 * v) ** 0.7, (height, width))
    elif name == "checker":
        weight = ((np.floor(u * 2 * freq) + np.floor(v * freq)) % 2).astype(np.float64)
    elif name == "stripes":
        weight = (np.sin(2 * math.pi * freq * (2 * u + 0.3 * v)) > 0).astype(np.float64)
    else:  # value noise, periodic in u
        digest = hashlib.sha256(f"noise:{environment_id}:{procedural}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        cells = max(2, int(freq))
        coarse = rng.random((cells + 1, 2 * cells))
        y, x = v[:, 0] * cells, u[0] * 2 * cells - 0.5
        y0, x0 = np.clip(np.floor(y).astype(int), 0, cells - 1), np.floor(x).astype(int)
        fy, fx = (y - y0)[:, None], (x - x0)[None, :]
        x0, x1 = x0 % (2 * cells), (x0 + 1) % (2 * cells)
        top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x1] * fx
        bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x1] * fx
        weight = top * (1 - fy) + bottom * fy
    return (one * (1 - weight[..., None]) + two * weight[..., None]).astype(np.float32)


# ---------------------------------------------------------------------------------------------- poses

def euler_xyz(rotation: tuple[float, float, float]) -> np.ndarray:
    """Blender's Euler XYZ mode: R = Rz · Ry · Rx (x applied first)."""
    rx, ry, rz = rotation
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def object_matrix(state: SceneState) -> np.ndarray:
    """4×4 placing the normalised object: scale, then rotation (Euler XYZ), then the offset."""
    if not state.scale > 0:
        raise UsageError(f"scale {state.scale}: must be positive")
    matrix = np.eye(4)
    matrix[:3, :3] = euler_xyz(state.rotation) * float(state.scale)
    matrix[:3, 3] = state.offset
    return matrix


@dataclass(frozen=True)
class CameraPose:
    origin: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    fov: float  # horizontal = vertical field of view (square frames), radians
    focus_distance: float  # to the object's centre, along the view axis

    def look_at(self) -> tuple[list[float], list[float], list[float]]:
        return self.origin.tolist(), (self.origin + self.forward).tolist(), self.up.tolist()

    def matrix(self) -> np.ndarray:
        """Camera-to-world 4×4 in Blender's convention: columns right, up, backward (−forward), origin."""
        out = np.eye(4)
        out[:3, 0], out[:3, 1], out[:3, 2], out[:3, 3] = self.right, self.up, -self.forward, self.origin
        return out


def fov_radians(focal_length: float) -> float:
    if focal_length <= 0:
        raise UsageError(f"focal_length {focal_length}: must be positive (mm on a 36 mm sensor)")
    return 2 * math.atan(SENSOR_MM / 2 / focal_length)


def camera_pose(state: SceneState) -> CameraPose:
    """Where the camera stands for ``state`` (spec §4.1): along ``view_point`` from ``aim`` (the object's centre
    when the camera control ran, as 3DB frames the object where the earlier controls moved it), at the distance
    where the unit bounding sphere fills 1/MARGIN of the frame at zoom 1 (closer for zoom > 1), looking at it
    with +z up; then moved parallel to the image plane so ``aim`` projects at ``frame_shift`` (x right, y up,
    both in [-1, 1]). Depth of field focuses on the object's centre, ``offset``."""
    if state.zoom <= 0:
        raise UsageError(f"zoom {state.zoom}: must be positive")
    direction = np.asarray(state.view_point, dtype=np.float64) + 1e-9  # the +ε of the spec: never zero
    direction = direction / np.linalg.norm(direction) if np.linalg.norm(direction) > 1e-6 else np.array([0, -1.0, 0])
    fov = fov_radians(state.focal_length)
    distance = MARGIN / math.sin(fov / 2) / state.zoom
    forward = -direction
    world_up = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.999 else np.array([0.0, 1.0, 0.0])
    right = _unit(np.cross(forward, world_up))
    up = np.cross(right, forward)
    half = distance * math.tan(fov / 2)
    shift_x, shift_y = state.frame_shift
    origin = np.asarray(state.aim, dtype=np.float64) + direction * distance - (shift_x * right + shift_y * up) * half
    target = np.asarray(state.offset, dtype=np.float64)
    return CameraPose(origin, right, up, forward, fov, max(float(np.dot(target - origin, forward)), 1e-3))


def aperture_radius(state: SceneState) -> float:
    """Lens radius in scene units (metres, as Blender's Cycles reads them): focal length / (2 · f-stop)."""
    if state.aperture is None:
        return 0.0
    if state.aperture <= 0:
        raise UsageError(f"aperture {state.aperture}: must be a positive f-stop")
    return state.focal_length * 1e-3 / (2 * state.aperture)


def srgb_encode(linear):
    """Blender's "Standard" view transform: clip to [0, 1], then the sRGB transfer curve (a numpy array, or a
    torch tensor, differentiable, for renders that are optimised through)."""
    if isinstance(linear, torch.Tensor):
        x = linear.clamp(0.0, 1.0)
        return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def texture_array(texture, label: str = "texture") -> np.ndarray:
    """A 3×s×s tensor (unadv-patch's convention) as an s×s×3 float32 array, row = floor(v·s)."""
    shape = tuple(texture.shape)
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or shape[1] < 1:
        raise InvalidInput(f"{label} of shape {list(shape)}: expected [3, s, s]")
    array = texture.detach().cpu().float().permute(1, 2, 0).contiguous().numpy()
    return np.clip(array, 0.0, 1.0)
