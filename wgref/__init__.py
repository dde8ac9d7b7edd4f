"""wgref: a clean-room, sans-I/O WireGuard implementation (see README.md)."""

__version__ = "0.1.0"
