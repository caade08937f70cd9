"""Typer app factory, the shared options, config files, and exit codes."""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from confidently import __version__
from confidently.errors import ConfidentlyError, InvalidInput, OutputClosed, UsageError
from confidently.io.run_config import RESOLVED
from confidently.run.console import configure_logging, console
from confidently.run.shard import Shard

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INVALID, EXIT_NO_RESULT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


@dataclass
class Common:
    """The options every command has, parsed once."""

    seed: int = 0
    device: str = "auto"
    batch_size: int = 64
    quiet: bool = False
    verbose: int = 0
    shard: Shard = field(default_factory=Shard)
    engine: str = "serial"
    address: str | None = None
    gpus_per_worker: float = 0.0  # GPUs each Ray task or actor asks for
    skip_invalid: bool = False
    deterministic: bool = False
    workers: int | None = None  # data-loading processes; None: the data layer's default
    config: dict[str, Any] = field(default_factory=dict)
    explicit: set[str] = field(default_factory=set)  # options set on the command line or in --config
    command: str = ""  # the command path, e.g. "advtrain train"
    config_file: Path | None = None  # --config, if given

    def fit_options(self) -> dict[str, Any]:
        """The shared options :meth:`confidently.fit.Fit.start` takes, and what it writes in the run's config
        file beside ``--out`` (:mod:`confidently.io.run_config`): the command and its effective options."""
        return {"device": self.device, "batch_size": self.batch_size, "workers": self.workers, "seed": self.seed,
                "on_invalid": skip_invalid if self.skip_invalid else None, "command": self.command or None,
                "options": self.config, "explicit": sorted(self.explicit), "options_file": self.config_file}

    def engine_instance(self):
        from confidently.run.engines import create_engine

        return create_engine(self.engine, address=self.address, num_gpus=self.gpus_per_worker)


def _option(default: Any, *names: str, help: str, **kwargs: Any) -> Any:
    return typer.Option(default, *names, help=help, **kwargs)


