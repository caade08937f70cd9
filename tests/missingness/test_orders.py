import torch
from confidently.missingness import feature_scores, grid_labels, removal_order, saliency_maps
from confidently.run import record_generator


def test_orders_are_permutations_and_reverse_is_the_flip():
    scores = torch.tensor([0.3, 0.9, 0.1, 0.9, 0.5])
    saliency = removal_order("saliency", 5, scores)
    assert saliency.tolist() == [1, 3, 4, 0, 2]
    assert torch.equal(removal_order("saliency-reverse", 5, scores), saliency.flip(0))
    random = removal_order("random", 64, None, record_generator(0, "a", "order"))
    assert sorted(random.tolist()) == list(range(64))
    assert torch.equal(random, removal_order("random", 64, None, record_generator(0, "a", "order")))
    assert not torch.equal(random, removal_order("random", 64, None, record_generator(0, "b", "order")))


def test_feature_scores_average_each_feature():
    labels = grid_labels(4, 4, 2)
    pixels = torch.arange(16, dtype=torch.float32).view(4, 4)
    assert feature_scores(pixels, labels, 4).tolist() == [2.5, 4.5, 10.5, 12.5]


def test_saliency_is_the_gradient_of_the_predicted_logit(resnet):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = saliency_maps(resnet, images, batch_size=2)
    assert maps.shape == (3, 32, 32) and (maps >= 0).all() and maps.sum() > 0
    x = images[1:2].clone().requires_grad_(True)
    logits = resnet(x)
    logits[0, logits.argmax()].backward()
    expected = (x.grad * resnet.normalize.std.view(1, -1, 1, 1)).abs().mean(1)[0]
    assert torch.allclose(maps[1], expected, atol=1e-6)
    assert not resnet.training
