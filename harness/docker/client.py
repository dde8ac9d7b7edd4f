"""The Docker SDK client, with a readable reason when there is no engine."""

from __future__ import annotations

import os
from typing import Any

CLIENT_TIMEOUT = 120


class DockerUnavailable(RuntimeError):
    """No Docker SDK or no engine answering."""


_client: Any = None


def connect() -> Any:
    """A docker.DockerClient (cached); raises DockerUnavailable with the reason."""
    global _client
    if _client is not None:
        return _client
    try:
        import docker
    except ImportError as exc:
        raise DockerUnavailable("the Docker SDK is not installed (pip install docker)") from exc
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
