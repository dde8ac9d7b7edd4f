"""quic-interop-runner's convention for config-file clients: an `up` command exiting 127
means "unsupported", and the cell shows unsupported with the line the command printed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.keys import keypair
from harness.peers.base import DriverError, InterfaceConfig, Unsupported
from harness.peers.conffile import ConfFileDriver
from harness.topology import Host

REASON = "this client has no IPv6 outer support"
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _driver(script: str) -> ConfFileDriver:
    return ConfFileDriver({"name": "scripted", "up": ["sh", "-c", script],
                           "capabilities": ["initiator"]}, Path("scripted.toml"))


def _config() -> InterfaceConfig:
    return InterfaceConfig("whtest0", keypair().private, ("198.19.77.2/32",))


def _local_host() -> Host:
    """The root namespace (ns ""): the start script runs as a real process, no root needed."""
    return Host("client", "", 1, "unused", "unused")


def test_exit_127_is_unsupported_with_the_scripts_reason(tmp_path: Path) -> None:
    driver = _driver(f"echo starting; echo '{REASON}' >&2; exit 127")
    with pytest.raises(Unsupported) as caught:
        driver.start(_local_host(), _config(), tmp_path)
    assert str(caught.value).startswith(f"scripted: {REASON} (")
    assert "exited 127: unsupported" in str(caught.value)
    log = (tmp_path / "client-scripted.log").read_text()
    assert "-> 127" in log and REASON in log


def test_exit_127_without_a_word_still_says_unsupported(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="scripted: no reason given"):
        _driver("exit 127").start(_local_host(), _config(), tmp_path)


def test_another_failure_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="exited 3: broken"):
        _driver("echo broken >&2; exit 3").start(_local_host(), _config(), tmp_path)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("ip", "nft", "wg", "wireguard-go")),
                    reason="needs ip, nft, wg, wireguard-go")
def test_the_cell_shows_unsupported_with_the_reason(tmp_path: Path) -> None:
    from harness.peers.uapi import wireguard_go
    from harness.results import CellResult, StepResult
    from harness.runner import Cell, CellRunner
    from harness.scenario import load_scenario

    class Quiet:
        def cell_started(self, cell: CellResult) -> None: ...
        def step_done(self, cell: CellResult, step: StepResult) -> None: ...
        def cell_done(self, cell: CellResult) -> None: ...

    cell = Cell(_driver(f"echo '{REASON}'; exit 127"), wireguard_go(),
                load_scenario(SCENARIOS / "handshake.toml"))
    result = CellRunner(cell, tmp_path, Quiet()).run()
    assert result.status == "unsupported"
    assert result.reason.startswith(f"scripted: {REASON}")
