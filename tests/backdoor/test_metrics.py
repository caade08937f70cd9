"""Prediction skew under an overlay, and asr records merged from shards."""

import pytest
import torch
from confidently.backdoor import merge_bias_shards, prediction_skew
from confidently.backdoor.metrics import asr_metrics, bias_tallies, group_tallies


def test_an_overlay_that_changes_nothing_has_no_skew_beyond_the_clean_one():
    clean = torch.arange(40) % 4
    skew = prediction_skew(clean, clean.clone(), 4)
    assert skew["tv_to_clean"] == 0 and skew["changed"] == 0 and skew["kl_to_uniform"] == pytest.approx(0)
    assert skew["hist_clean"] == skew["hist_overlay"] == [10] * 4 and skew["n"] == 40


def test_an_overlay_that_piles_everything_onto_one_class_is_maximal():
    clean = torch.arange(40) % 4
    skew = prediction_skew(clean, torch.full((40,), 2), 4)
    assert skew["top_class"] == 2 and skew["top_share"] == 1 and skew["changed"] == pytest.approx(0.75)
    assert skew["tv_to_clean"] == pytest.approx(0.75) and skew["kl_to_uniform"] == pytest.approx(torch.log(
        torch.tensor(4.0)).item())


def test_shard_records_merge_into_the_unsharded_metrics():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (50,), generator=generator)
    clean = torch.where(torch.rand(50, generator=generator) < 0.8, labels, (labels + 1) % 3)
    triggered = torch.where(torch.rand(50, generator=generator) < 0.5, torch.zeros_like(labels), clean)
    attribute = torch.rand(50, generator=generator) < 0.5

    def record(rows, shard=None):
        tallies = bias_tallies(clean[rows], triggered[rows], labels[rows], 3, 0)
        tallies["group"] = group_tallies(clean[rows], labels[rows], attribute[rows], 3)
        return {"kind": "bias", "model": "m", "group_attr": "striped", **asr_metrics(tallies, "striped"),
                **({"shard": shard} if shard else {}), "tallies": tallies}

    whole = record(torch.arange(50))
    shards = [record(torch.arange(i, 50, 2), f"{i}/2") for i in range(2)]
    (merged,) = merge_bias_shards(shards)
    assert merged == whole and merged["group"]["attr"] == "striped"
