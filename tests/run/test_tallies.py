"""Sharded aggregate records: tallies sum, shards are checked, metrics are recomputed from the sums."""

import pytest
import torch
from confidently.errors import InvalidInput
from confidently.run.tallies import add_tallies, merge_shards
from confidently.training import accuracies, class_tallies


def shard_record(index: int, count: int, predictions, labels, **fields):
    tallies = class_tallies(torch.tensor(predictions), torch.tensor(labels), 3)
    return {"model": "m", **fields, "acc": accuracies(tallies)[0], "shard": f"{index}/{count}", "tallies": tallies}


def finish(tallies):
    top1, per_class = accuracies(tallies)
    return {"acc": top1, "mpc": per_class}


def test_merged_shards_give_the_metrics_of_all_rows():
    predictions, labels = [0, 1, 2, 2, 0, 1, 1], [0, 1, 1, 2, 2, 1, 0]
    parts = [shard_record(i, 3, predictions[i::3], labels[i::3], eps=0.5) for i in (2, 0, 1)]
    (merged,) = merge_shards(parts, {"acc", "mpc"}, finish)
    whole = class_tallies(torch.tensor(predictions), torch.tensor(labels), 3)
    assert merged["tallies"] == whole and (merged["acc"], merged["mpc"]) == accuracies(whole)
    assert merged["acc"] == 4 / 7 and "shard" not in merged and merged["eps"] == 0.5


def test_groups_are_kept_apart_and_in_order():
    parts = [shard_record(i, 2, [0], [0], eps=eps) for eps in (1, 0) for i in (0, 1)]
    assert [r["eps"] for r in merge_shards(parts, {"acc", "mpc"}, finish)] == [1, 0]


@pytest.mark.parametrize("indices, counts, words", [((0,), (2,), "1/2 missing"), ((0, 0, 1), (2, 2, 2), "twice"),
                                                    ((0, 1), (2, 3), "one N")])
def test_incomplete_or_mixed_shards_are_refused(indices, counts, words):
    parts = [shard_record(i, n, [0], [0]) for i, n in zip(indices, counts, strict=True)]
    with pytest.raises(InvalidInput, match=words):
        merge_shards(parts, {"acc", "mpc"}, finish)


def test_tallies_of_different_shapes_do_not_add():
    assert add_tallies({"a": [1, 2], "b": None}, {"a": [3, 4], "b": None}) == {"a": [4, 6], "b": None}
    with pytest.raises(InvalidInput, match="class count"):
        add_tallies([1, 2], [1, 2, 3])
    with pytest.raises(InvalidInput, match="expected counts"):
        add_tallies(0.5, 1)
    with pytest.raises(InvalidInput, match="not a shard record"):
        merge_shards([{"acc": 1.0}], {"acc"}, finish)