COMMON_PARAMETERS: list[tuple[str, type, Any]] = [
    ("seed", int, _option(0, "--seed", help="Run seed; per-record randomness derives from (seed, id).")),
    ("device", str, _option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (auto prefers an accelerator).")),
    ("batch_size", int, _option(64, "--batch-size", min=1, help="Batch size.")),
    ("config", Path, _option(None, "--config", help="YAML file of option defaults; flags on the command line win.",
                             exists=True, dir_okay=False)),
    ("print_config", bool, _option(False, "--print-config", help="Print the effective config (YAML) and exit.")),
    ("quiet", bool, _option(False, "-q", "--quiet", help="Only errors on stderr.")),
    ("verbose", int, _option(0, "-v", "--verbose", count=True, help="More detail on stderr (tracebacks on errors).")),
    ("shard", str, _option(None, "--shard", help="Process shard i/N only (every N-th unit from i, 0-based).")),
    ("engine", str, _option("serial", "--engine", help="serial or ray.")),
    ("address", str, _option(None, "--address", help="Ray cluster to join (e.g. auto); default starts a local one.")),
    ("gpus_per_worker", float, _option(0.0, "--gpus-per-worker", min=0.0, help="GPUs each Ray worker asks for (a "
                                       "fraction shares one; 0: none); its --device auto uses the one it gets.")),
    ("skip_invalid", bool, _option(False, "--skip-invalid",
                                   help="Write {\"id\":...,\"error\":...} for a bad record and go on (else exit 3).")),
    ("deterministic", bool, _option(False, "--deterministic", help="Deterministic kernels (slower; for tests).")),
    ("workers", int, _option(None, "--workers", min=0, help="Processes decoding images (threads, for commands "
                             "that read records from stdin) ahead of the model: default up to 4 for files and "
                             "shards, 0 for in-memory demo sets and to decode in the main thread. Results do not "
                             "depend on it.")),
]
COMMON_NAMES = {name for name, _, _ in COMMON_PARAMETERS}
COMMON_DEFAULTS = {name: default for name, _, default in COMMON_PARAMETERS}
# The data options of every command that fits a model (confidently.fit), declared once.
FIT_DATA_OPTIONS = {
    "data": _option(..., "--data", help="Training data: manifest, folder, shard, tar shards or demo:NAME."),
    "split": _option(None, "--split", help="Only this split of --data (e.g. train)."),
    "val": _option(None, "--val", help="Validation data, scored after each epoch (see --eval-every where given)."),
    "val_split": _option(None, "--val-split", help="Only this split of --val (e.g. val)."),
}
# The training options every fit-flow command shares.
SYNC_BN_OPTION = _option(False, "--sync-bn", help="Under torchrun on GPUs, batch norm statistics over the whole "
                         "batch (nn.SyncBatchNorm) instead of each rank's slice; in one process it changes nothing.")
ALWAYS = {"config", "print_config", "quiet", "verbose"}
OPTIONAL = COMMON_NAMES - ALWAYS  # each command declares which of these it honours
BATCH_SIZE_BACKOFF = _option(64, "--batch-size", min=1, help="Batch size; halved automatically on CUDA OOM.")
BATCH_SIZE_MICRO = _option(64, "--batch-size", min=1, help="Batch size; a training step that runs out of CUDA "
                           "memory is redone in 2, 4, ... micro-batches (the same update) and stays split.")
NOT_CONFIG = {"config", "print_config"}


def _effective_config(ctx: typer.Context) -> dict[str, Any]:
    """The options as plain YAML/JSON values: paths, also inside repeated options, become strings."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {name: plain(value) for name, value in ctx.params.items() if name not in NOT_CONFIG}


def _explicit(ctx: typer.Context) -> set[str]:
    """Options the user chose (flag or config file), as opposed to defaults: presets may fill the rest."""
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", None)}


def _check_config_keys(ctx: typer.Context) -> None:
    known = {param.name for param in ctx.command.params}
    unknown = sorted(set(ctx.default_map or {}) - known)
    if unknown:
        raise UsageError(f"config file sets {', '.join(unknown)}, which `{ctx.command_path}` does not have; "
                         f"its options are: {', '.join(sorted(known - NOT_CONFIG))}")


def common_options(*, uses: Iterable[str] = (), oom_backoff: bool = False, micro_batches: bool = False,
                   batch_size: int | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Add the shared options a command honours to a typer command and pass them as ``common: Common``.

    ``uses`` names the optional ones (seed, device, batch_size, shard, engine, address, skip_invalid,
    deterministic, workers) so ``--help`` shows only what the command acts on; --config, --print-config, -q and -v
    are always there, --gpus-per-worker comes with --engine, and an option not taken keeps its :class:`Common`
    default. ``oom_backoff`` says the command halves its batch on CUDA out-of-memory, and its --batch-size help
    says so; ``micro_batches`` that it
    trains (:func:`~confidently.training.train_classifier`), splitting a step that runs out of memory, and its
    help says that. ``batch_size`` is the
    command's own default where the shared 64 does not fit its work (an attack through a diffusion model).
    """
    chosen = set(uses) | ({"gpus_per_worker"} if "engine" in uses else set())
    if chosen - OPTIONAL:
        raise ValueError(f"common_options: unknown shared options {sorted(chosen - OPTIONAL)}; choose from "
                         f"{sorted(OPTIONAL)}")
    if "address" in chosen and "engine" not in chosen:
        raise ValueError("common_options: --address only means something with --engine")
    if (oom_backoff or micro_batches or batch_size is not None) and "batch_size" not in chosen:
        raise ValueError("common_options: oom_backoff, micro_batches and batch_size need batch_size in uses")
    taken = chosen | ALWAYS
    batch_option = BATCH_SIZE_BACKOFF if oom_backoff else BATCH_SIZE_MICRO if micro_batches else \
        COMMON_DEFAULTS["batch_size"]
    if batch_size is not None:
        batch_option = _option(batch_size, "--batch-size", min=1, help=batch_option.help)
    parameters = [(name, annotation, batch_option if name == "batch_size" else default)
                  for name, annotation, default in COMMON_PARAMETERS if name in taken]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name != "common"]
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                 for name, annotation, default in parameters]
        context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

        @functools.wraps(command)
        def wrapper(ctx: typer.Context, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in taken}
            configure_logging(values["verbose"], values["quiet"])
            _check_config_keys(ctx)
            effective = _effective_config(ctx)
            if values["print_config"]:
                sys.stdout.write(yaml.safe_dump(effective, sort_keys=True))
                raise typer.Exit(EXIT_OK)
            shared = {name: values[name] for name in chosen - {"shard"}}
            common = Common(**shared, quiet=values["quiet"], verbose=values["verbose"],
                            shard=Shard.parse(values.get("shard")), config=effective, explicit=_explicit(ctx),
                            command=ctx.command_path, config_file=values["config"])
            from confidently.run.seeding import seed_everything

            seed_everything(common.seed, deterministic=common.deterministic)  # --seed reproduces a run by default
            try:
                return command(common=common, **kwargs)
            except ConfidentlyError as exc:
                raise _in_flags(exc, ctx) from None

        wrapper.__signature__ = signature.replace(parameters=[*own, *extra, context])
        return wrapper

    return decorate


