# The router between the harness hosts: forwarding, nftables NAT/drop, tc shaping.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# The tools every harness host uses (identical in every Dockerfile here, so the layer is shared):
# ip, ping, iperf3, ncat, tcpdump, nft, sysctl, and python3 for the harness echo/flood helpers.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      iproute2 iputils-ping iperf3 ncat tcpdump nftables procps python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
LABEL org.wgref.harness.role="router"
CMD ["sleep", "infinity"]
