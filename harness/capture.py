"""Packet captures of the outer traffic (dumpcap inside a host namespace), and embedding a
Wireshark key log into the capture so that it opens decrypted."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .shell import Background, run
from .topology import Host

START_TIMEOUT = 10.0


class CaptureError(RuntimeError):
    """dumpcap could not start."""


def start_capture(host: Host, path: Path, *, bpf: str | None = None,
                  max_packets: int | None = None) -> Background:
    """Capture on the host's outer link; returns once dumpcap is capturing."""
    program = shutil.which("dumpcap") or "dumpcap"
    where, ifname = host.capture_point()
    argv = [program, "-q", "-i", ifname, "-w", str(path)]
    if bpf:
        argv += ["-f", bpf]
    if max_packets:
        argv += ["-c", str(max_packets)]
    log = path.with_suffix(".dumpcap.log")
    proc = where.spawn(f"capture-{host.name}", argv, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return proc
        if not proc.alive():
            raise CaptureError(f"dumpcap on {host.name} exited: {proc.log_tail()}")
        time.sleep(0.05)
    proc.stop()
    raise CaptureError(f"dumpcap on {host.name} did not start: {proc.log_tail()}")


def stop_capture(proc: Background) -> None:
    time.sleep(0.2)  # let the last packets of the test reach the file
    proc.stop(grace=5.0)


def inject_keylog(capture: Path, keylog: Path) -> Path | None:
    """Write CAPTURE-decrypted.pcapng with the key log as a Decryption Secrets Block."""
    editcap = shutil.which("editcap")
    if editcap is None or not keylog.exists() or keylog.stat().st_size == 0:
        return None
    out = capture.with_name(capture.stem + "-decrypted.pcapng")
    result = run([editcap, "--inject-secrets", f"wg,{keylog}", str(capture), str(out)],
                 check=False, timeout=60)
    return out if result.ok else None
