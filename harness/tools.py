"""Peer programs the harness builds itself, pinned and cached: boringtun-cli from crates
(`cargo install`) and current wireguard-go from its Go module (`go install`).

Each tool lives in ``~/.cache/wgref/tools/NAME-VERSION/bin/`` (``$WGREF_TOOLS_CACHE`` or
``$XDG_CACHE_HOME/wgref/tools`` move it), so CI and the README's setup build it once per
machine and reuse it afterwards:

    python -m harness tools install [--only boringtun-cli] [--force]
    python -m harness tools list
    python -m harness tools path wireguard-go
    python3 -m harness.tools install        (the same, standard library only: for .ci/run)

A build goes into ``NAME-VERSION.partial/`` and is renamed into place when it succeeded, under
a lock file, so an interrupted or concurrent install never leaves a half-built tool in use.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Where rustup and the go.dev tarball put the builders when a shell's PATH lacks them.
BUILDER_HOMES = {"cargo": ("~/.cargo/bin",), "go": ("/usr/local/go/bin", "~/go/bin")}
INSTALL_TIMEOUT = 1800.0  # a cold cargo build of boringtun-cli takes ~3 min on 2 cores
STAMP = "installed.json"


def cache_root() -> Path:
    """Where the tools are cached (one folder per NAME-VERSION)."""
    override = os.environ.get("WGREF_TOOLS_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "wgref" / "tools"


@dataclass(frozen=True, slots=True)
class Tool:
    """A pinned program built from a registry with its language's installer."""

    name: str  # the peer name and the installed executable's name
    version: str  # what we pin: a crate version or a Go module version
    builder: str  # "cargo" or "go"
    package: str  # the crate or the Go package path
    built_as: str  # the executable the builder writes (go names it after the package)
    note: str = ""

    @property
    def folder(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def path(self) -> Path:
        return self.folder / "bin" / self.name

    @property
    def spec(self) -> str:
        return (f"{self.package}@{self.version}" if self.builder == "go"
                else f"{self.package} {self.version} (crates.io)")

    def installed(self) -> Path | None:
        """The executable when this pinned version is installed, else None."""
        path = self.path
        return path if path.is_file() and os.access(path, os.X_OK) else None

    def install_argv(self, root: Path) -> list[str]:
        if self.builder == "cargo":
            return ["cargo", "install", "--locked", "--version", self.version, "--root",
                    str(root), self.package]
        return ["go", "install", f"{self.package}@{self.version}"]

    def install_env(self, root: Path) -> dict[str, str]:
        env = dict(os.environ)
        if self.builder == "go":
            env["GOBIN"] = str(root / "bin")
        return env

    def missing_reason(self) -> str:
        return (f"{self.name} {self.version} is not built (python -m harness tools install "
                f"--only {self.name}; it goes to {self.folder})")


TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("boringtun-cli", "0.7.1", "cargo", "boringtun-cli", "boringtun-cli",
         "Cloudflare's BoringTun, the userspace engine of the BoringTun-based clients"),
    Tool("wireguard-go", "v0.0.0-20260522210424-ecfc5a8d5446", "go",
         "golang.zx2c4.com/wireguard", "wireguard",
         "current wireguard-go (TUN/UDP offloads, batched syscalls)"),
)}


class ToolError(RuntimeError):
    """A tool could not be built; the message names the command and its output's tail."""


