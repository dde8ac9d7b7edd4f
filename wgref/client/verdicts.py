"""Queue verdicts written by a helper process, so that the work a verdict sets off in the
kernel is not done on the client's CPU.

A drop verdict frees the queued packet. For the host's own TCP that is what lets the sender
go on: the queued packet holds the socket's TCP Small Queues allowance (tcp_output.c:
``tcp_small_queue_check`` allows about two GSO packets not yet freed), and freeing it
(``tcp_wfree``) has the socket's next segments built, sent through IP and the output hooks and
queued again, in the context that freed it (the TSQ tasklet of that CPU). Sent by the client
itself, every verdict costs the client's one CPU that work. (wgref's TUN interface does not pay
it: ``tun_net_xmit`` orphans the packet, so the sender's own thread does it.) The helper is a
forked process that only copies verdict messages from a socketpair to the queue's netlink
socket, which the kernel takes as the client's own (the same socket, the same port id).
A thread would not do: it needs the GIL between its two system calls.

Measured on the 2-core bench machine (tcp-up, wireguard-go server, 3 interleaved runs of
3 x 4 s): the client went from 0.78-0.83x to 0.84-0.88x of wgref's TUN interface.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import signal
import socket

from .loopback import send_waiting

log = logging.getLogger("wgref.client")

SEND_WAIT = 1.0  # how long the client waits for room in the socketpair before it gives up
MESSAGE_MAX = 1 << 16  # one batch of verdict messages (NfQueue.flush sends 64 at most)


class VerdictWriter:
    """The helper for one queue's netlink socket; :meth:`send` hands it one datagram."""

    def __init__(self, netlink: socket.socket) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # SIGINT and SIGTERM wait (blocked) until the child has its own dispositions: one
        # that came before would meet the client's Python handler there, and be lost.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            parent.close()
            child.close()
            raise
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            _serve(child.fileno(), netlink.fileno(), mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.close()
        parent.setblocking(False)
        self.pid = pid
        self._sock: socket.socket | None = parent

    @property
    def alive(self) -> bool:
        return self._sock is not None

    def send(self, data: bytes) -> bool:
        """Hand ``data`` (netlink messages) to the helper. False, and the helper is gone for
        good, when it cannot take them: the caller sends them itself from then on."""
        sock = self._sock
        if sock is None:
            return False
        try:
            send_waiting(sock, lambda: sock.send(data), SEND_WAIT)
        except OSError as exc:
            # Verdicts still in the socketpair are lost with it; their packets go with the
            # client's next batch drop.
            log.warning("the verdict helper (pid %d) stopped taking verdicts (%s); the "
                        "client sends them itself from now on", self.pid, exc)
            self.close()
            return False
        return True

    def close(self) -> None:
        """Stop the helper: it exits when its end of the socketpair reads end-of-file."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        for _ in range(50):
            try:
                if os.waitpid(self.pid, os.WNOHANG) != (0, 0):
                    return
            except ChildProcessError:  # reaped already
                return
            _sleep(0.02)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def _sleep(seconds: float) -> None:
    select.select([], [], [], seconds)


def _serve(source: int, netlink: int,  # pragma: no cover - runs in the child
           mask: set[int | signal.Signals]) -> None:
    """The helper's whole life: copy each message from ``source`` to ``netlink`` until the
    client closes its end (or dies: kill -9 closes it too)."""
    status = 0
    try:
        # Ctrl-C reaches the whole process group: the client handles it and closes the
        # socketpair; SIGTERM ends the helper, and the client then sends verdicts itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        keep = {source, netlink, 2}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)
        # (``netlink`` stays non-blocking: its open file is the client's too)
        os.set_blocking(source, True)
        failures = 0
        while True:
            data = os.read(source, MESSAGE_MAX)
            if not data:
                break
            try:
                send_waiting(netlink, functools.partial(os.write, netlink, data), SEND_WAIT)
            except OSError as exc:
                failures += 1
                if failures & (failures - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...
                    os.write(2, f"wgref client: verdict helper: {exc} ({failures} so far)\n"
                             .encode())
    except BaseException:
        status = 1
    finally:
        os._exit(status)
