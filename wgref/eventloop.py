"""The single-threaded event loop of the I/O shells: epoll over file descriptors, the core's
timers, periodic housekeeping and SIGTERM/SIGINT; and the shells' logging setup.

One thread does everything (as the core is sans-I/O, nothing needs locking): each readable or
writable descriptor's handler runs, then every due timer, then housekeeping when its interval
has passed. Handlers must not block; exceptions leave :meth:`EventLoop.run` (a shell raises
to stop, e.g. when its TUN link is deleted).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping

from . import loglevel

__all__ = ["EventLoop", "serve_long_lived", "setup_logging"]

Handler = Callable[[int], None]  # called with the epoll event mask

# Young collections once this many more tracked objects are alive than at the last one
# (CPython's default is 700). A packet loop allocates short-lived containers (parses,
# batches, tuples) that reference counting frees; at 700 the ones a read holds at once set
# collections off: 2.5 % of the client's samples (perf) under tcp-down-p4, none with this.
YOUNG_THRESHOLD = 20_000


def serve_long_lived() -> None:
    """Before a daemon's loop: what setup allocated (modules, configuration, tables) lives as
    long as the process, so the cyclic collector stops walking it (:func:`gc.freeze`), and
    young collections run at :data:`YOUNG_THRESHOLD`. (Not for a process that goes on to do
    other things, such as the test suite.)"""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


class EventLoop:
    """epoll + timers + signals (see the module doc)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self.stopped = False
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self.add(self._wake_r.fileno(), self._drain_wake)

    def add(self, fd: int, handler: Handler, mask: int = select.EPOLLIN) -> None:
        self.epoll.register(fd, mask)
        self.handlers[fd] = handler

    def modify(self, fd: int, mask: int) -> None:
        self.epoll.modify(fd, mask)

    def remove(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)

    def stop(self) -> None:
        self.stopped = True

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stopped = True

    def _drain_wake(self, _mask: int) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(64):
                pass

    def run(
        self,
        next_timer: Callable[[], float | None],
        on_timer: Callable[[float], None],
        housekeeping: Callable[[float], None],
        interval: float,
        max_wait: float | None = None,
    ) -> None:
        """Serve until :meth:`stop`, SIGTERM or SIGINT (or a handler raises).

        ``next_timer()`` is the earliest deadline (monotonic seconds) or None;
        ``on_timer(now)`` runs once it is due; ``housekeeping(now)`` runs every ``interval``
        seconds; ``max_wait`` caps one wait (for shells that check something every pass)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        handlers, poll = self.handlers, self.epoll.poll
        next_housekeeping = time.monotonic() + interval
        try:
            while not self.stopped:
                now = time.monotonic()
                deadline = next_timer()
                timeout = next_housekeeping - now
                if deadline is not None:
                    timeout = min(timeout, deadline - now)
                if max_wait is not None:
                    timeout = min(timeout, max_wait)
                for fd, mask in poll(max(0.0, timeout)):
                    handler = handlers.get(fd)
                    if handler is not None:  # not removed by an earlier handler
                        handler(mask)
                now = time.monotonic()
                deadline = next_timer()
                if deadline is not None and deadline <= now:
                    on_timer(now)
                if now >= next_housekeeping:
                    next_housekeeping = now + interval
                    housekeeping(now)
        finally:
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(-1)

    def close(self) -> None:
        self.handlers.clear()
        self.epoll.close()
        self._wake_r.close()
        self._wake_w.close()


class _Formatter(logging.Formatter):
    """wireguard-go's format: ``DEBUG: (wg0) 2006/01/02 15:04:05 message``."""

    def __init__(self, name: str) -> None:
        super().__init__(f"%(levelname)s: ({name}) %(asctime)s %(message)s", "%Y/%m/%d %H:%M:%S")


def setup_logging(
    name: str, default: str = "error", levels: Mapping[str, int] = loglevel.LEVELS
) -> None:
    """Log the ``wgref`` loggers to stdout (as wireguard-go does, in the foreground and once
    daemonised) at the level LOG_LEVEL names (:func:`wgref.loglevel.level_from_env`)."""
    level = loglevel.level_from_env(default, levels)
    root = logging.getLogger("wgref")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter(name))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
