"""README.md's shell commands, as the docs tests read them: the fenced ``sh`` blocks, each
block's lines joined at backslash continuations, comments dropped, and each line cut into
simple commands at ``&&``, ``||``, ``;`` and ``|`` (a redirection and its target dropped)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SHELL_LANGS = ("sh", "bash", "shell", "console")
OPERATORS = ("&&", "||", ";", "|", "&")
REDIRECTS = (">", ">>", "<", "2>", "2>&1")

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    section: str  # the nearest heading above the block
    line: int  # README line of the opening fence
    text: str


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    source: str  # the README line it came from (joined), for messages
    line: int
    section: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.section}): {shlex.join(self.argv)}"


def shell_blocks(text: str | None = None) -> list[Block]:
    lines = (README.read_text() if text is None else text).splitlines()
    blocks, section, index = [], "", 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#") and not line.startswith("#!"):
            section = line.lstrip("#").strip()
        fence = _FENCE.match(line)
        if fence is None:
            index += 1
            continue
        body, start = [], index + 1
        index += 1
        while index < len(lines) and not _FENCE.match(lines[index]):
            body.append(lines[index][len(fence["indent"]):])
            index += 1
        index += 1
        if fence["lang"] in SHELL_LANGS:
            blocks.append(Block(section, start, "\n".join(body) + "\n"))
    return blocks


def section_block(section: str, text: str | None = None) -> Block:
    """The first shell block under the heading ``section``."""
    for block in shell_blocks(text):
        if block.section == section:
            return block
    raise LookupError(f"README.md has no shell block under '{section}'")


def commands(block: Block) -> list[Command]:
    out: list[Command] = []
    logical, first = "", 0
    for offset, raw in enumerate(block.text.splitlines()):
        if not logical:
            first = block.line + 1 + offset
        if raw.rstrip().endswith("\\") and not raw.lstrip().startswith("#"):
            logical += raw.rstrip()[:-1] + " "
            continue
        logical += raw
        out += _split(logical, first, block.section)
        logical = ""
    return out


def _split(line: str, number: int, section: str) -> list[Command]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    result: list[Command] = []
    current: list[str] = []
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in OPERATORS:
            if current:
                result.append(Command(tuple(current), line, number, section))
            current = []
        elif token in REDIRECTS:
            skip_next = True
        else:
            current.append(token)
    if current:
        result.append(Command(tuple(current), line, number, section))
    return result


def all_commands(text: str | None = None) -> list[Command]:
    return [c for block in shell_blocks(text) for c in commands(block)]
