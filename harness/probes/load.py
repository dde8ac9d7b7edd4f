"""Cookie under load: while an attacker host floods the server with mac1-valid initiations
(``harness.flood``, wgref's core), the probe's own initiations must be met with cookie
replies; with the cookie's mac2 the probe must be answered (WP 5.3, 5.4.7, 6.6)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from wgref.constants import MESSAGE_COOKIE_REPLY, MESSAGE_RESPONSE
from wgref.errors import ProtocolError

from ..context import SERVER_PORT
from ..traffic import harness_python
from .base import Probe, ProbeContext

FLOOD_SECONDS = 45.0
COOKIE_WAIT = 25.0
MAC2_TRIES = 20
INTERVAL = 0.3


def _stats(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def cookie_under_load(ctx: ProbeContext) -> str:
    attacker = ctx.topology.host("attacker")
    server = ctx.topology.host("server")
    stats_path = ctx.folder / "flood-stats.json"
    key = base64.b64encode(ctx.client.initiator.server_public).decode()
    argv = harness_python("harness.flood", server.address(4), str(SERVER_PORT), key,
                          "--seconds", str(FLOOD_SECONDS), "--stats", str(stats_path))
    ctx.background["flood"] = attacker.spawn("flood", argv, ctx.folder / "flood.log")
    started = time.monotonic()
    initiator = ctx.client.initiator
    answered_before = 0
    sent = 0
    cookie_at = None
    while time.monotonic() - started < min(COOKIE_WAIT, ctx.remaining()):
        pending = initiator.initiation()
        ctx.client.send(pending.data)
        sent += 1
        reply = ctx.client.answer(pending, INTERVAL)
        if reply is None:
            continue
        if reply.data[0] == MESSAGE_RESPONSE:
            answered_before += 1
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - reply.at)))  # keep the pace
            continue
        try:
            initiator.take_cookie(pending, reply.data)
        except ProtocolError as exc:
            ctx.check("cookie reply authenticates", False, f"cookie reply rejected: {exc}")
        cookie_at = time.monotonic() - started
        break
    flood = _stats(stats_path)
    ctx.measure("flood_sent_before_cookie", flood.get("sent", 0))
    ctx.measure("initiations_before_cookie", sent)
    ctx.measure("answered_before_load", answered_before)
    ctx.check("cookie reply under load", cookie_at is not None,
              (f"cookie reply after {cookie_at:.1f} s and {sent} probe initiations"
               if cookie_at is not None else
               f"no cookie reply in {COOKIE_WAIT:g} s: {sent} probe initiations "
               f"({answered_before} answered with responses) while the flood sent "
               f"{flood.get('sent', 0)} initiations and got {flood.get('cookie_replies', 0)} "
               "cookie replies"))
    assert cookie_at is not None
    ctx.measure("seconds_to_cookie", cookie_at)
    cookies_again = 0
    for attempt in range(1, MAC2_TRIES + 1):
        if ctx.remaining() <= 0:
            break
        pending = initiator.initiation()  # carries mac2 now
        ctx.client.send(pending.data)
        reply = ctx.client.answer(pending, 0.5)
        if reply is None:
            continue
        try:
            if reply.data[0] == MESSAGE_COOKIE_REPLY:
                cookies_again += 1
                initiator.take_cookie(pending, reply.data)
                continue
            initiator.complete(pending, reply.data)
        except ProtocolError as exc:
            return ctx.check("initiation with mac2 answered", False,
                             f"attempt {attempt}: {reply.describe()} does not authenticate "
                             f"({exc})")
        ctx.measure("mac2_attempts", attempt)
        ctx.measure("cookie_replies_to_mac2", cookies_again)
        flood = _stats(stats_path)
        ctx.measure("flood_sent", flood.get("sent", 0))
        ctx.measure("flood_cookie_replies", flood.get("cookie_replies", 0))
        return ctx.check("initiation with mac2 answered", True,
                         f"response to attempt {attempt} with mac2 "
                         f"({cookies_again} more cookie replies before it); the flood "
                         f"had sent {flood.get('sent', 0)} initiations")
    ctx.measure("cookie_replies_to_mac2", cookies_again)
    return ctx.check("initiation with mac2 answered", False,
                     f"{MAC2_TRIES} initiations with mac2: no response "
                     f"({cookies_again} answered with another cookie reply)")


PROBES = [
    Probe("cookie-under-load",
          "from an attacker host, a flood of mac1-valid initiations (ramping up until the "
          "server answers it with cookies); from the probe, valid initiations every 0.3 s "
          "until a cookie reply, then initiations with mac2 from that cookie",
          "the probe gets a cookie reply it can decrypt (bound to its mac1), and an "
          "initiation with a valid mac2 is answered with a response",
          "WP 5.3 (under load), 5.4.7 (cookie reply), 6.6", cookie_under_load,
          attacker=True, timeout=90.0, log_level="error", exclusive=True),
]
