"""The client's cgroup (v2) for `wgref client exec`: a program moved into it before it starts
has every socket, and every child's, in it; nftables matches that in the kernel (``socket
cgroupv2``), so the flow's first packet is already known to be tunnelled (no /proc lookup,
no race with short-lived processes).

The cgroup2 hierarchy is found in /proc/self/mountinfo. Where it is not mounted in this mount
namespace (``ip netns exec`` remounts /sys, and with it /sys/fs/cgroup), it is mounted under
/run/wgref/cgroup2 for as long as it is needed (the client: until it stops; `exec`: until
the program is in the cgroup): a cgroup2 mount is a view of the one hierarchy, so the client
and `exec` find the same cgroup by its path relative to the root.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

PRIVATE_MOUNT = "/run/wgref/cgroup2"
MOUNT_TIMEOUT = 10.0
_mounted_here: set[str] = set()  # what root() mounted in this process


class CgroupError(OSError):
    pass


def _mounted_root() -> str | None:
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, rest = before.split(), after.split()
        if len(fields) >= 5 and rest and rest[0] == "cgroup2" and fields[3] == "/":
            return fields[4].replace("\\040", " ")
    return None


def root() -> str:
    """The cgroup2 hierarchy's root directory, mounting it if this namespace has none (see
    :func:`release`)."""
    found = _mounted_root()
    if found is not None:
        return found
    os.makedirs(PRIVATE_MOUNT, mode=0o755, exist_ok=True)
    try:
        result = subprocess.run(["mount", "-t", "cgroup2", "cgroup2", PRIVATE_MOUNT],
                                capture_output=True, text=True, timeout=MOUNT_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CgroupError(f"cannot mount cgroup2: {exc}") from exc
    if result.returncode != 0:
        raise CgroupError(f"cannot mount cgroup2 on {PRIVATE_MOUNT}: {result.stderr.strip()}")
    _mounted_here.add(PRIVATE_MOUNT)
    return PRIVATE_MOUNT


def release() -> None:
    """Unmount the hierarchy if :func:`root` mounted it in this process."""
    if PRIVATE_MOUNT in _mounted_here:
        _mounted_here.discard(PRIVATE_MOUNT)
        subprocess.run(["umount", PRIVATE_MOUNT], capture_output=True, timeout=MOUNT_TIMEOUT,
                       check=False)


def name_for(config_path: str) -> str:
    """``wgref-client-NAME`` for ``.../NAME.conf`` (a child of the hierarchy's root)."""
    return "wgref-client-" + (os.path.splitext(os.path.basename(config_path))[0] or "client")


def create(name: str) -> tuple[str, int]:
    """(path, cgroup id) of the cgroup ``name`` under the root, made if missing. The id is
    what nftables compares (the cgroup directory's inode number: kernfs node id)."""
    path = os.path.join(root(), name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o755)
    return path, os.stat(path).st_ino


def join(name: str, pid: int = 0) -> None:
    """Move ``pid`` (0: this process) into the cgroup ``name``."""
    path = os.path.join(root(), name, "cgroup.procs")
    try:
        with open(path, "w") as f:
            f.write(f"{pid or os.getpid()}\n")
    except OSError as exc:
        raise CgroupError(f"cannot join {path}: {exc.strerror}") from exc
    finally:
        release()


def remove(path: str) -> bool:
    """Remove the cgroup (False while processes are still in it), then :func:`release`."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    finally:
        release()
    return True
