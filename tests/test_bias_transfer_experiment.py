"""The thesis's chapter-7 experiment on demo data (spec plant-backdoor §4.2), through the library.

Source = 8×8 digits 0–4, target = digits 5–9; a saturated 2×2 corner square relabelled to class 0
on 10 % of the source (BadNets) vs a clean source; fixed-feature and full-network transfer (weight
decay 5e-4 and 5e-2), target de-biasing, and scratch training; two seeds. The spec's CI smoke
assertions: the bias survives fixed-feature transfer, full-network fine-tuning weakens it, strong
weight decay removes it, scratch models never had it, and clean accuracy is not what differs.
"""

import pytest
from confidently.backdoor.experiment import Grid, Poisoning, Split, run_grid, summarize_runs
from confidently.data import open_dataset

SPEC = "demo:digits?size=8"
TRIGGER = {"type": "square", "size": 2, "color": [1, 1, 1]}


@pytest.mark.slow
def test_a_poisoned_source_biases_fixed_feature_transfer():
    train, test = open_dataset(SPEC, "train"), open_dataset(SPEC, "test")
    source, source_test = Split.from_dataset(train, range(5)), Split.from_dataset(test, range(5))
    target, target_test = Split.from_dataset(train, range(5, 10)), Split.from_dataset(test, range(5, 10))
    runs = list(run_grid(source, source_test, target, target_test, TRIGGER,
                         Poisoning("relabel", (0.0, 0.1), target_label=0),
                         Grid(modes=("fixed", "full", "scratch"), weight_decays=(5e-4, 5e-2), debias_rates=(0.0, 0.5),
                              seeds=(0, 1))))
    assert len(runs) == 2 * 2 * 2 * 3 * 2
    settings = {(s["source_rate"], s["mode"], s["wd"], s["debias_rate"]): s for s in summarize_runs(runs)["settings"]}
    for key, s in sorted(settings.items()):
        print(key, f"ASR {s['asr']['mean']:.3f} ± {s['asr']['std']:.3f}, "
              f"clean acc {s['target_clean_acc']['mean']:.3f}")

    def asr(rate, mode, wd=5e-4, debias=0.0):
        return settings[(rate, mode, wd, debias)]["asr"]["mean"]

    poisoned_source = [r for r in runs if r["source_rate"] == 0.1]
    assert min(r["source_asr_targeted"] for r in poisoned_source) >= 0.9
    assert asr(0.1, "fixed") - asr(0.0, "fixed") >= 0.25  # the bias survives fixed-feature transfer
    assert asr(0.1, "fixed") > asr(0.1, "full")  # full-network fine-tuning weakens it
    assert asr(0.1, "full", 5e-2) <= 0.05  # strong weight decay removes it
    assert asr(0.1, "scratch") <= 0.05 and asr(0.0, "scratch") <= 0.05
    clean_acc = {rate: settings[(rate, "fixed", 5e-4, 0.0)]["target_clean_acc"]["mean"] for rate in (0.0, 0.1)}
    assert abs(clean_acc[0.1] - clean_acc[0.0]) <= 0.08  # ASR gaps are bias, not accuracy
    assert asr(0.1, "full", 5e-4, 0.5) <= asr(0.1, "full") + 0.05  # de-biasing the target helps full-network
