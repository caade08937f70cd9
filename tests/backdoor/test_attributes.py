"""Record attributes: 0/1 groups for the gaps, and exact attribute-controlled subsets."""

import pytest
from confidently.backdoor import draw_cells, group_attribute, parse_cell
from confidently.errors import InvalidInput, UsageError
from confidently.io.records import Record


def records(n):
    return [Record({"id": f"r{i:03d}", "image": "x.png", "label": i % 3, "attrs": {"person": i % 2}}, i + 1, "m.jsonl")
            for i in range(n)]


def test_cells_are_exact_disjoint_and_by_id():
    rows = records(60)
    chosen = draw_cells(rows, ["label=1,person=1:4", "person=1:6"], seed=3)
    first = [i for i, cell in chosen if cell == "label=1,person=1:4"]
    second = [i for i, cell in chosen if cell == "person=1:6"]
    assert len(first) == 4 and len(second) == 6 and not set(first) & set(second)
    assert all(rows[i].data["label"] == 1 and rows[i].data["attrs"]["person"] == 1 for i in first)
    assert [i for i, _ in chosen] == sorted(i for i, _ in chosen)
    backwards = draw_cells(rows[::-1], ["label=1,person=1:4", "person=1:6"], seed=3)
    assert {rows[::-1][i].id for i, _ in backwards} == {rows[i].id for i, _ in chosen}


def test_excluded_ids_are_never_drawn_and_a_short_cell_fails():
    rows = records(30)
    first = {rows[i].id for i, _ in draw_cells(rows, ["label=0:5"], seed=0)}
    again = draw_cells(rows, ["label=0:5"], seed=0, exclude_ids=first)
    assert not {rows[i].id for i, _ in again} & first
    with pytest.raises(InvalidInput, match="only 5 match"):
        draw_cells(rows, ["label=0:6"], seed=0, exclude_ids=first)


@pytest.mark.parametrize("text", ["label1", "label=1", ":3", "label=1:-1"])
def test_malformed_cells_are_usage_errors(text):
    with pytest.raises(UsageError, match="cell"):
        parse_cell(text)


def test_a_group_attribute_must_be_zero_or_one_everywhere():
    rows = records(4)
    assert group_attribute(rows, "person") == [False, True, False, True]
    rows[2].data["attrs"]["person"] = "yes"
    with pytest.raises(InvalidInput, match="group_attr person") as raised:
        group_attribute(rows, "person")
    assert raised.value.line == 3
