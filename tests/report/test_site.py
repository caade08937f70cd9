"""`report` on small fixtures of real tool output (made by the tools themselves on demo data)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.report import build_site, classify, read_records
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = {
    "certify.jsonl": ("certify", ["certified.png"]),
    "advtrain.jsonl": ("advtrain", ["robustness.png", "transfer.png"]),
    "ablate.jsonl": ("ablate", ["ablate-consistency-summary-0.png", "ablate-curve-summary-1.png",
                                "ablate-topk-summary-2.png", "lime-heatmaps.png"]),
    "ablate-summary.json": ("ablate", ["ablate-curve-summary-0.png"]),
    "plant-backdoor.jsonl": ("plant-backdoor", ["asr.png"]),
    "influence.jsonl": ("influence", ["ranking.png", "counterfactual.png", "convergence.png"]),
    "unadv-patch.jsonl": ("unadv-patch", ["accuracy.png", "texture-accuracy.png"]),
    "render-3db.jsonl": ("render-3db", ["by-parameter.png", "heatmap.png"]),
    "render-3db-analyses.jsonl": ("render-3db", ["panel-per-object.png", "panel-aggregate.png",
                                                 "background-complexity.png"]),
    "immunize.jsonl": ("immunize", ["similarity.png"]),
    "training.jsonl": ("training", ["curves-1-robust16.safetensors-train.png", "curves-2-base16.safetensors-full.png",
                                    "curves-3-base16.safetensors-ablation.png"]),
}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def shifted(value):
    """``value`` with every float v moved to v/2 + 1/4 (zeros too, and [0, 1] stays inside [0, 1])."""
    if isinstance(value, float):
        return value / 2 + 0.25
    if isinstance(value, dict):
        return {k: shifted(v) for k, v in value.items()}
    return [shifted(v) for v in value] if isinstance(value, list) else value


def one_fewer_of_each_kind(records: list[dict]) -> list[dict]:
    """Without the first record of every kind that has several: a figure of per-record results must change."""
    def kind(record):
        return record.get("kind"), record.get("cmd"), tuple(v.get("schema") for v in record.values()
                                                            if isinstance(v, dict) and "schema" in v)

    kinds = [kind(r) for r in records]
    first = {k: kinds.index(k) for k in kinds if kinds.count(k) > 1}
    return [r for i, r in enumerate(records) if i not in first.values()]


def referenced(html: str) -> list[str]:
    return [ref for ref in re.findall(r'(?:href|src)="([^"#]+)"', html) if not ref.startswith("data:")]


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_every_record_kind_draws_its_figures(tmp_path, fixture):
    section, images = EXPECTED[fixture]
    records = read_records(FIXTURES / fixture, fixture)
    assert {classify(r) for r in records} == {section}
    drawn, skipped = build_site(records, tmp_path / "site")
    assert drawn == {section: len(records)} and skipped == 0
    build_site([shifted(r) for r in one_fewer_of_each_kind(records)], tmp_path / "other")
    for name in images:
        figure = pixels(tmp_path / "site" / section / name)
        height, width, _ = figure.shape
        assert width >= 500 and height >= 300
        assert len(np.unique(figure.reshape(-1, 3), axis=0)) >= 3  # something is drawn on the background
        changed = pixels(tmp_path / "other" / section / name)
        assert changed.shape != figure.shape or not np.array_equal(changed, figure), f"{name} ignores its numbers"
    html = (tmp_path / "site" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(images)  # self-contained: images embedded
    assert all((tmp_path / "site" / ref).exists() for ref in referenced(html))


def test_mixed_inputs_unknown_kinds_and_nothing_to_draw(tmp_path):
    records = [*read_records(FIXTURES / "certify.jsonl", "c"), {"kind": "something-else"}]
    drawn, skipped = build_site(records, tmp_path / "site")
    assert drawn == {"certify": 8} and skipped == 1
    with pytest.raises(NoValidResult, match="no record"):
        build_site([{"kind": "something-else"}], tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_failure_leaves_no_half_written_site(tmp_path, monkeypatch):
    build_site(read_records(FIXTURES / "certify.jsonl", "c"), tmp_path / "site")
    before = (tmp_path / "site" / "index.html").read_text()
    from confidently.report import site

    def broken(records, folder):
        (folder / "partial.png").write_bytes(b"x")
        raise RuntimeError("drawing failed")

    real = site.SECTIONS.get("certify")
    monkeypatch.setitem(site.SECTIONS._items, "certify", real.__class__("certify", "certify", real.claims, broken))
    with pytest.raises(RuntimeError):
        build_site(read_records(FIXTURES / "certify.jsonl", "c"), tmp_path / "site")
    assert (tmp_path / "site" / "index.html").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_malformed_lines_name_their_place(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"kind": "influence.diag"}\n{not json\n')
    with pytest.raises(InvalidInput) as error:
        read_records(path, "bad.jsonl")
    assert "bad.jsonl" in str(error.value) and "2" in str(error.value)


def readable_png(tmp_path) -> str:
    """A random image file the report can read, standing in for a record's image reference."""
    import torch
    from confidently.io.images import save_image

    save_image(torch.rand(3, 32, 32), tmp_path / "x.png")
    return str(tmp_path / "x.png")


def drawn_size(records, tmp_path, section: str, name: str) -> tuple[int, int]:
    build_site(records, tmp_path / "site")
    return Image.open(tmp_path / "site" / section / name).size


