"""Start and stop a Docker engine (containerd + dockerd) in the background, for CI and tests
on machines without systemd, and put the root namespace back as it was afterwards.

    python -m harness.docker.engine start    # records the host's state, starts, waits for the API
    python -m harness.docker.engine stop     # stops what `start` started, restores the state
    python -m harness.docker.engine status
    python -m harness.docker.engine start --tcp 127.0.0.1:23750   # also a TCP listener

Nothing is installed (Debian: ``apt-get install docker.io``). Starting dockerd changes the root
namespace and stopping it does not undo that: ip_forward 0 -> 1, the iptables FORWARD policy ->
DROP, DOCKER* chains, a MASQUERADE rule, docker0. ``start`` records ip(6) forwarding, the
bridge netfilter sysctls, every iptables/ip6tables rule, chain and policy and the list of links
in a state file; ``stop`` ends the two daemons it started (by pid) and removes every rule, chain
and link that appeared since, then restores the policies and sysctls. An engine that was
already answering is left alone by both.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = Path("/run/wgref-docker-engine")
STATE_FILE = STATE_DIR / "state.json"
LOG_DIR = Path("/var/log/wgref-docker-engine")
DOCKER_SOCKET = "/var/run/docker.sock"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/default/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
TABLES = ("filter", "nat", "mangle", "raw")
LINK_PREFIXES = ("docker", "br-", "veth")  # links dockerd makes that `stop` may delete


def tcp_listener(address: str) -> str:
    """``HOST:PORT`` as dockerd's ``--host tcp://HOST:PORT``; loopback only (an unauthenticated
    TCP API is root on this machine for whoever reaches it: a real remote engine wants TLS or
    ``ssh://``)."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not loopback:
        raise EngineError(f"--tcp {address}: want a loopback HOST:PORT such as 127.0.0.1:23750 "
                          "(an unauthenticated TCP API must not leave this machine)")
    return f"tcp://{address}"


class EngineError(RuntimeError):
    """The engine could not be started or stopped."""


@dataclass
class HostState:
    """What dockerd changes in the root namespace, as it was before it started."""

    sysctls: dict[str, str] = field(default_factory=dict)
    rules: dict[str, list[str]] = field(default_factory=dict)  # "iptables/nat": `-S` lines
    links: list[str] = field(default_factory=list)
    nft_tables: list[str] = field(default_factory=list)  # "ip filter", ...
    pids: dict[str, int] = field(default_factory=dict)  # what `start` started

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> HostState:
        data = json.loads(text)
        return cls(sysctls=dict(data.get("sysctls", {})),
                   rules={k: list(v) for k, v in data.get("rules", {}).items()},
                   links=list(data.get("links", [])),
                   nft_tables=list(data.get("nft_tables", [])), pids=dict(data.get("pids", {})))


