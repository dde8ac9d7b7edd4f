"""The test suite's own rules, checked by reading it: no bare sleep used to wait for
something (wait on the event: tests.netns.wait_for / holds_for), no timing or throughput
assert (speed is measured by the bench), and explicit settings on every hypothesis test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# The polling helpers every test waits through.
HELPERS = {TESTS / "netns.py"}
# A sleep that is the behaviour under test (a server that answers late), not a wait for
# something, carries this marker on its line with the reason.
BEHAVIOUR = "# behaviour, not a wait:"


def sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p != Path(__file__).resolve())


def test_no_bare_sleep() -> None:
    found = {}
    for path in sources():
        if path in HELPERS:
            continue
        lines = [n for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\btime\.sleep\(|^\s*sleep\(", line) and BEHAVIOUR not in line]
        if lines:
            found[path] = lines
    assert not found, {str(p): n for p, n in found.items()}


def test_no_timing_or_throughput_assert() -> None:
    timing = re.compile(r"\bassert\b.*(monotonic\(\)|perf_counter\(\)|"
                        r"(bps|mbps|mbit|throughput)\w*\W*\s*[<>]=?\s*[1-9])", re.IGNORECASE)
    found = [f"{p.relative_to(TESTS)}:{n}" for p in sources()
             for n, line in enumerate(p.read_text().splitlines(), 1) if timing.search(line)]
    assert found == []


def test_hypothesis_tests_have_explicit_settings() -> None:
    missing = []
    for path in sources():
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            if not line.startswith("@given("):
                continue
            decorators = []
            for above in reversed(lines[:n]):
                if not above.startswith("@") and not above.startswith((" ", ")")):
                    break
                decorators.append(above)
            if not any(d.startswith("@settings(") or re.match(r"@[A-Z_]+$", d)
                       for d in decorators):
                missing.append(f"{path.relative_to(TESTS)}:{n + 1}")
    assert missing == []


def test_a_broken_environment_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.ci import skip_or_fail

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^no engine \(CI=true: the environment"):
        skip_or_fail("no engine")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"^no engine$"):
        skip_or_fail("no engine")
