"""Unadversarial textures (thesis §3.3): a mesh's whole UV texture optimised so a fixed model recognises
the rendered object, over random viewpoints, light and backgrounds.

Each step renders a batch of views of the mesh with the current texture, composites them over
backgrounds, and takes a signed step down the model's loss. How the gradient reaches the texture is
one registered strategy per name:

- ``ad``: exact, through Mitsuba's differentiable renderer (lighting and shading included);
- ``uv``: the thesis's linear approximation: the real render forward, and backward as if each pixel were
  the texel its UV coordinate points to (``out = real + approx − stopgrad(approx)``);
- ``uv-only``: the approximation forward too (no shading; the fastest, for smoke tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from confidently.data.corruptions import corrupt
from confidently.errors import UsageError
from confidently.models.classifier import Classifier
from confidently.registry import Registry
from confidently.render import MitsubaRenderer, View, ViewSampler, gather_texels, shift_frame
from confidently.render.engines.procedural import srgb_encode
from confidently.run.console import progress
from confidently.run.seeding import record_seeds


@dataclass(frozen=True)
class GradientMode:
    """How a frame is drawn; ``replay`` = the renderer's backward pass re-renders from the scene's current
    state (Mitsuba's ``mi.render``), so each view's backward must run before the next view is posed."""

    draw: Callable[[MitsubaRenderer, torch.Tensor, View, int], torch.Tensor]
    replay: bool


GRADIENTS: Registry[GradientMode] = Registry("--grad mode")
Backgrounds = Callable[[Sequence[View], int, int, torch.Generator], torch.Tensor]
BACKGROUNDS: Registry[Backgrounds] = Registry("--backgrounds source")


def render_autodiff(renderer: MitsubaRenderer, texture: torch.Tensor, view: View, seed: int) -> torch.Tensor:
    return renderer.render(texture, view, seed)


def _gathered(texture: torch.Tensor, frame: torch.Tensor, uv: torch.Tensor, view: View) -> torch.Tensor:
    """The frame as if each covered pixel were its texel lit by the environment (no shading, no filtering),
    through the same sRGB view transform as the render."""
    return torch.cat([srgb_encode(gather_texels(texture, uv) * view.light) * frame[3:], frame[3:]])


def _render_uv_here(renderer: MitsubaRenderer, texture: torch.Tensor, view: View,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frame and UV map on the texture's device (the renderer hands them back on the CPU)."""
    frame, uv = renderer.render_uv(texture, view, seed)
    return frame.to(texture.device), uv.to(texture.device)


def render_straight_through(renderer: MitsubaRenderer, texture: torch.Tensor, view: View, seed: int) -> torch.Tensor:
    frame, uv = _render_uv_here(renderer, texture, view, seed)
    approx = _gathered(texture, frame, uv, view)
    return frame + approx - approx.detach()


def render_gathered(renderer: MitsubaRenderer, texture: torch.Tensor, view: View, seed: int) -> torch.Tensor:
    frame, uv = _render_uv_here(renderer, texture, view, seed)
    return _gathered(texture, frame, uv, view)


GRADIENTS.register("ad")(GradientMode(render_autodiff, replay=True))
GRADIENTS.register("uv")(GradientMode(render_straight_through, replay=False))
GRADIENTS.register("uv-only")(GradientMode(render_gathered, replay=False))


@BACKGROUNDS.register("solid")
def solid_backgrounds(views: Sequence[View], channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    count = len(views)
    return torch.rand(count, channels, 1, 1, generator=generator).expand(count, channels, size, size).clone()


@BACKGROUNDS.register("noise")
def noise_backgrounds(views: Sequence[View], channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(len(views), channels, size, size, generator=generator)


@BACKGROUNDS.register("black")
def black_backgrounds(views: Sequence[View], channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.zeros(len(views), channels, size, size)


@BACKGROUNDS.register("environment")
def environment_backgrounds(views: Sequence[View], channels: int, size: int,
                            generator: torch.Generator) -> torch.Tensor:
    """The lighting environment itself, as render-3db shows a solid environment of radiance ``view.light``."""
    shade = srgb_encode(torch.tensor([float(view.light) for view in views]))
    return shade.view(-1, 1, 1, 1).expand(len(views), channels, size, size).clone()


class ImageBackgrounds:
    """Backgrounds drawn from a set of images (the thesis used ImageNet validation photos)."""

    def __init__(self, images: torch.Tensor):
        if not len(images):
            raise UsageError("--backgrounds: the image set is empty")
        self.images = images

    def __call__(self, views: Sequence[View], channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
        picks = torch.randint(0, len(self.images), (len(views),), generator=generator)
        chosen = self.images[picks]
        if chosen.shape[-1] != size or chosen.shape[-2] != size:
            chosen = F.interpolate(chosen, size=(size, size), mode="bilinear", align_corners=False)
        return chosen[:, :channels]


def render_device(renderer: MitsubaRenderer) -> torch.device:
    """Where textures live while they are rendered: the GPU for Mitsuba's CUDA variant (its autodiff takes
    and gives CUDA tensors), else the CPU."""
    device = torch.device(renderer.engine.device)
    return device if device.type == "cuda" else torch.device("cpu")


@dataclass(frozen=True)
class TextureConfig:
    steps: int = 100
    batch_size: int = 8
    lr: float = 0.01
    grad: str = "ad"

    def __post_init__(self):
        GRADIENTS.get(self.grad)
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("texture training needs steps >= 1, batch size >= 1 and lr > 0")


def render_batch(renderer: MitsubaRenderer, texture: torch.Tensor, views: Sequence[View], seeds: Sequence[int],
                 backgrounds: torch.Tensor, grad: str = "ad") -> torch.Tensor:
    """Views of the textured mesh, each shifted in the frame and composited over its background (moved to
    the frame's device: the texture's, see :func:`render_device`)."""
    draw = GRADIENTS.get(grad).draw
    frames = []
    for view, seed, background in zip(views, seeds, backgrounds, strict=True):
        frame = shift_frame(draw(renderer, texture, view, int(seed)), view.shift)
        channels = background.shape[0]
        colour = frame[:3] if channels == 3 else frame[:3].mean(0, keepdim=True)
        frames.append((colour + (1 - frame[3:]) * background.to(frame.device)).clamp(0, 1))
    return torch.stack(frames)


def texture_gradient(model: Classifier, renderer: MitsubaRenderer, texture: torch.Tensor, class_id: int,
                     views: Sequence[View], seeds: Sequence[int], backgrounds: torch.Tensor,
                     grad: str = "ad") -> tuple[float, torch.Tensor]:
    """Mean cross-entropy of ``class_id`` over the views, and its gradient in the texture.

    With a replaying renderer each view goes forward and backward on its own; the model is in eval mode,
    so the batch loss is the sum of per-view losses and nothing is lost but batching of the model.
    """
    device = model.normalize.mean.device
    texture = texture.detach().float().requires_grad_(True)
    target = torch.full((len(views),), class_id, dtype=torch.long, device=device)
    if not GRADIENTS.get(grad).replay:
        loss = F.cross_entropy(model(render_batch(renderer, texture, views, seeds, backgrounds, grad).to(device)),
                               target)
        return float(loss.detach()), torch.autograd.grad(loss, texture)[0]
    total, gradient = 0.0, torch.zeros_like(texture)
    for i in range(len(views)):
        scene = render_batch(renderer, texture, views[i:i + 1], seeds[i:i + 1], backgrounds[i:i + 1], grad)
        loss = F.cross_entropy(model(scene.to(device)), target[:1]) / len(views)
        gradient += torch.autograd.grad(loss, texture)[0]
        total += float(loss.detach())
    return total, gradient


def train_texture(model: Classifier, renderer: MitsubaRenderer, class_id: int, texture: torch.Tensor,
                  views: ViewSampler, backgrounds: Backgrounds, config: TextureConfig, generator: torch.Generator,
                  on_step: Callable[[dict[str, Any]], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Signed steps U ← clip(U − lr·sign(∇U L), 0, 1) on the loss of ``class_id``; the model never changes.
    The texture is stepped where the renderer works (:func:`render_device`), the frames go to the model's
    device, and the texture comes back on the CPU."""
    model.eval().requires_grad_(False)
    channels, size = model.input_size[0], model.input_size[-1]
    texture = texture.clone().float().to(render_device(renderer))
    losses, started = [], time.perf_counter()
    for step in progress(range(config.steps), config.steps, f"texture for class {class_id}"):
        batch = views.sample(config.batch_size, generator)
        seeds = torch.randint(0, 2**31 - 1, (config.batch_size,), generator=generator).tolist()
        scenery = backgrounds(batch, channels, size, generator)
        loss, grad = texture_gradient(model, renderer, texture, class_id, batch, seeds, scenery, config.grad)
        with torch.no_grad():
            texture -= config.lr * grad.sign()
            texture.clamp_(0, 1)
        losses.append(loss)
        if on_step is not None and (step + 1) % max(1, config.steps // 10) == 0:
            on_step({"step": step + 1, "loss": sum(losses[-10:]) / len(losses[-10:]),
                     "seconds": time.perf_counter() - started})
    return texture.cpu(), losses


def evaluate_textures(model: Classifier, renderer: MitsubaRenderer, class_id: int, arms: dict[str, torch.Tensor],
                      views: ViewSampler, backgrounds: Backgrounds, count: int, corruptions: Sequence[str],
                      severities: Sequence[int], seed: int,
                      batch_size: int = 64) -> list[dict[str, Any]]:
    """Accuracy on ``class_id`` per (arm, corruption, severity); every arm sees the same views, render
    seeds, backgrounds and corruption noise, so arm differences come from the texture alone. Each
    view's noise is seeded by (seed, view index), whatever the batch. Arms render on the renderer's device;
    the scenes are corrupted on the CPU (as on any device) and judged on the model's."""
    device = model.normalize.mean.device
    place = render_device(renderer)
    channels, size = model.input_size[0], model.input_size[-1]
    generator = torch.Generator().manual_seed(seed)
    chosen = views.sample(count, generator)
    seeds = torch.randint(0, 2**31 - 1, (count,), generator=generator).tolist()
    scenery = backgrounds(chosen, channels, size, generator)
    rows = [("clean", 0)] + [(name, s) for name in corruptions for s in severities]
    model.eval()
    out = []
    for arm, texture in progress(arms.items(), len(arms), f"class {class_id}: arms rendered and scored"):
        with torch.no_grad():
            scenes = render_batch(renderer, texture.to(place), chosen, seeds, scenery).cpu()
        for corruption, severity in rows:
            correct = 0
            for start in range(0, count, batch_size):
                x = scenes[start:start + batch_size]
                if corruption != "clean":
                    views_here = [str(i) for i in range(start, start + len(x))]
                    x = corrupt(x, corruption, severity, seeds=record_seeds(seed, views_here, "corrupt", corruption))
                with torch.no_grad():
                    predicted = model(x.to(device)).argmax(1).cpu()
                correct += int((predicted == class_id).sum())
            out.append({"arm": arm, "corruption": corruption, "severity": severity, "n": count, "correct": correct,
                        "acc": correct / count if count else None})
    return out


def save_texture(path, textures: torch.Tensor, class_ids: Sequence[int], metadata: dict[str, Any]) -> None:
    """``texture`` K×3×s×s (rows top→bottom, ``row=floor(v*s)``) and ``class_ids`` K, atomically."""
    from confidently.io.artifacts import save_artifact
    from confidently.render import UV_CONVENTION

    save_artifact(path, {"texture": textures.float().contiguous(),
                         "class_ids": torch.tensor(list(class_ids), dtype=torch.int64)},
                  {**metadata, "kind": "texture", "uv_convention": UV_CONVENTION})


def load_texture(path, num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Textures, their class ids and metadata, checked: shape, range, and class ids the model has."""
    from confidently.errors import InvalidInput
    from confidently.io.artifacts import load_artifact

    tensors, meta = load_artifact(path)
    texture, class_ids = tensors.get("texture"), tensors.get("class_ids")
    if texture is None or class_ids is None or texture.ndim != 4 or texture.shape[1] != 3 \
            or texture.shape[2] != texture.shape[3] or len(class_ids) != len(texture):
        raise InvalidInput(f"{path} is not a texture file (needs 'texture' K×3×s×s and 'class_ids' K, "
                           "from `unadv-patch texture`)")
    if float(texture.min()) < 0 or float(texture.max()) > 1:
        raise InvalidInput(f"{path}: texture values lie outside [0, 1]")
    if num_classes is not None and (bool((class_ids < 0).any()) or bool((class_ids >= num_classes).any())):
        raise InvalidInput(f"{path} holds textures for classes {class_ids.tolist()}; the model has {num_classes} "
                           "classes (0..{})".format(num_classes - 1))
    return texture.float(), class_ids, meta
