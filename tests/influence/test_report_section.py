"""`report` on `influence lds` records: a table of each estimate's mean score, best first."""

from confidently.report import build_site


def test_lds_records_give_a_table_best_first(tmp_path):
    common = {"kind": "influence.lds", "target": "oracle", "output": "logit_correct"}
    records = [
        {**common, "influence": "diff.safetensors", "estimator": "diff-means", "target_index": 0, "label": 0,
         "lds": 0.9},
        {**common, "influence": "diff.safetensors", "estimator": "diff-means", "scope": "mean", "lds": 0.81,
         "lds_std": 0.05, "targets": 30, "holdout_models": 20, "fit_models": 40},
        {**common, "influence": "ridge.safetensors", "estimator": "ridge", "scope": "mean", "lds": 0.93,
         "lds_std": 0.02, "targets": 30, "holdout_models": 20, "fit_models": 40},
    ]
    drawn, skipped = build_site(records, tmp_path / "site")
    assert drawn == {"influence": 3} and skipped == 0
    page = (tmp_path / "site" / "index.html").read_text()
    assert "Linear datamodeling score" in page and "0.930 ± 0.020" in page
    assert page.index("ridge.safetensors") < page.index("diff.safetensors")
