"""Just enough Erlang distribution to talk to a Lightning node from Python.

``terms`` holds the Erlang types that have no Python twin (Atom, Pid,
Reference...), ``etf`` the External Term Format codec, and ``dist`` the
connection: EPMD, the handshake as a hidden node, ticks, RPC through ``rex``.
``collector.exs`` is the telemetry collector engine/lightning/ deploys.
"""
