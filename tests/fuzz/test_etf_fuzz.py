"""Property-based fuzzing of the External Term Format decoder: what a broken or
hostile node could send.

Hypothesis builds terms of every kind (atoms, integers and bignums, floats,
binaries and bit binaries, pids, references, ports, exports, proper and
improper lists, tuples, maps), nested, with sub-terms wrapped in compressed
terms at any level, and deep chains of containers around and beyond the
depth limit. It then breaks them: bytes overwritten, lengths and counts set
to huge values, cuts, insertions, duplicated slices -- inside compressed terms
too (broken before they are compressed, so the inflater's checksum does not
hide them). For every case:

- an intact term decodes to what was encoded (or, deeper than the limit, is
  refused);
- a soup of tags and plausible fields (what an encoder gone wrong writes)
  decodes or is refused;
- a broken one decodes to some term or raises ``etf.DecodeError``: never any
  other exception;
- the same holds for whole distribution frames through ``Node._dispatch``.

``CHANLOAD_ETF_FUZZ_CASES`` sets the cases per test (default 1500 in the test
suite; ``make reliability`` runs 10,000).
"""

from __future__ import annotations

import os
import random
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.beam import etf
from engine.beam.dist import PASS_THROUGH, SEND, Node
from engine.beam.terms import Atom, BitBinary, Export, ImproperList, Pid, Port, Reference
from tests.fuzz import tally

CASES = int(os.environ.get("CHANLOAD_ETF_FUZZ_CASES", "1500"))
# Hypothesis shows the (large) bytes a strategy was built from when it reports;
# it warns that such a repr is expensive. Not a fault.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
SLOW = 2.0  # seconds: a decode taking longer than this counts as a hang
# Every tag the decoder reads (erts External Term Format).
TAGS = [80, 70, 77, 88, 89, 90, *range(97, 117), 118, 119, 120]

# -- terms, as (term, body without the version byte, intact?) -----------------

atoms = st.text(max_size=12).filter(lambda s: s not in ("true", "false", "nil")).map(Atom)
nodes = st.sampled_from([Atom("lightning@host"), Atom("a@b"), Atom("x" * 200)])
u32 = st.integers(0, 2**32 - 1)
scalars = st.one_of(
    st.integers(),
    st.integers(-(2**300), 2**300),
    st.floats(allow_nan=False),
    st.binary(max_size=40),
    atoms,
    st.booleans(),
    st.none(),
    st.builds(BitBinary, st.binary(min_size=1, max_size=8), st.integers(1, 8)),
    st.builds(Pid, nodes, u32, u32, u32),
    st.builds(Reference, nodes, u32, st.lists(u32, min_size=1, max_size=5).map(tuple)),
    st.builds(Port, nodes, st.integers(0, 2**64 - 1), u32),
    st.builds(Export, atoms, atoms, st.integers(0, 255)),
    st.lists(st.integers(0, 255), max_size=30),  # what erl calls a string
)
# Map keys: Erlang allows any term; lists (also inside tuples) come back as tuples.
keys = st.one_of(
    st.integers(),
    st.binary(max_size=8),
    atoms,
    st.lists(st.integers(0, 300), max_size=3),
    st.tuples(st.integers(), st.lists(atoms, max_size=2)),
    st.dictionaries(st.integers(), st.lists(st.integers(), max_size=2), max_size=2),
)


def compressed(body: bytes) -> bytes:
    return bytes([etf.COMPRESSED]) + struct.pack(">I", len(body)) + zlib.compress(body)


def count(n: int, small: bool) -> bytes:
    return bytes([n]) if small else struct.pack(">I", n)


# A tag followed by the bytes of a plausible field: what a node's encoder
# gone wrong would write.
fields = st.sampled_from(
    [
        b"",
        b"\x00",
        b"\xff",
        b"\x00\x00\x00\x01",
        b"\xff\xff\xff\xff",
        b"\x00\x02",
        b"\x09",
        b"\x00" * 31,
    ]
)
tokens = st.one_of(
    st.tuples(st.sampled_from(TAGS), fields).map(lambda t: bytes([t[0]]) + t[1]),
    st.binary(min_size=1, max_size=6),
)
soup = st.lists(tokens, min_size=1, max_size=40).map(lambda ts: b"\x83" + b"".join(ts))


