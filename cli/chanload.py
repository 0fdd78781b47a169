"""chanload: the load generator (subcommands grow with the engine)."""

from __future__ import annotations

import sys

import typer

from cli.errors import run_app
from engine import __version__

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Benchmark an HTTP channel proxy: drive load, measure it, report it.",
)


@app.command()
def version() -> None:
    """Show chanload's version."""
    print(f"chanload {__version__}")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_app(app, "chanload", argv))


if __name__ == "__main__":
    main()
