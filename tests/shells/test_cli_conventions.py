"""The conventions users know from wg(8) and wireguard-go: LOG_LEVEL's values (a wrong one is
named), --help that mentions the environment, a wrong option named with the usage, the
world-accessible warning of `genkey > file`, --version; and the dependency split: the `wgref`
command needs only cryptography (decrypt says what to install for scapy)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wgref.cli import CAPTURE_EXTRA, WORLD_ACCESSIBLE
from wgref.loglevel import SILENT, level_from_env

REPO = Path(__file__).resolve().parents[2]


def wgref(*args: str, cwd: Path | None = None, umask: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`wgref ARGS` as a real process (this checkout's)."""
    argv = [sys.executable, "-m", "wgref.cli", *args]
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(argv, cwd=cwd, env=environ, text=True, capture_output=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("value", "level"), [
    ("verbose", logging.DEBUG), ("debug", logging.DEBUG), ("error", logging.ERROR),
    ("silent", SILENT), ("", logging.ERROR), ("VERBOSE", logging.DEBUG)])
def test_log_level_values_as_wireguard_go(value: str, level: int) -> None:
    err = io.StringIO()
    assert level_from_env("error", env={"LOG_LEVEL": value}, err=err) == level
    assert err.getvalue() == ""


def test_an_unknown_log_level_is_named_and_means_the_default() -> None:
    err = io.StringIO()
    assert level_from_env("error", env={"LOG_LEVEL": "info"}, err=err) == logging.ERROR
    assert err.getvalue() == ("wgref: warning: LOG_LEVEL=info is not one of verbose, debug, "
                              "error, silent; using error\n")


def test_the_interface_and_client_loggers_read_log_level(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from wgref.client.cli import setup_logging as client_logging
    from wgref.interface import setup_logging as interface_logging

    monkeypatch.setenv("LOG_LEVEL", "info")
    interface_logging("wg0")
    assert logging.getLogger("wgref").level == logging.ERROR
    assert "LOG_LEVEL=info is not one of" in capsys.readouterr().err
    client_logging("client")  # the client knows info (its default)
    assert logging.getLogger("wgref").level == logging.INFO
    monkeypatch.setenv("LOG_LEVEL", "loud")
    client_logging("client")
    assert logging.getLogger("wgref").level == logging.INFO
    assert "LOG_LEVEL=loud is not one of verbose, debug, error, silent, info; using info" in \
        capsys.readouterr().err


def test_help_mentions_the_environment_and_keylog() -> None:
    result = wgref("--help")
    assert result.returncode == 0
    for word in ("LOG_LEVEL", "verbose | error | silent", "WG_KEYLOG_FILE", "--keylog"):
        assert word in result.stdout, word


def test_an_unknown_option_is_named_with_the_usage() -> None:
    result = wgref("--bogus", "wg0")
    assert result.returncode == 2
    assert result.stderr.startswith("wgref: unknown option --bogus\n")
    assert "Usage: wgref [-f/--foreground] [--keylog PATH] INTERFACE-NAME" in result.stderr
    missing = wgref("wg0", "--keylog")
    assert missing.stderr.startswith("wgref: --keylog needs a PATH\n")
    two = wgref("wg0", "wg1")
    assert two.stderr.startswith("wgref: expected one INTERFACE-NAME, got wg0 wg1\n")
    nothing = wgref()
    assert nothing.returncode == 2
    assert nothing.stderr.startswith("wgref: give an INTERFACE-NAME or a command\nusage: wgref")
    extra = wgref("genkey", "now")
    assert extra.returncode == 1
    assert extra.stderr == "wgref genkey: unexpected argument now\nUsage: wgref genkey\n"


def test_version() -> None:
    from wgref import __version__

    result = wgref("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"wgref v{__version__}\n")


@pytest.mark.parametrize("command", ["genkey", "genpsk"])
def test_a_secret_to_a_world_accessible_file_warns_like_wg(command: str, tmp_path: Path) -> None:
    script = (f"umask {{mask}}; {sys.executable} -m wgref.cli {command} > {{name}}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for mask, name, warned in (("022", "open.key", True), ("077", "closed.key", False)):
        result = subprocess.run(["sh", "-c", script.format(mask=mask, name=name)],
                                cwd=tmp_path, env=env, text=True, capture_output=True,
                                timeout=60, check=False)
        assert result.returncode == 0
        assert result.stderr == (WORLD_ACCESSIBLE if warned else ""), mask
        assert len((tmp_path / name).read_text().strip()) == 44
    piped = wgref(command)  # a pipe is no file: no warning
    assert piped.stderr == "" and len(piped.stdout.strip()) == 44


BLOCKED = ("scapy", "rich", "docker", "matplotlib")
WITHOUT_EXTRAS = textwrap.dedent(f"""\
    import sys

    class NotInstalled:  # the extras' packages, as if only cryptography were installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    import wgref.client.run, wgref.interface, wgref.device, wgref.tunnel  # noqa
    from wgref.cli import main
    sys.exit(main(sys.argv[1:]))
    """)


def test_wgref_needs_only_cryptography(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *args], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                              capture_output=True, timeout=60, check=False)

    key = run("genkey")
    assert key.returncode == 0, key.stderr
    assert len(key.stdout.strip()) == 44
    calc = run("allowed-ips", "--allowed", "0.0.0.0/0", "--disallowed", "10.0.0.0/8")
    assert calc.returncode == 0 and "0.0.0.0/5" in calc.stdout, calc.stderr
    decrypt = run("decrypt", str(REPO / "tests/data/captures/wireguard-ping-tcp.pcap"))
    assert decrypt.returncode == 1
    assert decrypt.stderr == f"{CAPTURE_EXTRA}\n"
