"""What the Docker tests share: an engine for the test module (the running one, else one they
start and stop, restoring the host's settings), the images they need, and a loopback TCP way
to that engine (to drive it as a remote engine is driven: DOCKER_HOST=tcp://...)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from typing import Any

from harness.docker import client as docker_client
from harness.docker import engine, labels
from tests.ci import skip_or_fail

TCP_ADDRESS = "127.0.0.1:23750"  # where the engine these tests start also listens


def why_not() -> str | None:
    """None when a Docker engine answers or can be started here, else why not."""
    if os.geteuid() != 0:
        return "needs root (a Docker engine, containers)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the Docker SDK is not installed (pip install docker)"
    if engine.api_answers():
        return None
    if shutil.which("dockerd") is None or shutil.which("containerd") is None:
        return "no Docker engine answers and docker.io is not installed to start one"
    return None


@contextlib.contextmanager
def engine_for_tests(*, tcp: str | None = None) -> Iterator[engine.HostState | None]:
    """The running engine, or one started for the block (with ``tcp``: also listening there)
    and stopped after it, the host's settings checked to be back as they were."""
    reason = why_not()
    if reason:
        skip_or_fail(reason)
    before = engine.read_sysctls()
    started = None
    if not engine.api_answers():
        try:
            started = engine.start(say=False, tcp=tcp)
        except engine.EngineError as exc:
            skip_or_fail(f"cannot start the Docker engine here: {exc}")
    docker_client.reset()
    try:
        yield started
    finally:
        docker_client.reset()
        if started is not None:
            problems = engine.stop(say=False)
            assert problems == []
            assert engine.read_sysctls() == before


def ensure_images(client: Any, names: list[str]) -> None:
    """Build the images of ``names`` that the engine lacks (skip, or fail under CI, when
    that is impossible)."""
    import docker
    from harness.docker.images import ImageError, build_all

    missing = []
    for name in names:
        try:
            client.images.get(labels.image_tag(name))
        except docker.errors.ImageNotFound:
            missing.append(name)
    if missing:
        try:
            build_all(client, missing, say=lambda line: None)
        except ImageError as exc:
            skip_or_fail(f"cannot build the images {missing}: {exc}")


def tcp_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0) as sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(4096).split(b"\r\n", 1)[0]
    except OSError:
        return False


@contextlib.contextmanager
def tcp_to_engine() -> Iterator[str]:
    """``tcp://HOST:PORT`` reaching the engine: the listener of an engine started with
    ``--tcp`` (engine_for_tests(tcp=TCP_ADDRESS)), else, for an engine someone else started
    on its UNIX socket only, a loopback relay to that socket for the block."""
    if tcp_answers(TCP_ADDRESS):
        yield f"tcp://{TCP_ADDRESS}"
        return
    opened: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        stop = threading.Event()
        thread = threading.Thread(target=_relay, args=(server, stop, opened), daemon=True)
        thread.start()
        try:
            yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
        finally:
            stop.set()
            with contextlib.suppress(OSError), socket.create_connection(
                    server.getsockname(), timeout=1.0):
                pass  # wakes accept()
            thread.join(5.0)
            for sock in opened:
                sock.close()


def _relay(server: socket.socket, stop: threading.Event, opened: list[socket.socket]) -> None:
    while not stop.is_set():
        client, _ = server.accept()
        opened.append(client)
        if stop.is_set():
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        opened.append(upstream)
        upstream.connect(engine.DOCKER_SOCKET)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
