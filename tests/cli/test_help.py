"""`--help` tells the truth: every command shows exactly the shared options it honours.

The table below is the record of which shared options each command acts on (read from its body and
the library calls it passes ``common`` to); a command that starts honouring another one adds it here.
"""

import importlib
import re
import shlex

import pytest
import typer
import yaml
from confidently.cli.app import run_app
from typer.testing import CliRunner

SEED, DEVICE, BATCH, SHARD = "--seed", "--device", "--batch-size", "--shard"
ENGINE, ADDRESS, SKIP, DETERMINISTIC = "--engine", "--address", "--skip-invalid", "--deterministic"
WORKERS = "--workers"  # the data loader's decoding processes
GPUS = "--gpus-per-worker"  # comes with --engine: what each Ray worker asks for
SHARED = {SEED, DEVICE, BATCH, SHARD, ENGINE, ADDRESS, GPUS, SKIP, DETERMINISTIC}
EVERY_SHARED = SHARED | {WORKERS}  # a per-record streaming command's that reads images ahead in threads
ALWAYS = {"--config", "--print-config", "--quiet", "--verbose"}
STREAMED = {SHARD, ENGINE, ADDRESS, GPUS, SKIP}  # what stream_batches / stream_records act on
TRAINING = {SEED, DEVICE, BATCH, DETERMINISTIC}
STREAMING = TRAINING | {WORKERS}  # training or evaluating through the data loader

HONOURED = {
    "dataset": {"export": STREAMED, "info": {SKIP, WORKERS}, "split": {SEED}, "pack": {SKIP, WORKERS}},
    "advtrain": {"train": STREAMING | {SKIP}, "eval": STREAMING | {SHARD, SKIP}, "eval-merge": set(),
                 "attack": STREAMING | {SHARD, SKIP}, "transfer": STREAMING | {SKIP},
                 "features": {DEVICE, BATCH, SHARD, WORKERS, SKIP},
                 "import": set()},
    "certify": {"run": EVERY_SHARED, "recertify": set(), "check": TRAINING | {SHARD}, "summarize": set(),
                "delta": set(), "fit": STREAMING | {SKIP}},
    "ablate": {"order": EVERY_SHARED, "curve": EVERY_SHARED, "lime": EVERY_SHARED, "consistency": EVERY_SHARED,
               "topk": EVERY_SHARED, "apply": EVERY_SHARED, "fit": STREAMING | {SKIP}, "summarize": set(),
               "plot": set()},
    "plant_backdoor": {"trigger": set(), "poison": {SEED}, "stamp": {SEED}, "asr": {DEVICE, BATCH, SHARD, WORKERS},
                       "asr-merge": set(), "subset": {SEED}, "probe": {DEVICE, BATCH, WORKERS}, "experiment": TRAINING,
                       "summarize": set()},
    "influence": {"plan": {SEED}, "train": {DEVICE, SHARD, ENGINE, ADDRESS, GPUS, WORKERS}, "estimate": set(),
                  "lds": set(), "top": set(), "subpop": set(), "explain": set(), "leakage": set(),
                  "counterfactual": {SEED}, "summarize": set(), "convergence": {SEED}, "status": set(),
                  "slurm-script": set()},
    "report": {"": {SKIP}},
    "unadv_patch": {"train": STREAMING, "eval": STREAMING, "baseline": STREAMING,
                    "apply": {SEED}, "texture": STREAMING, "eval-texture": STREAMING, "export": set(),
                    "airsim eval": TRAINING, "airsim land": {SEED, DEVICE, DETERMINISTIC},
                    "airsim serve-fake": {SEED}},
    "immunize": {"tiny-model": {SEED}, "tiny-clip": {SEED}, **dict.fromkeys(("encoder", "diffusion", "random"),
                                                       {SEED, DEVICE, BATCH, DETERMINISTIC} | STREAMED),
                 "edit": {SEED, DEVICE, DETERMINISTIC} | STREAMED,
                 "score": {DEVICE, BATCH, WORKERS} | STREAMED},
    "render_3db": {"run": {SEED, DEVICE, SHARD, ENGINE, ADDRESS, GPUS, DETERMINISTIC, WORKERS}, "validate": {SEED},
                   "controls": set(), "analyze": {SEED}, "dashboard": set()},
}
# Commands whose --batch-size really is halved on CUDA out-of-memory (with_batch_backoff).
BACKS_OFF = {("advtrain", "eval"), ("advtrain", "attack"), ("advtrain", "features"), ("immunize", "score"),
             ("certify", "run"), *(("ablate", name) for name in ("order", "curve", "lime", "consistency", "topk"))}
