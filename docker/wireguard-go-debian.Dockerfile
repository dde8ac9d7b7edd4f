# Debian's wireguard-go (0.0.20220316) with wireguard-tools: the harness runs `wireguard-go -f IF`
# as the peer wireguard-go-debian (also the image of config-file clients such as wg-quick).
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# The tools every harness host uses (identical in every Dockerfile here, so the layer is shared):
# ip, ping, iperf3, ncat, tcpdump, nft, sysctl, and python3 for the harness echo/flood helpers.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      iproute2 iputils-ping iperf3 ncat tcpdump nftables procps python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends wireguard-go wireguard-tools \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
LABEL org.wgref.harness.peer="wireguard-go-debian"
CMD ["sleep", "infinity"]
