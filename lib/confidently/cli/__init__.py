"""The command-line skeleton every tool shares (typer): common options, config files,
the stdin rule, record streaming and the documented exit codes.

A tool builds ``app = tool_app("name", help)``, decorates each command with
``@common_options(uses={...})`` (which adds ``--config --print-config -q -v`` and those of
``--seed --device --batch-size --shard --engine --address --skip-invalid --deterministic`` the
command honours, and passes a :class:`Common`), and ends with ``def main(): run_app(app, "name")``.
"""

from confidently.cli.app import FIT_DATA_OPTIONS, Common, common_options, run_app, skip_invalid, tool_app
from confidently.cli.inputs import input_source
from confidently.cli.stream import stream_batches, stream_records

__all__ = ["FIT_DATA_OPTIONS", "Common", "common_options", "input_source", "run_app", "skip_invalid",
           "stream_batches", "stream_records", "tool_app"]
