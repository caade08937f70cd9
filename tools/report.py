"""`report`: pictures of any tool's records — PNG files and one self-contained HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from confidently.cli import Common, common_options, examples, run_app, tool_app
from confidently.cli.app import version_option
from confidently.errors import UsageError
from confidently.report import build_site, list_sections, read_records
from confidently.run.console import console
from rich.markup import escape

app = tool_app("report", "Pictures of any tool's results: PNG files and one self-contained HTML page.",
               subcommands=False)


@app.command(epilog=examples(r"""
    # an influence ranking (an 8-model farm on the linear oracle) drawn into site/: index.html, PNG files
    influence plan --recipe oracle-linear --num-models 8 | influence train --recipe oracle-linear \
      --out-dir farm | influence estimate > ranking.jsonl
    report ranking.jsonl --out site
    # certified digits of a quick smoothing model, piped in, on one page with the ranking (site/ redrawn)
    certify fit --data demo:digits --split train --arch tiny_resnet --pretrain-epochs 1 --epochs 1 \
      --pretrain-lr 1e-2 --lr 3e-3 --out base.safetensors > /dev/null
    dataset export demo:digits --split test --limit 8 --out digits | certify run --model base.safetensors \
      | tee certs.jsonl | report - ranking.jsonl --out site --title "certify and influence"
"""))
@common_options(uses={"skip_invalid"})
def report(sources: list[str] = typer.Argument(None, help="Records or summary files; - is stdin."),
           out: Path = typer.Option(..., "--out", help="Site folder (index.html + PNG files); a folder report did "
                                    "not make is refused unless --force."),
           force: bool = typer.Option(False, "--force", help="Write into a folder report did not make (its other "
                                      "files stay)."),
           title: str = typer.Option("confidently report", "--title"),
           version: bool = version_option("report"),
           *, common: Common) -> None:
    """Draw every record kind found: the results of ablate, advtrain, certify, immunize, influence,
    plant-backdoor, render-3db and unadv-patch, and training curves from every trainer's per-epoch metric
    records (advtrain train and transfer, certify fit, ablate fit).

    Records of other kinds are counted on stderr and skipped; exit 4 if nothing could be drawn.
    """
    sources = sources or ["-"]
    if sources == ["-"] and sys.stdin.isatty():
        raise UsageError("no input: give FILES or pipe records on stdin")
    records, invalid = [], []
    on_invalid = invalid.append if common.skip_invalid else None
    for source in sources:
        stream = sys.stdin.buffer if source == "-" else None
        records += read_records(stream or source, "<stdin>" if stream else source, on_invalid)
    if invalid:
        console.print(f"[yellow]note:[/] skipped {len(invalid)} invalid lines (--skip-invalid); the first: "
                      f"{escape(str(invalid[0]))}")
    drawn, skipped = build_site(records, out, title, [s for s in sources], force=force)
    if skipped:
        console.print(f"[yellow]note:[/] skipped {skipped} records of kinds report does not draw "
                      f"(it draws {', '.join(list_sections())})")
    console.log(f"drew {', '.join(f'{name} ({count})' for name, count in drawn.items())}")
    sys.stdout.write(f"{(out / 'index.html').resolve()}\n")


def main() -> None:
    run_app(app, "report")


if __name__ == "__main__":
    main()
