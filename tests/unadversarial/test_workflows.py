"""The unadversarial workflows a command makes one call of: placements from text, patch files, stamping image
records row by row, baselines, PNG export and the landing loop over arms × weather."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import load_artifact
from confidently.io.images import load_image, save_image
from confidently.io.records import RecordReader
from confidently.models import create_model
from confidently.run import record_generator
from confidently.unadversarial import (
    PLACEMENT_ARGUMENTS,
    Placement,
    airsim,
    baseline_patches,
    chosen_placement,
    composite,
    export_pngs,
    load_patches,
    loss_summary,
    make_placement,
    save_patches,
    stamp_records,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny_resnet", 4, img_size=16)


def test_make_placement_reads_text_and_its_errors_name_arguments():
    assert make_placement(10, 0.2, "0.8,1.2", "region", "0.5,0,1,1") == \
        Placement(10.0, 0.2, (0.8, 1.2), "region", (0.5, 0.0, 1.0, 1.0))
    assert make_placement() == Placement()  # the defaults are the thesis's
    for scale, region, named in (("1", None, "scale"), ("0.9,1.1", "0,0,1", "region"), ("a,b", None, "scale")):
        with pytest.raises(UsageError, match=named) as error:
            make_placement(scale=scale, region=region)
        assert "--" not in str(error.value) and f"`{named}`" in str(error.value)  # the command line shows flags


def test_chosen_placement_replaces_only_the_fields_given():
    stored = Placement(degrees=0.0, scale=(1.0, 1.0), mode="region", region=(0.9, 0.9, 1.0, 1.0))
    given = make_placement(30, 0.1, "0.5,0.6", "center", None)
    assert chosen_placement(stored, given, set()) == (stored, "patches")
    assert chosen_placement(stored, given, {"degrees", "seed"}) == (replace(stored, degrees=30.0), "patches+options")
    assert chosen_placement(stored, given, {"placement"}) == (replace(stored, mode="center"), "patches+options")
    assert chosen_placement(stored, given, set(PLACEMENT_ARGUMENTS)) == (given, "options")


def test_patch_files_round_trip_and_are_checked_against_the_model(model, tmp_path):
    patches = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    where = Placement(degrees=12.0, mode="center")
    save_patches(tmp_path / "p.safetensors", patches, model, where, seed=7, warp="nearest")
    loaded, meta = load_patches(tmp_path / "p.safetensors", model)
    assert torch.equal(loaded, patches) and meta["seed"] == 7 and meta["warp"] == "nearest"
    assert Placement.from_metadata(meta["transform"]) == where and meta["patch_size"] == 5
    assert meta["image_size"] == [16, 16] and meta["num_classes"] == 4 and meta["tool"] == "unadv-patch"
    save_patches(tmp_path / "three.safetensors", patches[:3], model, where)
    with pytest.raises(InvalidInput, match="3 class patches but the model has 4"):
        load_patches(tmp_path / "three.safetensors", model)
    save_patches(tmp_path / "big.safetensors", torch.rand(4, 3, 17, 17), model, where)
    with pytest.raises(InvalidInput, match="do not fit"):
        load_patches(tmp_path / "big.safetensors", model)


def write_records(folder, sizes, labels):
    lines = []
    for index, ((height, width), label) in enumerate(zip(sizes, labels, strict=True)):
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(index))
        save_image(image, folder / f"{index}.png")
        lines.append(json.dumps({"id": f"r{index}", "image": f"{index}.png", "label": label, "keep": index}))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    return list(RecordReader(folder / "records.jsonl", require_image=True))


def test_stamped_rows_are_each_records_composite_at_its_seeded_placement(model, tmp_path):
    patches = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    save_patches(tmp_path / "p.safetensors", patches, model, Placement())
    records = write_records(tmp_path, [(16, 16)] * 3, [2, 0, 3])
    where = Placement(degrees=30.0)
    out = stamp_records(records, tmp_path / "p.safetensors", tmp_path / "stamped.safetensors", where, seed=5)
    tensors, meta = load_artifact(tmp_path / "stamped.safetensors")
    expected = []
    for index, record in enumerate(records):
        spot = where.sample(1, record_generator(5, record.id, "placement"))
        image = load_image(record.data["image"], tmp_path)
        expected.append(composite(image[None], patches[record.data["label"]][None], spot)[0])
        assert out[index]["image"] == {"tensors": str(tmp_path / "stamped.safetensors"), "key": "images",
                                       "index": index}
        assert out[index]["keep"] == index and out[index]["patch_class"] == record.data["label"]
        assert out[index]["placement"]["angle_deg"] == round(float(spot[0, 0]), 4)
    assert torch.equal(tensors["images"], torch.stack(expected))  # row by row = the stacked batch, bit for bit
    assert meta["ids"] == ["r0", "r1", "r2"] and meta["kind"] == "patched"
    fixed = stamp_records(records, tmp_path / "p.safetensors", tmp_path / "one.safetensors", where, patch_class=1)
    assert {r["patch_class"] for r in fixed} == {1}
    empty = stamp_records([], tmp_path / "p.safetensors", tmp_path / "empty.safetensors", where)
    assert empty == [] and load_artifact(tmp_path / "empty.safetensors")[0]["images"].shape == (0,)


def test_stamping_stops_at_a_bad_record_and_writes_nothing(model, tmp_path):
    save_patches(tmp_path / "p.safetensors", torch.rand(4, 3, 6, 6), model, Placement())
    mixed = write_records(tmp_path, [(16, 16), (16, 16), (20, 16)], [0, 1, 2])
    with pytest.raises(InvalidInput, match="images differ in size"):
        stamp_records(mixed, tmp_path / "p.safetensors", tmp_path / "out.safetensors", Placement())
    with pytest.raises(InvalidInput, match="no patch for class 9"):
        stamp_records(mixed[:1], tmp_path / "p.safetensors", tmp_path / "out.safetensors", Placement(), patch_class=9)
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == []  # no file, no spooled rows left


def test_noise_baseline_is_seeded_and_every_kind_but_qr_needs_data(model):
    noise = baseline_patches("noise", model, [], 5, seed=3)
    assert noise.shape == (4, 3, 5, 5) and 0 <= noise.min() <= noise.max() <= 1
    assert torch.equal(noise, baseline_patches("noise", model, [], 5, seed=3))
    assert not torch.equal(noise, baseline_patches("noise", model, [], 5, seed=4))
    with pytest.raises(UsageError, match="needs `data`"):
        baseline_patches("best-image", model, None, 5)
    with pytest.raises(UsageError, match="choose best-image"):
        baseline_patches("sticker", model, None, 5)


def test_export_writes_one_png_per_class_and_refuses_flipping_a_patch(model, tmp_path):
    patches = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    save_patches(tmp_path / "p.safetensors", patches, model, Placement())
    rows = list(export_pngs(tmp_path / "s.png", patches_path=tmp_path / "p.safetensors"))
    assert [(r["class_id"], r["artifact"]) for r in rows] == [(c, str(tmp_path / f"s-{c}.png")) for c in range(4)]
    for c in range(4):
        assert (load_image(str(tmp_path / f"s-{c}.png")) - patches[c]).abs().max() <= 0.5 / 255 + 1e-6
    with pytest.raises(UsageError, match="^flip_v"):
        list(export_pngs(tmp_path / "f.png", patches_path=tmp_path / "p.safetensors", flip_v=True))
    with pytest.raises(UsageError, match="texture_path T or patches_path P"):
        list(export_pngs(tmp_path / "f.png"))
    with pytest.raises(UsageError, match="PNG"):
        list(export_pngs(tmp_path / "f.jpg", patches_path=tmp_path / "p.safetensors"))


def test_loss_summary_averages_the_first_and_last_tenth():
    assert loss_summary([5.0, 3.0] + [2.0] * 16 + [1.0, 0.0]) == {"first_loss": 4.0, "final_loss": 0.5}
    assert loss_summary([2.0, 1.0]) == {"first_loss": 2.0, "final_loss": 1.0}


def test_texture_arms_run_original_first_and_resolve_local_files(tmp_path):
    (tmp_path / "t.png").write_bytes(b"png")
    arms = airsim.texture_arms(str(tmp_path / "t.png"), "C:/on/the/host.png")
    assert list(arms) == ["original", "unadv"] and arms["original"] == "C:/on/the/host.png"
    assert arms["unadv"] == str((tmp_path / "t.png").resolve())
    assert airsim.texture_arms(None) == {"original": None}


class StubSimulator:
    kind = "stub"

    def __init__(self):
        self.calls = []

    def set_texture(self, name, path):
        self.calls.append(("texture", name, path))

    def set_weather(self, setting):
        self.calls.append(("weather", dict(setting)))


def test_landing_pairs_starts_across_arms_and_weather_and_clears_the_weather(monkeypatch):
    starts = []

    def episode(sim, regressor, pad, config, offset):
        starts.append(tuple(np.round(offset, 9)))
        return {"landed": len(starts) % 2 == 1, "final_err_m": 0.1 * len(starts), "time_s": 2.0}

    monkeypatch.setattr(airsim, "land_episode", episode)
    sim = StubSimulator()
    rows = list(airsim.land_episodes(sim, lambda image: (0.0, 0.0), "Pad", arms={"original": None, "unadv": "u.png"},
                                     episodes=3, weather=[{}, {"fog": 0.5}], seed=2))
    assert [r["cmd"] for r in rows] == (["airsim-land"] * 3 + ["airsim-land-summary"]) * 4
    assert starts == starts[:3] * 4  # every arm × weather flies from the same three starts
    summary = rows[3]
    assert summary["n"] == 3 and summary["success_rate"] == 2 / 3 and summary["mean_time_s"] == 2.0
    assert summary["mean_final_err_m"] == round((0.1 + 0.2 + 0.3) / 3, 4)
    assert ("texture", "Pad", "u.png") in sim.calls and sim.calls[-1] == ("weather", {})

    def crash(*args, **kwargs):
        raise RuntimeError("the drone fell")

    monkeypatch.setattr(airsim, "land_episode", crash)
    sim = StubSimulator()
    with pytest.raises(RuntimeError, match="the drone fell"):
        list(airsim.land_episodes(sim, lambda image: (0.0, 0.0), "Pad", arms={"original": None},
                                  weather=[{"dust": 0.3}]))
    assert sim.calls == [("weather", {"dust": 0.3}), ("weather", {})]
