"""The shared CLI skeleton: exit codes, config files, --print-config, the stdin rule."""

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from confidently.cli import Common, common_options, run_app, tool_app
from confidently.errors import InvalidInput, NoValidResult, UsageError
from typer.testing import CliRunner

app = tool_app("probe", "A probe tool for the skeleton's tests.")
seen: dict = {}


@app.command()
@common_options(uses={"seed", "batch_size", "shard", "engine", "skip_invalid"})
def go(name: str = typer.Argument("x"), limit: int = typer.Option(3, "--limit"), fail: str = typer.Option(None),
       *, common: Common) -> None:
    seen.update(name=name, limit=limit, common=common)
    if fail == "invalid":
        raise InvalidInput("expected an integer", source="in.jsonl", line=4, field="label")
    if fail == "empty":
        raise NoValidResult("nothing valid")
    if fail == "crash":
        raise RuntimeError("boom")
    if fail == "interrupt":
        raise KeyboardInterrupt


@app.command()
@common_options(uses={"batch_size"})
def named(max_steps: int = typer.Option(3, "--max-steps"), data: str = typer.Option("x", "--data"),
          *, common: Common) -> None:
    """Library errors name arguments; the command line shows their flags."""
    raise UsageError("max_steps must be at most batch_size; `data` 'x': data and its max_steps_total stay")


@app.command()
@common_options(uses={"seed"})
def other(*, common: Common) -> None:
    import random

    import numpy as np
    import torch

    seen.update(other=True, draws=(random.random(), float(np.random.rand()), float(torch.rand(1))))


@app.command()
@common_options()
def paths(files: list[Path] = typer.Option(None, "--file"), *, common: Common) -> None:
    seen.update(config=common.config)


def invoke(*argv):
    seen.clear()
    with pytest.raises(SystemExit) as info:
        run_app(app, "probe", list(argv))
    return info.value.code


def test_common_options_reach_the_command():
    assert invoke("go", "n", "--seed", "9", "--shard", "1/3", "--engine", "serial", "--skip-invalid") == 0
    common = seen["common"]
    assert (common.seed, str(common.shard), common.skip_invalid) == (9, "1/3", True)
    assert common.config["limit"] == 3 and common.config["name"] == "n"


def test_options_a_command_does_not_take_are_refused_and_keep_their_defaults(capsys):
    assert invoke("other", "--batch-size", "8") == 2
    assert "No such option: --batch-size" in capsys.readouterr().err
    assert invoke("other") == 0
    assert invoke("go", "--device", "cpu") == 2 and invoke("go", "--deterministic") == 2
    assert invoke("go") == 0
    common = seen["common"]
    assert (common.device, common.address, common.deterministic) == ("auto", None, False)


@pytest.mark.parametrize(("uses", "oom_backoff", "message"), [
    ({"sed"}, False, "unknown shared options ['sed']"),
    ({"address"}, False, "--address only means something with --engine"),
    ({"seed"}, True, "oom_backoff, micro_batches and batch_size need batch_size in uses"),
])
def test_common_options_refuses_declarations_that_cannot_be_honoured(uses, oom_backoff, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        common_options(uses=uses, oom_backoff=oom_backoff)


def test_a_command_may_set_its_own_batch_size_default():
    app = typer.Typer()

    @app.command()
    @common_options(uses={"batch_size"}, batch_size=2)
    def attack(*, common: Common) -> None:
        seen["batch"] = common.batch_size

    assert CliRunner().invoke(app, []).exit_code == 0 and seen["batch"] == 2
    assert CliRunner().invoke(app, ["--batch-size", "5"]).exit_code == 0 and seen["batch"] == 5
    assert "[default: 2" in CliRunner().invoke(app, ["--help"]).output
    with pytest.raises(ValueError, match="need batch_size in uses"):
        common_options(uses={"seed"}, batch_size=2)


def test_seed_makes_every_global_random_source_reproducible():
    assert invoke("other", "--seed", "5") == 0
    first = seen["draws"]
    assert invoke("other", "--seed", "5") == 0 and seen["draws"] == first
    assert invoke("other", "--seed", "6") == 0 and all(a != b for a, b in zip(seen["draws"], first, strict=True))


@pytest.mark.parametrize(("fail", "code"), [("invalid", 3), ("empty", 4), ("crash", 1), ("interrupt", 130)])
def test_exit_codes(fail, code, capsys):
    assert invoke("go", "--fail", fail) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if fail == "invalid":
        assert "in.jsonl:4, field 'label': expected an integer" in err


def test_usage_errors_exit_2(capsys):
    assert invoke("go", "--no-such-flag") == 2
    assert invoke("go", "--shard", "5/2") == 2
    assert invoke("go", "--limit", "many") == 2


def test_library_argument_names_become_the_commands_flags(capsys):
    assert invoke("named") == 2
    err = capsys.readouterr().err
    assert "--max-steps must be at most --batch-size; --data 'x': data and its max_steps_total stay" in err


def test_verbose_shows_traceback(capsys):
    assert invoke("go", "--fail", "crash", "-v") == 1
    assert "Traceback" in capsys.readouterr().err


def test_config_sets_defaults_and_flags_win(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"limit": 7, "seed": 5, "batch-size": 8}))
    assert invoke("go", "--config", str(config)) == 0
    assert (seen["limit"], seen["common"].seed, seen["common"].batch_size) == (7, 5, 8)
    assert invoke("go", "--config", str(config), "--limit", "2") == 0
    assert seen["limit"] == 2
    capsys.readouterr()
    assert invoke("go", "--config", str(config), "--print-config") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["limit"] == 7 and printed["seed"] == 5 and "name" in printed
    assert "go" not in seen and "common" not in seen


def test_repeated_path_options_are_plain_strings_in_the_config(capsys):
    assert invoke("paths", "--file", "a.bin", "--file", "b.bin") == 0
    assert json.loads(json.dumps(seen["config"]))["files"] == ["a.bin", "b.bin"]  # artifacts store it as JSON
    capsys.readouterr()
    assert invoke("paths", "--file", "a.bin", "--print-config") == 0
    assert yaml.safe_load(capsys.readouterr().out)["files"] == ["a.bin"]


def test_config_with_unknown_key_is_a_usage_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("limt: 3\n")
    assert invoke("go", "--config", str(config)) == 2
    assert "limt" in capsys.readouterr().err


def test_version(capsys):
    assert invoke("--version") == 0
    assert "probe (confidently) 0.1.0" in capsys.readouterr().out


def test_terminal_on_stdin_is_a_usage_error(tmp_path):
    """`dataset info` with nothing piped in prints usage and exits 2 instead of waiting."""
    from tests.conftest import real_tool_path

    primary, secondary = pty.openpty()
    proc = subprocess.run([real_tool_path("dataset"), "info"], stdin=secondary, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    os.close(primary)
    os.close(secondary)
    assert proc.returncode == 2, proc.stderr
    assert "no input" in proc.stderr


if __name__ == "__main__":
    run_app(app, "probe", sys.argv[1:])


def test_errors_show_even_when_quiet(capsys):
    assert invoke("go", "--fail", "invalid", "-q") == 3
    assert "expected an integer" in capsys.readouterr().err
