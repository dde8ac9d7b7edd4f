"""Benchmarks of the TUN offload work on the sending side (pytest-benchmark; no timing
assertions): splitting a 64 KiB TSO super-frame into MSS-sized segments with their checksums,
once with the numpy payload sums (the ``fast`` extra) and once with the pure-Python ones.

``--benchmark-disable`` is in the pytest addopts, so these run once as plain tests; compare
the two side by side with
``python3 -m pytest tests/shells/test_bench_offload.py --benchmark-enable``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.shells.test_offload import assert_valid, tcp_packet, tso_frame
from wgref import offload

pytest.importorskip("pytest_benchmark")

MSS = 1368  # a 1420-byte WireGuard MTU less the IPv4, TCP and timestamp-option headers
PAYLOAD = random.Random(64).randbytes(65535 - 20 - 32)  # the largest IPv4 TSO frame
SUMS = {"numpy": offload._segment_sums_numpy, "python": offload._segment_sums_python}


@pytest.mark.parametrize("sums", SUMS)
@pytest.mark.parametrize("version", [4, 6])
def test_bench_split_tso_64k(benchmark, sums: str, version: int) -> None:  # type: ignore[no-untyped-def]
    """split_frame of a 64 KiB TSO frame: 48 segments, their headers and TCP checksums."""
    frame = tso_frame(tcp_packet(version, PAYLOAD), MSS)
    split: Callable[[bytes], list[bytes]] = offload.split_frame
    default = offload._segment_sums
    offload._segment_sums = SUMS[sums]
    try:
        segments = benchmark(split, frame)
    finally:
        offload._segment_sums = default
    assert len(segments) == -(-len(PAYLOAD) // MSS) == 48
    assert b"".join(s[-MSS:] for s in segments[:-1]) == PAYLOAD[: 47 * MSS]
    for segment in segments:
        assert_valid(segment)
