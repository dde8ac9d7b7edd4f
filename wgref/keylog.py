"""Wireshark WireGuard key logs (``wg.keylog_file`` and pcapng DSB type "WGKL"): read and write.

One secret per line, ``KEY_TYPE=<base64 of 32 bytes>``. Blank lines and ``#`` lines are ignored,
as are spaces at the start of a line and around ``=``. A ``PRESHARED_KEY`` line belongs to the
latest ``LOCAL_EPHEMERAL_PRIVATE_KEY`` line before it.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, TextIO, TypeVar

__all__ = [
    "LOCAL_EPHEMERAL_PRIVATE_KEY",
    "LOCAL_STATIC_PRIVATE_KEY",
    "PRESHARED_KEY",
    "REMOTE_STATIC_PUBLIC_KEY",
    "EphemeralSecret",
    "KeyLog",
    "KeyLogError",
    "KeyLogWriter",
    "format_handshake_lines",
    "format_keylog",
    "load_keylog",
    "parse_keylog",
]

LOCAL_STATIC_PRIVATE_KEY: Final = "LOCAL_STATIC_PRIVATE_KEY"
REMOTE_STATIC_PUBLIC_KEY: Final = "REMOTE_STATIC_PUBLIC_KEY"
LOCAL_EPHEMERAL_PRIVATE_KEY: Final = "LOCAL_EPHEMERAL_PRIVATE_KEY"
PRESHARED_KEY: Final = "PRESHARED_KEY"

_KEY_LEN: Final = 32

_T = TypeVar("_T")


class KeyLogError(ValueError):
    """A key log line that cannot be used; the message names source, line and problem."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source}:{line}: {problem}")


@dataclass(frozen=True)
class EphemeralSecret:
    """One handshake's local ephemeral private key, with the PSK used in it (if logged)."""

    private_key: bytes
    preshared_key: bytes | None = None


def _dedup(items: list[_T]) -> list[_T]:
    return list(dict.fromkeys(items))


@dataclass
class KeyLog:
    """All secrets of one or more key logs, in file order."""

    static_private_keys: list[bytes] = field(default_factory=list)
    remote_static_public_keys: list[bytes] = field(default_factory=list)
    ephemerals: list[EphemeralSecret] = field(default_factory=list)

    def merge(self, other: KeyLog) -> KeyLog:
        """A new key log with the secrets of both (this one first), exact duplicates dropped."""
        return KeyLog(
            _dedup(self.static_private_keys + other.static_private_keys),
            _dedup(self.remote_static_public_keys + other.remote_static_public_keys),
            _dedup(self.ephemerals + other.ephemerals),
        )


def _decode_key(value: str, source: str, lineno: int) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyLogError(source, lineno, f"bad base64 value ({exc})") from None
    if len(raw) != _KEY_LEN:
        raise KeyLogError(source, lineno, f"key is {len(raw)} bytes, not {_KEY_LEN}")
    return raw


def parse_keylog(text: str, source: str = "<keylog>") -> KeyLog:
    """Parse key log text; raises KeyLogError on the first bad line."""
    log = KeyLog()
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key_type, sep, value = line.partition("=")
        if not sep:
            raise KeyLogError(source, lineno, "expected KEY_TYPE=base64, found no '='")
        key_type = key_type.strip()
        if key_type not in (
            LOCAL_STATIC_PRIVATE_KEY,
            REMOTE_STATIC_PUBLIC_KEY,
            LOCAL_EPHEMERAL_PRIVATE_KEY,
            PRESHARED_KEY,
        ):
            raise KeyLogError(source, lineno, f"unknown key type {key_type!r}")
        key = _decode_key(value.strip(), source, lineno)
        if key_type == LOCAL_STATIC_PRIVATE_KEY:
            log.static_private_keys.append(key)
        elif key_type == REMOTE_STATIC_PUBLIC_KEY:
            log.remote_static_public_keys.append(key)
        elif key_type == LOCAL_EPHEMERAL_PRIVATE_KEY:
            log.ephemerals.append(EphemeralSecret(key))
        else:
            if not log.ephemerals:
                raise KeyLogError(
                    source,
                    lineno,
                    f"{PRESHARED_KEY} without a {LOCAL_EPHEMERAL_PRIVATE_KEY} before it",
                )
            last = log.ephemerals[-1]
            if last.preshared_key is not None:
                raise KeyLogError(
                    source, lineno, f"second {PRESHARED_KEY} for the same ephemeral key"
                )
            log.ephemerals[-1] = EphemeralSecret(last.private_key, key)
    return log


def load_keylog(path: str | os.PathLike[str]) -> KeyLog:
    """Read and parse a key log file (OSError if it cannot be read)."""
    with open(path, "rb") as f:
        data = f.read()
    source = os.fspath(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise KeyLogError(source, line, "not UTF-8 text") from None
    return parse_keylog(text, source)


def _line(key_type: str, key: bytes) -> str:
    if len(key) != _KEY_LEN:
        raise ValueError(f"{key_type} must be {_KEY_LEN} bytes, got {len(key)}")
    return f"{key_type}={base64.b64encode(key).decode('ascii')}\n"


def format_handshake_lines(
    local_static_private: bytes,
    remote_static_public: bytes,
    local_ephemeral_private: bytes,
    preshared_key: bytes | None,
) -> str:
    """The 3 or 4 key log lines for one handshake: statics, ephemeral, then the PSK if given."""
    text = (
        _line(REMOTE_STATIC_PUBLIC_KEY, remote_static_public)
        + _line(LOCAL_STATIC_PRIVATE_KEY, local_static_private)
        + _line(LOCAL_EPHEMERAL_PRIVATE_KEY, local_ephemeral_private)
    )
    if preshared_key is not None:
        text += _line(PRESHARED_KEY, preshared_key)
    return text


def format_keylog(log: KeyLog) -> str:
    """The key log as text: statics, then each ephemeral key followed by its PSK line."""
    lines = [_line(LOCAL_STATIC_PRIVATE_KEY, key) for key in log.static_private_keys]
    lines += [_line(REMOTE_STATIC_PUBLIC_KEY, key) for key in log.remote_static_public_keys]
    for secret in log.ephemerals:
        lines.append(_line(LOCAL_EPHEMERAL_PRIVATE_KEY, secret.private_key))
        if secret.preshared_key is not None:
            lines.append(_line(PRESHARED_KEY, secret.preshared_key))
    return "".join(lines)


class KeyLogWriter:
    """Appends handshake secrets to a key log file (created with mode 0o600), flushing each one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: TextIO = os.fdopen(fd, "a", encoding="ascii", newline="\n")
        self._lock = threading.Lock()

    def write_handshake(
        self,
        local_static_private: bytes,
        remote_static_public: bytes,
        local_ephemeral_private: bytes,
        preshared_key: bytes | None,
    ) -> None:
        """Append one handshake's lines and flush them to the file."""
        text = format_handshake_lines(
            local_static_private, remote_static_public, local_ephemeral_private, preshared_key
        )
        with self._lock:
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> KeyLogWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
