"""Packet captures of the outer traffic (dumpcap inside a host namespace), and the copy of each
capture handed to users: one WireGuard message per frame, the key log embedded.

dumpcap sees a sender's UDP GSO batches before segmentation (wgref and modern wireguard-go send
with UDP_SEGMENT; veth links and the router forward the batch whole), so a frame can hold
several WireGuard messages, which Wireshark decrypts only the first of. The data path is left
as it is (the bench measures it); the copy is cut afterwards with wgref's decoder
(wgref.gso, wgref.export), which confirms each segment size by authenticating with the keys.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from wgref.capture import CaptureError as ReadError
from wgref.capture import iter_frames, read_capture
from wgref.decrypt import decode_capture
from wgref.export import write_with_keys
from wgref.keylog import KeyLogError, format_keylog, load_keylog
from wgref.pcapng import PcapNgWriter

from .shell import Background
from .topology import Host, TopologyError

START_TIMEOUT = 10.0


class CaptureError(RuntimeError):
    """The capture could not start."""


def start_capture(host: Host, path: Path, *, bpf: str | None = None,
                  max_packets: int | None = None) -> Background:
    """Capture the host's outer link into ``path`` (pcapng), from where its topology captures
    it (:meth:`Host.capture_point`); returns once capturing."""
    where, ifname = host.capture_point()
    try:
        return where.capture_traffic(f"capture-{host.name}", ifname, path, bpf=bpf,
                                     max_packets=max_packets)
    except TopologyError as exc:
        raise CaptureError(str(exc)) from exc


def dumpcap(where: Host, name: str, ifname: str, path: Path, *, bpf: str | None = None,
            max_packets: int | None = None) -> Background:
    """This machine's dumpcap in ``where``'s namespace."""
    program = shutil.which("dumpcap") or "dumpcap"
    argv = [program, "-q", "-i", ifname, "-w", str(path)]
    if bpf:
        argv += ["-f", bpf]
    if max_packets:
        argv += ["-c", str(max_packets)]
    log = path.with_suffix(".dumpcap.log")
    proc = where.spawn(name, argv, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return proc
        if not proc.alive():
            raise CaptureError(f"dumpcap on {where.name} exited: {proc.log_tail()}")
        time.sleep(0.05)
    proc.stop()
    raise CaptureError(f"dumpcap on {where.name} did not start: {proc.log_tail()}")


def pcap_to_pcapng(source: Path, out: Path) -> None:
    """Rewrite a pcap capture (tcpdump's) as pcapng, every frame as it was."""
    with PcapNgWriter(out) as writer:
        for frame in iter_frames(source):
            writer.frame(frame.linktype, frame.time_ns, frame.data, wirelen=frame.wirelen)


def stop_capture(proc: Background) -> None:
    time.sleep(0.2)  # let the last packets of the test reach the file
    proc.stop(grace=5.0)


def write_decrypted(capture: Path, keylog: Path) -> Path:
    """Write CAPTURE-decrypted.pcapng (mode 0600): the capture with every GSO super-frame cut
    into one frame per WireGuard message, and the key log as a Decryption Secrets Block, so
    Wireshark and tshark open every message decrypted."""
    out = capture.with_name(capture.stem + "-decrypted.pcapng")
    try:
        keys = load_keylog(keylog)
        decoded = decode_capture(read_capture(capture), keys)
        write_with_keys(capture, decoded, format_keylog(keys), out)
    except (ReadError, KeyLogError, OSError, ValueError) as exc:
        raise CaptureError(f"cannot write {out.name}: {exc}") from exc
    return out
