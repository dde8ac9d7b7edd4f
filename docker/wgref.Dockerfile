# wgref, installed from the build context (`harness images build` sends pyproject.toml,
# README.md and wgref/ only), with wireguard-tools to configure it.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# The tools every harness host uses (identical in every Dockerfile here, so the layer is shared):
# ip, ping, iperf3, ncat, tcpdump, nft, sysctl, and python3 for the harness echo/flood helpers.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      iproute2 iputils-ping iperf3 ncat tcpdump nftables procps python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends wireguard-tools python3-pip \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# Local CAs of the build machine (a TLS-inspecting proxy in front of PyPI); may be empty.
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY pyproject.toml README.md /src/
COPY wgref /src/wgref
RUN python3 -m pip install --no-cache-dir --break-system-packages /src && rm -rf /src
LABEL org.wgref.harness.peer="wgref"
CMD ["sleep", "infinity"]
