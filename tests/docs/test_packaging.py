"""pyproject.toml against the code: the library `wgref` depends on what wgref/ imports (only
cryptography, plus scapy in the `capture` extra for wgref.capture), and the `harness` extra
brings every third-party package harness/ imports, so the README's install works for every
`python -m harness` command."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"wgref", "harness", "tests"}
IMPORT_TO_DIST = {"docker": "docker"}  # import name -> distribution, where they differ
OPTIONAL = {"mitmproxy_wireguard", "wireguard_requests"}  # peers, probed at run time


def third_party_imports(folder: Path) -> dict[str, set[str]]:
    """{top-level module: files importing it} for non-stdlib, non-first-party imports."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY | OPTIONAL:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]


def test_the_library_needs_only_cryptography() -> None:
    assert _names(PROJECT["dependencies"]) == {"cryptography"}
    used = third_party_imports(REPO / "wgref")
    assert set(used) <= {"cryptography", "scapy", "numpy"}, used
    assert used.get("scapy", set()) <= {"wgref/capture.py"}, used["scapy"]
    assert "scapy" in _names(EXTRAS["capture"])
    # numpy only speeds up TSO splitting (the `fast` extra); wgref.offload imports it lazily
    assert used.get("numpy", set()) <= {"wgref/offload.py"}, used["numpy"]
    assert "numpy" in _names(EXTRAS["fast"])


def test_the_harness_extra_covers_what_the_harness_imports() -> None:
    used = {IMPORT_TO_DIST.get(m, m) for m in third_party_imports(REPO / "harness")}
    assert used - {"cryptography"} <= _names(EXTRAS["harness"]), used
    assert _names(EXTRAS["bench"]) <= _names(EXTRAS["harness"])
    assert any(r.startswith("wgref[") and "harness" in r[6:-1].split(",")
               for r in EXTRAS["test"]), EXTRAS["test"]
