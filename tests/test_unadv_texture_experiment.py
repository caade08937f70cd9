"""A 3-D unadversarial texture (thesis §3.3, spec §5.2 "3D texture"), rendered with Mitsuba 3.

A tiny classifier of flat coloured shapes (demo:shapes) never takes a grey or random-textured cube
for a "red circle"; optimising the cube's texture over random viewpoints makes it one from held-out
viewpoints, also under noise it never saw. Measured here through render-3db's Mitsuba engine, the camera
at 2-3 object radii so the cube fills most of the 32-pixel frame (64 views, mean over severities 1 and 2 of
the reference ImageNet-C tables): grey / random / unadv = 0 / 0 / 0.64 clean, 0 / 0 / 0.50 noise, 0 / 0 / 0
fog; about 30 s on one core. (At the default 2.5-5 radii the cube covers 15-60 % of the frame over the noise
background and the texture reaches 0.05.) ImageNet-C's fog flattens a 32-pixel frame to near-uniform grey even at
severity 1, so fog is only asserted not to favour the other arms. (Under the CIFAR-10-C tables used
before, fog at severities 1 and 3 gave 0.27.)
(The demo's shapes model, trained by `advtrain`, reaches 0.98 clean: the result depends on the model.)
"""

import pytest
import torch

pytest.importorskip("mitsuba")


@pytest.mark.slow
@pytest.mark.render
def test_an_optimised_cube_texture_is_recognised_where_grey_and_random_are_not():
    from confidently.data import open_dataset
    from confidently.data.loader import collect
    from confidently.models import create_model
    from confidently.render import MitsubaRenderer, ViewSampler
    from confidently.training import TrainConfig, train_classifier
    from confidently.unadversarial import BACKGROUNDS, TextureConfig, evaluate_textures, train_texture

    torch.manual_seed(0)
    data = open_dataset("demo:shapes", "train")
    model = train_classifier(create_model("tiny_resnet", 10, classes=data.classes), data,
                             TrainConfig(epochs=10, lr=3e-3, shift=2))
    images, labels = collect(open_dataset("demo:shapes", "test"))
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).float().mean() > 0.8
    renderer = MitsubaRenderer("builtin:cube", 32, 32, spp=4)
    views = ViewSampler(light=(1.0, 1.0), translate=0.1, zoom=(2.0, 3.0))  # the cube fills most of the frame
    noise = BACKGROUNDS.get("noise")
    grey = torch.full((3, 32, 32), 0.5)
    texture, losses = train_texture(model, renderer, 0, grey, views, noise, TextureConfig(160, 8, 0.05, "ad"),
                                    torch.Generator().manual_seed(0))
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10]), (losses[:10], losses[-10:])
    arms = {"grey": grey, "random": torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)),
            "unadv": texture}
    rows = evaluate_textures(model, renderer, 0, arms, views, noise, 64, ["gaussian_noise", "fog"], [1, 2], seed=1)
    acc = {}
    for row in rows:
        acc.setdefault((row["arm"], row["corruption"]), []).append(row["acc"])
    for corruption in ("clean", "gaussian_noise", "fog"):
        mean = {arm: sum(acc[arm, corruption]) / len(acc[arm, corruption]) for arm in arms}
        print(corruption, {arm: round(value, 3) for arm, value in mean.items()})
        margin = 0.0 if corruption == "fog" else 0.2
        assert mean["unadv"] >= max(mean["grey"], mean["random"]) + margin, (corruption, mean)
