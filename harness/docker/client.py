"""The Docker SDK client, with a readable reason when there is no engine."""

from __future__ import annotations

import os
import types
from typing import Any

CLIENT_TIMEOUT = 120
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


def connect() -> Any:
    """A docker.DockerClient (cached); raises DockerUnavailable with the reason."""
    global _client
    if _client is not None:
        return _client
    docker = sdk()
    try:
        client = docker.DockerClient(
            base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
            timeout=CLIENT_TIMEOUT, version="auto")
        client.ping()
    except Exception as exc:
        raise DockerUnavailable(
            f"no Docker engine answers ({str(exc).splitlines()[0][:160]}); start one "
            "(`python -m harness.docker.engine start` as root)") from None
    _client = client
    return client


def reset() -> None:
    global _client
    _client = None
