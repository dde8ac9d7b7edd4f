"""LOG_LEVEL as wireguard-go reads it: ``verbose`` (or ``debug``), ``error``, ``silent``.

wireguard-go (main.go) falls back to its default for any other value without a word; wgref
falls back too but says so on stderr, naming the accepted values, so ``LOG_LEVEL=info`` on the
interface is not silently something else.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

SILENT = logging.CRITICAL + 1
LEVELS: Mapping[str, int] = {
    "verbose": logging.DEBUG,
    "debug": logging.DEBUG,
    "error": logging.ERROR,
    "silent": SILENT,
}


def level_from_env(
    default: str = "error",
    levels: Mapping[str, int] = LEVELS,
    env: Mapping[str, str] | None = None,
    err: TextIO | None = None,
) -> int:
    """The logging level LOG_LEVEL names; ``default`` (a key of ``levels``) when it is unset,
    empty or unknown, with a warning on ``err`` (stderr) for an unknown value."""
    raw = (os.environ if env is None else env).get("LOG_LEVEL", "")
    name = raw.strip().lower()
    if not name:
        return levels[default]
    if name in levels:
        return levels[name]
    (sys.stderr if err is None else err).write(
        f"wgref: warning: LOG_LEVEL={raw} is not one of {', '.join(levels)}; "
        f"using {default}\n"
    )
    return levels[default]
