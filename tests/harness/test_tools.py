"""harness.tools: the pinned peers built from crates and the Go proxy into a cache of ours, and
the drivers that run them (current wireguard-go, Debian's, boringtun-cli)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import tools
from harness.peers import uapi
from harness.peers.registry import all_drivers
from tests.harness.conftest import REPO, needs_tools


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.delenv("WGREF_TOOLS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tools.cache_root() == tmp_path / "xdg" / "wgref" / "tools"
    monkeypatch.setenv("WGREF_TOOLS_CACHE", str(tmp_path / "ours"))
    tool = tools.TOOLS["boringtun-cli"]
    assert tool.folder == tmp_path / "ours" / "boringtun-cli-0.7.1"
    assert tool.path == tmp_path / "ours" / "boringtun-cli-0.7.1" / "bin" / "boringtun-cli"
    assert tool.installed() is None
    assert "python -m harness tools install --only boringtun-cli" in tool.missing_reason()


def test_the_pins_and_how_they_are_built(tmp_path: Path) -> None:
    bt, go = tools.TOOLS["boringtun-cli"], tools.TOOLS["wireguard-go"]
    assert bt.install_argv(tmp_path) == ["cargo", "install", "--locked", "--version", "0.7.1",
                                         "--root", str(tmp_path), "boringtun-cli"]
    assert go.version.startswith("v0.0.0-2026")  # a recent pseudo-version, not a branch
    assert go.install_argv(tmp_path) == ["go", "install",
                                         f"golang.zx2c4.com/wireguard@{go.version}"]
    assert go.install_env(tmp_path)["GOBIN"] == str(tmp_path / "bin")
    assert go.built_as == "wireguard" and go.path.name == "wireguard-go"


def test_install_without_the_builder_says_so(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("WGREF_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cargo/bin/cargo either
    monkeypatch.setattr(tools, "BUILDER_HOMES", {"cargo": ("~/.cargo/bin",)})
    with pytest.raises(tools.ToolError, match=r"boringtun-cli: `cargo` is not installed "
                       r"\(needed to build boringtun-cli 0.7.1 \(crates.io\)\)"):
        tools.install(tools.TOOLS["boringtun-cli"])
    assert not tools.TOOLS["boringtun-cli"].folder.exists()


@pytest.mark.skipif(shutil.which("go") is None, reason="needs go")
def test_a_failed_build_leaves_no_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An unknown version with the proxy switched off: the error names the command and what
    go said, and no NAME-VERSION folder appears (only the .partial one)."""
    monkeypatch.setenv("WGREF_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GOPROXY", "off")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "mod"))
    bogus = tools.Tool("wireguard-go", "v0.0.0-20000101000000-000000000000", "go",
                       "golang.zx2c4.com/wireguard", "wireguard")
    with pytest.raises(tools.ToolError) as info:
        tools.install(bogus)
    message = str(info.value)
    assert "install golang.zx2c4.com/wireguard@v0.0.0-20000101000000-000000000000` " \
           "exited 1" in message
    assert "GOPROXY=off" in message
    assert not bogus.folder.exists() and bogus.installed() is None


@needs_tools("boringtun-cli", "wireguard-go")
@pytest.mark.parametrize(("name", "version"), [("boringtun-cli", "boringtun 0.7.1"),
                                               ("wireguard-go", "wireguard-go v0.0.2025")])
def test_a_warm_install_reuses_the_cache(name: str, version: str) -> None:
    installed = tools.install(tools.TOOLS[name])  # built by the session fixture when missing
    again = tools.install(tools.TOOLS[name])
    assert not again.built and again.path == installed.path == tools.TOOLS[name].path
    assert again.version_line.startswith(version)
    assert "cached (warm)" in again.describe()
    if installed.built or tools.build_info(tools.TOOLS[name]):
        assert tools.build_info(tools.TOOLS[name])["version"] == tools.TOOLS[name].version


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO, check=False)