def _cmd(argv: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def read_sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        path = Path("/proc/sys") / key
        with contextlib.suppress(OSError):
            out[key] = path.read_text().strip()
    return out


def read_rules() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for program in ("iptables", "ip6tables"):
        if shutil.which(program) is None:
            continue
        for table in TABLES:
            result = _cmd([program, "-w", "5", "-t", table, "-S"])
            if result.returncode == 0:
                out[f"{program}/{table}"] = result.stdout.splitlines()
    return out


def read_links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def read_nft_tables() -> list[str]:
    if shutil.which("nft") is None:
        return []
    result = _cmd(["nft", "list", "tables"])
    return [line.split(None, 1)[1] for line in result.stdout.splitlines()
            if line.startswith("table ")]


def snapshot() -> HostState:
    return HostState(read_sysctls(), read_rules(), read_links(), read_nft_tables())


def empty_new_tables(before: list[str], rules: dict[str, list[str]]) -> list[str]:
    """iptables-nft tables (``ip nat``...) that did not exist before and now hold nothing but
    ACCEPT policies: iptables created them on the way, deleting them finishes the undo."""
    out = []
    for key, lines in rules.items():
        program, table = key.split("/")
        family = "ip" if program == "iptables" else "ip6"
        name = f"{family} {table}"
        if name in before or not lines:
            continue
        if all(line.startswith("-P ") and line.endswith(" ACCEPT") for line in lines):
            out.append(name)
    return out


def undo_commands(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[list[str]]:
    """The iptables commands that turn the ``after`` rule sets back into ``before``: delete
    added rules (last first), flush and delete added chains, restore changed policies."""
    commands: list[list[str]] = []
    for key, now in after.items():
        program, table = key.split("/")
        old = before.get(key, [])
        old_set = set(old)
        base = [program, "-w", "5", "-t", table]
        for line in reversed(now):
            if line.startswith("-A ") and line not in old_set:
                commands.append([*base, "-D", *shlex.split(line)[1:]])
        old_chains = {ln.split()[1] for ln in old if ln.startswith(("-N ", "-P "))}
        for line in now:
            if line.startswith("-N ") and line.split()[1] not in old_chains:
                commands.append([*base, "-F", line.split()[1]])
        for line in now:
            if line.startswith("-N ") and line.split()[1] not in old_chains:
                commands.append([*base, "-X", line.split()[1]])
        old_policies = {ln.split()[1]: ln.split()[2] for ln in old if ln.startswith("-P ")}
        for line in now:
            if line.startswith("-P "):
                chain, policy = line.split()[1:3]
                if chain in old_policies and old_policies[chain] != policy:
                    commands.append([*base, "-P", chain, old_policies[chain]])
    return commands


def new_links(before: list[str], after: list[str]) -> list[str]:
    return [name for name in after if name not in before and name.startswith(LINK_PREFIXES)]


def restore(state: HostState) -> list[str]:
    """Put the root namespace back as ``state`` recorded it; returns what could not be."""
    problems = []
    for argv in undo_commands(state.rules, read_rules()):
        result = _cmd(argv)
        if result.returncode != 0:
            problems.append(f"`{shlex.join(argv)}`: {result.stderr.strip()}")
    if state.nft_tables or shutil.which("nft"):
        current = read_nft_tables()
        for name in empty_new_tables(state.nft_tables, read_rules()):
            if name in current:
                _cmd(["nft", "delete", "table", *name.split()])
    for name in new_links(state.links, read_links()):
        result = _cmd(["ip", "link", "del", name])
        if result.returncode != 0 and "Cannot find" not in result.stderr:
            problems.append(f"ip link del {name}: {result.stderr.strip()}")
    for key, value in state.sysctls.items():
        path = Path("/proc/sys") / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
        except OSError as exc:
            problems.append(f"sysctl {key}={value}: {exc}")
    return problems


def api_answers(path: str = DOCKER_SOCKET, timeout: float = 2.0) -> bool:
    """True when the Docker API answers GET /_ping on its UNIX socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = sock.recv(4096)
    except OSError:
        return False
    return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]


def _spawn(name: str, argv: list[str]) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still "exists": look at its state
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _log_tail(name: str) -> str:
    try:
        return (LOG_DIR / f"{name}.log").read_text(errors="replace")[-800:]
    except OSError:
        return ""


def _wait(predicate: object, what: str, pid: int, name: str, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if not _alive(pid):
            raise EngineError(f"{name} exited while waiting for {what}: {_log_tail(name)}")
        time.sleep(0.1)
    raise EngineError(f"{what} not ready after {timeout:g} s: {_log_tail(name)}")


def start(say: bool = True, tcp: str | None = None) -> HostState | None:
    """Start containerd and dockerd unless the API already answers; returns the recorded
    state (None when an engine was already running). ``tcp`` (``127.0.0.1:PORT``): dockerd
    also listens there, so the harness can reach it as a remote engine would be reached
    (``DOCKER_HOST=tcp://127.0.0.1:PORT``)."""
    listeners = [f"unix://{DOCKER_SOCKET}", *([tcp_listener(tcp)] if tcp else [])]
    if api_answers():
        if say:
            print("docker engine: already answering; not started (and `stop` leaves it)")
        return None
    if os.geteuid() != 0:
        raise EngineError("starting the Docker engine needs root")
    for program in ("containerd", "dockerd"):
        if shutil.which(program) is None:
            raise EngineError(f"{program} is not installed (apt-get install docker.io)")
    if STATE_FILE.exists():
        old = HostState.from_json(STATE_FILE.read_text())
        if any(_alive(pid) for pid in old.pids.values()):
            raise EngineError(f"{STATE_FILE} names live daemons {old.pids} but the API does "
                              "not answer: run `stop` first")
        raise EngineError(f"{STATE_FILE} is left from an engine that died: run `stop` first "
                          "to restore the host settings it recorded")
    state = snapshot()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(state.to_json())
    started = time.monotonic()
    try:
        if not Path(CONTAINERD_SOCKET).exists() or not _containerd_answers():
            Path(CONTAINERD_SOCKET).unlink(missing_ok=True)
            state.pids["containerd"] = _spawn("containerd", ["containerd"])
            STATE_FILE.write_text(state.to_json())
            _wait(_containerd_answers, "containerd's socket", state.pids["containerd"],
                  "containerd", START_TIMEOUT)
        state.pids["dockerd"] = _spawn("dockerd", [
            "dockerd", f"--containerd={CONTAINERD_SOCKET}",
            *(word for listener in listeners for word in ("--host", listener))])
        STATE_FILE.write_text(state.to_json())
        _wait(api_answers, "the Docker API", state.pids["dockerd"], "dockerd", START_TIMEOUT)
    except EngineError:
        stop(say=False)
        raise
    if say:
        print(f"docker engine: started in {time.monotonic() - started:.1f} s "
              f"(pids {state.pids}; logs in {LOG_DIR}; state in {STATE_FILE})")
    return state


def _containerd_answers() -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(CONTAINERD_SOCKET)
        return True
    except OSError:
        return False


def _terminate(pid: int, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            return


def stop(say: bool = True) -> list[str]:
    """Stop the daemons ``start`` started and restore the recorded host state."""
    if not STATE_FILE.exists():
        if say:
            print("docker engine: nothing recorded by `start`; nothing to stop")
        return []
    state = HostState.from_json(STATE_FILE.read_text())
    for name in ("dockerd", "containerd"):  # dockerd first: it stops its containers
        pid = state.pids.get(name)
        if pid is not None and _alive(pid):
            _terminate(pid, STOP_TIMEOUT)
    problems = restore(state)
    STATE_FILE.unlink(missing_ok=True)
    if say:
        print("docker engine: stopped; host settings restored"
              + (f" except: {'; '.join(problems)}" if problems else ""))
    return problems


def status() -> str:
    running = api_answers()
    recorded = STATE_FILE.exists()
    return (f"API {'answers' if running else 'does not answer'} on {DOCKER_SOCKET}; "
            f"{'started by us (state in ' + str(STATE_FILE) + ')' if recorded else 'no state'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.docker.engine",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--tcp", metavar="HOST:PORT",
                        help="start: dockerd also listens on this loopback TCP address "
                             "(to try the harness against an engine reached like a remote "
                             "one: DOCKER_HOST=tcp://HOST:PORT)")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            start(tcp=args.tcp)
        elif args.action == "stop":
            return 1 if stop() else 0
        else:
            print(status())
    except EngineError as exc:
        print(f"docker engine: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
