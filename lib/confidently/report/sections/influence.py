"""influence: the most helpful and harmful source units, the counterfactual curve, convergence, and how well
each estimate predicts held-out models (LDS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, save

KINDS = ("influence.rank", "influence.counterfactual", "influence.diag", "influence.lds")


def _claims(record: dict[str, Any]) -> bool:
    return record.get("kind") in KINDS and ("overall" in record or record.get("kind") != "influence.rank")


@register_section("influence", "influence — which source classes help or hurt", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    blocks = []
    ranks = sorted((r for r in records if r["kind"] == "influence.rank"), key=lambda r: r["rank"])
    if ranks:
        shown = ranks[:10] + [r for r in ranks[-10:] if r not in ranks[:10]]
        figure, (axis,) = new_figure(height=max(3.0, 0.28 * len(shown) + 1))
        values = [r["overall"] for r in shown]
        axis.barh(range(len(shown)), values, xerr=[r.get("stderr") or 0 for r in shown],
                  color=["tab:green" if v >= 0 else "tab:red" for v in values])
        axis.set_yticks(range(len(shown)), [str(r.get("name", r["unit"])) for r in shown], fontsize=8)
        axis.invert_yaxis()
        axis.set(xlabel=f"overall influence on {ranks[0].get('target', 'the target')}")
        blocks.append(Block("Most helpful and most harmful source units", "mean over target examples of (output "
                            "with the unit − without); whiskers: standard error", image=save(figure, folder,
                                                                                               "ranking.png")))
    counterfactual = [r for r in records if r["kind"] == "influence.counterfactual"]
    if counterfactual:
        figure, (axis,) = new_figure()
        full = [r for r in counterfactual if r["order"] == "full"]
        for order in ("bottom", "top", "random"):
            points = sorted((r["k"], r["acc_mean"], r["acc_std"]) for r in counterfactual if r["order"] == order)
            points = [(0, full[0]["acc_mean"], full[0]["acc_std"])] + points if full and points else points
            if points:
                axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                              marker="o", capsize=3, label=f"remove {order}")
        axis.set(xlabel="source units removed (k)", ylabel="target accuracy")
        axis.legend(fontsize=8)
        blocks += [Block("Counterfactual: retrain without k units", "removing the most helpful units should hurt "
                         "more than removing random ones", image=save(figure, folder, "counterfactual.png")),
                   Block("Counterfactual runs", columns=["order", "k", "runs", "accuracy"],
                         rows=[[r["order"], r["k"], r["runs"], f"{fmt(r['acc_mean'])} ± {fmt(r['acc_std'])}"]
                               for r in sorted(counterfactual, key=lambda r: (r["order"], r["k"]))])]
    scores = [r for r in records if r["kind"] == "influence.lds" and r.get("scope") == "mean"]
    if scores:
        blocks.append(Block("Linear datamodeling score", "Spearman correlation, across held-out models, between "
                            "each estimate's predicted and actual output, averaged over target examples (0: a "
                            "shuffled estimate; 1: a perfect ranking)",
                            columns=["estimate", "estimator", "LDS", "targets", "held-out models", "fitted models"],
                            rows=[[r.get("influence"), r.get("estimator"),
                                   f"{fmt(r['lds'])} ± {fmt(r.get('lds_std') or 0)}" if r.get("lds") is not None
                                   else "undefined", r.get("targets"), r.get("holdout_models"), r.get("fit_models")]
                                  for r in sorted(scores, key=lambda r: 2.0 if r.get("lds") is None else -r["lds"])]))
    diagnostics = sorted((r for r in records if r["kind"] == "influence.diag"), key=lambda r: r["models"])
    if diagnostics:
        figure, (axis,) = new_figure()
        axis.plot([r["models"] for r in diagnostics], [r["mean_std"] for r in diagnostics], marker="o")
        axis.set(xlabel="models", ylabel="bootstrap std of overall influence")
        blocks.append(Block("Convergence", "the estimate's spread should shrink as models are added",
                            image=save(figure, folder, "convergence.png")))
    return blocks