@st.composite
def broken(draw, data: bytes) -> bytes:
    """``data`` with one to three faults."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        fault = draw(st.sampled_from(["byte", "huge", "cut", "insert", "repeat", "tag", "tag"]))
        if fault == "byte" and out:
            out[at] = draw(st.integers(0, 255))
        elif fault == "huge":  # a length or count field set to a lie
            out[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff"]))
        elif fault == "cut":
            del out[at:]
        elif fault == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif fault == "repeat":
            out[at:at] = out[at : at + draw(st.integers(1, 40))]
        else:  # any tag the decoder knows, in the wrong place
            out[at:at] = draw(tokens)
    return bytes(out)


leaves = scalars.map(lambda t: (t, etf.encode_body(t), True))
# An improper list's tail: anything but [] (which would make it proper).
tails = leaves.filter(lambda leaf: not (isinstance(leaf[0], list) and not leaf[0]))


def containers(children):
    def tuple_of(kids):
        body = bytes([etf.SMALL_TUPLE_EXT, len(kids)]) + b"".join(k[1] for k in kids)
        return tuple(k[0] for k in kids), body, all(k[2] for k in kids)

    def list_of(kids):
        if not kids:
            return [], bytes([etf.NIL_EXT]), True
        body = bytes([etf.LIST_EXT]) + count(len(kids), False) + b"".join(k[1] for k in kids)
        return [k[0] for k in kids], body + bytes([etf.NIL_EXT]), all(k[2] for k in kids)

    def improper(args):
        kids, tail = args
        body = bytes([etf.LIST_EXT]) + count(len(kids), False) + b"".join(k[1] for k in kids)
        return (
            ImproperList(tuple(k[0] for k in kids), tail[0]),
            body + tail[1],
            all(k[2] for k in kids),
        )

    def map_of(pairs):
        body = bytes([etf.MAP_EXT]) + count(len(pairs), False)
        for key, value in pairs:
            body += etf.encode_body(key) + value[1]
        term = {etf._hashable(k): v[0] for k, v in pairs}
        return term, body, all(v[2] for _, v in pairs)

    return st.one_of(
        st.lists(children, max_size=5).map(tuple_of),
        st.lists(children, max_size=5).map(list_of),
        st.tuples(st.lists(children, min_size=1, max_size=3), tails).map(improper),
        st.lists(st.tuples(keys, children), max_size=4, unique_by=lambda p: repr(p[0])).map(map_of),
        children.map(lambda c: (c[0], compressed(c[1]), c[2])),
        # a sub-term broken before it is compressed: the inflater cannot hide it
        st.tuples(children, st.data()).map(
            lambda a: (None, compressed(a[1].draw(broken(a[0][1]))), False)
        ),
    )


terms = st.recursive(leaves, containers, max_leaves=25)


@st.composite
def deep(draw):
    """A scalar inside a chain of containers, up to twice the depth limit."""
    depth = draw(st.integers(etf.MAX_DEPTH - 3, 2 * etf.MAX_DEPTH))
    # The kinds from a seed: drawing hundreds of choices one by one is what
    # made hypothesis, not the decoder, the slow part.
    kinds = random.Random(draw(st.integers(0, 2**32))).choices("ltmc", k=depth)
    body = etf.encode_body(0)
    for kind in kinds:
        if kind == "l":
            body = b"l\x00\x00\x00\x01" + body + b"j"
        elif kind == "t":
            body = b"h\x01" + body
        elif kind == "m":
            body = b"t\x00\x00\x00\x01a\x00" + body
        else:
            body = compressed(body)
    return depth, body


# -- the properties -------------------------------------------------------------

# The fuzz tests' own time limit: ``make reliability`` runs many more cases.
pytestmark = [pytestmark, pytest.mark.timeout(120 + CASES // 20)]

FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def decode_once(data: bytes, seen: dict) -> object:
    """Decode ``data``; count what happened; any exception but DecodeError escapes."""
    started = time.monotonic()
    try:
        term = etf.decode(data)
        seen["decoded"] += 1
        return term
    except etf.DecodeError:
        seen["refused"] += 1
        return etf.DecodeError
    except Exception:
        seen["crashes"] += 1
        raise
    finally:
        took = time.monotonic() - started
        seen["slowest"] = max(seen["slowest"], took)
        seen["hangs"] += took > SLOW


def new_tally() -> dict:
    return {"cases": 0, "decoded": 0, "refused": 0, "crashes": 0, "hangs": 0, "slowest": 0.0}


def record(name: str, seen: dict) -> None:
    seen["detail"] = (
        f"{seen['decoded']:,} decoded, {seen['refused']:,} refused (DecodeError),"
        f" slowest {seen['slowest'] * 1000:.0f} ms"
    )
    tally.record(name, seen)


def test_terms_intact_or_broken_decode_or_are_refused_nothing_else():
    seen = new_tally()

    @FUZZ
    @given(terms, st.booleans(), soup, st.data())
    def one(case, whole_compressed, garbage, data):
        term, body, intact = case
        if whole_compressed:
            body = compressed(body)
        seen["cases"] += 1
        if intact:
            assert decode_once(b"\x83" + body, seen) == term
        decode_once(data.draw(broken(b"\x83" + body)), seen)
        decode_once(garbage, seen)

    one()
    record("ETF decoder fuzz (terms, compressed at any level)", seen)
    assert not seen["hangs"], seen
    assert seen["cases"] >= CASES * 0.9
    assert seen["refused"] > 0 and seen["decoded"] > 0, seen  # both outcomes were reached


def test_nesting_at_and_past_the_limit_is_decoded_or_refused_never_a_recursion_error():
    seen = new_tally()

    @FUZZ
    @given(deep(), st.data())
    def one(case, data):
        depth, body = case
        seen["cases"] += 1
        outcome = decode_once(b"\x83" + body, seen)
        assert (outcome is etf.DecodeError) == (depth > etf.MAX_DEPTH), depth
        decode_once(data.draw(broken(b"\x83" + body)), seen)

    one()
    record("ETF decoder fuzz (nesting to 2x the limit)", seen)
    assert not seen["hangs"], seen
    assert seen["cases"] >= CASES * 0.9


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def test_whole_frames_are_handled_or_refused_by_the_connection():
    # Node._dispatch, the code a node's frames reach, without a socket.
    node = Node.__new__(Node)
    node._pending, node.lost, node._writer = {}, None, _Discard()
    seen = new_tally()
    control = etf.encode((SEND, Atom(""), Pid(Atom("a@b"), 1, 0, 1)))

    @FUZZ
    @given(terms, st.data())
    def one(case, data):
        seen["cases"] += 1
        frame = data.draw(broken(bytes([PASS_THROUGH]) + control + b"\x83" + case[1]))
        started = time.monotonic()
        try:
            node._dispatch(frame or b"\x00")
            seen["decoded"] += 1
        except etf.DecodeError:
            seen["refused"] += 1
        except Exception:
            seen["crashes"] += 1
            raise
        finally:
            seen["slowest"] = max(seen["slowest"], time.monotonic() - started)

    one()
    record("distribution frame fuzz (Node._dispatch)", seen)
    assert seen["cases"] >= CASES * 0.9
    assert seen["refused"] > 0, seen
