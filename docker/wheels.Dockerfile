# The BoringTun wheels: mitmproxy-wireguard (responder) and wireguard-requests (initiator), run
# through the harness's helpers (harness.peers.mitm_helper / requests_helper) with this python3.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# The tools every harness host uses (identical in every Dockerfile here, so the layer is shared):
# ip, ping, iperf3, ncat, tcpdump, nft, sysctl, and python3 for the harness echo/flood helpers.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      iproute2 iputils-ping iperf3 ncat tcpdump nftables procps python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3-pip \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ARG WHEELS="mitmproxy-wireguard wireguard-requests"
RUN python3 -m pip install --no-cache-dir --break-system-packages $WHEELS
LABEL org.wgref.harness.peer="wheels"
CMD ["sleep", "infinity"]
