"""Every command in README.md's shell blocks, checked against the CLI it names, so a README
that drifts from the code fails CI:

* ``python -m MODULE ARGS`` and ``wgref SUBCOMMAND ARGS`` — the real argument parser is run on
  ARGS (in-process, stopped right after parsing): a removed option, a wrong value or a flag
  given a value fails with argparse's own message;
* cheap commands (``wgref genkey | … pubkey``, ``wgref allowed-ips …``) run as written;
* ``nox -s NAME [-- ARGS]`` — NAME is a session of noxfile.py and ARGS parse as that session's
  ``python -m harness`` command;
* each distinct CLI's ``--help`` form runs in a subprocess;
* other programs (wg, ip, iperf3, ...) must be installed (CI installs them; elsewhere the
  case skips with the reason).

The Install block is run by test_install.py.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.docs.readme import REPO, Command, all_commands, section_block

INSTALL = "Install"
COMMANDS = [c for c in all_commands() if c.section != INSTALL]
WGREF_PARSED = ("decrypt", "client", "allowed-ips")  # argparse subcommands
WGREF_RUN = ("genkey", "pubkey", "genpsk", "allowed-ips", "--version", "--help")
NOX_SESSION_COMMANDS = {"interop": ["run"], "bench": ["bench"]}  # posargs go to these


def _module_main(module: str) -> Callable[[list[str]], Any]:
    """The main(argv) behind ``python -m MODULE``."""
    if module == "harness":
        from harness.cli import main
    elif module == "harness.kernelvm":
        from harness.kernelvm.__main__ import main
    elif module == "harness.docker.engine":
        from harness.docker.engine import main
    elif module in ("wgref", "wgref.cli"):
        from wgref.cli import main
    else:
        pytest.fail(f"README runs `python -m {module}`: teach tests/docs what its main is")
    return main


class _Parsed(Exception):
    """Raised in place of running the command once its arguments parsed."""


def assert_parses(main: Callable[[list[str]], Any], argv: list[str], cmd: Command) -> None:
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None,
                        namespace: Any = None) -> argparse.Namespace:
        raise _Parsed(original(self, args, namespace))

    err = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except _Parsed:
            return
        except SystemExit as exc:
            pytest.fail(f"{cmd}\n  does not parse (exit {exc.code}): {err.getvalue().strip()}")
    pytest.fail(f"{cmd}\n  ran without parsing its arguments with argparse")


def noxfile_sessions() -> tuple[set[str], list[str]]:
    """Session names of noxfile.py and its default sessions, read without importing nox
    (the test environment need not have it)."""
    tree = ast.parse((REPO / "noxfile.py").read_text())
    sessions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                and any("session" in ast.unparse(d) for d in node.decorator_list)}
    defaults: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == \
                "nox.options.sessions":
            defaults = list(ast.literal_eval(node.value))
    return sessions, defaults


def _bash_with_repo_cli(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a README line in bash, `wgref` and `python` being this checkout's."""
    py = shlex.quote(sys.executable)
    prelude = (f'wgref() {{ {py} -m wgref.cli "$@"; }}\n'
               f'python() {{ {py} "$@"; }}\nset -eo pipefail\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", "-c", prelude + line], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def check_wgref(cmd: Command, tmp_path: Path) -> None:
    args = list(cmd.argv[1:])
    if args and args[0] in WGREF_RUN:
        result = _bash_with_repo_cli(cmd.source, tmp_path)
        assert result.returncode == 0, f"{cmd}\n  failed: {result.stderr.strip()}"
        assert result.stdout or any(tmp_path.iterdir()), f"{cmd}\n  printed nothing"
        for written in tmp_path.glob("*.key"):
            assert len(written.read_text().strip()) == 44, f"{cmd}: {written.name} is no key"
        return
    if args and args[0] in WGREF_PARSED:
        from wgref.cli import main

        assert_parses(main, args, cmd)
        return
    from wgref.interface import Options, parse_args

    with contextlib.redirect_stderr(io.StringIO()) as err:
        options = parse_args(args)
    if not isinstance(options, Options):
        pytest.fail(f"{cmd}\n  does not parse: {err.getvalue().strip()}")


def check_nox(cmd: Command) -> None:
    sessions, defaults = noxfile_sessions()
    args = list(cmd.argv[1:])
    posargs = args[args.index("--") + 1:] if "--" in args else []
    options = args[:args.index("--")] if "--" in args else args
    named = [options[i + 1] for i, a in enumerate(options[:-1]) if a in ("-s", "--session")]
    for name in named or defaults:
        assert name in sessions, f"{cmd}\n  noxfile.py has no session {name}"
    if posargs:
        assert len(named) == 1 and named[0] in NOX_SESSION_COMMANDS, \
            f"{cmd}\n  arguments after -- for a session the test does not know"
        assert_parses(_module_main("harness"), [*NOX_SESSION_COMMANDS[named[0]], *posargs], cmd)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[f"L{c.line}-{'_'.join(c.argv[:3])}"
                                               for c in COMMANDS])
def test_readme_command(cmd: Command, tmp_path: Path) -> None:
    program, *args = cmd.argv
    if program in ("python", "python3") and args[:1] == ["-m"]:
        assert_parses(_module_main(args[1]), args[2:], cmd)
    elif program == "wgref":
        check_wgref(cmd, tmp_path)
    elif program == "nox":
        check_nox(cmd)
    elif shutil.which(program) is None:
        pytest.skip(f"{program} is not installed here (CI installs it): {cmd}")


def help_forms() -> list[list[str]]:
    """One ``--help`` command per distinct CLI (and subcommand) the README uses."""
    forms: list[list[str]] = []
    for cmd in COMMANDS:
        program, *args = cmd.argv
        if program in ("python", "python3") and args[:1] == ["-m"]:
            module, rest = args[1], args[2:]
            sub = rest[:1] if module in ("harness", "harness.kernelvm") and rest else []
            form = ["-m", module, *sub, "--help"]
        elif program == "wgref":
            sub = args[:1] if args and args[0] in WGREF_PARSED else []
            form = ["-m", "wgref.cli", *sub, "--help"]
        else:
            continue
        if form not in forms:
            forms.append(form)
    return forms


@pytest.mark.parametrize("form", help_forms(), ids=lambda f: " ".join(f[1:]))
def test_readme_cli_help(form: list[str]) -> None:
    result = subprocess.run([sys.executable, *form], cwd=REPO, text=True, capture_output=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
                            check=False)
    assert result.returncode == 0, f"python {' '.join(form)}: {result.stderr.strip()}"
    assert "usage" in result.stdout.lower()


def test_readme_has_an_install_block() -> None:
    block = section_block(INSTALL)
    assert "pip install" in block.text


def test_readme_parse_catches_drift() -> None:
    """The check itself: a flag given a value (the README's old `--merge results/interop`)
    and an unknown option fail with the parser's message."""
    bad = Command(("python", "-m", "harness", "probe", "--merge", "results/interop"), "", 0,
                  "test")
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: results/interop"):
        assert_parses(_module_main("harness"), list(bad.argv[3:]), bad)
    with pytest.raises(pytest.fail.Exception, match="unknown option --bogus"):
        check_wgref(Command(("wgref", "--bogus", "wg0"), "", 0, "test"), Path("."))
