"""`report` on `advtrain eval` records of several attacks: robust accuracy against eps, one line per attack."""

import numpy as np
from confidently.report import build_site
from confidently.report.sections.advtrain import WORST, attack_curves
from PIL import Image


def evaluation(model, eps, nat, adv, **fields):
    return {"tool": "advtrain", "version": "0.1.0", "kind": "eval", "cmd": "eval", "model": model, "data": "d.jsonl",
            "constraint": "l2", "eps": eps, "steps": 20, "n": 64, "nat_acc": nat, "mpc_nat": nat, "adv_acc": adv,
            "mpc_adv": adv, **fields}


def several(eps, nat, pgd, autoattack, worst):
    """A record of `advtrain eval --attack pgd,autoattack` (the fields it writes besides the tallies)."""
    return evaluation("std.safetensors", eps, nat, worst, attack="pgd,autoattack", aa_steps=100, aa_targets=9,
                      queries=5000, batch_size=256,
                      by_attack={"pgd": {"adv_acc": pgd, "mpc_adv": pgd},
                                 "autoattack": {"adv_acc": autoattack, "mpc_adv": autoattack}})


RECORDS = [
    several(0.0, 0.94, 0.94, 0.94, 0.94), several(0.5, 0.94, 0.7, 0.6, 0.55), several(1.0, 0.94, 0.22, 0.2, 0.19),
    evaluation("robust.safetensors", 0.0, 0.9, 0.9),  # records of before: PGD, and no `attack` field
    evaluation("robust.safetensors", 1.0, 0.9, 0.6),
    evaluation("robust.safetensors", 1.0, 0.9, 0.5, attack="square", queries=5000, batch_size=256),
]


def test_one_line_per_attack_and_the_worst_case():
    curves = attack_curves(RECORDS)
    assert list(curves) == [("robust.safetensors", "l2"), ("std.safetensors", "l2")]
    std = curves[("std.safetensors", "l2")]
    assert list(std) == ["autoattack", "pgd", WORST]  # the worst case drawn last
    assert std["autoattack"] == [(0.0, 0.94, 0.94), (0.5, 0.94, 0.6), (1.0, 0.94, 0.2)]
    assert [p[2] for p in std[WORST]] == [0.94, 0.55, 0.19]
    robust = curves[("robust.safetensors", "l2")]
    assert robust == {"pgd": [(0.0, 0.9, 0.9), (1.0, 0.9, 0.6)], "square": [(1.0, 0.9, 0.5)]}


def test_the_figure_and_table_show_every_attack(tmp_path):
    drawn, skipped = build_site(RECORDS, tmp_path / "site")
    assert drawn == {"advtrain": len(RECORDS)} and skipped == 0
    figure = np.asarray(Image.open(tmp_path / "site" / "advtrain" / "robustness.png").convert("RGB"))
    assert figure.shape[1] >= 500 and len(np.unique(figure.reshape(-1, 3), axis=0)) >= 3
    html = (tmp_path / "site" / "index.html").read_text()
    assert all(word in html for word in ("autoattack", "square", WORST))
    only_pgd = [r for r in RECORDS if "by_attack" not in r and r.get("attack") != "square"]
    build_site(only_pgd + [several(1.0, 0.94, 0.22, 0.05, 0.05)], tmp_path / "other")
    changed = np.asarray(Image.open(tmp_path / "other" / "advtrain" / "robustness.png").convert("RGB"))
    assert changed.shape != figure.shape or not np.array_equal(changed, figure)
