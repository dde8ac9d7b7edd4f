"""What runs inside the guest: the initramfs's /init and the control-channel protocol.

The protocol is line based on the second serial port (``ttyS1``, a unix socket on the host):

* the host sends ``@@RUN ID LENGTH BASE64-SCRIPT``; the guest answers ``@@ACK ID`` at once,
  runs the script with ``sh`` and answers ``@@OUT ID``, the output (stdout and stderr) in base64
  lines, then ``@@END ID RC``;
* a RUN line whose script is not LENGTH characters long arrived damaged: the guest answers
  ``@@BAD ID`` and runs nothing, and the host sends the line again;
* the host also sends the line again when no ACK came within :data:`ACK_TIMEOUT`; a RUN with the
  ID the guest ran last is not run twice, its saved output is sent again (a TCG guest on a busy
  host was seen, rarely, never to answer a command at all);
* any other line (an empty one, say) is answered with ``@@READY``; the guest also says it once
  when the server starts, which is only after the modules are loaded and the kernel's random
  pool is ready (without that the guest's WireGuard does not answer initiations for a while).

Keys and configurations travel inside the base64 scripts, never on the kernel command line.
"""

from __future__ import annotations

READY = "@@READY"
RUN = "@@RUN"
OUT = "@@OUT"
END = "@@END"
ACK = "@@ACK"
BAD = "@@BAD"
# seconds the host waits for an ACK before it sends a RUN line again
ACK_TIMEOUT = 5.0
CONTROL_TTY = "/dev/ttyS1"
MODULE_LIST = "/etc/kernelvm/modules"
# The host's tools in the guest. Scripts name them by absolute path: Debian's busybox-static is
# built to prefer its own applets over PATH, and its `ip` lacks what we use (`nodad`,
# `type wireguard`).
TOOLS_DIR = "/usr/local/bin"
IP = f"{TOOLS_DIR}/ip"
WG = f"{TOOLS_DIR}/wg"
ENTROPY_TIMEOUT = 60

# The control-channel server, a shell function; INIT runs it on the control tty.
SERVE = f"""serve() {{
  echo "{READY}"
  last=
  while :; do
    line=
    if ! IFS= read -r line; then
      sleep 0.2
      continue
    fi
    case "$line" in
      "{RUN} "*)
        set -- $line
        id=$2
        if [ "${{#4}}" != "$3" ]; then
          echo "{BAD} $id ${{#4}}"
          continue
        fi
        echo "{ACK} $id"
        if [ "$id" != "$last" ]; then
          printf '%s\\n' "$4" | base64 -d >"$SCRATCH/cmd.sh" 2>/dev/null
          sh "$SCRATCH/cmd.sh" </dev/null >"$SCRATCH/out" 2>&1
          rc=$?
          last=$id
        fi
        echo "{OUT} $id"
        base64 <"$SCRATCH/out"
        echo "{END} $id $rc"
        ;;
      *)
        echo "{READY}"
        ;;
    esac
  done
}}
"""

INIT = f"""#!/bin/sh
# wgref kernel-vm guest init: load modules, wait for entropy, serve the control channel.
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run /var/run
SCRATCH=/tmp  # the control server's files
log() {{ echo "kernel-vm: $*"; }}
log "init started at $(cut -d' ' -f1 /proc/uptime) s"
for m in $(cat {MODULE_LIST}); do
  insmod "/lib/modules/$m.ko" || log "insmod $m failed"
done
{IP} link set lo up
log "modules loaded at $(cut -d' ' -f1 /proc/uptime) s"
if ! timeout {ENTROPY_TIMEOUT} head -c 1 /dev/random >/dev/null; then
  log "the random pool is still not ready after {ENTROPY_TIMEOUT} s"
fi
log "random pool ready at $(cut -d' ' -f1 /proc/uptime) s"

{SERVE}
stty -F {CONTROL_TTY} raw -echo
log "control channel on {CONTROL_TTY}"
while :; do
  serve <{CONTROL_TTY} >{CONTROL_TTY} 2>&1
  sleep 1
done
"""
