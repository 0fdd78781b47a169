"""The External Term Format codec: round trips of every term type, and errors."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.beam import etf
from engine.beam.terms import Atom, BitBinary, Export, Fun, ImproperList, Pid, Port, Reference

NODE = Atom("lightning@host")
CORPUS = [
    0,
    255,
    256,
    -1,
    2**31 - 1,
    -(2**31),
    2**31,
    -(2**31) - 1,
    2**64,
    -(2**200),
    2**2100,  # LARGE_BIG_EXT
    0.0,
    -1.5,
    1e300,
    Atom("ok"),
    Atom(""),
    Atom("héllo"),
    Atom("é" * 200),  # 400 bytes: ATOM_UTF8_EXT (atoms have at most 255 characters)
    True,
    False,
    None,
    b"",
    b"\x00\xff" * 100,
    (),
    (1, Atom("two"), b"3"),
    tuple(range(300)),  # LARGE_TUPLE_EXT
    [],
    [1, 2, 3],  # STRING_EXT
    [1, 256, Atom("x")],
    [[], [[]]],
    ImproperList((1, 2), Atom("tail")),
    {},
    {Atom("a"): 1, Atom("b"): [1, 2], b"k": {Atom("nested"): True}},
    {i: i * 2 for i in range(40)},  # more than 32 keys
    BitBinary(b"\x80", 1),
    BitBinary(b"\xff\xf0", 4),
    Pid(NODE, 85, 0, 1700000000),
    Reference(NODE, 1700000000, (1, 2, 3)),
    Reference(NODE, 7, (1, 2, 3, 4, 5)),
    Port(NODE, 12, 3),
    Port(NODE, 2**40, 3),
    Export(Atom("lists"), Atom("map"), 2),
]


@pytest.mark.parametrize("term", CORPUS, ids=lambda t: type(t).__name__)
def test_round_trip(term):
    assert etf.decode(etf.encode(term)) == term


def test_strings_encode_as_utf8_binaries():
    assert etf.encode("héllo") == bytes([131, 109, 0, 0, 0, 6]) + "héllo".encode()
    assert etf.decode(etf.encode("héllo")) == "héllo".encode()


def test_exact_bytes_of_common_terms():
    assert etf.encode(1) == b"\x83a\x01"
    assert etf.encode(-1) == b"\x83b\xff\xff\xff\xff"
    assert etf.encode(Atom("ok")) == b"\x83w\x02ok"
    assert etf.encode([1, 2]) == b"\x83k\x00\x02\x01\x02"
    assert etf.encode((Atom("a"), 1)) == b"\x83h\x02w\x01aa\x01"
    assert etf.encode(1.5) == b"\x83F" + struct.pack(">d", 1.5)
    # small maps are written in key order, as term_to_binary does
    assert etf.encode({Atom("b"): 1, Atom("a"): 2}) == etf.encode({Atom("a"): 2, Atom("b"): 1})
    # in map key order every integer sorts before every float
    data = etf.encode({2.5: 0, 3: 0})
    assert data.index(b"a\x03") < data.index(b"F")


def test_old_encodings_decode():
    latin1_atom = bytes([131, 100, 0, 2]) + b"ok"
    assert etf.decode(latin1_atom) == Atom("ok")
    assert etf.decode(bytes([131, 115, 2]) + b"ok") == Atom("ok")
    old_float = bytes([131, 99]) + b"1.50000000000000000000e+00".ljust(31, b"\0")
    assert etf.decode(old_float) == 1.5
    old_pid = bytes([131, 103, 100, 0, 1]) + b"n" + struct.pack(">IIB", 1, 2, 3)
    assert etf.decode(old_pid) == Pid(Atom("n"), 1, 2, 3)
    old_port = bytes([131, 102, 100, 0, 1]) + b"n" + struct.pack(">IB", 4, 1)
    assert etf.decode(old_port) == Port(Atom("n"), 4, 1)
    new_ref = bytes([131, 114, 0, 1, 100, 0, 1]) + b"n" + struct.pack(">BI", 2, 9)
    assert etf.decode(new_ref) == Reference(Atom("n"), 2, (9,))


def test_compressed_terms_decode():
    inner = etf.encode_body([Atom("chanload")] * 200)
    data = bytes([131, 80]) + struct.pack(">I", len(inner)) + zlib.compress(inner)
    assert etf.decode(data) == [Atom("chanload")] * 200


def test_funs_are_kept_opaque():
    # NEW_FUN_EXT: Size counts itself and everything after the tag.
    body = b"\x01" + b"\x00" * 16 + struct.pack(">II", 0, 0) + etf.encode_body(Atom("m"))
    body += etf.encode_body(0) + etf.encode_body(0) + etf.encode_body(Pid(NODE, 1, 0, 1))
    raw = bytes([112]) + struct.pack(">I", len(body) + 4) + body
    term = etf.decode(bytes([131]) + raw)
    assert term == Fun(raw)
    assert etf.encode(term) == bytes([131]) + raw


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x82a\x01",  # wrong version
        b"\x83",
        b"\x83m\x00\x00\x00\x09abc",  # binary shorter than announced
        b"\x83h\x02a\x01",  # tuple missing an element
        b"\x83\xff",  # unknown tag
        b"\x83a\x01\x00",  # trailing bytes
        b"\x83P\x00\x00\x10\x00xyz",  # bad compression
        b"\x83P\xff\xff\xff\xff",  # a 4 GiB bomb
    ],
)
def test_malformed_input_raises_decode_error(data):
    with pytest.raises(etf.DecodeError):
        etf.decode(data)


def test_unencodable_types_are_refused():
    with pytest.raises(TypeError):
        etf.encode(object())


terms = st.recursive(
    st.one_of(
        st.integers(),
        st.floats(allow_nan=False),
        st.binary(max_size=50),
        st.text(max_size=20).filter(lambda s: s not in ("true", "false", "nil")).map(Atom),
        st.booleans(),
        st.none(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.dictionaries(st.one_of(st.integers(), st.binary(max_size=8)), children, max_size=6),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(terms)
def test_round_trip_property(term):
    decoded = etf.decode(etf.encode(term))
    assert decoded == term
    assert etf.encode(decoded) == etf.encode(term)


# -- limits: what a broken or hostile node cannot make us do -----------------


def compressed(body: bytes) -> bytes:
    """``body`` (a term without its version byte) as COMPRESSED_EXT."""
    return bytes([80]) + struct.pack(">I", len(body)) + zlib.compress(body, 9)


def nested_lists(depth: int) -> bytes:
    """``[[[...[]...]]]`` with ``depth`` lists around the innermost ``[]``."""
    return b"\x83" + b"l\x00\x00\x00\x01" * depth + b"j" * (depth + 1)


def test_nesting_up_to_the_limit_decodes_and_deeper_is_refused():
    term = etf.decode(nested_lists(etf.MAX_DEPTH - 1))
    depth = 0
    while term:
        term, depth = term[0], depth + 1
    assert depth == etf.MAX_DEPTH - 1
    with pytest.raises(etf.DecodeError, match="nested deeper than"):
        etf.decode(nested_lists(etf.MAX_DEPTH + 1))


@pytest.mark.parametrize("opener", [b"h\x01", b"l\x00\x00\x00\x01", b"t\x00\x00\x00\x01a\x00"])
def test_nesting_far_past_pythons_recursion_limit_is_a_decode_error(opener):
    # 100,000 levels of tuples, lists or map values: a RecursionError before.
    with pytest.raises(etf.DecodeError, match="nested deeper than"):
        etf.decode(b"\x83" + opener * 100_000 + b"j" * 200_000)


def test_nesting_through_compressed_terms_counts_too():
    body = etf.encode_body(0)
    for _ in range(etf.MAX_DEPTH + 1):
        body = compressed(body)
    with pytest.raises(etf.DecodeError, match="nested deeper than"):
        etf.decode(b"\x83" + body)


BOMB_ELEMENTS = {
    "empty lists": b"j",
    "empty maps": b"t\x00\x00\x00\x00",
    "atoms": b"w\x00",
    "one-element lists": b"l\x00\x00\x00\x01jj",
    "bignums": b"n\x09\x00" + b"\xff" * 9,
    "strings": b"k\xff\xff" + b"\x01" * 65535,
}


# Run in a child of its own: its peak RSS (VmHWM: ru_maxrss would carry the
# forking parent's peak across exec) grows by what the decode took.
MEASURE_DECODE = """
import sys
from engine.beam import etf

