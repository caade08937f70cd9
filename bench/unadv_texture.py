"""Texture-optimisation speed per gradient mode, against the renderer's own cost (not a test).

One texture step renders a batch of views of the mesh, composites them, runs the model forward and
backward, and takes a signed step. Its cost limit is the renders alone: each view's Mitsuba forward +
backward (``ad``) or forward with the UV AOV (``uv``), without the model or compositing. Prints
seconds per step for each mode, the limit, and the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch
from confidently.models import create_model
from confidently.render import MitsubaRenderer, ViewSampler
from confidently.unadversarial import BACKGROUNDS, TextureConfig, train_texture


def seconds(run, repeats: int = 3) -> float:
    run()  # warm-up: Dr.Jit compiles its kernels once per scene
    timings = []
    for _ in range(repeats):
        started = time.process_time()
        run()
        timings.append(time.process_time() - started)
    return sorted(timings)[len(timings) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh", default="builtin:cube")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--tex-size", type=int, default=32)
    parser.add_argument("--spp", type=int, default=4)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model("tiny_resnet", 10, img_size=args.resolution).eval()
    renderer = MitsubaRenderer(args.mesh, args.tex_size, args.resolution, args.spp)
    sampler = ViewSampler(translate=0.1)
    texture = torch.full((3, args.tex_size, args.tex_size), 0.5)
    views = sampler.sample(args.views * args.steps, torch.Generator().manual_seed(0))

    def renders_ad() -> None:
        for i, view in enumerate(views):
            frame = renderer.render(texture.clone().requires_grad_(True), view, i)
            frame.sum().backward()

    def renders_uv() -> None:
        for i, view in enumerate(views):
            renderer.render_uv(texture, view, i)

    def mode(grad: str):
        config = TextureConfig(args.steps, args.views, 0.01, grad)
        return lambda: train_texture(model, renderer, 0, texture, sampler, BACKGROUNDS.get("noise"), config,
                                     torch.Generator().manual_seed(1))

    limits = {"ad": seconds(renders_ad), "uv": seconds(renders_uv)}
    print(f"{args.mesh}, {args.views} views/step at {args.resolution}², texture {args.tex_size}², spp {args.spp}, "
          f"{args.threads} thread(s), CPU clock, median of 3 runs of {args.steps} steps")
    print(f"{'':<12}{'step':>12}{'renders only':>16}{'ratio':>9}")
    for grad, limit_key in (("ad", "ad"), ("uv", "uv"), ("uv-only", "uv")):
        step = seconds(mode(grad)) / args.steps
        limit = limits[limit_key] / args.steps
        print(f"{grad:<12}{step * 1000:>9.1f} ms{limit * 1000:>13.1f} ms{limit / step:>8.2f}x")


if __name__ == "__main__":
    main()
