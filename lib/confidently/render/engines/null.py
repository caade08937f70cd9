"""The ``null`` engine: a few-millisecond point-splat "renderer" for pipeline tests, no bpy or Mitsuba.

It is not a renderer of record — it exists so policies, scheduling, logging and analyses can be tested
in milliseconds — but it draws the scene the way the real engines do, so every SceneState field shows
in its pixels: the object is a cloud of surface points (procedural shapes, or the vertices/triangles
of an .obj/.ply), rotated, scaled and offset, seen by a pinhole camera placed along ``view_point`` at
the distance where the bounding sphere just fits the frame at zoom 1, splatted with a z-buffer,
lambert-shaded under the light's intensity and colour, tinted by the texture (or a faint UV checker,
so orientation shows even on a sphere), blurred by a finite aperture, shifted in the frame, composited
over the environment, with a little sample noise seeded by the render seed. Deterministic for a seed.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from pathlib import Path
from typing import Any

import torch

from confidently import __version__
from confidently.errors import InvalidInput, UsageError
from confidently.render.scene import Engine, EnvironmentSpec, ObjectSpec, RenderArgs, SceneState

BUILTIN_SHAPES = ("sphere", "cube", "cylinder", "cone", "torus", "mug", "hammer", "rectangle")
PROCEDURAL_BACKDROPS = ("gradient", "checker", "stripes", "noise")
MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".blend", ".stl")
SENSOR_MM = 36.0
MARGIN = 1.1
POINTS_AT_64 = 5000
LIGHT_DIR = (-0.4, 0.5, 0.77)  # in camera coordinates (right, up, towards the camera)
AMBIENT = 0.35


def _generator(*keys: object) -> torch.Generator:
    digest = hashlib.sha256(":".join(map(str, keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _sphere(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    ring = (1 - z * z).clamp_min(0).sqrt()
    p = torch.stack([ring * torch.cos(phi), ring * torch.sin(phi), z], 1)
    uv = torch.stack([(torch.atan2(p[:, 1], p[:, 0]) / (2 * math.pi)) % 1, torch.acos(z.clamp(-1, 1)) / math.pi], 1)
    return p, p.clone(), uv


def _box(n: int, half: tuple[float, float, float], g: torch.Generator, center=(0.0, 0.0, 0.0)):
    hx, hy, hz = half
    areas = torch.tensor([hy * hz, hy * hz, hx * hz, hx * hz, hx * hy, hx * hy], dtype=torch.float64)
    face = torch.multinomial(areas / areas.sum(), n, replacement=True, generator=g)
    a, b = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    axis, sign = face // 2, 1.0 - 2.0 * (face % 2).double()
    p = torch.empty(n, 3, dtype=torch.float64)
    normal = torch.zeros(n, 3, dtype=torch.float64)
    hs = torch.tensor(half, dtype=torch.float64)
    others = torch.tensor([[1, 2], [0, 2], [0, 1]])[axis]
    p[torch.arange(n), axis] = sign * hs[axis]
    p[torch.arange(n), others[:, 0]] = (2 * a - 1) * hs[others[:, 0]]
    p[torch.arange(n), others[:, 1]] = (2 * b - 1) * hs[others[:, 1]]
    normal[torch.arange(n), axis] = sign
    uv = torch.stack([(a + face.double()) / 6, b], 1)
    return p + torch.tensor(center, dtype=torch.float64), normal, uv


def _cylinder(n: int, radius: float, half_height: float, g: torch.Generator, caps: bool = True):
    side = 2 * math.pi * radius * 2 * half_height
    cap = math.pi * radius**2 if caps else 0.0
    n_side = max(1, int(n * side / (side + 2 * cap)))
    t = torch.rand(n_side, generator=g, dtype=torch.float64) * 2 * math.pi
    h = (torch.rand(n_side, generator=g, dtype=torch.float64) * 2 - 1) * half_height
    p = torch.stack([radius * torch.cos(t), radius * torch.sin(t), h], 1)
    normal = torch.stack([torch.cos(t), torch.sin(t), torch.zeros_like(t)], 1)
    uv = torch.stack([t / (2 * math.pi), (h / half_height + 1) / 2], 1)
    parts = [(p, normal, uv)]
    if caps:
        for sign in (-1.0, 1.0):
            m = (n - n_side) // 2
            r = radius * torch.rand(m, generator=g, dtype=torch.float64).sqrt()
            a = torch.rand(m, generator=g, dtype=torch.float64) * 2 * math.pi
            cp = torch.stack([r * torch.cos(a), r * torch.sin(a), torch.full_like(r, sign * half_height)], 1)
            cn = torch.zeros_like(cp)
            cn[:, 2] = sign
            parts.append((cp, cn, torch.stack([0.5 + cp[:, 0] / 2, 0.5 + cp[:, 1] / 2], 1)))
    return tuple(torch.cat(x) for x in zip(*parts, strict=True))


def _torus(n: int, major: float, minor: float, g: torch.Generator, center=(0.0, 0.0, 0.0), axis: str = "z"):
    u = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    v = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    ring = major + minor * torch.cos(v)
    p = torch.stack([ring * torch.cos(u), ring * torch.sin(u), minor * torch.sin(v)], 1)
    normal = torch.stack([torch.cos(v) * torch.cos(u), torch.cos(v) * torch.sin(u), torch.sin(v)], 1)
    if axis == "y":  # the handle of a mug stands upright in the x-z plane
        p, normal = p[:, [0, 2, 1]], normal[:, [0, 2, 1]]
    uv = torch.stack([u / (2 * math.pi), v / (2 * math.pi)], 1)
    return p + torch.tensor(center, dtype=torch.float64), normal, uv


def _cone(n: int, g: torch.Generator):
    t = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    s = torch.rand(n, generator=g, dtype=torch.float64).sqrt()  # area-uniform along the slant
    p = torch.stack([s * torch.cos(t), s * torch.sin(t), 1 - 2 * s], 1)
    normal = _unit(torch.stack([2 * torch.cos(t), 2 * torch.sin(t), torch.ones_like(t)], 1))
    return p, normal, torch.stack([t / (2 * math.pi), s], 1)


def builtin_points(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Surface points, outward normals and UVs of a procedural object (before normalisation)."""
    g = _generator("null-shape", name)
    if name == "sphere":
        return _sphere(n)
    if name == "cube":
        return _box(n, (1.0, 1.0, 1.0), g)
    if name == "rectangle":  # a flat square in the x-y plane facing +z
        return _box(n, (1.0, 1.0, 0.002), g)
    if name == "cylinder":
        return _cylinder(n, 0.6, 1.0, g)
    if name == "cone":
        return _cone(n, g)
    if name == "torus":
        return _torus(n, 1.0, 0.35, g)
    if name == "mug":
        body = _cylinder(int(n * 0.75), 0.6, 0.8, g)
        handle = _torus(n - len(body[0]), 0.35, 0.09, g, center=(0.75, 0.0, 0.0), axis="y")
        return tuple(torch.cat(x) for x in zip(body, handle, strict=True))
    if name == "hammer":
        head = _box(n // 2, (0.7, 0.22, 0.22), g, center=(0.0, 0.0, 0.8))
        stick = _box(n - n // 2, (0.09, 0.09, 1.0), g, center=(0.0, 0.0, -0.2))
        return tuple(torch.cat(x) for x in zip(head, stick, strict=True))
    raise UsageError(f"unknown built-in object {name!r}; choose {', '.join(BUILTIN_SHAPES)}")


def _read_mesh(path: Path) -> tuple[torch.Tensor, list[list[int]]]:
    """Vertices and faces of an OBJ or ASCII PLY (enough for the null engine's point cloud)."""
    vertices: list[list[float]] = []
    faces: list[list[int]] = []
    text = path.read_text(errors="replace")
    if path.suffix.lower() == ".obj":
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["v"] and len(parts) >= 4:
                vertices.append([float(x) for x in parts[1:4]])
            elif parts[:1] == ["f"] and len(parts) >= 4:
                faces.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
    else:
        lines = text.splitlines()
        count, faces_count, start = 0, 0, None
        for i, line in enumerate(lines):
            if line.startswith("element vertex"):
                count = int(line.split()[-1])
            elif line.startswith("element face"):
                faces_count = int(line.split()[-1])
            elif line.strip() == "end_header":
                start = i + 1
                break
        if start is None or "format ascii" not in text[:200]:
            raise ValueError("only ASCII PLY")
        vertices = [[float(x) for x in lines[start + i].split()[:3]] for i in range(count)]
        faces = [[int(x) for x in lines[start + count + i].split()[1:]] for i in range(faces_count)]
    if not vertices:
        raise ValueError("no vertices")
    return torch.tensor(vertices, dtype=torch.float64), faces


def mesh_points(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points on a mesh file's triangles (area-weighted); formats it cannot parse get a blob from the file hash."""
    if not path.is_file():
        raise InvalidInput(f"mesh file {path} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    g = _generator("null-mesh", digest)
    try:
        vertices, faces = _read_mesh(path) if path.suffix.lower() in (".obj", ".ply") else (None, [])
    except (ValueError, IndexError, UnicodeDecodeError):
        vertices, faces = None, []
    if vertices is None:  # a format the null engine does not parse (.glb, .blend, binary PLY): a seeded blob
        p, normal, uv = _sphere(n)
        bumps = 1 + 0.25 * torch.sin(3 * p[:, 0] + 6 * torch.rand(1, generator=g).item()) \
            * torch.cos(2 * p[:, 2] + 6 * torch.rand(1, generator=g).item())
        return p * bumps.unsqueeze(1), normal, uv
    triangles = [(f[0], f[i], f[i + 1]) for f in faces for i in range(1, len(f) - 1)]
    if not triangles:
        return vertices, _unit(vertices - vertices.mean(0)), torch.zeros(len(vertices), 2, dtype=torch.float64)
    tri = torch.tensor(triangles, dtype=torch.long)
    a, b, c = vertices[tri[:, 0]], vertices[tri[:, 1]], vertices[tri[:, 2]]
    cross = torch.linalg.cross(b - a, c - a)
    area = cross.norm(dim=1)
    pick = torch.multinomial(area / area.sum().clamp_min(1e-12), n, replacement=True, generator=g)
    r1, r2 = torch.rand(n, 1, generator=g, dtype=torch.float64).sqrt(), torch.rand(n, 1, generator=g,
                                                                                  dtype=torch.float64)
    p = (1 - r1) * a[pick] + r1 * (1 - r2) * b[pick] + r1 * r2 * c[pick]
    return p, _unit(cross[pick]), torch.cat([r1, r2], 1)


def backdrop(environment: EnvironmentSpec, size: int) -> torch.Tensor:
    """The environment as a 3×size×size image: solid colour, a procedural pattern, or an image file."""
    if environment.solid is not None:
        return torch.tensor(environment.solid, dtype=torch.float32).view(3, 1, 1).expand(3, size, size).clone()
    if environment.path is not None:
        from confidently.io.images import decode_file

        path = Path(environment.path)
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
            raise UsageError(f"environment {environment.id!r}: the null engine reads PNG/JPEG backdrops, not "
                             f"{path.suffix} (use engine bpy or mitsuba for HDRIs)")
        image = decode_file(path, 3).unsqueeze(0)
        return torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False)[0].clamp(0, 1)
    name, _, arg = (environment.procedural or "").partition(":")
    if name not in PROCEDURAL_BACKDROPS:
        raise UsageError(f"environment {environment.id!r}: unknown procedural backdrop {environment.procedural!r}; "
                         f"choose {', '.join(PROCEDURAL_BACKDROPS)} (optionally NAME:FREQUENCY)")
    freq = float(arg) if arg else 4.0
    g = _generator("null-env", environment.id, environment.procedural)
    hue = torch.rand(1, generator=g).item()
    one = torch.tensor(colorsys.hsv_to_rgb(hue, 0.5, 0.9), dtype=torch.float32).view(3, 1, 1)
    two = torch.tensor(colorsys.hsv_to_rgb((hue + 0.5) % 1, 0.6, 0.35), dtype=torch.float32).view(3, 1, 1)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    if name == "gradient":
        weight = ys
    elif name == "checker":
        weight = ((xs * freq).floor() + (ys * freq).floor()) % 2
    elif name == "stripes":
        weight = (torch.sin(2 * math.pi * freq * (xs + 0.3 * ys)) > 0).float()
    else:
        coarse = torch.rand(1, 1, max(2, int(freq)), max(2, int(freq)), generator=g)
        weight = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return (one * (1 - weight) + two * weight).clamp(0, 1)


def rotation_matrix(rx: float, ry: float, rz: float) -> torch.Tensor:
    """Euler XYZ (Blender's default mode): R = Rz · Ry · Rx."""
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    x = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    y = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    z = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return z @ y @ x


def camera_frame(view_point: tuple[float, float, float], zoom: float, focal_length: float,
                 target: tuple[float, float, float]):
    """Camera centre, (right, up, forward) axes and the tangent of half the field of view, for a camera along
    ``view_point`` from ``target`` looking at it."""
    direction = torch.tensor(view_point, dtype=torch.float64)
    if float(direction.norm()) < 1e-9:
        direction = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    direction = _unit(direction)
    half_fov = math.atan(SENSOR_MM / 2 / focal_length)
    distance = MARGIN / math.sin(half_fov) / zoom
    forward = -direction
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    if float(torch.linalg.cross(forward, up).norm()) < 1e-6:
        up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    right = _unit(torch.linalg.cross(forward, up))
    true_up = torch.linalg.cross(right, forward)
    return torch.tensor(target, dtype=torch.float64) + direction * distance, right, true_up, forward, math.tan(half_fov)


class NullEngine(Engine):
    """Synthetic renders in milliseconds whose pixels depend on every SceneState field (see module doc)."""

    name = "null"
    fields = frozenset({"view_point", "zoom", "focal_length", "aperture", "frame_shift", "rotation", "offset",
                        "aim", "scale", "texture", "light", "light_color"})
    builtins = BUILTIN_SHAPES

    def __init__(self, **_: Any):
        self.obj: ObjectSpec | None = None
        self.args = RenderArgs()

    def load(self, obj: ObjectSpec, environment: EnvironmentSpec, args: RenderArgs) -> None:
        count = max(800, int(POINTS_AT_64 * (args.resolution / 64) ** 2))
        points, normals, uv = (builtin_points(obj.builtin, count) if obj.builtin is not None
                               else mesh_points(Path(obj.path), count))
        center = (points.max(0).values + points.min(0).values) / 2
        points = points - center
        radius = float(points.norm(dim=1).max().clamp_min(1e-9))
        self.points, self.normals, self.uv = points / radius, _unit(normals), uv.clamp(0, 1)
        self.spacing = math.sqrt(4 * math.pi / len(points))  # about the distance between neighbouring points
        self.obj, self.environment, self.args = obj, environment, args
        self.background = backdrop(environment, args.resolution)
        label = obj.label[0] if isinstance(obj.label, list | tuple) else obj.label
        self.label = int(label)
        self.color = torch.tensor(obj.color, dtype=torch.float64)

    def render(self, state: SceneState, seed: int) -> dict[str, torch.Tensor]:
        if self.obj is None:
            raise RuntimeError("NullEngine.render before load")
        size = self.args.resolution
        rotation = rotation_matrix(*state.rotation)
        world = (self.points * state.scale) @ rotation.T + torch.tensor(state.offset, dtype=torch.float64)
        normals = self.normals @ rotation.T
        center, right, up, forward, tan_half = camera_frame(state.view_point, state.zoom, state.focal_length,
                                                            state.aim)
        rel = world - center
        depth = rel @ forward
        keep = depth > 1e-3
        focal_px = (size / 2) / tan_half
        px = size / 2 + focal_px * (rel @ right) / depth.clamp_min(1e-3) + state.frame_shift[0] * size / 2
        py = size / 2 - focal_px * (rel @ up) / depth.clamp_min(1e-3) - state.frame_shift[1] * size / 2
        # shading: lambert in camera space, normals turned towards the camera (open shapes show both sides)
        cam_normals = torch.stack([normals @ right, normals @ up, -(normals @ forward)], 1)
        cam_normals = torch.where(cam_normals[:, 2:3] < 0, -cam_normals, cam_normals)
        lambert = (cam_normals @ torch.tensor(LIGHT_DIR, dtype=torch.float64)).clamp_min(0)
        light = state.light * torch.tensor(state.light_color, dtype=torch.float64)
        albedo = self._albedo(state.texture)
        colour = (albedo * (AMBIENT + (1 - AMBIENT) * lambert).unsqueeze(1) * light).clamp(0, 1)
        # z-buffer splats: each point covers a square of about its projected spacing
        half = (self.spacing * state.scale * focal_px / depth.clamp_min(1e-3) * 0.75).clamp(0.5, 6.0)
        order = torch.argsort(depth, descending=True, stable=True)  # far first: nearer points get larger keys
        key = torch.empty_like(order)
        key[order] = torch.arange(1, len(order) + 1)
        pixels, keys = [], []
        reach_of = half.ceil().long()
        for reach in reach_of[keep].unique().tolist():  # one offset grid per splat size keeps the work small
            chosen = torch.nonzero(keep & (reach_of == reach)).flatten()
            offsets = torch.arange(-reach, reach + 1, dtype=torch.float32)
            oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
            ox, oy = ox.reshape(1, -1), oy.reshape(1, -1)
            h = half[chosen].float().unsqueeze(1)
            sx = (px[chosen].float().unsqueeze(1) + ox).floor().long()
            sy = (py[chosen].float().unsqueeze(1) + oy).floor().long()
            inside = (ox.abs() <= h) & (oy.abs() <= h) & (sx >= 0) & (sx < size) & (sy >= 0) & (sy < size)
            pixels.append((sy * size + sx)[inside])
            keys.append(key[chosen].unsqueeze(1).expand_as(sx)[inside])
        pixel = torch.cat(pixels) if pixels else torch.zeros(0, dtype=torch.long)
        point_keys = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long)
        best = torch.zeros(size * size, dtype=torch.long).scatter_reduce(0, pixel, point_keys, "amax")
        covered = best > 0
        winner = order[(best[covered] - 1)]
        rgb_obj = torch.zeros(3, size * size, dtype=torch.float64)
        rgb_obj[:, covered] = colour[winner].T
        alpha = covered.double().view(1, size, size)
        rgb_obj = rgb_obj.view(3, size, size)
        if state.aperture is not None:  # focused on the object: a small aperture number blurs its edges
            from confidently.data.corruptions import gaussian_blur_sigma

            sigma = min(4.0, 3.0 / max(state.aperture, 1e-3) * size / 64)
            if sigma > 0.05:
                blurred = gaussian_blur_sigma(torch.cat([rgb_obj, alpha]).unsqueeze(0).float(), sigma)[0].double()
                rgb_obj, alpha = blurred[:3], blurred[3:].clamp(0, 1)
        background = self.background.double()
        rgb = rgb_obj + (1 - alpha) * background if state.aperture is not None else \
            torch.where(covered.view(1, size, size), rgb_obj, background)
        noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(seed) & (2**63 - 1)),
                            dtype=torch.float64)
        rgb = (rgb + noise * (0.01 / math.sqrt(max(1, self.args.samples)))).clamp(0, 1)
        out = {"rgb": rgb.float(), "alpha": alpha.float()}
        if self.args.with_segmentation:
            seg = torch.full((1, size, size), -1, dtype=torch.int32)
            seg[alpha > 0.5] = self.label
            out["segmentation"] = seg
        if self.args.with_uv:
            uv = torch.zeros(2, size * size, dtype=torch.float64)
            uv[:, covered] = self.uv[winner].T
            out["uv"] = uv.view(2, size, size).float()
        if self.args.with_depth:
            d = torch.ones(size * size, dtype=torch.float64)
            d[covered] = (depth[winner] / self.args.max_depth).clamp(0, 1)
            out["depth"] = d.view(1, size, size).float()
        return out

    def _albedo(self, texture: torch.Tensor | None) -> torch.Tensor:
        if texture is None:  # the object's colour with a faint UV checker, so every rotation shows
            checker = ((self.uv[:, 0] * 8).floor() + (self.uv[:, 1] * 4).floor()) % 2
            return self.color.unsqueeze(0) * (0.8 + 0.2 * checker).unsqueeze(1)
        side = texture.shape[-1]
        rows = (self.uv[:, 1] * side).long().clamp(0, side - 1)  # unadv-patch's convention: row = floor(v·s)
        cols = (self.uv[:, 0] * side).long().clamp(0, side - 1)
        return texture.double()[:, rows, cols].T

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "version": __version__, "resolution": self.args.resolution,
                "samples": self.args.samples}
