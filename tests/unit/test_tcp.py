"""engine/tcp.py: --congestion checked, chosen and set on real loopback sockets."""

from __future__ import annotations

import socket

import pytest

from engine import tcp


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", False),
        ("::ffff:10.1.2.3", False),
        ("2001:db8::1", False),
        ("not-an-address", False),
    ],
)
def test_is_loopback(host, loopback):
    assert tcp.is_loopback(host) is loopback


def test_the_algorithm_each_choice_gives():
    assert tcp.algorithm("auto", "127.0.0.1") == "reno"
    assert tcp.algorithm("auto", "10.0.0.1") is None
    assert tcp.algorithm("auto", None) is None
    assert tcp.algorithm("system", "127.0.0.1") is None
    assert tcp.algorithm("cubic", "10.0.0.1") == "cubic"


def test_check_accepts_what_works_and_names_the_option_otherwise():
    assert tcp.check("auto") is None
    assert tcp.check("system") is None
    assert tcp.check("reno") is None  # in every kernel, allowed to anyone
    problem = tcp.check("nosuch")
    assert problem.startswith("--congestion 'nosuch' is not available here")
    assert "reno" in problem and "auto" in problem
    problem = tcp.check("bad name;", option="--tcp")
    assert problem.startswith("--tcp 'bad name;' is not an algorithm name")


@pytest.fixture
def pair():
    """A connected TCP pair over loopback: (client, server side)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield client, server
    client.close()
    server.close()


def test_tune_sets_nodelay_and_reno_on_loopback(pair):
    client, server = pair
    tcp.tune(client)
    tcp.tune(server, "auto")
    for sock in pair:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert tcp.current(sock) == "reno"


def test_tune_system_leaves_the_default_and_a_name_is_set_everywhere(pair):
    client, server = pair
    tcp.tune(client, "system")
    assert tcp.current(client) == tcp.system_default()
    tcp.tune(server, tcp.system_default())
    assert tcp.current(server) == tcp.system_default()
    tcp.tune(server, "reno")
    assert tcp.current(server) == "reno"


def test_describe_names_the_system_default():
    default = tcp.system_default()
    assert tcp.describe("auto") == f"reno on loopback, {default} elsewhere (--congestion auto)"
    assert default in tcp.describe("system")
    assert tcp.describe("cubic") == "cubic (--congestion cubic)"


# -- before the handshake: listening sockets and connect() ---------------------
# A connection that starts with BBR keeps BBR's pacing after a later switch
# (engine/tcp.py), so the algorithm must be on the socket before the handshake.


def listener_on(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    return sock


def test_a_loopback_listener_gets_reno_and_its_connections_start_with_it():
    with listener_on("127.0.0.1") as listener:
        assert tcp.prepare_listener(listener, "auto") == "system"  # nothing left per connection
        assert tcp.current(listener) == "reno"
        with socket.create_connection(listener.getsockname()) as client:
            accepted, _ = listener.accept()
            with accepted:
                assert tcp.current(accepted) == "reno"  # inherited, never switched
                assert tcp.current(client) == tcp.system_default()


def test_a_wildcard_listener_leaves_auto_to_each_connection():
    with listener_on("0.0.0.0") as listener:  # bound only for getsockname(); nobody connects
        assert tcp.prepare_listener(listener, "auto") == "auto"
        assert tcp.current(listener) == tcp.system_default()
        assert tcp.prepare_listener(listener, "reno") == "system"  # a name: every peer
        assert tcp.current(listener) == "reno"


def test_system_leaves_a_listener_alone():
    with listener_on("127.0.0.1") as listener:
        assert tcp.prepare_listener(listener, "system") == "system"
        assert tcp.current(listener) == tcp.system_default()


class SpyLoop:
    """The running loop, noting each socket's options when sock_connect is called."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self.seen: list[tuple[str, int]] = []

    async def getaddrinfo(self, *args, **kwargs):
        return await self.loop.getaddrinfo(*args, **kwargs)

    async def sock_connect(self, sock, address):
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.seen.append((tcp.current(sock), nodelay))
        return await self.loop.sock_connect(sock, address)

    async def create_connection(self, *args, **kwargs):
        return await self.loop.create_connection(*args, **kwargs)


def connect_with(choice: str, host: str, port: int) -> tuple[list, str, bytes]:
    """tcp.connect on a spied loop; (options seen at connect, algorithm after, echo)."""
    import asyncio

    import uvloop

    async def scenario():
        loop = SpyLoop(asyncio.get_running_loop())
        received = asyncio.get_running_loop().create_future()

        class Echo(asyncio.Protocol):
            def data_received(self, data):
                received.set_result(data)

        transport, _ = await tcp.connect(loop, Echo, host, port, choice)
        try:
            algo = tcp.current(transport.get_extra_info("socket"))
            transport.write(b"ping")
            return loop.seen, algo, await asyncio.wait_for(received, 5)
        finally:
            transport.close()

    return uvloop.run(scenario())


@pytest.fixture
def echo_server():
    """A loopback TCP server that echoes one message per connection, on a thread."""
    import threading

    listener = listener_on("127.0.0.1")
    stop = threading.Event()

    def serve():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = conn.recv(64)
                if data:
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_connect_sets_the_algorithm_before_the_handshake(echo_server, host):
    seen, algo, echoed = connect_with("auto", host, echo_server)
    assert echoed == b"ping"  # a working connection
    assert seen[-1] == ("reno", 1)  # already reno and TCP_NODELAY when connecting
    assert algo == "reno"


def test_connect_with_system_changes_nothing(echo_server):
    seen, algo, echoed = connect_with("system", "127.0.0.1", echo_server)
    assert echoed == b"ping"
    assert seen == [(tcp.system_default(), 1)]
    assert algo == tcp.system_default()


def test_connect_reports_a_refusal_as_create_connection_does():
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: refused
        port = bound.getsockname()[1]
        with pytest.raises(ConnectionRefusedError) as err:
            connect_with("auto", "127.0.0.1", port)
    assert str(err.value) == "[Errno 111] Connection refused"


def test_addresses_of_literals_skip_the_resolver():
    assert tcp._addresses_of_literal("127.0.0.1", 80)[0][4] == ("127.0.0.1", 80)
    assert tcp._addresses_of_literal("::1", 80)[0][0] == socket.AF_INET6
    assert tcp._addresses_of_literal("localhost", 80) is None
