import pytest
import torch
from confidently.backdoor.experiment import Grid, Poisoning, Split, poison_split, run_grid, summarize_runs
from confidently.data import open_dataset
from confidently.models import create_model
from confidently.training import TrainConfig
from confidently.transfer import transfer

TRIGGER = {"type": "square", "size": 2, "color": [1, 1, 1]}


@pytest.fixture(scope="module")
def splits():
    train, test = open_dataset("demo:digits?size=8", "train"), open_dataset("demo:digits?size=8", "test")
    return (Split.from_dataset(train, range(3)), Split.from_dataset(test, range(3)),
            Split.from_dataset(train, [7, 8]), Split.from_dataset(test, [7, 8]))


def test_classes_are_relabelled_in_order(splits):
    _, _, target, _ = splits
    assert set(target.labels.tolist()) == {0, 1} and target.num_classes == 2


def test_poisoning_relabels_exactly_and_triggers_by_row(splits):
    source = splits[0]
    poisoned, specs = poison_split(source, Poisoning("relabel", (0.2,), target_label=0), 0.2, TRIGGER)
    hit = [i for i, spec in enumerate(specs) if spec]
    assert len(hit) == round(0.2 * len(source.ids)) and all(int(poisoned.labels[i]) == 0 for i in hit)
    assert poisoned.data is source.data  # the trigger is deferred to the loader, after augmentation


def test_grid_records_and_summary(splits):
    quick = TrainConfig(epochs=2, batch_size=64, lr=0.05, optimizer="sgd", schedule="cyclic", peak_epoch=1)
    runs = list(run_grid(*splits, TRIGGER, Poisoning("relabel", (0.0, 0.2), target_label=0),
                         Grid(modes=("fixed", "scratch"), weight_decays=(5e-4,), seeds=(0, 1), source_config=quick,
                              target_config=quick)))
    assert len(runs) == 2 * 2 * 2
    assert {(r["source_rate"], r["mode"], r["seed"]) for r in runs} == {
        (rate, mode, seed) for rate in (0.0, 0.2) for mode in ("fixed", "scratch") for seed in (0, 1)}
    by_source = {}
    for r in runs:  # one source model per (rate, seed), shared by its target runs
        by_source.setdefault((r["source_rate"], r["seed"]), set()).add(r["source_asr"])
    assert all(len(values) == 1 for values in by_source.values())
    summary = summarize_runs(runs)
    row = next(s for s in summary["settings"] if s["source_rate"] == 0.2 and s["mode"] == "fixed")
    values = [r["asr"] for r in runs if r["source_rate"] == 0.2 and r["mode"] == "fixed"]
    assert row["n"] == 2 and row["asr"]["mean"] == pytest.approx(sum(values) / 2)
    assert row["asr"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert summarize_runs(list(reversed(runs))) == summary


def test_fixed_feature_transfer_leaves_the_backbone_bit_identical(splits):
    source, _, target, _ = splits
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, img_size=8)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    tuned = transfer(model, target.dataset(), TrainConfig(epochs=2, lr=0.05), mode="fixed", num_classes=2)
    backbone = [(name, p) for name, p in tuned.named_parameters() if not name.startswith("net.fc")]
    assert len(backbone) == 9
    for name, param in backbone:
        assert torch.equal(param, before[name]), name
    assert not torch.equal(tuned.net.fc.weight[:2], before["net.fc.weight"][:2])


def test_unknown_modes_are_refused(splits):
    from confidently.errors import UsageError

    with pytest.raises(UsageError, match="modes"):
        next(run_grid(*splits, TRIGGER, Poisoning(), Grid(modes=("freeze",))))
