"""Sessions: tests, lint, decrypt (a demo of capture replay), interop and bench (later issues).

Sessions that need Debian tools install them with apt-get when they are missing and we are
root (CI and the README's quick start run as root on Debian 12).
"""

from __future__ import annotations

import itertools
import os
import shutil

import nox

nox.options.sessions = ["tests", "lint"]
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
    """The test suite (netns tests run when root; they skip with a reason otherwise)."""
    debian_tools(session, KERNEL_VM_TOOLS, TEST_TOOLS)
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict."""
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", "wgref", "harness", "tests", "noxfile.py")
    session.run("mypy")


@nox.session
def decrypt(session: nox.Session) -> None:
    """Capture replay demo: decrypt a reference capture with its key log."""
    session.install("-e", ".")
    data = "tests/data/captures"
    session.run(
        "wgref", "decrypt", f"{data}/wireguard-ping-tcp.pcap",
        "--keylog", f"{data}/wireguard-ping-tcp.initiator.keys",
    )
    session.run("wgref", "decrypt", f"{data}/wireguard-ping-tcp-dsb.pcapng", "--json")


INTEROP_PACKAGES = ("rich>=13",)  # the harness's own dependency (progress, matrix table)
INTEROP_WHEELS = ("mitmproxy-wireguard", "wireguard-requests")  # optional peers


def interop_extras(session: nox.Session) -> None:
    """What the interop harness needs beyond debian_tools: sysctl (procps) for the router
    namespace, and the BoringTun wheels as optional peers (a failed install only makes their
    cells unsupported)."""
    if shutil.which("sysctl") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "install", "-y", "-q", "--no-install-recommends", "procps",
                    external=True, env=env)
    session.install(*INTEROP_PACKAGES)
    for wheel in INTEROP_WHEELS:
        session.run("python", "-m", "pip", "install", "-q", wheel, success_codes=[0, 1])


DOCKER_PACKAGES = ("docker>=7",)  # the Docker backend talks to the engine's API


def docker_backend(args: list[str]) -> bool:
    return "--backend=docker" in args or any(
        a == "--backend" and b == "docker" for a, b in itertools.pairwise(args)
    )


@nox.session
def interop(session: nox.Session) -> None:
    """The interop matrix: every peer found x every non-slow scenario, with reports in
    results/interop/ (arguments go to `python -m harness run`, e.g. -- --slow)."""
    debian_tools(session, KERNEL_VM_TOOLS)
    session.install("-e", ".")
    interop_extras(session)
    session.run("python", "-m", "harness", "cleanup")
    args = list(session.posargs)
    if "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", "results/interop"]  # CI: -- --shard K/N --out results/shard-K
    if docker_backend(args):
        session.install(*DOCKER_PACKAGES)
        session.run("python", "-m", "harness", "images", "build")
    try:
        session.run("python", "-m", "harness", "run", *args)
    finally:
        session.run("python", "-m", "harness", "cleanup")


BENCH_PACKAGES = ("matplotlib>=3.7",)  # the chart (Agg backend); rich comes with interop


@nox.session
def bench(session: nox.Session) -> None:
    """The throughput bench: iperf3 through the tunnel for each pair (raw veth, wireguard-go,
    wgref both ways, mitmproxy-wireguard's probe), reports in results/bench/ (arguments go to
    `python -m harness bench`, e.g. -- --repeat 1 --time 2 for a smoke run)."""
    debian_tools(session)
    session.install("-e", ".")
    interop_extras(session)
    session.install(*BENCH_PACKAGES)
    args = list(session.posargs)
    if "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", "results/bench"]
    session.run("python", "-m", "harness", "cleanup")
    try:
        session.run("python", "-m", "harness", "bench", *args)
    finally:
        session.run("python", "-m", "harness", "cleanup")
