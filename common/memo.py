"""The read memo that chansink's request parser and chanload's response framer share.

A load generator sends the same request again and again, and a server answers
it with the same bytes: both sides keep, per connection, the last message
that came whole in one read (boundary to boundary, exactly one message) and
count the same bytes read again as that message, without the parser. The hit
checks stay inline in each ``buffer_updated`` (hot path: no extra call); this
is what both do when they learn a memo.
"""

from __future__ import annotations

# Larger messages are not memoised (their parse is cheap beside their size),
# so a memo costs a connection at most this much.
MEMO_MAX = 4096
# Messages in a row that differ (e.g. a proxy's request ids): memoise one in
# this many chances.
MEMO_WAIT = 64


class ReadMemo:
    """Mixin: the memo's bytes and its back-off, in the owner's attributes.

    The owner declares ``_memo``, ``_memo_len``, ``_memo_used`` and
    ``_memo_wait`` (in its ``__slots__`` if it has any), calls
    ``_memo_reset()`` at start, sets ``_memo_used = True`` on a hit, skips
    learning while ``_memo_wait`` counts down, and stores what the memo
    stands for when ``_memo_take`` returns True.
    """

    __slots__ = ()

    def _memo_reset(self) -> None:
        self._memo = b""
        self._memo_len = -1  # -1: no memo yet
        self._memo_used = True  # False: no hit since it was memoised
        self._memo_wait = 0  # messages keep differing: skip this many chances

    def _memo_take(self, buffer: bytearray, view: memoryview, n: int) -> bool:
        """Keep the read's ``n`` bytes as the memo; False when they already are it.

        A memo replaced before it served once means messages that differ: the
        owner then waits MEMO_WAIT chances before learning again.
        """
        if n == self._memo_len and buffer.startswith(self._memo):
            return False
        if not self._memo_used:
            self._memo_wait = MEMO_WAIT
        self._memo_used = False
        self._memo = bytes(view[:n])
        self._memo_len = n
        return True
