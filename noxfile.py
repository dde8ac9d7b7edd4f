"""Sessions: interop (the main job, and what plain `nox` runs), probes, bench, tests, lint,
decrypt.

`nox -l` lists them with their descriptions. Sessions that need Debian tools install them with
apt-get when they are missing and we are root (CI and the README's quick start run as root on
Debian 12). Each session installs wgref with the extras it needs (pyproject.toml).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["interop"]  # plain `nox`: the main job (README, "Quick start")
nox.options.reuse_existing_virtualenvs = True

DEBIAN_TOOLS = {
    # command: Debian package
    "wg": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "iperf3": "iperf3",
    "tshark": "tshark",
    "ncat": "ncat",
    "nft": "nftables",
    "ping": "iputils-ping",
    "ip": "iproute2",
}
# The kernel-vm peer (Debian's kernel in QEMU) needs these on the host.
KERNEL_VM_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox"}
# Only the test suite needs these: the HTML report's browser test and the Docker backend's.
TEST_TOOLS = {"chromium": "chromium", "dockerd": "docker.io", "debootstrap": "debootstrap"}


def debian_tools(session: nox.Session, *extra: dict[str, str]) -> None:
    """Install the Debian packages of the tools the network tests drive, if missing."""
    tools = dict(DEBIAN_TOOLS)
    for more in extra:
        tools.update(more)
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.warn(f"not root or no apt-get: cannot install {' '.join(missing)}")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-q", external=True, env=env)
    session.run(
        "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing,
        external=True, env=env,
    )


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: pytest over tests/ (netns tests need root; elsewhere they skip)."""
    debian_tools(session, KERNEL_VM_TOOLS, TEST_TOOLS)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint: ruff check and mypy --strict."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", "wgref", "harness", "tests", "noxfile.py")
    session.run("mypy")


@nox.session
def decrypt(session: nox.Session) -> None:
    """Capture replay demo: `wgref decrypt` of the reference captures with their keys."""
    session.install("-e", ".[capture]")
    data = "tests/data/captures"
    session.run(
        "wgref", "decrypt", f"{data}/wireguard-ping-tcp.pcap",
        "--keylog", f"{data}/wireguard-ping-tcp.initiator.keys",
    )
    session.run("wgref", "decrypt", f"{data}/wireguard-ping-tcp-dsb.pcapng", "--json")


INTEROP_WHEELS = ("mitmproxy-wireguard", "wireguard-requests")  # optional peers (`interop` extra)
INTEROP_OUT = Path("results/interop")  # fixed: CI jobs look for it (README)
INTEROP_PREVIOUS = Path("results/interop-previous")


def interop_extras(session: nox.Session) -> None:
    """What the interop harness needs beyond debian_tools: sysctl (procps) for the router
    namespace, the harness extra, and the BoringTun wheels as optional peers (a failed install
    only makes their cells unsupported)."""
    if shutil.which("sysctl") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "install", "-y", "-q", "--no-install-recommends", "procps",
                    external=True, env=env)
    session.install("-e", ".[harness]")
    for wheel in INTEROP_WHEELS:
        session.run("python", "-m", "pip", "install", "-q", wheel, success_codes=[0, 1])


def has_out(args: list[str]) -> bool:
    return "--out" in args or any(a.startswith("--out=") for a in args)


def interop_args(posargs: list[str], root: Path = Path(".")) -> list[str]:
    """`harness run` arguments: the fixed results/interop/ unless --out is given; the run
    before it moves to results/interop-previous/ (for `harness report --compare`)."""
    if has_out(posargs):
        return posargs
    out, previous = root / INTEROP_OUT, root / INTEROP_PREVIOUS
    if out.exists():
        shutil.rmtree(previous, ignore_errors=True)
        out.rename(previous)
    return [*posargs, "--out", str(INTEROP_OUT)]


def docker_backend(args: list[str]) -> bool:
    return "--backend=docker" in args or any(
        a == "--backend" and b == "docker" for a, b in itertools.pairwise(args)
    )


@nox.session
def interop(session: nox.Session) -> None:
    """The main job: the interop matrix, reports in results/interop/ (plain `nox` runs this).

    Every peer found x every non-slow scenario; the previous run moves to
    results/interop-previous/. Arguments go to `python -m harness run`, e.g.
    `nox -s interop -- --client wgref --server wireguard-go`."""
    debian_tools(session, KERNEL_VM_TOOLS)
    interop_extras(session)
    session.run("python", "-m", "harness", "cleanup")
    args = interop_args(list(session.posargs))
    if docker_backend(args):
        session.run("python", "-m", "harness", "images", "build")
    try:
        session.run("python", "-m", "harness", "run", *args)
    finally:
        session.run("python", "-m", "harness", "cleanup")


@nox.session
def probes(session: nox.Session) -> None:
    """Conformance probes (packet-level checks of a server), reports in results/probes/.

    Arguments go to `python -m harness probe`, e.g. `nox -s probes -- --server wgref`."""
    debian_tools(session)
    interop_extras(session)
    args = session.posargs if has_out(session.posargs) else [*session.posargs, "--out",
                                                              "results/probes"]
    session.run("python", "-m", "harness", "cleanup")
    try:
        session.run("python", "-m", "harness", "probe", *args)
    finally:
        session.run("python", "-m", "harness", "cleanup")


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput: iperf3 through each pair's tunnel, reports in results/bench/.

    Pairs: raw veth, wireguard-go, wgref both ways, mitmproxy-wireguard. Arguments go to
    `python -m harness bench`, e.g. `nox -s bench -- --repeat 1 --time 2` (a smoke run)."""
    debian_tools(session)
    interop_extras(session)
    args = list(session.posargs)
    if not has_out(args):
        args += ["--out", "results/bench"]
    session.run("python", "-m", "harness", "cleanup")
    try:
        session.run("python", "-m", "harness", "bench", *args)
    finally:
        session.run("python", "-m", "harness", "cleanup")
