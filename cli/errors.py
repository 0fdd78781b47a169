"""Run a typer app so that usage errors are one line on stderr and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

try:  # typer >= 0.2x vendors click as typer._click
    from typer._click.exceptions import UsageError
    from typer.exceptions import Abort, Exit
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import Abort, Exit, UsageError


def run_app(app: typer.Typer, prog: str, argv: Sequence[str] | None = None) -> int:
    """Invoke ``app`` and return its exit code.

    Exit codes: 0 ok, 1 runtime failure, 2 usage error, 130 interrupted.
    Click's usage errors are boxed and several lines long under typer; a
    user scripting a benchmark wants one line that names the option.
    """
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name=prog,
            standalone_mode=False,
        )
    except UsageError as exc:
        message = " ".join(exc.format_message().split())
        print(f"{prog}: error: {message} (see '{prog} --help')", file=sys.stderr)
        return 2
    except Exit as exc:
        return exc.exit_code
    except (Abort, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def fail(prog: str, message: str, code: int = 1) -> typer.Exit:
    """Print ``prog: error: message`` on stderr; return the Exit to raise."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return typer.Exit(code)
