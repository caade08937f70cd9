import json

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.loader import EpochSampler, StreamLoader
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.io.artifacts import artifact_metadata, save_artifact

from tests.photos import make_imagenet_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_imagenet_folder(tmp_path_factory.mktemp("photos"), train_per_class=6, val_per_class=3)


def _pass(dataset, name: str, *, batch_size: int, workers: int, epoch: int = 0, **options):
    loader = StreamLoader(dataset, make_preprocess(name, DataConfig((40, 40))), batch_size=batch_size,
                          workers=workers, seed=3, **options)
    rows = {}
    for batch in loader.epoch(epoch):
        assert batch.images.dtype == torch.float32 and batch.images.shape[1:] == (3, 40, 40)
        rows.update({i: (image, int(label)) for i, image, label in zip(batch.indices, batch.images, batch.labels,
                                                                         strict=True)})
    return rows


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k][0], b[k][0]) and a[k][1] == b[k][1] for k in a)


@pytest.mark.parametrize("name", ["eval", "train"])
def test_workers_and_batch_size_do_not_change_any_image(photos, name):
    """(seed, id, epoch) seeds each record's augmentation: 0 vs 2 workers, batch 4 vs 7, same pixels."""
    dataset = open_dataset(photos, "val")
    serial = _pass(dataset, name, batch_size=4, workers=0, shuffle=True)
    assert len(serial) == len(dataset)
    assert _same(serial, _pass(dataset, name, batch_size=7, workers=2, shuffle=True))
    if name == "train":  # a new epoch draws new crops
        assert not _same(serial, _pass(dataset, name, batch_size=4, workers=0, epoch=1))


def test_eval_batches_come_in_order_with_the_folder_labels(photos):
    dataset = open_dataset(photos, "train")
    loader = StreamLoader(dataset, make_preprocess("eval", DataConfig((32, 32))), batch_size=5, workers=0)
    indices = [i for batch in loader for i in batch.indices]
    labels = torch.cat([batch.labels for batch in loader])
    assert indices == list(range(len(dataset))) and labels.tolist() == dataset.labels.tolist()
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_ranks_read_disjoint_parts_that_cover_the_data():
    parts = [EpochSampler(11, shuffle=True, seed=5, rank=rank, world=3) for rank in range(3)]
    positions = [sampler.positions() for sampler in parts]
    assert sorted(sum(positions, [])) == list(range(11)) and [len(p) for p in parts] == [4, 4, 3]
    again = EpochSampler(11, shuffle=True, seed=5)
    again.set_epoch(1)
    assert again.positions() != EpochSampler(11, shuffle=True, seed=5).positions()


def test_deferred_triggers_are_stamped_after_preprocessing(photos, tmp_path):
    folder = open_dataset(photos, "val")
    first = folder.records[0].data
    manifest = tmp_path / "m.jsonl"
    trigger = {"type": "square", "size_frac": 0.25, "pos": "br", "color": [1.0, 0.0, 1.0]}
    image = str(photos / first["image"])
    manifest.write_text(json.dumps({"id": "a", "image": image, "label": 0, "trigger": trigger}) + "\n"
                        + json.dumps({"id": "b", "image": image, "label": 0}) + "\n")
    rows = _pass(open_dataset(manifest), "eval", batch_size=2, workers=0)
    stamped, clean = rows[0][0], rows[1][0]
    corner = stamped[:, -10:, -10:]
    assert torch.allclose(corner, torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1).expand_as(corner))
    assert torch.equal(stamped[:, :20, :20], clean[:, :20, :20])


def test_a_shard_is_read_row_by_row(tmp_path):
    images = torch.randint(0, 256, (6, 3, 20, 30), dtype=torch.uint8)
    path = tmp_path / "s.safetensors"
    save_artifact(path, {"images": images, "labels": torch.arange(6) % 2},
                  artifact_metadata(tool="dataset", kind="shard", ids=[f"r{i}" for i in range(6)]))
    shard = open_dataset(path)
    assert shard.images is None and shard.ids[2] == "r2"  # nothing decoded up front
    rows = _pass(shard, "squash", batch_size=4, workers=2)
    assert [rows[i][1] for i in range(6)] == [0, 1, 0, 1, 0, 1]
    expected = make_preprocess("squash", DataConfig((40, 40)))(images[4]).float() / 255
    assert torch.equal(rows[4][0], expected)


def test_a_described_loader_says_what_it_read_and_a_training_loader_stays_quiet(monkeypatch, capsys):
    import importlib

    from confidently.data.dataset import ImageDataset

    console_module = importlib.import_module("confidently.run.console")
    monkeypatch.setattr(console_module, "stderr_is_terminal", lambda: False)
    monkeypatch.setattr(console_module, "SUMMARY_AFTER_S", 0.0)  # as if reading had taken minutes
    console_module.configure_logging()
    data = ImageDataset.from_tensors(torch.rand(10, 3, 8, 8), torch.arange(10) % 2)
    preprocess = make_preprocess("eval", DataConfig(size=(8, 8)))
    described = StreamLoader(data, preprocess, batch_size=4, workers=0, describe="reading images")
    assert [len(batch.ids) for batch in described.epoch(0)] == [4, 4, 2]
    assert "reading images: 3 in" in capsys.readouterr().err
    assert len(list(StreamLoader(data, preprocess, batch_size=4, workers=0).epoch(0))) == 3
    assert capsys.readouterr().err == ""
