# Current wireguard-go, built on the host from its Go module at the pinned version (harness/tools.py;
# `python -m harness tools install`) and copied in: the build needs no Go or module proxy.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# The tools every harness host uses (identical in every Dockerfile here, so the layer is shared):
# ip, ping, iperf3, ncat, tcpdump, nft, sysctl, and python3 for the harness echo/flood helpers.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      iproute2 iputils-ping iperf3 ncat tcpdump nftables procps python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends wireguard-tools \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY tools/wireguard-go /usr/local/bin/wireguard-go
RUN wireguard-go --version
LABEL org.wgref.harness.peer="wireguard-go"
CMD ["sleep", "infinity"]
