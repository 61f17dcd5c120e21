"""A connection flood well past the server's file descriptor limit.

``benchmarks/flood.py`` runs a real server process (``trio_sse.run``, the
``bc.subscribe_response`` route, a tick event every half second) with
``RLIMIT_NOFILE`` lowered to 128 and ``SseConfig(max_streams=50)``; five
watcher streams open first, then an attacker process opens 450 connections:
first 150 that send nothing (each holds a descriptor until Hypercorn's
keep-alive timeout, 6 s here, closes it, so the server reaches its limit
even on a slow machine; the rest are too few to reach it again), then 300
stream requests. Printed with ``-s``::

    python benchmarks/flood.py --clients 1 --connections 300 --silent 150 \\
        --fd-limit 128 --max-streams 50 --watchers 5 --tick 0.5 \\
        --keep-alive-timeout 6
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

FLOOD = Path(__file__).resolve().parent.parent / "benchmarks" / "flood.py"
FD_LIMIT = 128
MAX_STREAMS = 50
WATCHERS = 5
REQUESTS = 300
SILENT = 150
TICK = 0.5
KEEP_ALIVE_TIMEOUT = 6

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, sets rlimits"),
    pytest.mark.skipif(not FLOOD.exists(), reason="benchmarks/ is not in this tree"),
]


async def run_flood() -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(FLOOD.parents[1]), env.get("PYTHONPATH")])
    )
    command = [
        sys.executable, str(FLOOD), "--json",
        "--clients", "1",
        "--connections", str(REQUESTS),
        "--silent", str(SILENT),
        "--fd-limit", str(FD_LIMIT),
        "--max-streams", str(MAX_STREAMS),
        "--watchers", str(WATCHERS),
        "--tick", str(TICK),
        "--keep-alive-timeout", str(KEEP_ALIVE_TIMEOUT),
        "--answer-timeout", "30",
        "--time-limit", "45",  # then it reports what it measured
    ]  # fmt: skip
    with trio.fail_after(60):
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, env=env, check=False
        )
    assert result.returncode == 0, result.stderr.decode()
    figures: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    print(json.dumps(figures, indent=1))
    assert "error" not in figures, figures["error"]
    return figures


async def test_a_flood_past_the_fd_limit() -> None:
    figures = await run_flood()
    totals = figures["totals"]
    log = figures["log"]
    # The server reached its limit, said so once (no traceback per accept),
    # said once that it was over, and never crashed: its SIGTERM shutdown
    # exited 0.
    assert figures["fds_peak"] == FD_LIMIT
    assert log["fd_limit"] == 1 and log["fd_limit_over"] == 1
    assert log["tracebacks"] == 0
    assert figures["server_exit_code"] == 0
    # Every stream request was answered: admitted up to max_streams, the
    # rest refused cleanly (200, retry:, the end, the connection closed).
    assert totals["admitted"] == MAX_STREAMS - WATCHERS
    assert totals["refused"] == REQUESTS - totals["admitted"]
    assert totals["refused_closed_by_server"] == totals["refused"]
    # The silent connections were closed by the server (keep-alive timeout).
    assert totals["silent_closed_by_server"] == SILENT
    assert set(totals) == {
        "admitted",
        "refused",
        "refused_closed_by_server",
        "silent",
        "silent_closed_by_server",
    }
    # Refusals cost a few log lines, not one each.
    assert 1 <= log["refusals"] <= 1 + figures["flood_seconds"] / 10 + 2
    # The admitted streams kept receiving events through the flood.
    assert figures["watchers_during"]["ticks_min"] >= 1
    assert figures["admitted_events_min"] >= 1
    # A client arriving during the flood was answered; after it, with the
    # attackers gone, the descriptors are back where they were and a new
    # client gets a stream.
    assert figures["probe_during"]["kind"] in ("admitted", "refused")
    assert figures["fds_after"] == figures["fds_watching"]
    assert figures["probe_after"]["kind"] == "admitted"
