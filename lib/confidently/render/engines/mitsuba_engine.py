"""The ``mitsuba`` engine: Mitsuba 3 (``llvm_ad_rgb`` on the CPU, ``cuda_ad_rgb`` on a GPU), path traced.

One scene per (object, environment) pair, built with ``mi.load_dict``; every render only updates parameters
(``mi.traverse``): the thin-lens sensor's pose, field of view, aperture and focus; the object's vertex
positions and normals (or the analytic sphere's ``to_world``); the diffuse bitmap texture; the emitter's
radiance. So Dr.Jit compiles its kernels once per pair and a render costs milliseconds.

The environment is both the backdrop and the light (a ``constant`` emitter for a solid colour, an ``envmap``
for a procedural map or an image/HDRI file), scaled by ``light`` and tinted by ``light_color``. ``rgb`` is
the path-traced radiance through Blender's "Standard" view transform (sRGB), ``alpha`` the object's
coverage (from a ``shape_index`` AOV), ``segmentation`` the label where coverage > 1/2. UV and depth come from
the same AOV integrator, divided by the coverage so edge pixels hold the object's values; depth is the
distance along the view axis (as Cycles' Z pass) over ``max_depth``, 1 on the background.

``backdrop=False`` hides the environment behind the object (it still lights it), for frames composited over
other backgrounds; ``raw_frame`` gives the linear frame, differentiable in a texture when asked (unadv-patch
optimises textures through this very scene, so what it optimises is what render-3db evaluates).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from confidently import __version__
from confidently.errors import InvalidInput, UsageError
from confidently.render.engines.procedural import (
    BUILTIN_OBJECTS,
    ENVMAP_TO_WORLD,
    MAX_BOUNCES,
    TriangleMesh,
    aperture_radius,
    bounding_sphere,
    builtin_mesh,
    camera_pose,
    environment_map,
    object_matrix,
    srgb_encode,
    texture_array,
)
from confidently.render.scene import Engine, EnvironmentSpec, ObjectSpec, RenderArgs, SceneState

SHAPE = "object"
MESH_SUFFIXES = (".ply", ".obj")
# image files Mitsuba's Bitmap reads as an environment map; a .blend environment is a whole Blender scene
ENVIRONMENT_SUFFIXES = (".exr", ".hdr", ".rgbe", ".pfm", ".png", ".jpg", ".jpeg", ".ppm", ".tga", ".bmp")
PINHOLE_RADIUS = 1e-7  # thin lens without depth of field (Mitsuba refuses a zero radius)
MAX_DEPTH = MAX_BOUNCES + 1  # Mitsuba counts path segments, Cycles bounces
_UNKNOWN = np.empty((0, 0, 3), dtype=np.float32)  # what the bitmap holds after a differentiable render


def _log_to_stderr(mi) -> None:
    """Mitsuba logs to stdout by default, which carries the tool's records: send its messages to stderr."""
    logger = mi.logger() if hasattr(mi, "logger") else mi.Thread.thread().logger()
    if getattr(logger, "_confidently_stderr", False):
        return

    class Stderr(mi.Appender):
        def append(self, level, text):
            sys.stderr.write(text + "\n")

        def log_progress(self, *args, **kwargs):
            pass

    logger.clear_appenders()
    logger.add_appender(Stderr())
    try:
        logger._confidently_stderr = True
    except AttributeError:  # a C++ object without a __dict__: installing again is harmless
        pass


