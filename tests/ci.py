"""Whether CI runs the tests: there, a missing or broken environment (an engine that does not
start, an image that does not build, `ip netns add` refused) is a failure, not a skip."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; under CI, fail with it (CI must notice a broken environment)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the environment CI set up is broken)", pytrace=False)
    pytest.skip(reason)
