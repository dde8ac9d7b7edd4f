"""The transparent client for Linux: `wgref client CONFIG.conf` (see README.md here)."""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
