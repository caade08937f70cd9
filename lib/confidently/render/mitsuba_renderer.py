"""A textured mesh rendered with Mitsuba 3, differentiable in its texture, exactly as render-3db renders it.

The frames come from render-3db's own ``mitsuba`` engine (:mod:`confidently.render.engines.mitsuba_engine`):
the same mesh normalisation, built-in meshes and UV layouts, two-sided diffuse material, path tracer, 50 mm
lens (39.6° horizontal field of view) and sRGB view transform. Only the environment is hidden behind the
object, so frames can be composited over any background. So a texture is optimised under the camera, tone
mapping and integrator it is later evaluated with. Textures are torch tensors C×s×s whose row r holds
v ∈ [r/s, (r+1)/s) (``row=floor(v*s)``, Mitsuba's bitmap convention, checked by the tests). Mitsuba's OBJ loader
flips v at load, so for an OBJ exported from Blender the texture is also the PNG Blender expects, rows
top→bottom; its PLY loader (3.9) does not flip, so a PLY's texture is that PNG upside down (``export --flip-v``).

Texture gradients have no visibility discontinuities, so automatic differentiation through ``mi.render`` is
exact (``render``); ``render_uv`` gives the RGBA frame plus the per-pixel UV map the thesis's linear
approximation gathers through.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.render.mitsuba_backend import load_mitsuba  # noqa: F401 (here since the renderer came first)
from confidently.render.views import View

UV_CONVENTION = "row=floor(v*s)"
FOCAL_LENGTH = 50.0  # mm on a 36 mm sensor: render-3db's default camera


def mesh_object(mesh: str):
    """The render-3db object for ``builtin:NAME`` or a .ply/.obj file, and a content fingerprint."""
    from confidently.render.engines.procedural import BUILTIN_OBJECTS
    from confidently.render.scene import ObjectSpec

    if mesh.startswith("builtin:"):
        name = mesh.split(":", 1)[1]
        if name not in BUILTIN_OBJECTS:
            choices = ", ".join(f"builtin:{n}" for n in BUILTIN_OBJECTS)
            raise UsageError(f"--mesh {mesh!r}: built-in meshes are {choices}")
        return ObjectSpec(name, 0, builtin=name), mesh
    path = Path(mesh)
    if path.suffix.lower() not in (".ply", ".obj"):
        raise UsageError(f"--mesh {mesh!r}: expected a .ply or .obj file, or builtin:NAME (e.g. builtin:cube)")
    if not path.is_file():
        raise InvalidInput(f"mesh file {mesh} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ObjectSpec(path.stem, 0, path=path.resolve()), f"sha256:{digest}"


class MitsubaRenderer:
    """Renders ``mesh`` with a diffuse bitmap texture under a constant environment light of radiance
    ``view.light``, through render-3db's mitsuba engine with the environment hidden.

    Frames are 4×H×W RGBA in display (sRGB) values, colour premultiplied by alpha, ready to be composited as
    ``rgb + (1 − alpha) · background``. A view at ``distance`` d (in bounding radii) is render-3db's camera at
    zoom ``MARGIN / sin(fov / 2) / d`` (:meth:`scene_state`).
    """

    def __init__(self, mesh: str, tex_size: int, resolution: int, spp: int = 4, device: str | torch.device = "cpu",
                 focal_length: float = FOCAL_LENGTH):
        from confidently.render.engines.mitsuba_engine import MitsubaEngine
        from confidently.render.scene import EnvironmentSpec, RenderArgs

        if tex_size < 2 or resolution < 8 or spp < 1:
            raise UsageError("texture side must be >= 2, resolution >= 8 and spp >= 1")
        obj, self.mesh_id = mesh_object(mesh)
        self.tex_size, self.resolution, self.spp, self.focal_length = tex_size, resolution, spp, focal_length
        self.engine = MitsubaEngine(device, backdrop=False)
        self.engine.load(obj, EnvironmentSpec("light", solid=(1.0, 1.0, 1.0)),
                         RenderArgs(resolution=resolution, samples=spp, threads=os.cpu_count() or 1, with_uv=True,
                                    with_segmentation=False))
        if not self.engine.analytic and not self.engine.has_uv:
            raise InvalidInput(f"--mesh {mesh} has no UV coordinates; unwrap it (e.g. Blender's Smart UV Project)"
                               " and export again")
        self.radius = float(self.engine.radius)  # the mesh's bounding radius before normalisation

    def scene_state(self, view: View):
        """The render-3db scene state of ``view`` (its frame shift is applied to the frame afterwards)."""
        from confidently.render.engines.procedural import MARGIN, fov_radians
        from confidently.render.scene import SceneState

        zoom = MARGIN / math.sin(fov_radians(self.focal_length) / 2) / view.distance
        return SceneState(view_point=tuple(view.direction), zoom=zoom, focal_length=self.focal_length,
                          light=float(view.light))

    def _check(self, texture: torch.Tensor) -> torch.Tensor:
        if texture.shape != (3, self.tex_size, self.tex_size):
            raise InvalidInput(f"texture of shape {list(texture.shape)}; the renderer expects "
                               f"[3, {self.tex_size}, {self.tex_size}]")
        return texture.float()

    def _display(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A raw engine frame as premultiplied sRGB + alpha (4×H×W), and the coverage H×W it divided by."""
        from confidently.render.engines.procedural import srgb_encode

        alpha = (raw[..., 4].detach() / self.engine.shape_id).clamp(0, 1)
        colour = srgb_encode(raw[..., :3] / alpha.clamp_min(1e-6)[..., None]) * alpha[..., None]
        return torch.cat([colour, alpha[..., None]], -1).permute(2, 0, 1), alpha

    def render(self, texture: torch.Tensor, view: View, seed: int) -> torch.Tensor:
        """RGBA frame, differentiable in ``texture`` (3×s×s in [0, 1]) through Mitsuba's autodiff.

        Mitsuba's backward pass re-renders from the scene as it is *then*: run this frame's backward
        before rendering another view, or its gradient is computed for the wrong camera.
        """
        texture = self._check(texture)
        if not texture.requires_grad:
            texture = texture.detach().requires_grad_(True)
        frame, _ = self._display(self.engine.raw_frame(self.scene_state(view), seed, texture))
        return frame.to(texture.device)

    def render_uv(self, texture: torch.Tensor, view: View, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RGBA frame (no gradient) and the 2×H×W (u, v) map of the texels each pixel sees."""
        raw = self.engine.raw_frame(self.scene_state(view), seed, self._check(texture).detach())
        frame, alpha = self._display(raw)
        uv = torch.where(alpha[..., None] > 1e-6, raw[..., 5:7] / alpha.clamp_min(1e-6)[..., None], 0).clamp(0, 1)
        return frame.contiguous(), uv.permute(2, 0, 1).contiguous()


def gather_texels(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Each pixel's colour as the texel its UV points to (``row=floor(v*s)``); differentiable in the texture."""
    side = texture.shape[-1]
    row = (uv[1] * side).floor().long().clamp(0, side - 1)
    col = (uv[0] * side).floor().long().clamp(0, side - 1)
    return texture[:, row, col]