class MitsubaEngine(Engine):
    """Mitsuba 3 renders of a built-in object or a .ply/.obj mesh in a solid, procedural or image environment."""

    name = "mitsuba"
    fields = frozenset({"view_point", "zoom", "focal_length", "aperture", "frame_shift", "rotation", "offset",
                        "aim", "scale", "texture", "light", "light_color"})
    builtins = BUILTIN_OBJECTS
    mesh_suffixes = MESH_SUFFIXES  # refused when the config is read (3DB's .blend models: engine bpy)
    environment_suffixes = ENVIRONMENT_SUFFIXES  # likewise 3DB's .blend environments

    def __init__(self, device: str | torch.device = "cpu", backdrop: bool = True, **_: Any):
        self.device = str(device)
        self.backdrop = backdrop
        self.scene = None
        self.args = RenderArgs()
        self._render_texture_ad = None

    # ------------------------------------------------------------------------------------------------ load
    def load(self, obj: ObjectSpec, environment: EnvironmentSpec, args: RenderArgs) -> None:
        from confidently.render.mitsuba_backend import load_mitsuba

        self.mi, self.dr = mi, dr = load_mitsuba(self.device)
        _log_to_stderr(mi)
        if args.resolution < 1 or args.samples < 1:
            raise UsageError("render resolution and samples must be >= 1")
        cpu = not self.device.startswith("cuda")
        if cpu:  # Mitsuba's EXR reader hangs on a single Dr.Jit thread: load on at least two, render on ``threads``
            dr.set_thread_count(max(2, int(args.threads)))
        self.args, self.obj, self.environment = args, obj, environment
        label = obj.label[0] if isinstance(obj.label, list | tuple) else obj.label
        self.label = int(label)
        self.color = np.asarray(obj.color, dtype=np.float32)
        bsdf = {"type": "twosided", "material": {"type": "diffuse", "reflectance": {
            "type": "bitmap", "bitmap": mi.Bitmap(np.broadcast_to(self.color, (2, 2, 3)).copy()), "raw": True,
            "filter_type": "nearest", "wrap_mode": "clamp"}}}
        shape = self._shape(obj, bsdf)
        emitter = self._emitter(environment)
        # the path tracer's own alpha is 1 wherever the environment shows; the only shape's index (its Dr.Jit
        # registry id, 0 on a miss) averaged over a pixel's samples and divided by that id is its coverage
        aovs = ["cover:shape_index"] + [name for name, wanted in (("uv:uv", args.with_uv),
                                                                   ("pos:position", args.with_depth)) if wanted]
        integrator = {"type": "aov", "aovs": ",".join(aovs),
                      "img": {"type": "path", "max_depth": MAX_DEPTH, "hide_emitters": not self.backdrop}}
        sensor = {"type": "thinlens", "fov": 40.0, "fov_axis": "x", "aperture_radius": PINHOLE_RADIUS,
                  "focus_distance": 3.0,
                  "film": {"type": "hdrfilm", "width": args.resolution, "height": args.resolution,
                           "pixel_format": "rgba", "rfilter": {"type": "box"}},
                  "sampler": {"type": "independent", "sample_count": args.samples}}
        try:
            self.scene = mi.load_dict({"type": "scene", "integrator": integrator, "sensor": sensor,
                                       "emitter": emitter, SHAPE: shape})
        except RuntimeError as exc:
            raise InvalidInput(f"object {obj.id!r} / environment {environment.id!r}: Mitsuba cannot load it: "
                               f"{str(exc).strip().splitlines()[-1]}") from None
        finally:
            if cpu:
                dr.set_thread_count(max(1, int(args.threads)))
        self.params = mi.traverse(self.scene)
        (shape,) = self.scene.shapes()
        self.shape_id = float(np.array(dr.reinterpret_array(mi.UInt32, mi.ShapePtr(shape))).ravel()[0])
        self._rest_geometry()
        self.texture_key = next(k for k in self.params.keys() if k.startswith(SHAPE) and k.endswith("reflectance.data"))
        self._texture = None  # what the bitmap holds now: None = the object's colour
        self._light = None
        if environment.solid is None:
            self.env_base = np.array(self.params["emitter.data"], dtype=np.float32)

    def _shape(self, obj: ObjectSpec, bsdf: dict):
        if obj.builtin == "sphere":  # analytic: an exact silhouette, Mitsuba's own UVs
            self.analytic = True
            return {"type": "sphere", "bsdf": bsdf}
        self.analytic = False
        if obj.builtin is not None:
            return self._mesh(builtin_mesh(obj.builtin), bsdf)
        path = Path(obj.path)
        if path.suffix.lower() not in MESH_SUFFIXES:
            raise UsageError(f"object {obj.id!r}: the mitsuba engine reads {'/'.join(MESH_SUFFIXES)} meshes, not "
                             f"{path.suffix or 'files without a suffix'} (use engine bpy for .glb/.blend)")
        if not path.is_file():
            raise InvalidInput(f"object {obj.id!r}: mesh file {path} does not exist")
        return {"type": path.suffix.lower()[1:], "filename": str(path.resolve()), "bsdf": bsdf,
                "face_normals": False}

    def _mesh(self, mesh: TriangleMesh, bsdf: dict):
        mi = self.mi
        props = mi.Properties()
        props["bsdf"] = mi.load_dict(bsdf)
        shape = mi.Mesh(SHAPE, len(mesh.positions), len(mesh.faces), props, has_vertex_normals=True,
                        has_vertex_texcoords=True)
        values = mi.traverse(shape)
        values["vertex_positions"] = mi.Float(mesh.positions.astype(np.float32).ravel())
        values["vertex_normals"] = mi.Float(mesh.normals.astype(np.float32).ravel())
        values["vertex_texcoords"] = mi.Float(mesh.uvs.astype(np.float32).ravel())
        values["faces"] = mi.UInt(mesh.faces.astype(np.uint32).ravel())
        values.update()
        return shape

    def _emitter(self, environment: EnvironmentSpec) -> dict:
        mi = self.mi
        if environment.solid is not None:
            return {"type": "constant", "radiance": {"type": "rgb", "value": list(environment.solid)}}
        to_world = mi.ScalarTransform4f(np.array(ENVMAP_TO_WORLD))
        if environment.procedural is not None:
            image = environment_map(environment.id, environment.procedural)
            return {"type": "envmap", "bitmap": mi.Bitmap(image), "to_world": to_world}
        path = Path(environment.path)
        if not path.is_file():
            raise InvalidInput(f"environment {environment.id!r}: image file {path} does not exist")
        return {"type": "envmap", "filename": str(path.resolve()), "to_world": to_world}

    def _rest_geometry(self) -> None:
        """The object normalised to the unit bounding sphere at the origin: what every render transforms."""
        if self.analytic:
            self.center, self.radius = np.zeros(3), 1.0
            return
        positions = np.array(self.params[f"{SHAPE}.vertex_positions"], dtype=np.float64).reshape(-1, 3)
        if positions.size == 0:
            raise InvalidInput(f"object {self.obj.id!r}: the mesh has no vertices")
        self.center, self.radius = bounding_sphere(positions)
        self.rest_positions = (positions - self.center) / self.radius
        normals_key = f"{SHAPE}.vertex_normals"
        normals = np.array(self.params[normals_key], dtype=np.float64) if normals_key in self.params else np.zeros(0)
        self.rest_normals = normals.reshape(-1, 3) if normals.size else None
        texcoords = f"{SHAPE}.vertex_texcoords"
        self.has_uv = texcoords in self.params and self.dr.width(self.params[texcoords]) > 0

    # ---------------------------------------------------------------------------------------------- render
    def _pose(self, state: SceneState):
        if self.scene is None:
            raise RuntimeError("MitsubaEngine.render before load")
        mi, params = self.mi, self.params
        pose = camera_pose(state)
        params["sensor.to_world"] = self._opaque(mi.Transform4f().look_at(*pose.look_at()))
        params["sensor.x_fov"] = self._opaque(mi.Float(math.degrees(pose.fov)))
        params["sensor.aperture_radius"] = self._opaque(mi.Float(aperture_radius(state) or PINHOLE_RADIUS))
        params["sensor.focus_distance"] = self._opaque(mi.Float(pose.focus_distance))
        self._place_object(state)
        self._set_light(state.light, state.light_color)
        return pose

    def raw_frame(self, state: SceneState, seed: int, texture: torch.Tensor | None = None) -> torch.Tensor:
        """The linear H×W×C frame: RGB radiance, film alpha, coverage × ``shape_id``, then the AOVs.

        With ``texture`` (3×s×s, in place of ``state.texture``) that requires grad, the frame is differentiable
        in it through Mitsuba's autodiff, whose backward re-renders the scene as it is *then*: run a frame's
        backward before the next render, or its gradient is computed for the wrong camera.
        """
        self._pose(state)
        if texture is None or not texture.requires_grad:
            self._set_texture(texture if texture is not None else state.texture)
            self.params.update()
            seed = self._opaque(self.mi.UInt32(int(seed) % 2**32))
            image = self.mi.render(self.scene, self.params, spp=self.args.samples, seed=seed)
            return torch.from_numpy(np.array(image, dtype=np.float32))
        self.params.update()
        if self._render_texture_ad is None:
            self._render_texture_ad = self.dr.wrap(source="torch", target="drjit")(self._render_with_texture)
        texture_array(texture)  # checks the shape
        frame = self._render_texture_ad(texture.permute(1, 2, 0).contiguous().float().clamp(0, 1), int(seed) % 2**32)
        self._texture = _UNKNOWN  # the bitmap holds a traced texture now: the next render sets its own
        return frame

    def _render_with_texture(self, texture, seed):
        self.params[self.texture_key] = texture
        self.params.update()
        seed = self._opaque(self.mi.UInt32(int(seed) % 2**32))
        return self.mi.render(self.scene, self.params, spp=self.args.samples, seed=seed)

    def _opaque(self, value):
        """``value`` as an opaque JIT variable. A number set as a literal is baked into the kernel, and every
        new view or seed would recompile the path tracer through LLVM (≈2 s a frame at 32², 20 ms cached)."""
        self.dr.make_opaque(value)
        return value

    def render(self, state: SceneState, seed: int) -> dict[str, torch.Tensor]:
        args = self.args
        pose = camera_pose(state)
        frame = self.raw_frame(state, seed).numpy()  # H×W×C, rows top→bottom
        alpha = np.clip(frame[..., 4] / self.shape_id, 0.0, 1.0)
        out = {"rgb": torch.from_numpy(srgb_encode(frame[..., :3]).astype(np.float32)).permute(2, 0, 1).contiguous(),
               "alpha": torch.from_numpy(alpha[None].copy())}
        covered = alpha > 1e-6
        if args.with_segmentation:
            seg = np.where(alpha > 0.5, self.label, -1).astype(np.int32)
            out["segmentation"] = torch.from_numpy(seg[None])
        channel = 5
        if args.with_uv:
            uv = np.where(covered[..., None], frame[..., channel:channel + 2] / np.maximum(alpha, 1e-6)[..., None], 0)
            out["uv"] = torch.from_numpy(np.clip(uv, 0, 1).astype(np.float32)).permute(2, 0, 1).contiguous()
            channel += 2
        if args.with_depth:
            position = frame[..., channel:channel + 3] / np.maximum(alpha, 1e-6)[..., None]
            depth = (position - pose.origin) @ pose.forward / args.max_depth
            depth = np.where(covered, np.clip(depth, 0, 1), 1.0).astype(np.float32)
            out["depth"] = torch.from_numpy(depth[None].copy())
        return out

    def _place_object(self, state: SceneState) -> None:
        mi, params = self.mi, self.params
        matrix = object_matrix(state)
        if self.analytic:
            params[f"{SHAPE}.to_world"] = self._opaque(mi.Transform4f(matrix.astype(np.float32)))
            return
        linear = matrix[:3, :3]
        positions = self.rest_positions @ linear.T + matrix[:3, 3]
        params[f"{SHAPE}.vertex_positions"] = mi.Float(positions.astype(np.float32).ravel())
        if self.rest_normals is not None:
            normals = self.rest_normals @ np.linalg.inv(linear)
            normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
            params[f"{SHAPE}.vertex_normals"] = mi.Float(normals.astype(np.float32).ravel())

    def _set_texture(self, texture: torch.Tensor | None) -> None:
        if texture is None:
            if self._texture is not None:
                self.params[self.texture_key] = self.mi.TensorXf(np.broadcast_to(self.color, (2, 2, 3)).copy())
                self._texture = None
            return
        if not self.analytic and not self.has_uv:
            raise InvalidInput(f"object {self.obj.id!r} has no UV coordinates, so a texture cannot be applied; "
                               "unwrap it (e.g. Blender's Smart UV Project) and export again")
        array = texture_array(texture)
        if self._texture is not None and self._texture.shape == array.shape and np.array_equal(self._texture, array):
            return
        self.params[self.texture_key] = self.mi.TensorXf(array)
        self._texture = array

    def _set_light(self, light: float, color: tuple[float, float, float]) -> None:
        key = (float(light), tuple(float(c) for c in color))
        if key == self._light:
            return
        tint = np.asarray(color, dtype=np.float32) * float(light)
        if self.environment.solid is not None:
            self.params["emitter.radiance.value"] = self._opaque(
                self.mi.Color3f(*(np.asarray(self.environment.solid, dtype=np.float32) * tint).tolist()))
        else:
            data = self.env_base.copy()
            data[..., :3] *= tint
            self.params["emitter.data"] = self.mi.TensorXf(data)
        self._light = key

    def describe(self) -> dict[str, Any]:
        variant = self.mi.variant() if self.scene is not None else None
        mi_version = getattr(self.mi, "__version__", None) if self.scene is not None else None
        return {"engine": self.name, "version": __version__, "mitsuba": mi_version, "variant": variant,
                "resolution": self.args.resolution, "samples": self.args.samples, "threads": self.args.threads,
                "integrator": f"path(max_depth={MAX_DEPTH})", "view_transform": "Standard (sRGB)",
                "backdrop": self.backdrop,
                "texture_convention": "row=floor(v*s)"}
