import pytest
import torch
from confidently.io.artifacts import artifact_metadata, load_artifact
from confidently.io.shard_writer import ShardWriter


def test_blocks_of_rows_make_the_file_save_artifact_would(tmp_path):
    images = torch.rand(7, 3, 4, 5)
    labels = torch.arange(7)
    writer = ShardWriter(tmp_path / "s.safetensors")
    for start, stop in ((0, 3), (3, 5), (5, 7)):
        writer.append(images=images[start:stop], labels=labels[start:stop])
    assert not (tmp_path / "s.safetensors").exists()  # nothing visible before close
    writer.close(artifact_metadata(tool="advtrain", kind="adversarial-images", ids=[str(i) for i in range(7)]))
    tensors, meta = load_artifact(tmp_path / "s.safetensors")
    assert torch.equal(tensors["images"], images) and torch.equal(tensors["labels"], labels)
    assert meta["ids"][6] == "6" and meta["kind"] == "adversarial-images"
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # the spools are gone


def test_rows_must_keep_their_shape_and_empty_tensors_need_a_layout(tmp_path):
    writer = ShardWriter(tmp_path / "s.safetensors")
    writer.append(x=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x"):
        writer.append(x=torch.zeros(2, 4))
    writer.close({"kind": "t"}, empty={"y": (torch.uint8, (3, 8, 8))})
    tensors, _ = load_artifact(tmp_path / "s.safetensors")
    assert tensors["x"].shape == (2, 3) and tensors["y"].shape == (0, 3, 8, 8) and tensors["y"].dtype == torch.uint8