OPTION_LINE = re.compile(r"^  (?:-\w, )?(--[\w-]+)", re.MULTILINE)


def app_of(tool: str) -> typer.Typer:
    return importlib.import_module(f"confidently_tools.{tool}").app


def leaf_commands(command, path: tuple[str, ...] = ()):
    if hasattr(command, "commands"):  # a group (typer's own click)
        for name, sub in command.commands.items():
            yield from leaf_commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def help_text(tool: str, command: str) -> str:
    result = CliRunner().invoke(app_of(tool), [*command.split(), "--help"], prog_name=tool.replace("_", "-"))
    assert result.exit_code == 0, result.output
    return result.output


def shown_options(text: str) -> set[str]:
    return set(OPTION_LINE.findall(text.split("Options:", 1)[1]))


def test_the_table_names_every_command_of_every_tool():
    for tool, commands in HONOURED.items():
        assert {name for name, _ in leaf_commands(typer.main.get_command(app_of(tool)))} == set(commands), tool


@pytest.mark.parametrize(("tool", "command"), [(t, c) for t, commands in HONOURED.items() for c in commands])
def test_help_shows_exactly_the_shared_options_the_command_honours(tool, command):
    text = help_text(tool, command)
    shown = shown_options(text)
    assert shown & EVERY_SHARED == HONOURED[tool][command], f"{tool} {command}"
    assert ALWAYS <= shown, f"{tool} {command}"
    if BATCH in shown:
        assert ("halved automatically on CUDA OOM" in text) == ((tool, command) in BACKS_OFF), f"{tool} {command}"


def test_report_help_names_every_record_kind_and_no_option_it_ignores():
    from confidently.report import list_sections

    text = help_text("report", "")
    assert shown_options(text) & EVERY_SHARED == {SKIP}
    description = re.sub(r"-\s+", "-", " ".join(text.split("Options:", 1)[0].split()))  # undo wrapping at hyphens
    assert all(kind in description for kind in list_sections()), description


def test_certify_fit_drops_what_it_ignores_and_immunize_attacks_batch():
    assert not shown_options(help_text("certify", "fit")) & {SHARD, ENGINE}
    for attack in ("encoder", "diffusion", "random"):  # --batch-size photos per attack step (issue 21)
        assert BATCH in shown_options(help_text("immunize", attack)), attack
    assert BATCH not in shown_options(help_text("immunize", "edit"))


def test_a_config_key_for_an_option_a_command_lacks_is_a_usage_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"seed": 3}))
    with pytest.raises(SystemExit) as info:
        run_app(app_of("report"), "report", ["--config", str(config), "--out", str(tmp_path / "site"),
                                             str(tmp_path / "records.jsonl")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "config file sets seed, which `report` does not have" in err and "Traceback" not in err
    assert not (tmp_path / "site").exists()


def test_the_slurm_script_runs_train_with_options_train_has(tmp_path):
    plan = tmp_path / "plan.jsonl"
    made = CliRunner().invoke(app_of("influence"), ["plan", "--num-units", "4", "--num-models", "2"])
    assert made.exit_code == 0, made.output
    plan.write_text(made.stdout)
    script = CliRunner().invoke(app_of("influence"), ["slurm-script", "--plan", str(plan), "--recipe",
                                                      "oracle-linear", "--out-dir", str(tmp_path / "out")])
    assert script.exit_code == 0, script.output
    (line,) = [line for line in script.stdout.splitlines() if line.startswith("influence train ")]
    train = typer.main.get_command(app_of("influence")).commands["train"]
    train.make_context("train", shlex.split(line)[2:])  # a usage error if the script passes what train lacks
