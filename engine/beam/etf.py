"""The External Term Format (erts User's Guide, "External Term Format"), both ways.

``encode`` writes what ``term_to_binary(T, [deterministic, {minor_version, 2}])``
writes on a current OTP (UTF-8 atoms, NEW_FLOAT_EXT, NEW_PID_EXT,
NEWER_REFERENCE_EXT, V4_PORT_EXT, map keys in term order) -- byte for byte, as
the tests check against real OTP 25 and 28 nodes (OTP 25 itself still writes
ports as NEW_PORT_EXT; it reads V4 ones). ``decode`` reads every tag a node may
send without the atom cache (old atom, pid, reference and port encodings,
bignums, bit binaries, funs, compressed terms).

Just over 400 lines on purpose: the encoder and the decoder of each tag sit
side by side, so that a change to one is seen against the other.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from engine.beam.terms import Atom, BitBinary, Export, Fun, ImproperList, Pid, Port, Reference

VERSION = 131
COMPRESSED = 80
NEW_FLOAT_EXT = 70
BIT_BINARY_EXT = 77
NEW_PID_EXT = 88
NEW_PORT_EXT = 89
NEWER_REFERENCE_EXT = 90
SMALL_INTEGER_EXT = 97
INTEGER_EXT = 98
FLOAT_EXT = 99
ATOM_EXT = 100
REFERENCE_EXT = 101
PORT_EXT = 102
PID_EXT = 103
SMALL_TUPLE_EXT = 104
LARGE_TUPLE_EXT = 105
NIL_EXT = 106
STRING_EXT = 107
LIST_EXT = 108
BINARY_EXT = 109
SMALL_BIG_EXT = 110
LARGE_BIG_EXT = 111
NEW_FUN_EXT = 112
EXPORT_EXT = 113
NEW_REFERENCE_EXT = 114
SMALL_ATOM_EXT = 115
MAP_EXT = 116
ATOM_UTF8_EXT = 118
SMALL_ATOM_UTF8_EXT = 119
V4_PORT_EXT = 120

_ATOM_TAGS = frozenset({ATOM_EXT, SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT})
_TRUE = Atom("true")
_FALSE = Atom("false")
_NIL = Atom("nil")


class DecodeError(ValueError):
    """The bytes are not a term we can read."""


# -- encoding ----------------------------------------------------------------


def encode(term: Any) -> bytes:
    """``term`` as an external term, with the 131 version byte."""
    out = bytearray([VERSION])
    _encode(term, out)
    return bytes(out)


def encode_body(term: Any) -> bytes:
    """``term`` without the version byte (as inside a distribution message)."""
    out = bytearray()
    _encode(term, out)
    return bytes(out)


def _encode_atom(name: str, out: bytearray) -> None:
    data = name.encode("utf-8")
    if len(data) < 256:
        out += bytes((SMALL_ATOM_UTF8_EXT, len(data)))
    else:
        if len(data) > 65535:
            raise ValueError("atom too long")
        out += struct.pack(">BH", ATOM_UTF8_EXT, len(data))
    out += data


def _encode_int(n: int, out: bytearray) -> None:
    if 0 <= n <= 255:
        out += bytes((SMALL_INTEGER_EXT, n))
    elif -(2**31) <= n < 2**31:
        out += struct.pack(">Bi", INTEGER_EXT, n)
    else:
        sign = 1 if n < 0 else 0
        magnitude = -n if n < 0 else n
        digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
        if len(digits) < 256:
            out += bytes((SMALL_BIG_EXT, len(digits), sign))
        else:
            out += struct.pack(">BIB", LARGE_BIG_EXT, len(digits), sign)
        out += digits


def _encode(term: Any, out: bytearray) -> None:
    # bool before int: bool is an int subclass.
    if term is True:
        _encode_atom("true", out)
    elif term is False:
        _encode_atom("false", out)
    elif term is None:
        _encode_atom("nil", out)
    elif isinstance(term, Atom):
        _encode_atom(term, out)
    elif isinstance(term, int):
        _encode_int(term, out)
    elif isinstance(term, float):
        out += struct.pack(">Bd", NEW_FLOAT_EXT, term)
    elif isinstance(term, str):
        data = term.encode("utf-8")
        out += struct.pack(">BI", BINARY_EXT, len(data))
        out += data
    elif isinstance(term, bytes | bytearray | memoryview):
        out += struct.pack(">BI", BINARY_EXT, len(term))
        out += term
    elif isinstance(term, tuple):
        if len(term) < 256:
            out += bytes((SMALL_TUPLE_EXT, len(term)))
        else:
            out += struct.pack(">BI", LARGE_TUPLE_EXT, len(term))
        for item in term:
            _encode(item, out)
    elif isinstance(term, list):
        _encode_list(term, out)
    elif isinstance(term, dict):
        out += struct.pack(">BI", MAP_EXT, len(term))
        for key in sorted(term, key=map_key_order):
            _encode(key, out)
            _encode(term[key], out)
    elif isinstance(term, Pid):
        out.append(NEW_PID_EXT)
        _encode_atom(term.node, out)
        out += struct.pack(">III", term.id, term.serial, term.creation)
    elif isinstance(term, Reference):
        out += struct.pack(">BH", NEWER_REFERENCE_EXT, len(term.ids))
        _encode_atom(term.node, out)
        out += struct.pack(f">I{len(term.ids)}I", term.creation, *term.ids)
    elif isinstance(term, Port):
        out.append(V4_PORT_EXT)
        _encode_atom(term.node, out)
        out += struct.pack(">QI", term.id, term.creation)
    elif isinstance(term, BitBinary):
        out += struct.pack(">BIB", BIT_BINARY_EXT, len(term.data), term.bits)
        out += term.data
    elif isinstance(term, Fun):
        out += term.raw
    elif isinstance(term, Export):
        out.append(EXPORT_EXT)
        _encode_atom(term.module, out)
        _encode_atom(term.function, out)
        _encode_int(term.arity, out)
    elif isinstance(term, ImproperList):
        out += struct.pack(">BI", LIST_EXT, len(term.items))
        for item in term.items:
            _encode(item, out)
        _encode(term.tail, out)
    else:
        raise TypeError(f"cannot encode {type(term).__name__} as an Erlang term")


def _encode_list(items: list, out: bytearray) -> None:
    if not items:
        out.append(NIL_EXT)
        return
    # term_to_binary writes a list of bytes as STRING_EXT; so do we.
    if len(items) <= 65535 and all(type(x) is int and 0 <= x <= 255 for x in items):
        out += struct.pack(">BH", STRING_EXT, len(items))
        out += bytes(items)
        return
    out += struct.pack(">BI", LIST_EXT, len(items))
    for item in items:
        _encode(item, out)
    out.append(NIL_EXT)


# Erlang's term order: number < atom < reference < fun < port < pid < tuple
# < map < nil < list < bit string. In map key order integers sort before floats.
def map_key_order(term: Any) -> tuple:
    if term is True or term is False or term is None or isinstance(term, Atom):
        name = {True: "true", False: "false", None: "nil"}.get(term, term)  # type: ignore[arg-type]
        return (1, str(name))
    if isinstance(term, int):
        return (0, 0, term)
    if isinstance(term, float):
        return (0, 1, term)
    if isinstance(term, Reference):
        return (2, term.node, term.creation, term.ids)
    if isinstance(term, Fun | Export):
        return (3, repr(term))
    if isinstance(term, Port):
        return (4, term.node, term.id, term.creation)
    if isinstance(term, Pid):
        return (5, term.node, term.id, term.serial, term.creation)
    if isinstance(term, tuple):
        return (6, len(term), tuple(map_key_order(x) for x in term))
    if isinstance(term, dict):
        return (7, len(term), tuple(sorted(map_key_order(k) for k in term)))
    if isinstance(term, list | ImproperList):
        return (8, repr(term))
    if isinstance(term, str):
        return (9, term.encode("utf-8"))
    if isinstance(term, bytes | bytearray | BitBinary):
        return (9, bytes(term.data if isinstance(term, BitBinary) else term))
    return (10, repr(term))


# -- decoding ----------------------------------------------------------------

# What one frame from a node may cost us. The replies chanload asks for are
# small (the collector's buckets, a user or channel struct, code:all_loaded's
# few thousand modules are under 100,000 objects and 1 MiB); a broken or
# hostile node could otherwise send a 4 GiB frame, a compressed term that
# inflates into millions of objects, or nesting deep enough to blow the stack.
MAX_FRAME = 16 * 1024 * 1024  # bytes of one distribution frame (dist.Node checks it)
MAX_INFLATED = 16 * 1024 * 1024  # bytes a compressed term may inflate to
MAX_DEPTH = 200  # nesting of lists, tuples, maps and compressed terms
# Decoded objects per frame. A list of n small integers (what erl calls a
# string) costs n/8: CPython shares those integers, the list holds n pointers;
# an atom is one object per frame however often it recurs. The worst shapes
# (tests/unit/test_etf.py::test_a_compressed_bomb_is_refused_within_bounded_memory)
# peak near 55 MB with a 16 MiB inflate, where an unbounded decoder would
# build gigabytes.
MAX_OBJECTS = 500_000

_ATOM_TAGS_SMALL = frozenset({SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT})
_CONTAINERS = frozenset({SMALL_TUPLE_EXT, LARGE_TUPLE_EXT, LIST_EXT, MAP_EXT, COMPRESSED})
# What malformed bytes can make Python raise while we read them; each becomes
# a DecodeError naming the byte where the term began.
_MALFORMED = (
    IndexError,
    KeyError,
    struct.error,
    ValueError,  # includes UnicodeDecodeError, float() of garbage, int digit limits
    TypeError,  # e.g. an unhashable map key we could not turn hashable
    OverflowError,
    zlib.error,
    RecursionError,
    MemoryError,
)


class Budget:
    """What is left to spend on one frame: objects, nesting, inflated bytes.

    One Budget is shared by every term read from a frame (a distribution
    frame holds a control message and a message), so the frame, not each
    term, is bounded.
    """

    __slots__ = ("atoms", "limit", "max_depth", "max_inflated", "objects")

    def __init__(
        self,
        objects: int = MAX_OBJECTS,
        max_depth: int = MAX_DEPTH,
        max_inflated: int = MAX_INFLATED,
    ) -> None:
        self.objects = self.limit = objects
        self.max_depth = max_depth
        self.max_inflated = max_inflated  # what the frame's compressed terms may still inflate to
        self.atoms: dict[bytes, Any] = {}  # one object per atom, as a node's atom table

    def spend(self, n: int, pos: int) -> None:
        self.objects -= n
        if self.objects < 0:
            raise DecodeError(
                f"term refused at byte {pos}: more than {self.limit:,} objects in one frame"
            )


def decode(data: bytes | bytearray | memoryview, budget: Budget | None = None) -> Any:
    """Read one external term (with its 131 version byte); nothing may follow it."""
    view = memoryview(data)
    if not view or view[0] != VERSION:
        raise DecodeError("not an external term (no version byte 131)")
    term, pos = decode_at(view, 1, budget)
    if pos != len(view):
        raise DecodeError(f"{len(view) - pos} bytes left after the term")
    return term


def decode_at(view: memoryview, pos: int, budget: Budget | None = None) -> tuple[Any, int]:
    """Read the term at ``pos`` (after any version byte); return it and the next position.

    Anything wrong with the bytes -- truncated, malformed, nested deeper than
    ``MAX_DEPTH``, more objects than the budget -- raises DecodeError, never
    another exception.
    """
    if budget is None:
        budget = Budget()
    try:
        return _decode(view, pos, budget, 0)
    except DecodeError:
        raise
    except _MALFORMED as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DecodeError(f"truncated or malformed term at byte {pos} ({detail})") from None


def _atom(name: str) -> Any:
    if name == "true":
        return True
    if name == "false":
        return False
    if name == "nil":
        return None
    return Atom(name)


def _read_atom(view: memoryview, pos: int, budget: Budget, depth: int) -> tuple[Atom, int]:
    if view[pos] not in _ATOM_TAGS:
        raise DecodeError(f"expected an atom at byte {pos}")
    value, pos = _decode(view, pos, budget, depth)
    if value is True:
        return _TRUE, pos
    if value is False:
        return _FALSE, pos
    if value is None:
        return _NIL, pos
    return value, pos


_LENGTH_FORMATS = {1: ">B", 2: ">H", 4: ">I"}


def _length(view: memoryview, pos: int, size: int) -> tuple[int, int]:
    """A big-endian length or count of ``size`` bytes (1, 2 or 4) at ``pos``."""
    return struct.unpack_from(_LENGTH_FORMATS[size], view, pos)[0], pos + size


def _take(view: memoryview, pos: int, n: int, what: str) -> tuple[bytes, int]:
    """The ``n`` bytes at ``pos``; IndexError (naming ``what``) when fewer remain."""
    raw = bytes(view[pos : pos + n])
    if len(raw) != n:
        raise IndexError(what)
    return raw, pos + n


def _items(view: memoryview, pos: int, n: int, budget: Budget, depth: int) -> tuple[list, int]:
    """``n`` terms decoded one after another from ``pos``."""
    # Every term takes at least one byte: a count beyond what is left is a lie
    # (and would have us loop until the bytes run out).
    if n > len(view) - pos:
        raise IndexError(f"{n} elements announced, {len(view) - pos} bytes left")
    items = []
    for _ in range(n):
        item, pos = _decode(view, pos, budget, depth)
        items.append(item)
    return items, pos


def _decode(view: memoryview, pos: int, budget: Budget, depth: int) -> tuple[Any, int]:
    tag = view[pos]
    budget.spend(1, pos)
    if tag in _CONTAINERS and depth >= budget.max_depth:
        raise DecodeError(f"term refused at byte {pos}: nested deeper than {budget.max_depth}")
    pos += 1
    if tag == SMALL_INTEGER_EXT:
        return view[pos], pos + 1
    if tag == INTEGER_EXT:
        return struct.unpack_from(">i", view, pos)[0], pos + 4
    if tag in _ATOM_TAGS:
        n, pos = _length(view, pos, 1 if tag in _ATOM_TAGS_SMALL else 2)
        raw, pos = _take(view, pos, n, "atom")
        key = raw if tag in (ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT) else b"\xff" + raw
        atom = budget.atoms.get(key)
        if atom is None:
            utf8 = tag in (ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT)
            atom = budget.atoms[key] = _atom(raw.decode("utf-8" if utf8 else "latin-1"))
        return atom, pos
    if tag == BINARY_EXT:
        n, pos = _length(view, pos, 4)
        return _take(view, pos, n, "binary")
    if tag in (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT):
        n, pos = _length(view, pos, 1 if tag == SMALL_TUPLE_EXT else 4)
        items, pos = _items(view, pos, n, budget, depth + 1)
        return tuple(items), pos
    if tag == NIL_EXT:
        return [], pos
    if tag == STRING_EXT:
        n, pos = _length(view, pos, 2)
        raw, pos = _take(view, pos, n, "string")
        budget.spend(n // 8, pos)
        return list(raw), pos
    if tag == LIST_EXT:
        n, pos = _length(view, pos, 4)
        items, pos = _items(view, pos, n, budget, depth + 1)
        tail, pos = _decode(view, pos, budget, depth + 1)
        if tail == [] and type(tail) is list:
            return items, pos
        return ImproperList(tuple(items), tail), pos
    if tag == MAP_EXT:
        n, pos = _length(view, pos, 4)
        if n > (len(view) - pos) // 2:
            raise IndexError(f"{n} map pairs announced, {len(view) - pos} bytes left")
        result = {}
        for _ in range(n):
            key, pos = _decode(view, pos, budget, depth + 1)
            value, pos = _decode(view, pos, budget, depth + 1)
            result[_hashable(key)] = value
        return result, pos
    if tag == NEW_FLOAT_EXT:
        return struct.unpack_from(">d", view, pos)[0], pos + 8
    if tag == FLOAT_EXT:
        raw, end = _take(view, pos, 31, "float")
        return float(raw.split(b"\0", 1)[0]), end
    if tag in (SMALL_BIG_EXT, LARGE_BIG_EXT):
        n, pos = _length(view, pos, 1 if tag == SMALL_BIG_EXT else 4)
        sign = view[pos]
        digits, pos = _take(view, pos + 1, n, "bignum")
        value = int.from_bytes(digits, "little")
        return (-value if sign else value), pos
    if tag == BIT_BINARY_EXT:
        n, pos = _length(view, pos, 4)
        bits = view[pos]
        if not 1 <= bits <= 8 or n == 0:
            raise DecodeError(f"bit binary at byte {pos - 5} with {bits} bits in {n} bytes")
        raw, pos = _take(view, pos + 1, n, "bit binary")
        return BitBinary(raw, bits), pos
    if tag in (NEW_PID_EXT, PID_EXT):
        node, pos = _read_atom(view, pos, budget, depth)
        if tag == NEW_PID_EXT:
            pid_id, serial, creation = struct.unpack_from(">III", view, pos)
            return Pid(node, pid_id, serial, creation), pos + 12
        pid_id, serial, creation = struct.unpack_from(">IIB", view, pos)
        return Pid(node, pid_id, serial, creation), pos + 9
    if tag in (NEWER_REFERENCE_EXT, NEW_REFERENCE_EXT):
        n = struct.unpack_from(">H", view, pos)[0]
        node, pos = _read_atom(view, pos + 2, budget, depth)
        if tag == NEWER_REFERENCE_EXT:
            creation = struct.unpack_from(">I", view, pos)[0]
            pos += 4
        else:
            creation = view[pos]
            pos += 1
        ids = struct.unpack_from(f">{n}I", view, pos)
        return Reference(node, creation, tuple(ids)), pos + 4 * n
    if tag == REFERENCE_EXT:
        node, pos = _read_atom(view, pos, budget, depth)
        ref_id, creation = struct.unpack_from(">IB", view, pos)
        return Reference(node, creation, (ref_id,)), pos + 5
    if tag in (NEW_PORT_EXT, V4_PORT_EXT, PORT_EXT):
        node, pos = _read_atom(view, pos, budget, depth)
        if tag == NEW_PORT_EXT:
            port_id, creation = struct.unpack_from(">II", view, pos)
            return Port(node, port_id, creation), pos + 8
        if tag == V4_PORT_EXT:
            port_id, creation = struct.unpack_from(">QI", view, pos)
            return Port(node, port_id, creation), pos + 12
        port_id, creation = struct.unpack_from(">IB", view, pos)
        return Port(node, port_id, creation), pos + 5
    if tag == NEW_FUN_EXT:
        size = struct.unpack_from(">I", view, pos)[0]
        start = pos - 1
        end = pos + size
        raw = bytes(view[start:end])
        if size < 4 or len(raw) != size + 1:
            raise IndexError("fun")
        return Fun(raw), end
    if tag == EXPORT_EXT:
        module, pos = _read_atom(view, pos, budget, depth)
        function, pos = _read_atom(view, pos, budget, depth)
        if view[pos] not in (SMALL_INTEGER_EXT, INTEGER_EXT):
            raise DecodeError(f"export arity at byte {pos} is not an integer")
        arity, pos = _decode(view, pos, budget, depth)
        return Export(module, function, arity), pos
    if tag == COMPRESSED:
        size = struct.unpack_from(">I", view, pos)[0]
        if size > budget.max_inflated:
            raise DecodeError(
                f"term refused at byte {pos - 1}: compressed term announces {size:,} bytes"
                f" (at most {budget.max_inflated:,})"
            )
        inflater = zlib.decompressobj()
        inner = inflater.decompress(bytes(view[pos + 4 :]), size + 1)
        if not inflater.eof or len(inner) != size:
            raise DecodeError("compressed term does not inflate to its announced size")
        # Compressed terms nested or side by side share one limit per frame.
        budget.max_inflated -= size
        consumed = len(view) - pos - 4 - len(inflater.unused_data)
        term, inner_pos = _decode(memoryview(inner), 0, budget, depth + 1)
        if inner_pos != size:
            raise DecodeError("bytes left inside a compressed term")
        return term, pos + 4 + consumed
    raise DecodeError(f"unknown term tag {tag} at byte {pos - 1}")


def _hashable(key: Any) -> Any:
    """Map keys must be hashable in Python: lists (also inside tuples and improper
    lists) become tuples, maps sorted tuples of pairs (rare in practice)."""
    if isinstance(key, list | tuple):
        return tuple(_hashable(x) for x in key)
    if isinstance(key, ImproperList):
        return ImproperList(tuple(_hashable(x) for x in key.items), _hashable(key.tail))
    if isinstance(key, dict):
        return tuple(sorted(((_hashable(k), _hashable(v)) for k, v in key.items()), key=repr))
    return key
