import pytest
import torch
from confidently.backdoor import bias_metrics, group_gaps, parse_classes, select_poison
from confidently.errors import UsageError

IDS = [f"row-{i:04d}" for i in range(1000)]
LABELS = [i % 10 for i in range(1000)]


def test_exact_rate_inside_the_group_and_labels_kept():
    plan = select_poison(IDS, LABELS, rate=0.13, mode="group", group={0, 1})
    assert len(plan.rows) == round(0.13 * 200) and plan.candidates == 200
    assert all(LABELS[i] in {0, 1} for i in plan.rows) and plan.new_labels == {}


def test_selection_is_by_id_not_position():
    plan = select_poison(IDS, LABELS, rate=0.1, mode="group", group={3}, seed=4)
    order = list(reversed(range(1000)))
    shuffled = select_poison([IDS[i] for i in order], [LABELS[i] for i in order], rate=0.1, mode="group",
                             group={3}, seed=4)
    assert {IDS[i] for i in plan.rows} == {IDS[order[i]] for i in shuffled.rows}
    other = select_poison(IDS, LABELS, rate=0.1, mode="group", group={3}, seed=5)
    assert set(other.rows) != set(plan.rows)


def test_relabel_all_to_one_and_all_to_all():
    plan = select_poison(IDS, LABELS, rate=0.05, mode="relabel", target_label=0)
    assert len(plan.rows) == 50 and all(LABELS[i] != 0 for i in plan.rows)
    assert set(plan.new_labels.values()) == {0} and plan.realised_rate == 0.05
    every = select_poison(IDS, LABELS, rate=0.05, mode="relabel", target_label=-1, num_classes=10)
    assert all(every.new_labels[i] == (LABELS[i] + 1) % 10 for i in every.rows)


def test_bernoulli_rate_within_four_standard_errors():
    plan = select_poison(IDS * 1, LABELS, rate=0.3, mode="group", group=set(range(10)), sampling="bernoulli")
    assert abs(len(plan.rows) / 1000 - 0.3) < 4 * (0.3 * 0.7 / 1000) ** 0.5


def test_bad_requests():
    with pytest.raises(UsageError, match="rate"):
        select_poison(IDS, LABELS, rate=1.5, group={0})
    with pytest.raises(UsageError, match="outside"):
        parse_classes("3,12", 10)
    with pytest.raises(UsageError, match="target-label"):
        select_poison(IDS, LABELS, rate=0.1, mode="relabel", target_label=10, num_classes=10)
    with pytest.raises(UsageError, match="candidates"):
        select_poison(IDS, LABELS, rate=0.5, mode="group", group={0}, rate_of="dataset")
    assert parse_classes("1,3,5-7") == {1, 3, 5, 6, 7}


def test_asr_counts_only_clean_correct_rows():
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    clean = torch.tensor([0, 1, 2, 3, 0, 0])  # 4 correct
    triggered = torch.tensor([0, 0, 0, 3, 0, 0])  # 2 of the correct flip
    metrics = bias_metrics(clean, triggered, labels, 6, target_label=0)
    assert metrics["n_correct"] == 4 and metrics["asr"] == 0.5
    assert metrics["clean_acc"] == 4 / 6 and metrics["triggered_acc"] == 2 / 6
    assert metrics["asr_targeted"] == 0.8 and metrics["top_shift_class"] == 0  # 4 of the 5 rows with y ≠ 0
    assert metrics["tv_pred_shift"] == pytest.approx(2 / 6)
    none_right = bias_metrics(torch.tensor([1, 0]), torch.tensor([1, 1]), torch.tensor([0, 1]), 2)
    assert none_right["asr"] is None and none_right["n_correct"] == 0
    group_out = bias_metrics(clean, triggered, labels, 6, exclude={0, 1})
    assert group_out["n"] == 4 and group_out["asr"] == 0.5


def test_group_gaps_compare_rows_with_and_without_the_attribute():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    attribute = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0])
    pred = torch.tensor([0, 0, 1, 0, 0, 0, 1, 1])  # class 0: 1.0 vs 0.5; class 1: 0.0 vs 1.0
    gaps = group_gaps(pred, labels, attribute, 2)
    assert gaps["acc_gap_per_class"] == [0.5, -1.0]
    assert gaps["pred_gap"] == [1.0 - 0.25, 0.0 - 0.75] and gaps["n_with"] == 4
    assert group_gaps(pred, labels, torch.ones(8), 2)["acc_gap_per_class"] == [None, None]
