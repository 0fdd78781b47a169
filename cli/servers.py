"""What the two servers' command lines share: chansink and chanproxy take the
same listening and timeout options, show their version alike, and end alike
(exit 1 when they cannot listen, else the server's own code)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn

import typer

from cli.errors import fail
from common import __version__, eventloop, tcp
from common.listening import ServeError

PortOption = Annotated[
    int,
    typer.Option(
        min=0, max=65535, help="Port to listen on; 0 picks a free one (shown when it starts)."
    ),
]
HostOption = Annotated[
    str,
    typer.Option(help="Address to listen on. Anything but loopback is reachable from the network."),
]
CongestionOption = Annotated[str, typer.Option(help=tcp.HELP)]
HeaderTimeoutOption = Annotated[
    float,
    typer.Option(
        help="Seconds a request may take to arrive (its head, up to its first body"
        " byte); slower ones get 408 and the connection is closed (slowloris)."
    ),
]
BodyTimeoutOption = Annotated[
    float,
    typer.Option(
        help="Seconds a request body may go without a byte (the longest wait between"
        " two of its bytes, not counting time the server itself holds back reading"
        " under flow control); a body that stalls longer gets 408 and the connection"
        " is closed."
    ),
]


TlsCertOption = Annotated[
    str | None,
    typer.Option(
        help="Serve https: the certificate (PEM; it may hold the chain). Needs --tls-key.",
        show_default=False,
    ),
]
TlsKeyOption = Annotated[
    str | None,
    typer.Option(help="The private key (PEM) of --tls-cert.", show_default=False),
]


def idle_timeout_option(note: str = "") -> Any:
    """The --idle-timeout option (an Annotated type); ``note`` ends its help."""
    return Annotated[
        float,
        typer.Option(
            help="Seconds a keep-alive connection may do nothing before it is closed" + note + "."
        ),
    ]


def server_app() -> typer.Typer:
    return typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def version_callback(prog: str) -> Callable[[bool], None]:
    """A --version callback that prints ``prog`` and the version, then exits."""

    def show(value: bool) -> None:
        if value:
            print(f"{prog} {__version__}")
            raise typer.Exit(0)

    return show


def serve(prog: str, main: Coroutine[Any, Any, int]) -> NoReturn:
    """Run the server until it stops; exit with its code (1 when it cannot listen)."""
    try:
        code = eventloop.run(main)
    except ServeError as exc:
        raise fail(prog, str(exc), 1) from None
    raise typer.Exit(code)


def version_option(prog: str) -> Any:
    """The --version option of ``prog`` (an Annotated type for a parameter)."""
    return Annotated[
        bool | None,
        typer.Option(
            "--version", callback=version_callback(prog), is_eager=True, help="Show the version."
        ),
    ]
