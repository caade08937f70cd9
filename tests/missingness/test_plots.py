import pytest
from confidently.missingness.plots import plot_summaries


def curve_summary(values):
    return {"schema": "ablate-curve-summary/v1", "ks": [0, 4, 8], "frac_unchanged": values,
            "class_entropy_norm": [1.0, 0.8, 0.5]}


def test_curves_are_drawn_side_by_side(tmp_path):
    path = tmp_path / "bias.png"
    plot_summaries([curve_summary([1, 0.5, 0.2]), curve_summary([1, 0.9, 0.8])], ["CNN black", "ViT drop"], path,
                   "bias")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "bias.svg"
    plot_summaries([curve_summary([1, 0.5, 0.2])], ["one"], svg)
    assert b"<svg" in svg.read_bytes()[:400]


def test_summaries_of_different_kinds_are_refused(tmp_path):
    topk = {"schema": "ablate-topk-summary/v1", "ks": [0, 2], "sources": {"own": {"frac_unchanged": [1, 0]}}}
    with pytest.raises(ValueError, match="one kind"):
        plot_summaries([curve_summary([1, 0.5, 0.2]), topk], ["a", "b"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