def test_cli_rejects_an_unknown_tool() -> None:
    result = _harness("harness.tools", "install", "--only", "wireguard-nt")
    assert result.returncode != 0
    assert "unknown tool wireguard-nt (known: boringtun-cli, wireguard-go)" in result.stderr


@needs_tools("wireguard-go")
def test_cli_path_and_list() -> None:
    tools.install(tools.TOOLS["wireguard-go"])
    result = _harness("harness", "tools", "path", "wireguard-go")
    assert result.returncode == 0 and result.stdout.strip() == str(tools.TOOLS["wireguard-go"].path)
    listing = _harness("harness", "tools", "list").stdout
    assert "golang.zx2c4.com/wireguard@v0.0.0-2026" in listing and "boringtun-cli 0.7.1" in listing


def test_the_distribution_wireguard_go_is_never_our_build(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("WGREF_TOOLS_CACHE", str(cache))
    ours = tools.TOOLS["wireguard-go"].path
    distro = tmp_path / "usr-bin" / "wireguard-go"
    for program in (ours, distro):
        program.parent.mkdir(parents=True)
        program.write_text("#!/bin/sh\necho wireguard-go v0\n")
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{ours.parent}{os.pathsep}{distro.parent}")
    assert uapi.wireguard_go_debian().unavailable() is None
    assert uapi.distribution_wireguard_go() == [str(distro)]
    assert uapi.pinned(tools.TOOLS["wireguard-go"])() == [str(ours)]
    monkeypatch.setenv("PATH", str(ours.parent))
    assert uapi.wireguard_go_debian().unavailable() == (
        "the distribution's wireguard-go is not installed (apt-get install wireguard-go)")


def test_registry_names_both_wireguard_go_builds_and_boringtun() -> None:
    drivers = {d.name: d for d in all_drivers()}
    assert {"wireguard-go", "wireguard-go-debian", "boringtun-cli"} <= set(drivers)
    bt = drivers["boringtun-cli"]
    assert "wire-counters" not in bt.capabilities
    assert bt.missing({"wire-counters"}) == [
        "boringtun-cli lacks wire-counters (its UAPI rx_bytes/tx_bytes count the inner IP "
        "packets only (boringtun 0.7.1 noise/mod.rs adds the decrypted packet's length), so a "
        "keepalive moves neither counter)"]
    assert "wire-counters" in drivers["wireguard-go"].capabilities
    assert {"peer-update", "passive-keepalive"} & bt.capabilities == set()
    assert "Modifying existing peers is not yet supported" in bt.limitations["peer-update"]
    assert uapi.boringtun_log_env("debug") == {"WG_LOG_LEVEL": "debug", "NO_COLOR": "1"}
    assert uapi.boringtun_log_env("silent")["WG_LOG_LEVEL"] == "error"


@needs_tools("boringtun-cli", "wireguard-go")
@pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs Debian's wireguard-go")
def test_harness_list_shows_the_three_with_versions() -> None:
    for name in ("boringtun-cli", "wireguard-go"):
        tools.install(tools.TOOLS[name])
    lines = _harness("harness", "list").stdout.splitlines()

    def entry(name: str) -> tuple[str, str]:
        index = next(i for i, ln in enumerate(lines) if ln.split()[:1] == [name])
        return lines[index], lines[index + 1].strip()

    for name, version in (("wireguard-go", "wireguard-go v0.0.2025"),
                          ("wireguard-go-debian", "wireguard-go v0.0.2022"),
                          ("boringtun-cli", "boringtun 0.7.1")):
        state, shown = entry(name)
        assert state.endswith("available") and "unavailable" not in state, state
        assert shown.startswith(version), shown
    assert "(golang.zx2c4.com/wireguard@v0.0.0-2026" in entry("wireguard-go")[1]


def test_the_builder_is_found_where_rustup_puts_it(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    cargo = tmp_path / "home" / ".cargo" / "bin" / "cargo"
    cargo.parent.mkdir(parents=True)
    cargo.write_text("#!/bin/sh\nexit 0\n")
    cargo.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tools.builder_path("cargo") == str(cargo)
    assert tools.builder_path("rustc") is None
