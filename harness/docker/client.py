"""The Docker SDK client, with a readable reason when there is no engine.

The engine is the one the Docker CLI would use: ``DOCKER_HOST`` (``unix://``, ``tcp://`` with
``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``, or ``ssh://user@host`` through the machine's ssh
client), else ``/var/run/docker.sock``. The Docker backend needs nothing but that engine's API
(commands through its exec API, files through its archive API), so the engine may run on
another machine (docker/README.md, "Which engine").
"""

from __future__ import annotations

import os
import types
from typing import Any

CLIENT_TIMEOUT = 120
MAX_POOL_SIZE = 64
SDK_MISSING = ("the Docker SDK is not installed: pip install 'wgref[harness]' "
               "(or pip install docker)")


class DockerUnavailable(RuntimeError):
    """No Docker SDK or no engine answering."""


_client: Any = None


def sdk() -> types.ModuleType:
    """The Docker SDK module (``docker``), or DockerUnavailable saying what to install.

    Run from the repository's root without the SDK, ``import docker`` finds the repository's
    own ``docker/`` folder (the peer images) as a namespace package: no ``__file__``, no
    ``DockerClient`` — that is the SDK missing too, not an AttributeError later on."""
    try:
        import docker
    except ImportError as exc:
        raise DockerUnavailable(SDK_MISSING) from exc
    if getattr(docker, "__file__", None) is None or not hasattr(docker, "DockerClient"):
        raise DockerUnavailable(SDK_MISSING)
    import docker.errors
    import docker.types

    return docker


def engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def make_client(timeout: int = CLIENT_TIMEOUT) -> Any:
    """A docker.DockerClient for the configured engine (not cached, not pinged)."""
    docker = sdk()
    # from_env reads DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH; ssh:// goes through
    # the ssh binary (the user's keys and ~/.ssh/config), no paramiko needed
    # each running program holds a connection for its output stream (a cell: peers, echo
    # servers, captures; --jobs cells at once)
    return docker.from_env(timeout=timeout, version="auto", max_pool_size=MAX_POOL_SIZE,
                           use_ssh_client=engine_url().startswith("ssh://"))


def connect() -> Any:
    """A docker.DockerClient (cached); raises DockerUnavailable with the reason."""
    global _client
    if _client is not None:
        return _client
    sdk()  # installed, or DockerUnavailable saying what to install
    try:
        client = make_client()
        client.ping()
    except Exception as exc:
        raise DockerUnavailable(
            f"no Docker engine answers at {engine_url()} "
            f"({(str(exc).splitlines() or [''])[0][:160]}); start one (`python -m "
            "harness.docker.engine start` as root) or set DOCKER_HOST") from None
    _client = client
    return client


def reset() -> None:
    global _client
    _client = None
