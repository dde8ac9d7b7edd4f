"""A real kernel WireGuard peer on hosts without the module: Debian's own kernel (its
wireguard.ko is the upstream code) in a small throw-away QEMU VM.

* :mod:`.build` resolves, downloads and unpacks the kernel package, picks the modules WireGuard
  and virtio need and builds an initramfs (busybox plus the host's wg, ip and iperf3), cached
  once per kernel version (``python3 -m harness.kernelvm build``).
* :mod:`.vm` boots it in a network namespace (a tap device there, virtio-net in the guest) and
  runs shell commands in the guest over a serial-port control channel.
* :mod:`.plumbing` makes the VM stand in for its namespace: NAT for the outer UDP, routes for
  the tunnel's inner addresses.
* :mod:`.driver` is the ``kernel-vm`` peer driver for the interop harness.
"""
