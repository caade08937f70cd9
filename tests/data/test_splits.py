from collections import Counter

from confidently.data import split_by_class, split_records


def test_split_records_is_stratified_and_order_free():
    ids = [f"r{i}" for i in range(200)]
    labels = [i % 4 for i in range(200)]
    names = split_records(ids, labels, {"train": 0.8, "val": 0.2}, seed=3)
    assert Counter(names) == {"train": 160, "val": 40}
    for label in range(4):
        assert Counter(n for n, lab in zip(names, labels, strict=True) if lab == label)["val"] == 10
    reversed_names = split_records(ids[::-1], labels[::-1], {"train": 0.8, "val": 0.2}, seed=3)
    assert reversed_names[::-1] == names
    assert split_records(ids, labels, {"train": 0.8, "val": 0.2}, seed=4) != names


def test_split_by_class_fractions_and_lists():
    mapping = split_by_class(10, {"source": 0.5, "target": 0.5}, seed=0)
    assert Counter(mapping.values()) == {"source": 5, "target": 5}
    assert split_by_class(10, {"source": 0.5, "target": 0.5}, seed=0) == mapping
    explicit = split_by_class(6, {"a": [0, 1], "b": [5]})
    assert explicit == {0: "a", 1: "a", 5: "b"}
