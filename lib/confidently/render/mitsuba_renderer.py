"""A textured mesh rendered with Mitsuba 3, differentiable in its texture.

One scene is built once and only its parameters change per render (camera pose, light, texture), so
Dr.Jit compiles its kernels once. Textures are torch tensors C×s×s whose row r holds v ∈ [r/s, (r+1)/s)
(``row=floor(v*s)``, Mitsuba's bitmap convention, checked by the tests). Mitsuba's OBJ loader flips v at
load, so for an OBJ exported from Blender the texture is also the PNG Blender expects, rows top→bottom;
its PLY loader (3.9) does not flip, so a PLY's texture is that PNG upside down (``export --flip-v``).

Texture gradients have no visibility discontinuities, so automatic differentiation through
``mi.render`` is exact (``render``); ``render_uv`` gives the RGBA frame plus the per-pixel UV map the
thesis's linear approximation gathers through.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from confidently.errors import InvalidInput, MissingBackend, UsageError
from confidently.render.llvm import point_drjit_at_llvm, require_llvm
from confidently.render.views import View

BUILTIN_MESHES = ("cube", "sphere", "rectangle")
UV_CONVENTION = "row=floor(v*s)"
SHAPE_ID = "object"


def load_mitsuba(device: str | torch.device = "cpu"):
    """Mitsuba with a differentiable variant: ``cuda_ad_rgb`` for CUDA devices, ``llvm_ad_rgb`` on the CPU.

    Every user of Mitsuba comes through here, so Dr.Jit is pointed at LLVM 19 before its first import and an
    older LLVM is refused before a kernel can abort the process (see :mod:`confidently.render.llvm`).
    """
    point_drjit_at_llvm()
    try:
        import drjit as dr
        import mitsuba as mi
    except ImportError:
        raise MissingBackend("texture rendering needs Mitsuba 3: pip install 'confidently[render]'") from None
    variant = "cuda_ad_rgb" if str(device).startswith("cuda") else "llvm_ad_rgb"
    if variant == "llvm_ad_rgb":
        require_llvm(dr.detail.llvm_version()[0])
    try:
        mi.set_variant(variant)
    except Exception as exc:  # drjit raises ImportError/RuntimeError subclasses depending on what is missing
        raise MissingBackend(f"Mitsuba cannot load its {variant} variant: {exc}") from None
    return mi, dr


def mesh_description(mesh: str) -> tuple[dict, str]:
    """The Mitsuba shape dict for ``builtin:NAME`` or a .ply/.obj file, and a content fingerprint."""
    if mesh.startswith("builtin:"):
        name = mesh.split(":", 1)[1]
        if name not in BUILTIN_MESHES:
            choices = ", ".join(f"builtin:{n}" for n in BUILTIN_MESHES)
            raise UsageError(f"--mesh {mesh!r}: built-in meshes are {choices}")
        return {"type": name}, mesh
    path = Path(mesh)
    if path.suffix.lower() not in (".ply", ".obj"):
        raise UsageError(f"--mesh {mesh!r}: expected a .ply or .obj file, or builtin:cube|sphere|rectangle")
    if not path.is_file():
        raise InvalidInput(f"mesh file {mesh} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"type": path.suffix.lower()[1:], "filename": str(path.resolve())}, f"sha256:{digest}"


class MitsubaRenderer:
    """Renders ``mesh`` with a diffuse bitmap texture under a constant environment light.

    Frames are 4×H×W RGBA with premultiplied colour (the environment itself is hidden), ready to be
    composited as ``rgb + (1 − alpha) · background``.
    """

    def __init__(self, mesh: str, tex_size: int, resolution: int, spp: int = 4, device: str | torch.device = "cpu",
                 fov: float = 45.0):
        if tex_size < 2 or resolution < 8 or spp < 1:
            raise UsageError("texture side must be >= 2, resolution >= 8 and spp >= 1")
        self.mi, self.dr = mi, dr = load_mitsuba(device)
        shape, self.mesh_id = mesh_description(mesh)
        self.tex_size, self.resolution, self.spp = tex_size, resolution, spp
        blank = mi.Bitmap(torch.full((tex_size, tex_size, 3), 0.5).numpy())
        shape["bsdf"] = {"type": "diffuse", "reflectance": {"type": "bitmap", "bitmap": blank, "raw": True,
                                                            "filter_type": "nearest"}}
        try:
            self.scene = mi.load_dict({
                "type": "scene",
                "integrator": {"type": "direct", "hide_emitters": True},
                "sensor": {"type": "perspective", "fov": fov,
                           "film": {"type": "hdrfilm", "width": resolution, "height": resolution,
                                    "pixel_format": "rgba", "rfilter": {"type": "box"}},
                           "sampler": {"type": "independent", "sample_count": spp}},
                "emitter": {"type": "constant", "radiance": {"type": "rgb", "value": 0.7}},
                SHAPE_ID: shape,
            })
        except RuntimeError as exc:
            raise InvalidInput(f"--mesh {mesh}: Mitsuba cannot load it: {str(exc).splitlines()[-1]}") from None
        self.params = mi.traverse(self.scene)
        self.texture_key = f"{SHAPE_ID}.bsdf.reflectance.data"
        texcoords = f"{SHAPE_ID}.vertex_texcoords"
        if texcoords in self.params and dr.width(self.params[texcoords]) == 0:
            raise InvalidInput(f"--mesh {mesh} has no UV coordinates; unwrap it (e.g. Blender's Smart UV Project)"
                               " and export again")
        box = self.scene.bbox()
        self.center = [float(v) for v in (box.min + box.max) / 2]
        self.radius = float(dr.norm(box.max - box.min)) / 2
        self.uv_integrator = mi.load_dict({"type": "aov", "aovs": "uv:uv",
                                           "img": {"type": "direct", "hide_emitters": True}})
        self._render_ad = dr.wrap(source="torch", target="drjit")(self._render_drjit)

    def _pose(self, view: View, texture, seed: int, integrator=None):
        mi = self.mi
        origin = [c + view.distance * self.radius * d for c, d in zip(self.center, view.direction, strict=True)]
        up = [0, 0, 1] if abs(view.direction[2]) < 0.999 else [0, 1, 0]
        self.params["sensor.to_world"] = mi.Transform4f().look_at(origin=origin, target=self.center, up=up)
        self.params["emitter.radiance.value"] = mi.Color3f(view.light)
        self.params[self.texture_key] = texture
        self.params.update()
        return mi.render(self.scene, self.params, spp=self.spp, seed=seed, integrator=integrator)

    def _render_drjit(self, texture, distance, light, dx, dy, dz, seed):
        view = View((dx, dy, dz), distance, light, (0.0, 0.0))
        return self._pose(view, self.mi.TensorXf(texture), seed)

    def _check(self, texture: torch.Tensor) -> torch.Tensor:
        if texture.shape != (3, self.tex_size, self.tex_size):
            raise InvalidInput(f"texture of shape {list(texture.shape)}; the renderer expects "
                               f"[3, {self.tex_size}, {self.tex_size}]")
        return texture.permute(1, 2, 0).contiguous().float()

    def render(self, texture: torch.Tensor, view: View, seed: int) -> torch.Tensor:
        """RGBA frame, differentiable in ``texture`` (3×s×s in [0, 1]) through Mitsuba's autodiff.

        Mitsuba's backward pass re-renders from the scene as it is *then*: run this frame's backward
        before rendering another view, or its gradient is computed for the wrong camera.
        """
        frame = self._render_ad(self._check(texture), view.distance, view.light, *view.direction, seed)
        return frame.permute(2, 0, 1)

    def render_uv(self, texture: torch.Tensor, view: View, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RGBA frame (no gradient) and the 2×H×W (u, v) map of the texels each pixel sees."""
        with self.dr.suspend_grad():
            out = self._pose(view, self.mi.TensorXf(self._check(texture.detach()).numpy()), seed,
                             integrator=self.uv_integrator)
        frame = torch.from_numpy(self.mi.TensorXf(out).numpy()).permute(2, 0, 1)
        return frame[:4].contiguous(), frame[4:6].contiguous()


def gather_texels(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Each pixel's colour as the texel its UV points to (``row=floor(v*s)``); differentiable in the texture."""
    side = texture.shape[-1]
    row = (uv[1] * side).floor().long().clamp(0, side - 1)
    col = (uv[0] * side).floor().long().clamp(0, side - 1)
    return texture[:, row, col]
