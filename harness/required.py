"""Required cells (`harness run --required FILE`, `harness probe --required FILE`): the cells
whose failure fails the run, while other failures only report (as the interop runner's
required list does, so a flaky optional peer blocks no one).

The file has one cell pattern a line, ``CLIENT SERVER SCENARIO``; ``*`` matches anything,
``#`` starts a comment. A required cell fails the run when it fails, errors, or is
*unsupported* (a required peer that stopped working turns CI red instead of grey). Peers a
required line names are never left out by ``--skip-unavailable``.

    # .ci/required.txt
    wgref wireguard-go *
    kernel-vm wgref handshake
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from .results import FAILING, UNSUPPORTED, CellResult


class RequiredError(ValueError):
    """The required list cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Pattern:
    client: str
    server: str
    scenario: str
    where: str  # FILE:LINE

    def matches(self, cell: CellResult) -> bool:
        return (fnmatchcase(cell.client, self.client) and fnmatchcase(cell.server, self.server)
                and fnmatchcase(cell.scenario, self.scenario))

    def names(self, peer: str) -> bool:
        """True when this line names ``peer`` as its client or server (not by wildcard)."""
        return peer in (self.client, self.server)

    def __str__(self) -> str:
        return f"{self.client} {self.server} {self.scenario}"


def load(path: Path) -> list[Pattern]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RequiredError(f"{path}: cannot read the required list: {exc.strerror}") from None
    patterns = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3:
            raise RequiredError(f"{path}:{number}: expected CLIENT SERVER SCENARIO "
                                f"(use * for any), got {line!r}")
        client, server, scenario = fields
        patterns.append(Pattern(client, server, scenario, f"{path}:{number}"))
    if not patterns:
        raise RequiredError(f"{path}: no required cells (one CLIENT SERVER SCENARIO a line)")
    return patterns


def named_peers(patterns: list[Pattern]) -> set[str]:
    return {name for p in patterns for name in (p.client, p.server) if "*" not in name}


def failures(patterns: list[Pattern], cells: list[CellResult]) -> list[str]:
    """One line for each required cell that failed, errored or was unsupported."""
    out = []
    for cell in cells:
        if cell.status not in (*FAILING, UNSUPPORTED):
            continue
        rule = next((p for p in patterns if p.matches(cell)), None)
        if rule is not None:
            out.append(f"required cell {cell.key} is {cell.status} ({rule.where}: {rule}): "
                       f"{cell.reason}")
    return out


def unmatched(patterns: list[Pattern], cells: list[CellResult]) -> list[Pattern]:
    """Lines that match no cell of this run (another job runs them, or a typo)."""
    return [p for p in patterns if not any(p.matches(c) for c in cells)]
