"""Just enough Erlang distribution to talk to a Lightning node from Python.

``etf`` is the External Term Format codec; ``epmd``, ``handshake`` and
``node`` (the connection with ticks and RPC through ``rex``) arrive with it.
"""
