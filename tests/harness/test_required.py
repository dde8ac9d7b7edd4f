"""`--required FILE` and the exit code of `harness run`: a failed cell fails the run; with a
required list only required cells do, and a required cell that is unsupported (a peer that
stopped working) fails it too. Also the end-of-cell rule: a cell whose steps were all
skipped is unsupported, never pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import required
from harness.cli import exit_code, main
from harness.results import FAIL, PASS, SKIPPED, UNSUPPORTED, CellResult, StepResult
from harness.runner import end_of_cell
from harness.tools import TOOLS

REPO = Path(__file__).resolve().parents[2]


def cell(client: str, server: str, scenario: str, status: str) -> CellResult:
    return CellResult(client, server, scenario, status=status, reason=f"why {status}")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "required.txt"
    path.write_text(text)
    return path


def test_the_list_names_file_and_line_of_a_bad_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "# CI\nwgref wireguard-go *\nwgref kernel-vm\n")
    with pytest.raises(required.RequiredError, match=rf"^{path}:3: expected CLIENT SERVER "
                       r"SCENARIO \(use \* for any\), got 'wgref kernel-vm'$"):
        required.load(path)
    with pytest.raises(required.RequiredError, match=r"no required cells"):
        required.load(write(tmp_path, "# nothing\n\n"))
    with pytest.raises(required.RequiredError, match=rf"^{tmp_path / 'nope'}: cannot read"):
        required.load(tmp_path / "nope")


def test_bad_list_is_reported_before_the_run(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "wgref\n")
    with pytest.raises(SystemExit, match=rf"error: --required: {path}:1: expected"):
        main(["run", "--required", str(path)])


def test_exit_code_without_and_with_a_required_list(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rules = required.load(write(tmp_path, "wgref wireguard-go *  # the pair CI must keep\n"
                                          "probe wgref probe:*\n"))
    flaky = cell("boringtun-cli", "wireguard-go", "handshake", FAIL)
    grey = cell("wgref", "wireguard-go", "roaming", UNSUPPORTED)
    fine = cell("wgref", "wireguard-go", "handshake", PASS)
    assert exit_code([fine, flaky], None) == 1  # no list: any failure fails the run
    assert exit_code([fine, grey], None) == 0  # ... and unsupported does not
    assert exit_code([fine, flaky], rules) == 0  # outside the list: reported only
    out = capsys.readouterr()
    assert "1 failed cell(s) outside the required list (reported only)" in out.out
    assert "note: required probe wgref probe:* " in out.out  # matches no cell of this run
    assert exit_code([fine, grey], rules) == 1  # a required cell went grey
    err = capsys.readouterr().err
    assert "required cell wgref -> wireguard-go: roaming is unsupported" in err
    assert f"{tmp_path / 'required.txt'}:1: wgref wireguard-go *" in err


def test_a_cell_whose_steps_were_all_skipped_is_unsupported() -> None:
    skipped = [StepResult(1, "ping", "ping", SKIPPED, "skipped: x lacks icmp", 0.0),
               StepResult(2, "ping6", "ping", SKIPPED, "skipped: x lacks icmp", 0.0)]
    assert end_of_cell(skipped) == (UNSUPPORTED, "every step was skipped: x lacks icmp")
    ran = [StepResult(1, "tcp", "tcp", PASS, "ok", 0.1), skipped[0]]
    assert end_of_cell(ran) == (PASS, "skipped steps: ping")
    assert end_of_cell(ran[:1]) == (PASS, "")


NETNS_TOOLS = ("ip", "nft", "wg", "wireguard-go", "dumpcap", "ping")


def harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                          env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (harness run)")
def test_a_required_peer_made_unavailable_fails_the_run(tmp_path: Path) -> None:
    """The pinned wireguard-go taken away (an empty tools cache): its cells turn unsupported.
    Without a list the run still exits 0 (grey is not red); with wireguard-go required it
    exits 1 and says which cell."""
    rules = write(tmp_path, "wgref wireguard-go *\n")
    no_tools = {"WGREF_TOOLS_CACHE": str(tmp_path / "empty-tools-cache")}
    args = ["run", "--client", "wgref", "--server", "wireguard-go", "--scenario", "handshake",
            "--plain"]
    grey = harness(*args, "--out", str(tmp_path / "grey"), env=no_tools)
    assert grey.returncode == 0, grey.stdout + grey.stderr
    red = harness(*args, "--out", str(tmp_path / "red"), "--required", str(rules), env=no_tools)
    assert red.returncode == 1, red.stdout + red.stderr
    assert ("required cell wgref -> wireguard-go: handshake is unsupported "
            f"({rules}:1: wgref wireguard-go *): server wireguard-go: wireguard-go "
            f"{TOOLS['wireguard-go'].version} is not built") in red.stderr
    cells = json.loads((tmp_path / "red" / "results.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["unsupported"]


SHORT_TCP = """
name = "short-tcp"
description = "One TCP echo through the tunnel."
timeout = 30
[[steps]]
action = "tcp"
label = "tcp echo client -> server"
timeout = 4
"""


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (harness run)")
@pytest.mark.skipif(any(shutil.which(t) is None for t in NETNS_TOOLS),
                    reason=f"needs {', '.join(NETNS_TOOLS)}")
def test_a_failed_cell_fails_the_run_unless_it_is_outside_the_list(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "short-tcp.toml").write_text(SHORT_TCP)
    args = ["--scenarios-dir", str(scenarios), "run", "--client", "wireguard-go",
            "--server", "wgref-fault:deliver-nothing", "--plain"]
    failed = harness(*args, "--out", str(tmp_path / "a"))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    cells = json.loads((tmp_path / "a" / "results.json").read_text())["cells"]
    assert [(c["status"], c["reason"].split(":")[0]) for c in cells] == [
        ("fail", "step 1 (tcp echo client -> server)")]
    rules = write(tmp_path, "wgref wireguard-go *\n")
    reported = harness(*args, "--out", str(tmp_path / "b"), "--required", str(rules))
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert "1 failed cell(s) outside the required list (reported only)" in reported.stdout


def test_ci_requires_every_peer_it_runs() -> None:
    """.ci/run's pairs and probe servers are all named in .ci/required.txt, so a peer CI
    installs that stops working turns CI red, not grey."""
    import re

    rules = required.load(REPO / ".ci" / "required.txt")
    script = (REPO / ".ci" / "run").read_text()
    run_peers = {name for pairs in re.findall(r'for pair in ((?:"[^"]+" ?)+)', script)
                 for pair in re.findall(r'"([^"]+)"', pairs) for name in pair.split()}
    probe_servers = {name for servers in re.findall(r"nox -s probes -- --server (\S+)", script)
                     for name in servers.split(",")}
    assert run_peers >= {"wgref", "wireguard-go", "kernel-vm"}
    assert probe_servers >= {"wgref", "wireguard-go"}
    for client, server in (pair.split() for pairs in
                           re.findall(r'for pair in ((?:"[^"]+" ?)+)', script)
                           for pair in re.findall(r'"([^"]+)"', pairs)):
        assert any(r.matches(cell(client, server, "handshake", PASS)) for r in rules), \
            (client, server)
    for server in probe_servers:
        assert any(r.matches(cell("probe", server, "probe:bad-mac1", PASS)) for r in rules)
