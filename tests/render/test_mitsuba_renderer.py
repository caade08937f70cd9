"""Mitsuba renders of a textured mesh: the UV convention, determinism, and where texture gradients land."""

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.render import MitsubaRenderer, View, ViewSampler, gather_texels, shift_frame

from tests.render.textures import quadrants

pytest.importorskip("mitsuba")
pytestmark = pytest.mark.render

FRONT = View(direction=(0.15, -0.98, 0.1), distance=2.2, light=1.0, shift=(0.0, 0.0))  # the rectangle faces -y


def test_uv_gather_predicts_the_rendered_quadrant():
    renderer = MitsubaRenderer("builtin:rectangle", 16, 32, spp=4)
    texture = quadrants(16)
    frame, uv = renderer.render_uv(texture, FRONT, seed=0)
    covered = frame[3] > 0.999
    assert covered.sum() > 200
    rendered = frame[:3, covered] > 0.5
    predicted = gather_texels(texture, uv)[:, covered] > 0.5
    assert (rendered == predicted).all(0).float().mean() > 0.98
    flipped = gather_texels(texture.flip(1), uv)[:, covered] > 0.5  # the other row convention fails
    assert (rendered == flipped).all(0).float().mean() < 0.1


def test_renders_are_deterministic_and_gradients_land_on_visible_texels():
    renderer = MitsubaRenderer("builtin:rectangle", 16, 32, spp=4)
    near = View(direction=(0.0, -1.0, 0.0), distance=1.3, light=0.7, shift=(0.0, 0.0))  # edges out of frame
    texture = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    first = renderer.render(texture, near, seed=3)
    first[0].mean().backward()  # before the next render: Mitsuba's backward replays the current scene
    grad = texture.grad
    assert torch.equal(first.detach(), renderer.render(texture, near, seed=3).detach())
    assert not torch.equal(first.detach(), renderer.render(texture, near, seed=4).detach())
    assert grad[1:].abs().sum() == 0 and grad[0].abs().sum() > 0  # only the red channel was asked for
    _, uv = renderer.render_uv(texture, near, seed=3)
    seen = torch.zeros(16, 16, dtype=torch.bool)
    seen[(uv[1] * 16).long().clamp(0, 15), (uv[0] * 16).long().clamp(0, 15)] = True
    seen = torch.nn.functional.max_pool2d(seen[None, None].float(), 3, 1, 1)[0, 0].bool()  # pixel footprints
    assert (~seen).any() and grad[0][~seen].abs().sum() == 0


def test_uv_approximation_agrees_with_autodiff(trained_resnet):
    from confidently.unadversarial.texture import texture_gradient

    renderer = MitsubaRenderer("builtin:cube", 8, 32, spp=8)  # texels larger than pixels: little filtering
    views = ViewSampler().sample(4, torch.Generator().manual_seed(2))
    backgrounds = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    texture = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
    grads = {mode: texture_gradient(trained_resnet, renderer, texture, 3, views, [0, 1, 2, 3], backgrounds, mode)[1]
             for mode in ("ad", "uv")}
    cosine = torch.nn.functional.cosine_similarity(grads["ad"].flatten(), grads["uv"].flatten(), dim=0)
    assert cosine > 0.5, float(cosine)  # 0.80 measured; 16 texels on 32 pixels gave 0.52 (footprints)


def test_views_and_frame_shifts():
    views = ViewSampler(zoom=(3, 4), hemisphere=True, translate=0.2).sample(50, torch.Generator().manual_seed(0))
    assert all(v.direction[2] >= 0 and 3 <= v.distance <= 4 and abs(v.shift[0]) <= 0.2 for v in views)
    assert all(abs(sum(c * c for c in v.direction) - 1) < 1e-9 for v in views)
    frame = torch.arange(16.0).reshape(1, 4, 4)
    moved = shift_frame(frame, (0.25, -0.25))  # one pixel right, one up
    assert torch.equal(moved[0, :3, 1:], frame[0, 1:, :3]) and moved[0, 3].sum() == 0 and moved[0, :, 0].sum() == 0
    with pytest.raises(UsageError, match="inside the object"):
        ViewSampler(zoom=(0.5, 2))


def test_meshes_must_exist_and_carry_uv_coordinates(tmp_path):
    flat = tmp_path / "flat.ply"
    flat.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                    "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
                    "0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    with pytest.raises(InvalidInput, match="no UV coordinates"):
        MitsubaRenderer(str(flat), 8, 16)
    with pytest.raises(InvalidInput, match="does not exist"):
        MitsubaRenderer(str(tmp_path / "missing.obj"), 8, 16)
    with pytest.raises(UsageError, match="built-in meshes"):
        MitsubaRenderer("builtin:teapot", 8, 16)
    textured = tmp_path / "quad.obj"
    textured.write_text("v -1 -1 0\nv 1 -1 0\nv 1 1 0\nv -1 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
                        "f 1/1 2/2 3/3\nf 1/1 3/3 4/4\n")
    renderer = MitsubaRenderer(str(textured), 8, 16)
    assert renderer.mesh_id.startswith("sha256:") and abs(renderer.radius - 2 ** 0.5) < 1e-5
