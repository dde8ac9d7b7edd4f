"""``python3 -m harness.kernelvm build|info|boot``: build the cached VM, show it, or boot it once
in a scratch namespace as a smoke test."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .build import BuildError, Progress, cache_root, cached, ensure
from .vm import KernelVM, VMError, choose_accel, qemu_missing


def _build(args: argparse.Namespace) -> int:
    progress = Progress(quiet=args.quiet)
    started = time.monotonic()
    try:
        art = ensure(progress, rebuild=args.rebuild)
    except BuildError as exc:
        print(f"kernel-vm: build failed: {exc}", file=sys.stderr)
        return 1
    print(f"{art.describe()}\n  kernel:    {art.kernel}\n  initramfs: {art.initramfs} "
          f"({art.initramfs.stat().st_size / 1e6:.1f} MB)\n"
          f"  ready after {time.monotonic() - started:.1f} s")
    return 0


def _info(_: argparse.Namespace) -> int:
    art = cached()
    accel = choose_accel()
    print(f"cache:  {cache_root()}")
    print(f"build:  {art.describe() if art else 'none yet (python3 -m harness.kernelvm build)'}")
    print(f"qemu:   {qemu_missing() or 'installed'}")
    print(f"accel:  {accel.name} ({accel.reason})")
    return 0


def _boot(args: argparse.Namespace) -> int:
    from ..shell import run
    from ..topology import remove_namespace

    if os.geteuid() != 0:
        print("kernel-vm: boot needs root (a network namespace and a tap device)",
              file=sys.stderr)
        return 1
    try:
        art = ensure(Progress(quiet=True))
    except BuildError as exc:
        print(f"kernel-vm: build failed: {exc}", file=sys.stderr)
        return 1
    ns = f"wgkvm-boot-{os.getpid()}"
    run(["ip", "netns", "add", ns], timeout=10)
    folder = Path(args.folder)
    vm = KernelVM(art, ns, "kvboot0", "52:54:00:6b:76:01", folder)
    try:
        vm.start()
        accel = vm.accel.name if vm.accel else "?"
        print(f"booted {art.describe()} in {vm.boot_seconds:.2f} s ({accel})")
        print(vm.check("uname -r; wg --version; ip link add wg0 type wireguard && "
                       "wg show wg0 && ip -d link show wg0 | head -3").strip())
    except VMError as exc:
        print(f"kernel-vm: boot failed: {exc}", file=sys.stderr)
        return 1
    finally:
        vm.stop()
        remove_namespace(ns)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m harness.kernelvm",
                                     description="Debian's kernel WireGuard in a QEMU VM")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="resolve, download and build (cached) the VM")
    build.add_argument("--rebuild", action="store_true", help="ignore the cache")
    build.add_argument("--quiet", action="store_true", help="no progress output")
    build.set_defaults(func=_build)
    info = sub.add_parser("info", help="what is cached and how VMs would run here")
    info.set_defaults(func=_info)
    boot = sub.add_parser("boot", help="boot once in a scratch namespace (needs root)")
    boot.add_argument("--folder", default="/tmp/wgref-kernel-vm-boot",
                      help="where the console and QEMU logs go")
    boot.set_defaults(func=_boot)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