def _in_flags(error: ConfidentlyError, ctx: typer.Context) -> ConfidentlyError:
    """The library names arguments (``num_classes``, or a one-word one in backquotes: ```rate```); on the
    command line the message names their flags (``--num-classes``, ``--rate``). A plain word such as
    ``data`` stays prose."""
    flags = {param.name: next((o for o in param.opts if o.startswith("--")), None) for param in ctx.command.params}
    flags = {name: flag for name, flag in flags.items() if flag}
    if not flags:
        return error
    names = "|".join(map(re.escape, flags))
    pattern = re.compile(rf"`({names})`|(?<![-\w.`])({names})(?![\w`])")

    def flag(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return flags[name] if match.group(1) or "_" in name else name

    if isinstance(error, InvalidInput):
        error.message = pattern.sub(flag, error.message)
        error.args = (error.describe(),)
    elif error.args and isinstance(error.args[0], str):
        error.args = (pattern.sub(flag, error.args[0]), *error.args[1:])
    return error


def version_option(name: str) -> Any:
    """``--version``: print the tool's version and exit."""

    def show_version(value: bool) -> None:
        if value:
            sys.stdout.write(f"{name} (confidently) {__version__}\n")
            raise typer.Exit(EXIT_OK)

    return typer.Option(False, "--version", callback=show_version, is_eager=True, help="Print the version and exit.")


def examples(text: str) -> str:
    """A command's ``epilog``: its examples, shown verbatim at the end of ``--help``.

    ``text`` is comment lines and shell commands with no blank line between them (click keeps a
    paragraph that starts with ``\\b`` unwrapped, and a blank line would end it); tests/cli/test_examples.py
    runs every tool's examples, as ``--help`` prints them, in a fresh folder.
    """
    lines = textwrap.dedent(text).strip("\n").splitlines()
    if any(not line.strip() for line in lines):
        raise ValueError("examples: no blank lines (they would end the unwrapped paragraph)")
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def tool_app(name: str, help: str, subcommands: bool = True) -> typer.Typer:
    """A typer app with ``--version`` and no shell-completion noise.

    ``subcommands=False`` makes a one-command tool (``report FILES --out DIR``): its single command
    runs without a name and takes ``version: bool = version_option(name)`` itself.
    """
    app = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=True,
                      pretty_exceptions_enable=False, rich_markup_mode=None,
                      context_settings={"help_option_names": ["-h", "--help"]})
    if not subcommands:
        return app

    @app.callback()
    def root(version: bool = version_option(name)) -> None:
        pass

    root.__doc__ = help
    return app


def _config_defaults(argv: list[str]) -> dict[str, Any]:
    """Read ``--config FILE`` ahead of parsing so its values become option defaults (a training's config file,
    :mod:`confidently.io.run_config`, is one: what its run resolved, under ``confidently``, is skipped)."""
    for index, arg in enumerate(argv):
        path = None
        if arg == "--config" and index + 1 < len(argv):
            path = argv[index + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path is None:
            continue
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            return {}  # click reports the missing file with the usual usage message
        except yaml.YAMLError as exc:
            raise UsageError(f"--config {path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--config {path}: expected a mapping of option names to values")
        return {str(key).replace("-", "_"): value for key, value in loaded.items() if key != RESOLVED}
    return {}


def _command_path_defaults(command: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    if hasattr(command, "commands"):
        return {name: _command_path_defaults(sub, defaults) for name, sub in command.commands.items()}
    return defaults


def run_app(app: typer.Typer, name: str, argv: list[str] | None = None) -> None:
    """Run a tool and exit with the documented codes; no traceback unless ``-v``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in argv)
    code = EXIT_OK
    try:
        command = typer.main.get_command(app)
        defaults = _command_path_defaults(command, _config_defaults(argv))
        # Without standalone mode, typer returns the code of a typer.Exit (Ctrl-C becomes 130).
        result = command.main(argv, prog_name=name, standalone_mode=False, default_map=defaults)
        code = result if isinstance(result, int) else EXIT_OK
        if code == EXIT_INTERRUPTED:
            console.print("interrupted")
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # click's usage errors (bad option, missing argument...)
        exc.show(file=sys.stderr)
        code = getattr(exc, "exit_code", EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        console.print("interrupted")
        code = EXIT_INTERRUPTED
    except (BrokenPipeError, OutputClosed):
        _silence_stdout()  # the reader went away (e.g. `| head`): stop quietly
        code = EXIT_OK
    except ConfidentlyError as exc:
        if verbose:
            console.print_exception()
        hint = f" (see `{name} --help`)" if isinstance(exc, UsageError) else ""
        _error(f"{name}: error: {exc}{hint}")
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if verbose:
            console.print_exception()
        else:
            _error(f"{name}: error: {type(exc).__name__}: {exc} (run with -v for the traceback)")
        code = EXIT_FAILURE
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.exit(code)


def _error(message: str) -> None:
    """Errors reach stderr even under -q."""
    console.quiet = False
    console.print(message, markup=False, soft_wrap=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush cannot fail on a closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def skip_invalid(error: InvalidInput) -> None:
    """``--skip-invalid`` on a command that streams a dataset: the image is left out, said on stderr, and its
    ``{"id", "error"}`` record goes to stdout."""
    from confidently.io.records import RecordWriter, error_record

    console.log(f"[yellow]skipped[/] {error}")
    RecordWriter().write(error_record(error.record_id, error))