@dataclass(frozen=True, slots=True)
class Installed:
    tool: Tool
    path: Path
    seconds: float
    built: bool  # False when the cache already had it (a warm install)
    version_line: str

    def describe(self) -> str:
        how = "built (cold)" if self.built else "cached (warm)"
        return (f"{self.tool.name} {self.tool.version}: {how} in {self.seconds:.1f} s, "
                f"{self.version_line} at {self.path}")


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def builder_path(builder: str) -> str | None:
    """``cargo``/``go`` on PATH, else where its usual installer puts it."""
    found = shutil.which(builder)
    if found:
        return found
    for home in BUILDER_HOMES.get(builder, ()):
        candidate = Path(home).expanduser() / builder
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def version_line(path: Path) -> str:
    """The first line `PROGRAM --version` prints (``boringtun-cli 0.7.1``)."""
    try:
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def install(tool: Tool, *, force: bool = False, log: Path | None = None) -> Installed:
    """Build ``tool`` into its cache folder unless it is there; raise ToolError on failure."""
    started = time.monotonic()
    with _locked(cache_root(), tool.name):
        path = tool.installed()
        if path is not None and not force:
            return Installed(tool, path, time.monotonic() - started, False, version_line(path))
        builder = builder_path(tool.builder)
        if builder is None:
            raise ToolError(f"{tool.name}: `{tool.builder}` is not installed (needed to build "
                            f"{tool.spec})")
        partial = tool.folder.with_name(tool.folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "bin").mkdir(parents=True)
        argv = [builder, *tool.install_argv(partial)[1:]]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=INSTALL_TIMEOUT, env=tool.install_env(partial),
                                  cwd=partial)
        except subprocess.TimeoutExpired as exc:
            raise ToolError(f"{tool.name}: `{' '.join(argv)}` took over "
                            f"{INSTALL_TIMEOUT:g} s") from exc
        output = proc.stdout + proc.stderr
        if log is not None:
            log.write_text(output)
        if proc.returncode != 0:
            raise ToolError(f"{tool.name}: `{' '.join(argv)}` exited {proc.returncode}: "
                            f"{output.strip()[-800:]}")
        built = partial / "bin" / tool.built_as
        if not built.is_file():
            raise ToolError(f"{tool.name}: `{' '.join(argv)}` wrote no bin/{tool.built_as}")
        if tool.built_as != tool.name:
            built.rename(partial / "bin" / tool.name)
        seconds = time.monotonic() - started
        line = version_line(partial / "bin" / tool.name)
        (partial / STAMP).write_text(json.dumps({
            "name": tool.name, "version": tool.version, "spec": tool.spec,
            "command": argv, "seconds": round(seconds, 1), "version_line": line,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2) + "\n")
        shutil.rmtree(tool.folder, ignore_errors=True)
        partial.rename(tool.folder)
        return Installed(tool, tool.path, seconds, True, line)


def build_info(tool: Tool) -> dict[str, object]:
    """What the install recorded (build time, command), or {} for a tool not built by us."""
    try:
        data = json.loads((tool.folder / STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- python -m harness tools ------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tools_command", required=True)
    inst = sub.add_parser("install", help="build the pinned peers that are not cached yet")
    inst.add_argument("--only", action="append", default=[],
                      help=f"tool(s) to install (default: all: {', '.join(TOOLS)})")
    inst.add_argument("--force", action="store_true", help="rebuild even when cached")
    sub.add_parser("list", help="the pinned tools, their cache folders and whether built")
    path = sub.add_parser("path", help="print a tool's executable (exit 1 when not built)")
    path.add_argument("name", choices=sorted(TOOLS))


def _selected(values: list[str]) -> list[Tool]:
    names = [n for value in values for n in value.split(",") if n]
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise SystemExit(f"error: unknown tool {', '.join(unknown)} "
                         f"(known: {', '.join(TOOLS)})")
    return [TOOLS[n] for n in names] if names else list(TOOLS.values())


def cmd_tools(args: argparse.Namespace) -> int:
    if args.tools_command == "path":
        found = TOOLS[args.name].installed()
        if found is None:
            print(TOOLS[args.name].missing_reason())
            return 1
        print(found)
        return 0
    if args.tools_command == "list":
        for tool in TOOLS.values():
            found = tool.installed()
            state = version_line(found) if found else "not built"
            print(f"  {tool.name:<15} {tool.spec:<62} {state}")
            print(f"  {'':<15} {tool.folder}")
        return 0
    failed = 0
    started = time.monotonic()
    for tool in _selected(args.only):
        print(f"{tool.name}: {tool.spec} -> {tool.folder}", flush=True)
        try:
            print(install(tool, force=args.force).describe(), flush=True)
        except ToolError as exc:
            print(f"error: {exc}", flush=True)
            failed += 1
    print(f"tools: done in {time.monotonic() - started:.1f} s"
          + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tools",
                                     description="pinned peers built from their registries")
    add_arguments(parser)
    return cmd_tools(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
