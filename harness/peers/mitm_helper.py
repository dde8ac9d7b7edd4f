"""Run mitmproxy-wireguard's responder and echo every TCP stream and UDP datagram.

    python -m harness.peers.mitm_helper SPEC.json   (private_key, port, peers, host)
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from typing import Any


async def _serve(spec: dict[str, Any], seconds: float) -> None:
    mw: Any = importlib.import_module("mitmproxy_wireguard")
    server: Any = None

    async def handle(stream: Any) -> None:
        print(f"tcp from {stream.get_extra_info('peername')}", flush=True)
        try:
            while data := await stream.read(65536):
                stream.write(data)
                await stream.drain()
            stream.write_eof()
            await stream.drain()
            await asyncio.sleep(2)  # close() with unsent data would reset the connection
        finally:
            stream.close()

    def datagram(data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
        print(f"udp {src} -> {dst} {len(data)} bytes", flush=True)
        server.send_datagram(data, dst, src)

    server = await mw.start_server(spec["host"], spec["port"], spec["private_key"],
                                   spec["peers"], handle, datagram)
    print(f"listening on {server.getsockname()}", flush=True)
    await asyncio.sleep(seconds)
    server.close()


def main(argv: list[str]) -> int:
    with open(argv[0]) as fh:
        spec = json.load(fh)
    asyncio.run(_serve(spec, float(argv[1]) if len(argv) > 1 else 900.0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
