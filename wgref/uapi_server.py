"""The UAPI socket of ``wgref IFNAME``: ``/var/run/wireguard/IFNAME.sock`` and its
connections, served from the event loop without ever blocking it.

Each connection has an output buffer written when the socket is writable (EPOLLOUT), so a
client that sends ``get=1`` and never reads costs nothing but its buffer; once more than
:data:`OUTPUT_LIMIT` bytes wait for one client, its input is no longer read (its own writes
then block in its kernel buffer) until it reads. The request parsing is
:class:`~wgref.uapi.UapiConnection`'s; bad requests get errno lines there.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .eventloop import EventLoop
from .results import Batch
from .uapi import UapiConnection

__all__ = ["OUTPUT_LIMIT", "SOCKET_DIR", "UapiServer", "open_listener"]

log = logging.getLogger("wgref.uapi")

SOCKET_DIR = "/var/run/wireguard"
# The listen backlog: bursts of concurrent `wg` calls queue here (the kernel caps it at
# net.core.somaxconn).
BACKLOG = socket.SOMAXCONN
# What one client may have waiting unread before we stop reading its requests: a get=1 of a
# peer with 130,560 allowed ips is ~3.6 MB, so one such answer always fits.
OUTPUT_LIMIT = 8 << 20
READ_SIZE = 1 << 16
# Answers made per client per turn of the loop: pipelined requests are answered a slice at a
# time, so one client cannot hold the loop (a get=1 of 1,000 allowed ips takes ~2.5 ms).
SLICE = 1 << 16


def open_listener(name: str) -> tuple[socket.socket, str]:
    """Bind /var/run/wireguard/NAME.sock (dir 0755, socket 0700 like wireguard-go)."""
    os.makedirs(SOCKET_DIR, mode=0o755, exist_ok=True)
    path = os.path.join(SOCKET_DIR, f"{name}.sock")
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: fine too
                os.unlink(path)  # stale socket: nobody listens
        else:
            raise OSError(errno.EADDRINUSE, f"{path} is in use")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return listener, path


@dataclass
class _Client:
    sock: socket.socket
    session: UapiConnection
    output: bytearray = field(default_factory=bytearray)
    reading: bool = True
    closing: bool = False  # answer written: shut down our side, discard input until EOF
    shut: bool = False


class UapiServer:
    """Accepts and serves UAPI connections on ``loop``.

    ``make_session()`` gives the parser of a new connection; ``before_request()`` runs before
    each chunk of requests is parsed (the shell refreshes the MTU); ``perform(batch)``
    carries out what a request asked the device to do."""

    def __init__(
        self,
        loop: EventLoop,
        listener: socket.socket,
        make_session: Callable[[], UapiConnection],
        before_request: Callable[[], None],
        perform: Callable[[Batch], None],
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.make_session = make_session
        self.before_request = before_request
        self.perform = perform
        self.clients: dict[int, _Client] = {}
        self.paused = False
        loop.add(listener.fileno(), self._accept)

    def _accept(self, _mask: int) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # EMFILE/ENFILE: the listener stays readable, so stop watching it (instead of
                # spinning) until a client leaves or resume() is called.
                log.error("UAPI accept: %s", exc)
                self._pause()
                return
            sock.setblocking(False)
            fd = sock.fileno()
            self.clients[fd] = _Client(sock, self.make_session())
            self.loop.add(fd, functools.partial(self._serve_fd, fd))

    def _serve_fd(self, fd: int, mask: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        if mask & select.EPOLLOUT:
            self._write(client)
            if client.reading and client.session.pending and len(client.output) < OUTPUT_LIMIT:
                self._process(client, b"")  # the next slice of pipelined requests
        if client.reading and mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            self._read(client)
        if fd in self.clients:
            self._update(fd, client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF (or a half-close: the answer is still written, as far as it goes)
            client.reading, client.closing = False, True
            return
        if client.closing:
            return  # the rest of a request we already refused: read so the client can finish
        self._process(client, data)

    def _process(self, client: _Client, data: bytes) -> None:
        self.before_request()
        try:
            answer, out = client.session.feed(data, time.monotonic(), SLICE)
        except Exception:  # a parser bug must not take the interface down
            log.exception("UAPI request failed")
            answer, out = f"errno=-{errno.EIO}\n\n".encode(), Batch()
            client.session.closed = True
        if out:
            self.perform(out)
        client.output += answer
        if client.session.closed:
            client.closing = True
        self._write(client)

    def _write(self, client: _Client) -> None:
        output = client.output
        while output:
            try:
                sent = client.sock.send(output)
            except BlockingIOError:
                return
            except OSError:
                output.clear()
                client.reading, client.closing = False, True
                return
            del output[:sent]

    def _update(self, fd: int, client: _Client) -> None:
        """Close a finished client, or watch for what it is waiting for."""
        if client.closing and not client.output:
            if not client.reading:
                self.drop(fd)
                return
            if not client.shut:
                # The answer is out: the client sees EOF, and may still be sending (a 1 MB
                # line) without getting a reset before it reads the errno line.
                client.shut = True
                try:
                    client.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self.drop(fd)
                    return
        if client.closing:
            pass  # draining: keep reading (and discarding) until EOF
        elif client.reading and len(client.output) > OUTPUT_LIMIT:
            client.reading = False  # back-pressure: read again once it has read ours
        elif not client.reading and not client.closing and len(client.output) <= OUTPUT_LIMIT:
            client.reading = True
        waiting = client.output or (client.reading and client.session.pending)
        mask = (select.EPOLLIN if client.reading else 0) | (select.EPOLLOUT if waiting else 0)
        self.loop.modify(fd, mask)

    def drop(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is not None:
            self.loop.remove(fd)
            client.sock.close()
            self.resume()

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.loop.modify(self.listener.fileno(), 0)

    def resume(self) -> None:
        """Accept again after a pause (the shell also calls this from its housekeeping)."""
        if self.paused:
            self.paused = False
            self.loop.modify(self.listener.fileno(), select.EPOLLIN)

    def close(self) -> None:
        for fd in list(self.clients):
            self.drop(fd)
        self.loop.remove(self.listener.fileno())
        self.listener.close()
