"""`report`: pictures of any tool's records — PNG files and one self-contained HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from confidently.cli import Common, common_options, run_app, tool_app
from confidently.cli.app import version_option
from confidently.errors import UsageError
from confidently.report import build_site, list_sections, read_records
from confidently.run import console

app = tool_app("report", "Pictures of any tool's results: PNG files and one self-contained HTML page.",
               subcommands=False)


@app.command()
@common_options
def report(sources: list[str] = typer.Argument(None, help="Records or summary files; - is stdin."),
           out: Path = typer.Option(..., "--out", help="Site folder (index.html + PNG files), replaced atomically."),
           title: str = typer.Option("confidently report", "--title"),
           version: bool = version_option("report"),
           *, common: Common) -> None:
    """Draw every record kind found: certify, advtrain, ablate, plant-backdoor and influence results.

    Records of other kinds are counted on stderr and skipped; exit 4 if nothing could be drawn.
    """
    sources = sources or ["-"]
    if sources == ["-"] and sys.stdin.isatty():
        raise UsageError("no input: give FILES or pipe records on stdin")
    records = []
    for source in sources:
        if source == "-":
            records += read_records(sys.stdin, "<stdin>")
        else:
            path = Path(source)
            if not path.exists():
                raise UsageError(f"no such file: {source}")
            records += read_records(path, source)
    drawn, skipped = build_site(records, out, title, [s for s in sources])
    if skipped:
        console.print(f"[yellow]note:[/] skipped {skipped} records of kinds report does not draw "
                      f"(it draws {', '.join(list_sections())})")
    console.log(f"drew {', '.join(f'{name} ({count})' for name, count in drawn.items())}")
    sys.stdout.write(f"{(out / 'index.html').resolve()}\n")


def main() -> None:
    run_app(app, "report")


if __name__ == "__main__":
    main()
