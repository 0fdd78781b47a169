"""common/tcp.py: --congestion checked, chosen and set on real loopback sockets."""

from __future__ import annotations

import socket

import pytest

from common import tcp


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


# -- listening sockets ---------------------------------------------------------
# A connection that starts with BBR keeps BBR's pacing after a later switch
# (common/tcp.py): servers set the algorithm on the listening socket, and the
# connections they accept start with it.


def listener_on(host: str, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    if listen:
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
    # Bound, not listening: only its address matters, and nothing outside can connect.
    with listener_on("0.0.0.0", listen=False) as listener:
        assert tcp.prepare_listener(listener, "auto") == "auto"
        assert tcp.current(listener) == tcp.system_default()
        assert tcp.prepare_listener(listener, "reno") == "system"  # a name: every peer
        assert tcp.current(listener) == "reno"


def test_system_leaves_a_listener_alone():
    with listener_on("127.0.0.1") as listener:
        assert tcp.prepare_listener(listener, "system") == "system"
        assert tcp.current(listener) == tcp.system_default()