def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

bomb = sys.stdin.buffer.read()
before = peak()
try:
    etf.decode(bomb)
    print("decoded")
except etf.DecodeError as exc:
    print(exc)
print(peak() - before)
"""


@pytest.mark.parametrize("element", BOMB_ELEMENTS.values(), ids=list(BOMB_ELEMENTS))
def test_a_compressed_bomb_is_refused_within_bounded_memory(element):
    import subprocess
    import sys

    n = (etf.MAX_INFLATED - 16) // len(element)
    bomb = b"\x83" + compressed(b"l" + struct.pack(">I", n) + element * n + b"j")
    assert len(bomb) < 40_000  # a few KB on the wire...
    child = subprocess.run(
        [sys.executable, "-c", MEASURE_DECODE], input=bomb, capture_output=True, timeout=120
    )
    assert child.returncode == 0, child.stderr.decode()
    outcome, grown = child.stdout.decode().splitlines()
    assert "objects in one frame" in outcome
    # ...would be millions of objects, gigabytes (16 M lists at 72 bytes each).
    assert int(grown) < 96 * 1024 * 1024, f"{int(grown) / 1e6:.0f} MB"


def test_the_object_budget_is_shared_by_every_term_of_a_frame():
    half = etf.encode([[]] * 300)  # 301 objects
    budget = etf.Budget(objects=500)
    etf.decode(half, budget)
    with pytest.raises(etf.DecodeError, match="more than 500 objects"):
        etf.decode(half, budget)


def test_compressed_terms_of_a_frame_share_one_inflate_limit():
    one = compressed(etf.encode_body(b"x" * 1000))
    budget = etf.Budget(max_inflated=1500)
    etf.decode(b"\x83" + one, budget)
    with pytest.raises(etf.DecodeError, match="announces 1,005 bytes"):
        etf.decode(b"\x83" + one, budget)


def test_an_oversized_compressed_term_is_refused_before_inflating():
    size = etf.MAX_INFLATED + 1
    with pytest.raises(etf.DecodeError, match="announces"):
        etf.decode(b"\x83P" + struct.pack(">I", size) + zlib.compress(b"j"))


def test_map_keys_with_lists_inside_tuples_or_improper_lists_decode():
    key = (1, [2, 3])
    data = b"\x83t\x00\x00\x00\x02" + etf.encode_body(key) + b"a\x01"
    data += etf.encode_body(ImproperList(([1],), {Atom("m"): [4]})) + b"a\x02"
    decoded = etf.decode(data)
    assert decoded[(1, (2, 3))] == 1
    assert len(decoded) == 2


def test_an_atom_recurring_in_a_frame_is_one_object():
    data = etf.encode([Atom("chanload")] * 50)
    items = etf.decode(data)
    assert items == [Atom("chanload")] * 50
    assert all(item is items[0] for item in items)


@pytest.mark.parametrize(
    "data",
    [
        b"\x83c" + b"not a float".ljust(31, b"\0"),  # FLOAT_EXT that float() refuses
        b"\x83c" + b"1.5",  # FLOAT_EXT cut short
        b"\x83M\x00\x00\x00\x01\x09\xff",  # bit binary with 9 bits in its last byte
        b"\x83M\x00\x00\x00\x00\x03",  # bit binary of no bytes
        b"\x83X" + etf.encode_body(1) + b"\x00" * 12,  # pid whose node is not an atom
        b"\x83q" + etf.encode_body(Atom("m")) * 2 + etf.encode_body(b"x"),  # export arity
        b"\x83p\x00\x00\x00\x02",  # fun whose size cannot hold its own fields
        b"\x83h\xff",  # 255 elements announced, none there
        b"\x83l\xff\xff\xff\xff",  # 4 G elements announced
        b"\x83t\xff\xff\xff\xff",  # 4 G map pairs announced
        b"\x83w\x02\xff\xfe",  # an atom that is not UTF-8
        b"\x83" + compressed(b"a\x01a\x02"),  # bytes left inside a compressed term
        b"\x83" + compressed(b"h\x02a\x01"),  # a compressed term cut short inside
        b"\x83P\x00\x00\x00\x10" + zlib.compress(b"j"),  # inflates to less than announced
    ],
)
def test_every_malformed_input_is_the_decoders_own_error(data):
    with pytest.raises(etf.DecodeError):
        etf.decode(data)
