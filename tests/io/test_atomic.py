"""The guard against writing over other people's files, and the clean-up after killed writes."""

import json
import os
import time

import pytest
import torch
from confidently.errors import UsageError
from confidently.io.artifacts import artifact_metadata, save_artifact
from confidently.io.atomic import (
    FOLDER_MARKER,
    claim_folder,
    guard_output,
    record_folder_files,
    remove_stale_temporaries,
    written_by,
)


def test_written_by_reads_the_producing_tool_from_the_file(tmp_path):
    save_artifact(tmp_path / "a.safetensors", {"x": torch.zeros(1)}, artifact_metadata(tool="ablate", kind="orders"))
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "theirs.safetensors"), metadata={"tool": "other-program"})
    (tmp_path / "summary.json").write_text(json.dumps({"tool": "certify", "n": 3}, indent=2))
    (tmp_path / "records.jsonl").write_text('{"tool": "render-3db", "id": "a"}\n{"tool": "render-3db"}\n')
    (tmp_path / "notes.txt").write_text("tool: certify\n")
    assert written_by(tmp_path / "a.safetensors") == "ablate"
    assert written_by(tmp_path / "theirs.safetensors") == "other-program"
    assert written_by(tmp_path / "summary.json") == "certify"
    assert written_by(tmp_path / "records.jsonl") == "render-3db"
    assert written_by(tmp_path / "notes.txt") is None and written_by(tmp_path / "missing") is None


def test_written_by_reads_pngs_and_json_arrays_of_records(tmp_path):
    from confidently.io.images import save_image

    save_image(torch.rand(3, 4, 4), tmp_path / "texture.png", tool="unadv-patch")
    save_image(torch.rand(3, 4, 4), tmp_path / "photo.png")
    (tmp_path / "summaries.json").write_text(json.dumps([{"tool": "immunize", "n": 1}, {"n": 2}], indent=2))
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    assert written_by(tmp_path / "texture.png") == "unadv-patch" and written_by(tmp_path / "photo.png") is None
    assert written_by(tmp_path / "summaries.json") == "immunize" and written_by(tmp_path / "list.json") is None


def test_an_empty_file_is_no_ones_and_may_be_replaced(tmp_path):
    (tmp_path / "ids.jsonl").write_bytes(b"")  # e.g. no poisoned ids: an empty output names no tool
    (tmp_path / "blank.json").write_bytes(b" ")
    guard_output(tmp_path / "ids.jsonl", "plant-backdoor", force=False)
    with pytest.raises(UsageError, match="blank"):
        guard_output(tmp_path / "blank.json", "plant-backdoor", force=False)


def test_guard_refuses_other_files_unless_forced(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"tool": "certify"}))
    (tmp_path / "mine.json").write_text("{}")
    guard_output(tmp_path / "summary.json", "certify", force=False)
    guard_output(tmp_path / "new.json", "certify", force=False)
    guard_output(tmp_path / "mine.json", "certify", force=True)
    with pytest.raises(UsageError, match=r"mine\.json.*--force"):
        guard_output(tmp_path / "mine.json", "certify", force=False)
    with pytest.raises(UsageError, match="--resume"):
        guard_output(tmp_path / "summary.json", "ablate", force=False, flag="--resume")


def test_claim_folder_remembers_its_files_and_never_claims_a_users(tmp_path):
    assert claim_folder(tmp_path / "new", "dataset", force=False)["files"] == []
    record_folder_files(tmp_path / "new", "dataset", ["b.png", "a.png"])
    assert claim_folder(tmp_path / "new", "dataset", force=False)["files"] == ["a.png", "b.png"]
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "photo.jpg").write_bytes(b"mine")
    with pytest.raises(UsageError, match="--force"):
        claim_folder(tmp_path / "user", "dataset", force=False)
    assert not (tmp_path / "user" / FOLDER_MARKER).exists()
    assert claim_folder(tmp_path / "user", "dataset", force=True)["files"] == []


def test_only_stale_temporaries_of_the_file_are_removed(tmp_path):
    target = tmp_path / "job.safetensors"
    old, fresh, other = (tmp_path / ".job.safetensors.a1.tmp", tmp_path / ".job.safetensors.b2.tmp",
                         tmp_path / ".other.safetensors.c3.tmp")
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    os.utime(other, (1_000_000_000, 1_000_000_000))
    assert remove_stale_temporaries(target, older_than=time.time() - 60) == [old]
    assert fresh.exists() and other.exists()


def test_an_atomic_write_gets_the_permissions_a_plain_write_would(tmp_path):
    import stat

    from confidently.io.atomic import atomic_write

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_write(tmp_path / "atomic.txt", "w") as handle:
        handle.write("x")
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