def test_unadv_patch_section_shows_the_patches_it_can_read(tmp_path):
    import torch
    from confidently.io.artifacts import save_artifact

    save_artifact(tmp_path / "p.safetensors", {"patches": torch.rand(3, 3, 4, 4), "class_ids": torch.arange(3)},
                  {"kind": "patch2d"})
    records = [r for r in read_records(FIXTURES / "unadv-patch.jsonl", "u") if r["cmd"] == "eval"]
    for record in records:
        record["patches"] = str(tmp_path / "p.safetensors")
    width, height = drawn_size(records, tmp_path, "unadv-patch", "patches.png")
    assert width >= 500 and height >= 150


def test_certify_section_shows_votes_for_images_it_can_read(tmp_path):
    png = readable_png(tmp_path)
    records = read_records(FIXTURES / "certify.jsonl", "c")
    for record in records[:3]:
        record["image"] = png
    width, height = drawn_size(records, tmp_path, "certify", "votes.png")
    assert width >= 500 and height >= 300


def test_render_3db_section_shows_sample_renders_it_can_read(tmp_path):
    png = readable_png(tmp_path)
    records = read_records(FIXTURES / "render-3db.jsonl", "r")
    for record in records:
        record["image"] = png
    width, height = drawn_size(records, tmp_path, "render-3db", "samples.png")
    assert width >= 500 and height >= 300


def test_immunize_section_shows_photo_and_edit_grids_it_can_read(tmp_path):
    png = readable_png(tmp_path)
    records = read_records(FIXTURES / "immunize.jsonl", "i")
    for record in records:
        if record.get("kind") == "immunize.scored":
            record.update(image=png, immunized=png, edit_clean=png, edit_immunized=png)
    width, height = drawn_size(records, tmp_path, "immunize", "grids.png")
    assert width >= 500 and height >= 300


def test_a_rerun_replaces_only_what_report_wrote(tmp_path):
    site = tmp_path / "site"
    build_site(read_records(FIXTURES / "certify.jsonl", "c"), site)
    (site / "notes.txt").write_text("mine")
    (site / "certify" / "mine.png").write_bytes(b"mine")
    drawn, _ = build_site(read_records(FIXTURES / "influence.jsonl", "i"), site)
    assert list(drawn) == ["influence"] and (site / "influence").is_dir()
    assert (site / "notes.txt").read_text() == "mine" and (site / "certify" / "mine.png").read_bytes() == b"mine"
    assert [p.name for p in (site / "certify").iterdir()] == ["mine.png"]  # report's old figures are gone


def test_a_folder_report_did_not_make_is_refused_and_forcing_keeps_its_files(tmp_path):
    site = tmp_path / "results"
    (site / "sub").mkdir(parents=True)
    (site / "certify.jsonl").write_text((FIXTURES / "certify.jsonl").read_text())
    (site / "sub" / "keep.txt").write_text("mine")
    records = read_records(site / "certify.jsonl", "c")
    with pytest.raises(UsageError, match="--force"):
        build_site(records, site)
    assert sorted(p.name for p in site.iterdir()) == ["certify.jsonl", "sub"]
    build_site(records, site, force=True)
    build_site(records, site)  # now report's own folder: no --force needed
    assert (site / "index.html").is_file() and (site / "sub" / "keep.txt").read_text() == "mine"
    assert (site / "certify.jsonl").read_text() == (FIXTURES / "certify.jsonl").read_text()


def test_a_user_file_where_report_would_write_needs_force(tmp_path):
    site = tmp_path / "site"
    build_site(read_records(FIXTURES / "certify.jsonl", "c"), site)
    records = read_records(FIXTURES / "influence.jsonl", "i")
    build_site(records, tmp_path / "probe")
    figure = next((tmp_path / "probe" / "influence").iterdir()).name
    (site / "influence").mkdir()
    (site / "influence" / figure).write_bytes(b"mine")
    with pytest.raises(UsageError, match=figure):
        build_site(records, site)
    assert (site / "influence" / figure).read_bytes() == b"mine"
    build_site(records, site, force=True)
    assert (site / "influence" / figure).read_bytes() != b"mine"


def test_a_summary_missing_a_field_or_of_the_wrong_type_names_file_line_and_field(tmp_path):
    summary = json.loads((FIXTURES / "ablate-summary.json").read_text())
    del summary["n"]
    (tmp_path / "s.json").write_text(json.dumps(summary, indent=2))
    with pytest.raises(InvalidInput) as info:
        read_records(tmp_path / "s.json", "s.json")
    assert (info.value.source, info.value.line, info.value.field) == ("s.json", 1, "n")
    scored = json.loads((FIXTURES / "immunize.jsonl").read_text().splitlines()[0])
    scored["metrics"]["ssim"] = "high"
    (tmp_path / "i.jsonl").write_text("\n".join([json.dumps(scored | {"id": "ok"}), json.dumps(scored)]))
    with pytest.raises(InvalidInput) as info:
        read_records(tmp_path / "i.jsonl", "i.jsonl")
    assert (info.value.line, info.value.field) == (1, "metrics.ssim") and "a number" in info.value.message
    skipped = []
    assert read_records(tmp_path / "i.jsonl", "i.jsonl", skipped.append) == [] and len(skipped) == 2
