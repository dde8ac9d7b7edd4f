"""Docker leftovers of killed runs: containers and networks labelled with a run prefix."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import labels

DOCKER_SOCKET = Path("/var/run/docker.sock")


def find(ours: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """(kind, name, prefix) of harness containers and networks whose prefix ``ours`` accepts;
    empty when no engine answers (nothing to clean then)."""
    if not DOCKER_SOCKET.exists() and "DOCKER_HOST" not in os.environ:
        return []
    try:
        from .client import DockerUnavailable, connect

        client = connect()
    except (DockerUnavailable, ImportError):
        return []
    api = client.api
    found: list[tuple[str, str, str]] = []
    filters = {"label": labels.RUN_LABEL}
    for container in api.containers(all=True, filters=filters):
        name = container["Names"][0].lstrip("/")
        prefix = labels.prefix_of(container.get("Labels"), name)
        if prefix and ours(prefix):
            found.append(("container", name, prefix))
    for network in api.networks(filters=filters):
        prefix = labels.prefix_of(network.get("Labels"), network["Name"])
        if prefix and ours(prefix):
            found.append(("network", network["Name"], prefix))
    return found


def remove(found: list[tuple[str, str, str]]) -> list[str]:
    from .client import connect
    from .topology import remove_resources

    if not found:
        return []
    client = connect()
    problems: list[str] = []
    for prefix in sorted({p for _, _, p in found}):
        problems += remove_resources(
            client, prefix, [n for k, n, p in found if k == "container" and p == prefix],
            [n for k, n, p in found if k == "network" and p == prefix])
    return problems
