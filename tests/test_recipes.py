"""One registry of training recipes and one merge rule: the command's defaults, the recipe, the options given."""

import pytest
from confidently.errors import UsageError
from confidently.recipes import RECIPES, list_recipes, recipe_config, register_recipe


def test_the_recipe_beats_a_default_and_an_option_given_beats_the_recipe():
    settings = {"lr": 0.5, "epochs": 3, "batch_size": 16, "weight_decay": None}
    config = recipe_config("cifar", settings, explicit={"epochs"}, seed=4)
    assert (config.lr, config.batch_size, config.epochs, config.schedule, config.seed) == (0.1, 128, 3, "step", 4)
    assert config.weight_decay == 5e-4  # an unset option (None) never hides the recipe's value
    bare = recipe_config(None, settings, explicit=())
    assert (bare.lr, bare.epochs, bare.weight_decay) == (0.5, 3, 0.05)  # no recipe: the options, else TrainConfig's


def test_every_training_command_shares_the_registry():
    assert {"demo", "cifar", "imagenet-robust", "transfer-thesis", "cpu-tiny", "thesis-resnet", "thesis-deit",
            "bias-cpu-source", "bias-thesis-target"} <= set(list_recipes())
    deit = recipe_config("thesis-deit")
    assert (deit.augment, deit.mixup, deit.cutmix, deit.label_smoothing) == ("deit", 0.8, 1.0, 0.1)
    with pytest.raises(UsageError, match="unknown recipe 'nope'; choose .*cifar"):
        recipe_config("nope")


def test_registering_checks_the_settings():
    with pytest.raises(UsageError, match="unknown training settings learning_rate"):
        register_recipe("typo", learning_rate=0.1)
    register_recipe("mine", epochs=2, lr=0.01)
    try:
        assert recipe_config("mine", {"epochs": 9}).epochs == 2
    finally:
        RECIPES._items.pop("mine")
