"""Tests for the receive replay window (WP 5.4.6; kernel selftest/counter.c script)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from wgref.replay import (
    COUNTER_BITS_TOTAL,
    COUNTER_REDUNDANT_BITS,
    COUNTER_WINDOW_SIZE,
    REJECT_AFTER_MESSAGES,
    ReplayWindow,
)

W = COUNTER_WINDOW_SIZE
T_LIM = W + 1
R = REJECT_AFTER_MESSAGES

# (counter, accepted) on one fresh window, in order.
SCRIPT: list[tuple[int, bool]] = [
    (0, True),
    (1, True),
    (1, False),
    (9, True),
    (8, True),
    (7, True),
    (7, False),
    (T_LIM, True),
    (T_LIM - 1, True),
    (T_LIM - 1, False),
    (T_LIM - 2, True),
    (2, True),
    (2, False),
    (T_LIM + 16, True),
    (3, False),
    (T_LIM + 16, False),
    (4 * T_LIM, True),
    (4 * T_LIM - (T_LIM - 1), True),
    (10, False),
    (4 * T_LIM - T_LIM, False),
    (4 * T_LIM - (T_LIM + 1), False),
    (4 * T_LIM - (T_LIM - 2), True),
    (4 * T_LIM + 1 - T_LIM, False),
    (0, False),
    (R, False),
    (R - 1, True),
    (R, False),
    (R - 1, False),
    (R - 2, True),
    (R + 1, False),
    (R + 2, False),
    (R - 2, False),
    (R - 3, True),
    (0, False),
]


def test_constants() -> None:
    assert COUNTER_BITS_TOTAL == 8192
    assert COUNTER_REDUNDANT_BITS == 64
    assert COUNTER_WINDOW_SIZE == 8128
    assert R == 2**64 - 8130  # kernel messages.h: U64_MAX - COUNTER_WINDOW_SIZE - 1


def test_kernel_script() -> None:
    assert len(SCRIPT) == 34
    w = ReplayWindow()
    for step, (counter, expected) in enumerate(SCRIPT, 1):
        assert w.check_and_update(counter) is expected, (step, counter)


def test_reset() -> None:
    w = ReplayWindow()
    for c in (0, 1, 5000, 20000):
        assert w.check_and_update(c)
    w.reset()
    for c in (0, 1, 5000, 20000):
        assert w.check_and_update(c)
    assert not w.check_and_update(0)


def test_custom_limit_and_negative() -> None:
    w = ReplayWindow()
    assert not w.check_and_update(10, limit=10)
    assert w.check_and_update(9, limit=10)
    assert not w.check_and_update(-1)


def _fresh_accepts(counters: range) -> ReplayWindow:
    w = ReplayWindow()
    for i in counters:
        assert w.check_and_update(i), i
    return w


def test_bulk_forward_from_1() -> None:
    w = _fresh_accepts(range(1, W + 1))
    assert w.check_and_update(0)  # top - 0 == W: still inside, never seen
    for i in range(W + 1):
        assert not w.check_and_update(i), i


def test_bulk_forward_from_2() -> None:
    w = _fresh_accepts(range(2, W + 2))
    assert not w.check_and_update(0)  # top - 0 == W + 1: too old
    assert w.check_and_update(1)
    for i in range(1, W + 2):
        assert not w.check_and_update(i), i


def test_bulk_backward_to_1() -> None:
    w = _fresh_accepts(range(W + 1, 0, -1))
    assert not w.check_and_update(0)
    for i in range(1, W + 2):
        assert not w.check_and_update(i), i


def test_bulk_backward_to_2() -> None:
    w = _fresh_accepts(range(W + 2, 1, -1))
    assert not w.check_and_update(0)
    assert not w.check_and_update(1)


def test_bulk_backward_from_w_plus_1_to_2() -> None:
    w = _fresh_accepts(range(W + 1, 1, -1))
    assert w.check_and_update(1)
    assert not w.check_and_update(0)


def test_bulk_backward_to_0() -> None:
    w = _fresh_accepts(range(W, -1, -1))
    assert w.check_and_update(W + 1)
    for i in range(W + 2):
        assert not w.check_and_update(i), i


def test_window_after_jumps() -> None:
    for k in (1, 63, 64, 65, 127, 8191, 8192, 8193, 100_000):
        w = ReplayWindow()
        top = W + k
        assert w.check_and_update(top)
        for c in range(top - W, top):
            assert w.check_and_update(c), (k, c)
            assert not w.check_and_update(c), (k, c)
        for c in (0, top - COUNTER_BITS_TOTAL - 1, top - W - 1):
            if c >= 0:
                assert not w.check_and_update(c), (k, c)


def test_in_order_across_ring_wraps() -> None:
    w = ReplayWindow()
    for c in range(4 * COUNTER_BITS_TOTAL):
        assert w.check_and_update(c), c
        assert not w.check_and_update(c), c
        if c >= W:
            assert not w.check_and_update(c - W), c


def test_strided_across_ring_wraps() -> None:
    strides = (63, 64, 65, 128, 192, 1000, 4096, W, COUNTER_BITS_TOTAL - 1, COUNTER_BITS_TOTAL + 1)
    for stride in strides:
        w = ReplayWindow()
        for c in range(0, 40 * COUNTER_BITS_TOTAL, stride):
            assert w.check_and_update(c), (stride, c)
            assert not w.check_and_update(c), (stride, c)


class _Model:
    """Naive reference: a set of seen counters plus the maximum."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.top = 0

    def check_and_update(self, counter: int) -> bool:
        if not 0 <= counter < R or counter in self.seen or counter + W < self.top:
            return False
        self.seen.add(counter)
        self.top = max(self.top, counter)
        return True


@st.composite
def _counter_sequences(draw: st.DrawFn) -> list[int]:
    base = draw(st.sampled_from([0, 1 << 32, R - 3 * COUNTER_BITS_TOTAL]))
    steps = draw(
        st.lists(
            st.one_of(
                st.integers(0, 130),  # forward drift, so the block ring wraps
                st.integers(-COUNTER_BITS_TOTAL - 130, 130),
                st.integers(-3 * COUNTER_BITS_TOTAL, 3 * COUNTER_BITS_TOTAL),
            ),
            max_size=300,
        )
    )
    out: list[int] = []
    cur = base
    for s in steps:
        cur = max(0, cur + s)
        out.append(cur)
    return out


@settings(max_examples=300, deadline=None)
@given(_counter_sequences())
def test_against_model(counters: list[int]) -> None:
    w = ReplayWindow()
    model = _Model()
    accepted: set[int] = set()
    for c in counters:
        top = model.top
        got = w.check_and_update(c)
        want = model.check_and_update(c)
        # RFC 6479 only guarantees the last W counters and rejection beyond BITS_TOTAL; this
        # implementation is exact, but the guarantees are what is asserted unconditionally.
        if c + W >= top or c + COUNTER_BITS_TOTAL < top or c >= R:
            assert got == want, (c, top)
        assert not (got and c in accepted), c
        if got:
            accepted.add(c)
    # Exactness of this implementation (stronger than RFC 6479 requires).
    for c in counters:
        assert not w.check_and_update(c)
