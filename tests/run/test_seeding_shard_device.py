import pytest
import torch
from confidently.errors import UsageError
from confidently.run import Shard, derive_seed, record_generator, resolve_device, with_batch_backoff


def test_record_seeds_depend_only_on_seed_and_id():
    assert derive_seed(0, "a") == derive_seed(0, "a")
    assert len({derive_seed(0, "a"), derive_seed(1, "a"), derive_seed(0, "b"), derive_seed(0, "a", 1)}) == 4
    a = torch.rand(3, generator=record_generator(5, "img-1"))
    b = torch.rand(3, generator=record_generator(5, "img-1"))
    assert torch.equal(a, b)


def test_shards_partition_in_order():
    items = list(range(11))
    parts = [list(Shard.parse(f"{i}/3").select(items)) for i in range(3)]
    assert sorted(sum(parts, [])) == items
    assert all(part == sorted(part) for part in parts)
    assert list(Shard.parse(None).select(items)) == items


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "0/0", "-1/2"])
def test_bad_shards(text):
    with pytest.raises(UsageError, match="shard"):
        Shard.parse(text)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
    with pytest.raises(UsageError):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


def test_batch_backoff_halves_on_out_of_memory():
    tried = []

    def work(size):
        tried.append(size)
        if size > 10:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return size * 2

    assert with_batch_backoff(work, 64) == (16, 8)
    assert tried == [64, 32, 16, 8]


def test_batch_backoff_reraises_other_errors():
    def work(size):
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        with_batch_backoff(work, 8)
