"""Python types for Erlang terms that have no natural Python counterpart.

Mapping used by the codec:

| Erlang | Python |
| --- | --- |
| atom | ``Atom`` (a ``str`` subclass); ``true``/``false`` -> ``bool``; ``nil`` -> ``None`` |
| integer (any size) | ``int`` |
| float | ``float`` |
| binary | ``bytes`` (``str`` encodes as a UTF-8 binary, as Elixir strings are) |
| bit binary | ``BitBinary`` |
| tuple | ``tuple`` |
| proper list | ``list`` (a list of 0..255 integers is what erl calls a string) |
| improper list | ``ImproperList`` |
| map | ``dict`` (an Elixir struct keeps its ``__struct__`` key) |
| pid / reference / port | ``Pid`` / ``Reference`` / ``Port`` |
| fun / external fun | ``Fun`` (opaque bytes) / ``Export`` |
"""

from __future__ import annotations

from dataclasses import dataclass


class Atom(str):
    """An Erlang atom. ``Atom("ok") == "ok"`` holds; the type tells them apart."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Pid:
    node: Atom
    id: int
    serial: int
    creation: int


@dataclass(frozen=True, slots=True)
class Reference:
    node: Atom
    creation: int
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Port:
    node: Atom
    id: int
    creation: int


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A binary whose last byte holds only ``bits`` (1..8) significant bits."""

    data: bytes
    bits: int


@dataclass(frozen=True, slots=True)
class Fun:
    """A fun, kept as its encoded bytes (decoded opaquely, re-encoded as is)."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class Export:
    """``fun Module:Function/Arity``."""

    module: Atom
    function: Atom
    arity: int


@dataclass(frozen=True, slots=True)
class ImproperList:
    """``[a, b | tail]`` where tail is not a list."""

    items: tuple
    tail: object
