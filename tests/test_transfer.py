import pytest
import torch
from confidently.data.dataset import ImageDataset
from confidently.errors import UsageError
from confidently.models import create_model
from confidently.training import TrainConfig
from confidently.transfer import replace_head, trainable_parameters, transfer


@pytest.fixture(scope="module")
def target(digits_tensors):
    (images, labels), _ = digits_tensors
    keep = labels >= 5
    return images[keep][:96], labels[keep][:96] - 5


def test_fixed_mode_keeps_every_backbone_weight(trained_resnet, target):
    images, labels = target
    train_set = ImageDataset.from_tensors(images, labels)
    model = transfer(trained_resnet, train_set, TrainConfig(epochs=2, lr=0.01, optimizer="sgd"), mode="fixed")
    source = trained_resnet.state_dict()
    for name, value in model.state_dict().items():
        if name.startswith("net.fc."):
            assert value.shape[0] == 5 if value.ndim else True
        elif "running_" not in name and "num_batches" not in name:
            assert torch.equal(value, source[name]), name
    changed_stats = [n for n, v in model.state_dict().items() if "running_mean" in n and not torch.equal(v, source[n])]
    assert changed_stats  # batch-norm statistics keep updating, as in the thesis
    assert model.training_info["mode"] == "fixed" and model.num_classes == 5


def test_full_mode_changes_the_backbone(trained_resnet, target):
    images, labels = target
    train_set = ImageDataset.from_tensors(images, labels)
    model = transfer(trained_resnet, train_set, TrainConfig(epochs=1, lr=0.01, optimizer="sgd"), mode="full")
    assert not torch.equal(model.state_dict()["net.conv1.weight"], trained_resnet.state_dict()["net.conv1.weight"])


def test_frozen_bn_stats_when_asked(trained_resnet, target):
    images, labels = target
    config = TrainConfig(epochs=1, lr=0.01, optimizer="sgd", freeze_bn=True)
    model = transfer(trained_resnet, ImageDataset.from_tensors(images, labels), config, mode="fixed")
    assert torch.equal(model.state_dict()["net.bn1.running_mean"], trained_resnet.state_dict()["net.bn1.running_mean"])


def test_freeze_to_stage_freezes_exactly_through_it():
    model = replace_head(create_model("tiny_resnet", 10), 3)
    trainable_parameters(model, freeze_to="layer2")
    frozen = {n for n, p in model.net.named_parameters() if not p.requires_grad}
    stem_and_two = {n for n, _ in model.net.named_parameters() if n.split(".")[0] in ("conv1", "bn1", "layer1",
                                                                                     "layer2")}
    assert frozen == stem_and_two
    with pytest.raises(UsageError, match="layer9"):
        trainable_parameters(model, freeze_to="layer9")


def test_head_is_new_and_sized_for_the_target():
    source = create_model("tiny_vit", 10)
    target = replace_head(source, 4, ["a", "b", "c", "d"])
    assert target.net.get_classifier().weight.shape == (4, 64)
    assert source.net.get_classifier().weight.shape == (10, 64)
    assert target.classes == ["a", "b", "c", "d"]
