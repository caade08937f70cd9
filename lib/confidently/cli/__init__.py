"""The command-line skeleton every tool shares (typer): common options, config files,
the stdin rule, record streaming and the documented exit codes.

A tool builds ``app = tool_app("name", help)``, gives each command its examples
(``@app.command(epilog=examples(...))``), decorates it with ``@common_options(uses={...})`` (which adds
``--config --print-config -q -v`` and those of ``--seed --device --batch-size --shard --engine --address
--skip-invalid --deterministic`` the command honours, and passes a :class:`Common`), and ends with
``def main(): run_app(app, "name")``.
"""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FIT_DATA_OPTIONS": "confidently.cli.app",
    "SYNC_BN_OPTION": "confidently.cli.app",
    "Common": "confidently.cli.app",
    "common_options": "confidently.cli.app",
    "examples": "confidently.cli.app",
    "run_app": "confidently.cli.app",
    "skip_invalid": "confidently.cli.app",
    "tool_app": "confidently.cli.app",
    "input_source": "confidently.cli.inputs",
    "stream_batches": "confidently.cli.stream",
    "stream_records": "confidently.cli.stream",
})
